"""`rewardkit ensemble` commands: a manifest from members (create), weight averaging (WARM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rewardkit.cli.common import (ExampleCommand, FormatOpt, MapOpt, MaxLenOpt, PrecisionOpt, SplitOpt, console,
                                  ensemble_app, load_data, progress_bar, quiet_transformers, user_errors)


@ensemble_app.command("create", cls=ExampleCommand)
def ensemble_create(
        members: Annotated[list[str], typer.Argument(help="Member model specs (NAME=SPEC names one): checkpoints, "
                                                          "hub ids, judges, served models.")],
        reference: Annotated[Path, typer.Option("--reference", "-r", help="Records whose responses give each "
                                                "member's mean and std (standardisation).")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Directory (or .json file) for the manifest.")],
        aggregator: Annotated[str, typer.Option("--aggregator", "--agg", help="mean, wco, uwo or "
                                                "mean_minus_std.")] = "mean",
        lam: Annotated[Optional[float], typer.Option("--lambda", help="uwo / mean_minus_std penalty (default 0.5 "
                                                     "/ 1).")] = None,
        ddof: Annotated[int, typer.Option("--ddof", help="Delta degrees of freedom of the members' variance.")] = 0,
        standardize: Annotated[Optional[bool], typer.Option("--standardize/--no-standardize", help="Standardise "
                               "members (default: yes, with the stats this command fits).")] = None,
        split: SplitOpt = "all", format: FormatOpt = None, map: MapOpt = None, max_length: MaxLenOpt = None,
        precision: PrecisionOpt = "auto"):
    """Make an ensemble manifest from member models: their stats are fitted on the reference records, and
    --model OUTPUT is then the ensemble everywhere.

    Example: rewardkit ensemble create runs/demo/train/best runs/demo/train/last
        -r runs/demo/data/synthetic_test.jsonl -o runs/demo/ens --agg uwo
    """
    from rewardkit.models.ensemble import EnsembleScorer, _member_names
    from rewardkit.models.scorer import ScoreItem
    from rewardkit.models.spec import named_specs

    with user_errors():
        quiet_transformers()
        records = load_data(reference, format, map, False, None, split).records
        named = named_specs(members)
        tails = _member_names([spec for _, spec in named])
        names = [tail if name == spec else name for (name, spec), tail in zip(named, tails)]
        with console.status(f"loading {len(members)} members"):
            ensemble = EnsembleScorer.from_specs([spec for _, spec in named], names=names, aggregator=aggregator,
                                                 lam=lam, ddof=ddof, standardize=standardize,
                                                 max_length=max_length, precision=precision)
        items = [ScoreItem(r.prompt, r.responses) for r in records]
        with progress_bar("reference stats", len(items), "records") as bar:
            task = bar.add_task("reference stats", total=len(items))
            stats = ensemble.fit_stats(items, on_chunk=lambda n: bar.advance(task, n))
        path = ensemble.save(output)
        for name, s in zip(ensemble.names, stats):
            console.print(f"  {name}: mean {s.mean:.4g}, std {s.std:.4g}")
        console.print(f"wrote {path} ({len(stats)} members, {aggregator}): use --model {output}")


@ensemble_app.command("average", cls=ExampleCommand)
def ensemble_average(
        members: Annotated[list[str], typer.Argument(help="Reward model checkpoints fine-tuned from one init.")],
        data: Annotated[Path, typer.Option("--data", "-d", help="Labelled pairs to check the interpolation on.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the averaged checkpoint.")],
        split: SplitOpt = "all", format: FormatOpt = None, map: MapOpt = None,
        precision: Annotated[str, typer.Option("--precision", help="auto, fp32 or bf16.")] = "fp32"):
    """Average the weights of reward models (WARM) after checking that accuracy along the interpolation path
    between them never dips below both ends; refuses, with the numbers, when it does.

    Example: rewardkit ensemble average runs/demo/train/best runs/demo/train/last
        -d runs/demo/data/synthetic_test.jsonl -o runs/demo/warm
    """
    from rewardkit.eval.warm import warm_average

    with user_errors():
        quiet_transformers()
        records = load_data(data, format, map, False, None, split).records
        report = warm_average(members, records, output, precision=precision, on_point=lambda name, alpha, acc:
                              console.print(f"  {name}: alpha {alpha:g} accuracy {100 * acc:.1f}%"))
        best = max(m["accuracy"] for m in report["members"])
        console.print(f"wrote {output}: accuracy {100 * report['average_accuracy']:.1f}% (best member "
                      f"{100 * best:.1f}%); report {output / 'warm_report.md'}")
