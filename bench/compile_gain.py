"""What `compile: true` buys in training (and `--compile` in scoring): the same work eager and compiled, side
by side in one process.

    .venv/bin/python bench/compile_gain.py --model smollm2 --limit 640
    .venv/bin/python bench/compile_gain.py --model smollm2 --scoring --limit 200

Same data as bench/train_vs_trl.py (HH-RLHF harmless-base train pairs that fit in 256 tokens), batch 16, bf16.
Prints each run's whole train() time, the steps that compiled (the slow first ones) and the steady per-step
throughput (median tokens/s over the second half of the steps, every graph compiled by then), and the number
of steps after which the compiled run has paid back its compile time. With --scoring: the first N test pairs
scored (bf16, max length 512) eager twice, then compiled three times (the first pass compiles), and the largest
reward difference between the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import device_name, harmless_path

import torch  # noqa: E402

from rewardkit.data import agreed_split, load_records, write_canonical_jsonl  # noqa: E402
from rewardkit.models import RewardModel, RewardModelScorer  # noqa: E402
from rewardkit.train import TrainConfig, train  # noqa: E402


def run(model: str, data: Path, out: Path, compile_: bool) -> dict:
    config = TrainConfig(model=model, data=[str(data)], output=str(out), epochs=1, lr=1e-4, batch_size=16,
                         max_length=256, seed=0, precision="auto", progress=False, compile=compile_)
    t0 = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - t0
    steps = [(h["tokens"], h["tokens"] * h["records_per_s"] / 16) for h in result.history]  # (tokens, tokens/s)
    per_step = [tokens / rate for tokens, rate in steps]
    steady = statistics.median(rate for _, rate in steps[len(steps) // 2:])
    return {"seconds": seconds, "steps": len(steps), "steady_tokens_per_s": steady, "per_step": per_step}


def scoring(model_name: str, limit: int) -> None:
    records = agreed_split(load_records(harmless_path()), "test")[:limit]
    model = RewardModel.from_pretrained(model_name, max_length=512)
    scorer = RewardModelScorer(model, precision="bf16")

    def timed() -> tuple[float, list]:
        t0 = time.perf_counter()
        results = scorer.score(records)
        return time.perf_counter() - t0, results

    eager = [timed() for _ in range(2)]
    model.compile_backbone()
    compiled = [timed() for _ in range(3)]
    diff = max(abs(a - b) for x, y in zip(eager[-1][1], compiled[-1][1]) for a, b in zip(x.rewards, y.rewards))
    print(f"{len(records)} test pairs, {model_name}, bf16, max_length 512, {device_name()}, torch {torch.__version__}")
    print("\n| scorer | pass 1 (s) | pass 2 (s) | pass 3 (s) |\n|---|---|---|---|")
    print(f"| eager | {eager[0][0]:.1f} | {eager[1][0]:.1f} | |")
    print(f"| compiled | {' | '.join(f'{t:.1f}' for t, _ in compiled)} |")
    print(f"\nspeed-up once compiled {eager[1][0] / compiled[2][0]:.2f}x; largest reward difference {diff:.3g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=int, default=640)
    parser.add_argument("--scoring", action="store_true", help="time scoring instead of training")
    args = parser.parse_args()
    if args.scoring:
        scoring(args.model, args.limit)
        return 0
    records = agreed_split(load_records(harmless_path()), "train")
    text = RewardModel.from_pretrained(args.model, max_length=256).text
    fitting = [r for r in records if all(text.encode(r.prompt, x.content).truncated == 0 for x in r.responses)]
    fitting = fitting[: args.limit]
    print(f"{len(fitting)} pairs, {args.model}, batch 16, max_length 256, {device_name()}, torch {torch.__version__}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        write_canonical_jsonl(fitting, data)
        for name, flag in (("eager", False), ("compiled", True)):
            rows[name] = run(args.model, data, Path(tmp) / name, flag)
            print(name, {k: v for k, v in rows[name].items() if k != "per_step"}, flush=True)
    eager, compiled = rows["eager"], rows["compiled"]
    overhead = sum(compiled["per_step"]) - sum(eager["per_step"][:len(compiled["per_step"])])
    gain = compiled["steady_tokens_per_s"] / eager["steady_tokens_per_s"]
    print("\n| run | train() seconds | steady tokens/s | first 3 steps (s) |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.0f} | {r['steady_tokens_per_s']:.0f} | "
              f"{', '.join(f'{s:.1f}' for s in r['per_step'][:3])} |")
    saved_per_step = statistics.median(e - c for e, c in zip(eager["per_step"][len(eager['per_step']) // 2:],
                                                                 compiled["per_step"][len(compiled['per_step']) // 2:]))
    print(f"\nsteady speed-up {gain:.2f}x; compiling cost {overhead:.0f} s more over this run; "
          + (f"about {overhead / saved_per_step + len(eager['per_step']):.0f} steps of this size pay it back"
             if saved_per_step > 0 else "it does not pay back"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
