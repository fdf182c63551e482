"""The one abstraction: a Scorer assigns rewards to (prompt, responses).

A trained reward model, an ensemble, a DPO policy read as an implicit reward model, an LLM judge, a process
reward model or a known gold function are all Scorers. Evaluation, probes, the server and the CLI consume
this protocol and never care which kind they got.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rewardkit.data.record import Message, Response


@dataclass
class ScoreItem:
    """What a Scorer scores: one prompt and its candidate responses (a PreferenceRecord also fits)."""

    prompt: list[Message]
    responses: list[Response]


@dataclass
class ScoreResult:
    """Scores for one item's responses. Only `rewards` is always present.

    rewards:          one scalar per response.
    objectives:       per objective name, one score per response (multi-objective models).
    weights:          the combination weights that produced `rewards` from `objectives`.
    step_rewards:     per response, one score per step (process reward models).
    members:          per ensemble member, one score per response.
    uncertainty:      per response, the spread of the ensemble members' scores.
    response_tokens:  per response, its length in the scorer's tokens (prompt and template excluded).
    truncated:        per response, how many tokens truncation removed (0 when it fit).
    """

    rewards: list[float]
    objectives: dict[str, list[float]] | None = None
    weights: dict[str, float] | None = None
    step_rewards: list[list[float]] | None = None
    members: list[list[float]] | None = None
    uncertainty: list[float] | None = None
    response_tokens: list[int] | None = None
    truncated: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields that are present, as JSON-ready values (what `rewardkit score` writes)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@runtime_checkable
class Scorer(Protocol):
    """Anything that turns a batch of items into one ScoreResult per item, in order."""

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]: ...

    def describe(self) -> dict[str, Any]:
        """What a report must record about how scores were made: name, dtype, max length, chat template,
        padding side, and so on."""
        ...


@dataclass
class FunctionScorer:
    """A Scorer from a plain function of (prompt, response) -> reward: gold rewards in simulations, tests."""

    fn: Any
    name: str = "function"
    info: dict[str, Any] = field(default_factory=dict)

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        return [ScoreResult(rewards=[float(self.fn(it.prompt, r)) for r in it.responses]) for it in items]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "function", **self.info}


def normalization_stats(scorer: Scorer) -> tuple[float, float] | None:
    """(mean, std) of rewards on a reference set, stored with the model (rewardkit.json's "normalization"), or
    None when the scorer has no usable ones (missing, not finite, or std <= 0)."""
    stats = getattr(scorer, "normalization", None)
    if stats is None:
        meta = getattr(getattr(scorer, "model", None), "meta", None)
        stats = getattr(meta, "normalization", None)
    if not isinstance(stats, dict):
        return None
    try:
        mean, std = float(stats["mean"]), float(stats["std"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        return None
    return mean, std
