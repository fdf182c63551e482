"""Where the shared real data sets live: beside the project, never inside it (they are not committed)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """$REWARDKIT_DATA if set; else ../shared/data from the current directory or from the repo root.

    None when none exists (a user's fresh checkout), so real-data tests and benchmarks can skip cleanly.
    """
    env = os.environ.get("REWARDKIT_DATA")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[3]  # src/rewardkit/data/paths.py -> repo root
    for candidate in (Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None
