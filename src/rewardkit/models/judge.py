"""An LLM judge as a Scorer: pairwise verdicts from label-token log-probs, both orders (METHODS §8.1–8.2).

For each pair of responses the judge is shown the conversation and both answers, labelled A and B, and
asked for the better one as a single label token (no tie option, EVALUATION §1 "Generative judge"). The
verdict is read from the log-probs of the two label tokens at the answer position, never from generated
text, so one forward pass (local model) or one `max_tokens=1` request (HTTP) gives a probability:

    p(A) = exp(lp_A − logsumexp(lp_A, lp_B))                        (METHODS §8.2)

Position bias is cancelled by asking both orders: with x shown first, p1 = P(A) = P(x ≻ y); with y shown
first, p2 = P(A) = P(y ≻ x). So P(x ≻ y) = p̄ = ½[p1 + (1 − p2)]. A missing verdict (neither label among the
returned log-probs) is a parse failure: METHODS §8.2 makes it NaN for soft labels, and scoring counts that
order as 0.5 (EVALUATION §1) and counts the failure.

Per-response rewards (a Scorer returns one number per response): with L_ij = logit p̄(i ≻ j),

    r_i = (1/K) Σ_{j≠i} L_ij,

the least-squares Bradley–Terry fit of r_i − r_j ≈ L_ij over the round robin of all pairs (Σ r_i = 0). For
K = 2 that is r = (+L/2, −L/2), so Δ = logit(p̄) and p̄ = σ(Δ): calibration metrics read the judge's own
probability. Swapping two responses negates L exactly, so their rewards swap exactly.

Two backends behind one interface (`label_logprobs(conversations, labels)`):
- LocalJudge: any local causal LM (a path, a hub id, or the packaged "smollm2").
- HTTPJudge: any OpenAI-compatible /chat/completions endpoint that returns `top_logprobs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any, Protocol, runtime_checkable

import torch

from rewardkit.batching import budget_batches, plan_padded
from rewardkit.data.record import Message
from rewardkit.errors import ModelError, RewardkitError
from rewardkit.models.implicit import load_causal_lm, pad_id_of, quantization_note, tail_logits
from rewardkit.models.openai_chat import ChatEndpoint, EndpointError
from rewardkit.models.scorer import ScoreItem, ScoreResult
from rewardkit.precision import compute_context, default_device, resolve_precision
from rewardkit.text import PLAIN_CHAT_TEMPLATE, Encoded, common_prefix_length, special_layout

Labels = tuple[str, str]


class JudgeError(EndpointError):
    """A judge endpoint that fails or answers in a form the judge cannot read."""


# -- the prompt ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgePrompt:
    """A pairwise judge prompt. `system` and `template` are str.format templates; `template` gets
    {conversation}, {answer_a}, {answer_b}, and both get {label_a}, {label_b}. The verdict must be the first
    token of the reply, so the prompt asks for the label alone."""

    id: str
    system: str
    template: str
    labels: Labels = ("A", "B")

    def messages(self, conversation: list[Message], answer_a: str, answer_b: str) -> list[Message]:
        label_a, label_b = self.labels
        user = self.template.format(conversation=format_conversation(conversation), answer_a=answer_a,
                                    answer_b=answer_b, label_a=label_a, label_b=label_b)
        return [{"role": "system", "content": self.system.format(label_a=label_a, label_b=label_b)},
                {"role": "user", "content": user}]


#: MT-Bench's pairwise judge (FastChat pair-v2) without the tie option and with the verdict first, since it
#: is read from the first token's log-probs rather than parsed from "[[A]]" after an explanation.
PAIRWISE_AB_V1 = JudgePrompt(
    id="pairwise-ab-v1",
    system=(
        "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
        "assistants to the conversation displayed below. You should choose the assistant that follows the "
        "user's instructions and answers the user's question better. Your evaluation should consider factors "
        "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their "
        "responses. Avoid any position biases and ensure that the order in which the responses were presented "
        "does not influence your decision. Do not allow the length of the responses to influence your "
        "evaluation. Do not favor certain names of the assistants. Be as objective as possible. Reply with a "
        "single letter and nothing else: \"{label_a}\" if assistant {label_a} is better, \"{label_b}\" if "
        "assistant {label_b} is better."),
    template=(
        "{conversation}\n\n"
        "[The Start of Assistant {label_a}'s Answer]\n{answer_a}\n[The End of Assistant {label_a}'s Answer]\n\n"
        "[The Start of Assistant {label_b}'s Answer]\n{answer_b}\n[The End of Assistant {label_b}'s Answer]"),
)

PROMPTS = {PAIRWISE_AB_V1.id: PAIRWISE_AB_V1}


def format_conversation(conversation: list[Message]) -> str:
    """A single user turn is shown as the question; a longer conversation turn by turn (the answers
    continue it)."""
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return f"[User Question]\n{conversation[0]['content']}"
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in conversation)
    return f"[Conversation]\n{turns}"


# -- the math (pure functions) -------------------------------------------------------------------------------
def label_probability(lp_a: float, lp_b: float) -> float:
    """p(A) = exp(lp_A − logsumexp(lp_A, lp_B)); a label absent from the log-probs is −inf. Neither present:
    NaN (METHODS §8.2: never 0.5 here; the scorer decides what a failure scores)."""
    if lp_a == -math.inf and lp_b == -math.inf:
        return math.nan
    if lp_b == -math.inf:
        return 1.0
    if lp_a == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(lp_b - lp_a))


def order_averaged_log_odds(p_first: float, p_second: float, clip: float = 1e-6) -> float:
    """logit p̄ with p̄ = ½[p_first + (1 − p_second)]: P(x ≻ y) from p_first = P(A) with x shown as A and
    p_second = P(A) with y shown as A.

    Written as log(½ + h) − log(½ − h) with h = (p_first − p_second)/2, so swapping the orders negates the
    result exactly and equal probabilities give exactly 0. p̄ is clipped to [clip, 1 − clip] (a label missing
    from a top-k list has probability 0, and logit 0 is −inf).
    """
    h = (p_first - p_second) / 2.0
    bound = 0.5 - clip
    h = min(max(h, -bound), bound)
    return math.log(0.5 + h) - math.log(0.5 - h)


def rewards_from_log_odds(n: int, log_odds: dict[tuple[int, int], float]) -> list[float]:
    """r_i = (1/n) Σ_{j≠i} L_ij for n responses, from L_ij (i < j) with L_ji = −L_ij.

    The least-squares solution of r_i − r_j ≈ L_ij with Σ r = 0; for n = 2, (L/2, −L/2).
    """
    totals = [0.0] * n
    for (i, j), value in log_odds.items():
        totals[i] += value
        totals[j] -= value
    return [t / n for t in totals]


def label_logprobs_from_top(candidates: Sequence[dict[str, Any]], labels: Labels) -> tuple[float, float]:
    """(lp_A, lp_B) from an OpenAI-style list of {"token", "logprob"} for the first reply token.

    A label matches a token equal to it after stripping whitespace (" A", "A", "A\\n"); several matching
    tokens are combined by logsumexp; a label with no match gets −inf.
    """
    seen: dict[str, float] = {}
    for cand in candidates:
        token, logprob = cand.get("token"), cand.get("logprob")
        if isinstance(token, str) and isinstance(logprob, (int, float)) and token not in seen:
            seen[token] = float(logprob)
    out = []
    for label in labels:
        values = [lp for tok, lp in seen.items() if tok.strip() == label]
        if not values:
            out.append(-math.inf)
            continue
        top = max(values)
        out.append(top + math.log(sum(math.exp(v - top) for v in values)) if top > -math.inf else -math.inf)
    return out[0], out[1]


# -- backends ------------------------------------------------------------------------------------------------
@runtime_checkable
class JudgeBackend(Protocol):
    """Turns judge conversations into the two label tokens' log-probs at the reply's first token."""

    def label_logprobs(self, conversations: Sequence[list[Message]], labels: Labels) -> list[tuple[float, float]]:
        """One (lp_A, lp_B) per conversation, in order; −inf for a label the backend did not see."""
        ...

    def describe(self) -> dict[str, Any]: ...


def label_tokens(tokenizer, text: str, labels: Labels) -> tuple[list[int], tuple[int, int]]:
    """(prompt ids, (id_A, id_B)): the label tokens as they follow the rendered prompt `text`.

    Tokenises text and text + label jointly, so a label that merges with the prompt's last token (a
    template ending in a space gives " A") is found as the tokenizer really produces it; the prompt is then
    cut before that token. Each label must be exactly one token, since the verdict is one next-token
    log-prob.
    """
    def ids(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    base = ids(text)
    fulls = [ids(text + label) for label in labels]
    cut = min(common_prefix_length(base, full) for full in fulls)
    found = []
    for label, full in zip(labels, fulls):
        rest = full[cut:]
        if len(rest) != 1:
            pieces = tokenizer.convert_ids_to_tokens(rest)
            raise ModelError(f"the judge label {label!r} is {len(rest)} tokens {pieces} after the rendered "
                             f"prompt with this tokenizer; the verdict is read as one next-token log-prob, so "
                             f"each label must be a single token (choose other labels)")
        found.append(rest[0])
    if found[0] == found[1]:
        raise ModelError(f"the judge labels {labels} map to the same token")
    return base[:cut], (found[0], found[1])


class LocalJudge:
    """A local causal LM as the judge: one forward pass per judge prompt, reading the next-token logits.

    The conversation is rendered with `chat_template` (default: the tokenizer's, or rewardkit's plain
    template) and the generation prompt. Templates that reject a system turn get it merged into the user
    turn. Prompts are batched left-padded, and only the last position's logits are computed. A prompt longer
    than `max_length` (default: the model's context) is not truncated (that would cut the instructions or
    an answer): it counts as a failure (p = 0.5) in `too_long`.
    """

    def __init__(self, model, tokenizer, *, name: str | None = None, chat_template: str | None = None,
                 precision: str = "fp32", device: str | torch.device | None = None, batch_tokens: int = 8192,
                 max_batch_size: int | None = 16, max_length: int | None = None, quantization: str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE
        self.name = name or getattr(model.config, "_name_or_path", None)
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None)
        self.batch_tokens, self.max_batch_size = batch_tokens, max_batch_size
        self.pad_id = pad_id_of(tokenizer)
        self.quantization = quantization
        self.too_long = 0

    @classmethod
    def from_pretrained(cls, name_or_path, *, trust_remote_code: bool = False, **kwargs) -> LocalJudge:
        model, tokenizer = load_causal_lm(name_or_path, trust_remote_code=trust_remote_code)
        kwargs.setdefault("quantization", quantization_note(name_or_path))
        return cls(model, tokenizer, name=str(name_or_path), **kwargs)

    def render(self, messages: list[Message]) -> str:
        """The judge conversation with the generation prompt: the reply's first token is the verdict."""
        try:
            return self._apply(messages)
        except Exception:
            if messages[0]["role"] != "system":
                raise
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]},
                      *messages[2:]]
            return self._apply(merged)

    def _apply(self, messages: list[Message]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as e:  # jinja errors: a template that rejects this conversation shape
            raise RewardkitError(f"the judge's chat template failed on roles {[m['role'] for m in messages]}: "
                                 f"{e}") from e

    def encode(self, messages: list[Message], labels: Labels) -> tuple[list[int], tuple[int, int]]:
        """(input ids with exactly one BOS, label token ids)."""
        text = self.render(messages)
        ids, label_ids = label_tokens(self.tokenizer, text, labels)
        bos = special_layout(self.tokenizer, pair=False)[0]
        if bos and ids[: len(bos)] != bos:
            ids = bos + ids
        return ids, label_ids

    @torch.inference_mode()
    def label_logprobs(self, conversations: Sequence[list[Message]], labels: Labels) -> list[tuple[float, float]]:
        encoded = [self.encode(messages, labels) for messages in conversations]
        out: list[tuple[float, float]] = [(-math.inf, -math.inf)] * len(encoded)
        fits = [i for i, (ids, _) in enumerate(encoded) if self.max_length is None or len(ids) <= self.max_length]
        self.too_long += len(encoded) - len(fits)
        batches = budget_batches([len(encoded[i][0]) for i in fits], self.batch_tokens, rows=[1] * len(fits),
                                 max_items=self.max_batch_size)
        for batch in batches:
            rows = [fits[k] for k in batch]
            plan = plan_padded([Encoded(encoded[i][0], None, len(encoded[i][0]), 0) for i in rows], self.pad_id,
                               "left").to(self.device)
            with compute_context(self.precision, self.device):
                logits = tail_logits(self.model, plan, 1)[:, -1]  # (rows, vocab)
            logprobs = logits.float().log_softmax(-1)
            label_ids = torch.tensor([encoded[i][1] for i in rows], device=self.device)  # (rows, 2)
            picked = logprobs.gather(-1, label_ids).double().cpu().tolist()
            for i, (lp_a, lp_b) in zip(rows, picked):
                out[i] = (lp_a, lp_b)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "local", "name": self.name, "precision": self.precision,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "quantization": self.quantization, "device": str(self.device), "max_length": self.max_length,
            "truncation": "none (over-long prompts score 0.5)", "too_long": self.too_long,
            "chat_template": self.chat_template, "padding_side": "left",
        }


