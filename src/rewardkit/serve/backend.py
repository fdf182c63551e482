"""How the server drives one Scorer: requests in, work units with a token cost, one call per batch, JSON out.

Two kinds of scorer:

- a reward model (anything with `encode`, `encode_token_ids` and `score_encoded`, as RewardModelScorer has):
  each request is tokenized when it arrives, so a bad token id (or, with overlength="reject", an over-long
  sequence) is rejected with a 422 before it is queued, its token cost is exact, and a batch of text and
  token-id requests is still ONE `score_encoded` call, planned with token budgets and prefix sharing;
- any other Scorer: requests become ScoreItems and a batch is one `score` call; token cost is estimated from
  characters, and token ids are refused (400), since such a scorer has no tokenizer of its own to agree with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreItem, ScoreResult, Scorer, normalization_stats
from rewardkit.serve.schemas import ItemIn

Overlength = Literal["reject", "truncate"]


class RequestError(Exception):
    """A request the server cannot score, with the HTTP status and reason to answer with."""

    def __init__(self, status: int, detail: str, *, retry_after: int | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else None


@dataclass
class Job:
    """One request's work: what the scorer gets, and what it costs the batch."""

    payload: list  # list[list[Encoded]] for a reward model, list[ScoreItem] otherwise
    tokens: int
    sequences: int


