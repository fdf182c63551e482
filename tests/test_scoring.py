"""Streaming a file of records to scores: resumable, never half-written, never duplicated."""

import json

import pytest

from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.errors import DataError, RewardkitError
from rewardkit.models.scorer import FunctionScorer
from rewardkit.scoring import partial_path, score_records_to_file


def records(n):
    return [PreferenceRecord(id=f"r{i}", prompt=[{"role": "user", "content": f"q{i}"}],
                             responses=[Response("a" * i), Response("b" * (2 * i))]) for i in range(n)]


LENGTH = FunctionScorer(lambda prompt, response: len(response.content), name="length")


class CrashAfter:
    """A scorer that is interrupted (Ctrl-C) on its n-th call."""

    def __init__(self, n):
        self.calls, self.n = 0, n

    def score(self, items):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return LENGTH.score(items)

    def describe(self):
        return {}


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_writes_one_line_per_record(tmp_path):
    out = tmp_path / "scores.jsonl"
    summary = score_records_to_file(LENGTH, records(10), out, chunk_size=3)
    got = lines(out)
    assert [g["id"] for g in got] == [f"r{i}" for i in range(10)]
    assert got[4]["rewards"] == [4.0, 8.0]
    assert summary.scored == 10 and summary.resumed == 0
    assert not partial_path(out).exists()


def test_interrupted_run_resumes_without_duplicates_or_losses(tmp_path):
    out = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_records_to_file(CrashAfter(3), records(10), out, chunk_size=3)
    assert not out.exists(), "the output must not look complete after a crash"
    assert len(lines(partial_path(out))) == 6
    # A torn last line, as a kill in the middle of a write leaves it.
    with open(partial_path(out), "a") as f:
        f.write('{"id": "r6", "rew')
    summary = score_records_to_file(LENGTH, records(10), out, chunk_size=3)
    assert summary.resumed == 6 and summary.scored == 4
    uninterrupted = tmp_path / "clean.jsonl"
    score_records_to_file(LENGTH, records(10), uninterrupted, chunk_size=3)
    assert sorted(lines(out), key=lambda x: x["id"]) == sorted(lines(uninterrupted), key=lambda x: x["id"])


def test_existing_output_is_not_overwritten_unless_asked(tmp_path):
    out = tmp_path / "scores.jsonl"
    out.write_text("precious\n")
    with pytest.raises(RewardkitError, match="already exists"):
        score_records_to_file(LENGTH, records(2), out)
    assert out.read_text() == "precious\n"
    score_records_to_file(LENGTH, records(2), out, overwrite=True)
    assert len(lines(out)) == 2


def test_duplicate_ids_are_refused(tmp_path):
    recs = records(3)
    recs[2].id = "r0"
    with pytest.raises(DataError, match="duplicate id 'r0'"):
        score_records_to_file(LENGTH, recs, tmp_path / "o.jsonl")


def test_partial_file_from_another_input_is_refused(tmp_path):
    out = tmp_path / "o.jsonl"
    partial_path(out).write_text('{"id": "zzz", "rewards": [1]}\n')
    with pytest.raises(RewardkitError, match="not in the input"):
        score_records_to_file(LENGTH, records(2), out)


def test_garbage_partial_file_names_the_line(tmp_path):
    out = tmp_path / "o.jsonl"
    partial_path(out).write_text('{"id": "r0", "rewards": [0, 0]}\nnot json\n')
    with pytest.raises(DataError, match=r"o\.jsonl\.partial:2"):
        score_records_to_file(LENGTH, records(2), out)
