"""What the data tests share: writing rows to a file, and checking that a bad row's error points at it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.data import load_records
from rewardkit.errors import DataError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def bad_row_error(tmp_path: Path, *rows: dict, format: str | None = None, **kwargs) -> DataError:
    """Load rows whose last one is bad (the ones before it are good); return the DataError it raised."""
    path = write_jsonl(tmp_path / "bad.jsonl", list(rows))
    with pytest.raises(DataError) as info:
        load_records(path, format=format, **kwargs)
    return info.value


def assert_points_at(err: DataError, line: int, field: str | None, file: str = "bad.jsonl") -> None:
    """The error names the file, the line and the field, in its attributes and in its message."""
    assert Path(err.file).name == file
    assert err.line == line
    assert err.field == field
    assert f"{file}:{line}:" in str(err)
    if field:
        assert f"'{field}'" in str(err)
