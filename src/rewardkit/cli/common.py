"""What every `rewardkit` command shares: the app, its error handling, progress bars and option types.

Every command turns its flags into library calls. Errors caused by user input (RewardkitError) are printed
as one line naming the file, line and field, with exit code 2; they never surface as a traceback.
"""

from __future__ import annotations

import inspect
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from rewardkit.errors import RewardkitError

EXAMPLE = "Example:"


def split_example(help_text: str | None) -> tuple[str | None, str | None]:
    """(the help without its example, the example as one line): the example is the help's paragraph that
    starts with "Example:", so a docstring can wrap it over several lines and it still runs as written."""
    if not help_text:
        return help_text, None
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    examples = [p for p in paragraphs if p.startswith(EXAMPLE)]
    if not examples:
        return help_text, None
    rest = "\n\n".join(p for p in paragraphs if not p.startswith(EXAMPLE))
    return rest, " ".join(examples[0][len(EXAMPLE):].split())


class _ExampleHelp:
    """--help ends with the command's example, printed as it is written: one line that Rich neither wraps
    at the terminal's width nor reads as markup, so it can be copied and run."""

    def __init__(self, *args, **kwargs):
        kwargs["help"], self.example = split_example(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        if self.example:
            sys.stdout.flush()  # after what Rich printed
            formatter.write(f"\n {EXAMPLE}\n   {self.example}\n")


class ExampleCommand(_ExampleHelp, TyperCommand):
    pass


class ExampleGroup(_ExampleHelp, TyperGroup):
    pass


app = typer.Typer(name="rewardkit", cls=ExampleGroup, add_completion=False, no_args_is_help=True,
                  help="Train, evaluate, stress-test and serve reward models.\n\n"
                       "Each command's --help ends with an example that runs on the files `rewardkit demo` writes "
                       "to runs/demo (its data, and the model it trained).\n\n"
                       "Example: rewardkit demo --out runs/demo")
data_app = typer.Typer(cls=ExampleGroup, no_args_is_help=True,
                       help="Look at and convert preference data.\n\n"
                            "Example: rewardkit data inspect runs/demo/data/synthetic_test.jsonl")
app.add_typer(data_app, name="data")
ensemble_app = typer.Typer(cls=ExampleGroup, no_args_is_help=True,
                           help="Work with several reward models as one (a manifest is used with --model DIR).\n\n"
                                "Example: rewardkit ensemble average runs/demo/train/best runs/demo/train/last "
                                "-d runs/demo/data/synthetic_test.jsonl -o runs/demo/warm")
app.add_typer(ensemble_app, name="ensemble")
console = Console(stderr=True, soft_wrap=True)  # an error stays one line in logs


def print_version(value: bool) -> None:
    if value:
        import rewardkit

        print(f"rewardkit {rewardkit.__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                               help="Print rewardkit's version and exit.")] = False) -> None:
    pass

# -- shared options ----------------------------------------------------------------------------------------------
MODEL_HELP = ("A reward model (a directory, a hub id, or a packaged offline backbone: 'minilm' or 'smollm2'); "
              "'dpo:POLICY[@REFERENCE][?beta=0.1&mode=avg]' for a DPO policy read as an implicit reward model; "
              "'judge:MODEL' or 'judge:http://HOST/v1?model=NAME' for an LLM judge; 'ensemble:A,B,C?agg=uwo' or an "
              "ensemble manifest for several models as one; 'http://HOST:PORT' for a running rewardkit serve.")
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
FormatOpt = Annotated[Optional[str], typer.Option(
    "--format", "-f", help="Input format ('-' or '_' alike, e.g. rm-bench); detected when left out, with the other "
                           "formats that fit the first row tried when the detected one rejects every row.")]
MapOpt = Annotated[Optional[str], typer.Option(
    "--map", help="Field mapping canonical=source, comma-separated, e.g. prompt=question,chosen=good.")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Count and skip bad rows instead of stopping.")]
MaxLenOpt = Annotated[Optional[int], typer.Option("--max-length", help="Token limit per sequence (prompt "
                                                                       "is cut from the left first).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto (bf16 where measured fast: see rewardkit doctor), "
                                                             "fp32 or bf16.")]
BatchTokensOpt = Annotated[int, typer.Option("--batch-tokens", help="Tokens (padding included) per forward pass.")]
SharePrefixOpt = Annotated[Optional[bool], typer.Option(
    "--share-prefix/--no-share-prefix", help="Score a prompt's responses in one packed row (default: wherever the "
                                             "backbone passes the equivalence check).")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the reward model's backbone: faster batches after a compile of a minute "
                      "or more (for servers and long jobs).")]
TemplateOpt = Annotated[Optional[Path], typer.Option(
    "--chat-template", help="A Jinja chat template file to render conversations with.")]
AggregationOpt = Annotated[Optional[str], typer.Option(
    "--aggregation", help="Process reward models: how step scores become a response's reward: product, min, "
                          "mean or last (default: the model's own).")]
FormatOptionOpt = Annotated[Optional[list[str]], typer.Option(
    "--format-option", help="KEY=VALUE option of the data format (repeatable), e.g. neutral=0 for prm800k's "
                            "neutral steps (YAML values: null leaves them unlabeled).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N records.")]
LengthCalibrationOpt = Annotated[Optional[Path], typer.Option(
    "--length-calibration", help="Subtract the reward-length trend saved by `rewardkit calibrate-length`.")]
SplitOpt = Annotated[str, typer.Option("--split", help="all, or the agreed line-order split: train "
                                                       "(first 80%) or test (last 20%).")]


def parse_format_options(items: list[str] | None) -> dict | None:
    import yaml

    if not items:
        return None
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RewardkitError(f"--format-option: expected KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise RewardkitError(f"--format-option {item!r}: the value is not valid YAML") from None
    return options


def parse_field_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping = {}
    for part in text.split(","):
        canonical, sep, source = part.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise RewardkitError(f"--map: expected canonical=source, got {part!r}")
        mapping[canonical.strip()] = source.strip()
    return mapping


@contextmanager
def user_errors():
    """Turn user-input errors into one clear line and exit code 2; Ctrl-C into exit code 130."""
    try:
        yield
    except RewardkitError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


class RateColumn(ProgressColumn):
    """Items per second over rich's recent window ("12.3 samples/s"); work counted in a task's starting
    `completed` (resumed from an earlier run) is not part of it."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def progress_bar(description: str, total: int | None, unit: str | None = None) -> Progress:
    """unit: add a rate column in that unit per second."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if unit:
        columns.append(RateColumn(unit))
    return Progress(*columns, console=console, transient=False, disable=not console.is_terminal and "CI" in os.environ)


def quiet_transformers() -> None:
    """Library chatter (load reports, weight-loading bars) drowns the command's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_scorer(model: str, max_length: int | None, chat_template: Path | None, precision: str,
                batch_tokens: int, share_prefix: bool | None = None, length_calibration: Path | None = None,
                aggregation: str | None = None, compile_: bool = False):
    from rewardkit.models.spec import load_scorer as load

    template = None
    if chat_template is not None:
        if not chat_template.is_file():
            raise RewardkitError(f"--chat-template: {chat_template} is not a file")
        template = chat_template.read_text()
    with console.status(f"loading {model}"):
        return load(model, max_length=max_length, chat_template=template, precision=precision,
                    batch_tokens=batch_tokens, share_prefix=share_prefix,
                    length_calibration=str(length_calibration) if length_calibration else None,
                    **({"aggregation": aggregation} if aggregation else {}),
                    **({"compile": True} if compile_ else {}))


def load_data(path: Path, fmt: str | None, field_map: str | None, skip_bad: bool, limit: int | None,
              split: str = "all", format_options: list[str] | None = None, preferred_format: str | None = None):
    from rewardkit.data import load_split

    result = load_split(path, split, fmt, parse_field_map(field_map), skip_bad=skip_bad, limit=limit,
                        format_options=parse_format_options(format_options), preferred_format=preferred_format)
    report_passed_over(result.format, result.passed_over)
    if result.skipped:
        console.print(f"[yellow]skipped {result.skipped} bad row(s)[/]; first: {result.errors[0]}")
    return result


def report_passed_over(fmt: str, passed_over: list[str]) -> None:
    """Say which format the data was read in when the first one tried did not fit it."""
    if passed_over:
        console.print(f"[yellow]read as {escape(fmt)}[/]; not as {escape('; '.join(passed_over))}", highlight=False)


def score_with_progress(scorer, records, chunk: int = 256) -> list:
    """Score in chunks of records so any Scorer can report progress."""
    results: list = []
    with progress_bar("scoring", len(records)) as bar:
        task = bar.add_task("scoring", total=len(records))
        for start in range(0, len(records), chunk):
            part = records[start: start + chunk]
            results.extend(scorer.score(part))
            bar.advance(task, len(part))
    return results
