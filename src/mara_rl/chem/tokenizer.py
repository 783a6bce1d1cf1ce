"""SMILES tokenizer and vocabulary (REINVENT-style regular expression).

Tokens are bracket atoms (``[nH]``, ``[C@@H]``, ``[N+]``), two-letter halogens ``Cl`` and ``Br``,
two-digit ring closures ``%10``..``%99`` and single characters. Sequences are framed by ``^``
(start) and ``$`` (end); ``_`` pads.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

PAD, BOS, EOS = "_", "^", "$"
SPECIAL_TOKENS = (PAD, BOS, EOS)

_TOKEN_RE = re.compile(r"(\[[^\]]+\]|Br|Cl|%\d{2}|.)")


def tokenize(smiles: str) -> list[str]:
    """Split a SMILES string into tokens; ``"".join(tokenize(s)) == s`` for every string ``s``."""
    if not isinstance(smiles, str):
        raise ValueError(f"smiles must be a string, got {type(smiles).__name__}")
    return _TOKEN_RE.findall(smiles)


class Vocabulary:
    """Bijection between tokens and integer ids; ids 0, 1, 2 are pad, start and end."""

    def __init__(self, tokens: Iterable[str]):
        ordered = list(SPECIAL_TOKENS) + sorted(set(tokens) - set(SPECIAL_TOKENS))
        self.tokens: list[str] = ordered
        self.index: dict[str, int] = {t: i for i, t in enumerate(ordered)}
        self.pad, self.bos, self.eos = (self.index[t] for t in SPECIAL_TOKENS)

    @classmethod
    def from_smiles(cls, smiles: Iterable[str]) -> "Vocabulary":
        """Vocabulary of every token that occurs in ``smiles``."""
        tokens: set[str] = set()
        for s in smiles:
            tokens.update(tokenize(s))
        return cls(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def encode(self, smiles: str) -> list[int]:
        """``[bos, t_1, ..., t_n, eos]`` ids; ValueError on a token outside the vocabulary."""
        ids = [self.bos]
        for token in tokenize(smiles):
            if token not in self.index:
                raise ValueError(f"token {token!r} of {smiles!r} is not in the vocabulary")
            ids.append(self.index[token])
        ids.append(self.eos)
        return ids

    def can_encode(self, smiles: str) -> bool:
        return all(t in self.index for t in tokenize(smiles))

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of :meth:`encode`: drops a leading start token and stops at the first end or pad."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.bos and not out:
                continue
            if i in (self.eos, self.pad):
                break
            out.append(self.tokens[i])
        return "".join(out)

    def to_list(self) -> list[str]:
        return list(self.tokens)

    @classmethod
    def from_list(cls, tokens: Sequence[str]) -> "Vocabulary":
        """Rebuild a saved vocabulary, checking the special tokens sit at ids 0, 1, 2."""
        if list(tokens[:3]) != list(SPECIAL_TOKENS):
            raise ValueError(f"tokens must start with {SPECIAL_TOKENS}, got {list(tokens[:3])}")
        vocab = cls(tokens)
        if vocab.tokens != list(tokens):
            raise ValueError("tokens must be special tokens followed by sorted unique tokens")
        return vocab
