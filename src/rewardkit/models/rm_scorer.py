"""A trained reward model as a Scorer: encode every (prompt, response), plan batches, read the rewards."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rewardkit.attention import use_fast_attention
from rewardkit.batching import DEFAULT_BATCH_TOKENS, Planner
from rewardkit.errors import RewardkitError
from rewardkit.fused import use_fused_layers
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.scorer import ScoreItem, ScoreResult
from rewardkit.precision import compute_context, compute_dtype, default_device, resolve_precision
from rewardkit.steps import AGGREGATIONS, aggregate
from rewardkit.text import Encoded, _truncate_left


#: Padded plans: a sequence more than this fraction shorter than its batch's width starts a new batch
#: (batching.budget_batches), so scoring computes little padding.
SCORING_MAX_PADDING = 0.1


class RewardModelScorer:
    """Scores items with a RewardModel.

    Batches follow the model's best plan (rewardkit.batching): on a causal backbone the responses of one item
    share their prompt's tokens in one packed row (best-of-N computes the prompt once, not N times); encoders
    get padded rows. Either way items are sorted by length and cut into batches of about `batch_tokens`
    computed tokens (and at most `max_batch_size` items).
    """

    def __init__(self, model: RewardModel, *, device: str | torch.device | None = None,
                 precision: str = "auto", batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int | None = 64, share_prefix: bool | None = None,
                 aggregation: str | None = None, compile: bool = False):
        """aggregation: for a process reward model, how step probabilities become each response's reward
        (rewardkit.steps.AGGREGATIONS; default the model's own, meta.step_aggregation).
        compile: torch.compile the backbone (RewardModel.compile_backbone): faster batches after a compile of
        a minute or more, so for servers and long scoring jobs."""
        if aggregation is not None:
            if not model.meta.is_process:
                raise RewardkitError("aggregation applies to process reward models only; this model gives one "
                                     "reward per response")
            if aggregation not in AGGREGATIONS:
                raise RewardkitError(f"unknown step aggregation {aggregation!r}; choose one of "
                                     f"{', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation or model.meta.step_aggregation
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.precision = resolve_precision(precision, self.device)
        self.model.compute_dtype = compute_dtype(self.precision)
        self.planner = Planner(self.model, batch_tokens=batch_tokens, share_prefix=share_prefix,
                               max_batch_size=max_batch_size)
        if self.device.type == "cpu" and self.precision == "bf16":
            use_fused_layers(self.model.hf_model)  # RMSNorm and gated MLPs in one pass (rewardkit.fused)
            use_fast_attention(self.model.hf_model)  # attention in AMX tiles (rewardkit.attention)
        if compile:  # after the planner: its equivalence check runs once, not through the compiler
            self.model.compile_backbone()

    @classmethod
    def from_pretrained(cls, name_or_path, *, max_length: int | None = None, chat_template: str | None = None,
                        **kwargs) -> RewardModelScorer:
        model = RewardModel.from_pretrained(name_or_path, max_length=max_length, chat_template=chat_template)
        return cls(model, **kwargs)

    def encode(self, items: Sequence[ScoreItem]) -> list[list[Encoded]]:
        return [[self.model.encode(it.prompt, r) for r in it.responses] for it in items]

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One ScoreResult per item, in order."""
        return self.score_encoded(self.encode(items))

    # -- token-id input --------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Token ids the backbone can embed: [0, vocab_size)."""
        return self.model.hf_model.get_input_embeddings().num_embeddings

    def encode_token_ids(self, prompt_ids: Sequence[int], response_ids: Sequence[Sequence[int]]) -> list[Encoded]:
        """Sequences built from ids exactly as given: no chat template, no special tokens added (a BOS or EOS
        the model expects must already be in the ids), so a policy's own tokenization is what gets scored.
        The score is read at each response's last id. Over `max_length`, prompt ids are dropped from the left
        first, as `TextEncoder.encode` does."""
        if self.model.meta.is_process:
            raise RewardkitError("a process reward model reads a score at every step separator, so it takes text "
                                 "(responses split into steps), not token ids")
        vocab = self.vocab_size
        named = [("prompt_ids", prompt_ids)] + [(f"response_ids[{k}]", r) for k, r in enumerate(response_ids)]
        for where, ids in named:
            bad = next((i for i, t in enumerate(ids) if not 0 <= t < vocab), None)
            if bad is not None:
                raise RewardkitError(f"{where}[{bad}]: token id {ids[bad]} is outside the vocabulary [0, {vocab})")
        pair = self.model.meta.text_mode == "pair"
        out = []
        for k, response in enumerate(response_ids):
            if not response:
                raise RewardkitError(f"response_ids[{k}] is empty: the score is read at a response's last token")
            prompt, kept, cut_p, cut_r = _truncate_left(list(prompt_ids), list(response), self.model.text.max_length,
                                                        fixed=0)
            types = [0] * len(prompt) + [1] * len(kept) if pair else None
            out.append(Encoded(prompt + kept, types, len(prompt), len(response), cut_p, cut_r))
        return out

    def score_token_ids(self, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[ScoreResult]:
        """One ScoreResult per (prompt_ids, [response_ids, ...]) item, in order, through the same batch plans
        as `score` (see `encode_token_ids` for how the ids are laid out)."""
        return self.score_encoded([self.encode_token_ids(p, rs) for p, rs in items])

    # -- scoring encoded sequences ---------------------------------------------------------------------------
    @torch.inference_mode()
    def score_encoded(self, encoded: Sequence[Sequence[Encoded]]) -> list[ScoreResult]:
        """One ScoreResult per group of encoded sequences (an item's responses), in order."""
        # The model may be shared (a training loop's evaluation, a second scorer): compute at this scorer's own
        # precision whatever another user set last.
        self.model.compute_dtype = compute_dtype(self.precision)
        # What is planned: a group whose sequences share their prompt's tokens (packed plans), or, for padded plans,
        # where nothing is shared, each sequence alone, so batches are sorted by every sequence's own length and a
        # short response is not padded to its group's longest (HH-RLHF prompts with 4 responses each, at MiniLM's
        # max length 128: 23% of the computed tokens were padding, 5% now). owner[u]: the group unit u is in.
        rows = [i for i, row in enumerate(encoded) if row]
        if self.planner.packed:
            units, owner = [encoded[i] for i in rows], rows
        else:
            units = [[e] for i in rows for e in encoded[i]]
            owner = [i for i in rows for _ in encoded[i]]
        reads: list[list[list[float]]] = [[] for _ in units]
        for part in self.planner.batches(units, max_padding=SCORING_MAX_PADDING):
            plan = self.planner.plan([units[k] for k in part]).to(self.device)
            with compute_context(self.precision, self.device):
                rewards = self.model(**plan.model_inputs()).float().cpu().tolist()  # (n_reads, n_objectives)
            for k in part:
                n = sum(len(e.read_offsets) for e in units[k])
                reads[k], rewards = rewards[:n], rewards[n:]
        outputs: dict[int, list[list[float]]] = {i: [] for i in range(len(encoded))}
        for k, i in enumerate(owner):
            outputs[i] += reads[k]
        if self.model.meta.is_process:
            return [self._process_result(row, outputs[i]) for i, row in enumerate(encoded)]
        return [self._result(row, outputs[i]) for i, row in enumerate(encoded)]

    def _process_result(self, row: list[Encoded], logits: list[list[float]]) -> ScoreResult:
        """A process model's reads are step logits: step_rewards are P(step correct) = sigmoid(logit), None for
        steps truncation cut, and each reward aggregates them (`aggregation`)."""
        step_rewards = []
        for e in row:
            n = len(e.read_offsets)
            p = [1.0 / (1.0 + math.exp(-v[0])) for v in logits[:n]]
            logits = logits[n:]
            step_rewards.append(p + [None] * (e.n_steps - n))
        rule = self.aggregation
        return ScoreResult(
            rewards=[aggregate(s, rule) for s in step_rewards], step_rewards=step_rewards,
            response_tokens=[e.response_tokens for e in row], truncated=[e.truncated for e in row])

    def _result(self, row: list[Encoded], per_response: list[list[float]]) -> ScoreResult:
        """per_response: (n_responses, n_objectives), quality heads only (a length head is never a score).

        One objective: its score is the reward, and `objectives` / `weights` stay None. Several: the reward is
        the combination s = w^T r (RewardModel.combination_weights: meta.weights, equal by default), and
        `objectives` and `weights` say what made it."""
        meta = self.model.meta
        objectives = weights = None
        if len(meta.objectives) == 1:
            rewards = [r[0] for r in per_response]
        else:
            w = self.model.combination_weights()
            rewards = [sum(wk * v for wk, v in zip(w, r)) for r in per_response]
            objectives = {name: [r[k] for r in per_response] for k, name in enumerate(meta.objectives)}
            weights = dict(zip(meta.objectives, w))
        return ScoreResult(
            rewards=rewards, objectives=objectives, weights=weights,
            response_tokens=[e.response_tokens for e in row], truncated=[e.truncated for e in row])

    def describe(self) -> dict[str, Any]:
        meta = self.model.meta
        process = {"step_separator": meta.step_separator, "step_aggregation": self.aggregation}
        return {
            "kind": "process_reward_model" if meta.is_process else "reward_model", "name": meta.base_model,
            "objectives": meta.objectives, **(process if meta.is_process else {}),
            **({"combination": meta.combination, "weights": dict(zip(meta.objectives,
                                                                     self.model.combination_weights()))}
               if len(meta.objectives) > 1 else {}),
            **({"length_head": True} if meta.length_head else {}),
            "precision": self.precision, "device": str(self.device), "max_length": meta.max_length,
            "padding_side": meta.padding_side, "score_rule": meta.score_rule, "text_mode": meta.text_mode,
            "chat_template": meta.chat_template if meta.text_mode == "chat" else None,
            "append_eos": meta.append_eos, "quantization": None,
            "batch_plan": "shared-prefix packed" if self.planner.packed else "padded",
        }
