"""Length bias: the within-pair measures of docs/EVALUATION.md §6 and post-hoc length calibration (METHODS §3.2).

`evaluate()` already reports reward–length correlation and length-split accuracy, and computes the within-pair
numbers inline. This module gives those within-pair numbers names (pure functions over per-comparison arrays),
adds how strongly the labels themselves favour length, and collects everything in one `length_bias` summary.

Post-hoc calibration removes a scorer's length effect without retraining: fit b̂(len), a LOWESS curve of
reward on length over a reference set, and score r̂ = r − b̂(len). `LengthCalibratedScorer` wraps any Scorer
that way; the fitted curve (`LengthCalibration`) is a small JSON file a user can save and reuse.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.errors import DataError, ModelError
from rewardkit.eval import metrics
from rewardkit.io import atomic_write_json, json_ready
from rewardkit.models.scorer import Scorer, ScoreItem, ScoreResult

LENGTH_UNITS = ("tokens", "words", "chars")
CALIBRATION_METHODS = ("lowess", "linear")
CALIBRATION_FORMAT = "rewardkit.length_calibration"
CALIBRATION_VERSION = 1
# Below this many reference responses a LOWESS curve is mostly noise (the paper's local-mean variant also
# refuses to calibrate from fewer than 20 neighbours).
MIN_REFERENCE_RESPONSES = 20
# frac = 1.0 is what the paper's RewardBench run used (calibrate_rewardbench.sh: --frac 1.0, with
# statsmodels' default of 3 robustifying iterations); it gives a smooth curve that still bends.
DEFAULT_FRAC = 1.0
DEFAULT_ITERATIONS = 3
UNIT_SOURCE = {
    "tokens": "the base scorer's response tokens (ScoreResult.response_tokens)",
    "words": "whitespace-separated words of the response text",
    "chars": "characters of the response text",
}


# --- within-pair measures (EVALUATION.md §6) --------------------------------------------------------


def pairwise_length_correlation(delta: ArrayLike, len_chosen: ArrayLike, len_rejected: ArrayLike) -> dict:
    """Correlation of Δr with Δlen inside each comparison: length bias that prompt offsets cannot hide.

    delta, len_chosen, len_rejected: (n,) arrays, one entry per comparison. Returns {"pearson", "spearman"};
    each is NaN when n < 2 or either series is constant.
    """
    len_delta = np.asarray(len_chosen, dtype=float) - np.asarray(len_rejected, dtype=float)
    return {"pearson": metrics.pearson(delta, len_delta), "spearman": metrics.spearman(delta, len_delta)}


def longer_baseline_accuracy(len_chosen: ArrayLike, len_rejected: ArrayLike) -> float:
    """Strict accuracy of "pick the longer response": the score a pure length scorer would get.

    len_chosen, len_rejected: (n,) arrays. Equal lengths are ties, hence wrong. NaN when n = 0.
    """
    return metrics.strict_accuracy(np.asarray(len_chosen, dtype=float) - np.asarray(len_rejected, dtype=float))


def longer_chosen_gap(delta: ArrayLike, len_chosen: ArrayLike, len_rejected: ArrayLike) -> float:
    """acc(chosen longer) − acc(chosen shorter): how much more often a scorer is right when length helps.

    delta, len_chosen, len_rejected: (n,) arrays. NaN when either group is empty.
    """
    return metrics.length_split_accuracy(delta, len_chosen, len_rejected)["gap"]


def longer_chosen_rate(len_chosen: ArrayLike, len_rejected: ArrayLike) -> float:
    """Fraction of comparisons of unequal length whose preferred response is the longer one.

    A property of the labels, not of a scorer: 0.5 means length carries no label information, and a scorer
    whose accuracy sits near `longer_baseline_accuracy` on data far from 0.5 may be reading length alone
    (ODIN reports 66% longer-chosen on its test pairs). len_chosen, len_rejected: (n,) arrays; NaN when
    every pair has equal lengths.
    """
    len_delta = np.asarray(len_chosen, dtype=float) - np.asarray(len_rejected, dtype=float)
    unequal = len_delta != 0
    return float(np.mean(len_delta[unequal] > 0)) if unequal.any() else math.nan


# --- lengths of scored responses --------------------------------------------------------------------


def text_length(response: Response, unit: str) -> int:
    """Length of one response's text in "words" (whitespace split, as evaluate() counts) or "chars"."""
    if unit == "words":
        return len(response.content.split())
    if unit == "chars":
        return len(response.content)
    raise ValueError(f"text_length measures 'words' or 'chars', got {unit!r}")


