"""Training throughput and accuracy: rewardkit vs TRL's RewardTrainer, side by side in one run.

Same backbone, same data (HH-RLHF harmless-base, the agreed split: first 80% of the file's rows train, the
rest test), same max length, batch, epochs, learning rate, schedule, seed and initial head.

    .venv/bin/pip install "trl==1.16.0"      # bench-only dependency (pip install -e ".[bench]")
    .venv/bin/python bench/train_vs_trl.py --model minilm            # the encoder, all 1,850 train pairs
    .venv/bin/python bench/train_vs_trl.py --model smollm2 --limit 256   # the causal backbone

Counting is honest on both sides:
- both get the same train pairs: those whose sequences fit in max_length (TRL silently drops the others;
  rewardkit would keep them, truncating the prompt from the left). Counted are the pairs each really trained on.
- throughput is pairs per second of the training call (TRL: trainer.train(), after its tokenizing; rewardkit:
  train(), which also loads the model, tokenizes, plans batches and writes checkpoints); rewardkit's training
  steps alone are printed too.
- accuracy is strict (ties wrong) on every test pair: TRL's model scores its own text form truncated from the
  right, as TRL trains it; rewardkit's model scores through rewardkit. TRL's accuracy on only the test pairs
  it would have kept is printed too.
- utilisation is rewardkit's model FLOPs per second (6 x non-embedding parameters x real tokens computed,
  attention scores left out) over the matrix-product peak (bf16 or fp32, whichever is faster here) measured
  on this machine in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (bench_device, device_name, harmless_path, matmul_peak_tflops, synchronize,
                    training_flops_per_token)

import torch  # noqa: E402

from rewardkit.data import agreed_split, load_records, write_canonical_jsonl  # noqa: E402
from rewardkit.models import RewardModel, RewardModelScorer  # noqa: E402
from rewardkit.precision import resolve_precision  # noqa: E402
from rewardkit.train import TrainConfig, train  # noqa: E402

MAX_LENGTH, BATCH, EPOCHS, LR, SEED = 256, 16, 1, 1e-4, 0


def hh_text(prompt) -> str:
    """The HH transcript form TRL users feed: '\\n\\nHuman: ...\\n\\nAssistant:' (the response follows)."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in prompt) + "\n\nAssistant:"