class HTTPJudge:
    """Any OpenAI-compatible chat endpoint as the judge (OpenAI, vLLM, SGLang, llama.cpp server, ...).

    Each judge prompt is one POST {base_url}/chat/completions with max_tokens 1, temperature 0, logprobs
    and top_logprobs; the labels' log-probs are read from choices[0].logprobs.content[0]. Requests, retries
    with backoff and the API key are rewardkit.models.openai_chat.ChatEndpoint's: rate limits and server
    errors are retried (or wait the server's Retry-After); other HTTP errors, and retries that run out, raise
    JudgeError with the status and the start of the body.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0, top_logprobs: int = 20,
                 concurrency: int = 4, extra_body: dict[str, Any] | None = None):
        self.endpoint = ChatEndpoint(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                     backoff=backoff, max_backoff=max_backoff, what="judge endpoint",
                                     error=JudgeError)
        self.base_url, self.url = self.endpoint.base_url, self.endpoint.url
        self.model = model
        self.top_logprobs, self.concurrency = top_logprobs, max(1, concurrency)
        self.extra_body = dict(extra_body or {})

    def __repr__(self) -> str:  # never show the key
        return f"HTTPJudge(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def requests(self) -> int:
        return self.endpoint.requests

    @property
    def retries(self) -> int:
        return self.endpoint.retries

    def request_body(self, messages: list[Message]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0,
                "logprobs": True, "top_logprobs": self.top_logprobs, **self.extra_body}

    def label_logprobs(self, conversations: Sequence[list[Message]], labels: Labels) -> list[tuple[float, float]]:
        def one(messages: list[Message]) -> tuple[float, float]:
            return label_logprobs_from_top(first_token_candidates(self.post(self.request_body(messages)),
                                                                  self.url), labels)

        if self.concurrency == 1 or len(conversations) <= 1:
            return [one(m) for m in conversations]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, conversations))

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The decoded JSON reply, after the endpoint's retries of retryable failures."""
        return self.endpoint.post(body)

    def describe(self) -> dict[str, Any]:
        endpoint = self.endpoint.describe()
        return {
            "backend": "http", "name": self.model, "model": self.model, "base_url": self.base_url,
            "api_key": endpoint["api_key"], "timeout": endpoint["timeout"],
            "max_retries": endpoint["max_retries"], "top_logprobs": self.top_logprobs, "temperature": 0,
            "max_tokens": 1, "requests": self.requests, "retries": self.retries,
            # Tokenisation, template and precision live on the server.
            "precision": None, "dtype": None, "quantization": None, "max_length": None,
            "chat_template": "server-side", "padding_side": None,
        }