def resolve_unit(unit: str, results: Sequence[ScoreResult]) -> str:
    """"auto" becomes "tokens" when every result carries response_tokens, else "words" (evaluate()'s rule)."""
    if unit == "auto":
        return "tokens" if results and all(r.response_tokens is not None for r in results) else "words"
    if unit not in LENGTH_UNITS:
        raise ValueError(f"unit must be 'auto' or one of {LENGTH_UNITS}, got {unit!r}")
    return unit


def response_lengths(items: Sequence[ScoreItem], results: Sequence[ScoreResult], unit: str) -> list[list[int]]:
    """Per item, the length of each response in `unit` ("tokens", "words" or "chars").

    Tokens come from the scorer's results; a result without them is an error rather than a silent switch to
    another unit, since mixing units would make lengths incomparable.
    """
    if unit != "tokens":
        return [[text_length(r, unit) for r in item.responses] for item in items]
    out = []
    for k, res in enumerate(results):
        if res.response_tokens is None:
            raise ModelError(f"item {k}: the scorer returned no response_tokens, but lengths are in tokens")
        out.append(list(res.response_tokens))
    return out


def _check_scored(records: Sequence[ScoreItem], results: Sequence[ScoreResult]) -> None:
    if len(records) != len(results):
        raise DataError(f"{len(records)} records but {len(results)} score results; they must pair up")
    for k, (rec, res) in enumerate(zip(records, results)):
        if len(res.rewards) != len(rec.responses):
            raise DataError(f"item {k}: {len(res.rewards)} rewards for {len(rec.responses)} responses",
                            field="rewards")
        if res.response_tokens is not None and len(res.response_tokens) != len(rec.responses):
            raise DataError(f"item {k}: {len(res.response_tokens)} lengths for {len(rec.responses)} responses",
                            field="response_tokens")


# --- summary ----------------------------------------------------------------------------------------


def length_bias(records: Sequence[PreferenceRecord], results: Sequence[ScoreResult], *,
                unit: str = "auto") -> dict[str, Any]:
    """Every length-bias measure of EVALUATION.md §6 for one scorer, in one JSON-ready dict.

    Uses the same comparisons (p > 0.5) and the same length rule as evaluate(), so shared numbers agree.
    Returns {"unit", "n_responses", "n_comparisons",
             "reward_length": {"pearson", "spearman"}        over every response once,
             "pairwise": {"pearson", "spearman"}             Δr against Δlen within comparisons,
             "length_split": {"longer"|"shorter"|"equal": {"accuracy", "n"}, "gap"},
             "longer_baseline_accuracy", "longer_chosen_rate"}; undefined values are None.
    """
    _check_scored(records, results)
    unit = resolve_unit(unit, results)
    lengths = response_lengths(records, results, unit)
    delta, len_win, len_lose = [], [], []
    for rec, res, lens in zip(records, results, lengths):
        for c in rec.comparisons():
            if c.p > 0.5:
                delta.append(res.rewards[c.winner] - res.rewards[c.loser])
                len_win.append(lens[c.winner])
                len_lose.append(lens[c.loser])
    delta, len_win, len_lose = (np.asarray(a, dtype=float) for a in (delta, len_win, len_lose))
    rewards = np.asarray([r for res in results for r in res.rewards], dtype=float)
    all_lengths = np.asarray([n for lens in lengths for n in lens], dtype=float)
    return json_ready({
        "unit": unit,
        "n_responses": len(rewards),
        "n_comparisons": len(delta),
        "reward_length": {"pearson": metrics.pearson(rewards, all_lengths),
                          "spearman": metrics.spearman(rewards, all_lengths)},
        "pairwise": pairwise_length_correlation(delta, len_win, len_lose),
        "length_split": metrics.length_split_accuracy(delta, len_win, len_lose),
        "longer_baseline_accuracy": longer_baseline_accuracy(len_win, len_lose),
        "longer_chosen_rate": longer_chosen_rate(len_win, len_lose),
    })


