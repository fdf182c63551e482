"""A DPO policy read as an implicit reward model (METHODS §7).

DPO trains a policy π whose log-ratio to its reference π_ref is a reward: r(x, y) = β[log π(y|x) −
log π_ref(y|x)] + β log Z(x). Z(x) cancels only within one prompt, so these rewards rank the responses of one
prompt and must never be compared across prompts. Without a reference, METHODS names three reference-free
scores of the policy alone: the summed, the mean and the (negated) L2 norm of the token log-probs.

Which tokens are "the response" decides the reward, so the boundary follows METHODS §7 exactly:

1. prompt string = the chat template on the prompt turns *without* the generation prompt; the response
   string is the rest of the full rendering (so the assistant header belongs to the response; it cancels
   against the reference in "ratio" mode);
2. both are tokenised; the boundary is len(tok(prompt)), moved one token left when the last prompt token
   merged across it (the merged token is scored as part of the response);
3. exactly one BOS (none added when the template emits it), and the response ends with EOS (appended
   unless the template already ends the turn with it);
4. only tokens after the boundary are scored;
5. keep-end truncation (TRL's DPO rule): when prompt + response exceed `max_length`, the prompt keeps its
   last `max_prompt_length` tokens, and if that is still too long the response loses tokens from its end.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rewardkit.batching import budget_batches, plan_padded
from rewardkit.data.record import Message
from rewardkit.errors import ModelError, RewardkitError, first_line
from rewardkit.models.gguf import loadable
from rewardkit.models.reward_model import resolve_model
from rewardkit.models.scorer import ScoreItem, ScoreResult
from rewardkit.precision import compute_context, default_device, resolve_precision
from rewardkit.text import Encoded, TextEncoder, common_prefix_length, special_layout

Mode = Literal["ratio", "sum", "avg", "norm"]
MODES = ("ratio", "sum", "avg", "norm")
REFERENCE_FREE_MODES = ("sum", "avg", "norm")

#: METHODS §7 defaults (TRL's DPO tokenisation, which RewardBench's DPO scoring uses).
DEFAULT_MAX_LENGTH = 2048
DEFAULT_MAX_PROMPT_LENGTH = 128
#: Computed token slots per forward pass. Logits are (rows, kept positions, vocab), so this stays modest.
DEFAULT_BATCH_TOKENS = 4096


# -- loading -------------------------------------------------------------------------------------------------
def load_causal_lm(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                   gguf_file: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM: a local directory, a hub id, or a packaged short name ("smollm2",
    a GGUF file that transformers dequantises to `dtype` on load). The model is returned in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, packaged_gguf = resolve_model(name_or_path)
    path, gguf_file = loadable(path, gguf_file or packaged_gguf)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError, ImportError) as e:  # ImportError: a GGUF file without `gguf` installed
        raise ModelError(f"cannot load {str(name_or_path)!r} as a causal language model: {first_line(e)}") from e
    return model.eval(), tokenizer


def quantization_note(name_or_path: str | os.PathLike) -> str | None:
    """What a report says about the weights' precision on disk: a packaged GGUF file is dequantized on load."""
    gguf = resolve_model(name_or_path)[1]
    return f"GGUF {gguf}, dequantized to float32" if gguf else None


