"""Training throughput and accuracy: rewardkit vs TRL's RewardTrainer, side by side in one run.

Same backbone (the offline MiniLM), same data (HH-RLHF harmless-base, the agreed split: first 80% of the
file's rows train, the rest test), same max length, batch, epochs, learning rate, schedule and seed.

    .venv/bin/pip install "trl==1.16.0"      # bench-only dependency (pip install -e ".[bench]")
    .venv/bin/python bench/train_vs_trl.py [--limit N] [--trl-precision fp32,bf16]

Counting is honest on both sides:
- throughput is pairs per second of the training call (TRL: trainer.train(); rewardkit: train(), which also
  tokenizes, loads the model and writes checkpoints), counting the pairs each tool really trained on. TRL
  silently drops pairs where either sequence exceeds max_length; rewardkit keeps every pair and truncates the
  prompt from the left.
- accuracy is strict (ties wrong) on every test pair: TRL's model scores prompt+response text truncated from the
  right, as TRL trains it; rewardkit's model scores through rewardkit. TRL's accuracy on only the test pairs
  it would have kept is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rewardkit.data import agreed_split, load_records, shared_data_dir  # noqa: E402
from rewardkit.models import RewardModel, RewardModelScorer  # noqa: E402
from rewardkit.models.reward_model import resolve_model_path  # noqa: E402
from rewardkit.train import TrainConfig, train  # noqa: E402

MAX_LENGTH, BATCH, EPOCHS, LR, SEED = 256, 16, 1, 1e-4, 0


def hh_text(prompt) -> str:
    """The HH transcript form TRL users feed: '\\n\\nHuman: ...\\n\\nAssistant:' (the response follows)."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in prompt) + "\n\nAssistant:"


def trl_run(train_records, test_records, precision: str, workdir: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    path = resolve_model_path("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    rows = [{"prompt": hh_text(r.prompt), "chosen": " " + r.responses[0].content,
             "rejected": " " + r.responses[1].content} for r in train_records]
    args = RewardConfig(output_dir=str(workdir / f"trl-{precision}"), per_device_train_batch_size=BATCH,
                        num_train_epochs=EPOCHS, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.03,
                        max_length=MAX_LENGTH, bf16=precision == "bf16", gradient_checkpointing=False,
                        save_strategy="no", report_to=[], logging_steps=50, seed=SEED, use_cpu=True,
                        dataloader_num_workers=0, disable_tqdm=True,
                        eos_token=tok.sep_token)  # BERT has no EOS; TRL appends one to every text
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    kept = len(trainer.train_dataset)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model = trainer.model.eval()

    def score(text_pairs):
        out = []
        with torch.inference_mode():
            for i in range(0, len(text_pairs), 32):
                enc = tok([p + c for p, c in text_pairs[i:i + 32]], truncation=True, max_length=MAX_LENGTH,
                          padding=True, return_tensors="pt")
                out += model(**enc).logits[:, 0].float().tolist()
        return out

    prompts = [hh_text(r.prompt) for r in test_records]
    chosen = score([(p, " " + r.responses[0].content) for p, r in zip(prompts, test_records)])
    rejected = score([(p, " " + r.responses[1].content) for p, r in zip(prompts, test_records)])
    fits = [max(len(tok(p + " " + r.responses[k].content)["input_ids"]) for k in (0, 1)) <= MAX_LENGTH
            for p, r in zip(prompts, test_records)]
    correct = [c > r for c, r in zip(chosen, rejected)]
    return {"tool": f"TRL {precision}", "pairs": kept * EPOCHS, "seconds": seconds,
            "accuracy_all": sum(correct) / len(correct),
            "accuracy_kept": sum(c for c, f in zip(correct, fits) if f) / max(1, sum(fits)), "n_kept_test": sum(fits)}


def rewardkit_run(data_path: Path, test_records, precision: str, workdir: Path, limit: int | None) -> dict:
    config = TrainConfig(model="minilm", data=[str(data_path)], split="train", output=str(workdir / "rk"),
                         epochs=EPOCHS, lr=LR, batch_size=BATCH, max_length=MAX_LENGTH, seed=SEED,
                         precision=precision, progress=False, warmup_ratio=0.03,
                         max_steps=(limit // BATCH) if limit else None)
    t0 = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - t0
    scorer = RewardModelScorer(RewardModel.from_pretrained(workdir / "rk" / "last"), precision=precision)
    results = scorer.score(test_records)
    correct = [res.rewards[0] > res.rewards[1] for res in results]
    return {"tool": f"rewardkit {scorer.precision}", "pairs": result.records_trained, "seconds": seconds,
            "loop_seconds": result.train_seconds, "accuracy_all": sum(correct) / len(correct),
            "accuracy_kept": None, "n_kept_test": len(correct)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, help="train on the first N train pairs only (a quick look)")
    parser.add_argument("--trl-precision", default="fp32,bf16", help="TRL runs to include: fp32, bf16 or both")
    args = parser.parse_args()
    shared = shared_data_dir()
    data_path = shared / "hh-rlhf" / "harmless-base" / "test.jsonl.gz" if shared else None
    if data_path is None or not data_path.is_file():
        print("needs ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz (or $REWARDKIT_DATA)", file=sys.stderr)
        return 2
    loaded = load_records(data_path)
    train_records, test_records = agreed_split(loaded, "train"), agreed_split(loaded, "test")
    if args.limit:
        train_records = train_records[: args.limit]
    print(f"HH-RLHF harmless-base: {len(train_records)} train pairs, {len(test_records)} test pairs; MiniLM, "
          f"max_length {MAX_LENGTH}, batch {BATCH}, {EPOCHS} epoch, lr {LR}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(rewardkit_run(data_path, test_records, "auto", Path(tmp), args.limit))
        for precision in args.trl_precision.split(","):
            rows.append(trl_run(train_records, test_records, precision.strip(), Path(tmp)))
    ours = rows[0]["pairs"] / rows[0]["seconds"]
    print(f"\n| tool | pairs trained | seconds | pairs/s | rewardkit speed-up | accuracy, all {len(test_records)} "
          f"test pairs | accuracy, test pairs TRL keeps |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r["pairs"] / r["seconds"]
        kept = "" if r["accuracy_kept"] is None else f"{100 * r['accuracy_kept']:.1f}% (n={r['n_kept_test']})"
        print(f"| {r['tool']} | {r['pairs']} | {r['seconds']:.0f} | {rate:.2f} | {ours / rate:.2f}x | "
              f"{100 * r['accuracy_all']:.1f}% | {kept} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
