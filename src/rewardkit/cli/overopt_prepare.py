"""`rewardkit overopt prepare`: the gold/proxy setup of Gao et al. (pairs labelled by a gold model, proxies
trained on several label counts and backbones) and the config `rewardkit overopt` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rewardkit.cli.common import ExampleCommand, FormatOpt, MaxLenOpt, console, progress_bar, quiet_transformers, user_errors
from rewardkit.cli.overopt import GoldOpt, OutOpt, overopt_app


def _ints(text: str, flag: str) -> list[int]:
    from rewardkit.errors import RewardkitError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RewardkitError(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. 250,1000,4000") from None


@overopt_app.command("prepare", cls=ExampleCommand)
def prepare(gold: GoldOpt = None,
            data: Annotated[Optional[list[str]], typer.Option(
                "--data", "-d", help="Preference pairs to label with the gold (repeatable; any format rewardkit "
                                     "reads; their own labels are only compared with the gold's).")] = None,
            split: Annotated[str, typer.Option("--split", help="all, train (the agreed first 80%) or test.")] = "all",
            format: FormatOpt = None,
            counts: Annotated[str, typer.Option("--counts", help="Label counts, one proxy each (nested subsets).")
                              ] = "250,1000,4000",
            backbones: Annotated[str, typer.Option("--backbones", help="Proxy backbones, comma-separated "
                                                                       "(minilm, smollm2, a folder, a hub id).")
                                 ] = "minilm",
            labels: Annotated[str, typer.Option("--labels", help="hard (the gold's higher reward wins) or bt "
                                                                 "(drawn with the gold's Bradley-Terry "
                                                                 "probability).")] = "hard",
            noise: Annotated[float, typer.Option("--noise", help="Flip each label with this probability "
                                                                 "(seeded).")] = 0.0,
            eval_pairs: Annotated[int, typer.Option("--eval-pairs", help="Gold-labelled pairs held out as every "
                                                                         "proxy's eval data.")] = 200,
            train_config: Annotated[Optional[Path], typer.Option(
                "--train-config", help="The training config every proxy starts from (its model, data and output "
                                       "are set here).")] = None,
            set_: Annotated[Optional[list[str]], typer.Option(
                "--set", help="Override a training field for every proxy: key=value (repeatable).")] = None,
            policy: Annotated[str, typer.Option("--policy", "-p", help="The policy the config names.")] = "smollm2",
            prompts: Annotated[Optional[Path], typer.Option(
                "--prompts", help="The policy's prompts the config names (default: the held-out pairs' "
                                  "prompts, the first 64).")] = None,
            n_max: Annotated[int, typer.Option("--n-max", help="The config's largest n of best-of-n.")] = 64,
            seed: Annotated[int, typer.Option("--seed", help="Seed of the labels, the noise and the split.")] = 0,
            out: OutOpt = None,
            precision: Annotated[str, typer.Option("--precision", help="The gold's precision: auto, fp32, bf16.")
                                 ] = "auto",
            max_length: MaxLenOpt = None,
            batch_tokens: Annotated[int, typer.Option("--batch-tokens", help="Tokens per scoring batch.")] = 16384):
    """Label preference pairs with the gold model, train a proxy per backbone and label count through the
    ordinary `train` (into OUT/proxies/BACKBONE-COUNT), and write OUT/overopt.yaml for `rewardkit overopt
    --config`. Running it again skips what is done: the gold's scores are cached, finished proxies are kept
    and an interrupted one resumes.

    Example: rewardkit overopt prepare --gold runs/demo/train/best -d runs/demo/data/synthetic_train.jsonl
        --counts 100,400 --eval-pairs 100 --set max_length=128 --out runs/demo/overopt-lab
    """
    from rewardkit.errors import RewardkitError
    from rewardkit.overopt.prepare import PrepareSettings, prepare as run_prepare
    from rewardkit.train import load_config

    with user_errors():
        quiet_transformers()
        if gold is None or out is None:
            raise RewardkitError("give --gold (the gold reward model) and --out (the lab's folder)")
        base = load_config(train_config, set_ or [])
        plan = PrepareSettings(
            gold=gold, data=list(data or []), out=str(out), counts=_ints(counts, "--counts"),
            backbones=[b.strip() for b in backbones.split(",") if b.strip()], split=split, format=format,
            labels=labels, noise=noise, eval_pairs=eval_pairs, seed=seed, policy=policy,
            prompts=None if prompts is None else str(prompts), n_max=n_max, precision=precision,
            max_length=max_length, batch_tokens=batch_tokens)

        def on_proxy(name: str, row: dict) -> None:
            acc = "" if row.get("accuracy") is None else f", eval accuracy {row['accuracy']:.3f}"
            done = "already trained" if row["skipped"] else f"trained in {row['seconds']:.0f} s"
            console.print(f"proxy {escape(name)}: {done}{acc}", highlight=False)

        with progress_bar("gold labels", None, unit="pairs") as bar:
            task = bar.add_task("gold scoring the pairs", total=None)
            result = run_prepare(plan, base, on_scored=lambda k: bar.advance(task, k), on_proxy=on_proxy)
        report = result.report
        agreement = report["agreement_with_data"]
        console.print(f"{report['pairs']} pairs labelled ({report['labels']}"
                      + (f", {report['flipped']} flipped by noise" if report["noise"] else "") + ")"
                      + (f"; the gold agrees with the data's labels on {agreement:.1%}" if agreement is not None
                         else ""), highlight=False)
        console.print(f"wrote {escape(str(result.config))}: run rewardkit overopt --config "
                      f"{escape(str(result.config))}", highlight=False)
