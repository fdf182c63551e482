"""A synthetic best-of-n task where over-optimization is planted: each sample states its true quality Q and
three spurious features A, B, C. The gold reward is Q minus the squared features (the hack hurts); proxy "a"
rewards Q + A, so best-of-n on it first finds quality, then finds large A. An ensemble of the three proxies
(a, b, c) disagrees exactly where one feature is pushed, which the conservative aggregators penalise.

Used by tests/overopt through `python:overopt_task:NAME` specs, so the CLI loads them like any model.
"""

from __future__ import annotations

import re

import numpy as np

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.models.ensemble import EnsembleScorer, MemberStats
from rewardkit.models.scorer import FunctionScorer

FEATURES = re.compile(r"Q=(-?[\d.]+) A=(-?[\d.]+) B=(-?[\d.]+) C=(-?[\d.]+)")


def features(text: str) -> tuple[float, float, float, float]:
    match = FEATURES.search(text)
    if match is None:
        raise ValueError(f"not a synthetic sample: {text[:40]!r}")
    return tuple(float(x) for x in match.groups())


def pool_records(prompts: int = 40, samples: int = 64, seed: int = 0) -> list[PreferenceRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for p in range(prompts):
        values = rng.normal(size=(samples, 4))
        texts = [f"answer {p}.{i}: Q={q:.3f} A={a:.3f} B={b:.3f} C={c:.3f}" for i, (q, a, b, c) in enumerate(values)]
        records.append(PreferenceRecord(f"p{p}", user_prompt(f"question {p}"), [Response(t) for t in texts]))
    return records


def gold_fn(prompt, response) -> float:
    q, a, b, c = features(response.content)
    return q - (a * a + b * b + c * c)


def proxy_fn(feature: int):
    return lambda prompt, response: features(response.content)[0] + features(response.content)[feature]


def gold() -> FunctionScorer:
    return FunctionScorer(gold_fn, name="gold")


def proxy_a() -> FunctionScorer:
    return FunctionScorer(proxy_fn(1), name="proxy_a")


def ensemble() -> EnsembleScorer:
    """Members Q + A, Q + B, Q + C: each has mean 0 and std sqrt(2) over the task's samples."""
    members = [FunctionScorer(proxy_fn(k), name=f"proxy_{'abc'[k - 1]}") for k in (1, 2, 3)]
    stats = [MemberStats(0.0, 2 ** 0.5)] * 3
    return EnsembleScorer(members, names=["a", "b", "c"], stats=stats, aggregator="mean")


def length_gold_fn(prompt, response) -> float:
    """A gold for any text (policy samples included): answers near 40 characters are best."""
    return -abs(len(response.content) - 40) / 10


def length_gold() -> FunctionScorer:
    return FunctionScorer(length_gold_fn, name="length_gold")


def long_proxy() -> FunctionScorer:
    """A proxy for any text with a planted flaw: longer is always better (the gold wants about 40 characters)."""
    return FunctionScorer(lambda prompt, response: len(response.content) / 10, name="long_proxy")


def length_ensemble() -> EnsembleScorer:
    """Three proxies for any text that share the planted flaw to different degrees: characters, words, vowels."""
    members = [FunctionScorer(lambda p, r: len(r.content) / 10, name="chars"),
               FunctionScorer(lambda p, r: len(r.content.split()) / 2, name="words"),
               FunctionScorer(lambda p, r: sum(ch in "aeiou" for ch in r.content.lower()) / 4, name="vowels")]
    return EnsembleScorer(members, names=["chars", "words", "vowels"], stats=[MemberStats(0.0, 1.0)] * 3,
                          aggregator="mean")
