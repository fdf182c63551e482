"""The best-of-n over-optimization study (EVALUATION §8-9): for every proxy objective, the expected gold and
proxy score of best-of-n against d = sqrt(KL_bon(n)), with bootstrap intervals over prompts, the Gao fit
R_bon(d) = d (alpha - beta d), and the samples the proxy rates far above the gold.

    report = bon_study(pool, gold_results, {"minilm": results, "ens mean": ..., "ens uwo": ...}, n_max=64)

An objective is any per-sample score that sorts the pool: a proxy's reward, or an ensemble's reward under one
aggregator (`objectives_of` expands an ensemble into one objective per aggregator, from the same cached member
rewards). Gold and proxy curves are normalised so that R(0) = 0 (the pool's mean score subtracted, as the
paper does), in each model's own units. The gap between them is in standard-deviation units of each model's
scores over the pool, so that models on different scales compare. An objective counts as over-optimized when
its gold curve falls after the peak by more than chance: the 95% interval of the drop from the peak to the
largest n (paired over the same prompts) lies above zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewardkit.errors import RewardkitError
from rewardkit.eval.compare import prompt_text
from rewardkit.models.scorer import ScoreResult
from rewardkit.overopt.bon import bon_weights, fit_bon, kl_bon, n_values
from rewardkit.overopt.pool import Pool

#: The report's hacks: the N_HACKS samples with the lowest gold among the proxy's top HACK_SHARE of the pool.
N_HACKS = 10
HACK_SHARE = 0.05


def objectives_of(name: str, scorer: Any, results: Sequence[ScoreResult], aggregators: Sequence[str]
                  ) -> dict[str, list[list[float]]]:
    """A proxy's objectives: {name: per-prompt rewards}, or for an ensemble one per aggregator ("NAME agg"),
    recomputed from its members' cached rewards."""
    from rewardkit.models.ensemble import EnsembleScorer

    if isinstance(scorer, EnsembleScorer) and all(r.members is not None for r in results):
        return {f"{name} {agg}": [scorer.reaggregate(r, agg).rewards for r in results] for agg in aggregators}
    return {name: [list(r.rewards) for r in results]}


def per_prompt_estimates(keys: Sequence[Sequence[float]], values: Sequence[Sequence[float]],
                         ns: Sequence[int]) -> np.ndarray:
    """(prompts, len(ns)): each prompt's expected `values` of best-of-n by `keys` (bon_estimate, vectorised
    over n with one sort per prompt)."""
    out = np.empty((len(keys), len(ns)))
    for p, (key, value) in enumerate(zip(keys, values)):
        key, value = np.asarray(key, dtype=float), np.asarray(value, dtype=float)
        ranked = value[np.argsort(key, kind="stable")]
        out[p] = [bon_weights(len(key), n) @ ranked for n in ns]
    return out