def first_token_candidates(reply: dict[str, Any], url: str) -> list[dict[str, Any]]:
    """The sampled first token and its top_logprobs alternatives from a chat completion."""
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
        return [first, *(first.get("top_logprobs") or [])]
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"judge endpoint {url} returned no token log-probs (choices[0].logprobs.content); the "
                         f"judge needs an endpoint and model that support logprobs and top_logprobs") from None


# -- the Scorer ----------------------------------------------------------------------------------------------
@dataclass
class JudgeStats:
    """Counts over every pair judged so far (both orders each)."""

    pairs: int = 0
    prompts: int = 0
    parse_failures: int = 0  # orders whose reply had neither label (scored 0.5)
    consistent_pairs: int = 0  # pairs where both orders prefer the same response

    @property
    def consistency_rate(self) -> float | None:
        return self.consistent_pairs / self.pairs if self.pairs else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "consistency_rate": self.consistency_rate}


class JudgeScorer:
    """Pairwise LLM-as-judge as a Scorer; see the module docstring for the probability and reward rules.

    An item with K responses costs K(K−1) judge prompts (every pair, both orders).
    inconsistent: "average" (default) keeps the order-averaged p̄ of a pair whose two orders prefer different
      responses (METHODS §8.2's soft label); "tie" scores such a pair p̄ = 0.5, METHODS §8.1's verdict rule
      ("a side wins only if both orders agree").
    """

    def __init__(self, backend: JudgeBackend, *, prompt: JudgePrompt = PAIRWISE_AB_V1, clip: float = 1e-6,
                 inconsistent: str = "average"):
        if not 0 < clip < 0.5:
            raise RewardkitError(f"clip must be in (0, 0.5), got {clip}")
        if inconsistent not in ("average", "tie"):
            raise RewardkitError(f"inconsistent must be 'average' or 'tie', got {inconsistent!r}")
        self.backend, self.prompt, self.clip, self.inconsistent = backend, prompt, clip, inconsistent
        self.stats = JudgeStats()

    @classmethod
    def local(cls, name_or_path, *, prompt: JudgePrompt = PAIRWISE_AB_V1, clip: float = 1e-6,
              inconsistent: str = "average", **kwargs) -> JudgeScorer:
        """kwargs: LocalJudge's (chat_template, precision, device, max_length, ...)."""
        return cls(LocalJudge.from_pretrained(name_or_path, **kwargs), prompt=prompt, clip=clip,
                   inconsistent=inconsistent)

    @classmethod
    def http(cls, base_url: str, model: str, *, prompt: JudgePrompt = PAIRWISE_AB_V1, clip: float = 1e-6,
             inconsistent: str = "average", **kwargs) -> JudgeScorer:
        """kwargs: HTTPJudge's (api_key, timeout, max_retries, backoff, top_logprobs, concurrency, ...)."""
        return cls(HTTPJudge(base_url, model, **kwargs), prompt=prompt, clip=clip, inconsistent=inconsistent)

    @classmethod
    def from_spec(cls, spec: str, *, model: str | None = None, prompt: str | JudgePrompt = PAIRWISE_AB_V1.id,
                  **kwargs) -> JudgeScorer:
        """A judge from a CLI string: an http(s):// base URL (then `model` names the served model), else a
        local causal LM path, hub id or packaged name. `prompt` may be a prompt id."""
        if isinstance(prompt, str):
            if prompt not in PROMPTS:
                raise RewardkitError(f"unknown judge prompt {prompt!r}; known: {', '.join(sorted(PROMPTS))}")
            prompt = PROMPTS[prompt]
        if spec.startswith(("http://", "https://")):
            if not model:
                raise RewardkitError("an HTTP judge needs the served model's name (model=...)")
            return cls.http(spec, model, prompt=prompt, **kwargs)
        return cls.local(spec, prompt=prompt, **kwargs)

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One ScoreResult per item, in order; an item with one response gets reward 0."""
        pairs: list[tuple[int, int, int]] = []  # (item, i, j) with i < j
        conversations: list[list[Message]] = []
        for k, item in enumerate(items):
            for i, j in combinations(range(len(item.responses)), 2):
                a, b = item.responses[i].content, item.responses[j].content
                conversations += [self.prompt.messages(item.prompt, a, b), self.prompt.messages(item.prompt, b, a)]
                pairs.append((k, i, j))
        logprobs = self.backend.label_logprobs(conversations, self.prompt.labels) if conversations else []
        if len(logprobs) != len(conversations):
            raise JudgeError(f"the judge backend returned {len(logprobs)} results for {len(conversations)} prompts")

        log_odds: list[dict[tuple[int, int], float]] = [{} for _ in items]
        for n, (k, i, j) in enumerate(pairs):
            p_first = label_probability(*logprobs[2 * n])      # P(i ≻ j), i shown as A
            p_second = label_probability(*logprobs[2 * n + 1])  # P(j ≻ i), j shown as A
            failed = [math.isnan(p) for p in (p_first, p_second)]
            self.stats.parse_failures += sum(failed)
            p_first, p_second = (0.5 if f else p for f, p in zip(failed, (p_first, p_second)))
            consistent = (p_first - 0.5) * (p_second - 0.5) < 0
            self.stats.consistent_pairs += consistent
            tie = self.inconsistent == "tie" and not consistent
            log_odds[k][(i, j)] = 0.0 if tie else order_averaged_log_odds(p_first, p_second, self.clip)
        self.stats.pairs += len(pairs)
        self.stats.prompts += len(conversations)
        return [ScoreResult(rewards=rewards_from_log_odds(len(item.responses), log_odds[k]))
                for k, item in enumerate(items)]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "llm_judge", **self.backend.describe(),
            "judge_prompt": self.prompt.id, "labels": list(self.prompt.labels), "tie_option": False,
            "order_swap": True, "probability": "p(A) = softmax of the two label tokens' log-probs; "
                                               "p̄ = ½[p(A | x first) + 1 − p(A | y first)]",
            "reward_rule": "r_i = (1/K) Σ_j logit p̄(i ≻ j) (K=2: ±logit/2, so Δ = logit p̄)",
            "inconsistent_pairs": self.inconsistent, "clip": self.clip, "parse_failure_score": 0.5,
            "stats": self.stats.to_json(),
        }
