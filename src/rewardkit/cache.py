"""rewardkit's cache folder: what is worth computing once per machine (dequantized GGUF backbones, the
precision probe).

`$REWARDKIT_CACHE` (default `$XDG_CACHE_HOME/rewardkit`, else `~/.cache/rewardkit`); `REWARDKIT_CACHE=off`
turns caching off, and everything cached is then recomputed where it is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "REWARDKIT_CACHE"


def cache_root() -> Path | None:
    """rewardkit's cache folder, or None when `REWARDKIT_CACHE=off`."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("off", "0", "") else Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rewardkit"
