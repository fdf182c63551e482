"""When the detected format rejects every row, the loader tries the other formats whose detectors accept the
first row; when none fits, the error says which formats it tried and why each failed (file, line, field).
Format names are accepted with '-' or '_' alike, and a preferred format (what a benchmark implies) is tried
first but falls back like a detected one."""

from __future__ import annotations

import pytest

from rewardkit.data import LoadStats, iter_records, load_records, load_split
from rewardkit.data.formats import formats_fitting, name_key, registered_name, resolve_format
from rewardkit.errors import DataError

from data_checks import assert_points_at, write_jsonl

# TRL rows with an extra `responses` column (a count, not the responses): the generic format's detector
# takes them first (prompt + responses), and it rejects every one of them.
TRL_WITH_COUNT = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "responses": 2}
                  for i in range(4)]
# Two and two styled responses with a domain: rm-bench's detector takes them, and rm-bench (three styles)
# and trl (messages) both reject them.
NO_FIT = [{"prompt": f"Q{i}", "chosen": ["a", "b"], "rejected": ["c", "d"], "domain": "chat"} for i in range(3)]


def test_the_rows_fit_several_formats():
    assert formats_fitting(TRL_WITH_COUNT[0]) == ["generic", "trl"]
    assert formats_fitting(NO_FIT[0]) == ["rm-bench", "trl"]


@pytest.mark.parametrize("skip_bad", [False, True])
def test_falls_back_to_the_next_format_that_fits(tmp_path, skip_bad):
    result = load_records(write_jsonl(tmp_path / "d.jsonl", TRL_WITH_COUNT), skip_bad=skip_bad)
    assert result.format == "trl" and len(result) == 4 and result.skipped == 0 and result.n_rows == 4
    assert [r.responses[0].content for r in result] == [f"good {i}" for i in range(4)]
    assert len(result.passed_over) == 1
    assert result.passed_over[0].startswith("generic: ") and "field 'responses'" in result.passed_over[0]


def test_with_skip_bad_the_detected_format_is_kept_unless_it_rejects_every_row(tmp_path):
    # The first row is bad as generic but good as trl; the others are good generic rows. generic is kept.
    rows = [TRL_WITH_COUNT[0]] + [{"prompt": f"Q{i}", "responses": ["a", "b"], "chosen": 0} for i in range(3)]
    result = load_records(write_jsonl(tmp_path / "d.jsonl", rows), skip_bad=True)
    assert result.format == "generic" and len(result) == 3 and result.skipped == 1 and not result.passed_over


def test_with_skip_bad_the_fallback_reads_the_file_again_and_counts_afresh(tmp_path):
    # Rows good as trl after a first row that no format reads: generic rejects all, trl all but the first.
    rows = [{"prompt": "Q", "chosen": 5, "rejected": "b", "responses": 2}] + TRL_WITH_COUNT
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = load_records(path, skip_bad=True)
    assert result.format == "trl" and len(result) == 4
    assert (result.n_rows, result.skipped) == (5, 1) and [e.line for e in result.errors] == [1]
    assert [r.meta["line"] for r in result] == [2, 3, 4, 5]
    # Without skip_bad the first row decides, and it fits neither.
    with pytest.raises(DataError) as info:
        load_records(path)
    assert_points_at(info.value, 1, "responses", file="d.jsonl")
    assert "also tried trl" in str(info.value)


def test_streaming_reports_the_format_it_settled_on(tmp_path):
    stats = LoadStats()
    stream = iter_records(write_jsonl(tmp_path / "d.jsonl", TRL_WITH_COUNT), skip_bad=True, stats=stats)
    first = next(stream)
    assert first.responses[0].content == "good 0" and stats.format == "trl"
    assert len(list(stream)) == 3 and (stats.rows, stats.skipped) == (4, 0)


def test_limit_applies_to_the_format_used(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", TRL_WITH_COUNT)
    for skip_bad in (False, True):
        result = load_records(path, skip_bad=skip_bad, limit=2)
        assert result.format == "trl" and len(result) == 2 and result.truncated


def test_no_format_fits_the_first_row_names_each_format_and_why(tmp_path):
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(tmp_path / "bad.jsonl", NO_FIT))
    err = info.value
    assert_points_at(err, 1, "chosen")  # the first format tried: its line and field
    message = str(err)
    assert "as rm-bench, detected" in message and "expected 3 responses (one per style), got 2" in message
    assert "also tried trl" in message and "line 1: field 'chosen[0]'" in message
    assert "expected a {role, content} message, got str" in message


