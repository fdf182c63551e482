"""rewardkit: train, evaluate, stress-test and serve reward models.

The names a user reaches for first are importable from here:

    from rewardkit import RewardModel, load_scorer, load_records, evaluate, write_report

They are imported on first use (PEP 562), so `import rewardkit` and `rewardkit --version` load neither torch
nor transformers. `__version__` is the installed package's version (pyproject.toml is its one source).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it; each is the very object that module holds.
_LAZY = {
    "RewardModel": "rewardkit.models.reward_model",
    "RewardModelScorer": "rewardkit.models.rm_scorer",
    "Scorer": "rewardkit.models.scorer",
    "ScoreResult": "rewardkit.models.scorer",
    "load_scorer": "rewardkit.models.spec",
    "PreferenceRecord": "rewardkit.data.record",
    "load_records": "rewardkit.data.loader",
    "load_split": "rewardkit.data.loader",
    "iter_records": "rewardkit.data.loader",
    "evaluate": "rewardkit.eval.evaluate",
    "write_report": "rewardkit.eval.report",
    "run_benchmark": "rewardkit.eval.benchmarks",
    "RewardkitError": "rewardkit.errors",
    "DataError": "rewardkit.errors",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from rewardkit.data.loader import iter_records, load_records, load_split
    from rewardkit.data.record import PreferenceRecord
    from rewardkit.errors import DataError, RewardkitError
    from rewardkit.eval.benchmarks import run_benchmark
    from rewardkit.eval.evaluate import evaluate
    from rewardkit.eval.report import write_report
    from rewardkit.models.reward_model import RewardModel
    from rewardkit.models.rm_scorer import RewardModelScorer
    from rewardkit.models.scorer import Scorer, ScoreResult
    from rewardkit.models.spec import load_scorer

    __version__: str


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rewardkit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'rewardkit' has no attribute {name!r}")
    globals()[name] = value  # imported once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "__version__"})
