"""Two objectives from HH-RLHF on frozen features: one two-objective model against two single-objective ones.

    .venv/bin/python bench/multi_objective_hh.py [--model minilm] [--cache DIR] [--combination static]

Helpfulness comes from the three helpful-* files, harmlessness from harmless-base; every model trains on the
agreed train splits and is tested on the agreed test splits (../shared/data/README.md). The backbone is frozen:
its features are computed once (rewardkit.multiobjective), and each head and combination is fitted on them,
so the fits take seconds. Printed: per-objective test accuracy of each model (strict, ties wrong), the combined
reward's accuracy on every test split, and the fit times.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import device_name

from rewardkit.data import load_split, shared_data_dir  # noqa: E402
from rewardkit.eval import strict_accuracy  # noqa: E402
from rewardkit.models import RewardModel  # noqa: E402
from rewardkit.multiobjective import fit_frozen_heads  # noqa: E402

SPLITS = {"helpful-base": "helpfulness", "helpful-online": "helpfulness",
          "helpful-rejection-sampled": "helpfulness", "harmless-base": "harmlessness"}


def load(part: str) -> dict[str, list]:
    root = shared_data_dir()
    if root is None:
        print("needs ../shared/data (or $REWARDKIT_DATA)", file=sys.stderr)
        sys.exit(2)
    out = {}
    for split, objective in SPLITS.items():
        records = load_split(root / "hh-rlhf" / split / "test.jsonl.gz", part, skip_bad=True).records
        for r in records:
            r.meta["objective"] = objective
        out[split] = records
    return out


def accuracy(scorer, records, objective: str | None) -> float:
    """Strict accuracy of one objective's head (or of the combined reward when objective is None)."""
    deltas = []
    for rec, res in zip(records, scorer.score(records)):
        scores = res.objectives[objective] if objective else res.rewards
        deltas += [scores[c.winner] - scores[c.loser] for c in rec.comparisons() if c.p > 0.5]
    return strict_accuracy(deltas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--cache", help="feature-cache directory for the training features (reused when it matches)")
    parser.add_argument("--combination", default="learned", help="fixed, learned or gate")
    args = parser.parse_args()
    train, test = load("train"), load("test")
    model = RewardModel.from_pretrained(args.model)
    everything = [r for recs in train.values() for r in recs]
    helpful = [r for s, recs in train.items() if SPLITS[s] == "helpfulness" for r in recs]
    objective = lambda r: r.meta["objective"]  # noqa: E731

    fits = {}
    t0 = time.perf_counter()
    fits["two objectives"] = fit_frozen_heads(model, everything, objective, objectives=["helpfulness", "harmlessness"],
                                              combination=args.combination, cache=args.cache)
    fits["helpfulness only"] = fit_frozen_heads(model, helpful, "helpfulness", objectives=["helpfulness"],
                                                combination="fixed")
    fits["harmlessness only"] = fit_frozen_heads(model, train["harmless-base"], "harmlessness",
                                                 objectives=["harmlessness"], combination="fixed")
    total = time.perf_counter() - t0
    print(f"HH-RLHF agreed splits: {len(everything)} train pairs ({len(helpful)} helpful, "
          f"{len(train['harmless-base'])} harmless), {sum(map(len, test.values()))} test pairs; {args.model} "
          f"frozen, {device_name()}; all fits with feature extraction: {total:.0f} s\n")

    print("| model | fit s (heads + combination) | feature extraction s | helpfulness acc (3 helpful test "
          "splits) | harmlessness acc (harmless test) | " + " | ".join(f"combined: {s}" for s in SPLITS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(SPLITS))
    helpful_test = [r for s, recs in test.items() if SPLITS[s] == "helpfulness" for r in recs]
    for name, scorer in fits.items():
        report = scorer.fit_report
        objectives = list(scorer.objectives)
        help_acc = accuracy(scorer, helpful_test, "helpfulness") if "helpfulness" in objectives else None
        harm_acc = accuracy(scorer, test["harmless-base"], "harmlessness") if "harmlessness" in objectives else None
        combined = [accuracy(scorer, recs, None) for recs in test.values()]
        extract = "cached" if report.extract_seconds is None else f"{report.extract_seconds:.0f}"

        def pct(x):
            return "—" if x is None else f"{100 * x:.1f}%"

        print(f"| {name} | {report.fit_seconds:.1f} | {extract} | {pct(help_acc)} | {pct(harm_acc)} | "
              + " | ".join(pct(x) for x in combined) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