def test_every_row_rejected_with_skip_bad_is_an_error_naming_each_format(tmp_path):
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(tmp_path / "bad.jsonl", NO_FIT), skip_bad=True)
    err = info.value
    message = " ".join(str(err).split())
    assert err.file.endswith("bad.jsonl") and message.startswith(f"{err.file}: every one of its 3 rows")
    assert "each of the 2 formats tried" in message
    assert "rm-bench (detected): line 1: field 'chosen': expected 3 responses" in message
    assert "trl (its keys fit too): line 1: field 'chosen[0]'" in message
    assert "(3 rows rejected)" in message


def test_every_row_rejected_by_a_given_format_is_an_error(tmp_path):
    with pytest.raises(DataError, match="every one of its 3 rows was rejected by the format tried: trl "
                                        r"\(given\): line 1: field 'chosen\[0\]'"):
        load_records(write_jsonl(tmp_path / "bad.jsonl", NO_FIT), format="trl", skip_bad=True)


def test_a_file_no_row_of_which_can_be_read(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{oops\n[1, 2]\n")
    with pytest.raises(DataError, match="none of its 2 rows could be read; the first: line 1: invalid JSON"):
        load_records(path, skip_bad=True)


def test_a_single_format_keeps_its_own_error(tmp_path):
    row = {"prompt": "Q", "chosen": 1, "rejected": "b"}
    assert formats_fitting(row) == ["trl"]
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(tmp_path / "bad.jsonl", [row]))
    assert_points_at(info.value, 1, "chosen")
    assert str(info.value).endswith("(as trl, detected)") and "also tried" not in str(info.value)


# ---------------------------------------------------------------------------------- preferred format


def test_a_preferred_format_is_tried_first(tmp_path):
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b", "subset": "s"}]  # rewardbench and trl both read it
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_records(path).format == "rewardbench"
    assert load_records(path, preferred_format="trl").format == "trl"


def test_a_preferred_format_that_rejects_the_data_falls_back_to_detection(tmp_path):
    rows = [{"id": "g", "prompt": "Q", "responses": ["a", "b"], "chosen": 0, "subset": "chat"}]
    path = write_jsonl(tmp_path / "converted.jsonl", rows)  # a canonical file, as `data convert` writes
    for skip_bad in (False, True):
        result = load_split(path, preferred_format="rm_bench", skip_bad=skip_bad)
        assert result.format == "generic" and len(result) == 1
        assert result.passed_over[0].startswith("rm-bench: ")


def test_a_preferred_format_that_does_not_take_the_options_gives_way(tmp_path):
    row = {"question": {"problem": "Q"}, "label": {"steps": [
        {"completions": [{"text": "a", "rating": 0}], "chosen_completion": 0}], "finish_reason": "solution"}}
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    result = load_records(path, preferred_format="processbench", format_options={"neutral": 0.0})
    assert result.format == "prm800k" and result.records[0].step_labels == [[0.0]]
    with pytest.raises(DataError, match="neutral must be a number"):  # the error of the format that has it
        load_records(path, preferred_format="processbench", format_options={"neutral": 7})
    with pytest.raises(DataError, match="has no option 'nope'"):
        load_records(path, preferred_format="processbench", format_options={"nope": 1})


# ---------------------------------------------------------------------------------------------- names


def test_names_are_compared_with_dash_and_underscore_alike():
    assert name_key("RM-Bench") == name_key("rm_bench") == "rm_bench"
    assert resolve_format("rm_bench") == "rm-bench" and resolve_format("math-shepherd") == "math_shepherd"
    assert resolve_format(" TRL ") == "trl"
    assert registered_name("rm-bench", {"rm_bench": 1}, "benchmark") == "rm_bench"
    with pytest.raises(DataError, match="unknown benchmark 'rm-bench2'; known benchmarks: rm_bench"):
        registered_name("rm-bench2", {"rm_bench": 1}, "benchmark")


def test_format_names_in_the_loader_accept_either_spelling(tmp_path):
    row = {"input": "Q\nStep 1: a ки", "label": "Q\nStep 1: a +"}
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    assert load_records(path, format="math-shepherd").format == "math_shepherd"
    with pytest.raises(DataError, match="unknown format 'rm bench'"):
        load_records(path, format="rm bench")
