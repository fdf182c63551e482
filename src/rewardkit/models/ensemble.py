"""Several reward models as one Scorer: an aggregate reward and the members' spread (METHODS §5.1).

    ensemble = EnsembleScorer([load_scorer(p) for p in paths], aggregator="uwo")
    ensemble.fit_stats(reference_items)          # per-member mean and population std
    ensemble.save("runs/ens/ensemble.json")      # a manifest that --model reads by path
    result = ensemble.score(items)[0]            # rewards (aggregate), members, uncertainty

Aggregators, over the k members' (standardised) rewards of one response:

- `mean`: the mean;
- `wco`: worst-case, the minimum;
- `uwo`: uncertainty-weighted, mean - lambda * variance (lambda 0.5, the best-of-n reference; ddof 0);
- `mean_minus_std`: mean - lambda * standard deviation (lambda 1).

Standardisation z_i = (R_i - mu_i) / s_i with each member's mean and population std on a reference set puts
members on one scale, so that `wco` does not just pick the member with the lowest offset. Unless set, it is on
whenever every member has stats (fitted with `fit_stats`, stored in the manifest, or a member's own stored
normalisation), and always for `wco`, `uwo` and `mean_minus_std`, which then need them. `uncertainty` is the
members' standard deviation (same ddof) of the values the aggregator sees; `members` holds each member's own
reward, unstandardised.

A member may be one objective of a multi-objective scorer (`objectives`, one entry per member): K heads on one
shared backbone are K members that read the same Scorer, which the ensemble calls once per batch, so such an
ensemble costs about one forward pass. Members are scored once per distinct Scorer object, and `from_specs`
loads each distinct spec once.

The math is in pure functions (`aggregate`, `spread`, `standardize`, `reference_stats`) over (k members x n
responses) lists.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreItem, ScoreResult, Scorer, normalization_stats

AGGREGATORS = ("mean", "wco", "uwo", "mean_minus_std")
#: lambda when none is given: METHODS §5.1's best-of-n value for UWO; one std for mean - lambda * std.
DEFAULT_LAMBDA = {"uwo": 0.5, "mean_minus_std": 1.0}
MANIFEST_NAME = "ensemble.json"
#: A reference spread at or below this fraction of the rewards' scale (at least 1) counts as none.
SPREAD_FLOOR = 1e-6
MANIFEST_FORMAT = "rewardkit-ensemble"


@dataclass(frozen=True)
class MemberStats:
    """One member's reward mean and population standard deviation on a reference set."""

    mean: float
    std: float


# -- the math ------------------------------------------------------------------------------------------------
def check_aggregator(aggregator: str) -> None:
    if aggregator not in AGGREGATORS:
        raise RewardkitError(f"unknown ensemble aggregator {aggregator!r}; known: {', '.join(AGGREGATORS)}")


def _check_ddof(aggregator: str, ddof: int, members: int) -> None:
    """The variance-based aggregators need more members than ddof."""
    if ddof < 0 or (aggregator in ("uwo", "mean_minus_std") and members <= ddof):
        raise RewardkitError(f"{aggregator} with ddof={ddof} needs more than {ddof} members; the ensemble has "
                             f"{members}")


def _variance(values: Sequence[float], ddof: int) -> float:
    n = len(values)
    if n - ddof <= 0:
        raise RewardkitError(f"variance with ddof={ddof} needs more than {ddof} members, got {n}")
    mean = math.fsum(values) / n
    return math.fsum((v - mean) ** 2 for v in values) / (n - ddof)


def aggregate(scores: Sequence[Sequence[float]], aggregator: str = "mean", lam: float | None = None,
              ddof: int = 0) -> list[float]:
    """scores: (k members, n responses). Returns the n aggregates."""
    check_aggregator(aggregator)
    lam = DEFAULT_LAMBDA.get(aggregator, 0.0) if lam is None else lam
    out = []
    for column in zip(*scores):
        mean = math.fsum(column) / len(column)
        if aggregator == "mean":
            out.append(mean)
        elif aggregator == "wco":
            out.append(min(column))
        elif aggregator == "uwo":
            out.append(mean - lam * _variance(column, ddof) if lam else mean)
        else:
            out.append(mean - lam * math.sqrt(_variance(column, ddof)) if lam else mean)
    return out


