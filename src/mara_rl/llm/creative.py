"""The paper's non-verifiable LLM experiment (Sec. 6.2) at CPU scale: ``mara llm creative``.

A tiny causal LM pre-trained on the creative task's corpus (:mod:`mara_rl.llm.creative_task`: many
valid answers per prompt at Zipf frequencies) is post-trained on the training families, rewarded by
the learned training reward model (:mod:`mara_rl.llm.reward_model`), with each registered method
(:data:`METHODS`: GRPO, RLOO, MARA with reverse and with forward KL, ``mara_tau_quantile=0.9``) at
one ``beta`` and several seeds, through :class:`MaraGRPOTrainer` / :class:`MaraRLOOTrainer`. After
training, ``eval_samples`` answers per prompt give, as in the paper's table:

- ``in_dist``: mean training-RM reward on the training prompts;
- ``out_dist``: mean evaluation-RM reward on the held-out families' prompts;
- ``ead``: n-gram EAD (n = 1..5, vocabulary = the tokenizer's) of each held-out prompt's answers;
- ``semantic``: mean pairwise all-MiniLM-L6-v2 cosine distance of each held-out prompt's answers;
- ``distinct``: NoveltyBench-style distinct classes among each held-out prompt's answers;

diversity averaged over prompts (the ``*_in`` twins: the same on the training prompts). The
reference model itself is evaluated with the same sampling seeds (the ``base`` row).

Methods are registered by name (:func:`register_method`): a :class:`Method` names a trainer class
and its config class by import path, with config options; modules listed in
:data:`METHOD_MODULES` are imported before the registry is read, so a new method needs no change
here beyond that list.

The sweep writes into its folder ``config.json``, ``runs/<run>.json`` (resumable, ``jobs`` worker
processes; :mod:`mara_rl.llm.sweep`), ``reward_models.json``, ``metrics.json``, ``runs.csv``,
``reward_vs_diversity.png`` and ``summary.md``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mara_rl.llm import creative_task as task
from mara_rl.llm.reward_model import EVAL_RM, TRAIN_RM, RewardModelSpec

TRAINERS = "mara_rl.integrations.trl.trainers"


@dataclass(frozen=True)
class Method:
    """A post-training method: ``trainer`` and ``config`` are ``"module:Class"`` import paths (so a
    spawned worker can build them), ``options`` the config fields that set the method apart."""

    name: str
    label: str
    trainer: str = f"{TRAINERS}:MaraRLOOTrainer"
    config: str = f"{TRAINERS}:MaraRLOOConfig"
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def is_mara(self) -> bool:
        return bool(dict(self.options).get("mara", False))

    def classes(self) -> tuple[type, type]:
        """``(trainer class, config class)``, imported."""
        return _import(self.trainer), _import(self.config)


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {}
METHOD_MODULES: tuple[str, ...] = ()
"""Modules that register further methods when imported (read by :func:`methods`)."""


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS` under ``method.name``; an existing name needs ``replace=True``."""
    if method.name in METHODS and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered")
    if not method.name or method.name.startswith("base") or method.name.split() != [method.name]:
        raise ValueError(f"a method name is one word and not 'base...', got {method.name!r}")
    METHODS[method.name] = method
    return method


def methods() -> dict[str, Method]:
    """Every registered method, after importing :data:`METHOD_MODULES`."""
    for module in METHOD_MODULES:
        importlib.import_module(module)
    return METHODS


MARA_OPTIONS = (("mara", True), ("mara_tau_quantile", 0.9))
register_method(Method("grpo", "GRPO", f"{TRAINERS}:MaraGRPOTrainer", f"{TRAINERS}:MaraGRPOConfig",
                       (("scale_rewards", "none"),)))
