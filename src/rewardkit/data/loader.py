"""Reading data files and turning their rows into validated PreferenceRecords.

Readers yield raw rows (dicts) with their 1-based position; the loader applies the field mapping, picks the
format (named, or detected from the first row), converts and validates each row. A bad row raises its
DataError, or with `skip_bad` is counted and skipped. `iter_records` streams (the scoring command reads
large files with it); `load_records` collects everything into a LoadResult.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.data.formats import (FORMATS, Converter, RowContext, converter_for, describe_formats, detect_format,
                                    validate_record)
from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError

MAX_KEPT_ERRORS = 20  # a file with thousands of bad rows needs a few examples and a count, not all of them
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", "a `datasets.save_to_disk` directory")


@dataclass
class LoadStats:
    """Counts a streaming read fills in as it goes; complete once the iterator is exhausted.

    rows:      rows read (bad ones included, blank lines not): the `n` of the agreed splits.
    skipped:   bad rows skipped (skip_bad=True).
    errors:    the DataErrors of the first MAX_KEPT_ERRORS skipped rows.
    truncated: reading stopped at `limit` before the end of the file.
    """

    path: str = ""
    format: str | None = None
    rows: int = 0
    skipped: int = 0
    errors: list[DataError] = field(default_factory=list)
    truncated: bool = False


@dataclass
class LoadResult:
    records: list[PreferenceRecord]
    skipped: int
    errors: list[DataError]
    format: str
    path: str
    n_rows: int = 0  # rows read, bad ones included
    truncated: bool = False
    row_numbers: list[int] = field(default_factory=list)  # each record's 1-based row in the file read

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PreferenceRecord]:
        return iter(self.records)


def load_records(path: str | Path, format: str | None = None, field_map: dict[str, str] | None = None,
                 skip_bad: bool = False, limit: int | None = None,
                 format_options: dict[str, Any] | None = None) -> LoadResult:
    """Every record of a file; see `iter_records` for the arguments."""
    stats = LoadStats()
    records, row_numbers = [], []
    for record in iter_records(path, format, field_map, skip_bad, limit, stats=stats,
                               format_options=format_options):
        records.append(record)
        row_numbers.append(stats.rows)  # the row just read is the one this record came from
    return LoadResult(records, stats.skipped, stats.errors, stats.format or "", stats.path, stats.rows,
                      stats.truncated, row_numbers)


def iter_records(path: str | Path, format: str | None = None, field_map: dict[str, str] | None = None,
                 skip_bad: bool = False, limit: int | None = None,
                 stats: LoadStats | None = None,
                 format_options: dict[str, Any] | None = None) -> Iterator[PreferenceRecord]:
    """Stream records from a .jsonl(.gz), .json(.gz) list, .parquet or `datasets.save_to_disk` directory.

    format:    a name in FORMATS; None detects it from the first row (after field mapping).
    field_map: {canonical_name: source_name}, renames the row's fields before the adapter sees them,
               e.g. {"prompt": "question", "chosen": "good", "rejected": "bad"}.
    skip_bad:  count and skip bad rows instead of raising the first one's DataError.
    limit:     stop after this many records.
    stats:     a LoadStats to fill in (skipped count, kept errors, detected format, rows read).
    format_options: keyword options for the format's converter, e.g. {"neutral": 0.0} for prm800k (see
               each Format's `options`). Passing one the format does not take is an error, and so is a
               bad value; with a detected format they are checked when the first row fixes the format.

    Problems with the call itself (missing file, unknown extension, format name or option) raise here,
    before iteration starts; problems with rows raise (or are counted) as the rows are reached.
    """
    stats = stats if stats is not None else LoadStats()
    path = Path(path)
    stats.path, stats.format = str(path), format
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
    convert = None if format is None else converter_for(format, format_options, file=str(path))
    rows = _open_rows(path)
    return _records(rows, str(path), convert, format_options, field_map or {}, skip_bad, limit, stats)


def _records(rows: Iterator[tuple[int, Any]], file: str, convert: Converter | None,
             format_options: dict[str, Any] | None, field_map: dict[str, str], skip_bad: bool,
             limit: int | None, stats: LoadStats) -> Iterator[PreferenceRecord]:
    unit = _unit(Path(file))
    yielded = 0
    for line, raw in rows:
        if limit is not None and yielded >= limit:
            stats.truncated = True
            return
        stats.rows += 1
        ctx = RowContext(file, line, unit)
        try:
            row = _mapped(raw, field_map, ctx)
        except DataError as err:
            _skip_or_raise(err, skip_bad, stats)
            continue
        if convert is None:  # not skippable: if the first good row fits no format, the others won't either
            stats.format = _detect(row, ctx)
            convert = converter_for(stats.format, format_options, file=file)  # a bad option: not skippable
        try:
            record = validate_record(convert(row, ctx), ctx)
        except DataError as err:
            _skip_or_raise(_in_source_terms(err, field_map), skip_bad, stats)
            continue
        yielded += 1
        yield record
    if stats.rows == 0:
        raise DataError("no rows: the file is empty", file=file)


def _skip_or_raise(err: DataError, skip_bad: bool, stats: LoadStats) -> None:
    if not skip_bad:
        raise err
    stats.skipped += 1
    if len(stats.errors) < MAX_KEPT_ERRORS:
        stats.errors.append(err)


def _mapped(row: Any, field_map: dict[str, str], ctx: RowContext) -> dict:
    if isinstance(row, DataError):  # a reader could not parse this row
        raise row
    if not isinstance(row, dict):
        raise ctx.error(f"expected a JSON object per row, got {type(row).__name__}")
    if not field_map:
        return row
    for canonical, source in field_map.items():
        if source not in row:
            raise ctx.error(f"missing (field_map maps {canonical!r} to it); the row has: {', '.join(row)}",
                            source)
    # Built from the original row, so a map that swaps two columns ({"chosen": "rejected", ...}) works.
    mapped = {k: v for k, v in row.items() if k not in field_map.values()}
    mapped.update({canonical: row[source] for canonical, source in field_map.items()})
    return mapped


def _detect(row: dict, ctx: RowContext) -> str:
    name = detect_format(row)
    if name is None:
        raise ctx.error(f"cannot detect the format: the first readable row has the keys "
                        f"{', '.join(map(str, row)) or '(none)'}. Known formats: {describe_formats()}. "
                        "Name one explicitly, or map your fields onto one with a field map")
    return name


def _in_source_terms(err: DataError, field_map: dict[str, str]) -> DataError:
    """An adapter names canonical fields; with a field map, point at the user's own column instead."""
    root = re.match(r"[A-Za-z_]\w*", err.field or "")
    if not root or root.group() not in field_map:
        return err
    source = field_map[root.group()] + err.field[root.end():]
    return DataError(err.reason, file=err.file, line=err.line, field=source)


