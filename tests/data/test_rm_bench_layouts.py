"""RM-Bench as its publishers ship it: the hub's total_dataset.json (a `domain` on every row) and the GitHub
repository's per-domain files (chat_filtered.json, ..., safety-response_filtered.json: `id, subset, prompt,
chosen[3], rejected[3]` and no `domain`). Both are detected without a format name, and every record gets
the domain RM-Bench scores it under."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.data import detect_format, load_records
from rewardkit.data.formats import RM_BENCH_DOMAINS, rm_bench_domain_from_file
from rewardkit.errors import DataError

REPO_FILES = {  # file name -> the domain its rows get
    "chat_filtered.json": "chat",
    "code_filtered.json": "code",
    "math_filtered.json": "math",
    "safety-refuse_filtered.json": "safety-refuse",
    "safety-response_filtered.json": "safety-response",
}


def repo_row(i: int, subset: str | None = "x") -> dict:
    row = {"id": f"r{i}", "prompt": f"Prompt {i}?", "chosen": [f"c{i}a", f"c{i}b", f"c{i}c"],
           "rejected": [f"r{i}a", f"r{i}b", f"r{i}c"]}
    if subset is not None:
        row["subset"] = subset
    return row


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(REPO_FILES))
def test_repository_files_are_detected_and_get_the_domain_of_their_name(tmp_path, name):
    path = write_json(tmp_path / name, [repo_row(i, subset="some-source") for i in range(3)])
    result = load_records(path)
    assert result.format == "rm-bench" and result.skipped == 0 and len(result) == 3
    assert [r.subset for r in result] == [REPO_FILES[name]] * 3
    rec = result.records[0]
    assert [r.content for r in rec.responses] == ["c0a", "c0b", "c0c", "r0a", "r0b", "r0c"]
    assert rec.scores == [1, 1, 1, 0, 0, 0] and rec.meta["styles"] == [0, 1, 2, 0, 1, 2]
    assert rec.id == "r0" and rec.meta["source_subset"] == "some-source"  # the row's own subset is kept


def test_hub_layout_is_detected_and_keeps_its_domain_whatever_the_file_name(tmp_path):
    rows = [{**repo_row(i, subset=None), "domain": d} for i, d in enumerate(RM_BENCH_DOMAINS)]
    result = load_records(write_json(tmp_path / "chat_filtered.json", rows))  # the domain field wins
    assert result.format == "rm-bench"
    assert [r.subset for r in result] == list(RM_BENCH_DOMAINS)
    assert "source_subset" not in result.records[0].meta


def test_a_subset_naming_a_domain_gives_the_domain(tmp_path):
    rows = [repo_row(0, "chat"), repo_row(1, "Safety_Refuse"), repo_row(2, "code")]
    result = load_records(write_json(tmp_path / "total_dataset.json", rows))
    assert [r.subset for r in result] == ["chat", "safety-refuse", "code"]
    assert "source_subset" not in result.records[0].meta


def test_a_row_subset_naming_a_domain_beats_the_file_name(tmp_path):
    result = load_records(write_json(tmp_path / "chat_filtered.json", [repo_row(0, "math")]))
    assert result.records[0].subset == "math"


def test_without_domain_subset_or_telling_name_the_subset_is_used_as_it_is_or_none(tmp_path):
    result = load_records(write_json(tmp_path / "mine.json", [repo_row(0, "odd"), repo_row(1, None)]))
    assert result.format == "rm-bench"
    assert [r.subset for r in result] == ["odd", None]


def test_jsonl_and_other_names_of_the_domain_files(tmp_path):
    rows = "".join(json.dumps(repo_row(i, None)) + "\n" for i in range(2))
    (tmp_path / "safety-response.jsonl").write_text(rows)
    assert [r.subset for r in load_records(tmp_path / "safety-response.jsonl")] == ["safety-response"] * 2
    assert rm_bench_domain_from_file("data/safety-refuse_filtered.json") == "safety-refuse"
    assert rm_bench_domain_from_file("safety_filtered.json.gz") == "safety"
    assert rm_bench_domain_from_file("math_filtered.json") == "math"
    assert rm_bench_domain_from_file("total_dataset.json") is None
    assert rm_bench_domain_from_file("chatbot.json") is None  # a prefix of a word is not the domain


def test_detection_needs_three_and_three_without_a_domain():
    assert detect_format(repo_row(0)) == "rm-bench"
    assert detect_format({**repo_row(0), "domain": "chat"}) == "rm-bench"
    # Two and two with no domain: not RM-Bench's shape, so it is not guessed to be RM-Bench.
    assert detect_format({"prompt": "Q", "chosen": ["a", "b"], "rejected": ["c", "d"]}) != "rm-bench"


def test_rm_bench_with_the_format_named_either_way(tmp_path):
    path = write_json(tmp_path / "code_filtered.json", [repo_row(0)])
    for name in ("rm-bench", "rm_bench", "RM-Bench"):
        result = load_records(path, format=name)
        assert result.format == "rm-bench" and result.records[0].subset == "code"


def test_a_non_string_domain_names_the_field(tmp_path):
    path = write_json(tmp_path / "bad.json", [{**repo_row(0), "domain": 3}])
    with pytest.raises(DataError) as info:
        load_records(path, format="rm-bench")
    assert (Path(info.value.file).name, info.value.line, info.value.field) == ("bad.json", 1, "domain")
    assert "bad.json:1: field 'domain'" in str(info.value)
