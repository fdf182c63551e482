"""Train the members of an ensemble with one command: K ordinary `train()` runs (or one run of K heads) and a
manifest.

    config.ensemble = EnsembleSettings(members=5, vary="seed")
    result = train_members(config)      # OUTPUT/member0 ... member4, OUTPUT/ensemble.json

Members differ by `vary` (rewardkit.train.config.EnsembleSettings). Member i trains into OUTPUT/member{i} with
the config's own settings otherwise; a finished member leaves OUTPUT/member{i}/member.json, so running the same
command again skips it and resumes the member that was interrupted (train() resumes from its `last`). The
manifest reads each member's `best` checkpoint (its `last` without eval data) and holds the members'
standardisation stats, computed on the eval data (the training data when there is none), so that `--model
OUTPUT` is the ensemble.

With `backbone: shared` or `frozen` the members are K heads of one model, trained in one `train()` run into
OUTPUT itself (it resumes as any run does); the manifest's members are that checkpoint's objectives head0 ...
head{K-1}, which the ensemble scores in one forward pass.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.train.config import TrainConfig

MEMBER_DONE = "member.json"


@dataclass
class MembersResult:
    output: Path
    manifest: Path
    members: list[dict] = field(default_factory=list)  # per member: dir, checkpoint, accuracy, seconds, skipped
    run: Any = None  # K heads on one backbone: the one training run's TrainResult


def member_config(config: TrainConfig, i: int, data_file: Path | None = None) -> TrainConfig:
    """Member i's config: its own output folder and what `vary` changes."""
    vary = config.ensemble.vary
    update: dict = {"output": str(Path(config.output) / f"member{i}"), "ensemble": None}
    if vary == "seed":
        update["seed"] = config.seed + i
    elif vary == "order":
        update["data_seed"] = (config.seed if config.data_seed is None else config.data_seed) + i
    else:  # bootstrap: the member's resample, already written, is its whole training set
        update.update(data=[str(data_file)], split="all", format=None, field_map=None, format_options=None)
    return config.model_copy(update=update)


def bootstrap_sample(n: int, seed: int) -> list[int]:
    """n indices drawn with replacement from range(n), a pure function of the seed."""
    rng = random.Random(seed)
    return [rng.randrange(n) for _ in range(n)]


def poisson_counts(key: str, seed: int, k: int) -> list[int]:
    """k draws from Poisson(1), a pure function of (key, seed): one record's weight in each of k bootstrap
    heads (an online bootstrap: over many records, each head sees a resample drawn with replacement)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return [_poisson_one(rng) for _ in range(k)]


def _poisson_one(rng: random.Random) -> int:
    """Knuth's method for lambda = 1: count uniforms until their product falls below e^-1."""
    limit, product, n = math.exp(-1.0), rng.random(), 0
    while product > limit:
        product *= rng.random()
        n += 1
    return n


def train_members(config: TrainConfig, on_member: Callable[[int, dict], None] | None = None) -> MembersResult:
    """Train config.ensemble.members members and write OUTPUT/ensemble.json (see the module docstring)."""
    from rewardkit.train.loop import load_training_data

    settings = config.ensemble
    if settings is None:
        raise RewardkitError("config: field 'ensemble' is not set (ensemble: {members: K, vary: seed})")
    if settings.heads is not None:
        return _train_heads(config, on_member)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    records = None
    members = []
    for i in range(settings.members):
        member_dir = out / f"member{i}"
        if (member_dir / MEMBER_DONE).is_file():
            info = train_once(None, member_dir, out)
        else:
            data_file = None
            if settings.vary == "bootstrap":
                if records is None:
                    records, _ = load_training_data(config.data_sources(), config, config.split)
                data_file = _write_resample(records, member_dir / "bootstrap.jsonl", config.seed + i)
            info = train_once(member_config(config, i, data_file), member_dir, out, member=i, dir=member_dir.name)
        members.append(info)
        if on_member is not None:
            on_member(i, info)
    manifest = write_manifest(config, out, [m["checkpoint"] for m in members])
    return MembersResult(out, manifest, members)


def train_once(config: TrainConfig | None, run_dir: Path, base: Path, **info: Any) -> dict:
    """One training run that is done once: RUN_DIR/member.json records it (its checkpoint relative to
    `base`, accuracy, steps, seconds) and a later call returns that record, marked skipped, without training;
    an interrupted run resumes from its `last` (train() does). `config` may be None only for a finished run."""
    from rewardkit.io import atomic_write_json
    from rewardkit.train.loop import train

    done = Path(run_dir) / MEMBER_DONE
    if done.is_file():
        return {**json.loads(done.read_text()), "skipped": True}
    result = train(config)
    checkpoint = result.output / ("best" if result.best_accuracy is not None else "last")
    info = {**info, "checkpoint": str(checkpoint.relative_to(base)), "accuracy": result.best_accuracy,
            "steps": result.steps, "seconds": result.train_seconds}
    atomic_write_json(done, info)
    return {**info, "skipped": False}


def _train_heads(config: TrainConfig, on_member: Callable[[int, dict], None] | None) -> MembersResult:
    """One run of K heads on a shared (or frozen) backbone; its members are the checkpoint's objectives."""
    from rewardkit.train.loop import train

    out = Path(config.output)
    result = train(config)
    checkpoint = "best" if result.best_accuracy is not None else "last"
    heads = config.ensemble.heads
    manifest = write_manifest(config, out, [checkpoint] * len(heads), objectives=heads)
    members = [{"member": i, "dir": ".", "checkpoint": checkpoint, "objective": head,
                "accuracy": result.best_accuracy, "steps": result.steps, "seconds": result.train_seconds,
                "skipped": result.resumed_from >= result.steps > 0} for i, head in enumerate(heads)]
    if on_member is not None:
        for i, info in enumerate(members):
            on_member(i, info)
    return MembersResult(out, manifest, members, run=result)


def write_manifest(config: TrainConfig, out: Path, checkpoints: list[str],
                   objectives: list[str] | None = None) -> Path:
    """The members as an ensemble, with stats on the eval data (or the training data). objectives: each
    member's objective column of its checkpoint (a shared-backbone ensemble's heads)."""
    from rewardkit.models.ensemble import EnsembleScorer
    from rewardkit.models.scorer import ScoreItem
    from rewardkit.train.loop import load_training_data

    if config.eval_data:
        reference, _ = load_training_data(config.eval_sources(), config, config.eval_split)
    else:
        reference, _ = load_training_data(config.data_sources(), config, config.split)
    names = objectives or [Path(c).parent.name for c in checkpoints]
    ensemble = EnsembleScorer.from_specs(checkpoints, names=names, objectives=objectives, base=out,
                                         aggregator=config.ensemble.aggregator, max_length=config.max_length,
                                         precision=config.precision)
    ensemble.fit_stats([ScoreItem(r.prompt, r.responses) for r in reference])
    return ensemble.save(out)


def _write_resample(records, path: Path, seed: int) -> Path:
    from rewardkit.data import write_canonical_jsonl

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():  # written once: a resumed member trains on the same resample
        picks = bootstrap_sample(len(records), seed)
        write_canonical_jsonl(_renamed(records, picks), path)
    return path


def _renamed(records, picks):
    """The picked records, each copy with its own id (a record drawn twice stays two records)."""
    from dataclasses import replace

    for k, j in enumerate(picks):
        yield replace(records[j], id=f"{records[j].id}#{k}")
