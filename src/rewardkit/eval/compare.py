"""Compare several Scorers on the same records: one report that puts their evaluations side by side.

Each scorer is evaluated with `evaluate()` exactly as it would be alone, so every per-scorer number here is
the number its own report has. On top of that the comparison says how often two scorers prefer the same
response, how similarly they rank responses, and which comparisons they disagree on most, with the text.

Agreement is strict, like accuracy: two scorers agree on a pair only if both prefer the same response, so a
tie from either side is a disagreement and a constant scorer agrees with nobody. Pairs are the labelled
comparisons (p > 0.5, as evaluate() counts them) plus, for records without labels, every pair of their
responses, so scorers can also be compared on unlabelled samples.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.data.record import Message, PreferenceRecord
from rewardkit.eval import metrics
from rewardkit.eval.evaluate import evaluate
from rewardkit.eval.plotting import new_figure, save_png, write_report_files
from rewardkit.io import json_ready
from rewardkit.models.scorer import Scorer, ScoreResult

SNIPPET_CHARS = 160


# --- pairs and their Δ ------------------------------------------------------------------------------


@dataclass
class Pairs:
    """The response pairs every scorer is compared on, one row per pair; all arrays are (n_pairs,).

    record: index into the records; first, second: response indices, with Δ = r[first] − r[second];
    labelled: whether the pair is a labelled comparison, in which case `first` is the preferred response.
    """

    record: np.ndarray
    first: np.ndarray
    second: np.ndarray
    labelled: np.ndarray

    def delta(self, results: Sequence[ScoreResult]) -> np.ndarray:
        """(n_pairs,) Δ = r[first] − r[second] under one scorer's results (one per record)."""
        return np.asarray([results[i].rewards[a] - results[i].rewards[b]
                           for i, a, b in zip(self.record, self.first, self.second)], dtype=float)


def comparison_pairs(records: Sequence[PreferenceRecord]) -> Pairs:
    """Labelled comparisons (p > 0.5) of each record, or every pair of its responses if it has none."""
    rows = []
    for i, rec in enumerate(records):
        comps = [(c.winner, c.loser) for c in rec.comparisons() if c.p > 0.5]
        if comps:
            rows += [(i, a, b, True) for a, b in comps]
        else:
            rows += [(i, a, b, False) for a, b in combinations(range(len(rec.responses)), 2)]
    if not rows:
        return Pairs(*(np.zeros(0, dtype=int) for _ in range(3)), np.zeros(0, dtype=bool))
    record, first, second, labelled = zip(*rows)
    return Pairs(np.asarray(record), np.asarray(first), np.asarray(second), np.asarray(labelled))


# --- pure measures between two scorers --------------------------------------------------------------


def strict_agreement(delta_a: np.ndarray, delta_b: np.ndarray) -> float:
    """Fraction of pairs where both scorers strictly prefer the same response; a tie never agrees.

    delta_a, delta_b: (n,) Δ of the same pairs under two scorers. NaN when n = 0.
    """
    delta_a, delta_b = np.asarray(delta_a, dtype=float), np.asarray(delta_b, dtype=float)
    if not len(delta_a):
        return float("nan")
    same = ((delta_a > 0) & (delta_b > 0)) | ((delta_a < 0) & (delta_b < 0))
    return float(np.mean(same))


def scale_free(delta: np.ndarray) -> np.ndarray:
    """Δ divided by its root mean square: scorers on different reward scales become comparable while
    every sign (which response is preferred) is kept. An all-zero Δ stays zero."""
    delta = np.asarray(delta, dtype=float)
    rms = float(np.sqrt(np.mean(delta**2))) if len(delta) else 0.0
    return delta / rms if rms > 0 else np.zeros_like(delta)


