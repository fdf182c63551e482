"""The RL runs' report: rl.json, rl.md and rl_curves.png (gold and proxy against d = sqrt(KL), one panel per
proxy objective, one line per KL penalty, the gold fit R_RL(d) = d(α − β log d) drawn). Written atomically
from the report dict alone (rewardkit.overopt.rl.rl_study)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.eval.plotting import new_figure, save_png
from rewardkit.io import atomic_write_json, atomic_write_text
from rewardkit.overopt.bon import Fit
from rewardkit.overopt.report import CAVEAT, fmt_num


def write_rl_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "rl.json", "markdown": out / "rl.md", "curves": out / "rl_curves.png"}
    atomic_write_json(paths["json"], report)
    plot_rl_curves(report, paths["curves"])
    atomic_write_text(paths["markdown"], render_rl_markdown(report))
    return paths


def render_rl_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# Over-optimization: GRPO against each proxy", "",
             f"Gold: `{report['gold_model']}`. Policy: `{report['policy']}`, trained with TRL's GRPO for "
             f"{s['steps']} steps ({s['prompts_per_step']} prompts × {s['generations']} completions a step, "
             f"lr {s['lr']:g}, up to {s['max_new_tokens']} new tokens). Every {s['eval_every']} steps the policy "
             f"samples {s['eval_samples']} responses for each of {s['eval_prompts']} held-out prompts (the same "
             "seed each time); gold and proxy are their mean scores minus the step-0 values, and "
             "d = sqrt(KL(π ‖ π₀)), KL the mean over the samples of the summed token log-ratios.", "",
             f"> {CAVEAT}", "", "![RL curves](rl_curves.png)", "",
             "## Runs", "",
             "Peak gold: the highest measured gold gain, at its step and d. d* and R*: the peak of the fit "
             "R(d) = d(α − β log d) (— where it never turns or has under 3 points; * beyond the largest d "
             "measured). Final: the last measurement.", "",
             "| objective | KL penalty β | peak gold | at step | d | d* | R* | final gold | final proxy | final d | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        fit, peak, final = run["fit"], run["peak"], run["final"]
        star = "*" if fit and fit["extrapolated"] else ""
        lines.append(f"| {run['objective']} | {run['beta']:g} | {fmt_num(peak['gold'])} | {peak['step']} | "
                     f"{fmt_num(peak['d'])} | {fmt_num(fit and fit['d_star'])}{star} | {fmt_num(fit and fit['r_star'])}{star} | "
                     f"{fmt_num(final['gold'])} | {fmt_num(final['proxy'])} | {fmt_num(final['d'])} | "
                     f"{run['seconds'] / 60:.1f} |")
    lines += ["", "## Curves", ""]
    for run in report["runs"]:
        lines += [f"### {run['objective']}, β = {run['beta']:g}", "",
                  "| step | KL | d | gold | ± se | proxy | ± se | tokens |", "|---|---|---|---|---|---|---|---|"]
        for j, step in enumerate(run["step"]):
            lines.append(f"| {step} | {fmt_num(run['kl'][j])} | {fmt_num(run['d'][j])} | {fmt_num(run['gold'][j])} | "
                         f"{fmt_num(run['gold_se'][j])} | {fmt_num(run['proxy'][j])} | {fmt_num(run['proxy_se'][j])} | "
                         f"{fmt_num(run['tokens'][j], 1)} |")
        lines.append("")
    return "\n".join(lines)


def plot_rl_curves(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per proxy objective: gold (solid, its fit dashed) and proxy (dotted) against d, a colour per
    KL penalty."""
    proxies = list(dict.fromkeys(run["objective"] for run in report["runs"]))
    cols = min(3, len(proxies))
    rows = math.ceil(len(proxies) / cols)
    fig = new_figure(4.5 * cols, 3.6 * rows)
    for k, proxy in enumerate(proxies):
        ax = fig.add_subplot(rows, cols, k + 1)
        for j, run in enumerate(r for r in report["runs"] if r["objective"] == proxy):
            colour = f"C{j}"
            d = np.asarray(run["d"])
            ax.plot(d, run["gold"], "o-", color=colour, label=f"gold, β={run['beta']:g}")
            ax.plot(d, run["proxy"], "s:", color=colour, alpha=0.7, label=f"proxy, β={run['beta']:g}")
            if run["fit"] is not None:
                f = run["fit"]
                grid = np.linspace(0, max(d.max(), 1e-6), 100)
                fit = Fit("rl", f["alpha"], f["beta"], f["d_star"], f["r_star"], f["rmse"], f["extrapolated"])
                ax.plot(grid, fit(grid), "--", color=colour, alpha=0.5)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xlabel("d = sqrt(KL)")
        ax.set_ylabel("gain over step 0")
        ax.set_title(proxy, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
