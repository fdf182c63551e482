"""Training examples and the order they are seen in.

A training example is one record with everything the loss needs: its encoded responses and the
comparisons (or full ranking) between them. Each record counts once in the loss, however many pairs it
implies: a record's pair weights sum to one.

The order is a pure function of (seed, epoch), so a resumed run sees exactly the batches an uninterrupted
run would have. Records are length-grouped (sorted by length inside shuffled mega-batches, batches then
shuffled), so a batch pads its rows to similar lengths rather than to the longest sequence in the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rewardkit.data.record import PreferenceRecord
from rewardkit.losses import LossInputs
from rewardkit.batching import BatchPlan, Planner
from rewardkit.text import Encoded, TextEncoder

MEGA_BATCH = 32  # batches per length-grouping window: large enough to group, small enough to stay random


@dataclass
class Example:
    encoded: list[Encoded]  # one per response
    winner: list[int]
    loser: list[int]
    p: list[float]
    margin: list[float]
    ranking: list[int] | None  # full ranking best-first, for K-wise / Plackett-Luce losses
    record_id: str

    @property
    def n_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.encoded)

    @property
    def longest(self) -> int:
        return max(len(e.input_ids) for e in self.encoded)


def build_examples(records: Sequence[PreferenceRecord], text: TextEncoder) -> tuple[list[Example], int]:
    """Encode every usable record once. Returns (examples, number of records without a usable label)."""
    examples, unusable = [], 0
    for r in records:
        comparisons = r.comparisons()
        if not comparisons:
            unusable += 1
            continue
        ranking = r.ranking
        if ranking is None and r.scores is not None and len(set(r.scores)) == len(r.scores):
            ranking = sorted(range(len(r.scores)), key=lambda i: -r.scores[i])
        if ranking is None and len(r.responses) == 2:
            ranking = [comparisons[0].winner, comparisons[0].loser]
        examples.append(Example(
            encoded=[text.encode(r.prompt, resp.content) for resp in r.responses],
            winner=[c.winner for c in comparisons], loser=[c.loser for c in comparisons],
            p=[c.p for c in comparisons], margin=[c.margin or 0.0 for c in comparisons],
            ranking=ranking, record_id=r.id))
    return examples, unusable


def epoch_batches(examples: Sequence[Example], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches of example indices for one epoch: a pure function of (seed, epoch).

    The last batch may be smaller; nothing is dropped.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(examples), generator=g).tolist()
    window = batch_size * MEGA_BATCH
    grouped: list[int] = []
    for start in range(0, len(order), window):
        chunk = order[start: start + window]
        grouped.extend(sorted(chunk, key=lambda i: -examples[i].longest))
    batches = [grouped[i: i + batch_size] for i in range(0, len(grouped), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    tail = [b for b in batches if len(b) < batch_size]
    shuffle = torch.randperm(len(full), generator=g).tolist()
    return [full[i] for i in shuffle] + tail


def fill(batch: list[int], slots: int) -> list[int]:
    """A batch with at least `slots` examples, repeating its own from the start if it is shorter: every
    process and micro-step must have work, or the gradient all-reduce would wait forever. Only a final
    batch smaller than processes x accumulation steps is ever filled."""
    return batch if len(batch) >= slots else (batch * slots)[:slots]


def shard(batch: list[int], world: int, rank: int, micro_steps: int) -> list[list[int]]:
    """This process's micro-batches of a (filled) global batch: rank r takes every world-th example, then
    splits its share into `micro_steps` contiguous parts of (nearly) equal size."""
    mine = batch[rank::world]
    n = len(mine)
    return [mine[i * n // micro_steps: (i + 1) * n // micro_steps] for i in range(micro_steps)]


def forward_parts(examples: Sequence[Example], micro: list[int], planner: Planner) -> list[list[int]]:
    """A micro-batch cut into forward passes within the planner's token budget; the loss weights each part
    by its share of the global batch, so the gradient is the same however it is cut."""
    parts = planner.batches([examples[i].encoded for i in micro])
    return [[micro[k] for k in sorted(part)] for part in parts]


def collate_examples(examples: Sequence[Example], planner: Planner,
                     teacher: dict[str, list[float]] | None = None) -> tuple[BatchPlan, LossInputs]:
    """The plan of one forward pass over every response of `examples`, and the LossInputs skeleton.

    Rewards come out of the plan example by example, response by response; the LossInputs indices refer to
    that order. Returns (plan, LossInputs with rewards=None).
    """
    plan = planner.plan([ex.encoded for ex in examples])
    winner, loser, p, margin, weight, groups, teacher_scores = [], [], [], [], [], [], []
    offset = 0
    k_max = max(len(ex.encoded) for ex in examples)
    for ex in examples:
        n_pairs = len(ex.winner)
        winner += [offset + w for w in ex.winner]
        loser += [offset + l for l in ex.loser]
        p += ex.p
        margin += ex.margin
        weight += [1.0 / n_pairs] * n_pairs
        ranking = ex.ranking or []
        groups.append([offset + i for i in ranking] + [-1] * (k_max - len(ranking)))
        if teacher is not None:
            teacher_scores += teacher[ex.record_id]
        offset += len(ex.encoded)
    inputs = LossInputs(
        rewards=None, winner=torch.tensor(winner), loser=torch.tensor(loser), p=torch.tensor(p),
        margin=torch.tensor(margin), weight=torch.tensor(weight),
        groups=torch.tensor(groups) if all(ex.ranking for ex in examples) else None,
        teacher=torch.tensor(teacher_scores) if teacher is not None else None)
    return plan, inputs
