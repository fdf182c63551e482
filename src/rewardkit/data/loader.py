"""Reading data files and turning their rows into validated PreferenceRecords.

Readers yield raw rows (dicts) with their 1-based position; the loader applies the field mapping, picks the
format (named, or detected from the first row), converts and validates each row. A bad row raises its
DataError, or with `skip_bad` is counted and skipped. `iter_records` streams (the scoring command reads
large files with it); `load_records` collects everything into a LoadResult.

A detected format is a guess from one row's keys, so it is not final: when it rejects every row (without
`skip_bad`, the first row: any bad row would stop the load anyway), the loader tries the other formats whose
detectors accept that row, then says which formats it tried and why each failed if none fits.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from rewardkit.data.formats import (FORMATS, Converter, RowContext, converter_for, describe_formats, formats_fitting,
                                    resolve_format, validate_record)
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
    passed_over: the formats tried before `format` and why each was not used ("generic: line 1: field
               'responses': expected a list of responses"); empty when the first one tried was used.
    """

    path: str = ""
    format: str | None = None
    rows: int = 0
    skipped: int = 0
    errors: list[DataError] = field(default_factory=list)
    truncated: bool = False
    passed_over: list[str] = field(default_factory=list)


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
    passed_over: list[str] = field(default_factory=list)  # formats tried before `format` (LoadStats)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PreferenceRecord]:
        return iter(self.records)


def load_records(path: str | Path, format: str | None = None, field_map: dict[str, str] | None = None,
                 skip_bad: bool = False, limit: int | None = None,
                 format_options: dict[str, Any] | None = None, *,
                 preferred_format: str | None = None) -> LoadResult:
    """Every record of a file; see `iter_records` for the arguments."""
    stats = LoadStats()
    records, row_numbers = [], []
    for record in iter_records(path, format, field_map, skip_bad, limit, stats=stats,
                               format_options=format_options, preferred_format=preferred_format):
        records.append(record)
        row_numbers.append(stats.rows)  # the row just read is the one this record came from
    return LoadResult(records, stats.skipped, stats.errors, stats.format or "", stats.path, stats.rows,
                      stats.truncated, row_numbers, stats.passed_over)


def iter_records(path: str | Path, format: str | None = None, field_map: dict[str, str] | None = None,
                 skip_bad: bool = False, limit: int | None = None,
                 stats: LoadStats | None = None,
                 format_options: dict[str, Any] | None = None, *,
                 preferred_format: str | None = None) -> Iterator[PreferenceRecord]:
    """Stream records from a .jsonl(.gz), .json(.gz) list, .parquet or `datasets.save_to_disk` directory.

    format:    a name in FORMATS ('-' and '_' alike: 'rm_bench' is 'rm-bench'); every row is read in it.
               None detects it from the first row (after field mapping), with the fallback described in the
               module docstring.
    field_map: {canonical_name: source_name}, renames the row's fields before the adapter sees them,
               e.g. {"prompt": "question", "chosen": "good", "rejected": "bad"}.
    skip_bad:  count and skip bad rows instead of raising the first one's DataError. A file whose every row
               is bad is still an error, one that says why the rows were rejected.
    limit:     stop after this many records.
    stats:     a LoadStats to fill in (skipped count, kept errors, detected format, rows read).
    format_options: keyword options for the format's converter, e.g. {"neutral": 0.0} for prm800k (see
               each Format's `options`). Passing one the format does not take is an error, and so is a
               bad value; with a detected format they are checked when the first row fixes the format.
    preferred_format: with `format` None, the format to try first, before those detected from the first
               row (what a benchmark implies: `eval --benchmark rm_bench` prefers 'rm-bench'); unlike
               `format` it falls back to the detected ones when it rejects every row.

    Problems with the call itself (missing file, unknown extension, format name or option) raise here,
    before iteration starts; problems with rows raise (or are counted) as the rows are reached.
    """
    stats = stats if stats is not None else LoadStats()
    path = Path(path)
    format = None if format is None else resolve_format(format)
    preferred = None if preferred_format is None else resolve_format(preferred_format)
    stats.path, stats.format = str(path), format
    convert = None if format is None else converter_for(format, format_options, file=str(path))
    rows = _open_rows(path)
    reader = _Reader(path, field_map or {}, skip_bad, limit, stats)
    if convert is None:
        return reader.detected(rows, preferred, format_options)
    return reader.given(rows, format, convert)


@dataclass
class _Attempt:
    """One format tried on a file: why it was tried, and the first row it rejected."""

    name: str
    why: str
    error: DataError | None = None
    rejected: int = 0  # rows it rejected (skip_bad); 0 when it failed on the first row or on its options


