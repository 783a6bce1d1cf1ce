"""The paper's verifiable LLM experiment: "output 1 or 2, uniformly at random" (Sec. 5).

One run trains a policy, initialised at the reference, with :class:`MaraGRPOTrainer` on the
``random_choice`` prompt with options 1 and 2 (reward 1 for a valid answer), for one setting of
beta, KL direction, vanilla or MARA (``tau = 1``: every valid answer is good) and seed. Every
``eval_every`` steps it samples answers from the policy and records mean reward and normalised
entropy of the valid answers; at the end it records them from a larger sample together with the
answer histogram.

Adam runs with ``beta1 = beta2 = 0.5`` (defaults 0.9 / 0.999) and ``eps = 1e-7`` (default 1e-8)
for 250 steps at learning rate 1e-3: the second moment left by the rare large gradients of batches
holding an invalid answer (reward gap 1) then decays within 15-20 steps, so the ``beta``-sized
signals (MARA's augmentation, the KL term) move the policy even at ``beta = 0.001``; ``beta1`` has
to drop with ``beta2`` (Adam needs ``beta1**2 < sqrt(beta2)``). With so short a memory, ``eps``
decides what a tiny gradient does: in an all-valid batch at ``beta = 0.001`` the median parameter's
gradient is 1e-7 to 5e-7 (4e-6 to 3e-4 in a batch holding an invalid answer). At ``eps = 1e-8``
every such parameter takes a full learning-rate step and MARA can drive the end-of-answer token
away ("1 1 1 1", every answer invalid); at ``1e-6`` the steps shrink so far that a policy that has
stopped sampling "2" stays there; ``1e-7`` does neither in the probes (``docs/llm.md``).
With the token-level forward KL, which keeps pulling towards the reference's support when the
policy stops sampling it, forward runs stay valid under these settings (``docs/llm.md``).

GRPO runs with ``scale_rewards="none"``: dividing by the group's reward std would blow MARA's
augmentation, which is of size ``beta * log-ratio``, up to unit size and drive the policy past the
uniform target; unscaled, reward and KL term keep the relative scale the target is built from.

The sweep (beta x KL direction x method x seed) writes into its folder: ``config.json``,
``runs/<run>.json`` (one per finished run: the sweep resumes by skipping them; ``jobs > 1`` trains
runs in that many processes, each on one torch thread; :mod:`mara_rl.llm.sweep`), ``metrics.json``,
``runs.csv`` (per-run table), ``pareto.png`` (reward vs answer entropy with the Pareto front),
``curves.png``, ``summary.md`` and ``records/<run>/``: each run's rollout record (every training
completion with its reward and sequence log pi_ref, :mod:`mara_rl.integrations.record`), which
``mara diagnose`` reads. A run killed before its ``runs/<run>.json`` trains again from the start and
its record starts over with it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mara_rl.llm.tasks import ONE_OR_TWO, random_choice_metrics

REFERENCE_ENTROPY_90_10 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)


@dataclass
class SweepConfig:
    """Every knob of the sweep; ``model=None`` means the tiny local reference."""

    betas: tuple[float, ...] = (0.001, 0.01, 0.02, 0.03)
    kl_directions: tuple[str, ...] = ("reverse", "forward")
    methods: tuple[str, ...] = ("vanilla", "mara")
    seeds: tuple[int, ...] = (0,)
    steps: int = 250
    num_generations: int = 16
    prompts_per_step: int = 4
    learning_rate: float = 1e-3
    adam_beta1: float = 0.5
    adam_beta2: float = 0.5
    adam_epsilon: float = 1e-7
    temperature: float = 1.0
    max_completion_length: int = 4
    eval_every: int = 25
    eval_samples: int = 128
    final_samples: int = 512
    mara_tau: float = 1.0
    model: str | None = None
    cache_dir: str | None = None
    options: tuple[str, ...] = field(default=ONE_OR_TWO)

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO's group baseline needs two samples), got {self.num_generations}")
        if self.steps < 1 or self.eval_every < 1:
            raise ValueError(f"steps and eval_every must be >= 1, got {self.steps} and {self.eval_every}")
        if any(b <= 0 for b in self.betas):
            raise ValueError(f"betas must all be > 0 (MARA is inert at beta = 0), got {self.betas}")
        from mara_rl.llm.methods import expand_methods

        try:
            labels = expand_methods(self.methods)
        except ValueError as err:
            raise ValueError(f"methods: {err}") from None
        if labels != tuple(self.methods):
            raise ValueError(f"methods must be labels with their settings {labels}, got {self.methods}")
        if not set(self.kl_directions) <= {"reverse", "forward"}:
            raise ValueError(f"kl_directions must be drawn from ('reverse', 'forward'), got {self.kl_directions}")


GRID_KEYS = ("betas", "kl_directions", "methods", "seeds")
"""Run names hold these, so a sweep's folder may grow along them; every other setting must match."""
QUICK = {"betas": (0.03,), "seeds": (0,), "steps": 100}
"""``--quick``: one beta, both KL directions, vanilla and MARA: four runs, a few minutes on a CPU."""


