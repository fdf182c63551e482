"""Rewards for an RL trainer's (prompt, completion) pairs, from any Scorer.

RL trainers hand a reward function flat lists: B·G prompts (each prompt repeated once per generation) and
their completions, as text (the "standard" format) or as chat messages (the "conversational" one). A Scorer
takes items: one prompt with its candidate responses. `CompletionRewards` is the bridge, written once for
TRL, verl and anything else:

- completions of the same prompt become ONE item, so a causal reward model computes the prompt once for
  all its generations (prefix sharing) instead of once per completion, as a padded batch would;
- the reward is the Scorer's `rewards`, or one named objective of a multi-objective model, optionally
  standardised with the mean and std stored with the model ((r - mean) / std);
- every completion is checked first, and a bad one is an error naming its index, before any scoring.

A standard prompt is one user turn (the reward model renders it with its own chat template); a conversational
completion's last message is the response, and any turns before it (tool calls and results) join the prompt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardkit.data.record import ROLES, Message, Response, user_prompt
from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreItem, ScoreResult, Scorer, normalization_stats


def conversation(prompt: Any, completion: Any, index: int) -> tuple[list[Message], str]:
    """One trainer pair as (prompt messages, response text), or a RewardkitError naming completion `index`."""
    messages = _messages(prompt, f"prompt {index}", allow_text=True)
    if isinstance(completion, str):
        return messages, completion
    turns = _messages(completion, f"completion {index}", allow_text=False)
    if not turns:
        raise RewardkitError(f"completion {index} is an empty list of messages")
    last = turns[-1]
    if last["role"] != "assistant":
        raise RewardkitError(f"completion {index}: its last message must be the assistant's, got {last['role']!r}")
    return messages + turns[:-1], last["content"]


def _messages(value: Any, where: str, *, allow_text: bool) -> list[Message]:
    if isinstance(value, str) and allow_text:
        return user_prompt(value)
    if not isinstance(value, (list, tuple)):
        kinds = "text or a list of {role, content} messages" if allow_text else "text or a list of messages"
        raise RewardkitError(f"{where}: expected {kinds}, got {type(value).__name__}")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise RewardkitError(f"{where}, message {k}: expected {{role: system|user|assistant, content: text}}, "
                                 f"got {_short(m)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Grouped:
    """Pairs grouped by prompt: `items[i]` holds the responses of one prompt, and `where[k]` is completion k's
    (item, response) position."""

    items: list[ScoreItem] = field(default_factory=list)
    where: list[tuple[int, int]] = field(default_factory=list)


def group_by_prompt(pairs: Sequence[tuple[list[Message], str]]) -> Grouped:
    """Completions of equal prompts (anywhere in the list) as one item each, first-seen order."""
    grouped = Grouped()
    index: dict[str, int] = {}
    for prompt, response in pairs:
        key = json.dumps(prompt, ensure_ascii=False)
        if key not in index:
            index[key] = len(grouped.items)
            grouped.items.append(ScoreItem(prompt=prompt, responses=[]))
        item = grouped.items[index[key]]
        grouped.where.append((index[key], len(item.responses)))
        item.responses.append(Response(response))
    return grouped


class CompletionRewards:
    """(prompts, completions) -> one float per completion, from any Scorer.

    objective:    read this objective of a multi-objective model instead of the combined reward.
    normalize:    standardise rewards with the (mean, std) stored with the model; a remote server is asked to
                  do it with its own stats.
    empty_reward: the reward of an empty completion; None (the default) makes one an error, since a reward
                  model has no response token to read a score at and an RL loop should not learn from a guess.
    """

    def __init__(self, scorer: Scorer, *, objective: str | None = None, normalize: bool = False,
                 empty_reward: float | None = None):
        if not isinstance(scorer, Scorer):
            raise RewardkitError(f"expected a Scorer (score(items) and describe()), got {type(scorer).__name__}")
        if objective is not None and normalize:
            raise RewardkitError("normalize uses the stats of the combined reward; they do not apply to one "
                                 f"objective ({objective!r})")
        self.scorer = scorer
        self.objective = objective
        self.normalize = normalize
        self.empty_reward = empty_reward
        self.remote = _is_remote(scorer)
        self.stats = None
        if normalize and not self.remote:
            self.stats = normalization_stats(scorer)
            if self.stats is None:
                raise RewardkitError("normalize: this model has no stored normalization stats (mean and std in "
                                     "rewardkit.json's 'normalization')")
        if objective is not None:
            known = self.scorer.describe().get("objectives")
            if isinstance(known, list) and objective not in known:
                raise RewardkitError(f"objective {objective!r}: the model's objectives are {', '.join(known)}")
        self.last_results: list[ScoreResult] = []

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        if isinstance(prompts, (str, dict)) or isinstance(completions, (str, dict)):
            raise RewardkitError("prompts and completions must be lists (one entry per completion)")
        if len(prompts) != len(completions):
            raise RewardkitError(f"{len(prompts)} prompts for {len(completions)} completions: they must pair up")
        pairs = [conversation(p, c, k) for k, (p, c) in enumerate(zip(prompts, completions))]
        empty = [k for k, (_, text) in enumerate(pairs) if not text]
        if empty and self.empty_reward is None:
            raise RewardkitError(f"completion {empty[0]} is empty ({len(empty)} of {len(pairs)} are): a reward "
                                 "model has no response token to read; pass empty_reward=... to give them a "
                                 "fixed reward")
        scored = [k for k, (_, text) in enumerate(pairs) if text]
        grouped = group_by_prompt([pairs[k] for k in scored])
        results = self._score(grouped.items) if grouped.items else []
        self.last_results = results
        rewards = [float(self.empty_reward) if self.empty_reward is not None else math.nan] * len(pairs)
        for k, (i, j) in zip(scored, grouped.where):
            rewards[k] = self._value(results[i], j)
        return rewards

    def _score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        if self.remote and self.normalize:
            return self.scorer.score(items, normalize=True)
        return self.scorer.score(items)

    def _value(self, result: ScoreResult, j: int) -> float:
        if self.objective is not None:
            if not result.objectives or self.objective not in result.objectives:
                have = ", ".join(result.objectives or {}) or "none"
                raise RewardkitError(f"objective {self.objective!r}: the scorer returned objectives: {have}")
            return float(result.objectives[self.objective][j])
        if self.normalize:
            if self.remote:
                return float(result.normalized_rewards[j])
            mean, std = self.stats
            return (float(result.rewards[j]) - mean) / std
        return float(result.rewards[j])

    def truncated_fraction(self) -> float | None:
        """The share of the last call's responses that truncation shortened (None when the scorer does not
        say)."""
        counts = [t for r in self.last_results for t in (r.truncated or [])]
        if not self.last_results or not counts:
            return None
        return sum(1 for t in counts if t) / len(counts)


def _is_remote(scorer: Scorer) -> bool:
    from rewardkit.client import RewardClient

    return isinstance(scorer, RewardClient)


def load_reward_scorer(model: str | Scorer, **options) -> Scorer:
    """A Scorer from a model spec (rewardkit.models.spec: a checkpoint, hub id, judge:..., dpo:..., python:...,
    or the URL of a `rewardkit serve`) or a Scorer as it is; `options` go to the loader (max_length, precision,
    batch_tokens, api_key for a server, ...)."""
    if not isinstance(model, str):
        if options:
            raise RewardkitError(f"options ({', '.join(options)}) apply when the model is a spec, not a "
                                 f"{type(model).__name__}")
        return model
    from rewardkit.models.spec import load_scorer

    return load_scorer(model, **options)
