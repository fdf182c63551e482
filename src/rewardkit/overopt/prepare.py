"""The gold/proxy setup of Gao et al. (EVALUATION §9), built in: preference pairs labelled by a gold reward
model instead of people, proxies trained on nested subsets of those labels through the ordinary `train()`,
and the lab's config that `rewardkit overopt` (and `overopt rl`) runs.

    plan = PrepareSettings(gold="runs/overopt-gold/best", data=[...hh-rlhf/*/test.jsonl.gz], split="train",
                           counts=[250, 1000, 4000], backbones=["minilm"], out="runs/overopt")
    result = prepare(plan, TrainConfig(lr=5e-5, max_length=256))   # -> OUT/overopt.yaml, OUT/prepare.json

Labels. "hard": the response the gold rates higher is preferred. "bt": it is preferred with the gold's
Bradley-Terry probability sigma(r_A - r_B), drawn with a seed of (seed, record id), so a rerun draws the same
labels. `noise` then flips each label with that probability, with its own seeded draw. Each labelled pair has
its preferred response first (`chosen` 0) and keeps the gold's rewards, probability and flip in `meta`.

The gold scores the pairs once, cached and resumable (the best-of-n study's score cache). The labelled pairs
are shuffled with the seed; the last `eval_pairs` are held out (every proxy's eval data; their prompts are the
policy's prompts unless --prompts is given), and count c trains on the first c of the rest, so the label sets
are nested and a larger count only adds labels. Proxy `<backbone>-<count>` trains into OUT/proxies/<that>; a
finished one is skipped and an interrupted one resumes (rewardkit.train.members.train_once).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import RewardkitError
from rewardkit.sampling.settings import derive_seed

LabelKind = Literal["hard", "bt"]


def gold_label(record: PreferenceRecord, rewards: Sequence[float], *, labels: LabelKind = "hard",
               noise: float = 0.0, seed: int = 0) -> PreferenceRecord:
    """The pair relabelled by the gold: preferred response first (chosen 0), every other preference field
    cleared, and meta["gold"] = {"rewards" (in the new order), "p" (the gold's probability that the first is
    preferred), "flipped" (by the noise), "agrees" (with the data's own label; None without one)}."""
    if len(record.responses) != 2:
        raise RewardkitError(f"record {record.id!r}: has {len(record.responses)} responses; gold labels are "
                             "for pairs")
    if len(rewards) != 2:
        raise RewardkitError(f"record {record.id!r}: {len(rewards)} gold rewards for its 2 responses")
    check_noise(noise)
    r0, r1 = float(rewards[0]), float(rewards[1])
    if not (math.isfinite(r0) and math.isfinite(r1)):
        raise RewardkitError(f"record {record.id!r}: the gold's rewards are not finite ({r0}, {r1})")
    p0 = _sigmoid(r0 - r1)  # P(response 0 is preferred) under the gold's Bradley-Terry model
    draw = random.Random(derive_seed("rewardkit-gold-label", seed, record.id)).random()
    if labels == "hard":
        first = 0 if r0 > r1 or (r0 == r1 and draw < 0.5) else 1  # a tie is a fair coin
    elif labels == "bt":
        first = 0 if draw < p0 else 1
    else:
        raise RewardkitError(f"labels must be hard or bt, got {labels!r}")
    flipped = noise > 0 and random.Random(derive_seed("rewardkit-label-noise", seed, record.id)).random() < noise
    if flipped:
        first = 1 - first
    order = [first, 1 - first]
    data_choice = record.chosen if record.chosen is not None else _preferred_by_probability(record)
    gold = {"rewards": [(r0, r1)[i] for i in order], "p": p0 if first == 0 else 1 - p0, "flipped": flipped,
            "agrees": None if data_choice is None else data_choice == first}
    return replace(record, responses=[record.responses[i] for i in order], chosen=0, ranking=None, scores=None,
                   attributes=None, votes=None, soft_label=None, step_labels=None, margin=None,
                   meta={**record.meta, "gold": gold})


def check_noise(noise: float) -> None:
    if not 0 <= noise < 0.5:  # NaN fails too
        raise RewardkitError(f"--noise {noise}: label noise is a flip probability in [0, 0.5)")


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _preferred_by_probability(record: PreferenceRecord) -> int | None:
    p = record.preference_probability()
    return None if p is None or p == 0.5 else (0 if p > 0.5 else 1)


def split_labelled(records: Sequence[PreferenceRecord], eval_pairs: int, seed: int
                   ) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """(training pool, held out): the records shuffled with `seed`, the last `eval_pairs` held out. The
    training labels of count c are the pool's first c, so counts nest."""
    if eval_pairs >= len(records):
        raise RewardkitError(f"--eval-pairs {eval_pairs} leaves no pair to train on ({len(records)} pairs)")
    shuffled = list(records)
    random.Random(derive_seed("rewardkit-prepare-split", seed)).shuffle(shuffled)
    cut = len(shuffled) - eval_pairs
    return shuffled[:cut], shuffled[cut:]


def proxy_name(backbone: str, count: int) -> str:
    """`minilm-1000`; a backbone given as a local folder is named by the folder, a hub id by the whole id
    (`org_model-1000`), so two organisations' models of one name stay apart."""
    trimmed = backbone.rstrip("/")
    base = Path(trimmed).name if Path(trimmed).exists() else trimmed
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', base or backbone).strip('._') or 'backbone'}-{count}"


def check_plan(plan: PrepareSettings, counts: Sequence[int]) -> None:
    """Everything about a plan that can be checked before the data is read, so a typo fails in seconds."""
    if not counts or counts[0] < 1:
        raise RewardkitError(f"--counts must be positive label counts, got {plan.counts}")
    if not plan.backbones:
        raise RewardkitError("no --backbones to train proxies on")
    if plan.labels not in ("hard", "bt"):
        raise RewardkitError(f"--labels {plan.labels!r}: expected hard or bt")
    check_noise(plan.noise)
    if plan.eval_pairs < 1:
        raise RewardkitError(f"--eval-pairs {plan.eval_pairs}: the proxies need at least one held-out pair")
    names: dict[str, str] = {}
    for backbone in plan.backbones:
        name = proxy_name(backbone, counts[0])
        if name in names:
            raise RewardkitError(f"--backbones {names[name]} and {backbone} would both train proxy {name!r}; "
                                 "give backbone folders different names")
        names[name] = backbone


@dataclass
class PrepareSettings:
    gold: str
    data: list[str]
    out: str
    counts: list[int] = field(default_factory=lambda: [250, 1000, 4000])
    backbones: list[str] = field(default_factory=lambda: ["minilm"])
    split: str = "all"
    format: str | None = None
    labels: LabelKind = "hard"
    noise: float = 0.0
    eval_pairs: int = 200
    seed: int = 0
    policy: str = "smollm2"
    prompts: str | None = None  # default: the held-out pairs' prompts
    n_max: int = 64
    precision: str = "auto"
    max_length: int | None = None
    batch_tokens: int = 16384


@dataclass
class PrepareResult:
    config: Path  # OUT/overopt.yaml
    report: dict[str, Any]
    paths: dict[str, Path]


def load_pairs(paths: Sequence[str], split: str, format: str | None) -> list[PreferenceRecord]:
    """Every file's records (agreed split applied per file), ids prefixed with the file's name when there
    are several files, so ids stay unique across them."""
    from rewardkit.data import load_split

    if not paths:
        raise RewardkitError("no --data: the preference pairs to label with the gold")
    records = []
    for path in paths:
        if not Path(path).exists():
            raise RewardkitError(f"--data {path}: no such file")
        name = Path(path).parent.name if Path(path).name.startswith(("train.", "test.")) else Path(path).stem
        for r in load_split(path, split, format).records:
            if len(r.responses) != 2:
                raise RewardkitError(f"{path}: record {r.id!r} has {len(r.responses)} responses; gold labels "
                                     "are for pairs")
            records.append(r if len(paths) == 1 else replace(r, id=f"{name}:{r.id}",
                                                             meta={"subset": name, **r.meta}))
    return records


def prepare(plan: PrepareSettings, base: Any, *, gold_scorer: Any = None,
            on_scored: Callable[[int], Any] | None = None,
            on_proxy: Callable[[str, dict], Any] | None = None) -> PrepareResult:
    """Label, split, train every backbone x count, and write the lab's config (see the module docstring).
    `base`: the TrainConfig every proxy starts from (model, data, eval data and output are set here).
    `gold_scorer`: the loaded gold (default: loaded from plan.gold). Callbacks report progress."""
    import time

    from rewardkit.io import atomic_write_json, atomic_write_text
    from rewardkit.overopt.config import OverOptConfig, save_overopt_config
    from rewardkit.overopt.pool import Pool, cached_scores
    from rewardkit.train.members import train_once

    counts = sorted(set(plan.counts))
    check_plan(plan, counts)
    out = Path(plan.out)
    records = load_pairs(plan.data, plan.split, plan.format)
    pool = Pool(records, ", ".join(plan.data))
    pool.check()
    # the count check comes before any scoring or training: a typo fails in seconds
    available = len(records) - plan.eval_pairs
    if counts[-1] > available:
        raise RewardkitError(f"--counts {counts[-1]} is more than the {available} pairs left to train on "
                             f"({len(records)} pairs, {plan.eval_pairs} held out)")
    labels_file = out / "labels" / "labels.json"
    labelling = {"gold": plan.gold, "data": list(plan.data), "split": plan.split, "format": plan.format,
                 "labels": plan.labels, "noise": plan.noise, "eval_pairs": plan.eval_pairs, "seed": plan.seed}
    _check_labels_settings(labels_file, labelling)
    if gold_scorer is None:
        from rewardkit.models.spec import load_scorer

        gold_scorer = load_scorer(plan.gold, max_length=plan.max_length, precision=plan.precision,
                                  batch_tokens=plan.batch_tokens)
    started = time.perf_counter()
    key = f"{plan.gold}|precision={plan.precision}|max_length={plan.max_length}"
    gold = cached_scores(gold_scorer, key, pool, out / "labels" / "scores", progress=on_scored)
    scoring_s = time.perf_counter() - started
    labelled = [gold_label(r, g.rewards, labels=plan.labels, noise=plan.noise, seed=plan.seed)
                for r, g in zip(records, gold)]
    train_pool, held_out = split_labelled(labelled, plan.eval_pairs, plan.seed)
    _record_labels_settings(labels_file, labelling)  # only now: a run that failed before labelling binds nothing
    eval_file = out / "labels" / "eval.jsonl"
    _write_once(eval_file, held_out)
    proxies, rows = {}, []
    started = time.perf_counter()
    for backbone in plan.backbones:
        for count in counts:
            name = proxy_name(backbone, count)
            train_file = out / "labels" / f"train-{count}.jsonl"
            _write_once(train_file, train_pool[:count])
            run_dir = out / "proxies" / name
            config = base.model_copy(update={
                "model": backbone, "data": [str(train_file)], "split": "all", "format": None, "field_map": None,
                "format_options": None, "eval_data": [str(eval_file)], "eval_split": "all",
                "output": str(run_dir), "ensemble": None})
            info = train_once(config, run_dir, run_dir, backbone=backbone, count=count)
            proxies[name] = str(run_dir / info["checkpoint"])
            rows.append({"name": name, **info})
            if on_proxy is not None:
                on_proxy(name, rows[-1])
    training_s = time.perf_counter() - started
    lab = OverOptConfig(gold=plan.gold, proxies=proxies, out=str(out), n_max=plan.n_max, policy=plan.policy,
                        prompts=plan.prompts or str(eval_file), limit=None if plan.prompts else 64,
                        seed=plan.seed, precision=plan.precision, max_length=plan.max_length,
                        batch_tokens=plan.batch_tokens)
    config_path = save_overopt_config(lab, out / "overopt.yaml")
    agrees = [r.meta["gold"]["agrees"] for r in labelled if r.meta["gold"]["agrees"] is not None]
    report = {
        "gold": plan.gold, "data": list(plan.data), "split": plan.split, "labels": plan.labels,
        "noise": plan.noise, "seed": plan.seed, "pairs": len(labelled), "train_pool": len(train_pool),
        "eval_pairs": len(held_out), "flipped": sum(r.meta["gold"]["flipped"] for r in labelled),
        # how far the stand-in is from the people who labelled the data
        "agreement_with_data": sum(agrees) / len(agrees) if agrees else None,
        "mean_gold_p": sum(r.meta["gold"]["p"] for r in labelled) / len(labelled),
        "proxies": rows, "config": str(config_path),
        "seconds": {"gold_scoring": scoring_s, "training": training_s}}
    paths = {"json": out / "prepare.json", "markdown": out / "prepare.md", "config": config_path}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["markdown"], prepare_markdown(report))
    return PrepareResult(config_path, report, paths)


def _check_labels_settings(path: Path, settings: dict[str, Any]) -> None:
    """The labels in OUT were made with these settings (recorded once they exist): other settings would mix
    two labellings, so they are refused."""
    import json

    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in settings if recorded.get(k) != settings[k]]
        if changed:
            k = changed[0]
            raise RewardkitError(f"{path}: the labels there were made with {k} = {recorded.get(k)!r}, not "
                                 f"{settings[k]!r}; use another --out (or delete it) to label again")


