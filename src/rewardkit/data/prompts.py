"""Prompts without responses: what a policy is sampled on (`rewardkit sample --prompts FILE`).

A prompts file is read by the rule that fits first:

- a text file (`.txt`, `.txt.gz`): one prompt a line, each a single user turn; blank lines are skipped;
- a row with a `prompt` field (JSON Lines, JSON list, Parquet, a `datasets` directory): that field is the
  prompt, as text (one user turn) or as chat messages; `id` is kept when the row has one. Other fields
  (responses, chosen, ...) are ignored, so a generic, TRL or RewardBench file is a prompts file as it is;
- any other row is read by the data format it fits (HH-RLHF transcripts, ProcessBench, ...), and the prompt is
  the one its record would have: HH-RLHF's is the turns its two transcripts share.

Ids are the row's own, else `FILE_STEM:LINE` as the loader makes them, and must be unique (a resumed run is
keyed by id). A bad row is a DataError naming the file, the line and the field.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.data.formats import RowContext, _prompt, _row_id, converter_for, formats_fitting, resolve_format
from rewardkit.data.loader import _open_rows, _unit
from rewardkit.data.record import Message, user_prompt
from rewardkit.errors import DataError

TEXT_SUFFIXES = (".txt", ".txt.gz")


@dataclass
class Prompt:
    """One prompt to sample: its id, the conversation so far, and where it came from ({file, line, format})."""

    id: str
    messages: list[Message]
    source: dict[str, Any] = field(default_factory=dict)


def load_prompts(path: str | Path, format: str | None = None, limit: int | None = None) -> list[Prompt]:
    """Every prompt of a file, in file order (the first `limit` of them); see the module docstring for the
    rules. `format` reads every row in that data format instead of by the rules. An empty file, or a file
    with no prompt at all, is an error."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for prompt in _prompts_in(path, format):
        if limit is not None and len(prompts) >= limit:
            break
        line = prompt.source.get("line")
        if prompt.id in seen:
            raise DataError(f"duplicate id {prompt.id!r} (first on line {seen[prompt.id]}): ids must be unique to "
                            f"sample a file", file=str(path), line=line, field="id")
        seen[prompt.id] = line
        prompts.append(prompt)
    if not prompts:
        raise DataError("no prompts: the file is empty", file=str(path))
    return prompts


def _prompts_in(path: Path, format: str | None) -> Iterator[Prompt]:
    if path.is_file() and path.name.lower().endswith(TEXT_SUFFIXES):
        if format is not None:
            raise DataError("a text file is one prompt a line; --format applies to data files", file=str(path))
        yield from _text_prompts(path)
        return
    name = None if format is None else resolve_format(format)
    convert = None if name is None else converter_for(name, file=str(path))
    for line, raw in _open_rows(path):
        ctx = RowContext(str(path), line, _unit(path))
        if isinstance(raw, DataError):  # a row the reader could not parse
            raise raw
        if not isinstance(raw, dict):
            raise ctx.error(f"expected a JSON object per row, got {type(raw).__name__}")
        if convert is not None:
            yield _from_record(convert(raw, ctx), ctx, name)
        elif "prompt" in raw:
            yield Prompt(_row_id(raw, ctx), prompt_messages(raw["prompt"], "prompt", ctx),
                         {"file": str(path), "line": line})
        else:
            yield _detected(raw, ctx)


def prompt_messages(value: Any, field: str, ctx: RowContext) -> list[Message]:
    """A prompt as text (one user turn) or as chat messages; anything else, or an empty prompt, is an error."""
    if isinstance(value, str):
        if not value.strip():
            raise ctx.error("the prompt is empty", field)
        return user_prompt(value)
    if not isinstance(value, list):
        raise ctx.error(f"expected text or a list of {{role, content}} messages, got {type(value).__name__}", field)
    return _prompt(value, field, ctx)


def _detected(row: dict, ctx: RowContext) -> Prompt:
    """A row without a `prompt` field, read by the first data format that fits it and converts it."""
    fitting = formats_fitting(row)
    if not fitting:
        raise ctx.error(f"no prompt: the row has no 'prompt' field and fits no data format (its keys: "
                        f"{', '.join(map(str, row)) or '(none)'}); give each row a 'prompt' (text or "
                        f"{{role, content}} messages), or use a text file with one prompt a line")
    first_error = None
    for name in fitting:
        try:
            return _from_record(converter_for(name)(row, ctx), ctx, name)
        except DataError as e:
            first_error = first_error or e
    raise first_error


def _from_record(record, ctx: RowContext, format: str) -> Prompt:
    if not record.prompt:
        raise ctx.error("the record has no prompt", "prompt")
    return Prompt(record.id, record.prompt, {"file": ctx.file, "line": ctx.line, "format": format})


def _text_prompts(path: Path) -> Iterator[Prompt]:
    stem = path.name.split(".")[0] or path.name
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line, text in enumerate(f, 1):
                text = text.rstrip("\r\n")
                if text.strip():
                    yield Prompt(f"{stem}:{line}", user_prompt(text), {"file": str(path), "line": line})
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"cannot read: {e}", file=str(path)) from None