def bootstrap_means(per_prompt: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile intervals (lo, hi), per column, of the mean over prompts resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = per_prompt.shape[0]
    means = np.stack([per_prompt[rng.integers(0, n, n)].mean(axis=0) for _ in range(resamples)])
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def _flat(rows: Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray([v for row in rows for v in row], dtype=float)


def bon_study(pool: Pool, gold: Sequence[ScoreResult], objectives: Mapping[str, Sequence[Sequence[float]]], *,
              n_max: int, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The report dict (see the module docstring): {"pool", "n", "kl", "d", "objectives": {name: {...}},
    "mitigation": [...], "hacks": [...]}."""
    if n_max > pool.smallest:
        raise RewardkitError(f"--n-max {n_max} is above the pool size: the smallest prompt has "
                             f"{pool.smallest} samples (sample more, or lower --n-max)")
    if not objectives:
        raise RewardkitError("no proxy to study: give at least one --proxy")
    ns = n_values(n_max)
    kl = [kl_bon(n) for n in ns]
    d = np.sqrt(kl)
    gold_rows = [list(r.rewards) for r in gold]
    gold_flat = _flat(gold_rows)
    gold_mean, gold_std = float(gold_flat.mean()), float(gold_flat.std()) or 1.0
    report: dict[str, Any] = {
        "pool": {"prompts": len(pool.records), "samples": int(sum(len(r.responses) for r in pool.records)),
                 "smallest": pool.smallest, "source": pool.source},
        "n": ns, "kl": kl, "d": d.tolist(), "resamples": resamples, "seed": seed,
        "gold": {"mean": gold_mean, "std": gold_std}, "objectives": {}}
    for name, keys in objectives.items():
        if len(keys) != len(gold_rows) or any(len(k) != len(g) for k, g in zip(keys, gold_rows)):
            raise RewardkitError(f"proxy {name!r}: its scores do not match the pool's samples")
        key_flat = _flat(keys)
        key_mean, key_std = float(key_flat.mean()), float(key_flat.std()) or 1.0
        g = per_prompt_estimates(keys, gold_rows, ns) - gold_mean  # R(0) = 0
        p = per_prompt_estimates(keys, keys, ns) - key_mean
        g_lo, g_hi = bootstrap_means(g, resamples, seed)
        p_lo, p_hi = bootstrap_means(p, resamples, seed)
        gold_curve, proxy_curve = g.mean(axis=0), p.mean(axis=0)
        gap = proxy_curve / key_std - gold_curve / gold_std
        fit = fit_bon(d, gold_curve)
        peak = int(np.argmax(gold_curve))
        drop = g[:, peak] - g[:, -1]  # per prompt: how much gold best-of-n_max loses against the peak
        drop_lo, drop_hi = bootstrap_means(drop[:, None], resamples, seed)
        report["objectives"][name] = {
            "gold": gold_curve.tolist(), "gold_lo": g_lo.tolist(), "gold_hi": g_hi.tolist(),
            "proxy": proxy_curve.tolist(), "proxy_lo": p_lo.tolist(), "proxy_hi": p_hi.tolist(),
            "gap_std": gap.tolist(), "proxy_std": key_std,
            "fit": {"alpha": fit.alpha, "beta": fit.beta, "d_star": fit.d_star, "r_star": fit.r_star,
                    "rmse": fit.rmse, "extrapolated": fit.extrapolated},
            "peak": {"n": ns[peak], "d": float(d[peak]), "gold": float(gold_curve[peak]),
                     "gold_lo": float(g_lo[peak]), "gold_hi": float(g_hi[peak])},
            "at_n_max": {"n": ns[-1], "gold": float(gold_curve[-1]), "proxy": float(proxy_curve[-1]),
                         "gap_std": float(gap[-1])},
            "drop": {"value": float(drop.mean()), "lo": float(drop_lo[0]), "hi": float(drop_hi[0])},
            # over-optimized: gold falls after its peak by more than the prompts' sampling noise explains
            "overoptimized": bool(peak < len(ns) - 1 and drop_lo[0] > 0)}
    report["mitigation"] = [
        {"objective": name, "peak_gold": o["peak"]["gold"], "peak_n": o["peak"]["n"], "peak_d": o["peak"]["d"],
         "d_star": o["fit"]["d_star"], "r_star": o["fit"]["r_star"], "gold_at_n_max": o["at_n_max"]["gold"],
         "gap_at_n_max": o["at_n_max"]["gap_std"]} for name, o in report["objectives"].items()]
    first = next(iter(objectives))
    report["hacks"] = hacks(pool, gold_rows, objectives[first], first, gold_mean, gold_std)
    return report


def hacks(pool: Pool, gold_rows, key_rows, name: str, gold_mean: float, gold_std: float,
          top: int = N_HACKS, share: float = HACK_SHARE) -> list[dict[str, Any]]:
    """What best-of-n on this proxy would pick and the gold dislikes: among the samples in the proxy's top
    `share` of the pool, the `top` with the lowest gold, lowest first. Scores in standard-deviation units of
    each model over the pool: [{"objective", "prompt_id", "sample", "proxy_std", "gold_std", "gap_std",
    "prompt", "text"}]."""
    key_flat = _flat(key_rows)
    key_mean, key_std = float(key_flat.mean()), float(key_flat.std()) or 1.0
    cut = float(np.quantile(key_flat, 1 - share))
    rows = []
    for record, keys, golds in zip(pool.records, key_rows, gold_rows):
        for i, (k, g) in enumerate(zip(keys, golds)):
            if k >= cut and math.isfinite(k) and math.isfinite(g):
                rows.append(((g - gold_mean) / gold_std, (k - key_mean) / key_std, record, i))
    rows.sort(key=lambda row: row[0])
    return [{"objective": name, "prompt_id": record.id, "sample": i, "proxy_std": zk, "gold_std": zg,
             "gap_std": zk - zg, "prompt": prompt_text(record.prompt), "text": record.responses[i].content}
            for zg, zk, record, i in rows[:top]]
