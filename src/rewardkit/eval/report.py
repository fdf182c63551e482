"""Write an evaluation report three ways: JSON for machines, Markdown for people, PNG plots (the reliability
diagram, reward against length, and the RM-Bench style matrix when the report has one).

Works from the report dict alone (as `evaluate` returns it, or as read back from report.json), so a report
can be re-rendered without re-scoring. Every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rewardkit.eval.plotting import new_figure, save_png
from rewardkit.io import atomic_write_json, atomic_write_text


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md, reliability.png and reward_length.png into `out_dir` (created if
    missing), and rm_bench.png when the report holds an RM-Bench section.

    Returns {"json", "markdown", "reliability", "reward_length"[, "rm_bench"]} paths.
    """
    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "reliability": out_dir / "reliability.png",
        "reward_length": out_dir / "reward_length.png",
    }
    if report.get("rm_bench"):
        paths["rm_bench"] = out_dir / "rm_bench.png"
    if report.get("ensemble"):
        paths["ensemble"] = out_dir / "ensemble.png"
    atomic_write_json(paths["json"], report)
    plot_reliability(report.get("reliability") or [], paths["reliability"], ece=report.get("ece"))
    plot_reward_length(report.get("reward_by_length") or [], paths["reward_length"],
                       report.get("length_correlation") or {})
    if "rm_bench" in paths:
        plot_rm_bench(report["rm_bench"], paths["rm_bench"])
    if "ensemble" in paths:
        from rewardkit.eval.ensemble import plot_ensemble

        plot_ensemble(report["ensemble"], paths["ensemble"])
    images = {k: v.name for k, v in paths.items() if v.suffix == ".png"}
    atomic_write_text(paths["markdown"], render_markdown(report, image=images["reliability"], images=images))
    return paths


# --- Markdown ---------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(report: dict[str, Any], image: str | None = "reliability.png",
                    images: dict[str, str] | None = None) -> str:
    """A short human-readable summary of `report`; `image` is the reliability diagram to link, if any, and
    `images` the other plots by name (reward_length, rm_bench)."""
    images = images or {}
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
    if images.get("reward_length"):
        lines += ["", f"![Mean reward by response length]({images['reward_length']})"]
    lines += benchmark_markdown(report, images)

    objectives = r("objectives") or {}
    if objectives:
        weights = r("weights") or {}
        lines += ["", "## Objectives", "",
                  "Each objective's head on the comparisons labelled for it, the combined reward on those same "
                  "comparisons, and the head on every comparison.", ""]
        lines += markdown_table(
            ["objective", "weight", "head accuracy", "combined accuracy", "comparisons", "head on all"],
            [[name, _num(weights.get(name), 3), _pct(o.get("accuracy")), _pct(o.get("combined_accuracy")),
              str(o.get("n_comparisons")), _pct(o.get("accuracy_all"))] for name, o in objectives.items()])

    ensemble = r("ensemble") or {}
    if ensemble:
        lines += ["", "## Ensemble", "",
                  f"Ensemble accuracy {_pct(ensemble.get('accuracy'))}; best member "
                  f"{_pct(ensemble.get('best_member_accuracy'))}, mean member "
                  f"{_pct(ensemble.get('mean_member_accuracy'))}. AUROC of the members' spread against the "
                  f"ensemble's wrong pairs: {_num(ensemble.get('uncertainty_auroc'), 3)} (0.5: the spread says "
                  "nothing about the errors).", ""]
        lines += markdown_table(["member", "accuracy"],
                                [[m.get("name"), _pct(m.get("accuracy"))] for m in ensemble.get("members", [])])
        div = ensemble.get("diversity") or {}
        if div:
            lines += ["", f"Diversity: two members' rewards correlate {_num(div.get('reward_correlation'), 3)} "
                          f"on average, and they prefer different responses on "
                          f"{_pct(div.get('pair_disagreement'))} of the pairs."]
        bins = ensemble.get("by_uncertainty") or []
        if bins:
            lines += ["", "Ensemble accuracy by the members' spread on the pair (equal-count bins):", ""]
            lines += markdown_table(["spread", "pairs", "accuracy"],
                                    [[f"{_num(b['lo'], 3)}-{_num(b['hi'], 3)}", str(b["count"]),
                                      _pct(b["accuracy"])] for b in bins])
        if (images or {}).get("ensemble"):
            lines += ["", f"![members and uncertainty]({images['ensemble']})"]

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


