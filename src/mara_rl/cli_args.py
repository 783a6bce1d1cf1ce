"""Checked values for ``mara`` flags: argparse ``type=`` callables and output-path checks.

A ``type=`` callable runs while argparse parses, so a bad number fails before any work starts, as
``mara <command>: error: argument --flag: <why>``. Path checks run at the top of a command, before
training or model loading, and raise ``ValueError`` naming the flag. Only the standard library is
imported at module level (``mara --help`` stays fast).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Callable


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite float (rejects ``nan``, ``inf``)."""
    return _number(text, float)


def positive_float(text: str) -> float:
    """A finite float > 0 (a KL coefficient, a learning rate)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum`` (``--threads``: 1, ``--seed``: 0, ``--batch-size``: 2)."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


SEED_MAX = 2**32 - 1  # the widest range every generator a command seeds accepts (numpy's legacy seed is 32-bit)


def seed(text: str) -> int:
    """A random seed, an integer in ``[0, SEED_MAX]``."""
    value = int_at_least(0)(text)
    if value > SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be <= {SEED_MAX} (2**32 - 1), got {text!r}")
    return value


def _probe_directory(directory: Path, flag: str) -> None:
    """Raise ``ValueError`` unless a file can be created in the existing ``directory``."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(f"{flag}: cannot write in {directory} ({err.strerror or err})") from None


def _nearest_existing(path: Path, flag: str) -> Path:
    """The closest existing ancestor of ``path``, which must be a directory."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag}: {ancestor} is not a directory, so {path} cannot be created")
    return ancestor


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` can be written as a file (its missing parent folders are created later)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{flag}: {path} is a directory; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ValueError(f"{flag}: {path} exists and is not writable")
        _probe_directory(path.parent, flag)
    else:
        _probe_directory(_nearest_existing(path, flag), flag)
    return path


def check_figure_file(path: str | os.PathLike, flag: str) -> Path:
    """:func:`check_output_file`, and the extension must be a format matplotlib writes: it picks the
    format from the extension (and appends ``.png`` to a name without one)."""
    path = check_output_file(path, flag)
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix[1:].lower()
    if suffix not in formats:
        what = f"has the unsupported extension .{suffix}" if suffix else "has no extension"
        raise ValueError(f"{flag}: {path} {what}; use one of {', '.join('.' + f for f in sorted(formats))}")
    return path


def check_html_file(path: str | os.PathLike, flag: str) -> Path:
    """:func:`check_output_file`, and the name must end in ``.html`` or ``.htm`` (a browser opens a file
    by its extension)."""
    path = check_output_file(path, flag)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{flag}: {path} should end in .html (a browser opens it by its extension)")
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` is (or can be created as) a writable folder."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag}: {path} exists and is not a directory")
    _probe_directory(path if path.exists() else _nearest_existing(path, flag), flag)
    return path


def check_input_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` is an existing, readable file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"{flag}: {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{flag}: {path} is a directory; give a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{flag}: {path} is not readable")
    return path
