"""Errors a user can act on. The CLI prints these as one clear line instead of a traceback."""

from __future__ import annotations


class RewardkitError(Exception):
    """Base class for every error caused by user input (files, configs, models, requests)."""


class DataError(RewardkitError):
    """A bad row or file: says which file, which line (or item) and which field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}" if where else f"{what}{message}")


class ModelError(RewardkitError):
    """A model path, checkpoint or metadata file that cannot be used."""


def first_line(e: Exception) -> str:
    """The first line of an exception's message (or its type), for one-line error reports."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
