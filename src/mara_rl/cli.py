"""The ``mara`` command: one subcommand per job, each defined in its own module.

Every module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` on the parser. Those modules import only argparse-level code at
the top, so ``mara --help`` stays fast; heavy stacks load inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

COMMAND_MODULES = (
    "mara_rl.commands",
    "mara_rl.toy.commands",
    "mara_rl.llm.commands",
    "mara_rl.chem.commands",
    "mara_rl.diagnose.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mara",
        description="Target distributions of KL-regularised RL, and MARA to keep every good mode.",
    )
    from mara_rl import __version__

    parser.add_argument("--version", action="version", version=f"mara-rl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # that part of the package is not present in this installation
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except ValueError as err:
        print(f"mara {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into a reader that stopped early (`| head`): finish quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
