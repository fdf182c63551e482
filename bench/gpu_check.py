"""The GPU paths in one short script: precision choice, score equivalence, training, and throughput.

Run on a machine with a CUDA GPU (the project's tests cover the CPU paths):

    PYTHONPATH=src python bench/gpu_check.py --tokenizer DIR_WITH_MINILM_TOKENIZER --out OUTDIR

Checks (each prints PASS/FAIL and goes into OUTDIR/gpu_check.json):
1. precision "auto" resolves to bf16 on the GPU;
2. a tiny Llama-style reward model scores the same on GPU fp32 as on CPU fp32, left and right padding agree,
   and bf16 autocast stays close (the output layer runs in fp32);
3. training on the GPU (bf16) lowers the loss, and an interrupted run resumed from its checkpoint follows the
   uninterrupted loss trajectory;
   and prefix-shared (packed) scores equal padded ones on the GPU;
4. throughput of a MiniLM-architecture encoder (random weights, the real tokenizer; the weights are not needed
   for speed): training pairs/s and scoring sequences/s, fp32 vs bf16, on the synthetic task.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rewardkit.data import write_canonical_jsonl  # noqa: E402
from rewardkit.data.record import Response  # noqa: E402
from rewardkit.data.synthetic import synthetic_splits  # noqa: E402
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem  # noqa: E402
from rewardkit.precision import resolve_precision  # noqa: E402
from rewardkit.train import load_config, train  # noqa: E402
from tiny import save_causal_backbone, toy_pairs, write_jsonl  # noqa: E402

results: dict = {}


def check(name: str, ok: bool, **info) -> None:
    results[name] = {"pass": bool(ok), **info}
    print(f"{'PASS' if ok else 'FAIL'} {name} {json.dumps(info)}", flush=True)


def flat(results_):
    return [x for r in results_ for x in r.rewards]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, help="directory with MiniLM's tokenizer files")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU with small sizes: checks the script")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("needs a CUDA GPU (or --dry-run)", file=sys.stderr)
        return 2
    gpu = torch.device("cpu" if args.dry_run else "cuda")
    sync = torch.cuda.synchronize if gpu.type == "cuda" else (lambda: None)
    results["device"] = {"name": torch.cuda.get_device_name() if gpu.type == "cuda" else "cpu (dry run)",
                         "torch": torch.__version__}
    print(results["device"], flush=True)
    work = Path(tempfile.mkdtemp())

    # 1. precision
    check("auto_precision_is_bf16", resolve_precision("auto", gpu) == "bf16" or args.dry_run)

    # 2. scores
    backbone = save_causal_backbone(work / "llama", "llama", add_bos=True)
    items = [ScoreItem([{"role": "user", "content": f"Question {i}: tell me about the sea."}],
                       [Response("Thank you! " * (i % 4 + 1)), Response("no"), Response("The sea is salty.")])
             for i in range(16)]
    cpu = flat(RewardModelScorer(RewardModel.from_pretrained(backbone), device="cpu", precision="fp32").score(items))
    model = RewardModel.from_pretrained(backbone)
    on_gpu = flat(RewardModelScorer(model, device=gpu, precision="fp32").score(items))
    check("gpu_fp32_equals_cpu_fp32", max(abs(a - b) for a, b in zip(cpu, on_gpu)) < 1e-4,
          max_abs_diff=max(abs(a - b) for a, b in zip(cpu, on_gpu)))
    model.meta.padding_side = "left"
    left = flat(RewardModelScorer(model, device=gpu, precision="fp32").score(items))
    check("gpu_left_padding_equals_right", max(abs(a - b) for a, b in zip(left, on_gpu)) < 1e-4,
          max_abs_diff=max(abs(a - b) for a, b in zip(left, on_gpu)))
    model.meta.padding_side = "right"
    packed = RewardModelScorer(model, device=gpu, precision="fp32")
    padded = flat(RewardModelScorer(model, device=gpu, precision="fp32", share_prefix=False).score(items))
    check("gpu_prefix_sharing_equals_padded", max(abs(a - b) for a, b in zip(padded, on_gpu)) < 1e-4,
          plan=packed.describe()["batch_plan"], max_abs_diff=max(abs(a - b) for a, b in zip(padded, on_gpu)))
    bf16 = flat(RewardModelScorer(model, device=gpu, precision="bf16").score(items))
    spread = max(on_gpu) - min(on_gpu)
    check("gpu_bf16_close_to_fp32", max(abs(a - b) for a, b in zip(bf16, on_gpu)) < 0.05 * max(spread, 1e-3),
          max_abs_diff=max(abs(a - b) for a, b in zip(bf16, on_gpu)), reward_spread=spread,
          ties_bf16=len(bf16) - len(set(bf16)))

    # 3. training and resume
    data = write_jsonl(work / "toy.jsonl", toy_pairs(64))
    settings = ["lr=2e-3", "batch_size=8", "progress=false", "warmup_ratio=0", "epochs=2", "save_every=2",
                "eval_every=100"]
    full = train(load_config(None, settings, model=str(backbone), data=[str(data)], output=str(work / "full")))
    losses = [h["loss"] for h in full.history]
    check("gpu_training_lowers_loss", losses[-1] < losses[0] - 0.1, first=losses[0], last=losses[-1],
          precision=resolve_precision("auto", gpu))

    def stop(step, _):
        if step == 7:
            raise KeyboardInterrupt

    cut_cfg = load_config(None, settings, model=str(backbone), data=[str(data)], output=str(work / "cut"))
    try:
        train(cut_cfg, on_step=stop)
    except KeyboardInterrupt:
        pass
    train(cut_cfg)
    resumed = [json.loads(x)["loss"] for x in (work / "cut" / "metrics.jsonl").read_text().splitlines()]
    diff = max(abs(a - b) for a, b in zip(resumed, losses))
    check("gpu_resume_follows_trajectory", len(resumed) == len(losses) and diff < 1e-3, max_abs_diff=diff)

    # 4. throughput: MiniLM architecture, random weights, real tokenizer, synthetic task
    from transformers import AutoConfig, AutoTokenizer, BertModel

    mini = work / "minilm_arch"
    torch.manual_seed(0)
    BertModel(AutoConfig.from_pretrained(args.tokenizer)).save_pretrained(mini)
    AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(mini)
    train_records, test_records = synthetic_splits(*((96, 32) if args.dry_run else (3200, 800)), seed=0)
    write_canonical_jsonl(train_records, work / "syn_train.jsonl")
    throughput = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(None, ["progress=false", "eval_every=100", f"precision={precision}", "batch_size=32",
                                 "max_length=256"], model=str(mini), data=[str(work / "syn_train.jsonl")],
                          output=str(work / f"tp_{precision}"))
        t0 = time.perf_counter()
        res = train(cfg)
        sync()
        wall = time.perf_counter() - t0
        scorer = RewardModelScorer(RewardModel.from_pretrained(work / f"tp_{precision}" / "last"), device=gpu,
                                   precision=precision)
        scorer.score(test_records[:64])
        sync()
        t1 = time.perf_counter()
        scorer.score(test_records)
        sync()
        score_s = time.perf_counter() - t1
        throughput[precision] = {"train_pairs_per_s_loop": res.records_trained / res.train_seconds,
                                 "train_pairs_per_s_wall": res.records_trained / wall,
                                 "score_sequences_per_s": 2 * len(test_records) / score_s}
        print(precision, throughput[precision], flush=True)
    results["throughput_minilm_arch"] = throughput
    results["bf16_over_fp32_train"] = (throughput["bf16"]["train_pairs_per_s_loop"]
                                       / throughput["fp32"]["train_pairs_per_s_loop"])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(results, indent=2))
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("pass") is False]
    print("FAILED:" if failed else "ALL PASSED", failed, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