register_method(Method("rloo", "RLOO"))
register_method(Method("mara-reverse", "MARA (reverse)", options=(*MARA_OPTIONS, ("kl_direction", "reverse"))))
register_method(Method("mara-forward", "MARA (forward)", options=(*MARA_OPTIONS, ("kl_direction", "forward"))))
DEFAULT_METHODS = ("grpo", "rloo", "mara-reverse", "mara-forward")
register_method(Method("forward-kl", "forward KL", options=(("kl_direction", "forward"),)))
# The rivals (mara_rl.llm.methods), each at the settings its paper or engine recommends and one each
# side, on GRPO like the "grpo" row (TRL's entropy bonus exists only there).
RIVAL_FAMILIES = ("entropy", "adaptive_entropy", "unlikeliness", "pkpo", "outcome_batch", "outcome_ucb", "grpo_passk")
NOT_HERE = {"passk_advantage": "needs 0/1 rewards, and the reward model's are graded"}


def _register_rivals() -> None:
    from mara_rl.llm.methods import config_kwargs, expand_methods

    for label in expand_methods(RIVAL_FAMILIES):
        options = (("scale_rewards", "none"), *config_kwargs(label, mara_tau=None).items())
        register_method(Method(label, label.replace("=", " "), f"{TRAINERS}:MaraGRPOTrainer",
                               f"{TRAINERS}:MaraGRPOConfig", options))


_register_rivals()


def expand_method_names(names: Sequence[str]) -> tuple[str, ...]:
    """Registered names, a rival family's name standing for all its settings (``entropy`` ->
    ``entropy=0.001 entropy=0.01 entropy=0.1``); ``ValueError`` for an unknown name or a repeat."""
    known = methods()
    out: list[str] = []
    for name in names:
        family = [m for m in known if m == name or m.split("=")[0] == name]
        if not family and name.split("=")[0] in NOT_HERE:
            raise ValueError(f"{name} is not run on this task: it {NOT_HERE[name.split('=')[0]]}")
        if not family:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(sorted(known))} "
                             f"(a family name such as {RIVAL_FAMILIES[0]!r} stands for all its settings)")
        out.extend(family)
    if len(set(out)) != len(out):
        raise ValueError(f"a method is named twice: {' '.join(out)}")
    return tuple(out)

PAPER_TABLE = {  # GX-Chen et al., Sec. 6.2 (Qwen3-1.7B, WildChat / NoveltyBench), means
    "base": (10.94, 1.166, 0.413, 0.220, 4.01),
    "grpo": (14.80, 1.317, 0.497, 0.193, 3.96),
    "rloo": (15.56, 1.280, 0.514, 0.192, 3.88),
    "mara-reverse": (15.42, 1.451, 0.543, 0.186, 4.14),
    "mara-forward": (15.33, 1.604, 0.568, 0.193, 4.62),
}
TABLE_METRICS = ("in_dist", "out_dist", "ead", "semantic", "distinct")
P_VALUE_METRICS = (*TABLE_METRICS, "ead_in", "semantic_in", "distinct_in")
METRIC_LABELS = {"in_dist": "in-dist", "out_dist": "out-dist", "ead": "n-gram EAD", "semantic": "sem. div",
                 "distinct": "mean distinct", "ead_in": "EAD (train)", "semantic_in": "sem. div (train)",
                 "distinct_in": "distinct (train)"}


