"""The loaders on the real shared data sets (../shared/data); each test skips cleanly when a file is absent.

The HH-RLHF numbers pin the loader's decisions on the odd rows: rows whose transcripts differ before the
final assistant turn (or end in a Human turn) are DataErrors, skipped and counted with skip_bad; rows with an
empty final turn or identical responses are kept, and `inspect` reports them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.data import agreed_split, inspect_records, load_records, shared_data_dir
from rewardkit.errors import DataError


def shared_file(relative: str) -> Path:
    root = shared_data_dir()
    if root is None or not (root / relative).exists():
        pytest.skip(f"real data file {relative} not found (set REWARDKIT_DATA or put it under ../shared/data)")
    return root / relative


# file -> (rows, bad lines, empty final turns, identical pairs, agreed train/test rows) as found in the data
HH = {
    "harmless-base": (2312, [1255, 1689, 1951, 1953, 2037], 4, 0, (1850, 462)),
    "helpful-base": (2354, [169, 355, 568, 744, 961, 1012, 1167, 1308, 1451], 4, 2, (1883, 471)),
    "helpful-online": (1137, [786, 1056], 3, 2, (910, 227)),
    "helpful-rejection-sampled": (2749, [720, 1598, 2365], 0, 32, (2199, 550)),
}


@pytest.mark.parametrize("subset", sorted(HH))
def test_hh_rlhf(subset):
    rows, bad_lines, empty, identical, (n_train, n_test) = HH[subset]
    result = load_records(shared_file(f"hh-rlhf/{subset}/test.jsonl.gz"), skip_bad=True)
    assert result.format == "hh"
    assert (result.n_rows, len(result), result.skipped) == (rows, rows - len(bad_lines), len(bad_lines))
    assert [e.line for e in result.errors] == bad_lines
    assert all(e.field in ("chosen", "rejected") for e in result.errors)

    problems = {p["kind"]: p["count"] for p in inspect_records(result)["problems"]}
    assert problems.get("empty_response", 0) == empty
    assert problems.get("identical_responses", 0) == identical
    assert "duplicate_id" not in problems

    for rec in result.records:
        assert rec.prompt[0]["role"] == "user" and rec.prompt[-1]["role"] == "user"
        assert all(m["content"] == m["content"].strip() for m in rec.prompt)

    # The agreed split counts file rows, so the skipped rows still sit on their side of the cut.
    train, test = agreed_split(result, "train"), agreed_split(result, "test")
    cut = round(0.8 * rows)
    assert (cut, rows - cut) == (n_train, n_test)
    assert len(train) + sum(line <= cut for line in bad_lines) == n_train
    assert len(test) + sum(line > cut for line in bad_lines) == n_test


def test_hh_rlhf_first_bad_row_raises_without_skip_bad():
    with pytest.raises(DataError) as info:
        load_records(shared_file("hh-rlhf/harmless-base/test.jsonl.gz"))
    assert (info.value.line, info.value.field) == (1255, "chosen")
    assert "test.jsonl.gz:1255" in str(info.value)


def test_pandalm():
    result = load_records(shared_file("pandalm/testset-v1.json"))
    assert (result.format, len(result), result.skipped) == ("pandalm", 999, 0)
    assert all(len(r.votes) == 3 and len(r.responses) == 2 for r in result.records)
    first = result.records[0]
    assert first.id == "0" and first.subset == "Grammarly" and first.votes == [1, 1, 1]
    assert first.prompt[0]["content"].startswith("The sentence you are given") and "\n\nIf you have" in \
        first.prompt[0]["content"]
    # Six responses are the JSON boolean true in the file: they load as the text "True".
    assert sum(r.content == "True" for rec in result.records for r in rec.responses) >= 6
    all_ties = [r for r in result.records if r.votes == [None, None, None]]
    assert len(all_ties) == 85 and all(r.comparisons() == [] for r in all_ties)


@pytest.mark.parametrize("name, rows", [("gsm8k", 400), ("math", 1000)])
def test_processbench(name, rows):
    result = load_records(shared_file(f"processbench/{name}.json"))
    assert (result.format, len(result), result.skipped) == ("processbench", rows, 0)
    for rec in result.records:
        (labels,), steps = rec.step_labels, rec.responses[0].steps
        assert len(labels) == len(steps) and rec.responses[0].content == "\n\n".join(steps)
        error = rec.meta["earliest_error"]
        if error < 0:
            assert labels == [1.0] * len(steps)
        else:
            assert labels[:error] == [1.0] * error and labels[error] == 0.0
            assert all(v is None for v in labels[error + 1:])
    assert result.records[0].id == f"{name}-0"
