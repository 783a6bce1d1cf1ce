"""The ``mara`` command: one subcommand per job, each defined in its own module.

Every module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` on the parser. Those modules import only argparse-level code at
the top, so ``mara --help`` stays fast; heavy stacks load inside ``func``.

The one error boundary of the command lives in :func:`main`:

- a user mistake (a bad flag value, a missing or unreadable input, an unwritable output, a malformed
  spec file) prints one line ``mara <command>: error: <what>`` on stderr and exits 2;
- a command group given no subcommand (``mara``, ``mara chem``) is such a mistake too;
- Ctrl-C prints one line and exits 130, from the moment :func:`main` starts building the parser;
- anything else is a bug: one line naming the exception, a hint to rerun with ``--debug``, exit 1.

A command may return its own status as well: ``mara toy`` returns 1 when a run did not converge.

``mara --debug ...`` (or ``MARA_DEBUG=1``) lets every exception propagate with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import NoReturn, Sequence

COMMAND_MODULES = (
    "mara_rl.commands",
    "mara_rl.toy.commands",
    "mara_rl.llm.commands",
    "mara_rl.chem.commands",
    "mara_rl.diagnose.commands",
    "mara_rl.web.commands",
)

# Mistakes about a path the user named. Any other OSError that carries a file name (read-only file
# system, disk full) is reported the same way: it concerns that file, not the code.
PATH_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, the same shape as the errors raised by the commands, and values
    such as ``-1e-3`` and ``-inf`` read as numbers (argparse's own test takes them for flags)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$", re.IGNORECASE)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # reported by the subcommand that was given them, not by `mara`
            command_parser(self, parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _complete(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on every (sub)parser, so it may follow the subcommand too; and every command group
    (``mara``, ``mara chem``, ...) requires its subcommand, so a missing one is the same one-line error
    everywhere, whatever the group's module declared."""
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show the full traceback of an error (also: MARA_DEBUG=1)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = True
            for child in action.choices.values():
                _complete(child)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mara",
        description="Target distributions of KL-regularised RL, and MARA to keep every good mode.",
    )
    from mara_rl import __version__

    parser.add_argument("--version", action="version", version=f"mara-rl {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback of an error (also: MARA_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # that part of the package is not present in this installation
            raise
        module.register(subparsers)
    _complete(parser)
    return parser


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser that ``args`` selected; its ``prog`` is e.g. ``mara llm one-or-two``."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(args, sub.dest, None) if sub is not None else None
        if chosen is None or chosen not in sub.choices:
            return parser
        parser = sub.choices[chosen]


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: tuple[type[BaseException], ...] = (ValueError, *PATH_ERRORS)
    yaml = sys.modules.get("yaml")
    return types + (yaml.YAMLError,) if yaml is not None else types


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.strerror or err}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = "mara"
    debug = "--debug" in argv or os.environ.get("MARA_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, --version, or a one-line argparse error already printed
            return done.code if isinstance(done.code, int) else 0 if done.code is None else 2
        name = command_parser(parser, args).prog
        debug = args.debug or debug
        result = args.func(args)
    except BrokenPipeError:
        # Output piped into a reader that stopped early (`| head`): finish quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # also while the parser is built, which imports every command module
        if debug:
            raise
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        if isinstance(err, _user_error_types()) or (isinstance(err, OSError) and err.filename is not None):
            print(f"{name}: error: {_one_line(err)}", file=sys.stderr)
            return 2
        print(f"{name}: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
