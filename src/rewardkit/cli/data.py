"""`rewardkit` commands: look at and convert preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rewardkit.cli.common import (
    ExampleCommand, FormatOpt, FormatOptionOpt, LimitOpt, MapOpt, SkipBadOpt, SplitOpt, console, data_app,
    load_data, quiet_transformers, user_errors,
)


@data_app.command("inspect", cls=ExampleCommand)
def data_inspect(path: Annotated[Path, typer.Argument(help="A data file or datasets directory.")],
                 format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
                 skip_bad: SkipBadOpt = True,
                 model: Annotated[Optional[str], typer.Option(
                     "--model", "-m", help="Count lengths in this model's tokens (else whitespace words).")] = None,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False):
    """Counts, label kinds, token-length histogram and problems found (bad rows are counted, not fatal).

    Example: rewardkit data inspect runs/demo/data/synthetic_test.jsonl -m minilm
    """
    import json

    from rewardkit.data import format_inspection, inspect_records

    with user_errors():
        quiet_transformers()
        loaded = load_data(path, format, map, skip_bad, None, format_options=format_option)
        token_length = None
        if model:
            from rewardkit.models.reward_model import load_tokenizer

            tok = load_tokenizer(model)
            token_length = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        summary = inspect_records(loaded, token_length)
        print(json.dumps(summary, indent=2) if as_json else format_inspection(summary))


@data_app.command("convert", cls=ExampleCommand)
def data_convert(path: Annotated[Path, typer.Argument(help="A data file or datasets directory.")],
                 out: Annotated[Path, typer.Argument(help="Canonical JSONL to write.")],
                 format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
                 skip_bad: SkipBadOpt = False,
                 split: SplitOpt = "all", limit: LimitOpt = None):
    """Convert any supported format to canonical JSONL (one PreferenceRecord a line).

    Example: rewardkit data convert runs/demo/data/synthetic_train.jsonl runs/demo/heldout.jsonl --split test
    """
    from rewardkit.data import write_canonical_jsonl

    with user_errors():
        loaded = load_data(path, format, map, skip_bad, limit, split, format_options=format_option)
        write_canonical_jsonl(loaded.records, out)
        console.print(f"wrote {len(loaded.records)} records to {out}")
