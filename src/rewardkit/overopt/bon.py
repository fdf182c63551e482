"""Best-of-n from one pool, its KL, and the Gao et al. fits (EVALUATION §8-9). Pure functions over arrays.

    kl = kl_bon(16)                                   # log n - (n - 1) / n, an upper bound on the true KL
    gold_16 = bon_estimate(proxy_scores, gold_scores, 16)   # E[gold of the proxy's pick among 16 of N]
    fit = fit_bon(d, gold)                            # R(d) = d (alpha - beta d): alpha, beta, d*, R*

Unbiased best-of-n from one pool of N samples: sort them by the proxy ascending (ties in index order). The
best of a random n-subset is the i-th sorted sample with probability C(i-1, n-1) / C(N, n), so the expected
gold (or proxy) score of best-of-n is the weighted sum of the sorted scores with those weights, computed in
log space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def kl_bon(n: int) -> float:
    """KL(best-of-n || policy) <= log n - (n - 1) / n (0 for n = 1)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def bon_weights(pool: int, n: int) -> np.ndarray:
    """(pool,) probabilities that the i-th smallest of `pool` samples (i = 1..pool) is the best of a random
    n-subset: C(i - 1, n - 1) / C(pool, n), zero below i = n. They sum to 1."""
    if not 1 <= n <= pool:
        raise ValueError(f"best-of-{n} needs 1 <= n <= the pool size {pool}")
    i = np.arange(n, pool + 1, dtype=float)
    w = np.zeros(pool)
    w[n - 1:] = np.exp(_log_comb(i - 1, n - 1) - _log_comb(pool, n))
    return w


def _log_comb(a, b):
    """log C(a, b), elementwise, for a >= b >= 0."""
    from scipy.special import gammaln

    return gammaln(np.asarray(a, dtype=float) + 1) - gammaln(b + 1) - gammaln(np.asarray(a, dtype=float) - b + 1)


def bon_estimate(key: Sequence[float], values: Sequence[float], n: int) -> float:
    """Expected `values` of the sample with the highest `key` among n drawn without replacement from the pool
    (one prompt's samples). Ties in `key` are broken by index: the later sample counts as higher."""
    key, values = np.asarray(key, dtype=float), np.asarray(values, dtype=float)
    if key.shape != values.shape or key.ndim != 1:
        raise ValueError(f"key {key.shape} and values {values.shape} must be one score per sample")
    order = np.argsort(key, kind="stable")
    return float(bon_weights(len(key), n) @ values[order])


@dataclass(frozen=True)
class Fit:
    """R(d) fitted by least squares: `form` "bon" d (alpha - beta d), or "rl" d (alpha - beta log d). d_star
    and r_star: the peak, None when the fit has none (beta not above rounding: the curve never turns).
    extrapolated: the peak lies beyond the largest d measured."""

    form: str
    alpha: float
    beta: float
    d_star: float | None
    r_star: float | None
    rmse: float
    extrapolated: bool = False

    def __call__(self, d):
        d = np.asarray(d, dtype=float)
        if self.form == "bon":
            return d * (self.alpha - self.beta * d)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * (self.alpha - self.beta * np.log(np.where(d > 0, d, 1.0))), 0.0)


def _least_squares(d: np.ndarray, r: np.ndarray, second: np.ndarray) -> tuple[float, float, float]:
    """(alpha, beta, rmse) of r = alpha d - beta second."""
    A = np.stack([d, -second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(A, r, rcond=None)
    rmse = float(np.sqrt(np.mean((A @ np.array([alpha, beta]) - r) ** 2)))
    return float(alpha), float(beta), rmse


def _points(d, r) -> tuple[np.ndarray, np.ndarray]:
    d, r = np.asarray(d, dtype=float), np.asarray(r, dtype=float)
    if d.shape != r.shape or d.ndim != 1 or len(d) < 2:
        raise ValueError("a fit needs at least two (d, R) points")
    if (d < 0).any():
        raise ValueError("d = sqrt(KL) is never negative")
    return d, r


def fit_bon(d, r) -> Fit:
    """R_bon(d) = d (alpha - beta d); peak d* = alpha / (2 beta), R* = alpha^2 / (4 beta)."""
    d, r = _points(d, r)
    alpha, beta, rmse = _least_squares(d, r, d * d)
    if not (_turns(alpha, beta) and alpha > 0):
        return Fit("bon", alpha, beta, None, None, rmse)
    d_star = alpha / (2 * beta)
    return Fit("bon", alpha, beta, d_star, alpha * alpha / (4 * beta), rmse, bool(d_star > d.max()))


def fit_rl(d, r) -> Fit:
    """R_RL(d) = d (alpha - beta log d); peak d* = exp(alpha / beta - 1), R* = beta d*. Points at d = 0 add
    nothing (R(0) = 0 by normalisation) and are kept."""
    d, r = _points(d, r)
    dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    alpha, beta, rmse = _least_squares(d, r, dlogd)
    if not _turns(alpha, beta) or alpha / beta - 1 > 700:  # exp overflows: a peak beyond any distance
        return Fit("rl", alpha, beta, None, None, rmse)
    d_star = math.exp(alpha / beta - 1)
    return Fit("rl", alpha, beta, d_star, beta * d_star, rmse, bool(d_star > d.max()))


def _turns(alpha: float, beta: float) -> bool:
    """beta clearly above zero: least squares on exactly linear data leaves rounding (~1e-16) in beta."""
    return beta > 1e-9 * max(1.0, abs(alpha))


def n_values(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max, and n_max itself when it is not a power of two."""
    if n_max < 1:
        raise ValueError(f"n-max must be at least 1, got {n_max}")
    ns = [1 << k for k in range(n_max.bit_length()) if 1 << k <= n_max]
    return ns if ns[-1] == n_max else ns + [n_max]
