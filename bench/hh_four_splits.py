"""MiniLM trained on the four HH-RLHF train splits together: accuracy on each test split, before and after.

    .venv/bin/python bench/hh_four_splits.py [--out runs/hh-minilm]

Uses examples/train_hh.yaml (agreed split: the first 80% of each file's rows train, the rest test; max
length 256, batch 16, 1 epoch, lr 1e-4). Prints a Markdown table: strict accuracy (ties wrong) of the untrained
model (the MiniLM backbone with a fresh, seeded head) and of the trained model's best checkpoint on every test
split, with the number of test pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rewardkit.data import agreed_split, load_records, shared_data_dir
from rewardkit.eval import evaluate
from rewardkit.models import RewardModel, RewardModelScorer
from rewardkit.train import load_config, train

SPLITS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")


def accuracy(model_path, records) -> float:
    scorer = RewardModelScorer(RewardModel.from_pretrained(model_path, max_length=256))
    return evaluate(records, scorer.score(records))["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/hh-minilm")
    args = parser.parse_args()
    shared = shared_data_dir()
    if shared is None:
        print("needs ../shared/data (or $REWARDKIT_DATA)", file=sys.stderr)
        return 2
    config_path = Path(__file__).resolve().parents[1] / "examples" / "train_hh.yaml"
    files = {s: shared / "hh-rlhf" / s / "test.jsonl.gz" for s in SPLITS}
    config = load_config(config_path, [f"output={args.out}", "progress=false"],
                         data=[str(f) for f in files.values()], eval_data=[str(f) for f in files.values()])
    tests = {s: agreed_split(load_records(f), "test") for s, f in files.items()}
    before = {s: accuracy("minilm", recs) for s, recs in tests.items()}
    t0 = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - t0
    after = {s: accuracy(Path(args.out) / "best", recs) for s, recs in tests.items()}
    print(f"\ntrained on {result.records_trained} pairs in {wall:.0f}s ({result.records_trained / wall:.1f} pairs/s "
          "end to end)\n")
    print("| test split | pairs | untrained | trained |")
    print("|---|---|---|---|")
    for s in SPLITS:
        print(f"| {s} | {len(tests[s])} | {100 * before[s]:.1f}% | {100 * after[s]:.1f}% |")
    n = sum(len(r) for r in tests.values())
    pooled = {k: sum(v[s] * len(tests[s]) for s in SPLITS) / n for k, v in (("before", before), ("after", after))}
    print(f"| all | {n} | {100 * pooled['before']:.1f}% | {100 * pooled['after']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
