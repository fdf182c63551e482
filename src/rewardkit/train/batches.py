"""Training examples and the order they are seen in.

A training example is one record with everything the loss needs: its encoded responses, the comparisons
(or full ranking) between them and the objective they speak to, the attribute ratings of its responses
for objectives it rates, and, for a process reward model, its responses' step labels. Each record counts once in the preference loss, however many pairs it implies: a
record's pair weights sum to one; attribute ratings count one each in the regression loss.

The order is a pure function of (seed, epoch), so a resumed run sees exactly the batches an uninterrupted
run would have. Records are length-grouped (sorted by length inside shuffled mega-batches, batches then
shuffled), so a batch pads its rows to similar lengths rather than to the longest sequence in the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError
from rewardkit.losses import LossInputs, to_helpsteer
from rewardkit.batching import BatchPlan, Planner
from rewardkit.text import Encoded

MEGA_BATCH = 32  # batches per length-grouping window: large enough to group, small enough to stay random


@dataclass
class Example:
    encoded: list[Encoded]  # one per response
    winner: list[int]  # empty for a record with attribute ratings only
    loser: list[int]
    p: list[float]
    margin: list[float]
    ranking: list[int] | None  # full ranking best-first, for K-wise / Plackett-Luce losses
    record_id: str
    objective: int | None = 0  # index of the objective the comparisons speak to; None: every objective
    head_weights: list[float] | None = None  # with objective None: the record's weight in each objective's loss
    targets: list[list[float | None]] | None = None  # per response, per objective: rating or None (missing)
    step_labels: list[list[float | None]] | None = None  # per response, per read step: label or None (masked)

    @property
    def has_pairs(self) -> bool:
        return bool(self.winner)

    def objective_weights(self, n_objectives: int) -> list[tuple[int, float]]:
        """(objective, weight) pairs the comparisons train: the one tagged, or every objective with its weight."""
        if self.objective is not None:
            return [(self.objective, 1.0)]
        return list(enumerate(self.head_weights or [1.0] * n_objectives))

    @property
    def n_ratings(self) -> int:
        return sum(v is not None for row in self.targets or [] for v in row)

    @property
    def n_step_labels(self) -> int:
        return sum(v is not None for row in self.step_labels or [] for v in row)

    @property
    def n_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.encoded)

    @property
    def longest(self) -> int:
        return max(len(e.input_ids) for e in self.encoded)


def build_examples(records: Sequence[PreferenceRecord], text, objectives: Sequence[str] = ("reward",),
                   attribute_scale: str = "none", *, every_objective: Callable | None = None,
                   process: bool = False, last_step_only: bool = False) -> tuple[list[Example], int]:
    """Encode every usable record once. Returns (examples, number of records without a usable label).

    text: what encodes a (prompt, Response) — the RewardModel (`RewardModel.encode`), which reads a process
    model's responses step by step.

    A record's comparisons speak to the objective its meta["objective"] names (the training loop sets it from
    the data file's tag); with one objective, every record speaks to it. Its attributes named like an
    objective become regression targets (attribute_scale "helpsteer": y -> (y + 0.5) / 5); others are ignored.
    A record is usable with a comparison or at least one such rating.

    every_objective: the heads of a shared-backbone ensemble. Every record's comparisons train every objective,
    `every_objective(record)` giving its weight in each one's loss (one number per objective).

    process: a process reward model, trained on step labels only (each record needs them); `last_step_only`
    keeps just the outcome label on each response's last step (rewardkit.steps.last_step_only). Steps that
    truncation cut lose their labels.
    """
    if process:
        return _process_examples(records, text, last_step_only)
    index = {name: k for k, name in enumerate(objectives)}
    examples, unusable = [], 0
    for r in records:
        comparisons = r.comparisons()
        targets = _targets(r, index, attribute_scale)
        if not comparisons and targets is None:
            unusable += 1
            continue
        objective, head_weights = 0, None
        if comparisons and every_objective is not None:
            objective, head_weights = None, [float(w) for w in every_objective(r)]
            if len(head_weights) != len(objectives):
                raise ValueError(f"{len(head_weights)} head weights for {len(objectives)} objectives")
        elif comparisons:
            objective = _objective(r, index)
        ranking = r.ranking
        if ranking is None and r.scores is not None and len(set(r.scores)) == len(r.scores):
            ranking = sorted(range(len(r.scores)), key=lambda i: -r.scores[i])
        if ranking is None and len(r.responses) == 2 and comparisons:
            ranking = [comparisons[0].winner, comparisons[0].loser]
        examples.append(Example(
            encoded=[text.encode(r.prompt, resp) for resp in r.responses],
            winner=[c.winner for c in comparisons], loser=[c.loser for c in comparisons],
            p=[c.p for c in comparisons], margin=[c.margin or 0.0 for c in comparisons],
            ranking=ranking if comparisons else None, record_id=r.id, objective=objective,
            head_weights=head_weights, targets=targets))
    return examples, unusable


def _process_examples(records: Sequence[PreferenceRecord], text, last_step_only: bool) -> tuple[list[Example], int]:
    from rewardkit.steps import last_step_only as outcome_only

    examples, unusable = [], 0
    for r in records:
        if r.comparisons() or r.attributes:
            raise DataError(f"{_where(r)}: preference or attribute labels in a process reward model's data; "
                            "train it on step labels only", field="step_labels")
        if not r.step_labels or not any(v is not None for row in r.step_labels if row for v in row):
            unusable += 1
            continue
        encoded, labels = [], []
        for k, resp in enumerate(r.responses):
            row = r.step_labels[k] if k < len(r.step_labels) and r.step_labels[k] else None
            if row is None:
                continue
            e = text.encode(r.prompt, resp)
            if e.n_steps != len(row):
                raise DataError(f"{_where(r)}: response {k} has {e.n_steps} steps but {len(row)} step labels",
                                field="step_labels")
            kept = len(e.read_offsets)  # steps cut by truncation are not trained on
            if not last_step_only:
                row = list(row[:kept])
            elif kept == len(row):
                row = outcome_only(row)
            else:  # a cut solution's outcome is known only when a kept step is already wrong
                wrong = any(v is not None and v < 0.5 for v in row[:kept])
                row = [None] * (kept - 1) + [0.0 if wrong else None]
            encoded.append(e)
            labels.append(row)
        if not any(v is not None for row in labels for v in row):
            unusable += 1
            continue
        examples.append(Example(encoded=encoded, winner=[], loser=[], p=[], margin=[], ranking=None,
                                record_id=r.id, step_labels=labels))
    return examples, unusable


def _where(r: PreferenceRecord) -> str:
    parts = [f"record {r.id!r}"] + [f"{k} {r.meta[k]}" for k in ("subset", "line") if r.meta.get(k) is not None]
    return ", ".join(parts)


def _objective(r: PreferenceRecord, index: dict[str, int]) -> int:
    """The objective a record's comparisons speak to. With one objective every comparison trains it, whatever
    the record's tag says (single-objective runs read data as they always did)."""
    name = r.meta.get("objective")
    if len(index) == 1:
        return 0
    if name is None:
        raise DataError(f"{_where(r)}: a preference with no objective, in a run with objectives "
                        f"{list(index)}: tag its data file ({{path: ..., objective: NAME}}) or set "
                        "meta.objective", field="meta.objective")
    if name not in index:
        raise DataError(f"{_where(r)}: objective {name!r} is not among the objectives {list(index)}",
                        field="meta.objective")
    return index[name]


