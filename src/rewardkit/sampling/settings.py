"""What a sampling run is asked for, what it gives back per prompt, and how its seeds are made.

Seeding is per prompt, never per batch or per process: prompt p's seed is a hash of (the run's seed, p's id),
and each of its N samples draws from its own stream seeded from (that prompt seed, the sample's index). A
prompt's samples therefore depend on the seed, its id and its text only, not on which prompts share its batch,
where a batch starts, or whether the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from rewardkit.errors import RewardkitError

SEED_BITS = 63  # fits a signed 64-bit integer: torch generators and OpenAI-compatible `seed` fields take it


@dataclass(frozen=True)
class SamplingSettings:
    """n responses per prompt, each at most `max_new_tokens` tokens, drawn at `temperature` from the nucleus
    of probability `top_p` (temperature 0: greedy, so the n responses are one response n times)."""

    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise RewardkitError(f"n must be an integer >= 1, got {self.n!r}")
        if not _finite(self.temperature) or self.temperature < 0:
            raise RewardkitError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            raise RewardkitError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise RewardkitError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise RewardkitError(f"seed must be an integer, got {self.seed!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from its parts (sha256 of their reprs, so it is the same on every machine and Python)."""
    text = "\x1f".join(repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> (64 - SEED_BITS)


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: a pure function of the run's seed and the prompt's id."""
    return derive_seed("rewardkit-sample", seed, str(prompt_id))


def sample_seed(prompt_seed_: int, index: int) -> int:
    """The seed of sample `index` (0-based) of a prompt."""
    return derive_seed("rewardkit-sample-k", prompt_seed_, index)


@dataclass
class Generation:
    """One prompt's n responses as the policy produced them.

    texts:          (n,) the responses' text.
    prompt_ids:     the prompt as the policy tokenized it (chat template and generation prompt included), or
                    None when the policy does not say (an endpoint that returns no token ids).
    response_ids:   (n, len_k) each response's generated ids (an end-of-turn token it stopped on included), or None.
    finish_reasons: (n,) "stop" (it ended itself) or "length" (max_new_tokens reached); None where unknown.
    logprobs:       (n, len_k) the policy's log-probability of each generated token (its raw distribution, before
                    temperature and top-p), or None.
    """

    texts: list[str]
    prompt_ids: list[int] | None = None
    response_ids: list[list[int]] | None = None
    finish_reasons: list[str | None] | None = None
    logprobs: list[list[float]] | None = None


@runtime_checkable
class Policy(Protocol):
    """Anything that samples n responses for each of a batch of prompts.

    batch_invariant: True when a prompt's samples cannot depend on the other prompts of its call (one request
      per prompt, as an endpoint gets). A local model computes a batch together, so a resumed run regenerates
      an interrupted batch whole, keeping every batch's floating-point arithmetic as in an uninterrupted run.
    tokenizer: the policy's tokenizer where rewardkit has it (else None), to score its token ids exactly.
    """

    batch_invariant: bool
    tokenizer: Any

    def generate(self, prompts, settings: SamplingSettings):
        """One Generation per prompt, yielded in order (an iterator, so a failure keeps what came before)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What must match for two runs to give the same samples (name, backend, precision, ...)."""
        ...

    def describe(self) -> dict[str, Any]: ...
