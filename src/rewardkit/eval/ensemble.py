"""What an evaluation adds for an ensemble: each member's accuracy beside the ensemble's, and whether the
members' spread knows when the ensemble is wrong.

A comparison's uncertainty is the mean of its two responses' `uncertainty` (the members' spread of the values
the aggregator saw). Its AUROC against "the ensemble ordered this pair wrongly" (a tie counts as wrong, as in
strict accuracy) is 0.5 when the spread says nothing about the errors and 1 when every wrong pair is more
uncertain than every right one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError
from rewardkit.eval import metrics
from rewardkit.models.scorer import ScoreResult


def uncertainty_auroc(uncertainty: Sequence[float], wrong: Sequence[bool]) -> float | None:
    """AUROC of `uncertainty` as a predictor of `wrong` (sklearn's, ties averaged); None with one class only."""
    from sklearn.metrics import roc_auc_score

    wrong = np.asarray(wrong, dtype=bool)
    if wrong.all() or not wrong.any():
        return None
    return float(roc_auc_score(wrong, np.asarray(uncertainty, dtype=float)))


def ensemble_report(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult],
                    describe: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """{"members": [{"name", "accuracy"}], "accuracy", "best_member_accuracy", "mean_member_accuracy",
    "uncertainty_auroc", "n_comparisons"}, or None when the results carry no members."""
    if not results or all(res.members is None for res in results):
        return None
    k = len(next(res.members for res in results if res.members is not None))
    names = [m.get("member", f"member{i}") for i, m in enumerate((describe or {}).get("members") or [])]
    names = names if len(names) == k else [f"member{i}" for i in range(k)]
    member_delta: list[list[float]] = [[] for _ in range(k)]
    delta, pair_uncertainty = [], []
    for rec, res in zip(records, results):
        if res.members is None or len(res.members) != k:
            raise DataError(f"record {rec.id!r}: {len(res.members or [])} ensemble members, the other results "
                            f"have {k}", field="members")
        for c in (c for c in rec.comparisons() if c.p > 0.5):
            delta.append(res.rewards[c.winner] - res.rewards[c.loser])
            for i, member in enumerate(res.members):
                member_delta[i].append(member[c.winner] - member[c.loser])
            if res.uncertainty is not None:
                pair_uncertainty.append((res.uncertainty[c.winner] + res.uncertainty[c.loser]) / 2)
    accuracies = [metrics.strict_accuracy(np.asarray(d, dtype=float)) for d in member_delta]
    known = [a for a in accuracies if not math.isnan(a)]
    auroc = (uncertainty_auroc(pair_uncertainty, [d <= 0 for d in delta])
             if delta and len(pair_uncertainty) == len(delta) else None)
    return {"members": [{"name": n, "accuracy": a} for n, a in zip(names, accuracies)],
            "accuracy": metrics.strict_accuracy(np.asarray(delta, dtype=float)),
            "best_member_accuracy": max(known) if known else None,
            "mean_member_accuracy": sum(known) / len(known) if known else None,
            "uncertainty_auroc": auroc, "n_comparisons": len(delta)}