@dataclass
class CreativeConfig:
    """Every knob of the sweep; ``model=None`` means the tiny creative reference built from ``corpus``."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    beta: float = 0.05
    steps: int = 60
    num_generations: int = 16
    prompts_per_step: int = 2
    learning_rate: float = 1e-3
    temperature: float = 1.0
    max_completion_length: int = task.MAX_ANSWER_WORDS + 1
    logging_steps: int = 10
    eval_samples: int = 16
    pretrain_steps: int = 1500
    corpus: task.Corpus = field(default_factory=task.Corpus)
    train_rm: RewardModelSpec = TRAIN_RM
    eval_rm: RewardModelSpec = EVAL_RM
    model: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        known = methods()
        unknown = [m for m in self.methods if m not in known]
        if unknown or not self.methods:
            raise ValueError(f"methods must be drawn from {sorted(known)}, got {self.methods}")
        if len(set(self.methods)) != len(self.methods) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("methods and seeds must not repeat")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be > 0 (MARA is inert at beta = 0), got {self.beta}")
        for name in ("steps", "num_generations", "prompts_per_step", "max_completion_length", "logging_steps",
                     "pretrain_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2 or self.eval_samples < 2:
            raise ValueError("num_generations and eval_samples must be >= 2 (groups and diversity need pairs)")

    def settings(self) -> dict[str, Any]:
        """What a resumed sweep must match: every knob but the cache folder, seeds and methods (which may
        grow), and the definition of each method it has run."""
        out = asdict(self)
        out.pop("cache_dir")
        out["method_specs"] = {m: asdict(methods()[m]) for m in self.methods}
        return out


QUICK = {"seeds": (0,), "steps": 20, "eval_samples": 8}
"""``--quick``: the four methods, one seed, 20 steps (plus the base row)."""


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def reference_dirname(corpus: task.Corpus, pretrain_steps: int) -> str:
    """Cache folder name of the creative reference: a hash of families, corpus, pre-training and versions."""
    key = {"families": repr(task.FAMILIES), "corpus": asdict(corpus), "pretrain_steps": pretrain_steps,
           "seed": 0, "versions": _versions()}
    return "tiny-creative-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def creative_tokenizer() -> Any:
    """Word-level tokenizer over every prompt and answer word of the task."""
    from mara_rl.llm.tiny import word_tokenizer

    return word_tokenizer(task.all_words())


def creative_reference_path(corpus: task.Corpus | None = None, pretrain_steps: int = 1500,
                            cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the tiny reference pre-trained on ``corpus`` (built once with seed 0, then cached)."""
    from mara_rl.llm.tiny import build_cached_model, pretrain, tiny_untrained_model

    corpus = corpus or task.Corpus()

    def build(folder: Path) -> dict[str, Any]:
        model, tokenizer = tiny_untrained_model(seed=0, tokenizer=creative_tokenizer())
        pretrain(model, tokenizer, steps=pretrain_steps, seed=0, sample_line=corpus.sampler())
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return {"corpus": asdict(corpus), "pretrain_steps": pretrain_steps, "versions": _versions()}

    return build_cached_model(reference_dirname(corpus, pretrain_steps), build, cache_dir)


def policy_path(cfg: CreativeConfig) -> str:
    return cfg.model if cfg.model is not None else str(
        creative_reference_path(cfg.corpus, cfg.pretrain_steps, cfg.cache_dir))


def load_reward_models(cfg: CreativeConfig) -> tuple[Any, Any]:
    """``(training RM, evaluation RM)``, sharing one embedding cache."""
    from mara_rl.llm.reward_model import EmbeddingCache, load_reward_model

    embeddings = EmbeddingCache()
    return (load_reward_model(cfg.train_rm, cfg.corpus, cache_dir=cfg.cache_dir, embeddings=embeddings),
            load_reward_model(cfg.eval_rm, cfg.corpus, cache_dir=cfg.cache_dir, embeddings=embeddings))


def sample_per_prompt(model: Any, tokenizer: Any, prompts: Sequence[str], n: int, *, temperature: float,
                      max_new_tokens: int, seed: int) -> dict[str, list[str]]:
    """``n`` sampled answers per prompt (prompt ``i`` sampled with seed ``seed + i``)."""
    from mara_rl.llm.one_or_two import sample_answers

    return {p: [a.strip() for a in sample_answers(model, tokenizer, p, n, temperature=temperature,
                                                  max_new_tokens=max_new_tokens, seed=seed + i)]
            for i, p in enumerate(prompts)}


def diversity(samples: Mapping[str, Sequence[str]], *, vocab_size: int, encoder: Any) -> dict[str, float]:
    """Per-prompt diversity of ``samples`` (prompt -> answers), averaged over prompts:
    ``ead`` (mean EAD, n = 1..5), ``semantic`` (mean pairwise cosine distance), ``distinct``
    (NoveltyBench classes, ROUGE-1 equivalence) and ``unique`` (distinct answer strings)."""
    from mara_rl.metrics.text import distinct_classes, mean_ead, semantic_diversity

    rows = [{"ead": mean_ead(answers, vocab_size=vocab_size),
             "semantic": semantic_diversity(answers, encoder=encoder),
             "distinct": float(distinct_classes(answers)),
             "unique": float(len(set(answers)))} for answers in samples.values()]
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in rows[0]}


