"""The `rewardkit` command: a thin Typer layer over the library.

Every command turns its flags into library calls. Errors caused by user input (RewardkitError) are printed
as one line naming the file, line and field, with exit code 2; they never surface as a traceback.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rewardkit.errors import RewardkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, evaluate, stress-test and serve reward models.")
data_app = typer.Typer(no_args_is_help=True, help="Look at and convert preference data.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)

# -- shared options ----------------------------------------------------------------------------------------------
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Reward model: a directory, a hub id, or a "
                                                               "packaged offline backbone: 'minilm' or 'smollm2'.")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help="Input format; detected when left out.")]
MapOpt = Annotated[Optional[str], typer.Option(
    "--map", help="Field mapping canonical=source, comma-separated, e.g. prompt=question,chosen=good.")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Count and skip bad rows instead of stopping.")]
MaxLenOpt = Annotated[Optional[int], typer.Option("--max-length", help="Token limit per sequence (prompt "
                                                                       "is cut from the left first).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto (bf16 where fast), fp32 or bf16.")]
BatchTokensOpt = Annotated[int, typer.Option("--batch-tokens", help="Tokens (padding included) per forward pass.")]
SharePrefixOpt = Annotated[Optional[bool], typer.Option(
    "--share-prefix/--no-share-prefix", help="Score a prompt's responses in one packed row (default: wherever the "
                                             "backbone passes the equivalence check).")]
TemplateOpt = Annotated[Optional[Path], typer.Option(
    "--chat-template", help="A Jinja chat template file to render conversations with.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N records.")]
SplitOpt = Annotated[str, typer.Option("--split", help="all, or the agreed line-order split: train "
                                                       "(first 80%) or test (last 20%).")]


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
        console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def progress_bar(description: str, total: int | None) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False, disable=not console.is_terminal and "CI" in os.environ)


def quiet_transformers() -> None:
    """Library chatter (load reports, weight-loading bars) drowns the command's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_scorer(model: str, max_length: int | None, chat_template: Path | None, precision: str,
                batch_tokens: int, share_prefix: bool | None = None):
    from rewardkit.models.rm_scorer import RewardModelScorer

    template = None
    if chat_template is not None:
        if not chat_template.is_file():
            raise RewardkitError(f"--chat-template: {chat_template} is not a file")
        template = chat_template.read_text()
    with console.status(f"loading {model}"):
        return RewardModelScorer.from_pretrained(model, max_length=max_length, chat_template=template,
                                                 precision=precision, batch_tokens=batch_tokens,
                                                 share_prefix=share_prefix)


def load_data(path: Path, fmt: str | None, field_map: str | None, skip_bad: bool, limit: int | None,
              split: str = "all"):
    from rewardkit.data import load_split

    result = load_split(path, split, fmt, parse_field_map(field_map), skip_bad=skip_bad, limit=limit)
    if result.skipped:
        console.print(f"[yellow]skipped {result.skipped} bad row(s)[/]; first: {result.errors[0]}")
    return result


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


# -- commands ----------------------------------------------------------------------------------------------------
@app.command()
def score(model: ModelOpt,
          input: Annotated[Path, typer.Option("--input", "-i", help="Records to score (any supported format).")],
          output: Annotated[Path, typer.Option("--output", "-o", help="JSONL: one line per record.")],
          format: FormatOpt = None, map: MapOpt = None, skip_bad: SkipBadOpt = False,
          max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
          share_prefix: SharePrefixOpt = None,
          chat_template: TemplateOpt = None, limit: LimitOpt = None,
          overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False):
    """Score every response of every record; an interrupted run resumes where it stopped."""
    from rewardkit.data import LoadStats, iter_records
    from rewardkit.scoring import partial_path, score_records_to_file

    with user_errors():
        quiet_transformers()
        if output.exists() and not overwrite:
            raise RewardkitError(f"{output} already exists; pass --overwrite to replace it")
        stats = LoadStats()
        records = iter_records(input, format, parse_field_map(map), skip_bad=skip_bad, limit=limit, stats=stats)
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix)
        if partial_path(output).exists():
            console.print(f"resuming from {partial_path(output)}")
        with progress_bar("scoring", None) as bar:
            task = bar.add_task("records", total=None)
            summary = score_records_to_file(scorer, records, output, overwrite=overwrite,
                                            progress=lambda k: bar.advance(task, k))
        skipped = f", skipped {stats.skipped} bad row(s)" if stats.skipped else ""
        resumed = f" ({summary.resumed} kept from the interrupted run)" if summary.resumed else ""
        console.print(f"wrote {summary.output}: {summary.scored + summary.resumed} records{resumed}{skipped}")


