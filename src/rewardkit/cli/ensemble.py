"""`rewardkit ensemble` commands: weight averaging (WARM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardkit.cli.common import (ExampleCommand, FormatOpt, MapOpt, SplitOpt, console, ensemble_app, load_data,
                                  quiet_transformers, user_errors)


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