def pad_id_of(tokenizer) -> int:
    """The id padded positions hold. Any id works: scores are read from the attention mask, never the ids."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


# -- text to tokens (METHODS §7 boundary rules) --------------------------------------------------------------
def encode_for_logprobs(text: TextEncoder, prompt: list[Message], response: str, *,
                        max_length: int | None = DEFAULT_MAX_LENGTH,
                        max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH) -> Encoded:
    """One (prompt, response) as a DPO scorer sees it: `input_ids[response_start:]` are the scored tokens.

    `response_tokens` is the length of the response content alone (template tokens excluded), as in every
    other Scorer; the scored tokens also include the assistant header and the EOS (rule 1).
    """
    tokenizer = text.tokenizer
    full = text.apply_template(prompt + [{"role": "assistant", "content": response}], generation_prompt=False)
    head = text.apply_template(prompt, generation_prompt=False)
    if not full.startswith(head):  # a template that rewrites earlier turns once an answer follows
        head = full[: common_prefix_length(head, full)]
    full_ids = text.token_ids(full)
    prompt_ids = text.token_ids(head)
    boundary = token_boundary(prompt_ids, full_ids)
    prompt_part, response_part = full_ids[:boundary], full_ids[boundary:]

    bos = special_layout(tokenizer, pair=False)[0]
    if bos and full_ids[: len(bos)] == bos:
        bos = []  # the template emitted it
    eos = tokenizer.eos_token_id
    if eos is not None:
        if eos in response_part:  # end at the end-of-turn token, not at template whitespace after it
            last = len(response_part) - 1 - response_part[::-1].index(eos)
            response_part = response_part[: last + 1]
        else:
            response_part = response_part + [eos]

    prompt_part, response_part, cut_p, cut_r = truncate_keep_end(
        prompt_part, response_part, max_length=max_length, max_prompt_length=max_prompt_length, fixed=len(bos))
    ids = bos + prompt_part + response_part
    return Encoded(ids, None, len(bos) + len(prompt_part), len(text.token_ids(response)), cut_p, cut_r)


def token_boundary(prompt_ids: Sequence[int], full_ids: Sequence[int]) -> int:
    """b = len(tok(prompt)), or b − 1 when the last prompt token merged across the boundary (METHODS §7.2).

    Computed as the common token prefix, which is exactly that rule when only the last token merged and
    still a clean prefix if a tokenizer re-segments further back.
    """
    return common_prefix_length(prompt_ids, full_ids)


def truncate_keep_end(prompt: list[int], response: list[int], *, max_length: int | None,
                      max_prompt_length: int, fixed: int = 0) -> tuple[list[int], list[int], int, int]:
    """(prompt, response, prompt tokens cut, response tokens cut) within `max_length` (`fixed`: the BOS).

    Only when the pair is too long: the prompt keeps its last `max_prompt_length` tokens; then, if still too
    long, the response keeps its first tokens (TRL's keep_end rule, which METHODS §7.5 follows).
    """
    if max_length is None or fixed + len(prompt) + len(response) <= max_length:
        return prompt, response, 0, 0
    cut_p = max(0, len(prompt) - max_prompt_length)
    prompt = prompt[cut_p:]
    room = max_length - fixed - len(prompt)
    if room < 1:
        raise RewardkitError(f"max_length {max_length} leaves no room for a response token after a "
                             f"{len(prompt)}-token prompt; raise max_length or lower max_prompt_length")
    cut_r = max(0, len(response) - room)
    return prompt, response[: len(response) - cut_r], cut_p, cut_r


# -- the math (pure functions) -------------------------------------------------------------------------------
def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(target_t | prefix) at the masked positions, 0 elsewhere.

    logits: (b, n, vocab), the logits at position t predict targets[:, t]. targets: (b, n) long. mask:
    (b, n) bool, True where the target is a scored response token. Returns (b, n) float32. The log-softmax
    runs in fp32 on the masked rows only, so padding and prompt positions cost no vocab-sized work.
    """
    out = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    picked = logits[mask].float().log_softmax(-1)  # (n_scored, vocab)
    out[mask] = picked.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    return out


@dataclass
class SequenceLogProbs:
    """Per-sequence statistics of the scored token log-probs. Each field: (n,) float64 (count: long)."""

    total: torch.Tensor   # Σ_t log π
    count: torch.Tensor   # number of scored tokens
    sq_total: torch.Tensor  # Σ_t (log π)²

    @classmethod
    def from_tokens(cls, token_lp: torch.Tensor, mask: torch.Tensor) -> SequenceLogProbs:
        """token_lp, mask: (b, n) as `token_logprobs` returns them."""
        lp = token_lp.double().cpu() * mask.cpu()
        return cls(lp.sum(-1), mask.cpu().sum(-1), lp.pow(2).sum(-1))

    @classmethod
    def cat(cls, parts: Sequence[SequenceLogProbs]) -> SequenceLogProbs:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("total", "count", "sq_total")))

    def take(self, order: torch.Tensor) -> SequenceLogProbs:
        return SequenceLogProbs(self.total[order], self.count[order], self.sq_total[order])


def implicit_rewards(policy: SequenceLogProbs, reference: SequenceLogProbs | None, *, mode: str,
                     beta: float) -> torch.Tensor:
    """(n,) float64 rewards (METHODS §7).

    ratio: β(Σ log π − Σ log π_ref), β kept so calibration (EVALUATION §5) can use it as is; ranking ignores
      it. When the reference is the policy the two sums are the same numbers and the reward is exactly 0.
    sum:   Σ log π (reference-free; biased to short answers).
    avg:   mean token log π (RewardBench's script default).
    norm:  −‖token log π‖₂ (RewardBench's class default).
    """
    if mode == "ratio":
        if reference is None:
            raise RewardkitError("mode 'ratio' needs a reference model")
        return beta * (policy.total - reference.total)
    if mode == "sum":
        return policy.total
    if mode == "avg":
        return policy.total / policy.count.clamp(min=1)
    if mode == "norm":
        return -policy.sq_total.sqrt()
    raise RewardkitError(f"unknown implicit reward mode {mode!r}; expected one of {', '.join(MODES)}")


