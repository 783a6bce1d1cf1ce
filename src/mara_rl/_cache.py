"""Where mara-rl keeps what it builds once and reuses (the tiny LLM reference, docking scores,
canonicalised training sets): ``$MARA_RL_CACHE``, else ``~/.cache/mara-rl``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MARA_RL_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$MARA_RL_CACHE``, else ``~/.cache/mara-rl``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mara-rl"
