"""The `rewardkit` command: a thin Typer layer over the library.

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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
              "'judge:MODEL' or 'judge:http://HOST/v1?model=NAME' for an LLM judge.")
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


# -- commands ----------------------------------------------------------------------------------------------------
@app.command(cls=ExampleCommand)
def score(model: ModelOpt,
          input: Annotated[Path, typer.Option("--input", "-i", help="Records to score (any supported format).")],
          output: Annotated[Path, typer.Option("--output", "-o", help="JSONL: one line per record.")],
          format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
          skip_bad: SkipBadOpt = False,
          max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
          share_prefix: SharePrefixOpt = None,
          chat_template: TemplateOpt = None, limit: LimitOpt = None,
          length_calibration: LengthCalibrationOpt = None, aggregation: AggregationOpt = None,
          compile_: CompileOpt = False,
          overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False):
    """Score every response of every record; an interrupted run resumes where it stopped. A process reward
    model reads responses' steps (their paragraphs when a record gives none) and adds step_rewards.

    Example: rewardkit score -m runs/demo/train/best -i runs/demo/data/synthetic_test.jsonl -o
        runs/demo/scores.jsonl
    """
    from rewardkit.data import LoadStats, iter_records
    from rewardkit.scoring import partial_path, score_records_to_file

    with user_errors():
        quiet_transformers()
        if output.exists() and not overwrite:
            raise RewardkitError(f"{output} already exists; pass --overwrite to replace it")
        stats = LoadStats()
        records = iter_records(input, format, parse_field_map(map), skip_bad=skip_bad, limit=limit, stats=stats,
                               format_options=parse_format_options(format_option))
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix,
                             length_calibration, aggregation, compile_)
        if partial_path(output).exists():
            console.print(f"resuming from {partial_path(output)}")
        with progress_bar("scoring", None) as bar:
            task = bar.add_task("records", total=None)
            summary = score_records_to_file(scorer, records, output, overwrite=overwrite,
                                            progress=lambda k: bar.advance(task, k))
        report_passed_over(stats.format or "", stats.passed_over)
        skipped = f", skipped {stats.skipped} bad row(s)" if stats.skipped else ""
        resumed = f" ({summary.resumed} kept from the interrupted run)" if summary.resumed else ""
        console.print(f"wrote {summary.output}: {summary.scored + summary.resumed} records{resumed}{skipped}")


@app.command("eval", cls=ExampleCommand)
def evaluate_cmd(model: ModelOpt,
                 data: Annotated[Path, typer.Option("--data", "-d", help="Labelled preference data.")],
                 report: Annotated[Path, typer.Option("--report", "-r", help="Directory for the report.")],
                 format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
                 skip_bad: SkipBadOpt = False,
                 split: SplitOpt = "all", limit: LimitOpt = None, max_length: MaxLenOpt = None,
                 precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
                 share_prefix: SharePrefixOpt = None,
                 chat_template: TemplateOpt = None, length_calibration: LengthCalibrationOpt = None,
                 aggregation: AggregationOpt = None,
                 benchmark: Annotated[Optional[str], typer.Option(
                     "--benchmark", help="Also score the data as this benchmark: rewardbench, rewardbench2, "
                                         "rm_bench (or rm-bench) or processbench. Its data is read in the "
                                         "benchmark's own format unless --format names another.")] = None,
                 threshold: Annotated[Optional[float], typer.Option(
                     "--threshold", help="processbench: the step score below which a step is judged wrong.")] = None,
                 tune_data: Annotated[Optional[Path], typer.Option(
                     "--tune-data", help="processbench: data to tune the threshold on (the benchmark uses "
                                         "its GSM8K split); default: the data's own gsm8k split.")] = None,
                 objective: Annotated[Optional[str], typer.Option(
                     "--objective", help="The objective these labels speak to, for a multi-objective model's "
                                         "per-objective accuracy (records' own meta.objective wins).")] = None):
    """Evaluate any Scorer: strict accuracy, per subset, calibration and length bias; with --benchmark, the
    benchmark's own scores too (report.json gets them under the benchmark's name).

    Example: rewardkit eval -m runs/demo/train/best -d runs/demo/data/synthetic_test.jsonl -r runs/demo/eval
    """
    with user_errors():
        quiet_transformers()
        implied = None
        if benchmark is not None:
            from rewardkit.eval.benchmarks import benchmark_format, benchmark_name

            benchmark = benchmark_name(benchmark)  # 'rm-bench' or 'rm_bench'; an unknown one stops here
            implied = None if format else benchmark_format(benchmark)
        if (threshold is not None or tune_data) and benchmark != "processbench":
            raise RewardkitError("--threshold and --tune-data apply only to --benchmark processbench")
        loaded = load_data(data, format, map, skip_bad, limit, split, format_options=format_option,
                           preferred_format=implied)
        if objective:
            for record in loaded.records:
                record.meta.setdefault("objective", objective)
        tune = (load_data(tune_data, format, map, skip_bad, None, format_options=format_option,
                          preferred_format=implied).records if tune_data else None)
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix,
                             length_calibration, aggregation)
        run_evaluation(scorer, loaded, report, data_label=f"{data} ({split})", benchmark=benchmark,
                       tune_records=tune, threshold=threshold)


def run_evaluation(scorer, loaded, report_dir: Path, data_label: str, benchmark: str | None = None,
                   tune_records=None, threshold: float | None = None) -> dict:
    """Score, evaluate, write report.json / report.md / reliability.png and scores.jsonl; print a summary."""
    from rewardkit.eval import evaluate, write_report
    from rewardkit.eval.benchmarks import run_benchmark
    from rewardkit.io import atomic_open

    import json

    if benchmark:
        with console.status(f"scoring {len(loaded.records)} records for {benchmark}"):
            results, bench_report = run_benchmark(benchmark, scorer, loaded.records, tune_records=tune_records,
                                                  threshold=threshold)
    else:
        results = score_with_progress(scorer, loaded.records)
    report = evaluate(loaded.records, results, scorer.describe(), skipped=loaded.skipped)
    report["data"] = {"path": data_label, "format": loaded.format}
    if benchmark:
        report[benchmark] = bench_report
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
        console.print(f"  {escape(str(name))}: {pct(sub.get('accuracy'))} (n={sub.get('n')})")
    if len(subsets) > 12:
        console.print(f"  ... {len(subsets) - 12} more subsets in the report")
    corr = report.get("length_correlation") or {}
    console.print(f"ECE {num(report.get('ece'))}  Brier {num(report.get('brier'))}  "
                  f"reward-length Pearson {num(corr.get('pearson'))}")
    steps = report.get("steps")
    if steps:
        outcome = "  ".join(f"{k} {num(v)}" for k, v in (steps.get("outcome_auroc") or {}).items())
        console.print(f"[bold]steps[/] AUROC {num(steps.get('step_auroc'))} on {steps.get('steps')} labelled steps; "
                      f"solution AUROC {outcome}")
    for name in ("rewardbench", "rewardbench2", "rm_bench", "processbench"):
        if name in report:
            console.print(f"[bold]{name}[/] {benchmark_headline(name, report[name])}")
    console.print(f"report: {paths['markdown']}")


def benchmark_headline(name: str, bench: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}"

    if name == "rewardbench":
        return "  ".join(f"{k} {pct(v)}" for k, v in bench["sections"].items()) + f"  overall {pct(bench['overall'])}"
    if name == "rewardbench2":
        return "  ".join(f"{k} {pct(v['score'])}" for k, v in bench["subsets"].items()) + \
            f"  overall {pct(bench['overall'])}"
    if name == "rm_bench":
        return f"easy {pct(bench['easy'])}  normal {pct(bench['normal'])}  hard {pct(bench['hard'])}  " \
               f"overall {pct(bench['overall'])}"
    auroc = "  ".join(f"step AUROC {k} {'n/a' if v is None else f'{v:.3f}'}"
                      for k, v in (bench.get("step_auroc") or {}).items())
    return "  ".join(f"F1 {k} {pct(v)}" for k, v in bench["f1"].items()) + \
        f"  (threshold {bench['threshold']:.4g}, {bench['threshold_source']})" + (f"  {auroc}" if auroc else "")


@app.command(cls=ExampleCommand)
def probe(model: Annotated[Optional[str], typer.Option("--model", "-m", help=MODEL_HELP)] = None,
          data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Records whose responses to transform.")]
          = None,
          out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for probe.json, probe.md, "
                                                                          "probe.png.")] = None,
          transforms: Annotated[Optional[str], typer.Option(
              "--transforms", help="Comma-separated transform names (default: all; --list-transforms).")] = None,
          responses: Annotated[str, typer.Option(
              "--responses", help="chosen (the preferred response of each record) or all.")] = "chosen",
          seed: Annotated[int, typer.Option("--seed")] = 0,
          bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the CIs.")] = 1000,
          list_transforms: Annotated[bool, typer.Option("--list-transforms", help="List the transforms and exit.")]
          = False,
          format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
          skip_bad: SkipBadOpt = False, split: SplitOpt = "all",
          limit: LimitOpt = None, max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto",
          batch_tokens: BatchTokensOpt = 16384, share_prefix: SharePrefixOpt = None,
          chat_template: TemplateOpt = None, length_calibration: LengthCalibrationOpt = None):
    """Reward-hacking probes: transform responses (flattery, padding, fake citations, ...) and report, per
    transform, how often the reward rose and by how much, flagging the ones the model is exploitable by.

    Example: rewardkit probe -m runs/demo/train/best -d runs/demo/data/synthetic_test.jsonl -o runs/demo/probe
        --limit 100
    """
    from rewardkit.eval.probes import TRANSFORMS, get_transforms, run_probes, write_probe_report

    if list_transforms:
        for t in TRANSFORMS.values():
            print(f"{t.name:24} {t.kind:10} {t.description}")
        return
    with user_errors():
        missing = [flag for flag, value in (("--model", model), ("--data", data), ("--out", out)) if value is None]
        if missing:
            raise RewardkitError(f"probe needs {', '.join(missing)}")
        if responses not in ("chosen", "all"):
            raise RewardkitError(f"--responses must be chosen or all, got {responses!r}")
        quiet_transformers()
        try:
            chosen = get_transforms(transforms)
        except ValueError as e:
            raise RewardkitError(f"--transforms: {e}") from None
        loaded = load_data(data, format, map, skip_bad, limit, split, format_options=format_option)
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix,
                             length_calibration)
        with console.status(f"probing {len(loaded.records)} records with {len(chosen)} transforms"):
            report = run_probes(scorer, loaded.records, chosen, seed=seed, bootstrap=bootstrap,
                                responses=responses)
        report["data"] = {"path": f"{data} ({split})", "format": loaded.format}
        paths = write_probe_report(report, out)
        for name, t in report["transforms"].items():
            flag = "  [bold red]EXPLOITABLE[/]" if t["exploitable"] else ""
            win = "n/a" if t["win_rate"] is None else f"{100 * t['win_rate']:.1f}%"
            mean = "n/a" if t["mean_delta"] is None else f"{t['mean_delta']:+.4f}"
            console.print(f"  {name:24} {t['class']:10} reward rose {win:>6}  mean Δr {mean}{flag}")
        console.print(f"report: {paths['markdown']}")


@app.command(cls=ExampleCommand)
def compare(models: Annotated[list[str], typer.Option(
                "--model", "-m", help="A model to compare, as NAME=SPEC or SPEC (repeat; SPEC as in eval).")],
            data: Annotated[Path, typer.Option("--data", "-d", help="Preference data all models score.")],
            out: Annotated[Path, typer.Option("--out", "-o", help="Directory for compare.json/.md/.png.")],
            top_k: Annotated[int, typer.Option("--top-k", help="Disagreements to show per pair of models.")] = 10,
            format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
            skip_bad: SkipBadOpt = False, split: SplitOpt = "all",
            limit: LimitOpt = None, max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto",
            batch_tokens: BatchTokensOpt = 16384, chat_template: TemplateOpt = None):
    """Evaluate several Scorers on the same data: accuracy per subset side by side, calibration, length bias,
    agreement between them and the examples they disagree on most.

    Example: rewardkit compare -m before=minilm -m after=runs/demo/train/best -d
        runs/demo/data/synthetic_test.jsonl -o runs/demo/compare
    """
    from rewardkit.eval.compare import compare_scorers, write_comparison
    from rewardkit.models.spec import named_specs

    with user_errors():
        quiet_transformers()
        specs = named_specs(models)
        if len(specs) < 2:
            raise RewardkitError("compare needs at least two --model options")
        loaded = load_data(data, format, map, skip_bad, limit, split, format_options=format_option)
        results = {}
        for name, spec in specs:
            scorer = load_scorer(spec, max_length, chat_template, precision, batch_tokens)
            console.print(f"scoring with {escape(name)}")
            results[name] = (scorer, score_with_progress(scorer, loaded.records))
        report = compare_scorers({n: s for n, (s, _) in results.items()}, loaded.records,
                                 results={n: r for n, (_, r) in results.items()}, top_k=top_k)
        report["data"] = {"path": f"{data} ({split})", "format": loaded.format}
        paths = write_comparison(report, out)
        for name, row in report["summary"].items():
            acc = "n/a" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%"
            console.print(f"  {escape(name)}: accuracy {acc}")
        for row in report["agreement"]:
            agree = "n/a" if row["agreement"] is None else f"{100 * row['agreement']:.1f}%"
            console.print(f"  {escape(row['a'])} vs {escape(row['b'])}: agree on {agree} of {row['n_pairs']} pairs")
        console.print(f"report: {paths['markdown']}")


@app.command("calibrate-length", cls=ExampleCommand)
def calibrate_length(model: ModelOpt,
                     data: Annotated[Path, typer.Option("--data", "-d", help="Reference responses to fit on.")],
                     out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the fitted calibration.")],
                     method: Annotated[str, typer.Option("--method", help="lowess or linear.")] = "lowess",
                     format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
                     skip_bad: SkipBadOpt = False,
                     split: SplitOpt = "all", limit: LimitOpt = None, max_length: MaxLenOpt = None,
                     precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
                     chat_template: TemplateOpt = None):
    """Fit the post-hoc length calibration (METHODS 3.2) of a model on reference data; use it with
    --length-calibration on score, eval and probe.

    Example: rewardkit calibrate-length -m runs/demo/train/best -d runs/demo/data/synthetic_train.jsonl -o
        runs/demo/length.json
    """
    from rewardkit.eval.length import LengthCalibratedScorer

    with user_errors():
        if method not in ("lowess", "linear"):
            raise RewardkitError(f"--method must be lowess or linear, got {method!r}")
        quiet_transformers()
        loaded = load_data(data, format, map, skip_bad, limit, split, format_options=format_option)
        base = load_scorer(model, max_length, chat_template, precision, batch_tokens)
        results = score_with_progress(base, loaded.records)
        calibrated = LengthCalibratedScorer.fit(base, loaded.records, method=method, reference_results=results)
        calibrated.save(out)
        summary = calibrated.calibration.summary()
        console.print(f"fitted a {summary['method']} length calibration on {summary['n_reference']} responses "
                      f"({summary['unit']}); wrote {out}")


@app.command(cls=ExampleCommand)
def rerank(model: ModelOpt,
           data: Annotated[Path, typer.Option("--data", "-d", help="Candidates: records with several responses, "
                                                                  "or one solution a row with --group-by-prompt.")],
           out: Annotated[Path, typer.Option("--out", "-o", help="Directory for reranked.jsonl and best_of_n.json.")],
           group_by_prompt: Annotated[bool, typer.Option(
               "--group-by-prompt", help="Rows with the same prompt are one candidate set (ProcessBench, "
                                         "PRM800K: one solution a row).")] = False,
           min_candidates: Annotated[int, typer.Option(
               "--min-candidates", min=1, help="Rerank only candidate sets with at least this many "
                                               "responses (2: skip single solutions).")] = 1,
           format: FormatOpt = None, map: MapOpt = None, format_option: FormatOptionOpt = None,
           skip_bad: SkipBadOpt = False, limit: LimitOpt = None,
           max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
           share_prefix: SharePrefixOpt = None, chat_template: TemplateOpt = None):
    """Best-of-N: rank each record's candidate responses by every step aggregation of a process reward model
    (or by the reward of any other Scorer); where correctness is known, report how often each top pick is
    right, against a random pick and the oracle.

    Example: rewardkit rerank -m runs/demo/train/best -d runs/demo/data/synthetic_test.jsonl -o runs/demo/rerank
    """
    import json

    from rewardkit.eval.rerank import best_of_n_report, group_by_prompt as grouped, rerank as rank
    from rewardkit.io import atomic_open, atomic_write_text

    with user_errors():
        quiet_transformers()
        loaded = load_data(data, format, map, skip_bad, limit, format_options=format_option)
        records = grouped(loaded.records) if group_by_prompt else loaded.records
        records = [r for r in records if len(r.responses) >= min_candidates]
        if not records:
            raise RewardkitError(f"no candidate set has {min_candidates} or more responses"
                                 + ("" if group_by_prompt else "; one solution a row? add --group-by-prompt"))
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix)
        results = score_with_progress(scorer, records)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "reranked.jsonl") as f:
            for row in rank(records, results):
                f.write(json.dumps(row) + "\n")
        console.print(f"wrote {out / 'reranked.jsonl'}: {len(records)} candidate sets")
        try:
            report = best_of_n_report(records, results)
        except RewardkitError as e:
            console.print(f"no best-of-N accuracy: {escape(str(e))}")
            return
        report["scorer"] = scorer.describe()
        atomic_write_text(out / "best_of_n.json", json.dumps(report, indent=2) + "\n")
        picks = "  ".join(f"{rule} {100 * acc:.1f}%" for rule, acc in report["accuracy"].items())
        console.print(f"[bold]best-of-N[/] on {report['problems']} problems ({report['candidates_mean']:.1f} "
                      f"candidates each): {picks}  random {100 * report['random']:.1f}%  "
                      f"oracle {100 * report['oracle']:.1f}%")


@app.command(cls=ExampleCommand)
def serve(model: ModelOpt,
          host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port")] = 8000,
          api_key: Annotated[Optional[str], typer.Option(
              "--api-key", envvar="REWARDKIT_API_KEY", help="Require this key (Authorization: Bearer KEY); "
                                                            "also read from $REWARDKIT_API_KEY.")] = None,
          max_batch_tokens: Annotated[int, typer.Option(
              "--max-batch-tokens", help="Tokens gathered from concurrent requests into one batch.")] = 16384,
          max_delay_ms: Annotated[float, typer.Option(
              "--max-delay-ms", help="How long a request waits for others to join its batch.")] = 5.0,
          max_queue: Annotated[int, typer.Option(
              "--max-queue", help="Requests waiting at most; more get 429 with Retry-After.")] = 256,
          max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Larger bodies get 413.")]
          = 8 * 1024 * 1024,
          overlength: Annotated[str, typer.Option(
              "--overlength", help="reject (422) or truncate sequences over the max length.")] = "reject",
          request_timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds; then 504.")] = 30.0,
          graceful_timeout: Annotated[float, typer.Option(
              "--graceful-timeout", help="Seconds to finish requests in flight on SIGTERM.")] = 30.0,
          torch_threads: Annotated[Optional[int], typer.Option(
              "--torch-threads", help="Cap PyTorch's CPU threads (leave a core to the server).")] = None,
          log_level: Annotated[str, typer.Option("--log-level")] = "info",
          max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
          share_prefix: SharePrefixOpt = None, chat_template: TemplateOpt = None,
          length_calibration: LengthCalibrationOpt = None, aggregation: AggregationOpt = None,
          compile_: CompileOpt = False):
    """Serve any Scorer over HTTP for RL loops: POST /score with dynamic batching, /health, /ready, /metrics.

    Example: rewardkit serve -m runs/demo/train/best --port 8000
    """
    from rewardkit.serve import serve as run_server

    with user_errors():
        if overlength not in ("reject", "truncate"):
            raise RewardkitError(f"--overlength must be reject or truncate, got {overlength!r}")
        quiet_transformers()
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix,
                             length_calibration, aggregation, compile_)
        run_server(scorer, host=host, port=port, api_key=api_key, max_batch_tokens=max_batch_tokens,
                   max_delay_ms=max_delay_ms, max_queue=max_queue, max_body_bytes=max_body_bytes,
                   max_length=max_length, overlength=overlength, request_timeout_s=request_timeout,
                   graceful_timeout_s=graceful_timeout, log_level=log_level, torch_threads=torch_threads)


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


@app.command(cls=ExampleCommand)
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
    """Train a reward model. Running the same command again resumes from OUTPUT/last.

    Example: rewardkit train -m minilm -d runs/demo/data/synthetic_train.jsonl --eval-data
        runs/demo/data/synthetic_test.jsonl -o runs/mine --epochs 1
    """
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


@app.command(cls=ExampleCommand)
def export(model: ModelOpt,
           output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the portable checkpoint.")]):
    """Write a portable checkpoint: LoRA adapters merged in, loadable with plain transformers.

    Example: rewardkit export -m runs/demo/train/best -o runs/demo/portable
    """
    from rewardkit.models.reward_model import RewardModel

    with user_errors():
        quiet_transformers()
        rm = RewardModel.from_pretrained(model)
        rm.merge_lora()
        rm.save_pretrained(output)
        console.print(f"wrote {output}")


@app.command(cls=ExampleCommand)
def demo(out: Annotated[Path, typer.Option("--out", help="Where to write data, checkpoints and reports.")] = Path("runs/demo"),
         model: Annotated[str, typer.Option("--model", "-m")] = "minilm",
         precision: PrecisionOpt = "auto"):
    """The main job on the embedded default: train a reward model, evaluate it before and after.

    Trains on the HH-RLHF harmless-base train split when ../shared/data (or $REWARDKIT_DATA) is present,
    else on rewardkit's synthetic preference task, whose gold reward is known.

    Example: rewardkit demo --out runs/demo
    """
    from rewardkit.demo import run_demo

    with user_errors():
        quiet_transformers()
        run_demo(out, model=model, precision=precision, log=lambda m: console.print(m, highlight=False))
        console.print(f"reports: {out / 'before' / 'report.md'}, {out / 'report' / 'report.md'}; "
                      f"model: {out / 'train' / 'best'}")


@app.command(cls=ExampleCommand)
def doctor(refresh: Annotated[bool, typer.Option("--refresh", help="Time the precision probe again.")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False):
    """What this machine gives rewardkit: versions, device, what --precision auto picks and the probe it
    measured, and whether the native CPU kernels run.

    Example: rewardkit doctor --json
    """
    import json

    from rewardkit.doctor import format_report, machine_report

    with user_errors():
        report = machine_report(refresh_probe=refresh)
    print(json.dumps(report, indent=2) if as_json else format_report(report))


def main() -> None:
    app(prog_name="rewardkit")


if __name__ == "__main__":
    sys.exit(main())