@dataclass
class _Reader:
    path: Path
    field_map: dict[str, str]
    skip_bad: bool
    limit: int | None
    stats: LoadStats

    @property
    def file(self) -> str:
        return str(self.path)

    def context(self, line: int) -> RowContext:
        return RowContext(self.file, line, _unit(self.path))

    def rows_in(self, rows: Iterator[tuple[int, Any]], convert: Converter, attempt: _Attempt
                ) -> Iterator[PreferenceRecord]:
        """The rows read by one format: bad rows raise, or are counted (and the attempt's rejections with
        them); stops at `limit`."""
        yielded = 0
        for line, raw in rows:
            if self.limit is not None and yielded >= self.limit:
                self.stats.truncated = True
                return
            self.stats.rows += 1
            ctx = self.context(line)
            try:
                row = _mapped(raw, self.field_map, ctx)
            except DataError as err:
                _skip_or_raise(err, self.skip_bad, self.stats)
                continue
            try:
                record = validate_record(convert(row, ctx), ctx)
            except DataError as err:
                err = _in_source_terms(err, self.field_map)
                attempt.rejected += 1
                attempt.error = attempt.error or err
                _skip_or_raise(err, self.skip_bad, self.stats)
                continue
            yielded += 1
            yield record

    def given(self, rows: Iterator[tuple[int, Any]], name: str, convert: Converter) -> Iterator[PreferenceRecord]:
        attempt = _Attempt(name, "given")
        yielded = 0
        for record in self.rows_in(rows, convert, attempt):
            yielded += 1
            yield record
        self.check_read(yielded, [attempt])

    def check_read(self, yielded: int, attempts: list[_Attempt]) -> None:
        """The end of a file: an error if it had no rows, or if every row was rejected (skip_bad)."""
        if yielded or self.stats.truncated:
            return
        if self.stats.rows == 0:
            raise DataError("no rows: the file is empty", file=self.file)
        raise _rejected_everywhere(self.file, self.stats, attempts, _unit(self.path))

    def detected(self, rows: Iterator[tuple[int, Any]], preferred: str | None,
                 options: dict[str, Any] | None) -> Iterator[PreferenceRecord]:
        # The first row that maps decides which formats to try; the bad rows before it are bad in any format.
        for line, raw in rows:
            ctx = self.context(line)
            try:
                row = _mapped(raw, self.field_map, ctx)
                break
            except DataError as err:
                self.stats.rows += 1
                _skip_or_raise(err, self.skip_bad, self.stats)
        else:
            self.check_read(0, [])
            return
        attempts, converters = self.candidates(row, ctx, preferred, options)
        for i, (attempt, convert) in enumerate(zip(attempts, converters)):
            if convert is None:  # it does not take the options given
                continue
            self.stats.format = attempt.name
            self.stats.passed_over = [_passed_over(a, _unit(self.path)) for a in attempts[:i]]
            if not self.skip_bad:  # any bad row stops the load: a format that rejects the first row is out
                try:
                    validate_record(convert(row, ctx), ctx)
                except DataError as err:
                    attempt.error = _in_source_terms(err, self.field_map)
                    continue
                yield from self.rows_in(chain([(line, raw)], rows), convert, attempt)
                return
            if i > 0 and any(c is not None for c in converters[:i]):  # read the file again from the start
                rows = _open_rows(self.path)
                self.stats.rows, self.stats.skipped, self.stats.errors = 0, 0, []
            else:
                rows = chain([(line, raw)], rows)
            yielded = 0
            for record in self.rows_in(rows, convert, attempt):
                yielded += 1
                yield record
            if yielded or self.stats.truncated:
                return
        if not self.skip_bad:
            raise _first_row_rejected(attempts, _unit(self.path))
        raise _rejected_everywhere(self.file, self.stats, attempts, _unit(self.path))

    def candidates(self, row: dict, ctx: RowContext, preferred: str | None, options: dict[str, Any] | None
                   ) -> tuple[list[_Attempt], list[Converter | None]]:
        """The formats to try, in order (the preferred one, then every one whose detector accepts the row),
        with their converters: None for one that does not take the options (an error when none does)."""
        fitting = formats_fitting(row)
        if preferred is None and not fitting:  # not skippable: no later row would fit either
            raise ctx.error(f"cannot detect the format: the first readable row has the keys "
                            f"{', '.join(map(str, row)) or '(none)'}. Known formats: {describe_formats()}. "
                            "Name one explicitly, or map your fields onto one with a field map")
        attempts = [] if preferred is None else [_Attempt(preferred, "preferred")]
        for i, name in enumerate(fitting):
            if name != preferred:
                attempts.append(_Attempt(name, "detected" if i == 0 else "its keys fit too"))
        converters, option_errors = [], []
        for attempt in attempts:
            try:
                converters.append(converter_for(attempt.name, options, file=self.file))
            except DataError as err:  # a bad option is the call's error, unless another format takes it
                attempt.error = err
                option_errors.append(err)
                converters.append(None)
        if len(option_errors) == len(attempts):  # the error of a format that has the option, if one does
            raise next((a.error for a in attempts if set(options or {}) & set(FORMATS[a.name].options)),
                       option_errors[0])
        return attempts, converters


