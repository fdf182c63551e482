"""Best-of-N reranking: pick the top-scored of N candidate solutions, with every step aggregation of a process
reward model (or the one reward of any other Scorer), and, where correctness is known, how often the pick is
right against the random pick and the oracle (EVALUATION.md §4.3).

Candidates are the responses of one record; `group_by_prompt` turns one-solution-per-row data (ProcessBench,
PRM800K) into candidate sets. A response's correctness is the row's `final_answer_correct` (what best-of-N
asks: is the picked answer right), else its outcome label from step labels (rewardkit.steps.outcome_label),
else a 0/1 `scores` entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError
from rewardkit.io import json_ready
from rewardkit.models.scorer import ScoreResult
from rewardkit.steps import AGGREGATIONS, aggregate, outcome_label


def group_by_prompt(records: Sequence[PreferenceRecord]) -> list[PreferenceRecord]:
    """Records with the same prompt merged into one record whose responses are all their responses (in data
    order), step labels and per-response correctness carried along (meta["correct"]). Records keep their
    order of first appearance."""
    groups: dict[str, list[PreferenceRecord]] = {}
    for rec in records:
        key = repr([(m["role"], m["content"]) for m in rec.prompt])
        groups.setdefault(key, []).append(rec)
    merged = []
    for members in groups.values():
        first = members[0]
        responses = [resp for rec in members for resp in rec.responses]
        correct = [c for rec in members for c in correctness(rec)]
        step_labels = None
        if all(rec.step_labels for rec in members):
            step_labels = [row for rec in members for row in rec.step_labels]
        merged.append(PreferenceRecord(
            id=first.id if len(members) == 1 else f"{first.id}+{len(members) - 1}", prompt=first.prompt,
            responses=responses, step_labels=step_labels,
            meta={**first.meta, "correct": correct, "members": [rec.id for rec in members]}))
    return merged


def correctness(rec: PreferenceRecord) -> list[bool | None]:
    """Per response: whether it is a correct solution, None when the record does not say."""
    if "correct" in rec.meta:
        return list(rec.meta["correct"])
    out: list[bool | None] = [None] * len(rec.responses)
    for k in range(len(rec.responses)):
        row = rec.step_labels[k] if rec.step_labels and k < len(rec.step_labels) else None
        label = outcome_label(row) if row else None
        if len(rec.responses) == 1 and isinstance(rec.meta.get("final_answer_correct"), bool):
            out[k] = rec.meta["final_answer_correct"]
        elif label is not None:
            out[k] = label >= 0.5
        elif rec.scores is not None and rec.scores[k] in (0, 1):
            out[k] = bool(rec.scores[k])
    return out


def candidate_scores(result: ScoreResult) -> dict[str, list[float]]:
    """Per rule, one score per candidate: every aggregation of the step scores for a process model's result,
    else the result's one reward under "reward"."""
    if result.step_rewards is None:
        return {"reward": list(result.rewards)}
    return {rule: [aggregate(steps, rule) for steps in result.step_rewards] for rule in AGGREGATIONS}


def ranking(scores: Sequence[float]) -> list[int]:
    """Candidate indices best first; ties keep data order (a stable sort), NaN last."""
    def key(i: int) -> tuple[bool, float]:
        v = float(scores[i])
        return (True, 0.0) if math.isnan(v) else (False, -v)

    return sorted(range(len(scores)), key=key)


def rerank(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult]) -> list[dict[str, Any]]:
    """One row per record: its id, and per rule the candidates' scores and their ranking, best first."""
    if len(records) != len(results):
        raise DataError(f"{len(records)} records but {len(results)} score results; they must pair up")
    rows = []
    for rec, res in zip(records, results):
        per_rule = candidate_scores(res)
        row = {"id": rec.id, "n": len(rec.responses),
               "ranking": {rule: ranking(s) for rule, s in per_rule.items()}, "scores": per_rule}
        if res.step_rewards is not None:
            row["step_rewards"] = res.step_rewards
        rows.append(json_ready(row))
    return rows


def best_of_n_report(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult]) -> dict[str, Any]:
    """How often each rule's top pick is a correct solution, over records with two or more candidates of known
    correctness (candidates of unknown correctness are left out). Baselines: `random` (the expected accuracy of
    a uniform pick, the mean fraction correct) and `oracle` (pass@N: some candidate is correct)."""
    picks: dict[str, list[bool]] = {}
    random_pick, oracle, sizes = [], [], []
    for rec, res in zip(records, results):
        known = [k for k, c in enumerate(correctness(rec)) if c is not None]
        if len(known) < 2:
            continue
        correct = np.array([correctness(rec)[k] for k in known], dtype=bool)
        for rule, scores in candidate_scores(res).items():
            top = ranking([scores[k] for k in known])[0]
            picks.setdefault(rule, []).append(bool(correct[top]))
        random_pick.append(float(correct.mean()))
        oracle.append(bool(correct.any()))
        sizes.append(len(known))
    if not sizes:
        raise DataError("best-of-N needs records with two or more candidates of known correctness (step labels, "
                        "final_answer_correct, or 0/1 scores); group one-solution rows with --group-by-prompt")
    return json_ready({
        "problems": len(sizes),
        "candidates_mean": float(np.mean(sizes)),
        "accuracy": {rule: float(np.mean(v)) for rule, v in picks.items()},
        "random": float(np.mean(random_pick)),
        "oracle": float(np.mean(oracle)),
    })
