"""rewardkit's TRL reward function against TRL's own reward-model path, on the same completions, in one run.

    .venv/bin/rewardkit sample --policy smollm2 --prompts ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz \
        --limit 16 --n 8 --max-new-tokens 64 --seed 0 --out runs/bench/smollm2_samples.jsonl
    .venv/bin/python bench/trl_reward.py --rm RM_DIR --samples runs/bench/smollm2_samples.jsonl [--repeats 3]

The samples are policy completions (SmolLM2-135M-Instruct on HH-RLHF prompts: G completions a prompt, as a GRPO
batch holds them). Both paths run inside TRL's `GRPOTrainer._calculate_rewards` (bench/trl_common.py):

- TRL: `reward_funcs=[RM_DIR]`; TRL loads the checkpoint as AutoModelForSequenceClassification and scores the
  whole batch as one right-padded forward pass (fp32), conversational format (the chat template applied);
- rewardkit: `reward_funcs=[reward_function(RM_DIR)]`; completions of one prompt share its tokens in one packed
  row (a causal reward model), batches planned by tokens, precision auto (fp32 on a CPU without fast bf16).

Printed: seconds per batch (median of --repeats after a warm-up), completions/s, the ratio, the largest gap
between the reward function and `rewardkit score`'s scores of each pair alone (must be float noise), and how
far TRL's own scores of the checkpoint fall from rewardkit's on these completions (pairwise agreement over each
prompt's pairs of completions, Spearman over all).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys

from common import device_name
from trl_common import reward_harness, spearman, timed, trl_rewards

from rewardkit.data import load_records  # noqa: E402
from rewardkit.integrations.trl import reward_function  # noqa: E402
from rewardkit.models.scorer import ScoreItem  # noqa: E402


def batch_from_samples(path: str, limit: int | None) -> tuple[list, list, list[int]]:
    """TRL's flat lists: each prompt repeated once per completion; `group[k]` is completion k's prompt index."""
    records = load_records(path).records[:limit]
    prompts, completions, group = [], [], []
    for i, record in enumerate(records):
        for response in record.responses:
            if response.content:
                prompts.append(record.prompt)
                completions.append([{"role": "assistant", "content": response.content}])
                group.append(i)
    return prompts, completions, group


def pairwise_agreement(a: list[float], b: list[float], group: list[int]) -> float:
    """Share of same-prompt completion pairs that both score lists order the same way (ties in either count
    as disagreement)."""
    agree = total = 0
    by_group: dict[int, list[int]] = {}
    for k, g in enumerate(group):
        by_group.setdefault(g, []).append(k)
    for ks in by_group.values():
        for i, j in itertools.combinations(ks, 2):
            total += 1
            agree += (a[i] - a[j]) * (b[i] - b[j]) > 0
    return agree / total if total else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rm", required=True, help="A rewardkit checkpoint (merged: TRL loads it by path).")
    parser.add_argument("--samples", required=True, help="Policy samples in the generic format.")
    parser.add_argument("--limit", type=int, default=None, help="Use the first N prompts.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto", help="The reward function's (TRL's path is fp32, its "
                                                                 "default): auto, fp32 or bf16.")
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()

    prompts, completions, group = batch_from_samples(args.samples, args.limit)
    if not completions:
        print(f"{args.samples}: no non-empty completions", file=sys.stderr)
        return 2
    rf = reward_function(args.rm, precision=args.precision)
    ours = reward_harness(rf, args.rm)
    theirs = reward_harness(args.rm, args.rm)

    t_ours, r_ours = timed(lambda: trl_rewards(ours, prompts, completions), args.repeats)
    t_theirs, r_theirs = timed(lambda: trl_rewards(theirs, prompts, completions), args.repeats)

    scorer = rf.rewards.scorer
    alone = [scorer.score([ScoreItem(p, [_response(c)])])[0].rewards[0] for p, c in zip(prompts, completions)]
    gap = max(abs(a - b) for a, b in zip(r_ours, alone))
    spread = statistics.pstdev(alone)
    figures = {
        "device": device_name(), "rm": args.rm, "samples": args.samples, "prompts": len(set(group)),
        "completions": len(completions), "precision": scorer.describe().get("precision"),
        "rewardkit_s": t_ours, "trl_s": t_theirs, "speedup": t_theirs / t_ours,
        "max_abs_gap_to_rewardkit_score": gap, "reward_std": spread,
        "trl_vs_rewardkit": {"pairwise_agreement": pairwise_agreement(r_ours, r_theirs, group),
                             "spearman": spearman(r_ours, r_theirs)},
    }
    print(f"{len(completions)} completions of {len(set(group))} prompts ({figures['device']})")
    print(f"  rewardkit reward function  {t_ours:8.3f} s  {len(completions) / t_ours:8.1f} completions/s")
    print(f"  TRL, checkpoint by path    {t_theirs:8.3f} s  {len(completions) / t_theirs:8.1f} completions/s")
    print(f"  ratio {figures['speedup']:.2f}x; reward function ({figures['precision']}) vs rewardkit score of each "
          f"completion alone: max |gap| {gap:.2e} (reward std {spread:.3f})")
    agreement = figures["trl_vs_rewardkit"]
    print(f"  TRL's scores vs rewardkit's: pairwise agreement {agreement['pairwise_agreement']:.3f}, "
          f"Spearman {agreement['spearman']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def _response(completion):
    from rewardkit.data.record import Response

    return Response(completion[-1]["content"])


if __name__ == "__main__":
    sys.exit(main())