def spread(scores: Sequence[Sequence[float]], ddof: int = 0) -> list[float]:
    """(k, n) -> the n standard deviations across members (0 for a single member with ddof 0)."""
    return [math.sqrt(_variance(column, ddof)) for column in zip(*scores)]


def standardize(values: Sequence[float], stats: MemberStats) -> list[float]:
    return [(v - stats.mean) / stats.std for v in values]


def reference_stats(values: Sequence[float], member: str) -> MemberStats:
    """Mean and population std of one member's rewards on the reference set; zero spread is an error (it
    cannot be standardised)."""
    if len(values) < 2:
        raise RewardkitError(f"ensemble member {member!r}: a reference set needs at least 2 responses, got "
                             f"{len(values)}")
    std = statistics.pstdev(values)
    mean = statistics.fmean(values)
    # Below float32 rounding of the rewards (identical responses scored at other positions differ by ~1e-7),
    # a spread is no spread: dividing by it would blow rounding up into rewards.
    if not (math.isfinite(std) and std > SPREAD_FLOOR * max(1.0, abs(mean))):
        raise RewardkitError(f"ensemble member {member!r}: its rewards on the reference set have no spread (std "
                             f"{std}), so it cannot be standardised; use a reference set it tells apart")
    return MemberStats(mean, std)


# -- the Scorer ----------------------------------------------------------------------------------------------
def _agreement_key(describe: dict[str, Any], objective: str | None = None) -> tuple:
    """What members must share to be aggregated: their objectives and whether they score steps. A member that
    reads one objective of its scorer scores one scalar."""
    objectives = ("reward",) if objective is not None else tuple(describe.get("objectives") or ["reward"])
    return (objectives, "step_aggregation" in describe)


