"""Forward-KL estimators at real completion lengths: scale with and without MARA's Alg. 2, and cost.

    python benchmarks/bench_forward_kl.py [--lengths 32 256] [--vocab 32000] [--hidden 256] [--rows 1024]
    python benchmarks/bench_forward_kl.py --device cuda --vocab 151936 --hidden 2048 --rows 4096 --dtype bfloat16

1. Scale table. A random Llama of the tiny architecture (``mara_rl.llm.tiny.tiny_config``, 1000-token
   vocabulary, LM head scaled to ~1.7 nats of next-token entropy, nothing downloaded) is the reference; the policy is a copy (step 1, ``pi = pi_ref``) or a
   copy with 5% relative noise on its weights. Two prompts x 8 sampled completions of exactly L tokens; reward 1
   when the sum of the completion's token ids is even (about half the samples); MARA's forward anchors from ``mara_rewards(kl="forward", tau=1)``.
   For today's sequence estimator (``trainers.forward_kl_surrogate``) and the token-level estimator
   (``forward_kl.token_forward_kl_loss``), each with and without Alg. 2: the loss value and the
   gradient norm over the policy's parameters, and the ratio with / without Alg. 2.
2. Cost at 256-token completions. Random final hidden states and LM heads of the given width and
   vocabulary; the baseline is the logit computation of a GRPO loss pass as TRL runs it (its fused
   chunked log-prob kernel, forward + backward); the estimator is ``token_forward_kl_loss`` from
   hidden states (both heads, forward + backward), with and without Alg. 2. Prints median times,
   the ratio to the baseline and, on CUDA, the peak extra memory of each.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from mara_rl.augment import mara_rewards
from mara_rl.integrations.forward_kl import token_forward_kl_loss
from mara_rl.llm.tiny import tiny_config
from mara_rl.integrations.trl.trainers import forward_kl_surrogate

BETA = 0.05
GROUPS, PER_GROUP, PROMPT_LEN = 2, 8, 8
LOGIT_SCALE = 32.0


def build_models(vocab: int, length: int, noise: float, seed: int):
    from transformers import LlamaForCausalLM

    config = tiny_config(vocab)
    config.max_position_embeddings = PROMPT_LEN + length
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    ref = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # a trained LM's next-token entropy (~1.7 nats), not a random init's log(V)
        ref.lm_head.weight.mul_(LOGIT_SCALE)
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(noise * param.std() * torch.randn_like(param))
    return policy, ref


@torch.no_grad()
def sample(policy, vocab: int, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, vocab, (GROUPS, PROMPT_LEN), generator=gen).repeat_interleave(PER_GROUP, dim=0)
    ids = prompts
    for _ in range(length):  # exactly `length` tokens, no end of sequence
        logits = policy(ids).logits[:, -1].float()
        ids = torch.cat([ids, torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)], dim=1)
    return ids


def completion_states(model, ids: torch.Tensor):
    """Final hidden states predicting each completion token [B, L, H], and their per-token log-probs [B, L]."""
    hidden = model.model(ids).last_hidden_state[:, PROMPT_LEN - 1 : -1]
    logps = torch.log_softmax(hidden @ model.lm_head.weight.t(), -1)
    return hidden, logps.gather(-1, ids[:, PROMPT_LEN:, None])[..., 0]


def grad_norm(loss: torch.Tensor, policy) -> float:
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def scale_table(lengths: list[int], vocab: int, seed: int) -> None:
    print(f"scale: random tiny Llama (vocab {vocab}), {GROUPS} prompts x {PER_GROUP} completions, beta {BETA}")
    print("| L | policy | estimator | loss alone | loss Alg.2 | ratio | grad alone | grad Alg.2 | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for length in lengths:
        for state, noise in (("pi = pi_ref", 0.0), ("perturbed", 0.05)):
            policy, ref = build_models(vocab, length, noise, seed)
            ids = sample(policy, vocab, length, seed)
            mask = torch.ones(ids.size(0), length)
            hidden, logps = completion_states(policy, ids)
            with torch.no_grad():
                ref_hidden, ref_logps = completion_states(ref, ids)
            rewards = (ids[:, PROMPT_LEN:].sum(1) % 2 == 0).double()
            groups = torch.arange(ids.size(0)) // PER_GROUP
            mara = mara_rewards(rewards, ref_logps.sum(1).double(), beta=BETA, tau=1.0, group_ids=groups, kl="forward")
            anchored = mara.ref_logprobs.float()
            rows = {}
            seq = logps.sum(1)
            for alg2, regulariser_ref in (("alone", ref_logps.sum(1)), ("alg2", anchored)):
                surrogate, _ = forward_kl_surrogate(seq, regulariser_ref)
                rows.setdefault("sequence (today)", []).append((surrogate.mean(), alg2))
                out = token_forward_kl_loss(
                    hidden, ref_hidden, mask, logps, ref_logps=ref_logps,
                    mara_ref_logps=None if alg2 == "alone" else anchored, group_ids=groups,
                    policy_head=policy.lm_head.weight, ref_head=ref.lm_head.weight,
                )
                rows.setdefault("token-level", []).append((out.loss, alg2))
            for name, ((alone, _), (with_alg2, _)) in rows.items():
                la, lm = float(BETA * alone.detach()), float(BETA * with_alg2.detach())
                ga, gm = grad_norm(BETA * alone, policy), grad_norm(BETA * with_alg2, policy)
                print(f"| {length} | {state} | {name} | {la:.3g} | {lm:.3g} | {lm / la if la else float('nan'):.3g} "
                      f"| {ga:.3g} | {gm:.3g} | {gm / ga if ga else float('nan'):.3g} |")


def median_time(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call warms up


def peak_extra_mib(fn, device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def cost(rows: int, vocab: int, hidden_size: int, device: torch.device, dtype: torch.dtype, chunk: int, repeats: int) -> None:
    from trl.kernels import ChunkedLogProbFunction

    length = 256
    batch = max(rows // length, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(batch, length, hidden_size, generator=gen, device=device, dtype=dtype, requires_grad=True)
    head = (torch.randn(vocab, hidden_size, generator=gen, device=device, dtype=dtype) / hidden_size**0.5).requires_grad_()
    ref_hidden = torch.randn(batch, length, hidden_size, generator=gen, device=device, dtype=dtype)
    ref_head = torch.randn(vocab, hidden_size, generator=gen, device=device, dtype=dtype) / hidden_size**0.5
    targets = torch.randint(0, vocab, (batch, length), generator=gen, device=device)
    mask = torch.ones(batch, length, device=device)
    groups = torch.arange(batch, device=device) // 2
    ref_logps = -5.0 * torch.rand(batch, length, generator=gen, device=device)
    anchored = ref_logps.sum(1).clone()
    anchored[::2] = anchored.max()

    def grpo_logits():
        logps = ChunkedLogProbFunction.apply(hidden.reshape(-1, hidden_size), head, None, targets.reshape(-1), 1.0, 32768, None, 1.0, ())[0]
        logps.sum().backward()
        return logps.view(batch, length).detach()

    logps_const = grpo_logits()

    def estimator(alg2: bool):
        def run():
            logps = logps_const.clone().requires_grad_(True)
            out = token_forward_kl_loss(
                hidden, ref_hidden, mask, logps, ref_logps=ref_logps, mara_ref_logps=anchored if alg2 else None,
                group_ids=groups, policy_head=head, ref_head=ref_head, chunk_rows=chunk,
            )
            out.loss.backward()
        return run

    for tensor in (hidden, head):
        tensor.grad = None
    base = median_time(grpo_logits, device, repeats)
    print(f"\ncost at L = {length}: {batch} x {length} positions, vocab {vocab}, hidden {hidden_size}, {dtype}, {device}, "
          f"chunk {chunk} rows, median of {repeats}")
    print("| computation | time (ms) | ratio to GRPO logits | peak extra memory (MiB) |")
    print("|---|---|---|---|")
    print(f"| GRPO loss-pass logits (TRL fused log-prob, fwd+bwd) | {1e3 * base:.1f} | 1.00 | {peak_extra_mib(grpo_logits, device):.0f} |")
    for name, alg2 in (("token-level forward KL", False), ("token-level forward KL + Alg. 2", True)):
        t = median_time(estimator(alg2), device, repeats)
        print(f"| {name} (fwd+bwd) | {1e3 * t:.1f} | {t / base:.2f} | {peak_extra_mib(estimator(alg2), device):.0f} |")
    full = batch * length * vocab * 4 / 2**20
    print(f"(for scale: one [B, L, V] fp32 logits tensor is {full:.0f} MiB; the reference hidden states the "
          f"trainer keeps are {batch * length * hidden_size * ref_hidden.element_size() / 2**20:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--table-vocab", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rows", type=int, default=1024, help="completion positions in the cost test (multiple of 256)")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-table", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)) if args.device == "cpu" else torch.get_num_threads())
    if not args.skip_table:
        scale_table(args.lengths, args.table_vocab, args.seed)
    cost(args.rows, args.vocab, args.hidden, torch.device(args.device), getattr(torch, args.dtype), args.chunk, args.repeats)


if __name__ == "__main__":
    main()
