"""What this machine gives rewardkit: versions, device, what precision="auto" picks and why, native kernels.

`rewardkit doctor` prints it; a bug report should carry it.
"""

from __future__ import annotations

import platform
import sys


def machine_report(refresh_probe: bool = False) -> dict:
    """A JSON-ready description of this machine as rewardkit sees it (runs the precision probe if uncached)."""
    import torch
    import transformers

    import rewardkit
    from rewardkit import kernels, precision

    device = precision.default_device()
    report = {
        "rewardkit": rewardkit.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "transformers": transformers.__version__, "platform": platform.platform(),
        "device": str(device), "cpu": precision.cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    override = precision.auto_override()
    if override is None and device.type == "cpu":
        precision.cpu_probe(refresh=refresh_probe)  # first, so what auto picks below reads this figure
    auto = {"picks": precision.resolve_precision("auto", device)}
    if override is not None:
        auto["because"] = f"{precision.AUTO_ENV}={override}"
    elif device.type == "cuda":
        auto["because"] = "bf16 is supported on this GPU" if auto["picks"] == "bf16" else "no bf16 on this GPU"
    else:
        probe = precision.cpu_probe()
        auto["because"] = (f"bf16 products ran {probe.bf16_speedup:.2f}x fp32 (bf16 needs "
                           f"{precision.BF16_MIN_SPEEDUP}x)")
        auto["probe"] = {"fp32_gflops": probe.fp32_gflops, "bf16_gflops": probe.bf16_gflops,
                         "bf16_speedup": round(probe.bf16_speedup, 3), "measured_at": probe.measured_at}
    report["precision_auto"] = auto
    reason = kernels.unavailable_reason()
    report["native_kernels"] = "used (built on first use)" if reason is None else f"not used: {reason}"
    return report


def format_report(report: dict) -> str:
    lines = [f"rewardkit {report['rewardkit']} · python {report['python']} · torch {report['torch']} · "
             f"transformers {report['transformers']}",
             f"device     {report['device']}" + (f" ({report['gpu']})" if "gpu" in report else ""),
             f"cpu        {report['cpu']} ({report['cpu_capability']}, {report['threads']} threads)"]
    auto = report["precision_auto"]
    lines.append(f"precision  auto = {auto['picks']}: {auto['because']}")
    if "probe" in auto:
        p = auto["probe"]
        lines.append(f"           probe: fp32 {p['fp32_gflops']:.1f} GFLOP/s, bf16 {p['bf16_gflops']:.1f} GFLOP/s "
                     f"(measured {p['measured_at']})")
    lines.append(f"kernels    {report['native_kernels']}")
    return "\n".join(lines)
