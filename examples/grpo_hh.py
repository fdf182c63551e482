"""GRPO on SmolLM2-135M-Instruct with HH-RLHF prompts and a rewardkit reward model, with TRL, on the CPU.

    .venv/bin/rewardkit train examples/train_hh.yaml --set output=runs/hh-minilm     # or any reward model
    .venv/bin/python examples/grpo_hh.py --rm runs/hh-minilm/best --out runs/grpo_hh [--steps 30]

Each step samples --generations completions for each of --prompts-per-step HH-RLHF harmless-base prompts (the
agreed train split; single-turn prompts of at most --max-prompt-chars characters, so a CPU step stays short),
scores them with `rewardkit.integrations.trl.reward_function(--rm)`, and takes one GRPO step with a KL penalty
(--beta) to the starting policy. Written to --out: log.jsonl (TRL's log, one line a step), curve.png (reward
and KL by step) and summary.json. A checkpoint is kept every --save-every steps; run the same command again
after an interruption and it resumes from the last one.

On a GPU the same script runs as it is (TRL puts the policy on it; the reward model goes there too); for a
real run raise --prompts-per-step and --generations, add --bf16, and give the policy vLLM through GRPOConfig
(`use_vllm=True`) as TRL's docs describe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


def hh_prompts(path: Path, max_chars: int, limit: int) -> list[dict]:
    from rewardkit.data import load_split

    rows = []
    for record in load_split(path, "train").records:
        if len(record.prompt) == 1 and len(record.prompt[0]["content"]) <= max_chars:
            rows.append({"prompt": record.prompt, "id": record.id})
        if len(rows) == limit:
            break
    return rows


def plot(history: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h for h in history if "reward" in h]
    x = [h["step"] for h in steps]
    mean = [h["reward"] for h in steps]
    std = [h.get("reward_std", 0.0) for h in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.plot(x, mean, color="tab:blue", label="reward (mean over the step's completions)")
    top.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                     color="tab:blue", alpha=0.15, label="± std within groups")
    top.set_ylabel("reward")
    top.legend(loc="lower right", fontsize=8)
    bottom.plot(x, [h.get("kl", float("nan")) for h in steps], color="tab:red")
    bottom.set_ylabel("KL to the start policy")
    bottom.set_xlabel("GRPO step")
    fig.suptitle("GRPO with a rewardkit reward model (TRL, SmolLM2-135M-Instruct, HH-RLHF prompts)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rm", required=True, help="Reward model: any rewardkit model spec or server URL.")
    parser.add_argument("--policy", default="smollm2", help="Causal LM to train (default: the offline SmolLM2).")
    parser.add_argument("--prompts", type=Path, default=HH, help="HH-RLHF-style data whose prompts to use.")
    parser.add_argument("--out", type=Path, default=Path("runs/grpo_hh"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4, help="Completions per prompt (GRPO's group).")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-prompt-chars", type=int, default=200)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.04, help="KL penalty to the start policy.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not args.prompts.is_file():
        print(f"{args.prompts}: no such file (HH-RLHF lives in ../shared/data; pass --prompts)", file=sys.stderr)
        return 2
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from transformers.trainer_utils import get_last_checkpoint

    from rewardkit.integrations.trl import policy_checkpoint, reward_function

    rows = hh_prompts(args.prompts, args.max_prompt_chars, args.steps * args.prompts_per_step)
    policy = policy_checkpoint(args.policy)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    config = GRPOConfig(
        output_dir=str(args.out / "checkpoints"), max_steps=args.steps, learning_rate=args.lr, beta=args.beta,
        per_device_train_batch_size=args.prompts_per_step * args.generations, num_generations=args.generations,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, logging_steps=1,
        save_steps=args.save_every, save_total_limit=1, report_to=[], bf16=args.bf16, seed=args.seed,
        use_cpu=not _cuda(), shuffle_dataset=False)
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward_function(args.rm)], args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
    if last:
        print(f"resuming from {last}")
    trainer.train(resume_from_checkpoint=last)

    history = trainer.state.log_history
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "log.jsonl", "w") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    plot(history, args.out / "curve.png")
    steps = [h for h in history if "reward" in h]
    first, last_steps = steps[: max(1, len(steps) // 5)], steps[-max(1, len(steps) // 5):]
    summary = {
        "policy": args.policy, "reward_model": args.rm, "steps": len(steps),
        "completions_per_step": args.prompts_per_step * args.generations,
        "reward_first_fifth": sum(h["reward"] for h in first) / len(first),
        "reward_last_fifth": sum(h["reward"] for h in last_steps) / len(last_steps),
        "kl_last": steps[-1].get("kl") if steps else None,
        # Summed over the logged steps, so a resumed run counts the steps it did before the interruption too.
        "step_seconds": sum(h.get("step_time", 0.0) for h in steps),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'curve.png'}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