class Backend:
    """Wraps a Scorer for serving.

    overlength: what happens to a sequence (prompt + response, in model tokens) over the max length.
      "truncate" (the default, as `rewardkit score` does): the model truncates it as the library does (prompt
      tokens from the left first, then the response's start, so the response's end where the score is read
      stays) and the cut is reported per response in `truncated`. "reject": 422 naming the response.
    max_length: a server limit below the model's own max length, for "reject" only (the model truncates at
      its own max length, so to truncate shorter, load the model with that max_length). None: the model's.
      Only reward models can check lengths (other scorers have no tokenizer here).
    """

    def __init__(self, scorer: Scorer, *, max_length: int | None = None, overlength: Overlength = "truncate"):
        if overlength not in ("reject", "truncate"):
            raise ValueError(f"overlength must be 'reject' or 'truncate', got {overlength!r}")
        self.scorer = scorer
        self.encodes = all(callable(getattr(scorer, m, None))
                           for m in ("encode", "encode_token_ids", "score_encoded"))
        self.overlength = overlength
        model_max = self._model_max_length()
        if self.encodes and overlength == "truncate" and max_length and model_max and max_length < model_max:
            raise ValueError(f"overlength='truncate' cuts at the model's max_length ({model_max}); load the model "
                             f"with max_length={max_length} to truncate shorter, or pass overlength='reject' to "
                             f"refuse sequences over {max_length} tokens")
        limits = [n for n in (max_length, model_max) if n]
        self.max_length = min(limits) if limits else None
        self.normalization = normalization_stats(scorer)
        self.vocab_size = getattr(scorer, "vocab_size", None) if self.encodes else None
        planner = getattr(scorer, "planner", None)
        self.shares_prefix = bool(getattr(planner, "packed", False))

    @property
    def accepts_token_ids(self) -> bool:
        """Token ids are scored as given, one score at the last id: not for a process model, which reads a
        score at every step separator and so needs the steps as text."""
        meta = getattr(getattr(self.scorer, "model", None), "meta", None)
        return self.encodes and not getattr(meta, "is_process", False)

    @property
    def text_encoder(self):
        """The reward model's TextEncoder, which lays out text rendered elsewhere (OpenRLHF's queries); None for
        a scorer without one and for a process reward model (it needs its steps)."""
        meta = getattr(getattr(self.scorer, "model", None), "meta", None)
        text = getattr(getattr(self.scorer, "model", None), "text", None)
        if not self.encodes or getattr(meta, "is_process", False) or not callable(getattr(text, "encode_rendered",
                                                                                           None)):
            return None
        return text

    def text_encoder_missing(self) -> str:
        """Why `text_encoder` is None, for a 400."""
        if self.encodes and self.is_process:
            return ("a process reward model reads a score at every step separator, so it needs the steps: send "
                    "them to /score as {steps: [...]}")
        return ("this scorer takes conversations, not text rendered in a chat template (it has no tokenizer of its "
                "own to lay a query out with): send the prompt and responses to /score")

    def describe(self) -> dict[str, Any]:
        try:
            info = dict(self.scorer.describe())
        except Exception:  # describing must never take the server down
            info = {}
        return {**info, "token_ids": self.accepts_token_ids, "server_max_length": self.max_length,
                "overlength": self.overlength, "normalization": self.normalization is not None}

    # -- requests to jobs (runs off the event loop: tokenization is CPU work) --------------------------------
    def prepare(self, items: Sequence[ItemIn], *, batched: bool) -> Job:
        """Validate what the schema cannot (token ids against the vocabulary, sequence lengths) and build the
        scorer's input. Raises RequestError."""
        if any(it.uses_ids for it in items) and not self.accepts_token_ids:
            why = ("a process reward model reads a score at every step separator; send the responses as text "
                   "or {steps: [...]}") if self.encodes else "send prompt and responses as text"
            raise RequestError(400, f"this model does not accept token ids: {why}")
        n_seq = sum(it.n_responses for it in items)
        if not self.encodes:
            payload = [ScoreItem(it.messages(), it.response_objects()) for it in items]
            chars = sum(len(m["content"]) for it in items for m in it.messages()) + \
                sum(len(r.content) for it in payload for r in it.responses)
            return Job(payload, max(1, chars // 4), n_seq)

        from rewardkit.batching import segment_tokens

        payload = []
        for i, it in enumerate(items):
            where = f"items[{i}]." if batched else ""
            try:
                if it.uses_ids:
                    self._check_ids(it, where)
                    group = self.scorer.encode_token_ids(it.prompt_ids, it.response_ids)
                    full = [len(it.prompt_ids) + len(r) for r in it.response_ids]
                    field = "response_ids"
                else:
                    group = self.scorer.encode([ScoreItem(it.messages(), it.response_objects())])[0]
                    full = [len(e.input_ids) + e.truncated for e in group]
                    field = "responses"
            except RewardkitError as e:
                raise RequestError(422, f"{where.rstrip('.') or 'request'}: {e}") from None
            if self.overlength == "reject" and self.max_length:
                for j, n in enumerate(full):
                    if n > self.max_length:
                        raise RequestError(422, f"{where}{field}[{j}]: the sequence is {n} tokens (prompt and "
                                                f"response), over max_length {self.max_length} (this server "
                                                f"refuses over-long sequences: overlength=reject)")
            payload.append(group)
        tokens = sum(segment_tokens(g, share=self.shares_prefix) for g in payload)
        return Job(payload, tokens, n_seq)

    def _check_ids(self, item: ItemIn, where: str) -> None:
        vocab = self.vocab_size
        if vocab is None:
            return
        named = [("prompt_ids", item.prompt_ids)] + [(f"response_ids[{k}]", r) for k, r in
                                                      enumerate(item.response_ids)]
        for name, ids in named:
            if ids and (min(ids) < 0 or max(ids) >= vocab):
                k = next(k for k, t in enumerate(ids) if not 0 <= t < vocab)
                raise RequestError(422, f"{where}{name}[{k}]: token id {ids[k]} is outside the vocabulary "
                                        f"[0, {vocab})")

    # -- one batch (runs in the batcher's worker thread) ----------------------------------------------------
    def run(self, payloads: list[list]) -> list[list[ScoreResult]]:
        """One scorer call for all requests' items; each request gets its own slice back, in order."""
        flat = [item for p in payloads for item in p]
        results = self.scorer.score_encoded(flat) if self.encodes else self.scorer.score(flat)
        if len(results) != len(flat):
            raise RuntimeError(f"the scorer returned {len(results)} results for {len(flat)} items")
        out, start = [], 0
        for p in payloads:
            out.append(results[start: start + len(p)])
            start += len(p)
        return out

    # -- results to JSON -------------------------------------------------------------------------------------
    @property
    def is_process(self) -> bool:
        return self.describe().get("kind") == "process_reward_model"

    def render(self, results: Sequence[ScoreResult], *, normalize: bool,
               aggregation: str | None = None) -> list[dict[str, Any]]:
        """Results as JSON; `aggregation` re-aggregates a process model's step scores into the rewards."""
        from rewardkit.steps import aggregate

        out = []
        for res in results:
            if aggregation is not None and res.step_rewards is not None:
                res = replace(res, rewards=[aggregate(s, aggregation) for s in res.step_rewards])
            d = _finite(res.to_json())
            if normalize:
                mean, std = self.normalization
                d["normalized_rewards"] = _finite([(r - mean) / std for r in res.rewards])
            out.append(d)
        return out

    def _model_max_length(self) -> int | None:
        if self.encodes:
            text = getattr(getattr(self.scorer, "model", None), "text", None)
            return getattr(text, "max_length", None)
        return None


def _finite(value):
    """JSON has no NaN or infinity: such a score becomes null rather than an unparseable answer."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