def _targets(r: PreferenceRecord, index: dict[str, int], scale: str) -> list[list[float | None]] | None:
    """Per response, per objective, the attribute rating (None where missing); None without any rating."""
    if not r.attributes:
        return None
    rows = [[None] * len(index) for _ in r.responses]
    found = False
    for i, attrs in enumerate(r.attributes):
        for name, value in (attrs or {}).items():
            if name in index and value is not None:
                rows[i][index[name]] = float(to_helpsteer(value) if scale == "helpsteer" else value)
                found = True
    return rows if found else None


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


@dataclass
class Labels:
    """What one forward pass is trained on, beside its plan. Responses are numbered in plan order.

    pairs:       the preference LossInputs (rewards=None), or None when no example here has a comparison. Its
                 indices address the flattened (n_responses * n_objectives) per-objective rewards: response i's
                 reward for objective j is slot i * n_objectives + j, and a pair reads its objective's slots.
    n_pref:      examples with comparisons (each counts once in the preference loss).
    targets:     attribute ratings (n_responses, n_objectives), 0 where missing, or None without any.
    target_mask: True where a rating is present, (n_responses, n_objectives).
    lengths:     response tokens, (n_responses,), for the length head.
    steps:       step labels (n_reads,), 0 where unlabeled, or None without any (a process model reads a
                 score at every step, so its outputs are one per step, not per response).
    step_mask:   True where a step is labelled, (n_reads,).
    pair_mass:   the sum of the pair weights where they are bootstrap counts (a shared-backbone ensemble's
                 heads), so that the loss is their weighted sum over records rather than their weighted mean;
                 None where every record's weights sum to one.
    """

    pairs: LossInputs | None
    n_pref: int
    targets: torch.Tensor | None
    target_mask: torch.Tensor | None
    lengths: torch.Tensor
    steps: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    pair_mass: float | None = None

    @property
    def n_step_labels(self) -> int:
        return int(self.step_mask.sum()) if self.step_mask is not None else 0

    @property
    def n_ratings(self) -> int:
        return int(self.target_mask.sum()) if self.target_mask is not None else 0

    def to(self, device: torch.device | str) -> Labels:
        move = (lambda t: None if t is None else t.to(device))
        pairs = self.pairs.to(device, rewards=None) if self.pairs is not None else None
        return Labels(pairs, self.n_pref, move(self.targets), move(self.target_mask), move(self.lengths),
                      move(self.steps), move(self.step_mask), self.pair_mass)


