"""Best-of-N scoring throughput: rewardkit vs a plain transformers loop, side by side in one run.

Each prompt of HH-RLHF harmless-base (test split) gets N candidate responses, as a best-of-N step of an RL
loop would score them. There is no policy to sample from offline, so the candidates are real HH responses
drawn (seeded) from the whole file: real text with real lengths, which is what the timing depends on.

    .venv/bin/python bench/best_of_n.py [--model smollm2] [--prompts 32] [--n 16]

Compared, on the same model (the backbone with its seeded head, saved once and loaded by each side):
- plain transformers: AutoModelForSequenceClassification, each (prompt, response) rendered with the chat
  template, tokenized and scored in batches of 32, padded, fp32 — and the same loop under bf16 autocast;
- rewardkit: RewardModelScorer with its defaults (the prompt's N responses share the prompt's tokens in one
  packed row, token-budget batches, bf16 where the CPU has AMX).
Throughput counts every step from text to scores. The scores of each side are compared with plain fp32 (max
absolute difference), so a speed-up cannot hide a wrong answer.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from common import bench_device, device_name, harmless_path, synchronize

import torch  # noqa: E402

from rewardkit.data import agreed_split, load_records  # noqa: E402
from rewardkit.data.record import Response  # noqa: E402
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem  # noqa: E402

PLAIN_BATCH = 32


def best_of_n_items(n_prompts: int, n: int, seed: int = 0) -> list[ScoreItem]:
    records = load_records(harmless_path())
    pool = [resp.content for r in records for resp in r.responses if resp.content.strip()]
    rng = random.Random(seed)
    prompts = agreed_split(records, "test")[:n_prompts]
    return [ScoreItem(r.prompt, [Response(c) for c in rng.sample(pool, n)]) for r in prompts]


def plain_loop(path: Path, items: list[ScoreItem], max_length: int, bf16: bool) -> tuple[list[float], float]:
    """What users write today: render, tokenize, pad, score, batch after batch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = bench_device()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
    tok.truncation_side = "left"  # keep the response end, where the score is read
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model(**tok(["warm-up"], return_tensors="pt").to(device))  # outside the timing, as rewardkit gets one
    synchronize(device)
    t0 = time.perf_counter()
    # The rendering ends "<|im_end|>\n"; without the newline the score is read at the end-of-turn token, as
    # rewardkit reads it, so the two sides' scores can be compared.
    texts = [tok.apply_chat_template(it.prompt + [{"role": "assistant", "content": r.content}],
                                     tokenize=False).rstrip("\n") for it in items for r in it.responses]
    scores = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(texts), PLAIN_BATCH):
            enc = tok(texts[i:i + PLAIN_BATCH], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt", add_special_tokens=False).to(device)
            scores += model(**enc).logits[:, 0].float().tolist()
    synchronize(device)
    return scores, time.perf_counter() - t0


def rewardkit_scores(path: Path, items: list[ScoreItem], precision: str) -> tuple[list[float], float, str]:
    scorer = RewardModelScorer(RewardModel.from_pretrained(path), precision=precision, device=bench_device())
    scorer.score(items[:1])  # warm-up outside the timing, as the plain loop gets one
    synchronize(scorer.device)
    t0 = time.perf_counter()
    results = scorer.score(items)
    synchronize(scorer.device)
    seconds = time.perf_counter() - t0
    d = scorer.describe()
    return [x for res in results for x in res.rewards], seconds, f"{d['precision']}, {d['batch_plan']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="a causal backbone: smollm2 or a local path")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=16, help="responses per prompt")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    items = best_of_n_items(args.prompts, args.n)
    n_seq = sum(len(it.responses) for it in items)
    with tempfile.TemporaryDirectory() as tmp:
        path = RewardModel.from_pretrained(args.model, max_length=args.max_length).save_pretrained(Path(tmp) / "rm")
        rows = []
        reference, seconds = plain_loop(path, items, args.max_length, bf16=False)
        rows.append(("plain transformers, fp32, batch 32 padded", reference, seconds))
        scores, seconds = plain_loop(path, items, args.max_length, bf16=True)
        rows.append(("plain transformers, bf16 autocast, batch 32 padded", scores, seconds))
        for precision in ("auto", "fp32"):
            scores, seconds, how = rewardkit_scores(path, items, precision)
            rows.append((f"rewardkit ({how})", scores, seconds))
    print(f"best-of-{args.n}: {len(items)} HH-RLHF harmless test prompts, {n_seq} (prompt, response) sequences, "
          f"{args.model}, max_length {args.max_length}, {device_name()}\n")
    print("| scorer | seconds | sequences/s | speed-up vs plain fp32 | max abs score diff vs plain fp32 |")
    print("|---|---|---|---|---|")
    base = rows[0][2]
    for name, scores, seconds in rows:
        diff = max(abs(a - b) for a, b in zip(scores, reference))
        print(f"| {name} | {seconds:.1f} | {n_seq / seconds:.1f} | {base / seconds:.2f}x | {diff:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