@app.command("eval")
def evaluate_cmd(model: ModelOpt,
                 data: Annotated[Path, typer.Option("--data", "-d", help="Labelled preference data.")],
                 report: Annotated[Path, typer.Option("--report", "-r", help="Directory for the report.")],
                 format: FormatOpt = None, map: MapOpt = None, skip_bad: SkipBadOpt = False,
                 split: SplitOpt = "all", limit: LimitOpt = None, max_length: MaxLenOpt = None,
                 precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
                 share_prefix: SharePrefixOpt = None,
                 chat_template: TemplateOpt = None):
    """Evaluate a reward model: strict accuracy, per subset, calibration and length bias."""
    with user_errors():
        quiet_transformers()
        loaded = load_data(data, format, map, skip_bad, limit, split)
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix)
        run_evaluation(scorer, loaded, report, data_label=f"{data} ({split})")


def run_evaluation(scorer, loaded, report_dir: Path, data_label: str) -> dict:
    """Score, evaluate, write report.json / report.md / reliability.png and scores.jsonl; print a summary."""
    from rewardkit.eval import evaluate, write_report
    from rewardkit.io import atomic_open

    import json

    results = score_with_progress(scorer, loaded.records)
    report = evaluate(loaded.records, results, scorer.describe(), skipped=loaded.skipped)
    report["data"] = {"path": data_label, "format": loaded.format}
    paths = write_report(report, report_dir)
    with atomic_open(Path(report_dir) / "scores.jsonl") as f:
        for record, result in zip(loaded.records, results):
            f.write(json.dumps({"id": record.id, **result.to_json()}) + "\n")
    print_summary(report, paths)
    return report


def print_summary(report: dict, paths: dict) -> None:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "n/a" if x is None else f"{x:.3f}"

    console.print(f"[bold]accuracy[/] {pct(report.get('accuracy'))} on {report.get('n_comparisons')} "
                  f"comparisons ({report.get('n')} records; ties count as wrong)")
    subsets = list((report.get("subsets") or {}).items())
    for name, sub in subsets[:12]:
        console.print(f"  {name}: {pct(sub.get('accuracy'))} (n={sub.get('n')})")
    if len(subsets) > 12:
        console.print(f"  ... {len(subsets) - 12} more subsets in the report")
    corr = report.get("length_correlation") or {}
    console.print(f"ECE {num(report.get('ece'))}  Brier {num(report.get('brier'))}  "
                  f"reward-length Pearson {num(corr.get('pearson'))}")
    console.print(f"report: {paths['markdown']}")


@data_app.command("inspect")
def data_inspect(path: Annotated[Path, typer.Argument(help="A data file or datasets directory.")],
                 format: FormatOpt = None, map: MapOpt = None, skip_bad: SkipBadOpt = True,
                 model: Annotated[Optional[str], typer.Option(
                     "--model", "-m", help="Count lengths in this model's tokens (else whitespace words).")] = None,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False):
    """Counts, label kinds, token-length histogram and problems found (bad rows are counted, not fatal)."""
    import json

    from rewardkit.data import format_inspection, inspect_records

    with user_errors():
        quiet_transformers()
        loaded = load_data(path, format, map, skip_bad, None)
        token_length = None
        if model:
            from rewardkit.models.reward_model import load_tokenizer

            tok = load_tokenizer(model)
            token_length = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        summary = inspect_records(loaded, token_length)
        print(json.dumps(summary, indent=2) if as_json else format_inspection(summary))