def collate_examples(examples: Sequence[Example], planner: Planner,
                     teacher: dict[str, list[float]] | None = None,
                     n_objectives: int = 1) -> tuple[BatchPlan, Labels]:
    """The plan of one forward pass over every response of `examples`, and its Labels.

    Rewards come out of the plan example by example, response by response; the Labels refer to that order.
    """
    plan = planner.plan([ex.encoded for ex in examples])
    j_n = n_objectives
    winner, loser, p, margin, weight, groups, teacher_scores = [], [], [], [], [], [], []
    targets, lengths = [], []
    offset = 0
    ranked = [ex for ex in examples if ex.has_pairs]
    k_max = max((len(ex.encoded) for ex in ranked), default=0)
    for ex in examples:
        n_pairs = len(ex.winner)
        lengths += [e.response_tokens for e in ex.encoded]
        targets += ex.targets or [[None] * j_n for _ in ex.encoded]
        if n_pairs:
            trained = ex.objective_weights(j_n)  # (objective, weight): one, or every head of an ensemble
            for j, w in trained:
                winner += [(offset + a) * j_n + j for a in ex.winner]
                loser += [(offset + b) * j_n + j for b in ex.loser]
                p += ex.p
                margin += ex.margin
                weight += [w / (n_pairs * len(trained))] * n_pairs
                ranking = ex.ranking or []
                groups.append([(offset + i) * j_n + j for i in ranking] + [-1] * (k_max - len(ranking)))
            if teacher is not None:  # one teacher score per response, the same for every objective's slot
                teacher_scores += [t for t in teacher[ex.record_id] for _ in range(j_n)]
        elif teacher is not None:
            teacher_scores += [0.0] * (len(ex.encoded) * j_n)  # never read: no pair points here
        offset += len(ex.encoded)
    counted = any(w != 1.0 for ex in ranked if ex.objective is None for w in ex.head_weights or [])
    pairs = None
    if ranked:
        pairs = LossInputs(
            rewards=None, winner=torch.tensor(winner), loser=torch.tensor(loser), p=torch.tensor(p),
            margin=torch.tensor(margin), weight=torch.tensor(weight),
            groups=torch.tensor(groups) if all(ex.ranking for ex in ranked) else None,
            teacher=torch.tensor(teacher_scores) if teacher is not None else None)
    mask = torch.tensor([[v is not None for v in row] for row in targets], dtype=torch.bool)
    values = torch.tensor([[0.0 if v is None else v for v in row] for row in targets], dtype=torch.float32)
    has_ratings = bool(mask.any())
    steps = step_mask = None
    if any(ex.step_labels for ex in examples):
        flat = [v for ex in examples for row in (ex.step_labels or [[None] * len(e.read_offsets)
                                                                    for e in ex.encoded]) for v in row]
        step_mask = torch.tensor([v is not None for v in flat], dtype=torch.bool)
        steps = torch.tensor([0.0 if v is None else v for v in flat], dtype=torch.float32)
    return plan, Labels(pairs, len(ranked), values if has_ratings else None, mask if has_ratings else None,
                        torch.tensor(lengths, dtype=torch.float32), steps, step_mask,
                        pair_mass=float(sum(weight)) if counted else None)
