"""One string names any Scorer, so every command (score, eval, probe, compare) takes every kind of model.

    PATH or NAME                               a reward model: a directory, a hub id or a packaged name (minilm);
                                               a directory saved by FrozenHeadsScorer.save (heads fitted on
                                               frozen features, gated or not) loads as that scorer
    dpo:POLICY[@REFERENCE][?beta=0.1&mode=avg] a DPO policy read as an implicit reward model (METHODS §7);
                                               without a reference, a reference-free mode (sum, avg, norm)
    judge:MODEL[?prompt=ID]                    a local causal LM as a pairwise judge (METHODS §8)
    judge:http(s)://HOST/v1?model=NAME         any OpenAI-compatible endpoint as a pairwise judge
    python:MODULE:CALLABLE                     your own Scorer: CALLABLE() returns it (gold functions, ...)
    ensemble:A,B,C[?agg=uwo&lambda=0.5&ddof=0] several models as one (rewardkit.models.ensemble); members are
                                               specs (NAME=SPEC names one); stats from each member's own
                                               stored normalisation
    PATH/ensemble.json or its directory        an ensemble manifest, with its members' reference stats
    http(s)://HOST:PORT                        a running `rewardkit serve`, through RewardClient (its API key from
                                               $REWARDKIT_API_KEY); the server's own settings apply

A NAME=SPEC prefix, where a command takes several models, only names the model in reports.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl

from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import Scorer

IMPLICIT_OPTIONS = {"beta": float, "mode": str}
JUDGE_OPTIONS = {"model": str, "prompt": str}


def split_options(spec: str, prefix: str, allowed: dict[str, type]) -> tuple[str, dict[str, Any]]:
    """'PREFIX:target?key=value&...' -> (target, {key: typed value}); unknown keys and bad values are clear
    errors that quote the whole spec."""
    target, _, query = spec[len(prefix):].partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise RewardkitError(f"model spec {spec!r}: unknown option {key!r}; known: {', '.join(allowed)}")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            raise RewardkitError(f"model spec {spec!r}: {key}={value!r} is not a {allowed[key].__name__}") from None
    if not target:
        raise RewardkitError(f"model spec {spec!r} names no model")
    return target, options


def load_scorer(spec: str, *, max_length: int | None = None, chat_template: str | None = None,
                precision: str = "auto", length_calibration: str | None = None, **reward_model_options) -> Scorer:
    """The Scorer a spec names (see the module docstring). `reward_model_options` (batch_tokens,
    share_prefix, ...) apply to reward models; `length_calibration` wraps any Scorer in the post-hoc length
    calibration saved at that path (rewardkit.eval.length)."""
    spec = spec.strip()
    if spec.startswith(("http://", "https://")):
        return _remote_scorer(spec, max_length=max_length, chat_template=chat_template, precision=precision,
                              length_calibration=length_calibration, **reward_model_options)
    if "aggregation" in reward_model_options and spec.startswith(("python:", "dpo:", "judge:")):
        raise RewardkitError(f"aggregation applies to process reward models, not to {spec.split(':')[0]}: scorers")
    if reward_model_options.get("compile") and (spec.startswith(("python:", "dpo:", "judge:"))
                                                or _is_frozen_heads(spec)):
        raise RewardkitError(f"{spec}: compile applies to reward models")
    if spec.startswith("ensemble:") or _is_ensemble_manifest(spec):
        from rewardkit.models.ensemble import EnsembleScorer, ensemble_from_spec

        loading = {"max_length": max_length, "chat_template": chat_template, "precision": precision,
                   **reward_model_options}
        scorer = ensemble_from_spec(spec, **loading) if spec.startswith("ensemble:") else EnsembleScorer.load(
            spec, **loading)
    elif spec.startswith("python:"):
        scorer = scorer_from_callable(spec[len("python:"):])
    elif spec.startswith("dpo:"):
        from rewardkit.models.implicit import ImplicitRewardScorer

        target, options = split_options(spec, "dpo:", IMPLICIT_OPTIONS)
        policy, _, reference = target.partition("@")
        scorer: Scorer = ImplicitRewardScorer.from_pretrained(
            policy, reference or None, precision=precision, chat_template=chat_template,
            **({"max_length": max_length} if max_length else {}), **options)
    elif spec.startswith("judge:"):
        from rewardkit.models.judge import JudgeScorer

        target, options = split_options(spec, "judge:", JUDGE_OPTIONS)
        local = {} if target.startswith(("http://", "https://")) else {
            "precision": precision, "chat_template": chat_template, "max_length": max_length}
        scorer = JudgeScorer.from_spec(target, **options, **local)
    elif _is_frozen_heads(spec):
        from rewardkit.multiobjective.scorer import FrozenHeadsScorer

        if "aggregation" in reward_model_options:
            raise RewardkitError(f"{spec}: aggregation applies to process reward models, not to frozen heads")
        scorer = FrozenHeadsScorer.load(spec, precision=precision, **{
            k: v for k, v in reward_model_options.items() if k in ("batch_tokens", "share_prefix")})
    else:
        from rewardkit.models.rm_scorer import RewardModelScorer

        scorer = RewardModelScorer.from_pretrained(spec, max_length=max_length, chat_template=chat_template,
                                                   precision=precision, **reward_model_options)
    if length_calibration:
        from rewardkit.eval.length import LengthCalibratedScorer

        scorer = LengthCalibratedScorer.load(scorer, length_calibration)
    return scorer


def _remote_scorer(url: str, *, length_calibration: str | None, **options) -> Scorer:
    """A served model: how it tokenizes, batches and truncates is the server's business, so the local
    loading options are refused when set (defaults, as the CLI passes them, are fine)."""
    from rewardkit.client import RewardClient

    set_options = sorted(k for k, v in options.items()
                         if v not in (None, False, "auto") and k not in ("batch_tokens", "share_prefix"))
    if set_options:
        raise RewardkitError(f"{url}: {', '.join(set_options)} cannot be set for a served model; start the server "
                             "with them instead")
    scorer: Scorer = RewardClient(url)
    if length_calibration:
        from rewardkit.eval.length import LengthCalibratedScorer

        scorer = LengthCalibratedScorer.load(scorer, length_calibration)
    return scorer


def _is_ensemble_manifest(spec: str) -> bool:
    from rewardkit.models.ensemble import is_manifest

    return is_manifest(spec)


def _is_frozen_heads(spec: str) -> bool:
    from pathlib import Path

    from rewardkit.multiobjective.scorer import FROZEN_META

    return (Path(spec) / FROZEN_META).is_file()


def scorer_from_callable(target: str) -> Scorer:
    """'MODULE:CALLABLE' -> CALLABLE(), checked to be a Scorer."""
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise RewardkitError(f"model spec 'python:{target}': expected python:MODULE:CALLABLE")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise RewardkitError(f"model spec 'python:{target}': {e}") from None
    scorer = factory()
    if not isinstance(scorer, Scorer):
        raise RewardkitError(f"model spec 'python:{target}': {name}() returned a {type(scorer).__name__}, "
                             f"not a Scorer (it needs score(items) and describe())")
    return scorer


def named_specs(specs: list[str]) -> list[tuple[str, str]]:
    """'NAME=SPEC' or 'SPEC' -> (name, spec); unnamed models are named by their spec, and names must differ."""
    named = []
    for spec in specs:
        name, eq, rest = spec.partition("=")
        # "judge:http://h/v1?model=x" has '=' inside the spec: a name never contains ':', '/' or '?'
        if eq and rest and not any(c in name for c in ":/?@"):
            named.append((name, rest))
        else:
            named.append((spec, spec))
    names = [n for n, _ in named]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RewardkitError(f"two models are named {duplicates[0]!r}; name them NAME=SPEC")
    return named
