"""Score a stream of records into a JSONL file that can be resumed after an interruption.

Lines go to `OUT.partial` as each chunk of records is scored (flushed and fsynced), and the file is renamed to
`OUT` only when every record is done, so `OUT` is never half-written. Run the same command again after a
crash and it keeps the complete lines of `OUT.partial`, drops a torn last line, and scores only the records
whose ids are not there yet: nothing is duplicated or lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError, RewardkitError
from rewardkit.models.scorer import Scorer


@dataclass
class ScoreFileSummary:
    output: Path
    scored: int  # records scored in this run
    resumed: int  # records kept from an earlier, interrupted run


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def score_records_to_file(scorer: Scorer, records: Iterable[PreferenceRecord], output: str | os.PathLike, *,
                          chunk_size: int = 64, overwrite: bool = False,
                          progress: Callable[[int], Any] | None = None) -> ScoreFileSummary:
    """Write one line per record: {"id", "rewards", ...every other score the Scorer returns}.

    `progress(n)` is called with the number of records finished (including resumed ones).
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise RewardkitError(f"{output} already exists; pass overwrite (--overwrite) to replace it")
    partial = partial_path(output)
    done = _recover(partial)
    if done and progress is not None:
        progress(len(done))
    seen: set[str] = set()
    scored = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as out:
        for chunk in _chunks(_unique(records, seen), chunk_size):
            todo = [r for r in chunk if r.id not in done]
            if todo:
                for record, result in zip(todo, scorer.score(todo)):
                    out.write(json.dumps({"id": record.id, **result.to_json()}, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                scored += len(todo)
                if progress is not None:
                    progress(len(todo))
    missing = done - seen
    if missing:
        raise RewardkitError(f"{partial} holds {len(missing)} id(s) that are not in the input (e.g. "
                             f"{sorted(missing)[0]!r}): it belongs to another input; delete it to start over")
    os.replace(partial, output)
    return ScoreFileSummary(output, scored, len(done))


def _recover(partial: Path) -> set[str]:
    """Ids already written by an interrupted run."""
    return {row["id"] for row in read_partial(partial, "rewardkit score")}


def read_partial(partial: Path, writer: str) -> list[dict[str, Any]]:
    """The lines an interrupted run wrote to `partial`, parsed, in file order; [] when there is no such file.

    A torn final line (no newline: the run died while writing it) is cut off the file, so the next run appends
    after the last complete line. Every kept line must be a JSON object with an "id"; anything else is a
    DataError naming the file and line (`writer` names the command that writes such files).
    """
    if not partial.exists():
        return []
    data = partial.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(partial, "r+b") as f:
            f.truncate(len(keep))
    rows = []
    for n, line in enumerate(keep.decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            row["id"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"not a line written by {writer} ({e}); delete the file to start over",
                            file=str(partial), line=n) from e
        rows.append(row)
    return rows


def _unique(records: Iterable[PreferenceRecord], seen: set[str]) -> Iterator[PreferenceRecord]:
    """Resuming is keyed by id, so ids must be unique."""
    for r in records:
        if r.id in seen:
            raise DataError(f"duplicate id {r.id!r}: ids must be unique to score a file",
                            file=r.meta.get("file"), line=r.meta.get("line"), field="id")
        seen.add(r.id)
        yield r


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    chunk: list = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
