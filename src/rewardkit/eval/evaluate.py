"""Turn records and their scores into one evaluation report: a plain, JSON-ready dict.

Every labelled comparison a record implies (`PreferenceRecord.comparisons()`) contributes one
Δ = r[winner] − r[loser] and one target probability p (1 for a hard label, the annotator fraction for votes
or soft labels). Accuracy, calibration and length-controlled accuracy are computed over those Δ; reward
statistics and reward–length correlation over every scored response, each once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError
from rewardkit.eval import metrics
from rewardkit.eval.ensemble import ensemble_report
from rewardkit.io import json_ready
from rewardkit.models.scorer import ScoreResult


def evaluate(
    records: Sequence[PreferenceRecord],
    results: Sequence[ScoreResult],
    describe: Mapping[str, Any] | None = None,
    *,
    skipped: int = 0,
    temperature: float = 1.0,
    bins: int = 10,
) -> dict[str, Any]:
    """Build the evaluation report for `records` scored as `results` (same order, one result per record).

    describe:    the Scorer's `describe()` (max length, dtype, chat template, ...), stored under "scorer".
    skipped:     rows the caller dropped before scoring (unreadable, over a limit); only recorded.
    temperature: T in p = σ(Δ/T) for the calibration metrics, e.g. one fitted on a held-out split.

    Multi-objective results (ScoreResult.objectives) add "objectives": per objective name, the accuracy of
    that objective's scores on the comparisons of records tagged for it (meta["objective"]; None when no
    record is), of the combined reward on those same comparisons, and of that objective's scores on every
    comparison; plus "weights", the combination weights of the first result. The top-level accuracy is the
    combined reward's on every comparison, as for any scorer.

    Ensembles' results (ScoreResult.members) add "ensemble" (rewardkit.eval.ensemble.ensemble_report: each
    member's accuracy and the AUROC of the members' spread against the ensemble's wrong pairs).

    Process reward models' results (ScoreResult.step_rewards) on records with step labels add "steps"
    (rewardkit.eval.steps.evaluate_steps: step AUROC and accuracy, solution AUROC per aggregation).

    Only comparisons with p > 0.5 are counted (they are the ones with a direction; `comparisons()` emits no
    others). Records without a comparison count in "n" and "n_unlabeled" only. "subsets" holds only the
    subsets that records name; records without a subset count in the overall numbers alone. Lengths are the
    scorer's response tokens when every result carries them ("unit": "tokens"), otherwise whitespace words.
    Undefined values (no comparisons, a constant series) are None.
    """
    if len(records) != len(results):
        raise DataError(f"{len(records)} records but {len(results)} score results; they must pair up")
    for rec, res in zip(records, results):
        _check_result(rec, res)

    use_tokens = bool(results) and all(res.response_tokens is not None for res in results)
    lengths = [_lengths(rec, res, use_tokens) for rec, res in zip(records, results)]

    # One row per directed comparison: Δ, target p, winner and loser lengths, and the record's subset.
    delta, target, len_win, len_lose, subset_of = [], [], [], [], []
    n_unlabeled = 0
    for rec, res, lens in zip(records, results, lengths):
        comps = [c for c in rec.comparisons() if c.p > 0.5]
        if not comps:
            n_unlabeled += 1
        for c in comps:
            delta.append(res.rewards[c.winner] - res.rewards[c.loser])
            target.append(c.p)
            len_win.append(lens[c.winner])
            len_lose.append(lens[c.loser])
            subset_of.append(rec.subset)
    delta, target = np.asarray(delta, dtype=float), np.asarray(target, dtype=float)
    len_win, len_lose = np.asarray(len_win, dtype=float), np.asarray(len_lose, dtype=float)

    rewards = np.asarray([r for res in results for r in res.rewards], dtype=float)
    all_lengths = np.asarray([n for lens in lengths for n in lens], dtype=float)
    calibration = metrics.reliability(delta, bins=bins, temperature=temperature)
    truncated = [[t > 0 for t in res.truncated] if res.truncated is not None else [] for res in results]

    per_objective = _objective_accuracy(records, results)

    report = {
        "n": len(records),
        "n_comparisons": len(delta),
        "n_unlabeled": n_unlabeled,
        "accuracy": metrics.strict_accuracy(delta),
        "tie_rate": metrics.tie_rate(delta),
        "subsets": _subset_accuracy(records, subset_of, delta),
        "temperature": temperature,
        "ece": calibration.ece,
        "mce": calibration.mce,
        "brier": metrics.brier(delta, target, temperature),
        "nll": metrics.nll(delta, temperature, target),
        # Fitted on this same data, so optimistic: a diagnostic, not a calibration to apply.
        "fitted_temperature": metrics.fit_temperature(delta, target),
        "reliability": calibration.table(),
        "length_correlation": {
            "pearson": metrics.pearson(rewards, all_lengths),
            "spearman": metrics.spearman(rewards, all_lengths),
            "pairwise_pearson": metrics.pearson(delta, len_win - len_lose),
            "pairwise_spearman": metrics.spearman(delta, len_win - len_lose),
            "unit": "tokens" if use_tokens else "words",
        },
        "length_split": metrics.length_split_accuracy(delta, len_win, len_lose),
        "reward_by_length": metrics.reward_by_length(rewards, all_lengths),
        # The "pick the longer response" baseline under the same strict rule.
        "longer_baseline_accuracy": metrics.strict_accuracy(len_win - len_lose),
        "reward_stats": _stats(rewards),
        "truncated": sum(sum(flags) for flags in truncated),
        "truncated_records": sum(any(flags) for flags in truncated),
        "skipped": skipped,
        "scorer": dict(describe) if describe is not None else None,
    }
    if per_objective is not None:
        report["objectives"] = per_objective
        report["weights"] = next((res.weights for res in results if res.weights is not None), None)
    ensemble = ensemble_report(records, results, describe)
    if ensemble is not None:
        report["ensemble"] = ensemble
    if any(res.step_rewards is not None for res in results) and any(rec.step_labels for rec in records):
        from rewardkit.eval.steps import evaluate_steps

        report["steps"] = evaluate_steps(records, results)
    return json_ready(report)


def _objective_accuracy(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult]
                        ) -> dict[str, dict[str, Any]] | None:
    """{objective: {"accuracy", "n_comparisons", "combined_accuracy", "accuracy_all"}}, or None when the
    results carry no per-objective scores."""
    if not results or all(res.objectives is None for res in results):
        return None
    names = list(next(res.objectives for res in results if res.objectives is not None))
    tagged: dict[str, list[float]] = {n: [] for n in names}
    combined: dict[str, list[float]] = {n: [] for n in names}
    every: dict[str, list[float]] = {n: [] for n in names}
    for rec, res in zip(records, results):
        if res.objectives is None or set(res.objectives) != set(names):
            raise DataError(f"record {rec.id!r}: per-objective scores {sorted(res.objectives or {})} differ "
                            f"from the other results' {sorted(names)}", field="objectives")
        tag = rec.meta.get("objective")
        for c in (c for c in rec.comparisons() if c.p > 0.5):
            for name in names:
                d = res.objectives[name][c.winner] - res.objectives[name][c.loser]
                every[name].append(d)
                if tag == name:
                    tagged[name].append(d)
                    combined[name].append(res.rewards[c.winner] - res.rewards[c.loser])
    return {name: {
        "accuracy": metrics.strict_accuracy(np.asarray(tagged[name], dtype=float)),
        "n_comparisons": len(tagged[name]),
        "combined_accuracy": metrics.strict_accuracy(np.asarray(combined[name], dtype=float)),
        "accuracy_all": metrics.strict_accuracy(np.asarray(every[name], dtype=float)),
    } for name in names}


def _check_result(rec: PreferenceRecord, res: ScoreResult) -> None:
    n = len(rec.responses)
    if len(res.rewards) != n:
        raise DataError(f"record {rec.id!r}: {len(res.rewards)} rewards for {n} responses", field="rewards")
    if not all(math.isfinite(r) for r in res.rewards):
        # A NaN Δ would silently count as a wrong answer; make the scorer's failure visible instead.
        raise DataError(f"record {rec.id!r}: non-finite reward", field="rewards")
    for name in ("response_tokens", "truncated"):
        values = getattr(res, name)
        if values is not None and len(values) != n:
            raise DataError(f"record {rec.id!r}: {len(values)} values for {n} responses", field=name)
    for name, values in (res.objectives or {}).items():
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise DataError(f"record {rec.id!r}: objective {name!r} needs one finite score per response",
                            field="objectives")


def _lengths(rec: PreferenceRecord, res: ScoreResult, use_tokens: bool) -> list[int]:
    if use_tokens:
        return list(res.response_tokens)
    return [len(r.content.split()) for r in rec.responses]


def _subset_accuracy(
    records: Sequence[PreferenceRecord], subset_of: list[str | None], delta: np.ndarray
) -> dict[str, dict[str, Any]]:
    """{subset: {"accuracy", "n", "n_comparisons"}} for every subset a record names, sorted by name."""
    names = sorted({rec.subset for rec in records if rec.subset is not None})
    tags = np.asarray(subset_of, dtype=object)
    out = {}
    for name in names:
        d = delta[tags == name]
        out[name] = {
            "accuracy": metrics.strict_accuracy(d),
            "n": sum(rec.subset == name for rec in records),
            "n_comparisons": len(d),
        }
    return out


def _stats(x: np.ndarray) -> dict[str, float | None]:
    if not len(x):
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": x.mean(), "std": x.std(), "min": x.min(), "max": x.max()}
