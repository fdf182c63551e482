"""`rewardkit overopt rl`: the gold/proxy pair under TRL's GRPO, with and without a KL penalty, against single
and ensemble proxies; gold, proxy and KL measured every few steps and fitted with R_RL(d) = d(α − β log d)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rewardkit.cli.common import (
    ExampleCommand, FormatOpt, LimitOpt, MaxLenOpt, console, progress_bar, quiet_transformers, user_errors,
)
from rewardkit.cli.overopt import (
    ConfigOpt, GoldOpt, OutOpt, PolicyOpt, PromptsOpt, ProxyOpt, _calibrations, _str, load_models, overopt_app,
    proxies_of,
)


@overopt_app.command("rl", cls=ExampleCommand)
def rl(config: ConfigOpt = None, gold: GoldOpt = None, proxy: ProxyOpt = None, policy: PolicyOpt = None,
       prompts: PromptsOpt = None, out: OutOpt = None, format: FormatOpt = None, limit: LimitOpt = None,
       objective: Annotated[Optional[list[str]], typer.Option(
           "--objective", help="What a run optimises: a proxy's NAME, or 'NAME AGG' for an ensemble under one "
                               "aggregator ('ens wco'); repeatable (default: every proxy).")] = None,
       beta: Annotated[Optional[list[float]], typer.Option(
           "--beta", help="GRPO's KL penalty; one run per value and objective (repeatable; default 0.04 and "
                          "0).")] = None,
       steps: Annotated[Optional[int], typer.Option("--steps", help="GRPO steps per run (default 30).")] = None,
       eval_every: Annotated[Optional[int], typer.Option(
           "--eval-every", help="Measure gold, proxy and KL every this many steps (default 5).")] = None,
       eval_prompts: Annotated[Optional[int], typer.Option(
           "--eval-prompts", help="The first prompts, held out for the measurements (default 16).")] = None,
       eval_samples: Annotated[Optional[int], typer.Option(
           "--eval-samples", help="Samples per held-out prompt at each measurement (default 4).")] = None,
       lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 5e-6).")] = None,
       prompts_per_step: Annotated[Optional[int], typer.Option("--prompts-per-step", help="Default 4.")] = None,
       generations: Annotated[Optional[int], typer.Option(
           "--generations", help="Completions per prompt, GRPO's group (default 4).")] = None,
       max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Default 48.")] = None,
       seed: Annotated[Optional[int], typer.Option("--seed", help="Training and measurement seed.")] = None,
       precision: Annotated[Optional[str], typer.Option("--precision", help="The reward models' precision.")] = None,
       max_length: MaxLenOpt = None):
    """Train the policy with GRPO against each proxy objective and KL penalty (one run each, into
    OUT/rl/RUN), measuring gold, proxy and KL(π ‖ π₀) on held-out prompts every --eval-every steps; writes
    OUT/rl.json, OUT/rl.md and OUT/rl_curves.png. An interrupted run resumes from its last checkpoint; a
    finished one is kept. Every flag is also a field of the --config file (the RL ones under `rl:`).

    Example: rewardkit overopt rl --config runs/overopt/overopt.yaml --objective minilm-1000
        --objective 'ens wco' --steps 30 --eval-every 5
    """
    from rewardkit.errors import RewardkitError
    from rewardkit.overopt.config import load_overopt_config
    from rewardkit.overopt.rl import rl_study
    from rewardkit.overopt.rl_report import write_rl_report

    with user_errors():
        quiet_transformers()
        if config is None and gold is None:
            raise RewardkitError("give --gold and --proxy (or --config FILE); see rewardkit overopt rl --help")
        rl_fields = {"proxies": objective, "betas": beta, "steps": steps, "eval_every": eval_every,
                     "eval_prompts": eval_prompts, "eval_samples": eval_samples, "lr": lr,
                     "prompts_per_step": prompts_per_step, "generations": generations,
                     "max_new_tokens": max_new_tokens, "seed": seed}
        cfg = load_overopt_config(
            config, gold=gold, proxies=proxies_of(proxy), policy=policy, prompts=_str(prompts), out=_str(out),
            format=format, limit=limit, precision=precision, max_length=max_length,
            rl={k: v for k, v in rl_fields.items() if v is not None} or None)
        scorers = load_models(cfg, _calibrations(cfg.length_calibration, list(cfg.proxies)))

        with progress_bar("GRPO", None, unit="steps") as bar:
            tasks: dict[str, int] = {}

            def task_of(run: str) -> int:
                if run not in tasks:
                    tasks[run] = bar.add_task(f"GRPO {run}", total=cfg.rl.steps)
                return tasks[run]

            def on_row(run: str, row: dict) -> None:
                task_of(run)
                bar.console.print(f"  {escape(run)} step {row['step']}: gold {row['gold']:+.3f}, proxy "
                                  f"{row['proxy']:+.3f}, KL {row['kl']:.3f}", highlight=False)

            report = rl_study(cfg, scorers, on_row=on_row,
                              on_step=lambda run, step: bar.update(task_of(run), completed=step))
        paths = write_rl_report(report, Path(cfg.out))
        for run in report["runs"]:
            kept = " (kept from an earlier run)" if run["skipped"] else ""
            console.print(f"{escape(run['run'])}: peak gold {run['peak']['gold']:+.3f} at step {run['peak']['step']}, "
                          f"final gold {run['final']['gold']:+.3f} at d = {run['final']['d']:.3f}{kept}",
                          highlight=False)
        console.print(f"report: {escape(str(paths['markdown']))}", highlight=False)