# --- LOWESS -----------------------------------------------------------------------------------------


def _tricube(u: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(u) ** 3, 0.0, None) ** 3


def _local_linear(x: np.ndarray, y: np.ndarray, knots: np.ndarray, k: int, robust: np.ndarray,
                  previous: np.ndarray) -> np.ndarray:
    """One LOWESS pass: at each knot, a weighted straight-line fit to its k nearest points.

    x, y, robust: (n,); knots, previous: (m,). Tricube weights on distance / (k-th nearest distance), times
    the robustness weights. Where the window holds one distinct x the fit is the weighted mean; where every
    weight is 0 (all neighbours rejected as outliers) the knot keeps its previous value.
    """
    fitted = np.empty(len(knots))
    chunk = max(1, 2_000_000 // len(x))  # bound the (chunk, n) distance matrix to ~16 MB
    for start in range(0, len(knots), chunk):
        x0 = knots[start:start + chunk, None]  # (c, 1)
        dist = np.abs(x[None, :] - x0)  # (c, n)
        radius = np.partition(dist, k - 1, axis=1)[:, k - 1:k]  # (c, 1): distance to the k-th nearest
        with np.errstate(divide="ignore", invalid="ignore"):
            # radius 0: more than k points share this length; they alone define the fit there.
            w = np.where(radius > 0, _tricube(dist / radius), (dist == 0).astype(float)) * robust[None, :]
        total = w.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        mx = (w * x).sum(axis=1) / safe
        my = (w * y).sum(axis=1) / safe
        sxx = (w * (x[None, :] - mx[:, None]) ** 2).sum(axis=1)
        sxy = (w * (x[None, :] - mx[:, None]) * (y[None, :] - my[:, None])).sum(axis=1)
        spread = (w * x[None, :] ** 2).sum(axis=1) / safe  # scale for the "one distinct x" test
        line = sxx / safe > 1e-12 * np.maximum(spread, 1e-300)
        slope = np.where(line, sxy / np.where(line, sxx, 1.0), 0.0)
        value = my + slope * (x0[:, 0] - mx)
        fitted[start:start + chunk] = np.where(total > 0, value, previous[start:start + chunk])
    return fitted


def lowess_curve(x: ArrayLike, y: ArrayLike, frac: float = DEFAULT_FRAC,
                 iterations: int = DEFAULT_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """LOWESS (Cleveland 1979) of y on x, evaluated at each distinct x: local linear, tricube weights.

    x, y: (n,) arrays. frac: share of the points in each local window (k = ⌊frac·n⌋, at least 2).
    iterations: robustifying passes with bisquare weights on residuals/(6·median |residual|), as statsmodels'
    `lowess(it=3)`; they keep a few extreme rewards from bending the curve. Returns (knots, fitted), both
    (m,) with knots the sorted distinct x values; a point's fitted value is the fitted value at its x.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not 0 < frac <= 1:
        raise ValueError(f"frac must lie in (0, 1], got {frac}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    knots, at_knot = np.unique(x, return_inverse=True)
    k = min(len(x), max(2, int(frac * len(x) + 1e-10)))
    robust = np.ones(len(x))
    fitted = _local_linear(x, y, knots, k, robust, np.zeros(len(knots)))
    for _ in range(iterations):
        residual = np.abs(y - fitted[at_knot])
        tiny = 1e-12 * max(1.0, float(np.max(np.abs(y))))
        if residual.max() <= tiny:
            break  # a perfect fit: nothing to down-weight
        # When most points fit exactly, the median residual is ~0 and every real residual is an outlier.
        u = residual / (6.0 * max(float(np.median(residual)), tiny))
        robust = np.clip(1.0 - u**2, 0.0, None) ** 2
        fitted = _local_linear(x, y, knots, k, robust, fitted)
    return knots, fitted


# --- the fitted calibration -------------------------------------------------------------------------


@dataclass
class LengthCalibration:
    """A fitted length effect b̂(len), to subtract from rewards: r̂ = r − b̂(len) (METHODS.md §3.2).

    method "lowess": b̂ is the LOWESS curve, stored at the distinct reference lengths (`knots`, `bias`) and
                     linearly interpolated between them; outside the reference range it is held at the end
                     values (a curve should not be extrapolated from no data).
    method "linear": the paper's baseline r' = r − α·len/len_ref, with α = slope·len_ref from a least-squares
                     line of r on len and len_ref the mean reference length.
    unit:            "tokens" (the base scorer's response tokens), "words" or "chars"; scoring must use the
                     same unit, so it is part of the calibration.
    """

    method: str
    unit: str
    n_reference: int
    knots: list[float] | None = None
    bias: list[float] | None = None
    frac: float | None = None
    iterations: int | None = None
    alpha: float | None = None
    len_ref: float | None = None

    def predict(self, lengths: ArrayLike) -> np.ndarray:
        """b̂ at each length: (n,) array of lengths in `unit` -> (n,) array of length effects."""
        lengths = np.asarray(lengths, dtype=float)
        if self.method == "linear":
            return self.alpha * lengths / self.len_ref
        return np.interp(lengths, self.knots, self.bias)

    def summary(self) -> dict[str, Any]:
        """The fitted parameters in a few scalars (for describe() and reports); to_json() has the curve."""
        out: dict[str, Any] = {
            "method": self.method, "unit": self.unit, "length_source": UNIT_SOURCE[self.unit],
            "n_reference": self.n_reference, "fingerprint": self.fingerprint(),
        }
        if self.method == "linear":
            out.update(alpha=self.alpha, len_ref=self.len_ref, slope=self.alpha / self.len_ref)
        else:
            out.update(frac=self.frac, iterations=self.iterations, n_knots=len(self.knots),
                       length_range=[self.knots[0], self.knots[-1]], bias_range=[min(self.bias), max(self.bias)],
                       extrapolation="held at the end values outside length_range")
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this calibration, JSON-ready, with a format tag and version."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return {"format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, **fields}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LengthCalibration:
        if obj.get("format") != CALIBRATION_FORMAT:
            raise ModelError(f"not a length calibration (format {obj.get('format')!r}, "
                             f"expected {CALIBRATION_FORMAT!r})")
        if obj.get("version") != CALIBRATION_VERSION:
            raise ModelError(f"length calibration version {obj.get('version')!r} is not supported "
                             f"(this rewardkit reads version {CALIBRATION_VERSION})")
        names = {"method", "unit", "n_reference", "knots", "bias", "frac", "iterations", "alpha", "len_ref"}
        cal = cls(**{k: v for k, v in obj.items() if k in names})
        cal._validate()
        return cal

    def save(self, path: str | os.PathLike, base: dict[str, Any] | None = None) -> Path:
        """Write the calibration as JSON, atomically; `base` (the base scorer's describe()) is kept for
        provenance only, since the curve is only meaningful for the scorer it was fitted on."""
        obj = self.to_json()
        if base is not None:
            obj["base_scorer"] = json_ready(base)
        atomic_write_json(path, obj)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LengthCalibration:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"cannot read length calibration {path}: {e}") from e
        return cls.from_json(obj)

    def fingerprint(self) -> str:
        """A short hash of the fitted parameters, so a report names exactly which calibration it used."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def _validate(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ModelError(f"unknown calibration method {self.method!r}; expected one of {CALIBRATION_METHODS}")
        if self.unit not in LENGTH_UNITS:
            raise ModelError(f"unknown length unit {self.unit!r}; expected one of {LENGTH_UNITS}")
        if self.method == "linear":
            if self.alpha is None or not self.len_ref:
                raise ModelError("a linear length calibration needs alpha and a non-zero len_ref")
        elif not self.knots or self.bias is None or len(self.knots) != len(self.bias):
            raise ModelError("a LOWESS length calibration needs knots and bias of the same, non-zero length")


def fit_length_calibration(rewards: ArrayLike, lengths: ArrayLike, *, unit: str, method: str = "lowess",
                           frac: float = DEFAULT_FRAC, iterations: int = DEFAULT_ITERATIONS,
                           min_points: int = MIN_REFERENCE_RESPONSES) -> LengthCalibration:
    """Fit b̂(len) to reference rewards: (n,) rewards and (n,) lengths in `unit`, one per response.

    Raises DataError for fewer than `min_points` responses, non-finite rewards, or lengths that never vary
    (no length effect can be told from the mean reward then).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if unit not in LENGTH_UNITS:
        raise ValueError(f"unit must be one of {LENGTH_UNITS}, got {unit!r}")
    r, n = np.asarray(rewards, dtype=float), np.asarray(lengths, dtype=float)
    if r.shape != n.shape or r.ndim != 1:
        raise ValueError(f"rewards and lengths must be (n,) arrays of one length, got {r.shape} and {n.shape}")
    if len(r) < min_points:
        raise DataError(f"length calibration needs at least {min_points} reference responses, got {len(r)}; "
                        "score a larger reference set")
    if not np.all(np.isfinite(r)):
        raise DataError("the reference rewards contain non-finite values", field="rewards")
    if np.all(n == n[0]):
        raise DataError(f"every reference response has length {n[0]:g} {unit}; a length effect cannot be "
                        "fitted without varied lengths")
    if method == "linear":
        slope = float(np.polyfit(n, r, 1)[0])
        len_ref = float(np.mean(n)) or 1.0
        return LengthCalibration("linear", unit, len(r), alpha=slope * len_ref, len_ref=len_ref)
    knots, bias = lowess_curve(n, r, frac, iterations)
    return LengthCalibration("lowess", unit, len(r), knots=knots.tolist(), bias=bias.tolist(), frac=frac,
                             iterations=iterations)


# --- the Scorer wrapper -----------------------------------------------------------------------------


class LengthCalibratedScorer:
    """A Scorer whose rewards are the base scorer's minus its fitted length effect: r̂ = r − b̂(len).

    Build it with `LengthCalibratedScorer.fit(base, reference_items)` or from a saved calibration with
    `LengthCalibratedScorer.load(base, path)`. Results keep the base scorer's response_tokens and truncated;
    objectives, weights, members and step rewards are dropped, since they no longer combine to the calibrated
    reward.
    """

    def __init__(self, base: Scorer, calibration: LengthCalibration):
        calibration._validate()
        self.base = base
        self.calibration = calibration

    @classmethod
    def fit(cls, base: Scorer, reference_items: Sequence[ScoreItem], *, method: str = "lowess",
            unit: str = "auto", frac: float = DEFAULT_FRAC, iterations: int = DEFAULT_ITERATIONS,
            min_points: int = MIN_REFERENCE_RESPONSES,
            reference_results: Sequence[ScoreResult] | None = None) -> LengthCalibratedScorer:
        """Score `reference_items` with `base` (unless `reference_results` are given) and fit b̂ on them.

        unit "auto" uses the base scorer's response tokens when every reference result carries them, else
        whitespace words. The reference set should look like what will be scored later (same prompts'
        distribution, same policy); its responses need not be labelled.
        """
        results = list(reference_results) if reference_results is not None else base.score(reference_items)
        _check_scored(reference_items, results)
        unit = resolve_unit(unit, results)
        lengths = response_lengths(reference_items, results, unit)
        rewards = [r for res in results for r in res.rewards]
        flat = [n for lens in lengths for n in lens]
        calibration = fit_length_calibration(rewards, flat, unit=unit, method=method, frac=frac,
                                             iterations=iterations, min_points=min_points)
        return cls(base, calibration)

    @classmethod
    def load(cls, base: Scorer, path: str | os.PathLike) -> LengthCalibratedScorer:
        """Wrap `base` with a calibration saved by `save` (fitted on that same base scorer)."""
        return cls(base, LengthCalibration.load(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted calibration (and the base scorer's description) as JSON, atomically."""
        return self.calibration.save(path, base=self.base.describe())

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        results = self.base.score(items)
        _check_scored(items, results)
        lengths = response_lengths(items, results, self.calibration.unit)
        out = []
        for res, lens in zip(results, lengths):
            effect = self.calibration.predict(lens)
            rewards = [float(r - b) for r, b in zip(res.rewards, effect)]
            out.append(ScoreResult(rewards=rewards, response_tokens=res.response_tokens, truncated=res.truncated))
        return out

    def describe(self) -> dict[str, Any]:
        base = self.base.describe()
        return {
            "name": f"{base.get('name', 'scorer')}+length-calibrated",
            "kind": "length_calibrated",
            "length_calibration": self.calibration.summary(),
            "base": base,
        }
