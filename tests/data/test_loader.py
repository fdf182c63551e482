"""Reading files: every supported kind, file-level errors, field maps, skip-bad counting, streaming, splits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rewardkit.data import LoadStats, agreed_split, iter_records, load_records, shared_data_dir
from rewardkit.data.loader import MAX_KEPT_ERRORS
from rewardkit.errors import DataError

ROWS = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]


def write_jsonl(path: Path, rows: list, blank_after: int | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def contents(result) -> list[str]:
    return [r.responses[0].content for r in result.records]


# -------------------------------------------------------------------------------------------- readers


def test_jsonl_lines_are_file_lines_and_blank_lines_are_ignored(tmp_path):
    result = load_records(write_jsonl(tmp_path / "d.jsonl", ROWS, blank_after=2))
    assert contents(result) == [f"good {i}" for i in range(5)]
    assert [r.meta["line"] for r in result.records] == [1, 2, 4, 5, 6]
    assert [r.id for r in result.records] == ["d:1", "d:2", "d:4", "d:5", "d:6"]
    assert (result.format, result.n_rows, result.skipped) == ("trl", 5, 0)


def test_jsonl_gz(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in ROWS)
    result = load_records(path)
    assert contents(result) == [f"good {i}" for i in range(5)] and result.records[0].id == "d:1"


def test_json_list_numbers_items(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    assert [r.meta["line"] for r in load_records(path).records] == [1, 2, 3, 4, 5]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    result = load_records(path)
    assert contents(result) == [f"good {i}" for i in range(5)]
    assert result.records[-1].meta["line"] == 5


def test_datasets_directory(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert contents(load_records(tmp_path / "ds")) == [f"good {i}" for i in range(5)]


def test_dataset_dict_takes_the_test_split_or_lists_the_splits(tmp_path):
    import datasets

    train, test = datasets.Dataset.from_list(ROWS[:2]), datasets.Dataset.from_list(ROWS[2:])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "both"))
    assert contents(load_records(tmp_path / "both")) == ["good 2", "good 3", "good 4"]
    datasets.DatasetDict({"train": train, "dev": test}).save_to_disk(str(tmp_path / "no_test"))
    with pytest.raises(DataError, match="splits are: train, dev") as info:
        load_records(tmp_path / "no_test")
    assert info.value.file.endswith("no_test")


# -------------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as info:
        load_records(tmp_path / "nope.jsonl")
    assert info.value.file.endswith("nope.jsonl")


def test_unknown_extension(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown file type; supported: .jsonl") as info:
        load_records(tmp_path / "d.csv")
    assert info.value.file.endswith("d.csv")


@pytest.mark.parametrize("name, text", [("e.jsonl", ""), ("e.jsonl", "\n  \n"), ("e.json", "[]")])
def test_empty_file(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match="empty") as info:
        load_records(tmp_path / name)
    assert info.value.file.endswith(name)


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="invalid JSON") as info:
        load_records(path)
    assert (info.value.line, Path(info.value.file).name) == (2, "bad.jsonl")
    assert "bad.jsonl:2:" in str(info.value)


def test_invalid_json_list_names_the_line_and_hints_at_jsonl(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DataError, match="name the file .jsonl") as info:
        load_records(path)
    assert info.value.line == 2


def test_json_that_is_not_a_list(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"rows": ROWS}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_records(tmp_path / "d.json")


def test_a_row_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], [1, 2]])
    with pytest.raises(DataError, match="expected a JSON object") as info:
        load_records(path)
    assert info.value.line == 2


def test_call_errors_raise_before_iteration(tmp_path):
    # A streaming caller learns about a wrong path or format name at the call, not at the first next().
    with pytest.raises(DataError):
        iter_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError):
        iter_records(write_jsonl(tmp_path / "d.jsonl", ROWS), format="nope")


# ------------------------------------------------------------------------------------------ field map


def test_field_map_renames_before_detection(tmp_path):
    rows = [{"question": "Q", "good": "a", "bad": "b", "extra": 1}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = load_records(path, field_map={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert result.format == "trl"
    assert result.records[0].prompt == [{"role": "user", "content": "Q"}]
    assert contents(result) == ["a"]


def test_field_map_can_swap_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "chosen": "worse", "rejected": "better"}])
    result = load_records(path, field_map={"chosen": "rejected", "rejected": "chosen"})
    assert [r.content for r in result.records[0].responses] == ["better", "worse"]


def test_field_map_errors_name_the_users_column(tmp_path):
    rows = [{"question": "Q", "good": "a", "bad": "b"}, {"question": "Q", "good": 5, "bad": "b"}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_records(path, field_map={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (info.value.line, info.value.field) == (2, "good")


def test_field_map_missing_source_column(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"q": "Q", "good": "a", "bad": "b"}])
    with pytest.raises(DataError, match="field_map maps 'prompt' to it") as info:
        load_records(path, field_map={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (info.value.line, info.value.field) == (1, "question")


# ------------------------------------------------------------------------------------------- skip bad

BAD_ROWS = [ROWS[0], {**ROWS[1], "chosen": 7}, ROWS[2], {"prompt": "Q"}, ROWS[3]]


def test_first_bad_row_raises_without_skip_bad(tmp_path):
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(tmp_path / "d.jsonl", BAD_ROWS))
    assert (info.value.line, info.value.field) == (2, "chosen")


def test_skip_bad_counts_and_keeps_the_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in BAD_ROWS) + "\n{oops\n")
    result = load_records(path, skip_bad=True)
    assert contents(result) == ["good 0", "good 2", "good 3"]
    assert (result.skipped, result.n_rows) == (3, 6)
    assert [(e.line, e.field) for e in result.errors] == [(2, "chosen"), (4, "chosen"), (6, None)]


def test_skip_bad_keeps_only_the_first_errors(tmp_path):
    rows = [ROWS[0]] + [{**ROWS[1], "chosen": 7}] * (MAX_KEPT_ERRORS + 5)
    result = load_records(write_jsonl(tmp_path / "d.jsonl", rows), skip_bad=True)
    assert result.skipped == MAX_KEPT_ERRORS + 5 and len(result.errors) == MAX_KEPT_ERRORS


def test_detection_skips_an_unparsable_first_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{oops\n" + json.dumps(ROWS[0]) + "\n")
    result = load_records(path, skip_bad=True)
    assert (result.format, len(result), result.skipped) == ("trl", 1, 1)


# ------------------------------------------------------------------------------------ limit, streaming


def test_limit(tmp_path):
    result = load_records(write_jsonl(tmp_path / "d.jsonl", ROWS), limit=2)
    assert contents(result) == ["good 0", "good 1"] and result.truncated
    assert not load_records(write_jsonl(tmp_path / "e.jsonl", ROWS), limit=5).truncated


def test_iter_records_streams_and_fills_stats(tmp_path):
    stats = LoadStats()
    stream = iter_records(write_jsonl(tmp_path / "d.jsonl", BAD_ROWS), skip_bad=True, stats=stats)
    first = next(stream)
    assert first.responses[0].content == "good 0" and stats.format == "trl" and stats.rows == 1
    rest = list(stream)
    assert len(rest) == 2
    assert (stats.rows, stats.skipped, len(stats.errors), stats.path) == (5, 2, 2, str(tmp_path / "d.jsonl"))


# -------------------------------------------------------------------------------------------- splits


def test_agreed_split_by_position():
    records = list(range(10))
    assert agreed_split(records, "train") == list(range(8)) and agreed_split(records, "test") == [8, 9]


def test_agreed_split_cut_does_not_move_when_bad_rows_are_skipped(tmp_path):
    rows = [{**ROWS[0], "chosen": f"good {i}"} for i in range(10)]
    rows[1] = {"prompt": "Q"}  # a bad row in the train part
    result = load_records(write_jsonl(tmp_path / "d.jsonl", rows), skip_bad=True)
    train, test = agreed_split(result, "train"), agreed_split(result, "test")
    assert [r.meta["line"] for r in train] == [1, 3, 4, 5, 6, 7, 8]
    assert [r.meta["line"] for r in test] == [9, 10]


def test_agreed_split_refuses_a_truncated_read(tmp_path):
    with pytest.raises(ValueError, match="limit"):
        agreed_split(load_records(write_jsonl(tmp_path / "d.jsonl", ROWS), limit=2), "train")
    with pytest.raises(ValueError, match="part"):
        agreed_split([], "validation")


# ---------------------------------------------------------------------------------------------- paths


def test_shared_data_dir_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REWARDKIT_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path


def test_shared_data_dir_relative_to_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("REWARDKIT_DATA", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert shared_data_dir() == (tmp_path / "shared" / "data").resolve()


def test_load_split_describes_its_part_only(tmp_path):
    from rewardkit.data import load_split

    good = {"prompt": "q", "responses": ["a", "b"], "chosen": 0}
    rows = [dict(good, id=f"r{i}") for i in range(10)]
    rows[1] = {"id": "bad-train", "prompt": "q", "responses": ["a"], "chosen": 0}
    rows[9] = {"id": "bad-test", "prompt": "q", "responses": ["a"], "chosen": 0}
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = load_split(path, "train", skip_bad=True)
    test = load_split(path, "test", skip_bad=True)
    assert [r.id for r in train.records] == [f"r{i}" for i in (0, 2, 3, 4, 5, 6, 7)]
    assert [r.id for r in test.records] == ["r8"]
    assert (train.skipped, test.skipped) == (1, 1)
    assert [e.line for e in train.errors] == [2] and [e.line for e in test.errors] == [10]
    assert [r.id for r in load_split(path, "train", skip_bad=True, limit=2).records] == ["r0", "r2"]
    with pytest.raises(DataError, match="split must be"):
        load_split(path, "validation")
