"""A trained reward model as a Scorer: encode every (prompt, response), batch by tokens, read the rewards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rewardkit.models.reward_model import RewardModel
from rewardkit.models.scorer import ScoreItem, ScoreResult
from rewardkit.precision import compute_context, default_device, resolve_precision
from rewardkit.text import Encoded, collate


class RewardModelScorer:
    """Scores items with a RewardModel.

    Sequences are sorted by length and cut into batches of at most `batch_tokens` padded tokens (and
    `max_batch_size` rows), so short sequences are never padded to a long one's length.
    """

    def __init__(self, model: RewardModel, *, device: str | torch.device | None = None,
                 precision: str = "auto", batch_tokens: int = 16384, max_batch_size: int = 64):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.precision = resolve_precision(precision, self.device)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size

    @classmethod
    def from_pretrained(cls, name_or_path, *, max_length: int | None = None, chat_template: str | None = None,
                        **kwargs) -> RewardModelScorer:
        model = RewardModel.from_pretrained(name_or_path, max_length=max_length, chat_template=chat_template)
        return cls(model, **kwargs)

    def encode(self, items: Sequence[ScoreItem]) -> list[list[Encoded]]:
        return [[self.model.text.encode(it.prompt, r.content) for r in it.responses] for it in items]

    @torch.inference_mode()
    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One ScoreResult per item, in order."""
        encoded = self.encode(items)
        flat = [(i, j, e) for i, row in enumerate(encoded) for j, e in enumerate(row)]
        outputs: dict[tuple[int, int], list[float]] = {}
        for batch in self._batches(flat):
            tensors = collate([e for _, _, e in batch], self.model.tokenizer.pad_token_id,
                              self.model.meta.padding_side)
            tensors = {k: v.to(self.device) for k, v in tensors.items()}
            with compute_context(self.precision, self.device):
                rewards = self.model(**tensors)  # (b, n_objectives)
            for (i, j, _), row in zip(batch, rewards.float().cpu().tolist()):
                outputs[i, j] = row
        return [self._result(i, row, outputs) for i, row in enumerate(encoded)]

    def _batches(self, flat):
        """Longest first, so the first batch shows at once whether the budget fits in memory."""
        ordered = sorted(flat, key=lambda t: len(t[2].input_ids), reverse=True)
        batch: list = []
        for entry in ordered:
            width = len(batch[0][2].input_ids) if batch else len(entry[2].input_ids)
            if batch and ((len(batch) + 1) * width > self.batch_tokens or len(batch) >= self.max_batch_size):
                yield batch
                batch = []
            batch.append(entry)
        if batch:
            yield batch

    def _result(self, i: int, row: list[Encoded], outputs) -> ScoreResult:
        meta = self.model.meta
        per_response = [outputs[i, j] for j in range(len(row))]  # (n_responses, n_objectives)
        objectives = None
        if len(meta.objectives) == 1:
            rewards = [r[0] for r in per_response]
        else:
            weights = meta.weights or [1.0 / len(meta.objectives)] * len(meta.objectives)
            rewards = [sum(w * v for w, v in zip(weights, r)) for r in per_response]
            objectives = {name: [r[k] for r in per_response] for k, name in enumerate(meta.objectives)}
        return ScoreResult(
            rewards=rewards, objectives=objectives,
            weights=dict(zip(meta.objectives, meta.weights)) if objectives and meta.weights else None,
            response_tokens=[e.response_tokens for e in row], truncated=[e.truncated for e in row])

    def describe(self) -> dict[str, Any]:
        meta = self.model.meta
        return {
            "kind": "reward_model", "name": meta.base_model, "objectives": meta.objectives,
            "precision": self.precision, "device": str(self.device), "max_length": meta.max_length,
            "padding_side": meta.padding_side, "score_rule": meta.score_rule, "text_mode": meta.text_mode,
            "chat_template": meta.chat_template if meta.text_mode == "chat" else None,
            "append_eos": meta.append_eos, "quantization": None,
        }
