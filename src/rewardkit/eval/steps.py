"""Step-level evaluation of process reward models: how well P(step correct) separates right steps from wrong
ones, and how well the aggregated solution score separates right solutions from wrong ones.

Pure functions over records (with step labels) and their ScoreResults (with step_rewards).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError
from rewardkit.eval.metrics import average_ranks
from rewardkit.io import json_ready
from rewardkit.models.scorer import ScoreResult
from rewardkit.steps import AGGREGATIONS, aggregate, outcome_label


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Area under the ROC curve of `scores` for binary `labels` (1 positive): the probability that a random
    positive outscores a random negative, ties counting one half (Mann-Whitney U). None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def labelled_steps(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult]
                   ) -> tuple[list[float], list[float], list[str]]:
    """(step score, step label, split) for every labelled, scored step, in record order. Soft labels count as
    correct at >= 0.5."""
    scores, labels, splits = [], [], []
    for rec, res in zip(records, results):
        if not rec.step_labels:
            continue
        if res.step_rewards is None:
            raise DataError(f"record {rec.id!r} has step labels but its score result has no step_rewards: "
                            "score it with a process reward model", field="step_rewards")
        for k, row in enumerate(rec.step_labels):
            if not row:
                continue
            got = res.step_rewards[k]
            if len(got) != len(row):
                raise DataError(f"record {rec.id!r}: {len(got)} step scores for {len(row)} step labels",
                                field="step_rewards")
            for score, label in zip(got, row):
                if label is not None and score is not None:
                    scores.append(float(score))
                    labels.append(float(label))
                    splits.append(str(rec.meta.get("split") or rec.meta.get("subset") or ""))
    return scores, labels, splits


def evaluate_steps(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult],
                   threshold: float = 0.5) -> dict[str, Any]:
    """Step and solution metrics of a process reward model.

    steps: labelled steps scored; step_auroc; step_accuracy (P >= threshold read as "correct"); by_split:
    step AUROC per split/subset. solutions: responses with a known outcome (rewardkit.steps.outcome_label);
    outcome_auroc per aggregation rule: how well each solution score separates right from wrong solutions.
    """
    scores, labels, splits = labelled_steps(records, results)
    y = np.asarray(labels) >= 0.5
    predicted = np.asarray(scores) >= threshold
    by_split = {}
    for name in sorted(set(splits) - {""}):
        idx = [i for i, s in enumerate(splits) if s == name]
        by_split[name] = {"steps": len(idx), "step_auroc": auroc([scores[i] for i in idx], [labels[i] for i in idx])}
    outcomes, solution_steps = [], []
    for rec, res in zip(records, results):
        for k, row in enumerate(rec.step_labels or []):
            label = outcome_label(row) if row else None
            if label is not None and res.step_rewards is not None:
                outcomes.append(label)
                solution_steps.append(res.step_rewards[k])
    return json_ready({
        "steps": len(scores),
        "correct_steps": int(y.sum()),
        "step_auroc": auroc(scores, labels),
        "step_accuracy": float((predicted == y).mean()) if scores else None,
        "threshold": threshold,
        "by_split": by_split,
        "solutions": len(outcomes),
        "outcome_auroc": {rule: auroc([aggregate(s, rule) for s in solution_steps], outcomes)
                          for rule in AGGREGATIONS},
    })