def _record_labels_settings(path: Path, settings: dict[str, Any]) -> None:
    from rewardkit.io import atomic_write_json

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)


def _write_once(path: Path, records: Sequence[PreferenceRecord]) -> None:
    """Labelled data is written once (atomically): a resumed proxy trains on exactly the file it started with."""
    from rewardkit.data import write_canonical_jsonl

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_canonical_jsonl(records, path)


def prepare_markdown(report: dict[str, Any]) -> str:
    agreement = report["agreement_with_data"]
    lines = [
        "# Gold/proxy setup", "",
        f"Gold model: `{report['gold']}`, labels: {report['labels']}"
        + (f" with {report['noise']:.0%} label noise ({report['flipped']} flipped)" if report["noise"] else "")
        + f", seed {report['seed']}.", "",
        f"{report['pairs']} pairs labelled by the gold; {report['eval_pairs']} held out as every proxy's eval "
        f"data; proxies train on nested subsets of the other {report['train_pool']}.",
        "",
        "The gold model stands in for people, as in Gao et al.: the study measures how far a proxy can be pushed "
        "before it stops agreeing with *this model*. A small gold is itself an imperfect, hackable reward: "
        "the curves show over-optimization of the proxy relative to the gold, not to human judgement."
        + (f" The gold agrees with the data's own (human) labels on {agreement:.1%} of the pairs."
           if agreement is not None else ""),
        "", "| proxy | backbone | labels | eval accuracy (gold labels) | steps | seconds |",
        "|---|---|---:|---:|---:|---:|"]
    for row in report["proxies"]:
        acc = "-" if row.get("accuracy") is None else f"{row['accuracy']:.3f}"
        lines.append(f"| {row['name']} | {row['backbone']} | {row['count']} | {acc} | {row['steps']} | "
                     f"{row['seconds']:.0f} |")
    lines += ["", f"Run the study: `rewardkit overopt --config {report['config']}`", ""]
    return "\n".join(lines)