def trl_run(model_name: str, train_records, test_records, precision: str, workdir: Path) -> dict:
    """TRL's RewardTrainer on the same backbone and initial head (rewardkit loads both, then hands TRL the
    plain transformers model). The encoder gets HH's transcript text; the causal chat model gets
    conversational rows, which TRL renders with the model's chat template."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    start = RewardModel.from_pretrained(model_name, max_length=MAX_LENGTH, seed=SEED)
    path = start.save_pretrained(workdir / "trl-start")  # a plain checkpoint (SmolLM2 ships as GGUF)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    chat = start.meta.text_mode == "chat"
    del start
    if chat:
        rows = [{"prompt": r.prompt, "chosen": [{"role": "assistant", "content": r.responses[0].content}],
                 "rejected": [{"role": "assistant", "content": r.responses[1].content}]} for r in train_records]
    else:
        rows = [{"prompt": hh_text(r.prompt), "chosen": " " + r.responses[0].content,
                 "rejected": " " + r.responses[1].content} for r in train_records]
    args = RewardConfig(output_dir=str(workdir / f"trl-{precision}"), per_device_train_batch_size=BATCH,
                        num_train_epochs=EPOCHS, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.03,
                        max_length=MAX_LENGTH, bf16=precision == "bf16", gradient_checkpointing=False,
                        save_strategy="no", report_to=[], logging_steps=50, seed=SEED,
                        use_cpu=bench_device().type == "cpu",
                        dataloader_num_workers=0, disable_tqdm=True,
                        **({} if chat else {"eos_token": tok.sep_token}))  # BERT has no EOS; TRL appends one
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    kept = len(trainer.train_dataset)
    t0 = time.perf_counter()
    trainer.train()
    synchronize(model.device)
    seconds = time.perf_counter() - t0
    model = trainer.model.eval()

    def text(prompt, response: str) -> str:
        """The text TRL trained on: the chat template's rendering, or HH's transcript form."""
        if chat:
            return tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
        return hh_text(prompt) + " " + response

    def score(texts):
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 32):
                enc = tok(texts[i:i + 32], truncation=True, max_length=MAX_LENGTH, padding=True,
                          return_tensors="pt", add_special_tokens=not chat).to(model.device)
                out += model(**enc).logits[:, 0].float().tolist()
        return out

    texts = [[text(r.prompt, resp.content) for resp in r.responses] for r in test_records]
    chosen, rejected = score([t[0] for t in texts]), score([t[1] for t in texts])
    fits = [max(len(tok(x, add_special_tokens=not chat)["input_ids"]) for x in t) <= MAX_LENGTH for t in texts]
    correct = [c > r for c, r in zip(chosen, rejected)]
    return {"tool": f"TRL {precision}", "pairs": kept * EPOCHS, "seconds": seconds,
            "accuracy_all": sum(correct) / len(correct),
            "accuracy_kept": sum(c for c, f in zip(correct, fits) if f) / max(1, sum(fits)), "n_kept_test": sum(fits)}


def rewardkit_run(model_name: str, train_records, test_records, workdir: Path, precision: str = "auto") -> dict:
    data = workdir / "train.jsonl"
    write_canonical_jsonl(train_records, data)  # exactly the pairs TRL is given
    output = workdir / f"rk-{precision}"
    config = TrainConfig(model=model_name, data=[str(data)], output=str(output),
                         epochs=EPOCHS, lr=LR, batch_size=BATCH, max_length=MAX_LENGTH, seed=SEED,
                         precision=precision, progress=False, warmup_ratio=0.03)
    t0 = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - t0
    scorer = RewardModelScorer(RewardModel.from_pretrained(output / "last"), precision=precision)
    results = scorer.score(test_records)
    correct = [res.rewards[0] > res.rewards[1] for res in results]
    fits = [not any(res.truncated) for res in results]  # the test pairs that fit in max_length
    tokens = sum(h["tokens"] for h in result.history)
    flops = training_flops_per_token(scorer.model.hf_model) * tokens / result.train_seconds
    return {"tool": f"rewardkit {scorer.precision}, {scorer.describe()['batch_plan']}", "pairs": result.records_trained,
            "seconds": seconds, "loop_seconds": result.train_seconds, "accuracy_all": sum(correct) / len(correct),
            "accuracy_kept": sum(c for c, f in zip(correct, fits) if f) / max(1, sum(fits)), "n_kept_test": sum(fits),
            "tokens": tokens, "model_tflops": flops / 1e12}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="minilm", help="backbone: minilm, smollm2, or a local path")
    parser.add_argument("--limit", type=int, help="train on the first N train pairs only")
    parser.add_argument("--trl-precision", default="fp32,bf16", help="TRL runs to include: fp32, bf16 or both")
    parser.add_argument("--precision", default="auto",
                        help="rewardkit runs to include: auto, fp32, bf16, comma-separated (the first is the baseline "
                             "of the speed-up column)")
    args = parser.parse_args()
    data_path = harmless_path()
    loaded = load_records(data_path)
    train_records, test_records = agreed_split(loaded, "train"), agreed_split(loaded, "test")
    # TRL drops every pair with a sequence over max_length; both tools get only the pairs that fit, so they
    # train on the same pairs (rewardkit would otherwise also train on the longer pairs, truncated).
    text = RewardModel.from_pretrained(args.model, max_length=MAX_LENGTH).text
    fitting = [r for r in train_records
               if all(text.encode(r.prompt, resp.content).truncated == 0 for resp in r.responses)]
    print(f"{len(fitting)} of {len(train_records)} train pairs fit in {MAX_LENGTH} tokens")
    train_records = fitting[: args.limit] if args.limit else fitting
    print(f"HH-RLHF harmless-base: {len(train_records)} train pairs, {len(test_records)} test pairs; {args.model}, "
          f"max_length {MAX_LENGTH}, batch {BATCH}, {EPOCHS} epoch, lr {LR}, {device_name()}")
    device = bench_device()
    peaks = {dtype: matmul_peak_tflops(dtype, device=device) for dtype in (torch.bfloat16, torch.float32)}
    print(f"measured matrix-product peak: bf16 {peaks[torch.bfloat16]:.3f} TFLOP/s, "
          f"fp32 {peaks[torch.float32]:.3f}; precision=auto here: {resolve_precision('auto', device)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision.split(","):
            rows.append(rewardkit_run(args.model, train_records, test_records, Path(tmp), precision.strip()))
            print(f"rewardkit: {rows[-1]}", flush=True)
        for precision in args.trl_precision.split(","):
            rows.append(trl_run(args.model, train_records, test_records, precision.strip(), Path(tmp)))
            print(f"TRL: {rows[-1]}", flush=True)
    fastest = max(peaks, key=peaks.get)  # the ceiling: this machine's faster matrix product
    # measured again after: this machine's speed drifts
    peak = max(peaks[fastest], matmul_peak_tflops(fastest, device=device))
    peak_name = "bf16" if fastest == torch.bfloat16 else "fp32"
    ours = rows[0]["pairs"] / rows[0]["seconds"]
    print(f"\n| tool | pairs trained | seconds | pairs/s | rewardkit speed-up | accuracy, all {len(test_records)} "
          f"test pairs | accuracy, test pairs that fit max_length |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r["pairs"] / r["seconds"]
        kept = "" if r["accuracy_kept"] is None else f"{100 * r['accuracy_kept']:.1f}% (n={r['n_kept_test']})"
        print(f"| {r['tool']} | {r['pairs']} | {r['seconds']:.1f} | {rate:.2f} | {ours / rate:.2f}x | "
              f"{100 * r['accuracy_all']:.1f}% | {kept} |")
    print(f"\nrewardkit's seconds are the whole train() call: loading the model, tokenizing, planning and "
          f"checkpoints included. Its training steps alone, and utilisation (the {peak_name} peak, this machine's "
          "faster product, is the higher of the "
          f"measurements before and after, {peak:.2f} TFLOP/s):")
    for rk in (r for r in rows if "loop_seconds" in r):
        print(f"- {rk['tool']}: {rk['loop_seconds']:.1f} s of steps ({rk['pairs'] / rk['loop_seconds']:.2f} pairs/s), "
              f"{rk['tokens']} tokens, {rk['model_tflops']:.3f} model TFLOP/s = "
              f"{100 * rk['model_tflops'] / peak:.0f}% of the {peak_name} peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