def _brief(err: DataError, unit: str) -> str:
    """An error without its file: 'line 3: field 'chosen': expected ...' (the file is said once)."""
    reason = err.reason
    if err.line is not None and reason.endswith(f" ({unit} {err.line})"):
        reason = reason[: -len(f" ({unit} {err.line})")]
    where = [f"{unit} {err.line}"] if err.line is not None else []
    where += [f"field '{err.field}'"] if err.field else []
    return ": ".join([*where, reason])


def _passed_over(attempt: _Attempt, unit: str) -> str:
    if attempt.error is None:
        return attempt.name
    rejected = f"rejected every row ({attempt.rejected}), first " if attempt.rejected else ""
    return f"{attempt.name}: {rejected}{_brief(attempt.error, unit)}"


_NAME_IT = ("Name the format explicitly (format=..., --format), or map the fields onto one with a field map "
            "(field_map=..., --map)")


def _first_row_rejected(attempts: list[_Attempt], unit: str) -> DataError:
    """No format read the first row. One format tried: its own error and its name. Several: the error of the
    first one that read the row (its line and field), then each other format and why it failed."""
    first = next(a for a in attempts if a.error is not None and a.error.line is not None)
    if len(attempts) == 1:  # its own error, saying which format read the row that way
        return DataError(f"{first.error.reason} (as {first.name}, {first.why})", file=first.error.file,
                         line=first.error.line, field=first.error.field)
    others = "; ".join(f"{a.name} ({a.why}): {_brief(a.error, unit)}" for a in attempts if a is not first)
    return DataError(f"{first.error.reason} (as {first.name}, {first.why}; also tried {others}). {_NAME_IT}",
                     file=first.error.file, line=first.error.line, field=first.error.field)


def _rejected_everywhere(file: str, stats: LoadStats, attempts: list[_Attempt], unit: str) -> DataError:
    """Every row was rejected (skip_bad): by each format tried, with the first rejection of each."""
    rows = f"{stats.rows} row{'s' if stats.rows != 1 else ''}"
    if not any(a.rejected for a in attempts):  # no row could even be read as an object with the mapped fields
        first = f"; the first: {_brief(stats.errors[0], unit)}" if stats.errors else ""
        return DataError(f"none of its {rows} could be read{first}", file=file)
    tried = "; ".join(f"{a.name} ({a.why}): {_brief(a.error, unit)}"
                      + (f" ({a.rejected} rows rejected)" if a.rejected > 1 else "")
                      for a in attempts if a.error is not None)
    formats = "the format tried" if len(attempts) == 1 else f"each of the {len(attempts)} formats tried"
    hint = ("Is it the right format? Map the fields onto it with a field map (field_map=..., --map)"
            if [a.why for a in attempts] == ["given"] else _NAME_IT)
    return DataError(f"every one of its {rows} was rejected by {formats}: {tried}. {hint}", file=file)


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
               limit: int | None = None, format_options: dict[str, Any] | None = None, *,
               preferred_format: str | None = None) -> LoadResult:
    """`load_records` restricted to one part of the agreed split ("all", "train" or "test").

    The result describes that part alone: its records (the first `limit` of them), and the bad rows
    (`skipped`, `errors`) that fell inside it.
    """
    if split not in ("all", "train", "test"):
        raise DataError(f"split must be all, train or test, got {split!r}")
    if split == "all":
        return load_records(path, format, field_map, skip_bad, limit, format_options,
                            preferred_format=preferred_format)
    result = load_records(path, format, field_map, skip_bad, format_options=format_options,
                          preferred_format=preferred_format)  # needs the row count
    first, last = _part_rows(result.n_rows, split)
    part = [(r, n) for r, n in zip(result.records, result.row_numbers) if first <= n <= last]
    result.skipped = (last - first + 1) - len(part)  # the bad rows of this part only
    result.errors = [e for e in result.errors if e.line is None or first <= e.line <= last]
    result.records = [r for r, _ in part][:limit]
    result.row_numbers = [n for _, n in part][:limit]
    return result