def benchmark_markdown(report: dict[str, Any], images: dict[str, str]) -> list[str]:
    """A section per benchmark the report holds (RewardBench v1/v2, RM-Bench, ProcessBench)."""
    lines: list[str] = []
    if rb := report.get("rewardbench"):
        lines += ["", "## RewardBench", "", f"Overall (mean of the sections): **{_pct(rb.get('overall'))}**", ""]
        lines += markdown_table(["section", "score"], [[k, _pct(v)] for k, v in rb["sections"].items()])
        lines += [""] + markdown_table(
            ["subset", "section", "length category", "accuracy", "n"],
            [[name, str(x.get("section")), str(x.get("length_category")), _pct(x.get("accuracy")), str(x.get("n"))]
             for name, x in rb["subsets"].items()])
    if rb2 := report.get("rewardbench2"):
        lines += ["", "## RewardBench 2", "", f"Overall (mean of the subsets): **{_pct(rb2.get('overall'))}**", ""]
        lines += markdown_table(["subset", "score", "n"],
                                [[k, _pct(v.get("score")), str(v.get("n"))] for k, v in rb2["subsets"].items()])
    if rm := report.get("rm_bench"):
        lines += ["", "## RM-Bench", "",
                  f"Overall **{_pct(rm.get('overall'))}**: easy {_pct(rm.get('easy'))}, normal "
                  f"{_pct(rm.get('normal'))}, hard {_pct(rm.get('hard'))} (hard: the chosen response is less "
                  "styled than the rejected one).", ""]
        lines += markdown_table(["domain", "easy", "normal", "hard", "score", "n"],
                                [[d, _pct(x.get("easy")), _pct(x.get("normal")), _pct(x.get("hard")),
                                  _pct(x.get("score")), str(x.get("n"))] for d, x in rm["by_domain"].items()])
        if images.get("rm_bench"):
            lines += ["", f"![RM-Bench style matrices]({images['rm_bench']})"]
    if pb := report.get("processbench"):
        lines += ["", "## ProcessBench", "",
                  f"Mean F1 **{_pct(pb.get('f1_mean'))}**; threshold {_num(pb.get('threshold'))} "
                  f"({pb.get('threshold_source')}).", ""]
        lines += markdown_table(["split", "F1", "accuracy on flawed (earliest error)", "accuracy on correct", "n"],
                                [[k, _pct(x.get("f1")), _pct(x.get("acc_err")), _pct(x.get("acc_cor")),
                                  str(x.get("n"))] for k, x in pb["per_split"].items()])
    return lines


# --- plots --------------------------------------------------------------------------------------------


def plot_reward_length(table: list[dict[str, Any]], path: str | os.PathLike,
                       correlation: dict[str, Any] | None = None) -> Path:
    """Mean reward (± std) per response-length bin (`metrics.reward_by_length`), as a PNG, atomically."""
    fig = new_figure(5.5, 4)
    ax = fig.add_subplot()
    if table:
        mids = [(row["lo"] + row["hi"]) / 2 for row in table]
        means = [row["mean_reward"] for row in table]
        ax.errorbar(mids, means, yerr=[row["std_reward"] for row in table], marker="o", capsize=3)
        for x, y, row in zip(mids, means, table):
            ax.annotate(f"n={row['n']}", (x, y), xytext=(0, 6), textcoords="offset points", ha="center",
                        fontsize=7)
    else:
        ax.text(0.5, 0.5, "no scored responses", transform=ax.transAxes, ha="center", va="center")
    corr = correlation or {}
    pearson = corr.get("pearson")
    ax.set_xlabel(f"response length ({corr.get('unit', 'tokens')}), bin midpoint")
    ax.set_ylabel("mean reward (± std)")
    ax.set_title("Reward vs length" + (f"  (Pearson {pearson:.3f})" if pearson is not None else ""))
    fig.tight_layout()
    return save_png(fig, path)


def plot_rm_bench(rm_bench: dict[str, Any], path: str | os.PathLike) -> Path:
    """One 3×3 heatmap per RM-Bench domain: M[i][j] = P[chosen in style i beats rejected in style j]."""
    styles = ["concise", "detailed", "markdown"]
    domains = list(rm_bench.get("by_domain") or {})
    fig = new_figure(3.2 * max(len(domains), 1), 3.4)
    for k, domain in enumerate(domains):
        ax = fig.add_subplot(1, len(domains), k + 1)
        matrix = rm_bench["by_domain"][domain]["matrix"]
        ax.imshow([[v if v is not None else float("nan") for v in row] for row in matrix], vmin=0, vmax=1,
                  cmap="RdYlGn")
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, "—" if v is None else f"{100 * v:.0f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(3), styles, fontsize=7)
        ax.set_yticks(range(3), styles, fontsize=7)
        ax.set_xlabel("rejected style")
        if k == 0:
            ax.set_ylabel("chosen style")
        ax.set_title(domain, fontsize=9)
    if not domains:
        fig.text(0.5, 0.5, "no RM-Bench domains", ha="center")
    fig.tight_layout()
    return save_png(fig, path)


# --- reliability diagram ----------------------------------------------------------------------------


def plot_reliability(table: list[dict[str, Any]], path: str | os.PathLike, ece: float | None = None) -> Path:
    """Draw accuracy per confidence bin against the diagonal and save it as a PNG, atomically.

    table: per-bin rows {"lo", "hi", "count", "confidence", "accuracy"} (`Reliability.table()`); empty
    bins are left blank, and an empty table still yields a valid image saying there is nothing to show.
    """
    fig = new_figure(5, 4.5)
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
    return save_png(fig, path)
