"""Pairwise, calibration and length-bias metrics as pure NumPy functions (docs/EVALUATION.md §5, §6).

Everything takes score differences Δ = r(preferred) − r(other), one per labelled comparison, so the same
functions serve any Scorer. Accuracy is strict: a tie (Δ = 0) is wrong. Calibration reads Δ as a
Bradley–Terry logit, p = σ(Δ/T). A metric that is undefined for its input (no pairs, a constant series)
is NaN; the report layer turns NaN into null.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

NAN = float("nan")


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def _targets(y: ArrayLike | None, n: int) -> np.ndarray:
    """(n,) target probabilities that the preferred response wins: 1 for hard labels unless given."""
    if y is None:
        return np.ones(n)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), (n,))
    if np.any((y < 0) | (y > 1)):
        raise ValueError("target probabilities must lie in [0, 1]")
    return y


def sigmoid(x: ArrayLike) -> np.ndarray:
    """Logistic σ(x) of an array, written as exp(−softplus(−x)) so it never overflows."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


# --- accuracy ---------------------------------------------------------------------------------------


def strict_accuracy(delta: ArrayLike) -> float:
    """Fraction of comparisons with Δ > 0; ties count as wrong, so a constant scorer scores 0.

    delta: (n,) array of r(preferred) − r(other). Returns NaN when n = 0.
    """
    delta = _vector(delta, "delta")
    return float(np.mean(delta > 0)) if len(delta) else NAN


def tie_rate(delta: ArrayLike) -> float:
    """Fraction of comparisons with Δ = 0. delta: (n,) array. NaN when n = 0.

    Swapping chosen and rejected turns accuracy a into 1 − a − tie_rate, not 1 − a.
    """
    delta = _vector(delta, "delta")
    return float(np.mean(delta == 0)) if len(delta) else NAN


# --- calibration ------------------------------------------------------------------------------------


@dataclass
class Reliability:
    """Binned confidence against accuracy: ECE, MCE and the table a reliability diagram draws.

    edges:      (bins + 1,) bin edges on [0, 1].
    counts:     (bins,) comparisons per bin.
    confidence: (bins,) mean conf = max(p, 1 − p) per bin; NaN for an empty bin.
    accuracy:   (bins,) mean 1[Δ > 0] per bin; NaN for an empty bin.
    """

    ece: float
    mce: float
    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    def table(self) -> list[dict]:
        """One JSON-ready row per bin: lo, hi, count, confidence, accuracy (None when the bin is empty)."""
        return [
            {
                "lo": float(self.edges[m]),
                "hi": float(self.edges[m + 1]),
                "count": int(self.counts[m]),
                "confidence": None if self.counts[m] == 0 else float(self.confidence[m]),
                "accuracy": None if self.counts[m] == 0 else float(self.accuracy[m]),
            }
            for m in range(len(self.counts))
        ]


def reliability(delta: ArrayLike, bins: int = 10, temperature: float = 1.0) -> Reliability:
    """Equal-width calibration bins over conf = max(p, 1 − p), p = σ(Δ/T) (EVALUATION.md §5).

    delta: (n,) array. Bin m holds (m−1)/bins ≤ conf < m/bins, the last bin is closed at 1, and a tie
    has conf 0.5 and counts as wrong. ECE = Σ_m |B_m|/n · |acc_m − conf_m| (empty bins add 0) and MCE is
    the largest bin gap; both are NaN when n = 0.
    """
    delta = _vector(delta, "delta")
    if bins < 1:
        raise ValueError("bins must be at least 1")
    # σ(|Δ|/T) rather than max(p, 1 − p): equal, but this form gives ±Δ bit-identical confidences.
    conf = sigmoid(np.abs(delta) / temperature)
    correct = (delta > 0).astype(np.float64)
    # A confidence on an edge up to rounding (σ(2 ln 3) = 0.9) belongs to the bin that edge opens.
    index = np.clip(np.floor(conf * bins + 1e-9).astype(int), 0, bins - 1)

    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / counts
        mean_correct = np.bincount(index, weights=correct, minlength=bins) / counts
    gaps = np.abs(mean_correct - mean_conf)[counts > 0]
    n = len(delta)
    ece = float(np.sum(counts[counts > 0] / n * gaps)) if n else NAN
    mce = float(np.max(gaps)) if n else NAN
    return Reliability(ece, mce, np.linspace(0.0, 1.0, bins + 1), counts, mean_conf, mean_correct)


def ece(delta: ArrayLike, bins: int = 10, temperature: float = 1.0) -> float:
    """Expected calibration error of p = σ(Δ/T); delta: (n,) array. See `reliability`."""
    return reliability(delta, bins, temperature).ece


def mce(delta: ArrayLike, bins: int = 10, temperature: float = 1.0) -> float:
    """Maximum calibration error (the largest bin gap); delta: (n,) array. See `reliability`."""
    return reliability(delta, bins, temperature).mce


def brier(delta: ArrayLike, y: ArrayLike | None = None, temperature: float = 1.0) -> float:
    """Mean (σ(Δ/T) − y)², with y the probability that the preferred response wins.

    delta: (n,) array; y: (n,) array or scalar in [0, 1], 1 (hard labels) by default, or the annotator
    fraction for soft labels. NaN when n = 0.
    """
    delta = _vector(delta, "delta")
    if not len(delta):
        return NAN
    y = _targets(y, len(delta))
    return float(np.mean((sigmoid(delta / temperature) - y) ** 2))


