"""Where a small reward model's training step goes on a GPU: host (Python) time vs device time.

At batch 16 a SmolLM2-sized model leaves an H100 mostly idle (bench/gpu_suite.sh measured ~1% of its bf16
peak), so the step time is host work: plan building, module calls, kernel launches, syncs. This prints, per
precision, the seconds per step, the share of it the GPU was busy (summed kernel time), the host functions
that take the time (cProfile, cumulative) and the top kernels, so the next change aims at the right thing.

    PYTHONPATH=src python bench/gpu_profile.py --model /tmp/smollm2 [--pairs 320] [--precision bf16,fp32]

Runs on the CPU too (then "GPU busy" is not measured), which is how the script itself is checked.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from common import bench_device, harmless_path, synchronize

import torch  # noqa: E402

from rewardkit.data import agreed_split, load_records, write_canonical_jsonl  # noqa: E402
from rewardkit.models import RewardModel  # noqa: E402
from rewardkit.train import TrainConfig, train  # noqa: E402


def config(model: str, data: Path, out: Path, precision: str, steps: int) -> TrainConfig:
    return TrainConfig(model=model, data=[str(data)], output=str(out), epochs=1, lr=1e-4, batch_size=16,
                       max_length=256, seed=0, precision=precision, progress=False, warmup_ratio=0.03,
                       max_steps=steps)


def host_profile(cfg: TrainConfig, lines: int) -> tuple[float, str]:
    """train() under cProfile: (loop seconds, the top functions by cumulative time)."""
    profile = cProfile.Profile()
    profile.enable()
    result = train(cfg)
    profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(r"rewardkit|transformers/models|accelerate/accelerator|torch/optim"
                                               r"|functional_call|autograd/__init__|_tensor.py", lines)
    keep = [ln for ln in text.getvalue().splitlines() if ln.strip() and ("/" in ln or "ncalls" in ln)]
    return result.train_seconds, "\n".join(ln.replace(str(Path.cwd()) + "/", "") for ln in keep)


def device_profile(cfg: TrainConfig, device: torch.device) -> str:
    """A few steps under torch.profiler: the share of wall time the GPU spent in kernels, and the top ops."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        result = train(cfg)
        synchronize(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    lines = [f"train() {wall:.2f} s wall, {result.train_seconds:.2f} s of steps ({result.steps} steps)"]
    if device.type == "cuda":
        kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                             "cudaLaunchKernelExC"))
        lines.append(f"GPU busy {kernel_us / 1e6:.2f} s = {100 * kernel_us / 1e6 / result.train_seconds:.0f}% of "
                     f"the steps; {launches} kernel launches ({launches / max(result.steps, 1):.0f} a step)")
        lines.append(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60))
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=60))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="backbone directory or packaged name")
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--precision", default="bf16,fp32")
    parser.add_argument("--lines", type=int, default=28, help="host functions to print")
    args = parser.parse_args()
    device = bench_device()
    records = agreed_split(load_records(harmless_path()), "train")
    text = RewardModel.from_pretrained(args.model, max_length=256).text
    fitting = [r for r in records if all(text.encode(r.prompt, x.content).truncated == 0 for x in r.responses)]
    steps = args.pairs // 16
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "train.jsonl"
        write_canonical_jsonl(fitting[: args.pairs], data)
        train(config(args.model, data, work / "warm", "bf16", 2))  # imports, CUDA context, kernel caches
        for precision in args.precision.split(","):
            print(f"\n===== {precision} on {device}: {steps} steps of 16 pairs =====", flush=True)
            seconds, host = host_profile(config(args.model, data, work / f"host-{precision}", precision, steps),
                                         args.lines)
            print(f"steps under cProfile: {seconds:.2f} s ({1000 * seconds / steps:.0f} ms a step)\n{host}")
            print(device_profile(config(args.model, data, work / f"dev-{precision}", precision, steps), device),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