def evaluate(model: Any, tokenizer: Any, cfg: CreativeConfig, train_rm: Any, eval_rm: Any, seed: int) -> dict[str, Any]:
    """The table's metrics for ``model`` (see the module docstring), from ``cfg.eval_samples`` per prompt."""
    import numpy as np

    kwargs = dict(temperature=cfg.temperature, max_new_tokens=cfg.max_completion_length)
    train_prompts = task.prompts_of(task.TRAIN_FAMILIES)
    held_out_prompts = task.prompts_of(task.HELD_OUT_FAMILIES)
    inside = sample_per_prompt(model, tokenizer, train_prompts, cfg.eval_samples, seed=20_000 + 1000 * seed, **kwargs)
    outside = sample_per_prompt(model, tokenizer, held_out_prompts, cfg.eval_samples, seed=30_000 + 1000 * seed,
                                **kwargs)

    def mean_reward(rm: Any, samples: dict[str, list[str]]) -> float:
        prompts = [p for p, answers in samples.items() for _ in answers]
        return float(np.mean(rm.scores(prompts, [a for answers in samples.values() for a in answers])))

    vocab = len(tokenizer)
    div_out = diversity(outside, vocab_size=vocab, encoder=train_rm.embeddings)
    div_in = diversity(inside, vocab_size=vocab, encoder=train_rm.embeddings)
    return {"in_dist": mean_reward(train_rm, inside), "out_dist": mean_reward(eval_rm, outside),
            "in_dist_eval_rm": mean_reward(eval_rm, inside), "out_dist_train_rm": mean_reward(train_rm, outside),
            **div_out, **{f"{k}_in": v for k, v in div_in.items()},
            "samples_in": inside, "samples_out": outside}


def _train_rows(cfg: CreativeConfig, seed: int) -> list[dict[str, str]]:
    """``steps * prompts_per_step`` training prompts: reshuffled passes over the training families."""
    prompts = task.prompts_of(task.TRAIN_FAMILIES)
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    while len(rows) < cfg.steps * cfg.prompts_per_step:
        rng.shuffle(prompts)
        rows.extend({"prompt": p} for p in prompts)
    return rows[: cfg.steps * cfg.prompts_per_step]


