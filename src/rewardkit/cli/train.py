"""`rewardkit` commands: train a reward model and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rewardkit.cli.common import ExampleCommand, MaxLenOpt, ModelOpt, app, console, quiet_transformers, user_errors


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
          batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Records per optimizer step.")] = None,
          members: Annotated[Optional[int], typer.Option(
              "--members", help="Train K ensemble members into OUTPUT/member0.. and write OUTPUT/ensemble.json.")] = None,
          vary: Annotated[Optional[str], typer.Option(
              "--vary", help="With --members: what differs between members: seed, order or bootstrap.")] = None,
          backbone: Annotated[Optional[str], typer.Option(
              "--backbone", help="With --members: separate models, or K heads on one shared (trained) or frozen "
                                 "backbone, trained in one pass into OUTPUT.")] = None):
    """Train a reward model (or, with --members K, the K members of an ensemble). Running the same command
    again resumes from OUTPUT/last (an ensemble: skips finished members and resumes the interrupted one; K heads
    on one backbone resume as one run).

    Example: rewardkit train -m minilm -d runs/demo/data/synthetic_train.jsonl --eval-data
        runs/demo/data/synthetic_test.jsonl -o runs/mine --epochs 1
    """
    from rewardkit.train import load_config
    from rewardkit.train import train as run_training

    with user_errors():
        quiet_transformers()
        # --members/--vary/--backbone are the config's ensemble fields, set like any --set override
        ensemble = [f"ensemble.{key}={value}" for key, value in
                    (("members", members), ("vary", vary), ("backbone", backbone)) if value is not None]
        cfg = load_config(config, [*(set_ or []), *ensemble], model=model, data=data, eval_data=eval_data,
                          output=output, loss=loss, epochs=epochs, lr=lr, max_length=max_length,
                          batch_size=batch_size)
        if cfg.ensemble is not None:
            from rewardkit.train import train_members

            if cfg.ensemble.heads is not None:
                done = train_members(cfg)
                print_training(done.run)
                console.print(f"wrote {done.manifest} ({len(done.members)} heads on one {cfg.ensemble.backbone} "
                              f"backbone): use --model {done.output}")
                return
            done = train_members(cfg, on_member=lambda i, info: console.print(
                f"member {i}: " + ("already trained, skipped" if info["skipped"] else
                                   f"trained {info['steps']} steps in {info['seconds']:.1f}s") +
                (f", held-out accuracy {100 * info['accuracy']:.1f}%" if info.get("accuracy") is not None else "")))
            console.print(f"wrote {done.manifest} ({len(done.members)} members): use --model {done.output}")
            return
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
