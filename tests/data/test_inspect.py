"""Data set summaries and problems, the text rendering, and canonical JSONL that loads back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.data import (
    PreferenceRecord,
    Response,
    format_inspection,
    inspect_records,
    load_records,
    write_canonical_jsonl,
)
from rewardkit.data.inspect import length_stats


def record(id: str, *responses: str, prompt: str = "what is two plus two", **labels) -> PreferenceRecord:
    return PreferenceRecord(id=id, prompt=[{"role": "user", "content": prompt}],
                            responses=[Response(r) for r in responses], **labels)


RECORDS = [
    record("a", "four", "five", chosen=0, meta={"subset": "math"}),
    record("b", "", "four", chosen=1, meta={"subset": "math"}),             # empty response
    record("c", "four", "four", chosen=0, meta={"subset": "chat"}),         # identical responses
    record("a", "four", "5", "IV", ranking=[0, 2, 1]),                      # duplicate id
    record("d", "four", "five", votes=[None, None]),                        # all ties: no label
    record("e", "four", "five", votes=[0, 1]),                              # even split: no label
    record("f", "four", "five", attributes=[{"h": None}, {"h": None}]),     # no rating given: no label
    record("g", "four", "five", attributes=[{"h": 3.0}, {"h": None}]),
    PreferenceRecord("h", [{"role": "user", "content": "q"}], [Response("a b", ["a", "b"])],
                     step_labels=[[1.0, None]]),
]


def problems_by_kind(summary: dict) -> dict[str, dict]:
    return {p["kind"]: p for p in summary["problems"]}


def test_counts_and_problems():
    summary = inspect_records(RECORDS)
    assert summary["n"] == 9
    assert summary["label_kinds"] == {"chosen": 3, "votes": 2, "attributes": 2, "ranking": 1, "step_labels": 1}
    assert summary["responses_per_record"] == {1: 1, 2: 7, 3: 1}
    assert summary["subsets"] == {"math": 2, "chat": 1}
    problems = problems_by_kind(summary)
    assert problems["empty_response"] == {"kind": "empty_response", "count": 1, "examples": ["b"]}
    assert problems["identical_responses"]["examples"] == ["c"]
    assert problems["duplicate_id"] == {"kind": "duplicate_id", "count": 1, "examples": ["a"]}
    assert problems["no_usable_label"]["examples"] == ["d", "e", "f"]
    json.dumps(summary)  # machine-readable as it is


def test_clean_records_have_no_problems():
    assert inspect_records(RECORDS[:1])["problems"] == []


def test_lengths_in_words_by_default_and_tokens_when_given():
    words = inspect_records(RECORDS[:1])
    assert words["length_unit"] == "words"
    assert words["lengths"]["prompt"]["max"] == 5 and words["lengths"]["response"]["count"] == 2
    chars = inspect_records(RECORDS[:1], token_length=len)
    assert chars["length_unit"] == "tokens"
    assert chars["lengths"]["prompt"]["max"] == len("what is two plus two")


def test_length_histogram_uses_power_of_two_bins():
    stats = length_stats([0, 1, 2, 3, 4, 7, 8, 100])
    assert [(b["lo"], b["hi"], b["count"]) for b in stats["histogram"]] == [
        (0, 1, 1), (1, 2, 1), (2, 4, 2), (4, 8, 2), (8, 16, 1), (64, 128, 1)]
    assert (stats["min"], stats["max"], stats["count"]) == (0, 100, 8)
    assert length_stats([]) == {"count": 0, "histogram": []}


def test_summary_of_a_load_result_reports_skipped_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}) + "\n{oops\n")
    summary = inspect_records(load_records(path, skip_bad=True))
    assert (summary["n"], summary["skipped"], summary["format"]) == (1, 1, "trl")
    assert "d.jsonl:2" in summary["errors"][0]
    text = format_inspection(summary)
    assert "1 records (format trl), 1 bad rows skipped" in text and "problems: none found" in text


def test_format_inspection_is_short_plain_text():
    text = format_inspection(inspect_records(RECORDS))
    assert "9 records" in text
    assert "labels: chosen: 3" in text
    assert "problem: duplicate_id: 1 (e.g. a)" in text
    assert "prompt length (words)" in text
    assert len(text.splitlines()) < 20


# --------------------------------------------------------------------------------------- round trip

SOURCE_ROWS = {
    "hh": {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: Knock knock",
           "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: "},
    "trl": {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
            "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}],
            "margin": 1.0},
    "rewardbench": {"id": 3, "prompt": "Q", "chosen": "a", "chosen_model": "m", "rejected": "b",
                    "rejected_model": "n", "subset": "xstest"},
    "rewardbench2": {"id": "x", "prompt": "Q", "chosen": ["a", "b"], "rejected": ["c"], "num_correct": 2,
                     "subset": "Ties"},
    "rm-bench": {"id": 1, "prompt": "Q", "chosen": ["a", "b", "c"], "rejected": ["d", "e", "f"], "domain": "safety"},
    "pandalm": {"idx": 0, "instruction": "I", "input": "", "response1": "a", "response2": "b",
                "annotator1": 0, "annotator2": 1, "annotator3": 2},
    "processbench": {"id": "m-1", "problem": "P", "steps": ["s1", "s2", "s3"], "label": 0,
                     "final_answer_correct": False, "generator": "g"},
    "generic": {"id": "g", "prompt": "Q", "responses": ["a", "b", "c"], "scores": [1, 0.5, 0],
                "attributes": [{"h": 1}, {"h": None}, {"h": 0}], "soft_label": None, "subset": "s"},
}


@pytest.mark.parametrize("name", sorted(SOURCE_ROWS))
def test_converted_records_load_back_unchanged(tmp_path, name):
    source = tmp_path / "source.jsonl"
    source.write_text(json.dumps(SOURCE_ROWS[name]) + "\n")
    original = load_records(source)
    assert original.format == name
    out = tmp_path / "out" / "canonical.jsonl"
    assert write_canonical_jsonl(original.records, out) == 1
    reloaded = load_records(out)
    assert reloaded.format == "generic"
    assert reloaded.records == original.records  # provenance (source, line) travels in meta


def test_canonical_write_is_atomic(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def failing():
        yield RECORDS[0]
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_canonical_jsonl(failing(), out)
    assert out.read_text() == "old\n"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["out.jsonl"]


def test_step_data_gets_steps_per_response_and_label_counts():
    from rewardkit.data.record import Response as R, user_prompt

    steps = [["a", "b", "c"], ["d"]]
    records = [PreferenceRecord(f"s{i}", user_prompt("q"), [R("\n\n".join(s), s)], step_labels=[labels])
               for i, (s, labels) in enumerate(zip(steps, [[1.0, 0.0, None], [0.25]]))]
    summary = inspect_records(records)
    assert summary["steps"]["responses_with_steps"] == 2
    assert summary["steps"]["steps_per_response"]["max"] == 3 and summary["steps"]["steps_per_response"]["min"] == 1
    assert summary["steps"]["labels"] == {"correct": 1, "wrong": 2, "soft": 1, "unlabeled": 1}
    text = format_inspection(summary)
    assert "steps per response: min 1" in text and "step labels: correct: 1, wrong: 2, soft: 1, unlabeled: 1" in text
    plain = PreferenceRecord("p", user_prompt("q"), [R("x"), R("y")], chosen=0)
    assert "steps" not in inspect_records([plain])
