"""One attention layer's forward and backward on the CPU: PyTorch's SDPA against the backward rewardkit
recomputes (`rewardkit.attention.RecomputeBackwardAttention`), side by side, at the shapes of a MiniLM and a
SmolLM2 training batch, in each precision. It is the measurement behind which backward `fast_attention` uses.

    .venv/bin/python bench/attention_cpu.py                 # fp32, and bf16 where this CPU's probe finds it fast
    .venv/bin/python bench/attention_cpu.py --dtypes fp32,bf16

A bf16 figure on a CPU without native bf16 (AVX2) measures emulation: seconds per layer, and no trainer would run
there in bf16 (precision=auto does not).
"""

from __future__ import annotations

import argparse
import sys
import time

from common import device_name

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rewardkit.attention import RecomputeBackwardAttention  # noqa: E402
from rewardkit.precision import cpu_probe  # noqa: E402

# (name, rows, heads, keys, head width, mask): a length-grouped MiniLM batch of 16 pairs (32 rows) with
# padding, and SmolLM2 rows of 16 pairs, causal.
SHAPES = [("MiniLM, 32 rows x 12 heads, 128 keys, padding mask", 32, 12, 128, 32, "padding"),
          ("MiniLM, 32 rows x 12 heads, 256 keys, padding mask", 32, 12, 256, 32, "padding"),
          ("SmolLM2, 16 rows x 9 heads, 300 keys, causal", 16, 9, 300, 64, "causal")]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def layer_inputs(rows, heads, keys, width, mask_kind, dtype):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(rows, heads, keys, width, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    mask = None
    if mask_kind == "padding":  # each row keeps its first 60-100% of the keys
        lengths = torch.randint(int(0.6 * keys), keys + 1, (rows,), generator=gen)
        mask = (torch.arange(keys)[None, :] < lengths[:, None])[:, None, None, :].expand(rows, 1, keys, keys)
    return q, k, v, mask, mask_kind == "causal"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", help="comma-separated: fp32, bf16 (default: fp32, and bf16 where fast here)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    probe = cpu_probe()
    dtypes = args.dtypes.split(",") if args.dtypes else ["fp32"] + (["bf16"] if probe.bf16_is_fast else [])
    print(f"{device_name()}; matrix products: fp32 {probe.fp32_gflops:.0f} GFLOP/s, bf16 {probe.bf16_gflops:.0f} "
          f"GFLOP/s; {torch.get_num_threads()} threads; best of {args.repeats}, forward + backward of one layer\n")
    print("| shape | precision | SDPA ms | rewardkit recompute backward ms | SDPA speed-up |")
    print("|---|---|---|---|---|")
    for name, rows, heads, keys, width, mask_kind in SHAPES:
        for dtype_name in dtypes:
            q, k, v, mask, causal = layer_inputs(rows, heads, keys, width, mask_kind, DTYPES[dtype_name.strip()])

            def sdpa():
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).float().sum().backward()

            def recompute():
                RecomputeBackwardAttention.apply(q, k, v, mask, causal, None).float().sum().backward()

            t_sdpa, t_rk = best_seconds(sdpa, args.repeats), best_seconds(recompute, args.repeats)
            print(f"| {name} | {dtype_name} | {1e3 * t_sdpa:.1f} | {1e3 * t_rk:.1f} | {t_rk / t_sdpa:.2f}x |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