@data_app.command("convert")
def data_convert(path: Annotated[Path, typer.Argument(help="A data file or datasets directory.")],
                 out: Annotated[Path, typer.Argument(help="Canonical JSONL to write.")],
                 format: FormatOpt = None, map: MapOpt = None, skip_bad: SkipBadOpt = False,
                 split: SplitOpt = "all", limit: LimitOpt = None):
    """Convert any supported format to canonical JSONL (one PreferenceRecord a line)."""
    from rewardkit.data import write_canonical_jsonl

    with user_errors():
        loaded = load_data(path, format, map, skip_bad, limit, split)
        write_canonical_jsonl(loaded.records, out)
        console.print(f"wrote {len(loaded.records)} records to {out}")


@app.command()
def train(config: Annotated[Optional[Path], typer.Argument(help="YAML config (optional).")] = None,
          set_: Annotated[Optional[list[str]], typer.Option(
              "--set", help="Override any config field: key=value (repeatable; dotted keys like lora.r=8).")] = None,
          model: Annotated[Optional[str], typer.Option("--model", "-m", help="Backbone or reward model.")] = None,
          data: Annotated[Optional[list[str]], typer.Option("--data", "-d", help="Training data (repeatable).")] = None,
          eval_data: Annotated[Optional[list[str]], typer.Option("--eval-data", help="Held-out data (repeatable).")] = None,
          output: Annotated[Optional[str], typer.Option("--output", "-o", help="Run directory.")] = None,
          loss: Annotated[Optional[str], typer.Option("--loss", help="bt, margin, scaled, smoothed, robust, soft, "
                                                                      "kwise, plackett_luce, distill_soft, distill_regression.")] = None,
          epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
          lr: Annotated[Optional[float], typer.Option("--lr")] = None,
          max_length: MaxLenOpt = None,
          batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Records per optimizer step.")] = None):
    """Train a reward model. Running the same command again resumes from OUTPUT/last."""
    from rewardkit.train import load_config
    from rewardkit.train import train as run_training

    with user_errors():
        quiet_transformers()
        cfg = load_config(config, set_, model=model, data=data, eval_data=eval_data, output=output, loss=loss,
                          epochs=epochs, lr=lr, max_length=max_length, batch_size=batch_size)
        result = run_training(cfg)
        print_training(result)


def print_training(result) -> None:
    rate = result.records_trained / result.train_seconds if result.train_seconds else float("nan")
    console.print(f"trained {result.steps} steps in {result.train_seconds:.1f}s ({rate:.1f} records/s); "
                  f"checkpoints in {result.output}/last" + (f" and {result.output}/best" if result.best_accuracy
                                                             is not None else ""))
    if result.final_eval is not None:
        console.print(f"held-out accuracy {100 * result.final_eval['accuracy']:.1f}% "
                      f"(best {100 * result.best_accuracy:.1f}%)")


@app.command()
def export(model: ModelOpt,
           output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the portable checkpoint.")]):
    """Write a portable checkpoint: LoRA adapters merged in, loadable with plain transformers."""
    from rewardkit.models.reward_model import RewardModel

    with user_errors():
        quiet_transformers()
        rm = RewardModel.from_pretrained(model)
        rm.merge_lora()
        rm.save_pretrained(output)
        console.print(f"wrote {output}")


@app.command()
def demo(out: Annotated[Path, typer.Option("--out", help="Where to write data, checkpoints and reports.")] = Path("runs/demo"),
         model: Annotated[str, typer.Option("--model", "-m")] = "minilm",
         precision: PrecisionOpt = "auto"):
    """The main job on the embedded default: train a reward model, evaluate it before and after.

    Trains on the HH-RLHF harmless-base train split when ../shared/data (or $REWARDKIT_DATA) is present,
    else on rewardkit's synthetic preference task, whose gold reward is known.
    """
    from rewardkit.demo import run_demo

    with user_errors():
        quiet_transformers()
        run_demo(out, model=model, precision=precision, log=lambda m: console.print(m, highlight=False))
        console.print(f"reports: {out / 'before' / 'report.md'}, {out / 'report' / 'report.md'}; "
                      f"model: {out / 'train' / 'best'}")


def main() -> None:
    app(prog_name="rewardkit")


if __name__ == "__main__":
    sys.exit(main())
