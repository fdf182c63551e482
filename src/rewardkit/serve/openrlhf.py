"""OpenRLHF's remote reward model protocol: `POST /get_reward`, so `--reward.remote_url` (`--remote_rm_url` in
older versions) can point an OpenRLHF PPO/GRPO run at `rewardkit serve`.

    {"query": [...], "prompts": [...], "labels": [...]}  ->  {"rewards": [...], "scores": [...], "extra_logs": {...}}

What OpenRLHF does (0.11, openrlhf/utils/agent.py `SingleTurnAgentExecutor._fetch_rewards_via_http` and
openrlhf/cli/serve_rm.py): after each rollout it posts ONE sample per request, where `query` is the prompt's and
the generation's token ids decoded with `skip_special_tokens=False` (the prompt as the policy's chat template
rendered it, the answer, and the policy's EOS text when it stopped on one), `prompts` the rendered prompt and
`labels` the dataset's label; no API key, a 180 s timeout, 5 tries a second apart, and every failure (a 4xx
too) ends in a sample without a reward. It reads `rewards` (for the advantage), `scores` (dynamic filtering;
`rewards` when absent) and `extra_logs` (each value logged per sample, so numbers, one per query). Its own
server answers `scores` = `rewards` and `extra_logs = {"dummy_scores": rewards}`, tokenizes each query as
given (`add_special_tokens=False`, cut from the right at `--data.max_len`) and reads the reward at its last
token; until May 2025 (PR #1038) it first stripped runs of pad and EOS text from both ends of each query and
appended one EOS.

How rewardkit scores a query: it is never rendered again. It must start with its prompt (else 422 naming the
item); runs of the reward model's pad and EOS text are taken off its two ends (OpenRLHF's old strip); the rest
after the prompt is the response, laid out as `/score` lays out a response (`TextEncoder.encode_rendered`): a
BOS where the tokenizer expects one and the text lacks it, and one EOS at the end, where the reward is read,
when the query ended with one or the model appends one (its `append_eos`, the default, as in training). Over
the max length, prompt tokens go from the left first (`truncated`), as in `/score`. So `/get_reward` gives
`/score`'s reward for the same conversation whenever the reward model's template renders it as the policy's
did, and always the reward `/score` gives for the token ids it lays out. Queries of one request that share
a prompt share its tokens in the batch (prefix sharing on causal backbones), and every request goes through
the same dynamic batcher, limits and metrics as `/score`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreResult
from rewardkit.serve.backend import Backend, Job, RequestError, _finite
from rewardkit.serve.schemas import Text


class GetRewardRequest(BaseModel):
    """One reward per query; `prompts` and `labels`, when given, have one entry per query."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": ["<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>"],
         "prompts": ["<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"], "labels": [""]},
    ]})

    query: Annotated[list[Text], Field(min_length=1)] = Field(
        description="Each the full text the policy produced: its rendered prompt followed by its answer (special "
                    "tokens as text).")
    prompts: list[Text] | None = Field(
        None, description="Each query's rendered prompt, which the query must start with; it marks where the "
                          "response starts. Without it a causal model scores each whole query (its reward does not "
                          "depend on the boundary); an encoder, which reads (prompt, response) as a pair, needs it.")
    labels: list[Any] | None = Field(None, description="The dataset's labels; a reward model does not use them.")
    normalize: StrictBool | None = Field(
        None, description="rewardkit's addition: (reward - mean) / std with the model's stored stats (default: the "
                          "server's --openrlhf-normalize).")

    @model_validator(mode="after")
    def _one_per_query(self):
        for name in ("prompts", "labels"):
            given = getattr(self, name)
            if given is not None and len(given) != len(self.query):
                raise ValueError(f"{name} has {len(given)} entries for {len(self.query)} queries: give one per "
                                 f"query, or leave it out")
        return self


class GetRewardResponse(BaseModel):
    """What OpenRLHF reads: `rewards` for the advantage, `scores` for dynamic filtering, `extra_logs` logged."""

    rewards: list[float | None] = Field(description="One reward per query (null if not finite).")
    scores: list[float | None] = Field(description="The rewards again, as OpenRLHF's own serve_rm answers.")
    extra_logs: dict[str, list[float | None]] = Field(
        description="Per query: truncated_tokens, response_tokens, and objective_<name> for each objective of a "
                    "multi-objective model.")