# ---------------------------------------------------------------------------------------------- readers


def _unit(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "line"
    return "item" if name.endswith((".json", ".json.gz")) else "row"


def _open_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based position, row) pairs; a row that cannot be parsed is given as its DataError instead."""
    if not path.exists():
        raise DataError("no such file or directory", file=str(path))
    name = path.name.lower()
    if path.is_dir():
        return _dataset_rows(path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl_rows(path)
    if name.endswith((".json", ".json.gz")):
        return _json_list_rows(path)
    if name.endswith(".parquet"):
        return _parquet_rows(path)
    raise DataError(f"unknown file type; supported: {', '.join(SUFFIXES)}", file=str(path))


def _text_open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.lower().endswith(".gz") else \
        open(path, encoding="utf-8")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with _text_open(path) as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    yield line, json.loads(text)
                except json.JSONDecodeError as e:
                    yield line, DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=str(path), line=line)
    except (OSError, UnicodeDecodeError, EOFError) as e:  # not gzip, truncated gzip, not UTF-8
        raise DataError(f"cannot read: {e}", file=str(path)) from None


def _json_list_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with _text_open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno}){hint}", file=str(path), line=e.lineno) from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"cannot read: {e}", file=str(path)) from None
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of rows, got a {type(data).__name__}", file=str(path))
    yield from enumerate(data, 1)


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataError(f"cannot read as Parquet: {e}", file=str(path)) from None
    line = 0
    for batch in table.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _dataset_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # not a saved dataset: datasets raises FileNotFoundError and others
        raise DataError(f"not a `datasets.save_to_disk` directory: {e}", file=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        if "test" not in ds:
            raise DataError(f"a DatasetDict without a 'test' split; its splits are: {', '.join(ds)}. "
                            "Save the split you want with `ds[split].save_to_disk(...)`", file=str(path))
        ds = ds["test"]
    yield from enumerate(ds, 1)


# ----------------------------------------------------------------------------------------------- splits


def agreed_split(data: LoadResult | Sequence[PreferenceRecord], part: str) -> list[PreferenceRecord]:
    """The project's agreed train/test split: the first round(0.8 * n) rows of a file are train.

    Pass the LoadResult, not its record list: n is then the number of rows in the file, bad rows
    included, and each record keeps its row number, so skipping a bad row never moves the cut. A plain
    list of records is split by position. Split the original files: a converted copy without its bad rows
    has a different n.
    """
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    if isinstance(data, LoadResult):
        if data.truncated:
            raise ValueError("cannot split a LoadResult read with a limit: the file's row count is unknown")
        first, last = _part_rows(data.n_rows, part)
        return [r for r, row in zip(data.records, data.row_numbers) if first <= row <= last]
    records = list(data)
    first, last = _part_rows(len(records), part)
    return records[first - 1: last]


def _part_rows(n_rows: int, part: str) -> tuple[int, int]:
    """First and last 1-based row of the agreed part: train is the first round(0.8 * n) rows."""
    cut = round(0.8 * n_rows)
    return (1, cut) if part == "train" else (cut + 1, n_rows)


def load_split(path: str | Path, split: str = "all", format: str | None = None,
               field_map: dict[str, str] | None = None, skip_bad: bool = False,
               limit: int | None = None, format_options: dict[str, Any] | None = None) -> LoadResult:
    """`load_records` restricted to one part of the agreed split ("all", "train" or "test").

    The result describes that part alone: its records (the first `limit` of them), and the bad rows
    (`skipped`, `errors`) that fell inside it.
    """
    if split not in ("all", "train", "test"):
        raise DataError(f"split must be all, train or test, got {split!r}")
    if split == "all":
        return load_records(path, format, field_map, skip_bad, limit, format_options)
    result = load_records(path, format, field_map, skip_bad, format_options=format_options)  # needs the row count
    first, last = _part_rows(result.n_rows, split)
    part = [(r, n) for r, n in zip(result.records, result.row_numbers) if first <= n <= last]
    result.skipped = (last - first + 1) - len(part)  # the bad rows of this part only
    result.errors = [e for e in result.errors if e.line is None or first <= e.line <= last]
    result.records = [r for r, _ in part][:limit]
    result.row_numbers = [n for _, n in part][:limit]
    return result
