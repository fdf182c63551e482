"""Batch plans: which tokens one forward pass computes, what each attends to, and where scores are read.

A reward model's work is matrix products over tokens, so every token computed twice and every padding token
is waste. A plan removes both before anything runs:

- **Token budgets**: groups are sorted by length and cut into batches of about `batch_tokens` computed tokens
  (padding included), not a fixed number of rows.
- **Prefix sharing** (causal backbones): the sequences of one group (a prompt's K responses) share their
  longest common token prefix, so a row holds `[prefix | suffix 1 | ... | suffix K]`. Each suffix attends to
  the prefix and to itself only, and its positions continue from the end of the prefix, so every token sees
  exactly what it would see in its own sequence: the scores equal separate passes.
- **Packing**: several such segments share one row, with a block mask so no segment sees another. A row is
  no wider than the batch's longest segment, so packing never makes attention wider than padding would.
- Encoders attend both ways, so they cannot share a prefix or be packed: they get padded plans (each row
  padded to the batch's own longest sequence) in token-budget batches.

Shapes: a plan has `rows` x `width` tokens. `score_index` is a flat index into the (rows * width) tokens, one
per read, in input order (group by group, sequence by sequence): a sequence is read at its last token, or, when
split into steps (`Encoded.reads`), once per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from rewardkit.errors import RewardkitError
from rewardkit.text import Encoded

#: Default budget of computed tokens (padding included) per forward pass.
DEFAULT_BATCH_TOKENS = 16384


@dataclass
class BatchPlan:
    """One planned forward pass.

    input_ids, position_ids: (rows, width) long.
    attention_mask: (rows, width) 0/1 for a padded plan; (rows, 1, width, width) bool for a packed plan
        (True = may attend).
    score_index: (n_reads,) long, flat positions into rows * width where scores are read: one per sequence, or
        one per step of a step-split sequence (`Encoded.read_offsets`), in input order.
    token_type_ids: (rows, width) for sentence-pair encoders, else None.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    score_index: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    real_tokens: int = 0  # tokens that are not padding

    @property
    def packed(self) -> bool:
        return self.attention_mask.dim() == 4

    @property
    def computed_tokens(self) -> int:
        """Token slots the forward pass computes (rows x width), padding included."""
        return self.input_ids.numel()

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for `RewardModel.forward`."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
               "position_ids": self.position_ids, "score_index": self.score_index}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    def to(self, device: torch.device | str) -> BatchPlan:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return BatchPlan(**moved)


# -- padded plans (any backbone) -----------------------------------------------------------------------------
def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token in each row.

    attention_mask: (b, seq_len) of 0/1. Returns (b,) long. Works for left and right padding and does not
    look at token ids, so a pad id equal to the EOS id cannot move it.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, seq_len) positions counting real tokens only, so a left-padded row gets the same positions as
    the same row padded on the right."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def padded_score_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(b,) flat positions into (b * seq_len) of each padded row's last real token."""
    rows = torch.arange(attention_mask.shape[0], device=attention_mask.device)
    return rows * attention_mask.shape[-1] + last_token_index(attention_mask)


def plan_padded(encoded: Sequence[Encoded], pad_id: int, padding_side: str = "right") -> BatchPlan:
    """One sequence per row, each padded to the batch's own longest row."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    types = torch.zeros((len(encoded), width), dtype=torch.long) if encoded[0].token_type_ids else None
    reads = []
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        start = width - n if padding_side == "left" else 0
        ids[row, start: start + n] = torch.tensor(e.input_ids)
        mask[row, start: start + n] = 1
        if types is not None:
            types[row, start: start + n] = torch.tensor(e.token_type_ids)
        reads += [row * width + start + offset for offset in e.read_offsets]
    return BatchPlan(ids, position_ids_from_mask(mask), mask, torch.tensor(reads, dtype=torch.long), types,
                     int(mask.sum()))


# -- packed plans with shared prefixes (causal backbones) ----------------------------------------------------
@dataclass
class Segment:
    """A group of sequences laid out as [shared prefix | suffix 1 | ... | suffix K].

    tokens, positions, branch: one entry per token; branch 0 is the prefix, k + 1 the k-th suffix.
    reads: offsets inside the segment where each sequence's scores are read (its last token, or its steps'
        separators), in input order, flattened.
    """

    tokens: list[int]
    positions: list[int]
    branch: list[int]
    reads: list[int]

    def __len__(self) -> int:
        return len(self.tokens)


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, leaving every sequence at least one token of its own
    (its score is read at its own last token)."""
    if len(sequences) < 2:
        return 0
    n = min(len(s) for s in sequences) - 1
    first = sequences[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in sequences[1:]):
            return i
    return max(n, 0)