@dataclass
class QueryJob(Job):
    """A /get_reward request's work: its queries grouped by prompt, and where each query's reward comes back.

    where: per query, (group index, position in the group)."""

    where: list[tuple[int, int]]


def prepare(backend: Backend, body: GetRewardRequest) -> QueryJob:
    """Lay out every query for the reward model (see the module's docstring). Raises RequestError naming the
    item."""
    from rewardkit.batching import segment_tokens

    encoder = backend.text_encoder
    if encoder is None:
        raise RequestError(400, backend.text_encoder_missing())
    if body.prompts is None and encoder.mode == "pair":
        raise RequestError(422, "prompts: this reward model is an encoder that reads (prompt, response) as a pair, "
                                "so it needs each query's prompt to split it; send 'prompts'")
    tokenizer = encoder.tokenizer
    padding = [t for t in {tokenizer.pad_token, tokenizer.eos_token} if t]
    groups: list[list] = []
    slots: dict[str, int] = {}
    where: list[tuple[int, int]] = []
    for i, raw in enumerate(body.query):
        query = _strip_leading(raw, padding)
        prompt = _strip_leading(body.prompts[i], padding) if body.prompts is not None else ""
        if not query.startswith(prompt):
            k = next((j for j, (a, b) in enumerate(zip(query, prompt)) if a != b), min(len(query), len(prompt)))
            raise RequestError(422, f"query[{i}] does not start with prompts[{i}] (they differ at character {k}: "
                                    f"the query has {query[k:k + 24]!r}, the prompt {prompt[k:k + 24]!r}); a query "
                                    f"must be its prompt followed by the response, as the policy produced it")
        response, ended = _strip_trailing(query[len(prompt):], padding, tokenizer.eos_token)
        if not prompt and not response:
            raise RequestError(422, f"query[{i}] is empty (or only padding): there is nothing to score")
        try:
            encoded = encoder.encode_rendered(prompt, response, eos=ended)
        except RewardkitError as e:
            raise RequestError(422, f"query[{i}]: {e}") from None
        n = len(encoded.input_ids) + encoded.truncated
        if backend.overlength == "reject" and backend.max_length and n > backend.max_length:
            raise RequestError(422, f"query[{i}]: the sequence is {n} tokens, over max_length {backend.max_length} "
                                    f"(this server refuses over-long sequences: overlength=reject)")
        if prompt:  # queries of one prompt form one group: its tokens are computed once
            slot = slots.setdefault(prompt, len(groups))
        else:
            slot = len(groups)
        if slot == len(groups):
            groups.append([])
        where.append((slot, len(groups[slot])))
        groups[slot].append(encoded)
    tokens = sum(segment_tokens(g, share=backend.shares_prefix) for g in groups)
    return QueryJob(groups, tokens, len(body.query), where)


def answer(backend: Backend, job: QueryJob, results: list[ScoreResult], *, normalize: bool) -> dict[str, Any]:
    """The protocol's response: one reward per query, in order."""
    def per_query(values: list[list]) -> list:
        return [values[g][k] for g, k in job.where]

    rewards = per_query([r.rewards for r in results])
    if normalize:
        mean, std = backend.normalization
        rewards = [(r - mean) / std for r in rewards]
    rewards = _finite([float(r) for r in rewards])
    logs: dict[str, list] = {}
    for name in ("truncated", "response_tokens"):
        if all(getattr(r, name) is not None for r in results):
            key = "truncated_tokens" if name == "truncated" else name
            logs[key] = [float(v) for v in per_query([getattr(r, name) for r in results])]
    names = results[0].objectives or {}
    for name in names:
        logs[f"objective_{name}"] = _finite([float(v) for v in per_query([r.objectives[name] for r in results])])
    return {"rewards": rewards, "scores": list(rewards), "extra_logs": logs}


def _strip_leading(text: str, padding: list[str]) -> str:
    """Runs of pad / EOS text taken off the start (a left-padded batch decoded as text)."""
    stripped = True
    while stripped:
        stripped = False
        for t in padding:
            if text.startswith(t):
                text, stripped = text[len(t):], True
    return text


def _strip_trailing(text: str, padding: list[str], eos: str | None) -> tuple[str, bool]:
    """(text without its trailing run of pad / EOS text, whether that run held an EOS)."""
    ended = False
    stripped = True
    while stripped:
        stripped = False
        for t in padding:
            if t and text.endswith(t):
                text, stripped = text[: len(text) - len(t)], True
                ended = ended or t == eos
    return text, ended
