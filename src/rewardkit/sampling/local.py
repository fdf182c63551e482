"""A local causal LM as the policy: transformers `generate`, batched, every sample on its own seeded stream.

A batch holds `n` rows per prompt, left-padded; each prompt is computed once (a prefill whose KV cache its n rows
share), then `generate` decodes the rows. Sampling is done by one logits processor, `SeededSampler`, and
`generate` itself runs greedy (it takes the one token the processor leaves), so no global RNG is touched:

    z = logits / temperature, outside the top-p nucleus of softmax(z) set to −inf
    token = argmax(z + g),  g = −log(−log u),  u ~ U(0, 1)^vocab from the row's own torch.Generator

which is an exact draw from the nucleus distribution (the Gumbel-max trick). Each row's generator is seeded from
(its prompt's seed, the sample's index) (rewardkit.sampling.settings), and draws one vector per step, so what a
row samples does not depend on the other rows of its batch. Temperature 0 is greedy.

The prompt is rendered with the policy's chat template (rewardkit's plain template when it has none) and the
generation prompt, with exactly one BOS where the tokenizer uses one. The model's own generation defaults
(generation_config.json: temperature, top-k, repetition penalty, ...) are not applied: what a record's meta says
the settings were is all that shaped its samples.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rewardkit.data.prompts import Prompt
from rewardkit.data.record import Message
from rewardkit.errors import RewardkitError
from rewardkit.models.implicit import load_causal_lm, pad_id_of, quantization_note
from rewardkit.precision import compute_context, default_device, resolve_precision
from rewardkit.sampling.settings import Generation, SamplingSettings, prompt_seed, sample_seed
from rewardkit.text import TextEncoder, special_layout


# -- the math (pure functions) -------------------------------------------------------------------------------
def nucleus_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(rows, vocab) bool: the smallest set of most probable tokens whose probability reaches `top_p` (ties at
    the edge broken by token order); the most probable token is always kept. top_p = 1 keeps everything."""
    if top_p >= 1.0:
        return torch.ones_like(logits, dtype=torch.bool)
    probs, order = logits.softmax(-1).sort(dim=-1, descending=True, stable=True)
    before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def gumbel_noise(uniform: torch.Tensor) -> torch.Tensor:
    """−log(−log u), with u clamped away from 0 (u = 0 would give −inf, harmless, but keep it finite)."""
    tiny = torch.finfo(uniform.dtype).tiny
    return -torch.log(-torch.log(uniform.clamp_min(tiny)))


def sample_tokens(logits: torch.Tensor, uniform: torch.Tensor | None, temperature: float, top_p: float
                  ) -> torch.Tensor:
    """(rows,) token ids drawn from softmax(logits / temperature) restricted to its top-p nucleus.

    logits, uniform: (rows, vocab) float; uniform holds each row's U(0, 1) draws (None for temperature 0, greedy).
    """
    if temperature == 0:
        return logits.argmax(-1)
    z = logits / temperature
    z = z.masked_fill(~nucleus_mask(z, top_p), float("-inf"))
    return (z + gumbel_noise(uniform)).argmax(-1)


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], str]:
    """(the generated ids up to and including the first stop id, "stop"), or (all of them, "length")."""
    stops = set(stop_ids)
    for i, t in enumerate(ids):
        if t in stops:
            return list(ids[: i + 1]), "stop"
    return list(ids), "length"


class SeededSampler:
    """A transformers logits processor that samples each row from its own torch.Generator (see the module
    docstring) and returns scores that leave only that token (0 there, −inf elsewhere), so greedy decoding takes
    it. `logprobs` collects, per step, each row's log-probability of its token under the raw model (rows,)."""

    def __init__(self, generators: Sequence[torch.Generator], temperature: float, top_p: float):
        self.generators, self.temperature, self.top_p = list(generators), temperature, top_p
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float()  # (rows, vocab)
        uniform = None
        if self.temperature != 0:
            vocab = logits.shape[-1]
            uniform = torch.stack([torch.rand(vocab, generator=g, device=logits.device, dtype=torch.float32)
                                   for g in self.generators])
        tokens = sample_tokens(logits, uniform, self.temperature, self.top_p)  # (rows,)
        self.logprobs.append(logits.log_softmax(-1).gather(-1, tokens[:, None])[:, 0])
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(-1, tokens[:, None].to(scores.device), 0.0)