# -- the Scorer ----------------------------------------------------------------------------------------------
class ImplicitRewardScorer:
    """Scores responses with a DPO policy (and its reference) as an implicit reward model.

    policy, reference: transformers causal LMs sharing `tokenizer`. reference None means a reference-free
    mode. The same object as policy and reference is computed once (rewards exactly 0); two copies of the
    same weights run the same batches through the same code, so they also give exactly 0.
    mode: "ratio" (default with a reference) or a reference-free "sum" (default without: the DPO reward with
      log π_ref taken as 0; RewardBench's script uses "avg"), "avg", "norm".
    precision: "fp32" (default) or "bf16" autocast ("auto": bf16 where it is fast); log-softmax is fp32.

    Batches: sequences sorted by length, padded on the left to the batch's longest, about `batch_tokens`
    token slots each; only the positions from the earliest response start on get logits.
    """

    def __init__(self, policy, reference=None, *, tokenizer, beta: float = 0.1, mode: Mode | None = None,
                 max_length: int | None = DEFAULT_MAX_LENGTH, max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH,
                 chat_template: str | None = None, precision: str = "fp32",
                 device: str | torch.device | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int | None = 64, name: str | None = None, reference_name: str | None = None,
                 quantization: str | None = None):
        mode = mode or ("ratio" if reference is not None else "sum")
        if mode not in MODES:
            raise RewardkitError(f"unknown implicit reward mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "ratio" and reference is None:
            raise RewardkitError("mode 'ratio' needs a reference model; without one use a reference-free mode "
                                 f"({', '.join(REFERENCE_FREE_MODES)})")
        if mode != "ratio" and reference is not None:
            raise RewardkitError(f"mode {mode!r} is reference-free; pass no reference, or use mode 'ratio'")
        if max_length is not None and max_prompt_length >= max_length:
            raise RewardkitError(f"max_prompt_length ({max_prompt_length}) must be below max_length "
                                 f"({max_length})")
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(precision, self.device)
        self.policy = policy.to(self.device).eval()
        self.reference = None
        if reference is not None:
            self.reference = self.policy if reference is policy else reference.to(self.device).eval()
        self.tokenizer = tokenizer
        self.text = TextEncoder(tokenizer, chat_template=chat_template)
        self.pad_id = pad_id_of(tokenizer)
        self.beta, self.mode = float(beta), mode
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.batch_tokens, self.max_batch_size = batch_tokens, max_batch_size
        self.name = name or getattr(policy.config, "_name_or_path", None)
        self.reference_name = reference_name or (
            getattr(reference.config, "_name_or_path", None) if reference is not None else None)
        self.quantization = quantization

    @classmethod
    def from_pretrained(cls, policy_path: str | os.PathLike, reference_path: str | os.PathLike | None = None, *,
                        beta: float = 0.1, mode: Mode | None = None, trust_remote_code: bool = False,
                        **kwargs) -> ImplicitRewardScorer:
        """Load the policy (and reference) by path, hub id or packaged name ("smollm2"). The same path for
        both loads one model; a reference whose tokenizer differs from the policy's is refused."""
        policy, tokenizer = load_causal_lm(policy_path, trust_remote_code=trust_remote_code)
        reference = None
        if reference_path is not None:
            if str(reference_path) == str(policy_path):
                reference = policy
            else:
                reference, ref_tokenizer = load_causal_lm(reference_path, trust_remote_code=trust_remote_code)
                if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
                    raise ModelError(f"the reference {str(reference_path)!r} has a different tokenizer from the "
                                     f"policy {str(policy_path)!r}; DPO log-ratios need the same tokens")
        kwargs.setdefault("quantization", quantization_note(policy_path))
        kwargs.setdefault("name", str(policy_path))
        kwargs.setdefault("reference_name", str(reference_path) if reference_path is not None else None)
        return cls(policy, reference, tokenizer=tokenizer, beta=beta, mode=mode, **kwargs)

    def encode(self, items: Sequence[ScoreItem]) -> list[list[Encoded]]:
        return [[encode_for_logprobs(self.text, it.prompt, r.content, max_length=self.max_length,
                                     max_prompt_length=self.max_prompt_length) for r in it.responses]
                for it in items]

    @torch.inference_mode()
    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One ScoreResult per item, in order: rewards, response_tokens (content only) and truncated."""
        encoded = self.encode(items)
        flat = [e for row in encoded for e in row]
        rewards: list[float] = []
        if flat:
            policy_lp = self.sequence_logprobs(self.policy, flat)
            if self.reference is None:
                reference_lp = None
            elif self.reference is self.policy:
                reference_lp = policy_lp  # one computation, so the difference is exactly 0
            else:
                reference_lp = self.sequence_logprobs(self.reference, flat)
            rewards = implicit_rewards(policy_lp, reference_lp, mode=self.mode, beta=self.beta).tolist()
        out, start = [], 0
        for row in encoded:
            out.append(ScoreResult(rewards=rewards[start: start + len(row)],
                                   response_tokens=[e.response_tokens for e in row],
                                   truncated=[e.truncated for e in row]))
            start += len(row)
        return out

    def sequence_logprobs(self, model, encoded: Sequence[Encoded]) -> SequenceLogProbs:
        """Scored-token log-prob statistics of each sequence under `model`, in input order.

        The batches depend on the sequences only, so policy and reference see identical inputs.
        """
        batches = budget_batches([len(e.input_ids) for e in encoded], self.batch_tokens,
                                 rows=[1] * len(encoded), max_items=self.max_batch_size)
        parts = [batch_logprobs(model, [encoded[i] for i in batch], self.pad_id, self.precision, self.device)
                 for batch in batches]
        order = torch.empty(len(encoded), dtype=torch.long)
        order[torch.tensor([i for batch in batches for i in batch])] = torch.arange(len(encoded))
        return SequenceLogProbs.cat(parts).take(order)

    def describe(self) -> dict[str, Any]:
        reference_free = self.mode in REFERENCE_FREE_MODES
        return {
            "kind": "implicit_dpo", "name": self.name,
            "reference": None if reference_free else self.reference_name,
            "reference_is_policy": self.reference is not None and self.reference is self.policy,
            "mode": self.mode, "reference_free": reference_free,
            "reference_free_mode": self.mode if reference_free else None,
            "beta": None if reference_free else self.beta, "reward_includes_beta": not reference_free,
            "precision": self.precision, "dtype": str(next(self.policy.parameters()).dtype).removeprefix("torch."),
            "quantization": self.quantization, "device": str(self.device),
            "max_length": self.max_length, "max_prompt_length": self.max_prompt_length,
            "truncation": "keep_end", "padding_side": "left", "chat_template": self.text.chat_template,
            "boundary": "prompt rendered without generation prompt; merged token goes to the response",
            "append_eos": True, "batch_plan": "padded",
        }


def batch_logprobs(model, encoded: Sequence[Encoded], pad_id: int, precision: str,
                   device: torch.device) -> SequenceLogProbs:
    """One left-padded forward pass over `encoded`; statistics of each sequence's scored tokens.

    With left padding every row ends at the last column, so only the last k positions need logits, where
    k covers the longest scored part (the token before a response predicts its first token).
    """
    plan = plan_padded(encoded, pad_id, "left").to(device)
    rows, width = plan.input_ids.shape
    lengths = torch.tensor([len(e.input_ids) for e in encoded], device=device)
    first = torch.tensor([max(e.response_start, 1) for e in encoded], device=device)  # position 0 has no context
    cols = torch.arange(width, device=device)
    scored = cols >= (width - lengths + first).unsqueeze(1)  # (rows, width): target columns
    keep = int(min(width, (lengths - first).max().item() + 1))
    with compute_context(precision, device):
        logits = tail_logits(model, plan, keep)  # (rows, keep, vocab)
    targets = plan.input_ids[:, width - keep + 1:]
    mask = scored[:, width - keep + 1:]
    return SequenceLogProbs.from_tokens(token_logprobs(logits[:, :-1], targets, mask), mask)


def tail_logits(model, plan, keep: int) -> torch.Tensor:
    """Logits at the last `keep` positions, (rows, keep, vocab); computed for those positions only when the
    model supports `logits_to_keep`."""
    kwargs = {"input_ids": plan.input_ids, "attention_mask": plan.attention_mask,
              "position_ids": plan.position_ids}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    return model(**kwargs).logits[:, -keep:]


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters
