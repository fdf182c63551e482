"""An ensemble of reward models on HH-RLHF: each member's accuracy, the ensemble's under every aggregator, the
uncertainty AUROC (all with bootstrap intervals over pairs), and what scoring K members costs.

    .venv/bin/rewardkit train examples/train_hh.yaml --members 5 --set output=runs/hh-ens   # or any manifest
    .venv/bin/python bench/ensemble_hh.py --ensemble runs/hh-ens [--split test] [--repeats 3]

Throughput: the held-out pairs scored by one member alone and by the whole ensemble, in the same run (best of
--repeats after a warm-up). With separate members the ensemble can at best run at 1/K of one member's speed;
the printed efficiency is (ensemble pairs/s) / (member pairs/s / K), 1.0 meaning no overhead but the members.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from common import device_name, harmless_path

from rewardkit.data import load_split  # noqa: E402
from rewardkit.eval.ensemble import uncertainty_auroc  # noqa: E402
from rewardkit.models.ensemble import AGGREGATORS, EnsembleScorer  # noqa: E402
from rewardkit.models.scorer import ScoreItem  # noqa: E402


def bootstrap(values: np.ndarray, stat, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of stat(values[resampled rows])."""
    rng = np.random.default_rng(seed)
    draws = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    draws = [d for d in draws if d is not None]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def best_time(fn, repeats: int):
    """(best seconds of `repeats` calls after a warm-up, the last call's result)."""
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ensemble", required=True, help="An ensemble manifest (or its directory).")
    parser.add_argument("--data", default=None, help="Pairs (default: HH-RLHF harmless-base).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()

    records = [r for r in load_split(args.data or harmless_path(), args.split).records if r.comparisons()]
    items = [ScoreItem(r.prompt, r.responses) for r in records]
    ensemble = EnsembleScorer.load(args.ensemble)
    k = len(ensemble.members)

    t_member, _ = best_time(lambda: ensemble.members[0].score(items), args.repeats)
    t_ensemble, results = best_time(lambda: ensemble.score(items), args.repeats)
    efficiency = (len(items) / t_ensemble) / (len(items) / t_member / k)

    # one row per pair: [member deltas..., delta per aggregator..., pair uncertainty per aggregator...]
    pairs = [(rec, res, c) for rec, res in zip(records, results) for c in rec.comparisons() if c.p > 0.5]
    member_delta = np.array([[m[c.winner] - m[c.loser] for m in res.members] for _, res, c in pairs])
    figures = {"device": device_name(), "ensemble": args.ensemble, "members": ensemble.names, "pairs": len(pairs),
               "member_s": t_member, "ensemble_s": t_ensemble, "efficiency": efficiency, "accuracy": {}}
    for i, name in enumerate(ensemble.names):
        right = (member_delta[:, i] > 0).astype(float)
        figures["accuracy"][name] = {"value": right.mean(), "ci": bootstrap(right, np.mean)}
    for agg in AGGREGATORS:
        again = [ensemble.reaggregate(res, agg) for _, res, _ in pairs]
        delta = np.array([r.rewards[c.winner] - r.rewards[c.loser] for r, (_, _, c) in zip(again, pairs)])
        spread = np.array([(r.uncertainty[c.winner] + r.uncertainty[c.loser]) / 2 for r, (_, _, c) in
                           zip(again, pairs)])
        right = (delta > 0).astype(float)
        rows = np.stack([spread, 1 - right], axis=1)
        figures["accuracy"][f"ensemble {agg}"] = {"value": right.mean(), "ci": bootstrap(right, np.mean)}
        figures[f"uncertainty_auroc {agg}"] = {
            "value": uncertainty_auroc(spread, 1 - right),
            "ci": bootstrap(rows, lambda r: uncertainty_auroc(r[:, 0], r[:, 1].astype(bool)))}

    print(f"{len(pairs)} {args.split} pairs, {k} members ({figures['device']})")
    print(f"  one member {t_member:.2f} s, the ensemble {t_ensemble:.2f} s: efficiency {efficiency:.2f} "
          f"(1.0 = K members cost exactly K times one)")
    for name, a in figures["accuracy"].items():
        print(f"  accuracy {name:24s} {100 * a['value']:.1f}%  [{100 * a['ci'][0]:.1f}, {100 * a['ci'][1]:.1f}]")
    for agg in AGGREGATORS:
        a = figures[f"uncertainty_auroc {agg}"]
        print(f"  uncertainty AUROC ({agg:14s}) {a['value']:.3f}  [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
