"""`rewardkit` commands: evaluate, probe and compare Scorers; fit a length calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rewardkit.cli.common import (
    AggregationOpt, BatchTokensOpt, ExampleCommand, FormatOpt, FormatOptionOpt, LengthCalibrationOpt, LimitOpt,
    MODEL_HELP, MapOpt, MaxLenOpt, ModelOpt, PrecisionOpt, SharePrefixOpt, SkipBadOpt, SplitOpt, TemplateOpt,
    app, console, load_data, load_scorer, quiet_transformers, score_with_progress, user_errors,
)
from rewardkit.errors import RewardkitError


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
