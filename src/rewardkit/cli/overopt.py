"""`rewardkit overopt`: how far best-of-n can push each proxy before the gold model says it misleads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rewardkit.cli.common import (
    ExampleGroup, FormatOpt, LimitOpt, MaxLenOpt, app, console, load_scorer, progress_bar, quiet_transformers,
    user_errors,
)
from rewardkit.cli.sample import bar_progress


overopt_app = typer.Typer(cls=ExampleGroup)  # its help is the callback's docstring
app.add_typer(overopt_app, name="overopt")
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="The lab's YAML config (rewardkit overopt prepare writes one); flags override it.")]
GoldOpt = Annotated[Optional[str], typer.Option(
    "--gold", help="The gold reward model (any --model spec): the stand-in for human judgement.")]
ProxyOpt = Annotated[Optional[list[str]], typer.Option(
    "--proxy", help="A proxy (NAME=SPEC names it; repeatable): checkpoints, ensembles, judges, served models.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the samples, the score cache "
                                                                    "and the report.")]
PolicyOpt = Annotated[Optional[str], typer.Option("--policy", "-p", help="The policy (as rewardkit sample).")]
PromptsOpt = Annotated[Optional[Path], typer.Option("--prompts", help="Prompts (any file rewardkit sample reads).")]


def proxies_of(proxy: Optional[list[str]]) -> Optional[dict[str, str]]:
    """--proxy NAME=SPEC flags as the config's proxies (None when none is given)."""
    from rewardkit.models.spec import named_specs

    return dict(named_specs(proxy)) if proxy else None  # refuses two proxies of one name


@overopt_app.callback(invoke_without_command=True, cls=ExampleGroup)
def overopt(ctx: typer.Context, config: ConfigOpt = None, gold: GoldOpt = None, proxy: ProxyOpt = None,
            n_max: Annotated[Optional[int], typer.Option("--n-max", help="The largest n of best-of-n (n = 1, 2, 4, "
                                                                         "... up to it).")] = None,
            out: OutOpt = None,
            samples: Annotated[Optional[Path], typer.Option(
                "--samples", help="A pool already sampled (rewardkit sample's output, or any generic file with "
                                  "several responses per prompt), instead of --policy/--prompts.")] = None,
            policy: PolicyOpt = None, prompts: PromptsOpt = None,
            pool_size: Annotated[Optional[int], typer.Option(
                "--pool", help="Samples per prompt (default --n-max; more makes the large-n estimates less "
                               "noisy).")] = None,
            aggregators: Annotated[Optional[str], typer.Option(
                "--aggregators", help="Ensemble proxies: one curve per aggregator, comma-separated (default "
                                      "mean,wco,uwo).")] = None,
            resamples: Annotated[Optional[int], typer.Option("--resamples", help="Bootstrap resamples of the "
                                                                                 "prompts (default 1000).")] = None,
            length_calibration: Annotated[Optional[list[str]], typer.Option(
                "--length-calibration", help="NAME=FILE: score proxy NAME through the length calibration saved by "
                                             "rewardkit calibrate-length (name the same spec twice to compare "
                                             "with and without).")] = None,
            endpoint: Annotated[Optional[str], typer.Option(
                "--endpoint", help="Sample from an OpenAI-compatible server (vLLM: http://HOST:PORT/v1).")] = None,
            temperature: Annotated[Optional[float], typer.Option("--temperature", help="Default 1.")] = None,
            max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Default 128.")] = None,
            seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling and bootstrap seed.")] = None,
            batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Prompts per generate call "
                                                                                   "(default 8).")] = None,
            format: FormatOpt = None, limit: LimitOpt = None,
            precision: Annotated[Optional[str], typer.Option("--precision", help="auto, fp32, bf16 or fp16.")] = None,
            max_length: MaxLenOpt = None,
            batch_tokens: Annotated[Optional[int], typer.Option("--batch-tokens", help="Tokens per scoring batch "
                                                                                       "(default 16384).")] = None):
    """Best-of-n against a gold reward model: samples a pool from the policy (or reads --samples), scores it
    with the gold and every proxy (cached: a rerun scores only what is new), and reports gold and proxy score
    against sqrt(KL) for n = 1, 2, 4, ... with intervals, the Gao fit, a mitigation table and the hacks.
    Every flag is also a field of the --config file. Subcommands: `prepare` builds the gold/proxy setup of
    Gao et al. and writes that config; `rl` measures the same pair under GRPO.

    Example: rewardkit overopt --gold runs/demo/train/best --proxy runs/demo/train/last
        --samples runs/demo/samples.jsonl --n-max 4 --out runs/demo/overopt
    """
    if ctx.invoked_subcommand is not None:
        return
    from rewardkit.errors import RewardkitError
    from rewardkit.overopt.config import load_overopt_config

    with user_errors():
        quiet_transformers()
        if config is None and gold is None:
            raise RewardkitError("give --gold and --proxy (or --config FILE); see rewardkit overopt --help")
        calibrations = dict(_pair(item, "--length-calibration") for item in length_calibration or []) or None
        cfg = load_overopt_config(
            config, gold=gold, proxies=proxies_of(proxy), n_max=n_max, out=_str(out), samples=_str(samples),
            policy=policy, prompts=_str(prompts), pool=pool_size, format=format, limit=limit,
            aggregators=[a.strip() for a in aggregators.split(",") if a.strip()] if aggregators else None,
            resamples=resamples, length_calibration=calibrations, endpoint=endpoint, temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, precision=precision,
            max_length=max_length, batch_tokens=batch_tokens)
        run_bon(cfg)


