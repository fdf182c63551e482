"""The pool a best-of-n study draws from: every prompt with its N policy samples, and each model's scores of
them, cached on disk so that a rerun (or a run with one more proxy) scores only what it has not scored yet.

    pool = Pool.load("runs/overopt/samples.jsonl")          # `rewardkit sample` output, or any generic file
    gold = cached_scores(gold_scorer, "gold", pool, "runs/overopt/scores")

A model's scores go to SCORES/<name>.jsonl through `rewardkit score`'s resumable writer (an interrupted run
keeps what it wrote and scores only the rest), beside SCORES/<name>.json, which records the model spec and
the pool's fingerprint: scores of another pool are refused, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreResult, Scorer


@dataclass
class Pool:
    """records: one per prompt, its responses the samples (at least n_max of them for a best-of-n_max)."""

    records: list[PreferenceRecord]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Pool:
        from rewardkit.data import load_records

        records = load_records(path).records
        pool = cls(records, str(path))
        pool.check()
        return pool

    def check(self) -> None:
        if not self.records:
            raise RewardkitError(f"{self.source or 'the pool'}: no prompts with samples")
        ids = [r.id for r in self.records]
        if len(set(ids)) != len(ids):
            raise RewardkitError(f"{self.source or 'the pool'}: prompt ids repeat; each prompt needs its own id")

    @property
    def smallest(self) -> int:
        """The fewest samples any prompt has: the largest n a best-of-n estimate can use everywhere."""
        return min(len(r.responses) for r in self.records)

    def fingerprint(self) -> str:
        """sha256 over every prompt id and sample text, in order."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(r.id.encode() + b"\0")
            for resp in r.responses:
                h.update(resp.content.encode() + b"\1")
        return h.hexdigest()


def slug(name: str) -> str:
    """A file name for a model's scores: the safe characters of its name's first part (up to a '|') and a
    short hash of the whole name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.split("|")[0]).strip("._")[-60:] or "model"
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def cached_scores(scorer: Scorer, name: str, pool: Pool, directory: str | Path,
                  progress: Callable[[int], Any] | None = None) -> list[ScoreResult]:
    """`scorer`'s results on every pool record, in pool order, from SCORES/<slug(name)>.jsonl when it is there
    (scoring, resumably, whatever is missing). `progress(k)`: k more records done (resumed ones included)."""
    from rewardkit.io import atomic_write_json
    from rewardkit.scoring import partial_path, score_records_to_file

    directory = Path(directory)
    stem = directory / slug(name)
    scores, meta = stem.with_suffix(".jsonl"), stem.with_suffix(".json")
    fingerprint = pool.fingerprint()
    if meta.is_file():
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        if recorded.get("pool") != fingerprint:
            raise RewardkitError(f"{scores}: scores of another pool (written for {recorded.get('source')!r}); "
                                 "delete the scores folder, or use another --out, to score this pool")
    else:
        if scores.exists() or partial_path(scores).exists():
            raise RewardkitError(f"{scores}: scores without their {meta.name}; delete them to rescore")
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta, {"model": name, "pool": fingerprint, "source": pool.source,
                                 "scorer": _plain(scorer.describe())})
    if not scores.is_file():
        score_records_to_file(scorer, pool.records, scores, progress=progress)
    elif progress is not None:
        progress(len(pool.records))
    rows = {}
    for line in scores.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rid = row.pop("id")
        rows[rid] = ScoreResult(**row)
    missing = [r.id for r in pool.records if r.id not in rows]
    if missing:
        raise RewardkitError(f"{scores}: no scores for prompt {missing[0]!r}; delete the file to rescore")
    results = [rows[r.id] for r in pool.records]
    for r, res in zip(pool.records, results):
        if len(res.rewards) != len(r.responses):
            raise RewardkitError(f"{scores}: prompt {r.id!r} has {len(res.rewards)} scores for "
                                 f"{len(r.responses)} samples; delete the file to rescore")
    return results


def _plain(obj: Any) -> Any:
    """describe() values as JSON (anything else as its string)."""
    return json.loads(json.dumps(obj, default=str))


def same_model(a: str, b: str, describe_a: dict, describe_b: dict) -> bool:
    """Whether two specs name one model (the study still runs, with a warning)."""
    return a == b or (describe_a == describe_b and describe_a.get("kind") not in (None, "function"))
