"""What is in a data set, and what is wrong with it, before anyone trains on it; and canonical writing.

`inspect_records` summarises a LoadResult as a plain dict (JSON-ready, for machines); `format_inspection`
renders it as short text for people. `write_canonical_jsonl` writes records in the canonical form that the
`generic` adapter reads back unchanged.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rewardkit.data.loader import LoadResult
from rewardkit.data.record import PreferenceRecord
from rewardkit.io import atomic_open

MAX_EXAMPLES = 5  # ids shown per problem: enough to find the rows, short enough to read


def inspect_records(result: LoadResult | Sequence[PreferenceRecord],
                    token_length: Callable[[str], int] | None = None) -> dict[str, Any]:
    """A summary of a data set: sizes, label kinds, subsets, lengths and problems.

    token_length maps a text to its length (e.g. a tokenizer's token count); without it lengths are
    whitespace-separated words, and "length_unit" says which. "problems" lists only the kinds found, each
    {"kind", "count", "examples": [ids]}: empty responses, identical responses within a record, duplicate
    ids, and records with no usable label (no comparison, step label or attribute to learn from).
    """
    records = list(result)
    measure = token_length or (lambda text: len(text.split()))
    prompt_lengths = [sum(measure(m["content"]) for m in r.prompt) for r in records]
    response_lengths = [measure(x.content) for r in records for x in r.responses]
    summary: dict[str, Any] = {
        "path": getattr(result, "path", None),
        "format": getattr(result, "format", None),
        "n": len(records),
        "skipped": getattr(result, "skipped", 0),
        "errors": [str(e) for e in getattr(result, "errors", [])[:MAX_EXAMPLES]],
        "label_kinds": dict(Counter(k for r in records for k in r.label_kinds).most_common()),
        "responses_per_record": dict(sorted(Counter(len(r.responses) for r in records).items())),
        "subsets": dict(Counter(r.subset for r in records if r.subset is not None).most_common()),
        "length_unit": "tokens" if token_length else "words",
        "lengths": {"prompt": length_stats(prompt_lengths), "response": length_stats(response_lengths)},
        "problems": find_problems(records),
    }
    steps = step_stats(records)
    if steps:
        summary["steps"] = steps
    return summary


def step_stats(records: Sequence[PreferenceRecord]) -> dict[str, Any] | None:
    """For step-split data: steps per response, and step labels counted as correct (>= 0.5), wrong, soft
    (strictly between 0 and 1) and unlabeled. None when no response has steps."""
    counts = [len(x.steps) for r in records for x in r.responses if x.steps is not None]
    if not counts:
        return None
    labels = [v for r in records for row in (r.step_labels or []) if row for v in row]
    known = [v for v in labels if v is not None]
    return {
        "responses_with_steps": len(counts),
        "steps_per_response": length_stats(counts),
        "labels": {"correct": sum(v >= 0.5 for v in known), "wrong": sum(v < 0.5 for v in known),
                   "soft": sum(0.0 < v < 1.0 for v in known), "unlabeled": len(labels) - len(known)},
    }


def length_stats(lengths: Sequence[int]) -> dict[str, Any]:
    """min / median / mean / p95 / max and a histogram with power-of-two bins [0,1), [1,2), [2,4), ...

    Power-of-two bins fit any range, from one-word answers to 8k-token transcripts, with no settings.
    """
    if not lengths:
        return {"count": 0, "histogram": []}
    ordered = sorted(lengths)
    bins: Counter[int] = Counter(0 if x < 1 else 1 << (int(x).bit_length() - 1) for x in ordered)
    histogram = [{"lo": lo, "hi": max(1, 2 * lo), "count": bins[lo]} for lo in sorted(bins)]
    return {
        "count": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "histogram": histogram,
    }


def find_problems(records: Sequence[PreferenceRecord]) -> list[dict[str, Any]]:
    checks: dict[str, Callable[[PreferenceRecord], bool]] = {
        "empty_response": lambda r: any(not x.content.strip() for x in r.responses),
        "identical_responses": lambda r: len({x.content for x in r.responses}) < len(r.responses),
        "no_usable_label": lambda r: not has_usable_label(r),
    }
    problems = []
    for kind, check in checks.items():
        ids = [r.id for r in records if check(r)]
        if ids:
            problems.append({"kind": kind, "count": len(ids), "examples": ids[:MAX_EXAMPLES]})
    duplicated = [i for i, c in Counter(r.id for r in records).items() if c > 1]
    if duplicated:
        problems.append({"kind": "duplicate_id", "count": len(duplicated), "examples": duplicated[:MAX_EXAMPLES]})
    return problems


def has_usable_label(r: PreferenceRecord) -> bool:
    """Something a loss can learn from: a comparison (an even vote split gives none), a step label or an
    attribute rating."""
    if r.comparisons():
        return True
    if r.step_labels and any(v is not None for labels in r.step_labels if labels for v in labels):
        return True
    return bool(r.attributes) and any(v is not None for attrs in r.attributes for v in attrs.values())


def format_inspection(summary: dict[str, Any]) -> str:
    """The summary as a few lines of plain text (what `rewardkit data inspect` prints)."""
    lines = [f"{summary.get('path') or 'records'}: {summary['n']} records"
             + (f" (format {summary['format']})" if summary.get("format") else "")
             + (f", {summary['skipped']} bad rows skipped" if summary.get("skipped") else "")]
    for err in summary.get("errors", []):
        lines.append(f"  skipped: {err}")
    lines.append("labels: " + (_counts(summary["label_kinds"]) or "none"))
    lines.append("responses per record: " + _counts(summary["responses_per_record"]))
    if summary["subsets"]:
        lines.append(f"subsets ({len(summary['subsets'])}): " + _counts(summary["subsets"], limit=12))
    unit = summary["length_unit"]
    for part, stats in summary["lengths"].items():
        if stats["count"]:
            lines.append(f"{part} length ({unit}): min {stats['min']}, median {stats['median']}, "
                         f"mean {stats['mean']}, p95 {stats['p95']}, max {stats['max']}")
    steps = summary.get("steps")
    if steps:
        per = steps["steps_per_response"]
        lines.append(f"steps per response: min {per['min']}, median {per['median']}, mean {per['mean']}, "
                     f"max {per['max']} ({steps['responses_with_steps']} responses with steps)")
        lines.append("step labels: " + _counts(steps["labels"]))
    if not summary["problems"]:
        lines.append("problems: none found")
    for p in summary["problems"]:
        lines.append(f"problem: {p['kind']}: {p['count']} (e.g. {', '.join(map(str, p['examples']))})")
    return "\n".join(lines)


def _counts(counts: dict[Any, int], limit: int | None = None) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k}: {v}" for k, v in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if limit and len(items) > limit else "")


def write_canonical_jsonl(records: Iterable[PreferenceRecord], out_path: str | Path) -> int:
    """Write one `to_json()` object a line, atomically (a crash never leaves a half-written file that looks
    whole); returns the number of records written."""
    n = 0
    with atomic_open(out_path, "w") as f:
        for record in records:
            f.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n