def make_segment(sequences: Sequence[Sequence[int]], reads: Sequence[Sequence[int]] | None = None) -> Segment:
    """reads: per sequence, the offsets (in its own tokens) to read; default its last token. A read inside the
    shared prefix is read there: the prefix's tokens see exactly what they would see alone."""
    reads = reads or [[len(s) - 1] for s in sequences]
    p = shared_prefix_length(sequences)
    tokens, positions, branch, out = list(sequences[0][:p]), list(range(p)), [0] * p, []
    for k, seq in enumerate(sequences):
        start = len(tokens)
        suffix = seq[p:]
        tokens += suffix
        positions += range(p, p + len(suffix))
        branch += [k + 1] * len(suffix)
        out += [j if j < p else start + j - p for j in reads[k]]
    return Segment(tokens, positions, branch, out)


def segment_tokens(group: Sequence[Encoded], share: bool) -> int:
    """Tokens a group costs: with a shared prefix counted once, or every sequence whole."""
    if not share:
        return sum(len(e.input_ids) for e in group)
    seqs = [e.input_ids for e in group]
    p = shared_prefix_length(seqs)
    return p + sum(len(s) - p for s in seqs)


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """First-fit decreasing: indices of the segments in each row, no row over `width` tokens (a longer
    segment gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def plan_packed(groups: Sequence[Sequence[Encoded]], pad_id: int, *, share: bool = True,
                width: int | None = None) -> BatchPlan:
    """Groups as segments (a shared prefix when `share`), packed into rows of at most `width` tokens
    (default: the longest segment), right-padded, with a block mask.

    Token i may attend to token j when both are in the same segment, j <= i, and j is in the prefix or in
    i's own suffix. Padding tokens attend to each other only, so no softmax row is empty.
    """
    segments = [make_segment([e.input_ids for e in g], [e.read_offsets for e in g]) if share
                else _concat([make_segment([e.input_ids], [e.read_offsets]) for e in g]) for g in groups]
    longest = max(len(s) for s in segments)
    rows = pack_rows([len(s) for s in segments], max(width or 0, longest))
    row_width = max(sum(len(segments[i]) for i in row) for row in rows)

    n = len(rows)
    ids = torch.full((n, row_width), pad_id, dtype=torch.long)
    pos = torch.zeros((n, row_width), dtype=torch.long)
    seg_id = torch.full((n, row_width), -1, dtype=torch.long)
    branch = torch.zeros((n, row_width), dtype=torch.long)
    ends: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            s = segments[i]
            span = slice(col, col + len(s))
            ids[r, span] = torch.tensor(s.tokens)
            pos[r, span] = torch.tensor(s.positions)
            seg_id[r, span] = i
            branch[r, span] = torch.tensor(s.branch)
            ends[i] = [r * row_width + col + e for e in s.reads]
            col += len(s)
    same_segment = seg_id[:, :, None] == seg_id[:, None, :]
    causal = torch.ones(row_width, row_width, dtype=torch.bool).tril_()
    visible = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    mask = (same_segment & causal & visible)[:, None]  # (rows, 1, width, width)
    score_index = torch.tensor([e for i in range(len(segments)) for e in ends[i]], dtype=torch.long)
    return BatchPlan(ids, pos, mask, score_index, None, int((seg_id >= 0).sum()))


def _concat(segments: Sequence[Segment]) -> Segment:
    """Independent sequences as one segment with one branch each and no shared prefix."""
    tokens, positions, branch, reads = [], [], [], []
    for k, s in enumerate(segments):
        reads += [len(tokens) + j for j in s.reads]
        tokens += s.tokens
        positions += s.positions
        branch += [k + 1] * len(s)
    return Segment(tokens, positions, branch, reads)


# -- token-budget batches -------------------------------------------------------------------------------------
def budget_batches(widths: Sequence[int], batch_tokens: int, *, rows: Sequence[int] | None = None,
                   max_items: int | None = None, max_padding: float | None = None) -> list[list[int]]:
    """Indices of items per batch, longest first, each batch within `batch_tokens` computed tokens.

    rows given (padded plans): item i is rows[i] rows of widths[i] tokens and a batch costs (its rows x its
    widest item). rows None (packed plans): a batch costs the sum of its widths. An item over the budget
    alone gets a batch of its own. Longest first, so the first batch shows at once whether the budget fits
    in memory.
    max_padding (padded plans): also start a new batch where the next item is more than this fraction shorter
    than the batch's width, once the batch holds 1/16 of the budget (so a tail of short items shares a pass
    instead of taking one each). A forward pass of a thousand tokens or more runs the matrix products about as
    fast per token as one of the whole budget (on a CPU), so batches of similar lengths cost little more to run
    and compute little padding.
    """
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    n_rows = tokens = 0
    for i in order:
        padded = False
        if rows is not None:
            width = widths[batch[0]] if batch else widths[i]
            cost = (n_rows + rows[i]) * width
            padded = (max_padding is not None and widths[i] < (1 - max_padding) * width
                      and n_rows * width >= batch_tokens // 16)
        else:
            cost = tokens + widths[i]
        if batch and (cost > batch_tokens or padded or (max_items is not None and len(batch) >= max_items)):
            batches.append(batch)
            batch, n_rows, tokens = [], 0, 0
        batch.append(i)
        n_rows += rows[i] if rows is not None else 1
        tokens += widths[i]
    if batch:
        batches.append(batch)
    return batches


class Planner:
    """The best plan a reward model allows: shared-prefix packing for causal backbones that pass the
    equivalence self-check (`RewardModel.supports_prefix_sharing`), padded rows otherwise.

    groups: each a list of Encoded sequences that may share a prefix (a record's responses, a prompt's
    best-of-N candidates); a plan's scores come out in group order, sequence by sequence.
    """

    def __init__(self, model, *, batch_tokens: int = DEFAULT_BATCH_TOKENS, share_prefix: bool | None = None,
                 max_batch_size: int | None = None):
        self.pad_id = model.tokenizer.pad_token_id
        self.padding_side = model.meta.padding_side
        self.packed = model.supports_prefix_sharing() if share_prefix is not False else False
        if share_prefix and not self.packed:
            raise RewardkitError(
                "share_prefix: this backbone cannot share a prompt's tokens between responses (it is an encoder, "
                "or its scores change when its responses are packed into one row); leave share_prefix unset")
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size

    def plan(self, groups: Sequence[Sequence[Encoded]]) -> BatchPlan:
        if self.packed:
            return plan_packed(groups, self.pad_id)
        return plan_padded([e for g in groups for e in g], self.pad_id, self.padding_side)

    def batches(self, groups: Sequence[Sequence[Encoded]], *, max_padding: float | None = None) -> list[list[int]]:
        """Indices of groups per forward pass, within the token budget (and `max_batch_size` groups); padded
        plans also within `max_padding` (see budget_batches)."""
        if self.packed:
            return budget_batches([segment_tokens(g, share=True) for g in groups], self.batch_tokens,
                                  max_items=self.max_batch_size)
        return budget_batches([max(len(e.input_ids) for e in g) for g in groups], self.batch_tokens,
                              rows=[len(g) for g in groups], max_items=self.max_batch_size, max_padding=max_padding)
