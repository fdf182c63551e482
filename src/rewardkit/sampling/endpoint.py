"""An OpenAI-compatible chat endpoint as the policy: a vLLM or SGLang server (or any server of that API).

One request per prompt: POST {base_url}/chat/completions with the prompt's messages, `n`, `temperature`, `top_p`,
`max_tokens` and `seed` (the prompt's seed, rewardkit.sampling.settings), so a prompt's samples are the same
whichever prompts are sent beside it. The chat template is the server's. Token ids are asked for the way vLLM
gives them, and kept when the reply has them:

- `return_token_ids: true` (vLLM >= 0.10.2): the reply's `prompt_token_ids` and each choice's `token_ids`;
- `logprobs: true` with `return_tokens_as_token_ids: true`: each choice's `logprobs.content[*].token` is
  "token_id:ID", which gives the generated ids (and their log-probs) on older vLLM too.

A server that rejects those two vLLM fields (HTTP 400 naming one) is asked again without them, and so is every
later request; plain `logprobs` are kept wherever the server returns them. Requests, retries with exponential
backoff and the API key are rewardkit.models.openai_chat.ChatEndpoint's; `concurrency` requests are in flight
at once, and results come back in prompt order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewardkit.data.prompts import Prompt
from rewardkit.models.openai_chat import ChatEndpoint, EndpointError
from rewardkit.sampling.settings import Generation, SamplingSettings, prompt_seed

VLLM_TOKEN_FIELDS = ("return_token_ids", "return_tokens_as_token_ids")
TOKEN_ID_PREFIX = "token_id:"


class PolicyEndpointError(EndpointError):
    """A policy endpoint that fails or answers in a form rewardkit cannot read."""


class EndpointPolicy:
    """A model served behind an OpenAI-compatible API; `model` is the served model's name.

    tokenizer: the served model's tokenizer, where the caller has it (only used to decide whether a scorer can
    read the returned token ids as they are; the server tokenizes).
    """

    batch_invariant = True  # one request per prompt

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 600.0,
                 max_retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0, concurrency: int = 8,
                 token_ids: bool = True, extra_body: dict[str, Any] | None = None, tokenizer: Any = None):
        self.endpoint = ChatEndpoint(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                     backoff=backoff, max_backoff=max_backoff, what="policy endpoint",
                                     error=PolicyEndpointError)
        if not model:
            raise PolicyEndpointError("an endpoint policy needs the served model's name (--policy NAME)")
        self.model = model
        self.concurrency = max(1, int(concurrency))
        self.ask_token_ids = token_ids
        self.extra_body = dict(extra_body or {})
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"EndpointPolicy(base_url={self.endpoint.base_url!r}, model={self.model!r})"

    def request_body(self, prompt: Prompt, settings: SamplingSettings) -> dict[str, Any]:
        body = {"model": self.model, "messages": prompt.messages, "n": settings.n,
                "temperature": settings.temperature, "top_p": settings.top_p,
                "max_tokens": settings.max_new_tokens, "seed": prompt_seed(settings.seed, prompt.id),
                "logprobs": True}
        if self.ask_token_ids:
            body.update({field: True for field in VLLM_TOKEN_FIELDS})
        return {**body, **self.extra_body}

    def sample_one(self, prompt: Prompt, settings: SamplingSettings) -> Generation:
        try:
            reply = self.endpoint.post(self.request_body(prompt, settings))
        except PolicyEndpointError as e:
            if not (self.ask_token_ids and "HTTP 400" in str(e) and any(f in str(e) for f in VLLM_TOKEN_FIELDS)):
                raise
            self.ask_token_ids = False  # not a vLLM server: ask as plain OpenAI from now on
            reply = self.endpoint.post(self.request_body(prompt, settings))
        return parse_reply(reply, settings.n, f"{self.endpoint.url} (prompt {prompt.id!r})")

    def generate(self, prompts: Sequence[Prompt], settings: SamplingSettings) -> Iterator[Generation]:
        """One Generation per prompt, in prompt order, as soon as it and every one before it are back."""
        if self.concurrency == 1 or len(prompts) <= 1:
            for p in prompts:
                yield self.sample_one(p, settings)
            return
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self.sample_one, p, settings) for p in prompts]
            try:
                for f in futures:
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()

    def identity(self) -> dict[str, Any]:
        return {"policy": self.model, "backend": "endpoint"}

    def describe(self) -> dict[str, Any]:
        """How it samples (written into every record): the endpoint's request counts are left out, so a resumed
        run's records read as a fresh run's."""
        endpoint = {k: v for k, v in self.endpoint.describe().items() if k not in ("requests", "retries")}
        return {"backend": "endpoint", "name": self.model, **endpoint, "concurrency": self.concurrency,
                "token_ids_requested": self.ask_token_ids, "chat_template": "server-side",
                **({"tokenizer_sha256": _vocab_digest(self.tokenizer)} if self.tokenizer is not None else {})}


def parse_reply(reply: Any, n: int, where: str) -> Generation:
    """A chat completion with n choices as a Generation: texts, and the token ids and log-probs it carries."""
    try:
        choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise PolicyEndpointError(f"{where}: asked for n={n} responses, got {len(choices)}; does the server "
                                      f"support n > 1?")
        texts = [(c["message"].get("content") or "") for c in choices]
    except (KeyError, TypeError, AttributeError):
        raise PolicyEndpointError(f"{where}: the reply is not a chat completion (choices[*].message.content)") from None
    if not all(isinstance(t, str) for t in texts):
        raise PolicyEndpointError(f"{where}: a choice's message.content is not text")
    ids = [_choice_ids(c) for c in choices]
    logprobs = [_choice_logprobs(c) for c in choices]
    prompt_ids = reply.get("prompt_token_ids")
    return Generation(
        texts=texts,
        prompt_ids=list(prompt_ids) if _is_ids(prompt_ids) else None,
        response_ids=ids if all(i is not None for i in ids) else None,
        finish_reasons=[c.get("finish_reason") for c in choices],
        logprobs=logprobs if all(lp is not None for lp in logprobs) else None)


def _choice_ids(choice: dict) -> list[int] | None:
    """A choice's generated ids: its `token_ids`, else its log-prob tokens when they are "token_id:ID"."""
    if _is_ids(choice.get("token_ids")):
        return list(choice["token_ids"])
    content = _logprob_content(choice)
    if not content:
        return None
    ids = []
    for entry in content:
        token = entry.get("token") if isinstance(entry, dict) else None
        if not (isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX)):
            return None
        try:
            ids.append(int(token[len(TOKEN_ID_PREFIX):]))
        except ValueError:
            return None
    return ids


def _choice_logprobs(choice: dict) -> list[float] | None:
    content = _logprob_content(choice)
    if not content:
        return None
    values = [entry.get("logprob") if isinstance(entry, dict) else None for entry in content]
    return [float(v) for v in values] if all(isinstance(v, (int, float)) for v in values) else None


def _logprob_content(choice: dict) -> list | None:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return content if isinstance(content, list) else None


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _vocab_digest(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]
