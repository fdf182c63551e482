"""What an evaluation adds for an ensemble: each member's accuracy beside the ensemble's, and whether the
members' spread knows when the ensemble is wrong.

A comparison's uncertainty is the mean of its two responses' `uncertainty` (the members' spread of the values
the aggregator saw). Its AUROC against "the ensemble ordered this pair wrongly" (a tie counts as wrong, as in
strict accuracy) is 0.5 when the spread says nothing about the errors and 1 when every wrong pair is more
uncertain than every right one. The same question as a picture: the ensemble's accuracy on the pairs split
into equal-count bins of uncertainty, which falls from left to right when the spread is informative.

Diversity: the mean Pearson correlation between two members' rewards over every scored response, and the
share of pairs on which two members prefer different responses, each averaged over every two members.
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


def accuracy_by_uncertainty(uncertainty: Sequence[float], right: Sequence[bool], bins: int = 5
                             ) -> list[dict[str, Any]]:
    """Pairs sorted by uncertainty and cut into `bins` equal-count bins (fewer with fewer pairs): per bin
    {"lo", "hi", "count", "accuracy"}."""
    u = np.asarray(uncertainty, dtype=float)
    ok = np.asarray(right, dtype=bool)
    order = np.argsort(u, kind="stable")
    return [{"lo": float(u[part[0]]), "hi": float(u[part[-1]]), "count": int(len(part)),
             "accuracy": float(ok[part].mean())}
            for part in np.array_split(order, min(bins, len(order))) if len(part)]


def diversity(member_rewards: Sequence[Sequence[float]], member_delta: Sequence[Sequence[float]]
              ) -> dict[str, float] | None:
    """member_rewards: (k, responses); member_delta: (k, pairs) winner-minus-loser rewards. The mean pairwise
    Pearson correlation of the rewards (None where a member's rewards are constant) and the mean pairwise
    rate of preferring different responses; None for one member."""
    k = len(member_rewards)
    if k < 2:
        return None
    rewards = np.asarray(member_rewards, dtype=float)
    prefers = np.asarray(member_delta, dtype=float) > 0
    i, j = np.triu_indices(k, 1)
    constant = np.ptp(rewards, axis=1) == 0
    correlation = None if constant.any() or rewards.shape[1] < 2 else float(np.corrcoef(rewards)[i, j].mean())
    disagreement = float((prefers[i] != prefers[j]).mean()) if prefers.shape[1] else None
    return {"reward_correlation": correlation, "pair_disagreement": disagreement}


def ensemble_report(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult],
                    describe: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """{"members": [{"name", "accuracy"}], "accuracy", "best_member_accuracy", "mean_member_accuracy",
    "uncertainty_auroc", "by_uncertainty", "diversity", "n_comparisons"}, or None when the results carry no
    members."""
    if not results or all(res.members is None for res in results):
        return None
    k = len(next(res.members for res in results if res.members is not None))
    names = [m.get("member", f"member{i}") for i, m in enumerate((describe or {}).get("members") or [])]
    names = names if len(names) == k else [f"member{i}" for i in range(k)]
    member_delta: list[list[float]] = [[] for _ in range(k)]
    member_rewards: list[list[float]] = [[] for _ in range(k)]
    delta, pair_uncertainty = [], []
    for rec, res in zip(records, results):
        if res.members is None or len(res.members) != k:
            raise DataError(f"record {rec.id!r}: {len(res.members or [])} ensemble members, the other results "
                            f"have {k}", field="members")
        for kept, member in zip(member_rewards, res.members):
            kept.extend(member)
        for c in (c for c in rec.comparisons() if c.p > 0.5):
            delta.append(res.rewards[c.winner] - res.rewards[c.loser])
            for i, member in enumerate(res.members):
                member_delta[i].append(member[c.winner] - member[c.loser])
            if res.uncertainty is not None:
                pair_uncertainty.append((res.uncertainty[c.winner] + res.uncertainty[c.loser]) / 2)
    accuracies = [metrics.strict_accuracy(np.asarray(d, dtype=float)) for d in member_delta]
    known = [a for a in accuracies if not math.isnan(a)]
    has_spread = bool(delta) and len(pair_uncertainty) == len(delta)
    auroc = uncertainty_auroc(pair_uncertainty, [d <= 0 for d in delta]) if has_spread else None
    return {"members": [{"name": n, "accuracy": a} for n, a in zip(names, accuracies)],
            "accuracy": metrics.strict_accuracy(np.asarray(delta, dtype=float)),
            "best_member_accuracy": max(known) if known else None,
            "mean_member_accuracy": sum(known) / len(known) if known else None,
            "uncertainty_auroc": auroc,
            "by_uncertainty": accuracy_by_uncertainty(pair_uncertainty, [d > 0 for d in delta]) if has_spread else [],
            "diversity": diversity(member_rewards, member_delta), "n_comparisons": len(delta)}


def plot_ensemble(ensemble: Mapping[str, Any], path) -> Any:
    """Two panels: each member's accuracy beside the ensemble's, and the ensemble's accuracy per uncertainty
    bin. Saved as a PNG, atomically."""
    from rewardkit.eval.plotting import new_figure, save_png

    fig = new_figure(10, 4)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    members = ensemble.get("members") or []
    names = [m["name"] for m in members] + ["ensemble"]
    values = [m["accuracy"] for m in members] + [ensemble.get("accuracy")]
    values = [float("nan") if v is None else v for v in values]
    left.bar(range(len(names)), values, color=["tab:blue"] * len(members) + ["tab:orange"], edgecolor="black")
    left.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    left.set_ylim(0, 1.05)
    left.set_ylabel("accuracy (strict)")
    left.set_title("Members and ensemble")
    bins = ensemble.get("by_uncertainty") or []
    if bins:
        right.bar(range(len(bins)), [b["accuracy"] for b in bins], color="tab:green", edgecolor="black")
        right.set_xticks(range(len(bins)), [f"{b['lo']:.2g}-{b['hi']:.2g}" for b in bins], rotation=30,
                         ha="right", fontsize=8)
        for x, b in enumerate(bins):
            right.annotate(f"n={b['count']}", (x, b["accuracy"]), xytext=(0, 3), textcoords="offset points",
                           ha="center", fontsize=8)
    else:
        right.text(0.5, 0.5, "no uncertainty to bin", transform=right.transAxes, ha="center", va="center")
    right.set_ylim(0, 1.08)
    right.set_xlabel("members' spread on the pair (equal-count bins)")
    right.set_ylabel("ensemble accuracy")
    auroc = ensemble.get("uncertainty_auroc")
    right.set_title("Accuracy by uncertainty" + (f"  (AUROC {auroc:.3f})" if auroc is not None else ""))
    fig.tight_layout()
    return save_png(fig, path)