# -- the policy ----------------------------------------------------------------------------------------------
class LocalPolicy:
    """A causal LM (a path, a hub id, or the packaged "smollm2") sampled with transformers `generate`.

    Owns `model`: its generation_config is replaced by one that holds only its special token ids.
    """

    batch_invariant = False  # rows of one batch are computed together (padding, matrix shapes)

    def __init__(self, model, tokenizer, *, name: str | None = None, precision: str = "auto",
                 device: str | torch.device | None = None, quantization: str | None = None):
        from transformers import GenerationConfig

        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.quantization = quantization
        self.text = TextEncoder(tokenizer)
        self.bos = special_layout(tokenizer, pair=False)[0]
        self.pad_id = pad_id_of(tokenizer)
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.stop_ids = sorted({int(t) for t in [*eos, tokenizer.eos_token_id] if t is not None})
        self.model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=self.stop_ids or None, pad_token_id=self.pad_id)
        self.context = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, name_or_path, *, trust_remote_code: bool = False, **kwargs) -> LocalPolicy:
        model, tokenizer = load_causal_lm(name_or_path, trust_remote_code=trust_remote_code)
        kwargs.setdefault("quantization", quantization_note(name_or_path))
        return cls(model, tokenizer, name=str(name_or_path), **kwargs)

    def encode_prompt(self, messages: list[Message]) -> list[int]:
        """The prompt's ids as the policy reads them: chat template, generation prompt, exactly one BOS."""
        ids = self.text.token_ids(self.text.apply_template(messages, generation_prompt=True))
        if self.bos and ids[: len(self.bos)] != self.bos:
            ids = self.bos + ids
        return ids

    def generate(self, prompts: Sequence[Prompt], settings: SamplingSettings) -> Iterator[Generation]:
        """One Generation per prompt, in order, from one `generate` call over n rows per prompt."""
        if not prompts:
            return
        encoded = [self.encode_prompt(p.messages) for p in prompts]
        for p, ids in zip(prompts, encoded):
            if self.context and len(ids) + settings.max_new_tokens > self.context:
                raise RewardkitError(f"prompt {p.id!r} is {len(ids)} tokens; with max_new_tokens "
                                     f"{settings.max_new_tokens} that is over the policy's context of {self.context} "
                                     f"tokens: lower max_new_tokens or shorten the prompt")
        n = settings.n
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in encoded], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in encoded], device=self.device)
        generators = []
        for p in prompts:
            seed = prompt_seed(settings.seed, p.id)
            for k in range(n):
                generators.append(torch.Generator(device=self.device).manual_seed(sample_seed(seed, k)))
        sampler = SeededSampler(generators, settings.temperature, settings.top_p)
        from transformers import LogitsProcessorList

        with torch.inference_mode(), compute_context(self.precision, self.device):
            cache = self.prefill(input_ids, attention_mask, n)
            out = self.model.generate(input_ids=input_ids.repeat_interleave(n, 0),
                                      attention_mask=attention_mask.repeat_interleave(n, 0), cache=cache,
                                      do_sample=False, num_beams=1, max_new_tokens=settings.max_new_tokens,
                                      logits_processor=LogitsProcessorList([sampler]))
        generated = out[:, width:].cpu().tolist()  # (rows, steps)
        logprobs = torch.stack(sampler.logprobs, 1).cpu().tolist()  # (rows, steps)
        for i in range(len(prompts)):
            ids_k, reasons, texts, lps = [], [], [], []
            for r in range(i * n, (i + 1) * n):
                ids, reason = cut_at_stop(generated[r], self.stop_ids)
                ids_k.append(ids)
                reasons.append(reason)
                lps.append(logprobs[r][: len(ids)])
                texts.append(self.decode(ids, reason))
            yield Generation(texts, encoded[i], ids_k, reasons, lps)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int):
        """The KV cache of every prompt but its last token, computed once per prompt and repeated for its n rows
        (generate then starts from it), or None where the model cannot (generate computes the n rows itself).

        input_ids, attention_mask: (prompts, width), left-padded. Positions count real tokens only, as generate
        counts them, so the cached prefix is what generate would have computed.
        """
        if input_ids.shape[1] < 2 or "cache" not in inspect.signature(self.model.forward).parameters:
            return None
        positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                         position_ids=positions[:, :-1], use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        cache.batch_repeat_interleave(n)
        return cache

    def decode(self, ids: list[int], reason: str) -> str:
        """A response's text: its ids without the stop token it ended on, special tokens skipped."""
        return self.tokenizer.decode(ids[:-1] if reason == "stop" else ids, skip_special_tokens=True)

    def identity(self) -> dict[str, Any]:
        return {"policy": self.name, "backend": "local", "precision": self.precision}

    def describe(self) -> dict[str, Any]:
        template = self.text.chat_template
        return {
            "backend": "local", "name": self.name, "precision": self.precision,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": str(self.device), "quantization": self.quantization, "context": self.context,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()[:16],
            "stop_ids": self.stop_ids, "sampler": "gumbel-max, one torch.Generator per (prompt, sample)",
        }
