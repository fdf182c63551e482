"""The loaders on the real shared data sets (../shared/data); each test skips cleanly when a file is absent.

The HH-RLHF numbers pin the loader's decisions on the odd rows: rows whose transcripts continue past the
first differing assistant turn (or end in a Human turn) are kept as whole continuations (meta
"continuation"); rows with an empty final turn or identical responses are kept, and `inspect` reports them.
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


# file -> (rows, continuation lines, empty final turns, identical pairs, agreed train/test rows) as found in the data
HH = {
    "harmless-base": (2312, [1255, 1689, 1951, 1953, 2037], 4, 0, (1850, 462)),
    "helpful-base": (2354, [169, 355, 568, 744, 961, 1012, 1167, 1308, 1451], 4, 2, (1883, 471)),
    "helpful-online": (1137, [786, 1056], 3, 2, (910, 227)),
    "helpful-rejection-sampled": (2749, [720, 1598, 2365], 0, 32, (2199, 550)),
}


@pytest.mark.parametrize("subset", sorted(HH))
def test_hh_rlhf(subset):
    rows, continuation_lines, empty, identical, (n_train, n_test) = HH[subset]
    result = load_records(shared_file(f"hh-rlhf/{subset}/test.jsonl.gz"))
    assert result.format == "hh"
    assert (result.n_rows, len(result), result.skipped) == (rows, rows, 0)
    continued = [n for rec, n in zip(result.records, result.row_numbers) if rec.meta.get("continuation")]
    assert continued == continuation_lines
    for rec in (r for r in result.records if r.meta.get("continuation")):
        assert len(rec.responses) == 2 and rec.prompt[-1]["role"] == "user"

    problems = {p["kind"]: p["count"] for p in inspect_records(result)["problems"]}
    assert problems.get("empty_response", 0) == empty
    assert problems.get("identical_responses", 0) == identical
    assert "duplicate_id" not in problems

    for rec in result.records:
        assert rec.prompt[0]["role"] == "user" and rec.prompt[-1]["role"] == "user"
        assert all(m["content"] == m["content"].strip() for m in rec.prompt)

    train, test = agreed_split(result, "train"), agreed_split(result, "test")
    assert (len(train), len(test)) == (n_train, n_test)


def test_hh_rlhf_continuation_row_keeps_both_whole_continuations():
    result = load_records(shared_file("hh-rlhf/harmless-base/test.jsonl.gz"), limit=1255)
    rec = result.records[-1]
    assert rec.meta["continuation"] and rec.prompt[-1]["content"] == "Isn't that drag kings?"
    assert rec.responses[0].content.startswith("No. Men who impersonate")
    assert rec.responses[0].content.endswith("\n\nAssistant: I think they call them that because")
    assert rec.responses[1].content.startswith("A drag king is the opposite")


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
