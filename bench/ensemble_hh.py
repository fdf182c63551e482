"""Ensembles of reward models on HH-RLHF, side by side: each member's accuracy, the ensemble's under every
aggregator, the uncertainty AUROC (all with bootstrap intervals over pairs), how diverse the members are, and
what scoring them costs against one model.

    .venv/bin/rewardkit train examples/train_hh.yaml --members 5 --set output=runs/hh-ens
    .venv/bin/rewardkit train examples/train_hh.yaml --members 5 --backbone shared --vary bootstrap \
        --set output=runs/hh-heads
    .venv/bin/python bench/ensemble_hh.py --ensemble runs/hh-ens runs/hh-heads [--split test] [--repeats 3]

Throughput: the held-out pairs scored by one model alone (--single; default: the first ensemble's first
member) and by each ensemble, in the same run (best of --repeats after a warm-up), printed as the ensemble's
speed relative to that one model. K separate members can at best reach 1/K of it (the issue's goal: 0.9/K);
K heads on one backbone run one forward pass (goal: 0.8).

Diversity: over the held-out responses, the mean Pearson correlation between two members' rewards, and over the
pairs, how often two members prefer different responses (both averaged over every two members); benefit: the
ensemble's accuracy minus its members' mean accuracy, with a paired bootstrap interval.
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
from rewardkit.models.spec import load_scorer  # noqa: E402


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


def analyse(name: str, ensemble: EnsembleScorer, records, items, t_single: float, repeats: int) -> dict:
    """One ensemble's figures on the held-out pairs (see the module docstring)."""
    k = len(ensemble.members)
    t_ensemble, results = best_time(lambda: ensemble.score(items), repeats)
    shared = len({id(m) for m in ensemble.members}) == 1
    pairs = [(rec, res, c) for rec, res in zip(records, results) for c in rec.comparisons() if c.p > 0.5]
    member_delta = np.array([[m[c.winner] - m[c.loser] for m in res.members] for _, res, c in pairs])
    rewards = np.array([[r for res in results for r in res.members[i]] for i in range(k)])  # (k, responses)
    corr = np.corrcoef(rewards)
    upper = np.triu_indices(k, 1)
    prefers = member_delta > 0  # (pairs, k)
    disagree = np.mean([np.mean(prefers[:, i] != prefers[:, j]) for i, j in zip(*upper)])
    figures = {"ensemble": name, "members": ensemble.names, "shared_backbone": shared, "pairs": len(pairs),
               "ensemble_s": t_ensemble, "speed_vs_one_model": t_single / t_ensemble,
               "goal": 0.8 if shared else 0.9 / k, "member_correlation": float(corr[upper].mean()),
               "member_disagreement": float(disagree), "accuracy": {}}
    member_right = (member_delta > 0).astype(float)
    for i, member in enumerate(ensemble.names):
        figures["accuracy"][member] = {"value": member_right[:, i].mean(), "ci": bootstrap(member_right[:, i], np.mean)}
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
        if agg == "mean":  # benefit: ensemble minus mean member, paired over the same pairs
            gain = right - member_right.mean(axis=1)
            figures["benefit"] = {"value": float(gain.mean()), "ci": bootstrap(gain, np.mean)}
    return figures


def report(f: dict) -> None:
    kind = "heads on one backbone" if f["shared_backbone"] else "separate members"
    print(f"\n{f['ensemble']}: {len(f['members'])} {kind}, {f['pairs']} pairs")
    print(f"  scoring: {f['ensemble_s']:.2f} s, {f['speed_vs_one_model']:.2f}x one model's speed "
          f"(goal {f['goal']:.2f})")
    print(f"  diversity: member correlation {f['member_correlation']:.3f}, pairs two members disagree on "
          f"{100 * f['member_disagreement']:.1f}%")
    for name, a in f["accuracy"].items():
        print(f"  accuracy {name:24s} {100 * a['value']:.1f}%  [{100 * a['ci'][0]:.1f}, {100 * a['ci'][1]:.1f}]")
    b = f["benefit"]
    print(f"  benefit (mean ensemble - mean member) {100 * b['value']:+.1f} points  "
          f"[{100 * b['ci'][0]:+.1f}, {100 * b['ci'][1]:+.1f}]")
    for agg in AGGREGATORS:
        a = f[f"uncertainty_auroc {agg}"]
        print(f"  uncertainty AUROC ({agg:14s}) {a['value']:.3f}  [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ensemble", required=True, nargs="+", help="Ensemble manifests (or their directories).")
    parser.add_argument("--single", help="The one model to compare speed with (default: the first ensemble's "
                                         "first member).")
    parser.add_argument("--data", default=None, help="Pairs (default: HH-RLHF harmless-base).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()

    records = [r for r in load_split(args.data or harmless_path(), args.split).records if r.comparisons()]
    items = [ScoreItem(r.prompt, r.responses) for r in records]
    ensembles = [EnsembleScorer.load(path) for path in args.ensemble]
    single = load_scorer(args.single) if args.single else ensembles[0].members[0]
    t_single, _ = best_time(lambda: single.score(items), args.repeats)
    print(f"{len(items)} {args.split} records ({device_name()}); one model {t_single:.2f} s "
          f"({args.single or args.ensemble[0] + ': ' + ensembles[0].names[0]})")
    figures = {"device": device_name(), "single": args.single or f"{args.ensemble[0]}:{ensembles[0].names[0]}",
               "single_s": t_single, "ensembles": []}
    for path, ensemble in zip(args.ensemble, ensembles):
        figures["ensembles"].append(analyse(path, ensemble, records, items, t_single, args.repeats))
        report(figures["ensembles"][-1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
