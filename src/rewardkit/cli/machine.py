"""`rewardkit` commands: the demo, and what this machine gives rewardkit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardkit.cli.common import ExampleCommand, PrecisionOpt, app, console, quiet_transformers, user_errors


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
