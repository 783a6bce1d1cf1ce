"""Shared by the tests that kill a parent process: whether its workers end with it."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def still_alive(pids: list[int], timeout: float = 20.0) -> list[int]:
    """The processes of ``pids`` still running after waiting up to ``timeout`` seconds for all to end."""
    deadline = time.monotonic() + timeout
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]
