"""Write an evaluation report three ways: JSON for machines, Markdown for people, a reliability diagram.

Works from the report dict alone (as `evaluate` returns it, or as read back from report.json), so a report
can be re-rendered without re-scoring. Every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rewardkit.io import atomic_open, atomic_write_json, atomic_write_text


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md and reliability.png into `out_dir` (created if missing).

    Returns {"json": path, "markdown": path, "reliability": path}.
    """
    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "reliability": out_dir / "reliability.png",
    }
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["markdown"], render_markdown(report, image=paths["reliability"].name))
    plot_reliability(report.get("reliability") or [], paths["reliability"], ece=report.get("ece"))
    return paths


# --- Markdown ---------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(report: dict[str, Any], image: str | None = "reliability.png") -> str:
    """A short human-readable summary of `report`; `image` is the reliability diagram to link, if any."""
    r = report.get
    lines = [
        "# Reward model evaluation",
        "",
        f"**Accuracy: {_pct(r('accuracy'))}** over {r('n_comparisons', 0)} comparisons "
        f"from {r('n', 0)} records.",
        "",
        "Accuracy is strict: a comparison is correct only if the preferred response scores strictly higher; "
        "a tie counts as wrong, so a constant scorer gets 0%.",
        "",
        f"- tie rate: {_pct(r('tie_rate'))}",
        f"- unlabelled records (no comparison): {r('n_unlabeled', 0)}",
        f"- truncated responses: {r('truncated', 0)} (records affected: {r('truncated_records', 0)})",
        f"- skipped rows: {r('skipped', 0)}",
        "",
        "## Calibration",
        "",
        f"p = σ(Δ/T) with T = {_num(r('temperature'), 3)}; {len(r('reliability') or [])} equal-width bins "
        "over max(p, 1 − p).",
        "",
    ]
    lines += markdown_table(
        ["ECE", "MCE", "Brier", "NLL", "fitted T (in-sample)"],
        [[_num(r("ece")), _num(r("mce")), _num(r("brier")), _num(r("nll")),
          _num(r("fitted_temperature"), 3)]],
    )
    if image:
        lines += ["", f"![Reliability diagram]({image})"]

    corr = r("length_correlation") or {}
    split = r("length_split") or {}
    lines += [
        "",
        "## Length bias",
        "",
        f"Lengths in {corr.get('unit', '?')}. Reward–length correlation over all responses: "
        f"Pearson {_num(corr.get('pearson'), 3)}, Spearman {_num(corr.get('spearman'), 3)}; "
        f"within pairs (Δreward vs Δlength): Pearson {_num(corr.get('pairwise_pearson'), 3)}.",
        "",
    ]
    groups = (("longer", "chosen longer"), ("shorter", "chosen shorter"), ("equal", "equal length"))
    rows = [
        [label, _pct((split.get(key) or {}).get("accuracy")), str((split.get(key) or {}).get("n", 0))]
        for key, label in groups
    ]
    lines += markdown_table(["pairs", "accuracy", "n"], rows)
    lines += [
        "",
        f"Gap (chosen longer − chosen shorter): {_num(split.get('gap'), 3)}. "
        f"Pick-the-longer baseline: {_pct(r('longer_baseline_accuracy'))}.",
    ]

    subsets = r("subsets") or {}
    if subsets:
        lines += ["", "## Subsets", ""]
        lines += markdown_table(
            ["subset", "accuracy", "records", "comparisons"],
            [[name, _pct(s.get("accuracy")), str(s.get("n")), str(s.get("n_comparisons"))]
             for name, s in subsets.items()],
        )

    stats = r("reward_stats") or {}
    lines += [
        "",
        "## Rewards",
        "",
        f"mean {_num(stats.get('mean'))}, std {_num(stats.get('std'))}, "
        f"min {_num(stats.get('min'))}, max {_num(stats.get('max'))}",
    ]

    scorer = r("scorer")
    lines += ["", "## Scorer", ""]
    if scorer:
        lines += markdown_table(["setting", "value"], [[str(k), f"`{v}`"] for k, v in scorer.items()])
    else:
        lines.append("No scorer description was recorded.")
    return "\n".join(lines) + "\n"


# --- reliability diagram ----------------------------------------------------------------------------


def plot_reliability(table: list[dict[str, Any]], path: str | os.PathLike, ece: float | None = None) -> Path:
    """Draw accuracy per confidence bin against the diagonal and save it as a PNG, atomically.

    table: per-bin rows {"lo", "hi", "count", "confidence", "accuracy"} (`Reliability.table()`); empty
    bins are left blank, and an empty table still yields a valid image saying there is nothing to show.
    """
    # Figure + Agg canvas directly, not pyplot: no global backend switch, no figure registry to leak into.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    filled = [row for row in table if row.get("count")]
    # conf = max(p, 1 − p) ≥ 0.5, so only the upper half of [0, 1] can hold points.
    lo = 0.5 if all(row["lo"] >= 0.5 for row in filled) else 0.0
    ax.plot([lo, 1.0], [lo, 1.0], linestyle="--", color="grey", label="perfect calibration")
    for row in filled:
        width = row["hi"] - row["lo"]
        ax.bar(row["lo"], row["accuracy"], width=width, align="edge", color="tab:blue", edgecolor="black",
               alpha=0.8)
        ax.annotate(f"n={row['count']}", (row["lo"] + width / 2, row["accuracy"]), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    if not filled:
        ax.text(0.5, 0.5, "no labelled comparisons", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(0.0, 1.08)
    ax.set_xlabel("confidence  max(p, 1 − p)")
    ax.set_ylabel("accuracy (strict)")
    ax.set_title("Reliability diagram" + (f"  (ECE {ece:.3f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()

    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