def nll(delta: ArrayLike, temperature: float = 1.0, y: ArrayLike | None = None) -> float:
    """Bradley–Terry negative log-likelihood, mean softplus(−Δ/T), computed without overflow.

    delta: (n,) array. With soft targets y ((n,) array or scalar in [0, 1]) it is the cross-entropy
    y·softplus(−Δ/T) + (1 − y)·softplus(Δ/T), which reduces to the above for y = 1. NaN when n = 0.
    """
    delta = _vector(delta, "delta")
    if not len(delta):
        return NAN
    y = _targets(y, len(delta))
    z = delta / temperature
    return float(np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)))


def fit_temperature(
    delta: ArrayLike, y: ArrayLike | None = None, bounds: tuple[float, float] = (1e-2, 1e2), tol: float = 1e-7
) -> float:
    """T* = argmin_T nll(Δ, T): temperature scaling (EVALUATION.md §5); it never changes accuracy.

    delta: (n,) array; y: optional soft targets as in `nll`. Golden-section search on log T: NLL is convex
    in 1/T, hence unimodal in log T. If the data are perfectly separated the optimum lies at a bound, and
    that bound is returned. Returns 1.0 when every Δ is 0 (NLL does not depend on T), NaN when n = 0.
    Fit on a held-out calibration split; T fitted on the evaluation set itself is optimistic.
    """
    delta = _vector(delta, "delta")
    if not len(delta):
        return NAN
    if not np.any(delta):
        return 1.0
    y = _targets(y, len(delta))

    def loss(log_t: float) -> float:
        return nll(delta, float(np.exp(log_t)), y)

    inv_phi = (np.sqrt(5.0) - 1.0) / 2.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - inv_phi * (hi - lo)
            fa = loss(a)
        else:  # the minimum lies in [a, hi]
            lo, a, fa = a, b, fb
            b = lo + inv_phi * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2.0))


# --- length bias ------------------------------------------------------------------------------------


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation of two (n,) arrays; NaN when n < 2 or either input is constant."""
    x, y = _vector(x, "x"), _vector(y, "y")
    _same_length(x=x, y=y)
    # Test constancy exactly: x − mean(x) of a constant series can be tiny but non-zero after rounding.
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return NAN
    dx, dy = x - x.mean(), y - y.mean()
    r = np.sum(dx * dy) / np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.clip(r, -1.0, 1.0))


def average_ranks(x: ArrayLike) -> np.ndarray:
    """1-based ranks of an (n,) array, tied values sharing the mean of their ranks: (n,) float array."""
    x = _vector(x, "x")
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts_run = np.r_[True, xs[1:] != xs[:-1]]
    run = np.cumsum(starts_run) - 1  # run index of each sorted position
    first = np.flatnonzero(starts_run)  # 0-based position where each run starts
    last = np.r_[first[1:], len(x)] - 1  # and where it ends
    ranks = np.empty(len(x))
    ranks[order] = (first + last)[run] / 2.0 + 1.0
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman correlation of two (n,) arrays: Pearson of their average ranks (ties share a rank).

    NaN when n < 2 or either input is constant.
    """
    x, y = _vector(x, "x"), _vector(y, "y")
    _same_length(x=x, y=y)
    return pearson(average_ranks(x), average_ranks(y))


def length_split_accuracy(delta: ArrayLike, len_chosen: ArrayLike, len_rejected: ArrayLike) -> dict:
    """Strict accuracy split by whether the preferred response is longer, shorter or equal in length.

    delta, len_chosen, len_rejected: (n,) arrays, per comparison. Returns
    {"longer": {"accuracy", "n"}, "shorter": {...}, "equal": {...}, "gap"} where gap = acc(longer) −
    acc(shorter), the length bias a scorer would show at equal quality. Accuracy of an empty group is NaN.
    """
    delta = _vector(delta, "delta")
    len_c, len_r = _vector(len_chosen, "len_chosen"), _vector(len_rejected, "len_rejected")
    _same_length(delta=delta, len_chosen=len_c, len_rejected=len_r)
    groups = {"longer": len_c > len_r, "shorter": len_c < len_r, "equal": len_c == len_r}
    out: dict = {
        name: {"accuracy": strict_accuracy(delta[mask]), "n": int(mask.sum())}
        for name, mask in groups.items()
    }
    out["gap"] = out["longer"]["accuracy"] - out["shorter"]["accuracy"]
    return out


def reward_by_length(rewards: ArrayLike, lengths: ArrayLike, bins: int = 10) -> list[dict]:
    """Mean reward per length bin: the reward-vs-length curve in a few numbers a report can keep and plot.

    Bins are length quantiles (equal counts, so sparse long tails do not make empty bins); tied lengths stay
    in one bin, so there may be fewer than `bins`. Returns [{"lo", "hi", "n", "mean_reward", "std_reward"}],
    lo and hi inclusive, in increasing length.
    """
    rewards, lengths = _vector(rewards, "rewards"), _vector(lengths, "lengths")
    _same_length(rewards=rewards, lengths=lengths)
    if not len(rewards):
        return []
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, max(len(edges) - 2, 0))
    table = []
    for b in np.unique(which):
        mask = which == b
        table.append({"lo": float(lengths[mask].min()), "hi": float(lengths[mask].max()), "n": int(mask.sum()),
                      "mean_reward": float(rewards[mask].mean()), "std_reward": float(rewards[mask].std())})
    return table
