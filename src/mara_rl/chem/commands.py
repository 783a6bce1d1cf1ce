"""``mara chem ...``: train the SMILES prior, run REINVENT-style RL (with or without MARA), compare, archive.

Only argparse at module level; torch and RDKit load inside the handlers.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    chem = subparsers.add_parser("chem", help="SMILES language models: prior training and REINVENT-style RL with MARA")
    sub = chem.add_subparsers(dest="chem_command", metavar="CHEM_COMMAND")
    chem.set_defaults(func=lambda args: (chem.print_help(), 2)[1])
    _register_train_prior(sub)
    _register_eval_prior(sub)
    _register_run(sub)
    _register_compare(sub)
    _register_archive(sub)


def _register_train_prior(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-prior", help="train a SMILES RNN prior on MOSES (checkpoints, resume)")
    p.add_argument("--out", default="runs/chem-prior", help="run folder (prior.pt, checkpoint.pt, metrics.json)")
    p.add_argument("--data", default=None, help="SMILES file (.csv[.gz] with a SMILES column, or one per line); default: MOSES train")
    p.add_argument("--limit", type=int, default=None, help="use only the first N SMILES")
    p.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=384)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=0.85, help="learning rate multiplier per epoch")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-minutes", type=float, default=None, help="stop and checkpoint after this much training time")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=50, help="steps between loss records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.set_defaults(func=_train_prior)


def _train_prior(args: argparse.Namespace) -> int:
    from mara_rl.chem.model import PriorConfig
    from mara_rl.chem.train_prior import TrainPriorConfig, train_prior

    config = TrainPriorConfig(
        out=args.out,
        data=args.data,
        limit=args.limit,
        model=PriorConfig(
            cell=args.cell,
            embedding_dim=args.embedding_dim,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            dropout=args.dropout,
        ),
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
    )
    metrics = train_prior(config, resume=args.resume)
    print(f"prior written to {args.out}/prior.pt: {metrics['steps']} steps, {metrics['epochs_completed']:.2f} epochs, "
          f"{metrics['train_minutes']:.1f} min, final loss {metrics['final_loss']}")
    return 0


def _register_eval_prior(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-prior", help="validity, uniqueness and novelty of samples from a prior (needs RDKit)")
    p.add_argument("--prior", default=None, help="prior checkpoint (default: the shipped MOSES prior)")
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--training-smiles", default=None,
                   help="the prior's training set, for novelty (default: MOSES train; canonicalised once, then cached)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.set_defaults(func=_eval_prior)


def _eval_prior(args: argparse.Namespace) -> int:
    import json

    from mara_rl.chem.checks import writable_file
    from mara_rl.chem.evaluate import evaluate_prior

    if args.out:  # checked before minutes of sampling, not after
        writable_file(args.out)
    metrics = evaluate_prior(args.prior, num_samples=args.samples, batch_size=args.batch_size, seed=args.seed,
                            training_smiles=args.training_smiles, threads=args.threads)
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


# Flags of a run default to None, meaning "not given": RunConfig holds the defaults, and on
# --resume only the flags the user named are checked against the run's stored settings.
def _add_rl_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", default=None,
                   help="qed, sa, hbd, similarity, qed_hbd_sa (default), celecoxib_mpo, dock:<TARGET>, dock_qed_hbd_sa:<TARGET> "
                        "(AutoDock Vina, extra [dock]), or module:factory for your own oracle")
    p.add_argument("--budget", type=int, default=None, help="oracle calls (default 10000); the run stops at exactly this many")
    p.add_argument("--batch-size", type=int, default=None, help="default 64")
    p.add_argument("--sigma", type=float, default=None, help="REINVENT's score weight (default 500); beta = 1 / sigma")
    p.add_argument("--lr", type=float, default=None, help="default 1e-4")
    p.add_argument("--diversity-filter", action="store_true", default=None,
                   help="REINVENT4's IdenticalMurckoScaffold diversity filter on the training scores, applied before MARA (off by default)")
    p.add_argument("--df-bucket-size", type=int, default=None, help="good molecules per scaffold that keep their score (default 25)")
    p.add_argument("--df-min-score", type=float, default=None, help="score from which a molecule is memorised and fills its bucket (default 0.4)")
    p.add_argument("--replay-size", type=int, default=None, help="top-k experience replay memory (default 0: off)")
    p.add_argument("--replay-batch", type=int, default=None, help="default 24")
    p.add_argument("--screens", type=float, nargs="+", default=None, help="score thresholds for Yield and OB100 (default 0.8 0.85)")
    p.add_argument("--prior", default=None, help="prior checkpoint (default: the shipped MOSES prior)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default 1)")
    p.add_argument("--dock-exhaustiveness", type=int, default=None,
                   help="Vina's exhaustiveness for dock:<TARGET> / dock_qed_hbd_sa:<TARGET> objectives (default 8; 1 is ~9x faster, noisier)")
    p.add_argument("--oracle-workers", type=int, default=None,
                   help="score each batch in N local processes (default 1: in the run's process); same ledger as serial")
    p.add_argument("--ray-address", default=None,
                   help="score on Ray: auto or an address joins a cluster, local starts a local Ray with --oracle-workers CPUs")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log the history's curves and the top-molecule grid to OUT/tensorboard (extra [tensorboard])")


def _given(args: argparse.Namespace) -> dict:
    """The RunConfig settings named on the command line."""
    from dataclasses import fields

    from mara_rl.chem.rl import RunConfig

    return {f.name: getattr(args, f.name) for f in fields(RunConfig) if f.name != "out" and getattr(args, f.name, None) is not None}


def _register_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="REINVENT-style RL on the prior, optionally with MARA")
    p.add_argument("--out", default="runs/chem-run")
    _add_rl_options(p)
    p.add_argument("--mara", action="store_true", default=None, help="apply MARA to the scores (needs --tau or --tau-quantile)")
    p.add_argument("--tau", type=float, default=None, help="MARA threshold on the score")
    p.add_argument("--tau-quantile", type=float, default=None, help="MARA threshold as a per-batch score quantile")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--max-steps", type=int, default=None, help="stop this session after this many steps (resumable)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its stored settings (only --threads, --device, --max-steps, --checkpoint-every, "
                        "--oracle-workers, --ray-address and --tensorboard may change)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mara_rl.chem.rl import RunConfig, resume_config, run

    import sys

    config = resume_config(args.out, **_given(args)) if args.resume else RunConfig(out=args.out, **_given(args))
    try:
        metrics = run(config, resume=args.resume)
    except KeyboardInterrupt:  # nothing paid for is lost: the ledger holds every scored molecule
        print(f"\nmara chem run: interrupted; continue with: mara chem run --out {args.out} --resume", file=sys.stderr)
        return 130
    if not metrics.get("finished", True):
        print(f"stopped after step {metrics['step']} with {metrics['oracle_calls']} oracle calls; continue with --resume")
        return 0
    for key, value in metrics.items():
        print(f"{key}: {value if value is not None else 'not reached'}")
    return 0


def _register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="REINVENT vs MARA over seeds: Table-2-style markdown table and yield curves")
    p.add_argument("--out", default="runs/chem-compare")
    _add_rl_options(p)
    p.add_argument("--taus", type=float, nargs="+", default=[0.8, 0.85], help="MARA thresholds to compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    p.add_argument("--filter-arms", action="store_true", help="run every method without and with the diversity filter")
    p.add_argument("--table-only", action="store_true", help="run nothing: tabulate the runs finished so far")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from mara_rl.chem.compare import compare

    from mara_rl.chem.rl import RunConfig

    import sys

    try:
        result = compare(RunConfig(out=args.out, **_given(args)), taus=args.taus, seeds=args.seeds, out=args.out, jobs=args.jobs,
                         table_only=args.table_only, filter_arms=args.filter_arms)
    except KeyboardInterrupt:
        print("\nmara chem compare: interrupted; continue by running the same command again (finished runs are reused, "
              "the interrupted ones resumed)", file=sys.stderr)
        return 130
    print(result["table"])
    print(result["paired_table"])
    print(f"summary.md, table.md, comparison.json, yield_curves.png and prior_loglik@<screen>.png written to {args.out}")
    return 0


def _register_archive(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="keep finished runs small: the ledger compressed (or only its hits), no checkpoint")
    p.add_argument("runs", nargs="+", help="finished run folders (a compare's are OUT/<method>/seed<N>)")
    p.add_argument("--hits-only", action="store_true",
                   help="keep only the ledger's rows scoring at least the run's lowest screen (hits.csv.gz): all that compare's "
                        "tables and mechanism read, for an objective that scores a molecule alike in every run; such a run "
                        "cannot be resumed")
    p.add_argument("--drop-figures", action="store_true", help="also remove the run's yield.png and top_molecules.png")
    p.set_defaults(func=_archive)


def _archive(args: argparse.Namespace) -> int:
    from mara_rl.chem.rl import archive_run, plan_archive

    for run in args.runs:  # every run is read and checked before any is changed (one ledger in memory at a time)
        plan_archive(run, args.hits_only)
    for run in args.runs:
        target, before, after = archive_run(plan_archive(run, args.hits_only), drop_figures=args.drop_figures)
        print(f"{run}: {before / 1e3:,.1f} kB -> {target.name} {after / 1e3:,.1f} kB")
    return 0


def main() -> int:
    """Run ``mara chem ...`` without the other domains' commands (``python -m mara_rl.chem.commands``)."""
    parser = argparse.ArgumentParser(prog="mara")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args()
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        parser.exit(2, f"mara chem: error: {err}\n")


if __name__ == "__main__":
    raise SystemExit(main())