def run_name(beta: float, kl: str, method: str, seed: int) -> str:
    return f"beta{beta:g}-{kl}-{method}-seed{seed}"


def sample_answers(model: Any, tokenizer: Any, prompt: str, n: int, *, temperature: float, max_new_tokens: int,
                   seed: int) -> list[str]:
    """``n`` completions of ``prompt`` sampled from ``model`` (decoded, special tokens dropped)."""
    import torch

    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    enc = tokenizer([prompt] * n, return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        out = model.generate(
            **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    torch.random.set_rng_state(generator_state)
    model.train(was_training)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def load_policy(cfg: SweepConfig) -> tuple[str, Any]:
    """Model id or path for TRL, and its tokenizer; builds the tiny reference when ``cfg.model`` is None."""
    from transformers import AutoTokenizer

    if cfg.model is None:
        from mara_rl.llm.tiny import tiny_reference_path

        path = str(tiny_reference_path(cfg.cache_dir))
    else:
        path = cfg.model
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return path, tokenizer


def train_run(cfg: SweepConfig, beta: float, kl: str, method: str, seed: int, output_dir: Path,
              record_dir: Path | None = None) -> dict[str, Any]:
    """Train one policy and return its metrics (final sample, curves, reference sample).

    With ``record_dir``, the run's rollouts are recorded there (``record_rollouts_dir``).
    """
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer
    from mara_rl.llm.methods import config_kwargs
    from mara_rl.llm.tasks import random_choice_dataset_rows, random_choice_prompt, random_choice_reward

    model_path, tokenizer = load_policy(cfg)
    prompt = random_choice_prompt(cfg.options)
    rows = random_choice_dataset_rows(cfg.options, num_prompts=cfg.steps * cfg.prompts_per_step)
    args = MaraGRPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        lr_scheduler_type="constant",
        max_steps=cfg.steps,
        beta=beta,
        kl_direction=kl,
        **config_kwargs(method, cfg.mara_tau),
        scale_rewards="none",
        loss_type="grpo",
        seed=seed,
        logging_steps=cfg.eval_every,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=cfg.model is None or not torch.cuda.is_available(),
        record_rollouts_dir=None if record_dir is None else str(record_dir),
    )

    def evaluate(model: Any, n: int, sample_seed: int) -> dict[str, Any]:
        answers = sample_answers(model, tokenizer, prompt, n, temperature=cfg.temperature,
                                 max_new_tokens=cfg.max_completion_length, seed=sample_seed)
        return random_choice_metrics(answers, cfg.options)

    curve: list[dict[str, Any]] = []

    class Curve(TrainerCallback):
        def on_step_end(self, _args, state, _control, model=None, **kwargs):
            if state.global_step % cfg.eval_every == 0:
                m = evaluate(model, cfg.eval_samples, 10_000 + state.global_step)
                curve.append({"step": state.global_step, "reward": m["reward"], "entropy": m["entropy"]})

    trainer = MaraGRPOTrainer(model=model_path, reward_funcs=random_choice_reward, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                              callbacks=[Curve()])
    start = evaluate(trainer.model, cfg.eval_samples, 10_000)
    curve.insert(0, {"step": 0, "reward": start["reward"], "entropy": start["entropy"]})
    trainer.train()
    final = evaluate(trainer.model, cfg.final_samples, 20_000 + seed)
    if curve[-1]["step"] != cfg.steps:
        curve.append({"step": cfg.steps, "reward": final["reward"], "entropy": final["entropy"]})
    logs = [h for h in trainer.state.log_history if "loss" in h]
    mara_frac = [h["mara/frac_groups_augmented"] for h in logs if "mara/frac_groups_augmented" in h]
    # Reward is the share of valid answers: 0 at an evaluation point means every sampled answer was invalid.
    min_valid = min([c["reward"] for c in curve] + [final["reward"]])
    return {
        "name": run_name(beta, kl, method, seed), "beta": beta, "kl": kl, "method": method, "seed": seed,
        "reward": final["reward"], "entropy": final["entropy"], "histogram": final["histogram"],
        "min_valid_rate": min_valid, "all_invalid": min_valid == 0.0,
        "curve": curve, "mara_frac_groups_augmented": mara_frac, "step_time_s": _mean(
            [h["step_time"] for h in logs if "step_time" in h]),
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def reference_metrics(cfg: SweepConfig, n: int | None = None) -> dict[str, Any]:
    """Reward, entropy and histogram of a sample from the reference model itself."""
    from transformers import AutoModelForCausalLM

    from mara_rl.llm.tasks import random_choice_prompt

    path, tokenizer = load_policy(cfg)
    model = AutoModelForCausalLM.from_pretrained(path)
    answers = sample_answers(model, tokenizer, random_choice_prompt(cfg.options), n or cfg.final_samples,
                             temperature=cfg.temperature, max_new_tokens=cfg.max_completion_length, seed=1)
    return random_choice_metrics(answers, cfg.options)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (reward, entropy), both maximised, sorted by entropy."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front), key=lambda p: p[1])


def plot_pareto(results: list[dict[str, Any]], reference: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cmaps = {"vanilla": plt.get_cmap("Blues"), "mara": plt.get_cmap("Reds")}
    results = [r for r in results if r["method"] in cmaps]  # the other methods: methods.png
    markers = {"reverse": "o", "forward": "s"}
    betas = sorted({r["beta"] for r in results})

    def shade(beta: float) -> float:  # darker = larger beta
        return 0.4 + 0.55 * (betas.index(beta) / max(len(betas) - 1, 1))

    for r in results:
        ax.scatter(r["entropy"], r["reward"], color=cmaps[r["method"]](shade(r["beta"])), marker=markers[r["kl"]],
                   s=36, alpha=0.85, edgecolors="none")
    front = pareto_front([(r["reward"], r["entropy"]) for r in results])
    ax.plot([p[1] for p in front], [p[0] for p in front], "k--", lw=1, marker="D", mfc="none", ms=9,
            label="Pareto front")
    ax.scatter(reference["entropy"], reference["reward"], c="k", marker="*", s=120, label="reference model")
    for method, label in (("vanilla", "vanilla GRPO"), ("mara", "MARA")):
        ax.scatter([], [], color=cmaps[method](0.8), label=label)
    for kl, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=f"{kl} KL")
    for beta in betas:
        ax.scatter([], [], color=plt.get_cmap("Greys")(shade(beta)), marker="o", s=20, label=f"beta {beta:g}")
    ax.set_xlabel("normalised entropy of valid answers (1 = uniform over {1, 2})")
    ax.set_ylabel("mean reward (share of valid answers)")
    ax.set_title('"Output 1 or 2 uniformly at random": reward vs answer entropy\n(one point per run)')
    ax.set_xlim(-0.03, 1.05)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_curves(results: list[dict[str, Any]], betas: tuple[float, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(betas), figsize=(3.2 * len(betas), 3.2), sharey=True, squeeze=False)
    styles = {("vanilla", "reverse"): ("tab:blue", "-"), ("vanilla", "forward"): ("tab:blue", "--"),
              ("mara", "reverse"): ("tab:red", "-"), ("mara", "forward"): ("tab:red", "--")}
    for ax, beta in zip(axes[0], betas):
        for (method, kl), (color, ls) in styles.items():
            runs = [r for r in results if r["beta"] == beta and r["method"] == method and r["kl"] == kl]
            for i, r in enumerate(runs):
                ax.plot([c["step"] for c in r["curve"]], [c["entropy"] for c in r["curve"]], color=color, ls=ls,
                        alpha=0.8, label=f"{'MARA' if method == 'mara' else 'vanilla'}, {kl}" if i == 0 else None)
        ax.axhline(REFERENCE_ENTROPY_90_10, color="gray", lw=0.8, ls=":", label="90/10 reference")
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(f"beta = {beta:g}")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalised answer entropy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean final reward and entropy over seeds, per (beta, kl, method)."""
    keys = sorted({(r["beta"], r["kl"], r["method"]) for r in results})
    rows = []
    for beta, kl, method in keys:
        runs = [r for r in results if (r["beta"], r["kl"], r["method"]) == (beta, kl, method)]
        rows.append({"beta": beta, "kl": kl, "method": method, "seeds": [r["seed"] for r in runs],
                     "reward": _mean([r["reward"] for r in runs]), "entropy": _mean([r["entropy"] for r in runs]),
                     "min_entropy": min(r["entropy"] for r in runs), "max_entropy": max(r["entropy"] for r in runs),
                     "all_invalid_runs": sum(r["all_invalid"] for r in runs)})
    return rows


def write_summary(rows: list[dict[str, Any]], reference: dict[str, Any], path: Path) -> None:
    lines = ["# 1 or 2: vanilla GRPO vs MARA", "",
             f"Reference model: reward {reference['reward']:.3f}, answer entropy {reference['entropy']:.3f} "
             f"(histogram {reference['histogram']}). The closed-form KL-regularised target keeps the "
             "reference's ratio between the valid answers at every beta (Prop. 4.1), so its entropy is the "
             "reference's.", "",
             "| beta | KL | method | seeds | reward | entropy (mean) | entropy (min-max) | runs through all-invalid |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['beta']:g} | {r['kl']} | {r['method']} | {len(r['seeds'])} | {r['reward']:.3f} | "
                     f"{r['entropy']:.3f} | {r['min_entropy']:.3f}-{r['max_entropy']:.3f} | {r['all_invalid_runs']} |")
    lines += ["", "Figures: `pareto.png` (reward vs answer entropy), `curves.png` (entropy over training)."]
    path.write_text("\n".join(lines) + "\n")


def stored_config(out: Path) -> SweepConfig:
    """The configuration a sweep folder was run with (``config.json``)."""
    stored = out / "config.json"
    if not stored.is_file():
        raise ValueError(f"--report: {out} holds no sweep (no config.json)")
    values = json.loads(stored.read_text())
    known = set(SweepConfig.__dataclass_fields__)
    return SweepConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def run_sweep(cfg: SweepConfig, out: Path, jobs: int = 1, *, train: bool = True) -> dict[str, Any]:
    """Run (or resume) the sweep into ``out`` and write table, figures and summary.

    ``jobs > 1`` trains the missing runs in that many processes, each pinned to one torch thread;
    every run is seeded on its own, so the results are those of ``jobs=1`` on one thread.
    ``train=False`` trains nothing and reports the grid's runs already finished in ``out``.
    With methods beyond vanilla and MARA it also writes ``methods.md`` (best setting of each method,
    Welch p-values against MARA, overall and at each (beta, KL); every run's breakdown),
    ``methods.png`` (each method's front) and, over two or more (beta, KL), ``methods_by_beta.png``.
    """
    from mara_rl.llm.sweep import check_stored_config, run_grid

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if train:
        out.mkdir(parents=True, exist_ok=True)
    check_stored_config(asdict(cfg), out, grid_keys=GRID_KEYS, write=train)
    grid = [(b, k, m, s) for b in cfg.betas for k in cfg.kl_directions for m in cfg.methods for s in cfg.seeds]
    runs = {run_name(*key): (cfg, *key, out / "trainer" / run_name(*key), out / "records" / run_name(*key))
            for key in grid}
    finished = None if train else run_grid(out, runs, train_run, desc="mara llm one-or-two", report_only=True)
    reference = reference_metrics(cfg)  # also builds the tiny reference once, before any worker needs it
    if finished is None:
        finished = run_grid(out, runs, train_run, jobs=jobs, desc="mara llm one-or-two")
    results = list(finished.values())
    rows = aggregate(results)
    with open(out / "runs.csv", "w", newline="") as f:
        columns = ["name", "beta", "kl", "method", "seed", "reward", "entropy", "min_valid_rate", "all_invalid",
                   "step_time_s"]
        writer = csv.DictWriter(f, fieldnames=[*columns[:7], *cfg.options, "invalid", *columns[7:]])
        writer.writeheader()
        for r in results:
            writer.writerow({**{k: r[k] for k in columns}, **r["histogram"]})
    metrics = {"reference": reference, "aggregate": rows, "runs": results}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_pareto(results, reference, out / "pareto.png")
    plot_curves(results, cfg.betas, out / "curves.png")
    write_summary(rows, reference, out / "summary.md")
    if set(cfg.methods) - {"vanilla", "mara"}:
        from mara_rl.llm.methods import best_settings_by_cell, plot_by_beta, plot_fronts, write_comparison

        by_cell = best_settings_by_cell(results)
        metrics["methods"] = write_comparison(results, out / "methods.md", planned=len(grid), by_cell=by_cell)
        plot_fronts(results, reference, out / "methods.png")
        metrics["methods_by_cell"] = [{"beta": b, "kl": k, "best": rows} for (b, k), rows in by_cell.items()]
        if len(by_cell) > 1:
            plot_by_beta(by_cell, reference, out / "methods_by_beta.png")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