def disagreement_order(delta_a: np.ndarray, delta_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs the two scorers do not strictly agree on, most disagreeing first: (indices, scores).

    The score is |z_a − z_b| with z = `scale_free(Δ)`, so a confident opposite call ranks above a near-tie.
    delta_a, delta_b: (n,) arrays; returns two (m,) arrays, m ≤ n. Ties in score keep pair order.
    """
    z_a, z_b = scale_free(delta_a), scale_free(delta_b)
    agree = ((z_a > 0) & (z_b > 0)) | ((z_a < 0) & (z_b < 0))
    candidates = np.flatnonzero(~agree)
    score = np.abs(z_a - z_b)[candidates]
    order = np.argsort(-score, kind="stable")
    return candidates[order], score[order]


# --- the comparison report --------------------------------------------------------------------------


def compare_scorers(
    scorers: Mapping[str, Scorer | None] | Sequence[tuple[str, Scorer | None]],
    records: Sequence[PreferenceRecord],
    *,
    results: Mapping[str, Sequence[ScoreResult]] | None = None,
    top_k: int = 10,
    snippet_chars: int = SNIPPET_CHARS,
    temperature: float = 1.0,
    bins: int = 10,
) -> dict[str, Any]:
    """Score `records` once with each scorer (or take its precomputed `results[name]`) and compare them.

    scorers: name -> Scorer, in the order the report lists them; a scorer may be None when its results are
    given. Names only in `results` are added after. top_k: disagreement examples kept per pair of scorers.
    temperature, bins: as in evaluate(), for every scorer alike.

    Returns a JSON-ready dict:
      "scorers":   names, in order;  "n", "n_comparisons" (labelled), "n_pairs" (all compared pairs);
      "summary":   {name: {"accuracy", "tie_rate", "ece", "mce", "brier", "nll", "fitted_temperature",
                    "length": {"unit", "pearson", "spearman", "pairwise_pearson", "longer", "shorter",
                    "equal", "gap", "longer_baseline_accuracy"}, "truncated"}};
      "subsets":   {subset: {"n", "n_comparisons", "accuracy": {name: accuracy}}};
      "agreement": [{"a", "b", "agreement", "n_pairs", "reward_spearman", "delta_spearman"}] per pair of
                   scorers (reward_spearman ranks every response once; delta_spearman ranks the pairs' Δ and
                   so ignores per-prompt offsets);
      "disagreements": [{"a", "b", "n_disagree", "examples": [{"id", "record_index", "subset", "labelled",
                   "preferred", "other", "prompt", "preferred_response", "other_response",
                   "delta": {a: Δ, b: Δ}, "z": {a: z, b: z}, "disagreement"}]}] where for a labelled pair
                   "preferred" is the labelled winner, and for an unlabelled pair simply the first response;
      "reports":   {name: the full evaluate() report}.
    Undefined values are None.
    """
    named = _named_scorers(scorers, results)
    if not named:
        raise ValueError("compare_scorers needs at least one scorer")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    results = dict(results or {})
    scored: dict[str, list[ScoreResult]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for name, scorer in named:
        scored[name] = list(results[name]) if name in results else scorer.score(records)
        describe = scorer.describe() if scorer is not None else None
        reports[name] = evaluate(records, scored[name], describe, temperature=temperature, bins=bins)

    names = [name for name, _ in named]
    pairs = comparison_pairs(records)
    deltas = {name: pairs.delta(scored[name]) for name in names}
    rewards = {name: np.asarray([r for res in scored[name] for r in res.rewards], dtype=float) for name in names}

    agreement, disagreements = [], []
    for a, b in combinations(names, 2):
        agreement.append({
            "a": a, "b": b,
            "agreement": strict_agreement(deltas[a], deltas[b]),
            "n_pairs": len(pairs.record),
            "reward_spearman": metrics.spearman(rewards[a], rewards[b]),
            "delta_spearman": metrics.spearman(deltas[a], deltas[b]),
        })
        disagreements.append(_disagreements(a, b, records, pairs, deltas, top_k, snippet_chars))

    first = reports[names[0]]
    return json_ready({
        "scorers": names,
        "n": len(records),
        "n_comparisons": first["n_comparisons"],
        "n_pairs": len(pairs.record),
        "summary": {name: _summary(reports[name]) for name in names},
        "subsets": _subsets_side_by_side(reports, names),
        "agreement": agreement,
        "disagreements": disagreements,
        "reports": reports,
    })


def _named_scorers(scorers, results) -> list[tuple[str, Scorer | None]]:
    items = list(scorers.items()) if isinstance(scorers, Mapping) else [tuple(s) for s in scorers]
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"scorer names must be unique, got {names}")
    items += [(name, None) for name in (results or {}) if name not in names]
    for name, scorer in items:
        if scorer is None and name not in (results or {}):
            raise ValueError(f"scorer {name!r} has neither a Scorer nor precomputed results")
    return items


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one evaluate() report, flattened for a side-by-side table."""
    corr, split = report["length_correlation"], report["length_split"]
    return {
        "accuracy": report["accuracy"],
        "tie_rate": report["tie_rate"],
        "ece": report["ece"],
        "mce": report["mce"],
        "brier": report["brier"],
        "nll": report["nll"],
        "fitted_temperature": report["fitted_temperature"],
        "length": {
            "unit": corr["unit"],
            "pearson": corr["pearson"],
            "spearman": corr["spearman"],
            "pairwise_pearson": corr["pairwise_pearson"],
            "longer": split["longer"]["accuracy"],
            "shorter": split["shorter"]["accuracy"],
            "equal": split["equal"]["accuracy"],
            "gap": split["gap"],
            "longer_baseline_accuracy": report["longer_baseline_accuracy"],
        },
        "truncated": report["truncated"],
    }


def _subsets_side_by_side(reports: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    subsets = reports[names[0]]["subsets"]  # the same records, so the same subsets and counts for all
    return {
        subset: {"n": info["n"], "n_comparisons": info["n_comparisons"],
                 "accuracy": {name: reports[name]["subsets"][subset]["accuracy"] for name in names}}
        for subset, info in subsets.items()
    }


def _disagreements(a: str, b: str, records: Sequence[PreferenceRecord], pairs: Pairs,
                   deltas: dict[str, np.ndarray], top_k: int, snippet_chars: int) -> dict[str, Any]:
    order, score = disagreement_order(deltas[a], deltas[b])
    z = {name: scale_free(deltas[name]) for name in (a, b)}
    examples = []
    for k, s in zip(order[:top_k], score[:top_k]):
        i, first, second = int(pairs.record[k]), int(pairs.first[k]), int(pairs.second[k])
        rec = records[i]
        examples.append({
            "id": rec.id, "record_index": i, "subset": rec.subset, "labelled": bool(pairs.labelled[k]),
            "preferred": first, "other": second,
            "prompt": snippet(prompt_text(rec.prompt), snippet_chars),
            "preferred_response": snippet(rec.responses[first].content, snippet_chars),
            "other_response": snippet(rec.responses[second].content, snippet_chars),
            "delta": {a: deltas[a][k], b: deltas[b][k]},
            "z": {a: z[a][k], b: z[b][k]},
            "disagreement": s,
        })
    return {"a": a, "b": b, "n_disagree": len(order), "examples": examples}


def prompt_text(prompt: list[Message]) -> str:
    """The last user turn (what the responses answer), or the whole conversation when there is none."""
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else " ".join(m.get("content", "") for m in prompt)


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """Whitespace collapsed to single spaces and cut to `limit` characters with an ellipsis."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)].rstrip() + "…"


# --- Markdown ---------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def compare_markdown(report: dict[str, Any], image: str | None = "compare.png") -> str:
    """A human-readable comparison: headline table, subsets, agreement, and the top disagreements."""
    names = report.get("scorers") or []
    summary = report.get("summary") or {}
    lines = [
        "# Reward model comparison",
        "",
        f"{len(names)} scorers on {report.get('n', 0)} records: {report.get('n_comparisons', 0)} labelled "
        f"comparisons, {report.get('n_pairs', 0)} compared pairs.",
        "",
        "Accuracy and agreement are strict: a tie counts as wrong, and two scorers agree on a pair only if "
        "both strictly prefer the same response.",
        "",
        "## Accuracy and calibration",
        "",
    ]
    lines += markdown_table(
        ["scorer", "accuracy", "ties", "ECE", "Brier", "NLL", "fitted T"],
        [[name, _pct(s.get("accuracy")), _pct(s.get("tie_rate")), _num(s.get("ece")), _num(s.get("brier")),
          _num(s.get("nll")), _num(s.get("fitted_temperature"))]
         for name, s in ((n, summary.get(n) or {}) for n in names)],
    )
    lines += ["", "## Length bias", ""]
    rows = []
    for name in names:
        ln = (summary.get(name) or {}).get("length") or {}
        rows.append([name, str(ln.get("unit", "?")), _num(ln.get("pearson")), _num(ln.get("spearman")),
                     _num(ln.get("pairwise_pearson")), _pct(ln.get("longer")), _pct(ln.get("shorter")),
                     _pct(ln.get("equal")), _num(ln.get("gap")), _pct(ln.get("longer_baseline_accuracy"))])
    lines += markdown_table(["scorer", "unit", "Pearson r~len", "Spearman r~len", "Pearson Δr~Δlen", "acc chosen longer",
                     "acc chosen shorter", "acc equal", "gap", "pick-longer baseline"], rows)

    subsets = report.get("subsets") or {}
    if subsets:
        lines += ["", "## Subsets", ""]
        lines += markdown_table(
            ["subset", "comparisons", *names],
            [[subset, str(s.get("n_comparisons")), *(_pct((s.get("accuracy") or {}).get(n)) for n in names)]
             for subset, s in subsets.items()],
        )
    if image:
        lines += ["", f"![Accuracy per subset]({image})"]

    agreement = report.get("agreement") or []
    if agreement:
        lines += ["", "## Agreement", ""]
        lines += markdown_table(
            ["a", "b", "agreement", "pairs", "Spearman of rewards", "Spearman of Δ"],
            [[g["a"], g["b"], _pct(g.get("agreement")), str(g.get("n_pairs")), _num(g.get("reward_spearman")),
              _num(g.get("delta_spearman"))] for g in agreement],
        )
    for d in report.get("disagreements") or []:
        a, b = d["a"], d["b"]
        lines += ["", f"## Top disagreements: {a} vs {b}", "",
                  f"{d.get('n_disagree', 0)} pairs without strict agreement; Δ = r(preferred) − r(other), "
                  "where preferred is the labelled winner (or the first response of an unlabelled pair).", ""]
        if d.get("examples"):
            lines += markdown_table(
                ["id", "subset", "prompt", "preferred", "other", f"Δ {a}", f"Δ {b}"],
                [[e["id"], e.get("subset") or "—", e["prompt"], e["preferred_response"], e["other_response"],
                  _num(e["delta"].get(a)), _num(e["delta"].get(b))] for e in d["examples"]],
            )
    return "\n".join(lines) + "\n"


# --- plot and writer --------------------------------------------------------------------------------


def plot_subset_accuracy(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Grouped bars of strict accuracy, overall and per subset, one bar per scorer; saved atomically."""
    names = report.get("scorers") or []
    summary = report.get("summary") or {}
    subsets = report.get("subsets") or {}
    groups = ["overall", *subsets]
    values = {n: [(summary.get(n) or {}).get("accuracy"),
                  *((subsets[s].get("accuracy") or {}).get(n) for s in subsets)] for n in names}

    fig = new_figure(min(16.0, max(5.0, 1.5 + 0.35 * len(groups) * max(1, len(names)))), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    for k, name in enumerate(names):
        heights = [np.nan if v is None else v for v in values[name]]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, heights, width=width, label=name, edgecolor="black")
    if not names:
        ax.text(0.5, 0.5, "no scorers", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylim(0.0, 1.2)  # headroom above 1.0 for the legend, so it never hides a bar
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("accuracy (strict)")
    ax.set_title("Accuracy per subset")
    if names:
        ax.legend(fontsize=8, loc="upper center", ncol=min(len(names), 4), frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def write_comparison(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write compare.json, compare.md and compare.png into `out_dir` (created if missing), each atomically.

    Returns {"json": path, "markdown": path, "plot": path}.
    """
    return write_report_files(report, out_dir, "compare", compare_markdown, plot_subset_accuracy)
