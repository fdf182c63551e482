"""`rewardkit overopt`: how far best-of-n can push each proxy before the gold model says it misleads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rewardkit.cli.common import (
    BatchTokensOpt, ExampleCommand, FormatOpt, LimitOpt, MaxLenOpt, PrecisionOpt, app, console, load_scorer,
    progress_bar, quiet_transformers, user_errors,
)
from rewardkit.cli.sample import bar_progress


@app.command(cls=ExampleCommand)
def overopt(gold: Annotated[str, typer.Option("--gold", help="The gold reward model (any --model spec): the "
                                                             "stand-in for human judgement.")],
            proxy: Annotated[list[str], typer.Option("--proxy", help="A proxy (NAME=SPEC names it; repeatable): "
                                                                     "checkpoints, ensembles, judges, served models.")],
            n_max: Annotated[int, typer.Option("--n-max", help="The largest n of best-of-n (n = 1, 2, 4, ... up to "
                                                               "it).")],
            out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the samples, the score cache and "
                                                                 "the report.")],
            samples: Annotated[Optional[Path], typer.Option(
                "--samples", help="A pool already sampled (rewardkit sample's output, or any generic file with "
                                  "several responses per prompt), instead of --policy/--prompts.")] = None,
            policy: Annotated[Optional[str], typer.Option(
                "--policy", "-p", help="The policy to sample the pool from (as rewardkit sample).")] = None,
            prompts: Annotated[Optional[Path], typer.Option(
                "--prompts", help="Prompts to sample the pool for (any file rewardkit sample reads).")] = None,
            pool_size: Annotated[Optional[int], typer.Option(
                "--pool", help="Samples per prompt (default --n-max; more makes the large-n estimates less "
                               "noisy).")] = None,
            aggregators: Annotated[str, typer.Option(
                "--aggregators", help="Ensemble proxies: one curve per aggregator, comma-separated.")] = "mean,wco,uwo",
            resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples of the prompts.")] = 1000,
            length_calibration: Annotated[Optional[list[str]], typer.Option(
                "--length-calibration", help="NAME=FILE: score proxy NAME through the length calibration saved by "
                                             "rewardkit calibrate-length (name the same spec twice to compare "
                                             "with and without).")] = None,
            endpoint: Annotated[Optional[str], typer.Option(
                "--endpoint", help="Sample from an OpenAI-compatible server (vLLM: http://HOST:PORT/v1).")] = None,
            temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
            max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 128,
            seed: Annotated[int, typer.Option("--seed", help="Sampling and bootstrap seed.")] = 0,
            batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate call.")] = 8,
            format: FormatOpt = None, limit: LimitOpt = None, precision: PrecisionOpt = "auto",
            max_length: MaxLenOpt = None, batch_tokens: BatchTokensOpt = 16384):
    """Best-of-n against a gold reward model: samples a pool from the policy (or reads --samples), scores it
    with the gold and every proxy (cached: a rerun scores only what is new), and reports gold and proxy score
    against sqrt(KL) for n = 1, 2, 4, ... with intervals, the Gao fit, a mitigation table and the hacks.

    Example: rewardkit overopt --gold runs/demo/train/best --proxy runs/demo/train/last
        --samples runs/demo/samples.jsonl --n-max 4 --out runs/demo/overopt
    """
    from rewardkit.errors import RewardkitError
    from rewardkit.models.ensemble import check_aggregator
    from rewardkit.models.spec import named_specs
    from rewardkit.overopt.pool import cached_scores, same_model
    from rewardkit.overopt.report import write_overopt_report
    from rewardkit.overopt.study import bon_study, objectives_of

    with user_errors():
        quiet_transformers()
        aggs = [a.strip() for a in aggregators.split(",") if a.strip()]
        for a in aggs:
            check_aggregator(a)
        if n_max < 1:
            raise RewardkitError(f"--n-max must be at least 1, got {n_max}")
        named = named_specs(proxy)  # refuses two proxies of one name
        if "gold" in dict(named):
            raise RewardkitError("'gold' names the gold model; name the proxy otherwise (NAME=SPEC)")
        # the models load first: a bad spec fails in seconds, not after the sampling
        calibrations = _calibrations(length_calibration, [name for name, _ in named])
        scorers = {"gold": load_scorer(gold, max_length, None, precision, batch_tokens)}
        for name, spec in named:
            scorers[name] = load_scorer(spec, max_length, None, precision, batch_tokens,
                                        length_calibration=calibrations.get(name))
        for name, spec in named:
            if same_model(gold, spec, scorers["gold"].describe(), scorers[name].describe()):
                console.print(f"[yellow]warning:[/] proxy {escape(name)} is the gold model: its curve can only "
                              "rise", highlight=False)
        started = time.perf_counter()
        pool, sampled = _pool(out, samples, policy, prompts, pool_size or n_max, endpoint, temperature,
                              max_new_tokens, seed, batch_size, format, limit, precision)
        if n_max > pool.smallest:
            raise RewardkitError(f"--n-max {n_max} is above the pool size: the smallest prompt has {pool.smallest} "
                                 "samples (sample more with --pool, or lower --n-max)")
        sampling_s = time.perf_counter() - started
        started = time.perf_counter()
        results = {}
        specs = {"gold": gold, **dict(named)}
        with progress_bar("scoring", None, unit="prompts") as bar:
            for name, scorer in scorers.items():
                task = bar.add_task(f"scoring {name}", total=len(pool.records))
                # cached by what made the scores: the spec and the loading options, not the proxy's name
                key = f"{specs[name]}|precision={precision}|max_length={max_length}" + (
                    f"|length_calibration={calibrations[name].resolve()}" if name in calibrations else "")
                results[name] = cached_scores(scorer, key, pool, out / "scores",
                                              progress=lambda k, t=task: bar.advance(t, k))
        scoring_s = time.perf_counter() - started
        objectives = {}
        for name, _ in named:
            objectives.update(objectives_of(name, scorers[name], results[name], aggs))
        report = bon_study(pool, results["gold"], objectives, n_max=n_max, resamples=resamples, seed=seed)
        report.update({"gold_model": gold, "proxies": dict(named), "aggregators": aggs,
                       "seconds": {"sampling": sampling_s, "scoring": scoring_s}, "sampled": sampled})
        paths = write_overopt_report(report, out)
        for row in report["mitigation"]:
            console.print(f"  {escape(row['objective'])}: peak gold {row['peak_gold']:+.3f} at n = {row['peak_n']}, "
                          f"gold at n = {n_max} {row['gold_at_n_max']:+.3f}", highlight=False)
        console.print(f"report: {escape(str(paths['markdown']))}", highlight=False)


def _calibrations(items: Optional[list[str]], proxies: list[str]) -> dict[str, Path]:
    """--length-calibration NAME=FILE entries, each naming a proxy."""
    from rewardkit.errors import RewardkitError

    out = {}
    for item in items or []:
        name, eq, path = item.partition("=")
        if not eq or name not in proxies:
            raise RewardkitError(f"--length-calibration {item!r}: expected NAME=FILE with NAME one of the proxies "
                                 f"({', '.join(proxies)})")
        if not Path(path).is_file():
            raise RewardkitError(f"--length-calibration {item!r}: {path} is not a file")
        out[name] = Path(path)
    return out


def _pool(out: Path, samples: Optional[Path], policy, prompts, n: int, endpoint, temperature, max_new_tokens,
          seed, batch_size, format, limit, precision):
    """The pool: --samples as given, else OUT/samples.jsonl, sampled (resumably) unless it is already there.
    Returns (pool, how it was made)."""
    from rewardkit.errors import RewardkitError
    from rewardkit.overopt.pool import Pool

    if samples is not None:
        if policy or prompts:
            raise RewardkitError("give --samples, or --policy with --prompts, not both")
        return Pool.load(samples), {"samples": str(samples)}
    if not (policy and prompts):
        raise RewardkitError("no pool: give --samples FILE, or --policy and --prompts to sample one")
    target = out / "samples.jsonl"
    made = {"policy": policy, "prompts": str(prompts), "n": n, "temperature": temperature,
            "max_new_tokens": max_new_tokens, "seed": seed}
    if target.is_file():
        console.print(f"reusing the pool in {escape(str(target))} (delete it to sample again)", highlight=False)
        return Pool.load(target), made
    from rewardkit.data.prompts import load_prompts
    from rewardkit.sampling import load_policy, sample

    prompt_list = load_prompts(prompts, format=format, limit=limit)
    with console.status(f"loading {policy}"):
        loaded = load_policy(policy, endpoint=endpoint, precision=precision)
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar("sampling", None, unit="samples") as bar:
        summary = sample(loaded, prompt_list, target, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                         seed=seed, batch_size=batch_size, progress=bar_progress(bar))
    console.print(f"sampled {summary.samples} in {summary.seconds:.1f} s ({summary.samples_per_second:.2f} "
                  "samples/s)")
    made["samples_per_s"] = summary.samples_per_second
    return Pool.load(target), made
