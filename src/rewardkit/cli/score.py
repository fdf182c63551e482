"""`rewardkit` commands: score records into files, and rerank candidates best-of-N."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rewardkit.cli.common import (
    AggregationOpt, BatchTokensOpt, CompileOpt, ExampleCommand, FormatOpt, FormatOptionOpt,
    LengthCalibrationOpt, LimitOpt, MapOpt, MaxLenOpt, ModelOpt, PrecisionOpt, SharePrefixOpt, SkipBadOpt,
    TemplateOpt, app, console, load_data, load_scorer, parse_field_map, parse_format_options, progress_bar,
    quiet_transformers, report_passed_over, score_with_progress, user_errors,
)
from rewardkit.errors import RewardkitError


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
