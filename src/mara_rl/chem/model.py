"""SMILES RNN prior (REINVENT-style): embedding -> GRU/LSTM stack -> next-token logits.

A sequence ``x = (^, t_1, ..., t_n, $)`` has exact log-likelihood
``log p(x) = sum_{k=1..n+1} log p(x_k | x_<k)``, the sum running over the tokens after the start
token up to and including the end token. Sampling and teacher forcing give the same number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mara_rl.chem.tokenizer import Vocabulary


@dataclass(frozen=True)
class PriorConfig:
    """Architecture of :class:`SmilesRNN`; ``cell`` is ``"gru"`` or ``"lstm"``."""

    cell: str = "gru"
    embedding_dim: int = 128
    hidden_size: int = 384
    num_layers: int = 3
    dropout: float = 0.0
    max_length: int = 100

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {self.cell!r}")
        for name in ("embedding_dim", "hidden_size", "num_layers", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


class SmilesRNN(nn.Module):
    """Autoregressive SMILES model over a :class:`Vocabulary` (ids 0, 1, 2 = pad, start, end)."""

    def __init__(self, vocab: Vocabulary, config: PriorConfig = PriorConfig()):
        super().__init__()
        self.vocab = vocab
        self.config = config
        self.embedding = nn.Embedding(len(vocab), config.embedding_dim, padding_idx=vocab.pad)
        rnn_cls = nn.GRU if config.cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(config.hidden_size, len(vocab))
        # pad and start are never emitted: both sampling and teacher forcing renormalise without them
        never = torch.zeros(len(vocab))
        never[[vocab.pad, vocab.bos]] = float("-inf")
        self.register_buffer("_never", never, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """``ids [B, T]`` -> ``(logits [B, T, V], state)``; pad and start logits are ``-inf``."""
        out, state = self.rnn(self.embedding(ids), state)
        return self.head(out) + self._never, state

    def token_logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids [B, T]`` framed sequences -> ``[B, T-1]`` ``log p(x_k | x_<k)``, 0 at padding."""
        logits, _ = self(ids[:, :-1])
        targets = ids[:, 1:]
        logp = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
        return torch.where(targets != self.vocab.pad, logp, 0.0)  # where, not *: 0 * -inf is NaN

    def log_likelihood(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced ``log p(x)`` per sequence: ``ids [B, T]`` -> ``[B]``."""
        return self.token_logprobs(ids).sum(dim=1)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` sequences by ancestral sampling.

        Returns ``(ids [n, T], log_likelihood [n])``: ids start with the start token, hold the end
        token where a sequence finished, then padding. Sequences that reach ``max_length`` tokens
        without an end token are cut there (their SMILES is usually invalid).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        max_length = int(max_length or self.config.max_length)
        device = self.device
        token = torch.full((n, 1), self.vocab.bos, dtype=torch.long, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        loglik = torch.zeros(n, dtype=torch.float32, device=device)
        steps = [token]
        state = None
        for _ in range(max_length):
            logits, state = self(token, state)
            logp = F.log_softmax(logits[:, -1].float(), dim=-1)
            nxt = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            nxt = torch.where(finished, torch.full_like(nxt, self.vocab.pad), nxt)
            loglik += torch.where(finished, 0.0, logp.gather(1, nxt.unsqueeze(1)).squeeze(1))
            steps.append(nxt.unsqueeze(1))
            finished |= nxt == self.vocab.eos
            token = nxt.unsqueeze(1)
            if bool(finished.all()):
                break
        return torch.cat(steps, dim=1), loglik

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [self.vocab.decode(row) for row in ids.tolist()]

    def encode(self, smiles: list[str]) -> torch.Tensor:
        """Framed, right-padded ``ids [B, T]`` on the model's device."""
        return pad_sequences([self.vocab.encode(s) for s in smiles], self.vocab.pad).to(self.device)

    def checkpoint(self, half: bool = False) -> dict[str, Any]:
        """Self-contained checkpoint (config, vocabulary, weights; ``half`` stores float16 weights)."""
        state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in self.state_dict().items()}
        return {"config": asdict(self.config), "vocabulary": self.vocab.to_list(), "state_dict": state}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], device: str | torch.device = "cpu") -> "SmilesRNN":
        model = cls(Vocabulary.from_list(checkpoint["vocabulary"]), PriorConfig(**checkpoint["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()})
        return model.to(device)


def pad_sequences(sequences: list[list[int]], pad: int) -> torch.Tensor:
    """Right-pad integer lists into a ``[B, max_len]`` long tensor."""
    if not sequences:
        raise ValueError("sequences must not be empty")
    out = torch.full((len(sequences), max(len(s) for s in sequences)), pad, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


DEFAULT_PRIOR = Path(__file__).parent / "priors" / "moses_gru.pt"


def load_prior(path: str | Path | None = None, device: str | torch.device = "cpu") -> SmilesRNN:
    """Load a prior checkpoint (default: the shipped MOSES prior) in float32 on ``device``."""
    path = Path(path) if path is not None else DEFAULT_PRIOR
    if not path.is_file():
        raise ValueError(f"prior checkpoint {path} does not exist; train one with `mara chem train-prior`")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in checkpoint:  # a resumable training checkpoint
        checkpoint = checkpoint["model"]
    return SmilesRNN.from_checkpoint(checkpoint, device)