def train_run(cfg: CreativeConfig, method_name: str | None, seed: int, output_dir: Path) -> dict[str, Any]:
    """Train one policy with ``method_name`` (``None``: evaluate the reference) and return its metrics."""
    import time

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = policy_path(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    train_rm, eval_rm = load_reward_models(cfg)
    start = time.perf_counter()
    base = {"seed": seed, "steps": 0, "log": []}
    if method_name is None:
        model = AutoModelForCausalLM.from_pretrained(path)
        result = {"name": run_name("base", seed), "method": "base", **base}
    else:
        method = methods()[method_name]
        trainer_cls, config_cls = method.classes()
        args = config_cls(
            output_dir=str(output_dir), per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
            num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature, learning_rate=cfg.learning_rate, lr_scheduler_type="constant",
            max_steps=cfg.steps, beta=cfg.beta, seed=seed, logging_steps=cfg.logging_steps, save_strategy="no",
            report_to="none", disable_tqdm=True, use_cpu=True, **dict(method.options))
        trainer = trainer_cls(model=path, reward_funcs=[train_rm], args=args,
                              train_dataset=Dataset.from_list(_train_rows(cfg, seed)), processing_class=tokenizer)
        trainer.train()
        model = trainer.model
        keys = ("step", "reward", "mara/reward_raw", "kl", "mara/frac_groups_augmented", "entropy")
        log = [{k: h[k] for k in keys if k in h} for h in trainer.state.log_history if "reward" in h]
        result = {"name": run_name(method_name, seed), "method": method_name, **base, "steps": cfg.steps, "log": log}
    result.update(evaluate(model, tokenizer, cfg, train_rm, eval_rm, seed))
    result["seconds"] = time.perf_counter() - start
    return result


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``std(ddof=1) / sqrt(n)``; NaN for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value (unequal variances); NaN with fewer than 2 values a side."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def aggregate(results: Sequence[Mapping[str, Any]], row_order: Sequence[str]) -> list[dict[str, Any]]:
    """Per row (``base`` and each method): seeds, and mean and SEM of every table metric."""
    rows = []
    for name in row_order:
        runs = [r for r in results if r["method"] == name]
        if not runs:
            continue
        row: dict[str, Any] = {"method": name, "seeds": [r["seed"] for r in runs]}
        for metric in (*TABLE_METRICS, "unique", "ead_in", "semantic_in", "distinct_in", "unique_in"):
            row[metric], row[f"{metric}_sem"] = mean_sem([r[metric] for r in runs])
        rows.append(row)
    return rows


def p_values(results: Sequence[Mapping[str, Any]], method_names: Sequence[str]) -> list[dict[str, Any]]:
    """Welch p-values, per table metric and training-prompt diversity, of each MARA method against each other method."""
    registry = methods()
    per = {m: [r for r in results if r["method"] == m] for m in method_names}
    out = []
    for mara in [m for m in method_names if registry[m].is_mara]:
        for other in [m for m in method_names if not registry[m].is_mara]:
            out.append({"mara": mara, "baseline": other, **{
                metric: welch_p([r[metric] for r in per[mara]], [r[metric] for r in per[other]])
                for metric in P_VALUE_METRICS}})
    return out


def _label(name: str) -> str:
    return "base" if name == "base" else methods()[name].label


def plot_reward_vs_diversity(results: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                             path: Path) -> None:
    """Two panels, one point per run and the mean +- SEM per method, reward against semantic diversity
    on the same prompts: training prompts with the training RM, held-out prompts with the evaluation RM.
    The rivals' settings are left to :func:`plot_method_fronts`."""
    rows = [row for row in rows if family(row["method"]) not in RIVAL_FAMILIES]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = plt.get_cmap("tab10")
    panels = (("semantic_in", "in_dist", "semantic diversity (training prompts)", "in-dist reward (training RM)"),
              ("semantic", "out_dist", "semantic diversity (held-out prompts)", "out-dist reward (evaluation RM)"))
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels):
        for i, row in enumerate(rows):
            color = "black" if row["method"] == "base" else colors(i)
            runs = [r for r in results if r["method"] == row["method"]]
            ax.scatter([r[x] for r in runs], [r[y] for r in runs], color=color, s=14, alpha=0.45, edgecolors="none")
            ax.errorbar(row[x], row[y], xerr=_finite(row[f"{x}_sem"]), yerr=_finite(row[f"{y}_sem"]), color=color,
                        marker="*" if row["method"] == "base" else "o", ms=9, capsize=3,
                        label=f"{_label(row['method'])} (n={len(runs)})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Creative task: reward vs diversity (small points: runs; large: mean ± SEM over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _cell(mean: float, sem: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(sem) else f"{mean:.{digits}f} ± {sem:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2g}"


QUALITY_SHARE = 0.95
"""A setting keeps the task's quality if its in-distribution reward keeps this share of GRPO's gain over the base model."""
FRONT_METRIC = "semantic_in"
"""Diversity where collapse shows: semantic diversity of the answers to the training prompts."""


def family(name: str) -> str:
    """``entropy=0.01`` -> ``entropy``; a method without settings is its own family."""
    return name.split("=")[0]


def best_settings(rows: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Per family of methods, the setting of highest :data:`FRONT_METRIC` among those keeping
    :data:`QUALITY_SHARE` of GRPO's in-distribution reward gain over the base model (else the one of
    highest reward), with Welch p-values of its runs against each MARA method's on in-distribution
    reward and training-prompt diversity. Returns the rows and the reward bar (``-inf`` without a
    base and a GRPO row)."""
    by_name = {row["method"]: row for row in rows}
    if "base" in by_name and "grpo" in by_name:
        bar = by_name["base"]["in_dist"] + QUALITY_SHARE * (by_name["grpo"]["in_dist"] - by_name["base"]["in_dist"])
    else:
        bar = -math.inf
    families: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["method"] != "base":
            families.setdefault(family(row["method"]), []).append(row)
    registry = methods()
    maras = [row["method"] for row in rows if row["method"] != "base" and registry[row["method"]].is_mara]
    per_run = {name: [r for r in results if r["method"] == name] for name in by_name}
    best = []
    for name, members in families.items():
        keeping = [m for m in members if m["in_dist"] >= bar]
        pick = max(keeping, key=lambda m: m[FRONT_METRIC]) if keeping else max(members, key=lambda m: m["in_dist"])
        p = {f"{metric}|{mara}": welch_p([r[metric] for r in per_run[pick["method"]]], [r[metric] for r in per_run[mara]])
             for mara in maras if mara != pick["method"] for metric in ("in_dist", FRONT_METRIC, "distinct_in")}
        best.append({**pick, "family": name, "settings": len(members), "keeps_quality": bool(keeping), "p": p})
    return best, bar


def plot_method_fronts(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """In-distribution reward against training-prompt semantic diversity: one point per setting
    (seed means), each family's settings joined along its Pareto front; MARA in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mara_rl.llm.one_or_two import pareto_front

    registry = methods()
    families: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["method"] != "base":
            families.setdefault(family(row["method"]), []).append((row["in_dist"], row[FRONT_METRIC]))
    fig, ax = plt.subplots(figsize=(7.4, 5.0))
    fixed = {"mara-reverse": "tab:red", "mara-forward": "darkred", "grpo": "tab:blue", "rloo": "tab:cyan",
             "forward-kl": "tab:purple"}
    palette = iter(["tab:green", "tab:olive", "tab:orange", "tab:brown", "tab:pink", "tab:gray", "gold", "black",
                    "lime", "navy"] * 3)
    for name, points in families.items():
        is_mara = registry[name].is_mara if name in registry else False
        color = fixed.get(name) or ("tab:red" if is_mara else next(palette))
        ax.scatter([p[1] for p in points], [p[0] for p in points], color=color, s=20, alpha=0.6, edgecolors="none")
        front = pareto_front(points)
        ax.plot([p[1] for p in front], [p[0] for p in front], color=color, lw=2.2 if is_mara else 1.2, marker="o",
                ms=6 if is_mara else 4, label=registry[name].label if name in registry else name)
    base = next((row for row in rows if row["method"] == "base"), None)
    if base is not None:
        ax.scatter(base[FRONT_METRIC], base["in_dist"], c="k", marker="*", s=140, label="base model", zorder=5)
    ax.set_xlabel("semantic diversity of answers to the training prompts")
    ax.set_ylabel("in-distribution reward (training RM)")
    ax.set_title("Creative task: each method's reward-vs-diversity front\n(points: seed means per setting)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _rivals_markdown(best: Sequence[Mapping[str, Any]], bar: float) -> list[str]:
    maras = sorted({key.split("|")[1] for row in best for key in row["p"]})
    rule = (f"the one of highest semantic diversity on the training prompts among those whose in-distribution reward "
            f"keeps {QUALITY_SHARE:.0%} of GRPO's gain over the base model (reward >= {bar:.3f}; else the one of highest "
            "reward, marked *)" if math.isfinite(bar) else
            "the one of highest semantic diversity on the training prompts (no base and GRPO rows to set a reward bar)")
    header = ["family", "best setting", "settings", "n", "in-dist", "out-dist", "sem. div (train)", "distinct (train)",
              *(f"p in-dist / sem. div (train) vs {_label(m)}" for m in maras)]
    lines = ["", "## Against the other anti-collapse methods", "",
             f"Best setting of each family: {rule}. p: Welch t-test of its runs against each MARA method's "
             "(best-of-settings on the rival's side: read a small p as a difference, not its size).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in best:
        cells = [row["family"], _label(row["method"]) + ("" if row["keeps_quality"] else "*"), str(row["settings"]),
                 str(len(row["seeds"])), _cell(row["in_dist"], row["in_dist_sem"], 3),
                 _cell(row["out_dist"], row["out_dist_sem"], 3), _cell(row["semantic_in"], row["semantic_in_sem"], 3),
                 _cell(row["distinct_in"], row["distinct_in_sem"], 2),
                 *(f"{_p(row['p'].get(f'in_dist|{m}', math.nan))} / {_p(row['p'].get(f'{FRONT_METRIC}|{m}', math.nan))}"
                   for m in maras)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Figure: `method_fronts.png` (every setting of every family)."]
    return lines


def summary_markdown(rows: Sequence[Mapping[str, Any]], pvals: Sequence[Mapping[str, Any]],
                     reward_models: Mapping[str, Any], cfg: CreativeConfig,
                     rivals: tuple[list[dict[str, Any]], float] | None = None) -> str:
    """The table in the paper's layout (mean ± SEM over seeds) with the paper's numbers, p-values, RMs."""
    digits = {"in_dist": 3, "out_dist": 3, "ead": 3, "semantic": 3, "distinct": 2}
    lines = ["# Creative task: GRPO, RLOO and MARA with a learned reward model", "",
             f"beta {cfg.beta:g}, {cfg.steps} steps, {cfg.num_generations} generations x {cfg.prompts_per_step} "
             f"prompts per step, {cfg.eval_samples} evaluation answers per prompt; mean ± SEM over seeds "
             "(column n).", "",
             "| model | n | in-dist | out-dist | n-gram EAD | sem. div | mean distinct |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = " | ".join(_cell(row[m], row[f"{m}_sem"], digits[m]) for m in TABLE_METRICS)
        lines.append(f"| {_label(row['method'])} | {len(row['seeds'])} | {cells} |")
    lines += ["", "Diversity per prompt on the held-out prompts (as above) and on the training prompts, with the number "
              f"of different answers among the {cfg.eval_samples}:", "",
              "| model | unique (held-out) | n-gram EAD (train) | sem. div (train) | mean distinct (train) | "
              "unique (train) |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = " | ".join(_cell(row[m], row[f"{m}_sem"], 3 if m in ("ead_in", "semantic_in") else 2)
                           for m in ("unique", "ead_in", "semantic_in", "distinct_in", "unique_in"))
        lines.append(f"| {_label(row['method'])} | {cells} |")
    lines += ["", "The paper's table (Qwen3-1.7B, Skywork reward models, NoveltyBench; means):", "",
              "| model | in-dist | out-dist | n-gram EAD | sem. div | mean distinct |", "|---|---|---|---|---|---|"]
    for name, values in PAPER_TABLE.items():
        lines.append(f"| {_label(name)} | " + " | ".join(f"{v:g}" for v in values) + " |")
    if pvals:
        lines += ["", "Welch p-values (two-sided), MARA vs each baseline, over seeds:", "",
                  "| MARA | vs | " + " | ".join(METRIC_LABELS[m] for m in P_VALUE_METRICS) + " |",
                  "|---|---|" + "---|" * len(P_VALUE_METRICS)]
        for p in pvals:
            if family(p["baseline"]) in RIVAL_FAMILIES:
                continue  # the rivals' best settings are tested in their own table below
            lines.append(f"| {_label(p['mara'])} | {_label(p['baseline'])} | "
                         + " | ".join(_p(p[m]) for m in P_VALUE_METRICS) + " |")
    lines += ["", "Reward models (pairwise accuracy against their own criteria on held-out pairs):", ""]
    for key in ("train", "eval"):
        info = reward_models[key]
        lines.append(f"- {key}: held-out accuracy {info['held_out_accuracy']:.3f} (training pairs "
                     f"{info['train_accuracy']:.3f}; the Bradley-Terry labels agree with the criteria on "
                     f"{info['label_agreement_with_criteria']:.3f})")
    agree = reward_models["agreement"]
    lines += [f"- training RM on held-out families (its own criteria): accuracy "
              f"{reward_models['train_rm_on_held_out_families']:.3f}",
              f"- agreement: Spearman {agree['spearman']:.3f} over the corpus answers of every prompt; "
              f"same order on {agree['pair_agreement']:.3f} of held-out pairs", "",
              "Figure: `reward_vs_diversity.png`."]
    if rivals is not None:  # (best settings, reward bar) of best_settings
        lines += _rivals_markdown(*rivals)
    return "\n".join(lines) + "\n"


def reward_model_report(cfg: CreativeConfig) -> dict[str, Any]:
    """Both RMs' accuracies and their agreement (builds and caches them when missing)."""
    from mara_rl.llm.reward_model import preference_pairs

    train_rm, eval_rm = load_reward_models(cfg)
    pools = cfg.corpus.pools()
    prompts = [p for p in pools for _ in pools[p]]
    answers = [a for p in pools for a in pools[p]]
    held_out = preference_pairs(cfg.eval_rm, cfg.corpus, cfg.eval_rm.held_out_pairs, seed=cfg.eval_rm.seed + 20_000)
    ood_spec = RewardModelSpec("train-on-held-out", cfg.train_rm.criteria,
                               tuple(f.name for f in task.HELD_OUT_FAMILIES), seed=cfg.train_rm.seed)
    ood_pairs = preference_pairs(ood_spec, cfg.corpus, cfg.train_rm.held_out_pairs, seed=cfg.train_rm.seed + 20_000)
    keep = ("train_accuracy", "held_out_accuracy", "label_agreement_with_criteria", "spec")
    from mara_rl.llm.reward_model import agreement

    return {"train": {k: train_rm.info[k] for k in keep}, "eval": {k: eval_rm.info[k] for k in keep},
            "train_rm_on_held_out_families": train_rm.pairwise_accuracy(ood_pairs),
            "agreement": agreement(train_rm, eval_rm, prompts, answers, held_out)}


def run_sweep(cfg: CreativeConfig, out: Path, jobs: int = 1, *, train: bool = True) -> dict[str, Any]:
    """Run (or resume) the sweep into ``out``; write table, figure and summary from its runs.

    ``train=False`` trains nothing: the report covers the runs of the grid already finished.
    """
    from mara_rl._cache import cache_root
    from mara_rl.llm.reward_model import reward_model_dirname
    from mara_rl.llm.sweep import check_stored_config, run_grid

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if train:
        out.mkdir(parents=True, exist_ok=True)
    check_stored_config(cfg.settings(), out, grid_keys=("seeds", "methods"), per_run_specs="method_specs", write=train)
    keys = [(None, s) for s in cfg.seeds] + [(m, s) for s in cfg.seeds for m in cfg.methods]
    runs = {run_name(m or "base", s): (cfg, m, s, out / "trainer" / run_name(m or "base", s)) for m, s in keys}
    finished = None if train else run_grid(out, runs, train_run, desc="mara llm creative", report_only=True)
    policy_path(cfg)  # build the reference and the reward models once, before any worker needs them
    report_file = out / "reward_models.json"  # the stored config pins both models, so their report holds
    if report_file.exists():
        reward_models = json.loads(report_file.read_text())
        if not all((cache_root(cfg.cache_dir) / reward_model_dirname(spec, cfg.corpus) / "info.json").exists()
                   for spec in (cfg.train_rm, cfg.eval_rm)):
            load_reward_models(cfg)
    else:
        reward_models = reward_model_report(cfg)
        report_file.write_text(json.dumps(reward_models, indent=2))
    if finished is None:
        finished = run_grid(out, runs, train_run, jobs=jobs, desc="mara llm creative")
    results = list(finished.values())
    return write_report(cfg, out, results, reward_models)


def write_report(cfg: CreativeConfig, out: Path, results: Sequence[Mapping[str, Any]],
                 reward_models: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics.json``, ``runs.csv``, ``reward_vs_diversity.png`` and ``summary.md`` from ``results``."""
    rows = aggregate(results, ("base", *cfg.methods))
    pvals = p_values(results, [m for m in cfg.methods if any(r["method"] == m for r in results)])
    columns = ["name", "method", "seed", *TABLE_METRICS, "unique", "in_dist_eval_rm", "out_dist_train_rm", "ead_in",
               "semantic_in", "distinct_in", "unique_in", "seconds"]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    metrics = {"aggregate": rows, "p_values": pvals, "reward_models": reward_models,
               "runs": [{k: v for k, v in r.items() if not k.startswith("samples")} for r in results]}
    rivals = best_settings(rows, results) if any(family(row["method"]) in RIVAL_FAMILIES for row in rows) else None
    if rivals is not None:
        best, bar = rivals
        metrics["best_settings"], metrics["quality_bar"] = best, bar if math.isfinite(bar) else None
        plot_method_fronts(rows, out / "method_fronts.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_reward_vs_diversity(results, rows, out / "reward_vs_diversity.png")
    (out / "summary.md").write_text(summary_markdown(rows, pvals, reward_models, cfg, rivals))
    return metrics