def _str(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def _pair(item: str, flag: str) -> tuple[str, str]:
    from rewardkit.errors import RewardkitError

    name, eq, value = item.partition("=")
    if not eq or not name:
        raise RewardkitError(f"{flag} {item!r}: expected NAME=FILE")
    return name, value


def load_models(cfg, calibrations: dict[str, Path]) -> dict:
    """The gold model and every proxy, loaded before any sampling: a bad spec fails in seconds. Warns where a
    proxy is the gold model."""
    from rewardkit.overopt.pool import same_model

    scorers = {"gold": load_scorer(cfg.gold, cfg.max_length, None, cfg.precision, cfg.batch_tokens)}
    for name, spec in cfg.proxies.items():
        scorers[name] = load_scorer(spec, cfg.max_length, None, cfg.precision, cfg.batch_tokens,
                                    length_calibration=calibrations.get(name))
        if same_model(cfg.gold, spec, scorers["gold"].describe(), scorers[name].describe()):
            console.print(f"[yellow]warning:[/] proxy {escape(name)} is the gold model: its curve can only "
                          "rise", highlight=False)
    return scorers


def run_bon(cfg) -> None:
    """The best-of-n study of a config, printed and written to cfg.out."""
    from rewardkit.errors import RewardkitError
    from rewardkit.models.ensemble import check_aggregator
    from rewardkit.overopt.pool import cached_scores
    from rewardkit.overopt.report import write_overopt_report
    from rewardkit.overopt.study import bon_study, objectives_of

    if cfg.n_max is None:
        raise RewardkitError("no --n-max (the config's n_max): the largest n of best-of-n")
    for a in cfg.aggregators:
        check_aggregator(a)
    out = Path(cfg.out)
    calibrations = _calibrations(cfg.length_calibration, list(cfg.proxies))
    scorers = load_models(cfg, calibrations)
    started = time.perf_counter()
    pool, sampled = _pool(out, _path(cfg.samples), cfg.policy, _path(cfg.prompts), cfg.pool or cfg.n_max,
                          cfg.endpoint, cfg.temperature, cfg.max_new_tokens, cfg.seed, cfg.batch_size, cfg.format,
                          cfg.limit, cfg.precision)
    if cfg.n_max > pool.smallest:
        raise RewardkitError(f"--n-max {cfg.n_max} is above the pool size: the smallest prompt has {pool.smallest} "
                             "samples (sample more with --pool, or lower --n-max)")
    sampling_s = time.perf_counter() - started
    started = time.perf_counter()
    results = {}
    specs = {"gold": cfg.gold, **cfg.proxies}
    with progress_bar("scoring", None, unit="prompts") as bar:
        for name, scorer in scorers.items():
            task = bar.add_task(f"scoring {name}", total=len(pool.records))
            # cached by what made the scores: the spec and the loading options, not the proxy's name
            key = f"{specs[name]}|precision={cfg.precision}|max_length={cfg.max_length}" + (
                f"|length_calibration={calibrations[name].resolve()}" if name in calibrations else "")
            results[name] = cached_scores(scorer, key, pool, out / "scores",
                                          progress=lambda k, t=task: bar.advance(t, k))
    scoring_s = time.perf_counter() - started
    objectives = {}
    for name in cfg.proxies:
        objectives.update(objectives_of(name, scorers[name], results[name], cfg.aggregators))
    report = bon_study(pool, results["gold"], objectives, n_max=cfg.n_max, resamples=cfg.resamples, seed=cfg.seed)
    report.update({"gold_model": cfg.gold, "proxies": dict(cfg.proxies), "aggregators": cfg.aggregators,
                   "seconds": {"sampling": sampling_s, "scoring": scoring_s}, "sampled": sampled})
    paths = write_overopt_report(report, out)
    for row in report["mitigation"]:
        console.print(f"  {escape(row['objective'])}: peak gold {row['peak_gold']:+.3f} at n = {row['peak_n']}, "
                      f"gold at n = {cfg.n_max} {row['gold_at_n_max']:+.3f}", highlight=False)
    console.print(f"report: {escape(str(paths['markdown']))}", highlight=False)


def _path(value: Optional[str]) -> Optional[Path]:
    return None if value is None else Path(value)


def _calibrations(items: dict[str, str], proxies: list[str]) -> dict[str, Path]:
    """length_calibration NAME: FILE entries, each naming a proxy."""
    from rewardkit.errors import RewardkitError

    out = {}
    for name, path in items.items():
        if name not in proxies:
            raise RewardkitError(f"--length-calibration {name}={path}: {name!r} is not one of the proxies "
                                 f"({', '.join(proxies)})")
        if not Path(path).is_file():
            raise RewardkitError(f"--length-calibration {name}={path}: {path} is not a file")
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
