"""The over-optimization study's report: report.json, report.md, bon_curves.png (gold and proxy against d, one
panel per objective, the fit drawn) and mitigation.png (every objective's gold curve on one axis). Written
atomically from the report dict alone, so a report can be re-rendered without rescoring."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.eval.compare import snippet
from rewardkit.eval.plotting import new_figure, save_png
from rewardkit.io import atomic_write_json, atomic_write_text
from rewardkit.overopt.bon import Fit

CAVEAT = ("The gold model stands in for human judgement. It is itself a reward model, so this study measures "
          "how far the proxy can be pushed before it disagrees with the gold model, not with people. A gold "
          "model not much larger or better than the proxies shares their blind spots, which hides hacks that "
          "fool both, so a curve that does not turn is weaker evidence than one that does.")


def write_overopt_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "curves": out / "bon_curves.png",
             "mitigation": out / "mitigation.png"}
    atomic_write_json(paths["json"], report)
    plot_curves(report, paths["curves"])
    plot_mitigation(report, paths["mitigation"])
    atomic_write_text(paths["markdown"], render_markdown(report))
    return paths


def fmt_num(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    pool = report["pool"]
    source = f" from `{pool['source']}`" if pool.get("source") else ""
    lines = ["# Over-optimization: best-of-n against the gold model", "",
             f"Gold: `{report.get('gold_model', 'gold')}`. Pool: {pool['prompts']} prompts, {pool['samples']} "
             f"samples (at least {pool['smallest']} per prompt){source}. "
             f"Best-of-n for n = {', '.join(map(str, report['n']))}, from one pool with the unbiased estimator; "
             f"d = sqrt(KL_bon(n)); 95% intervals from {report['resamples']} bootstrap resamples of the prompts. "
             "Gold and proxy scores are normalised so that R(0) = 0; the gap is in each model's standard "
             "deviations over the pool.", "", f"> {CAVEAT}", "", "![best-of-n curves](bon_curves.png)", "",
             "## Mitigation", "",
             "Peak gold: the highest expected gold over the n measured, with its n and d. d* and R*: the peak of "
             "the fit R(d) = d(α − βd) (— where the fitted curve never turns; * where the peak lies beyond the "
             "largest n).", "",
             "| objective | peak gold | at n | d | d* | R* | gold at n max | gap at n max |", "|---|---|---|---|---|---|---|---|"]
    for row, (name, o) in zip(report["mitigation"], report["objectives"].items()):
        star = "*" if o["fit"]["extrapolated"] else ""
        lines.append(f"| {row['objective']} | {fmt_num(row['peak_gold'])} ({fmt_num(o['peak']['gold_lo'])}, "
                     f"{fmt_num(o['peak']['gold_hi'])}) | {row['peak_n']} | {fmt_num(row['peak_d'])} | "
                     f"{fmt_num(row['d_star'])}{star} | {fmt_num(row['r_star'])}{star} | {fmt_num(row['gold_at_n_max'])} | "
                     f"{fmt_num(row['gap_at_n_max'], 2)} |")
    lines += ["", "![gold curves](mitigation.png)", "", "## Fits", "",
              "Over-optimized: the gold score falls from its peak to the largest n by more than chance (the "
              "95% interval of the drop, paired over prompts, lies above zero).", "",
              "| objective | α | β | rmse | drop from peak to n max | over-optimized |", "|---|---|---|---|---|---|"]
    for name, o in report["objectives"].items():
        f, drop = o["fit"], o["drop"]
        verdict = ("yes" if o["overoptimized"] else "no: gold peaks at the largest n" if o["peak"]["n"] == report["n"][-1]
                   else "not shown: the drop is within noise")
        lines.append(f"| {name} | {fmt_num(f['alpha'], 4)} | {fmt_num(f['beta'], 4)} | {fmt_num(f['rmse'], 4)} | "
                     f"{fmt_num(drop['value'])} ({fmt_num(drop['lo'])}, {fmt_num(drop['hi'])}) | {verdict} |")
    lines += ["", "## Curves", ""]
    header = "| n | d | " + " | ".join(f"{name} gold | {name} proxy" for name in report["objectives"]) + " |"
    lines += [header, "|" + "---|" * (2 + 2 * len(report["objectives"]))]
    for j, n in enumerate(report["n"]):
        cells = [f"{fmt_num(o['gold'][j])} | {fmt_num(o['proxy'][j])}" for o in report["objectives"].values()]
        lines.append(f"| {n} | {fmt_num(report['d'][j])} | " + " | ".join(cells) + " |")
    hacks = report.get("hacks") or []
    if hacks:
        lines += ["", f"## What `{hacks[0]['objective']}` picks and the gold dislikes", "",
                  "Among the samples in the proxy's top 5% of the pool, those with the lowest gold score (scores "
                  "in standard deviations over the pool).", ""]
        for h in hacks:
            lines += [f"- **{h['prompt_id']}** #{h['sample']}: proxy {h['proxy_std']:+.2f}, gold "
                      f"{h['gold_std']:+.2f}. Prompt: {snippet(h['prompt'], 120)}", f"  > {snippet(h['text'], 400)}"]
    return "\n".join(lines) + "\n"


def _fit_of(o: dict[str, Any]) -> Fit:
    f = o["fit"]
    return Fit("bon", f["alpha"], f["beta"], f["d_star"], f["r_star"], f["rmse"], f["extrapolated"])


def plot_curves(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per objective: gold (with its interval and the fit) and proxy against d."""
    names = list(report["objectives"])
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(4.5 * cols, 3.6 * rows)
    d = np.asarray(report["d"])
    grid = np.linspace(0, d.max(), 100)
    for k, name in enumerate(names):
        o = report["objectives"][name]
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.fill_between(d, o["gold_lo"], o["gold_hi"], color="tab:orange", alpha=0.25)
        ax.plot(d, o["gold"], "o-", color="tab:orange", label="gold")
        ax.plot(grid, _fit_of(o)(grid), "--", color="tab:orange", alpha=0.7, label="gold fit d(α − βd)")
        twin = ax.twinx()
        twin.plot(d, o["proxy"], "s-", color="tab:blue", label="proxy")
        twin.set_ylabel("proxy (R(0) = 0)", color="tab:blue")
        ax.set_xlabel("d = sqrt(KL_bon)")
        ax.set_ylabel("gold (R(0) = 0)", color="tab:orange")
        ax.set_title(name, fontsize=10)
        ax.axhline(0, color="grey", linewidth=0.5)
        if k == 0:
            handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_png(fig, path)


def plot_mitigation(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Every objective's gold curve against d on one axis."""
    fig = new_figure(6, 4.2)
    ax = fig.add_subplot()
    d = np.asarray(report["d"])
    for name, o in report["objectives"].items():
        ax.plot(d, o["gold"], "o-", label=name)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("d = sqrt(KL_bon)")
    ax.set_ylabel("gold score of best-of-n (R(0) = 0)")
    ax.set_title("Gold score by proxy objective")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
