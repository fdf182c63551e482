"""Process rewards: steps of a solution, and the math on their scores (METHODS.md §4).

A process reward model (PRM) gives P(step is correct) for every reasoning step; the solution's score is an
aggregation of those. Pure functions, shared by the scorer, the server, best-of-N and training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from rewardkit.errors import RewardkitError

#: How step probabilities p_1..p_n become one solution score (METHODS.md §4.3).
AGGREGATIONS = ("product", "min", "mean", "last")
DEFAULT_AGGREGATION = "min"  # human- or judge-labelled PRMs (ProcessBench, PRM800K) rank best by min or product


def aggregate(step_scores: Sequence[float | None], rule: str = DEFAULT_AGGREGATION) -> float:
    """One solution score from its step probabilities.

    product Π p_i, min, mean, or last p_n; for p in [0, 1], product <= min <= mean, and all agree for one step.
    Steps without a score (None: cut by truncation) are left out; with none scored the result is NaN.
    """
    if rule not in AGGREGATIONS:
        raise RewardkitError(f"unknown step aggregation {rule!r}; choose one of {', '.join(AGGREGATIONS)}")
    p = [float(v) for v in step_scores if v is not None]
    if not p:
        return math.nan
    if rule == "product":
        return math.prod(p)
    if rule == "min":
        return min(p)
    if rule == "mean":
        return sum(p) / len(p)
    return p[-1]


def split_steps(text: str) -> list[str]:
    """Steps of a solution given as plain text: its paragraphs (separated by blank lines), as ProcessBench and
    most step-by-step generations lay them out; a single paragraph is one step."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in parts if p] or [text]


def outcome_label(step_labels: Sequence[float | None]) -> float | None:
    """The solution-level label implied by step labels, for outcome-only (last-step) training: 0 as soon as
    a labelled step is wrong (< 0.5), 1 when every step is labelled correct, else unknown (None). Soft labels
    give the last step's own value when no step is wrong."""
    if any(v is not None and v < 0.5 for v in step_labels):
        return 0.0
    if step_labels and all(v is not None for v in step_labels):
        return float(step_labels[-1])
    return None


def last_step_only(step_labels: Sequence[float | None]) -> list[float | None]:
    """Labels for outcome-only training: the outcome label on the last step, every other step unlabeled."""
    return [None] * (len(step_labels) - 1) + [outcome_label(step_labels)]
