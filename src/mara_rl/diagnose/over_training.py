"""``mara diagnose RECORD``: a rollout record over training, then the per-prompt diagnosis of a window.

The record's own beta, KL direction and (with MARA on) tau are the defaults; flags override them.
The over-training view streams the selected steps (:func:`mara_rl.diagnose.stream.summarize_steps`,
cached beside the record); the per-prompt table pools the last selected steps that hold at most
``--table-rows`` completions (at least one step), so neither holds more than a window in memory.
"""

from __future__ import annotations

import argparse
import sys

from mara_rl.diagnose.record import Record, open_record, parse_steps, read_shards, select_steps
from mara_rl.diagnose.stream import summarize_steps
from mara_rl.diagnose.training import Settings, step_means

TABLE_COLUMNS = ("prompt", "completion", "reward", "ref_logprob", "policy_logprob")


def record_settings(record: Record, args: argparse.Namespace) -> list[Settings]:
    """One :class:`Settings` per beta: the flags, else the record's own configuration."""
    meta = record.metadata
    betas = args.beta
    if not betas:
        if not meta["beta"] > 0:
            raise ValueError(
                f"--beta is required: record {record.location!r} was trained with beta = 0 (no KL term, so its "
                "objective has no target); give the beta whose target you want to see, e.g. --beta 0.01"
            )
        betas = [float(meta["beta"])]
    tau, tau_quantile = args.tau, args.tau_quantile
    if tau is None and tau_quantile is None and meta.get("mara"):
        tau, tau_quantile = meta.get("mara_tau"), meta.get("mara_tau_quantile")
        if tau is not None:
            tau_quantile = None
    kl = args.kl or meta["kl_direction"]
    return [Settings(beta, kl, tau, tau_quantile, args.answer_key) for beta in betas]


def table_window(steps: list[int], rows: list[int], limit: int) -> list[int]:
    """The last ``steps`` whose rows add up to at most ``limit`` (always at least the last step)."""
    chosen: list[int] = []
    total = 0
    for step, count in zip(reversed(steps), reversed(rows)):
        if chosen and total + count > limit:
            break
        chosen.append(step)
        total += count
    return chosen[::-1]


def _window_text(steps: list[int]) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} steps {steps[0]}..{steps[-1]}"


def run_record(args: argparse.Namespace) -> int:
    from mara_rl.diagnose.classes import answer_classes
    from mara_rl.diagnose.commands import check_outputs, print_diagnoses
    from mara_rl.diagnose.diagnosis import diagnose
    from mara_rl.diagnose.reading import check_rollouts
    from mara_rl.diagnose.report import format_steps, plot_classes, plot_training, write_json

    # Every flag is checked before a shard is read.
    window = parse_steps(args.steps) if args.steps is not None else (None, None)
    check_outputs(args)
    record = open_record(args.rollouts)
    settings_list = record_settings(record, args)
    recorded = record.step_numbers
    if not recorded:
        raise ValueError(f"record {args.rollouts!r} has no shards yet (nothing under shards/)")
    steps = select_steps(record, window, args.every)
    if not steps:
        raise ValueError(f"--steps {args.steps} selects no recorded step; the record holds steps {recorded[0]}..{recorded[-1]}")

    meta = record.metadata
    print(
        f"record {args.rollouts}: {meta.get('host')} {meta.get('trainer')}, beta={meta['beta']:g} "
        f"{meta['kl_direction']} KL, MARA {'on' if meta.get('mara') else 'off'}; "
        f"{len(recorded)} steps recorded ({recorded[0]}..{recorded[-1]})"
    )
    results = summarize_steps(record, settings_list, steps, use_cache=not args.no_cache, progress=sys.stderr.isatty(), jobs=args.jobs)
    warnings = list(dict.fromkeys(w for r in results for w in r.warnings))
    summaries = results[0].summaries
    if int(summaries["rows_used"].sum()) == 0:
        raise ValueError(
            f"record {args.rollouts!r}: no prompt group in the selected steps has two or more completions with a "
            "finite reward and ref_logprob (a run without a reference pass records ref_logprob as null)"
        )
    selection = f"{len(steps)} step(s) {steps[0]}..{steps[-1]}" + (f", every {args.every}th" if args.every > 1 else "")
    print(f"over training: {selection}, {int(summaries['rows'].sum())} completions; {results[0].computed} step(s) read, the rest from the cache")
    curves = []
    for result in results:
        means = step_means(result.summaries)
        curves.append((result.settings.as_dict(), means))
        tau = f"tau={result.settings.tau:g}" if result.settings.tau is not None else f"tau quantile {result.settings.tau_quantile:g}"
        print(f"\nbeta={result.settings.beta:g}, {result.settings.kl} KL, {tau} (means over the prompt groups of each step)")
        print(format_steps(means, args.max_rows))

    table_steps = table_window(steps, summaries["rows"].tolist(), args.table_rows)
    frame = read_shards(record, table_steps, TABLE_COLUMNS).to_pandas()
    note = ""
    if frame["policy_logprob"].isna().all():
        frame = frame.drop(columns="policy_logprob")
    elif len(table_steps) > 1:  # each step sampled from another policy: no one policy distribution
        frame = frame.drop(columns="policy_logprob")
        note = " (policy_logprob left out: it changes from step to step; --steps S:S+1 for one step's)"
    print(f"\nper-prompt diagnosis of {_window_text(table_steps)}{note}:")
    groups = answer_classes(check_rollouts(frame), args.answer_key)
    diagnoses = [
        diagnose(groups, s.beta, kl=s.kl, tau=s.tau, tau_quantile=None if s.tau is not None else s.tau_quantile)
        for s in settings_list
    ]
    print_diagnoses(args, groups, diagnoses, f"{_window_text(table_steps)} of {args.rollouts}")
    if warnings:
        print("\n" + "\n".join(f"  {w}" for w in warnings), file=sys.stderr)
    over_training = [{"settings": s, "steps": m.to_dict("records")} for s, m in curves]
    if args.json:
        extra = {"table_steps": table_steps, "over_training": over_training}
        print(f"wrote {write_json(diagnoses, args.json, rollouts=str(args.rollouts), extra=extra)}")
    if args.html:
        from mara_rl.diagnose.html import write_html

        print(f"wrote {write_html(diagnoses, args.html, rollouts=str(args.rollouts), over_training=over_training)}")
    if args.plot:
        print(f"wrote {plot_classes(diagnoses, args.plot, num_prompts=args.plot_prompts)}")
    if args.plot_training:
        title = f"{meta.get('trainer')} ({'MARA' if meta.get('mara') else 'vanilla'}, beta={meta['beta']:g})"
        print(f"wrote {plot_training(curves, args.plot_training, title=title)}")
    return 0