class EnsembleScorer:
    """k Scorers read as one: `rewards` is the aggregate, `members` each member's reward, `uncertainty` the
    spread (see the module docstring)."""

    def __init__(self, members: Sequence[Scorer], *, names: Sequence[str] | None = None,
                 specs: Sequence[str] | None = None, stats: Sequence[MemberStats | None] | None = None,
                 objectives: Sequence[str | None] | None = None, aggregator: str = "mean",
                 lam: float | None = None, ddof: int = 0, standardize: bool | None = None):
        check_aggregator(aggregator)
        if len(members) < 1:
            raise RewardkitError("an ensemble needs at least one member")
        _check_ddof(aggregator, ddof, len(members))
        self.members = list(members)
        self.names = list(names) if names else [f"member{i}" for i in range(len(members))]
        if len(self.names) != len(self.members) or len(set(self.names)) != len(self.names):
            raise RewardkitError(f"ensemble member names must be unique, one a member: {self.names}")
        self.specs = list(specs) if specs else None
        self.objectives = list(objectives) if objectives is not None else [None] * len(self.members)
        if len(self.objectives) != len(self.members):
            raise RewardkitError(f"{len(self.objectives)} member objectives for {len(self.members)} members")
        self.aggregator, self.lam, self.ddof = aggregator, lam, ddof
        self.standardize_setting = standardize
        self._check_agreement()
        given = list(stats) if stats is not None else [None] * len(self.members)
        # A member's own stored normalisation (rewardkit.json) stands in where no stats were given.
        self.stats = [s if s is not None else _stored_stats(m) for s, m in zip(given, self.members)]

    def _check_agreement(self) -> None:
        described = [m.describe() for m in self.members]
        for name, d, objective in zip(self.names, described, self.objectives):
            if objective is not None and objective not in (d.get("objectives") or []):
                raise RewardkitError(f"ensemble member {name!r} reads objective {objective!r}, but its model "
                                     f"scores {list(d.get('objectives') or ['reward'])}")
        keys = [_agreement_key(d, o) for d, o in zip(described, self.objectives)]
        for name, key in zip(self.names[1:], keys[1:]):
            if key != keys[0]:
                raise RewardkitError(
                    f"ensemble member {name!r} scores {_say(key)}, but {self.names[0]!r} scores {_say(keys[0])}; "
                    "members must score the same objectives and step structure")

    def _require_stats(self) -> list[MemberStats]:
        missing = [n for n, s in zip(self.names, self.stats) if s is None]
        if missing:
            raise RewardkitError(
                f"ensemble ({self.aggregator}, standardised): member {missing[0]!r} has no reference stats; fit "
                "them on a reference set (EnsembleScorer.fit_stats), load a manifest that holds them, or set "
                "standardize=false")
        return self.stats  # type: ignore[return-value]

    def fit_stats(self, items: Sequence[ScoreItem], *, chunk: int = 256,
                  on_chunk: Callable[[int], None] | None = None) -> list[MemberStats]:
        """Each member's mean and population std over every response of `items` (the reference set), scored
        `chunk` items at a time (`on_chunk(n)` after each: a progress bar)."""
        values: list[list[float]] = [[] for _ in self.members]
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            per_member, _ = self._member_rewards(part)
            for kept, rows in zip(values, per_member):
                kept.extend(r for rewards in rows for r in rewards)
            if on_chunk is not None:
                on_chunk(len(part))
        self.stats = [reference_stats(v, name) for name, v in zip(self.names, values)]
        return self.stats

    def standardizes(self, aggregator: str | None = None) -> bool:
        """Whether `aggregator` (default: the ensemble's) sees standardised rewards: as set, else whenever every
        member has stats, and always for the conservative aggregators (which then need them)."""
        if self.standardize_setting is not None:
            return self.standardize_setting
        return (aggregator or self.aggregator) != "mean" or all(s is not None for s in self.stats)

    @property
    def standardize(self) -> bool:
        return self.standardizes()

    def combine(self, raw: Sequence[Sequence[float]], aggregator: str | None = None
                ) -> tuple[list[float], list[float] | None]:
        """(k members x n responses) raw rewards -> (aggregate, uncertainty), with the ensemble's aggregator or
        another one (its lambda then the default, unless it is the ensemble's own)."""
        aggregator = aggregator or self.aggregator
        check_aggregator(aggregator)
        lam = self.lam if aggregator == self.aggregator else None
        stats = self._require_stats() if self.standardizes(aggregator) else None
        seen = [standardize(r, s) for r, s in zip(raw, stats)] if stats else [list(r) for r in raw]
        _check_ddof(aggregator, self.ddof, len(seen))
        return (aggregate(seen, aggregator, lam, self.ddof),
                spread(seen, self.ddof) if len(seen) > self.ddof else None)

    def reaggregate(self, result: ScoreResult, aggregator: str) -> ScoreResult:
        """The same members' rewards under another aggregator (the server's per-request "aggregator")."""
        if result.members is None:
            raise RewardkitError("this result has no member rewards to aggregate")
        rewards, uncertainty = self.combine(result.members, aggregator)
        return ScoreResult(rewards=rewards, members=result.members, uncertainty=uncertainty,
                           response_tokens=result.response_tokens, truncated=result.truncated)

    def _member_rewards(self, items: Sequence[ScoreItem]
                        ) -> tuple[list[list[list[float]]], list[ScoreResult]]:
        """Each member's rewards (k members x items x responses), each distinct Scorer called once, and the
        first member's own results (for token counts)."""
        scored: dict[int, list[ScoreResult]] = {}
        per_member = []
        for name, member, objective in zip(self.names, self.members, self.objectives):
            if id(member) not in scored:
                results = member.score(items)
                if len(results) != len(items):
                    raise RewardkitError(f"ensemble member {name!r} returned {len(results)} results for "
                                         f"{len(items)} items")
                scored[id(member)] = results
            rows = []
            for i, (item, result) in enumerate(zip(items, scored[id(member)])):
                rewards = result.rewards if objective is None else (result.objectives or {}).get(objective)
                if rewards is None or len(rewards) != len(item.responses):
                    raise RewardkitError(f"ensemble member {name!r}: {len(rewards or [])} rewards"
                                         f"{f' for objective {objective!r}' if objective else ''} for item {i}'s "
                                         f"{len(item.responses)} responses")
                rows.append([float(r) for r in rewards])
            per_member.append(rows)
        return per_member, scored[id(self.members[0])]

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        per_member, first = self._member_rewards(items)
        out = []
        for i in range(len(items)):
            raw = [rows[i] for rows in per_member]
            rewards, uncertainty = self.combine(raw)
            out.append(ScoreResult(rewards=rewards, members=raw, uncertainty=uncertainty,
                                   response_tokens=first[i].response_tokens, truncated=first[i].truncated))
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "ensemble", "name": f"ensemble({self.aggregator}: {', '.join(self.names)})",
                "aggregator": self.aggregator, "lambda": self.lam if self.lam is not None else
                DEFAULT_LAMBDA.get(self.aggregator), "ddof": self.ddof, "standardize": self.standardize,
                "objectives": list(_agreement_key(self.members[0].describe(), self.objectives[0])[0]),
                "members": [{**m.describe(), "member": n, "stats": _stats_json(s),
                             **({"objective": o} if o is not None else {})}
                            for n, s, m, o in zip(self.names, self.stats, self.members, self.objectives)]}

    # -- the manifest --------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        if self.specs is None:
            raise RewardkitError("this ensemble was built from Scorer objects, not specs, so it cannot be saved "
                                 "as a manifest; build it with EnsembleScorer.from_specs")
        return {"format": MANIFEST_FORMAT, "version": 1, "aggregator": self.aggregator,
                "lambda": self.lam, "ddof": self.ddof, "standardize": self.standardize_setting,
                "members": [{"name": n, "spec": spec, **({"objective": o} if o is not None else {}),
                             **({"stats": _stats_json(s)} if s else {})}
                            for n, spec, s, o in zip(self.names, self.specs, self.stats, self.objectives)]}

    def save(self, path: str | Path) -> Path:
        """Write the manifest (a directory gets ensemble.json), atomically. Member specs are written as given:
        relative paths are read relative to the manifest's folder first."""
        from rewardkit.io import atomic_write_json

        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / MANIFEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.manifest())
        return path

    @classmethod
    def from_specs(cls, specs: Sequence[str], *, names: Sequence[str] | None = None, base: Path | None = None,
                   **options) -> EnsembleScorer:
        """Members loaded by model spec (a relative path is tried under `base` first). Loading options that
        `load_scorer` takes (max_length, precision, ...) are split off `options` and apply to every member. A
        spec named twice (heads of one model, `objectives`) is loaded once."""
        from rewardkit.models.spec import load_scorer

        ensemble_keys = {"stats", "aggregator", "lam", "ddof", "standardize", "objectives"}
        loading = {k: v for k, v in options.items() if k not in ensemble_keys}
        names = list(names) if names else _member_names(specs)
        loaded: dict[str, Scorer] = {}
        members = []
        for name, spec in zip(names, specs):
            where = _resolve(spec, base)
            try:
                if where not in loaded:
                    loaded[where] = load_scorer(where, **loading)
            except RewardkitError as e:
                raise RewardkitError(f"ensemble member {name!r} ({spec}): {e}") from None
            except OSError as e:
                raise RewardkitError(f"ensemble member {name!r} ({spec}): cannot be loaded: {e}") from None
            members.append(loaded[where])
        return cls(members, names=names, specs=list(specs),
                   **{k: v for k, v in options.items() if k in ensemble_keys})

    @classmethod
    def load(cls, path: str | Path, **loading) -> EnsembleScorer:
        """An ensemble from its manifest (a file, or a directory holding ensemble.json)."""
        import json

        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RewardkitError(f"{path}: not a readable ensemble manifest: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise RewardkitError(f"{path}: not an ensemble manifest (field 'format' is not {MANIFEST_FORMAT!r})")
        members = manifest.get("members")
        if not isinstance(members, list) or not members:
            raise RewardkitError(f"{path}: field 'members' must be a non-empty list")
        specs, names, stats, objectives = [], [], [], []
        for i, member in enumerate(members):
            if not isinstance(member, dict) or not isinstance(member.get("spec"), str):
                raise RewardkitError(f"{path}: members[{i}]: field 'spec' (a model spec) is missing")
            if member.get("objective") is not None and not isinstance(member["objective"], str):
                raise RewardkitError(f"{path}: members[{i}].objective must be an objective's name")
            specs.append(member["spec"])
            objectives.append(member.get("objective"))
            names.append(str(member.get("name") or f"member{i}"))
            stats.append(_stats_from_json(member.get("stats"), path, i))
        try:
            return cls.from_specs(specs, names=names, base=path.parent, stats=stats, objectives=objectives,
                                  aggregator=manifest.get("aggregator", "mean"), lam=manifest.get("lambda"),
                                  ddof=int(manifest.get("ddof", 0)), standardize=manifest.get("standardize"),
                                  **loading)
        except RewardkitError as e:
            raise RewardkitError(f"{path}: {e}") from None


def is_manifest(spec: str) -> bool:
    path = Path(spec)
    return (path.is_file() and path.suffix == ".json") or (path / MANIFEST_NAME).is_file()


ENSEMBLE_OPTIONS = {"agg": str, "lambda": float, "ddof": int, "standardize": str}


def ensemble_from_spec(spec: str, **loading) -> EnsembleScorer:
    """'ensemble:A,B,C?agg=uwo&lambda=0.5&ddof=0&standardize=true' -> an EnsembleScorer. Stats come from each
    member's stored normalisation; for others, save a manifest with fitted stats."""
    from rewardkit.models.spec import named_specs, split_options

    target, options = split_options(spec, "ensemble:", ENSEMBLE_OPTIONS)
    named = named_specs([s for s in (part.strip() for part in target.split(",")) if s])
    standardize = options.get("standardize")
    if standardize is not None and standardize.lower() not in ("true", "false", "1", "0"):
        raise RewardkitError(f"model spec {spec!r}: standardize={standardize!r} is not true or false")
    try:
        return EnsembleScorer.from_specs(
            [s for _, s in named], names=[n for n, _ in named], aggregator=options.get("agg", "mean"),
            lam=options.get("lambda"), ddof=options.get("ddof", 0),
            standardize=None if standardize is None else standardize.lower() in ("true", "1"), **loading)
    except RewardkitError as e:
        raise RewardkitError(f"model spec {spec!r}: {e}") from None


# -- helpers -------------------------------------------------------------------------------------------------
def _stored_stats(member: Scorer) -> MemberStats | None:
    stored = normalization_stats(member)
    return MemberStats(*stored) if stored else None


def _stats_json(stats: MemberStats | None) -> dict[str, float] | None:
    return {"mean": stats.mean, "std": stats.std} if stats else None


def _stats_from_json(obj: Any, path: Path, i: int) -> MemberStats | None:
    if obj is None:
        return None
    try:
        stats = MemberStats(float(obj["mean"]), float(obj["std"]))
    except (KeyError, TypeError, ValueError):
        raise RewardkitError(f"{path}: members[{i}].stats must be {{'mean': number, 'std': number}}") from None
    if not (stats.std > 0 and math.isfinite(stats.std) and math.isfinite(stats.mean)):
        raise RewardkitError(f"{path}: members[{i}].stats.std must be a positive number, got {stats.std}")
    return stats


def _resolve(spec: str, base: Path | None) -> str:
    """A relative path inside the manifest's folder wins over the same path in the working directory."""
    if base is not None and ":" not in spec.split("/")[0] and (base / spec).exists():
        return str(base / spec)
    return spec


def _member_names(specs: Sequence[str]) -> list[str]:
    """Each spec's last meaningful path part (runs/seed1/best -> seed1); the spec itself where those repeat."""
    tails = []
    for spec in specs:
        parts = [p for p in spec.rstrip("/").split("/") if p and p not in ("best", "last", "merged")]
        tails.append(parts[-1] if parts else spec)
    return tails if len(set(tails)) == len(tails) else list(specs) if len(set(specs)) == len(specs) else [
        f"member{i}" for i in range(len(specs))]


def _say(key: tuple) -> str:
    objectives, steps = key
    return f"objectives {list(objectives)}" + (" per step" if steps else "")
