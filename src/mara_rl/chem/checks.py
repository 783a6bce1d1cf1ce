"""Checks of ``mara chem`` settings and files, run before any model is loaded or oracle called.

Each failure is a one-line ``ValueError`` that names the flag, what is wrong and what to do.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any


def check_int(value: Any, flag: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (bools and non-integral numbers are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value!r}")
    return int(value)


def check_seed(value: Any, flag: str) -> int:
    """``value`` as a seed in ``[0, SEED_MAX]``, the range every generator the runs seed accepts."""
    from mara_rl.cli_args import SEED_MAX

    value = check_int(value, flag, 0)
    if value > SEED_MAX:
        raise ValueError(f"{flag} must be <= {SEED_MAX} (2**32 - 1), got {value!r}")
    return value


def check_float(value: Any, flag: str, low: float | None = None, high: float | None = None, *, positive: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``positive``: also ``> 0``)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(out):
        raise ValueError(f"{flag} must be a finite number, got {value!r}")
    if positive and not out > 0:
        raise ValueError(f"{flag} must be > 0, got {value!r}")
    if (low is not None and out < low) or (high is not None and out > high):
        raise ValueError(f"{flag} must lie in [{low}, {high}], got {value!r}")
    return out


def parse_device(name: str) -> None:
    """Refuse a string that is not a torch device of a kind this package runs on."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}")


def check_device(name: str) -> None:
    """``name`` parses as a device and is present on this machine."""
    import torch

    parse_device(name)
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")


def writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path} is not a writable folder: {err.strerror or err}") from None
    return path


def writable_file(path: str | Path, flag: str = "--out") -> Path:
    """Prove the file ``path`` can be written (its folder must exist); leaves no new file behind."""
    path = Path(path)
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path} cannot be written: {err.strerror or err}") from None
    if not existed:
        path.unlink()
    return path


def open_prior(path: str | Path | None, device: str = "cpu"):
    """The prior at ``path`` (default: the shipped one) on ``device``; a file that is not a prior
    checkpoint is a ValueError, not a traceback from the unpickler."""
    from mara_rl.chem.model import load_prior

    try:
        model = load_prior(path, "cpu")
    except ValueError:
        raise
    except Exception as err:  # torch.load and the checkpoint layout fail in many ways on a foreign file
        raise ValueError(f"--prior {path} is not a prior checkpoint ({type(err).__name__}: {first_line(err)}); "
                         "give a prior.pt or checkpoint.pt written by `mara chem train-prior`") from None
    return model.to(device)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a kill leaves either the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def check_oracle_executor(oracle: Any, workers: int, ray_address: str | None) -> None:
    """``--oracle-workers`` / ``--ray-address`` can score with ``oracle``: Ray is installed when an
    address is given, and a process pool can be sent the oracle (it must pickle)."""
    import importlib.util
    import pickle

    if ray_address is not None and importlib.util.find_spec("ray") is None:
        raise ValueError(f"--ray-address {ray_address} needs Ray, which is not installed: pip install 'mara-rl[ray]'")
    if ray_address is not None:
        check_ray_reachable(ray_address)
    if workers > 1 and ray_address is None:
        try:
            pickle.dumps(oracle)
        except Exception as err:  # pickling fails with many error types (closures, locks, handles)
            raise ValueError(f"--oracle-workers {workers}: objective {getattr(oracle, 'name', oracle)!r} cannot be sent to worker "
                             f"processes ({type(err).__name__}: {first_line(err)}); make the oracle picklable or drop --oracle-workers") from None


def check_ray_reachable(address: str, timeout: float = 3.0) -> None:
    """For an explicit ``host:port`` or ``ray://host:port`` address, that something accepts TCP
    connections there within ``timeout`` seconds (Ray itself retries an unreachable cluster for
    minutes). ``auto`` and ``local`` are Ray's own to resolve."""
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--ray-address must be auto, local, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"--ray-address {address}: no Ray cluster answers there ({err.strerror or type(err).__name__}); "
                         "start one with `ray start --head`, or give auto or local") from None
