"""The batch planner on its own (no model): shared prefixes, segments, row packing, token budgets, and the
packed plan's mask, positions and score positions checked against rules written out independently here."""

import random
from types import SimpleNamespace

import pytest
import torch

from rewardkit.batching import (
    BatchPlan,
    Planner,
    budget_batches,
    make_segment,
    pack_rows,
    plan_packed,
    plan_padded,
    segment_tokens,
    shared_prefix_length,
)
from rewardkit.text import Encoded

PAD = 0


def enc(ids, types=None):
    return Encoded(list(ids), types, 0, len(ids))


def common_prefix(seqs):
    """The reference rule: the longest common prefix, capped so every sequence keeps one token of its own."""
    if len(seqs) < 2:
        return 0
    n = 0
    while n < min(len(s) for s in seqs) - 1 and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def random_groups(rng, n_groups, *, vocab=50, max_prefix=12, max_suffix=9, max_k=4):
    """Groups of token lists (ids >= 1, so none is the pad id 0) that share a random prefix; some groups have
    identical sequences, sequences that are prefixes of each other, or nothing in common."""
    groups = []
    for _ in range(n_groups):
        prefix = [rng.randrange(1, vocab) for _ in range(rng.randrange(0, max_prefix))]
        k = rng.randrange(1, max_k + 1)
        seqs = [prefix + [rng.randrange(1, vocab) for _ in range(rng.randrange(1, max_suffix))] for _ in range(k)]
        kind = rng.random()
        if kind < 0.15 and k > 1:
            seqs[1] = list(seqs[0])  # identical responses
        elif kind < 0.3 and k > 1 and len(seqs[0]) > 1:
            seqs[1] = seqs[0][:-1]  # one sequence is a prefix of another
        groups.append(seqs)
    return groups


# -- shared_prefix_length / make_segment -------------------------------------------------------------------
def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical: each keeps its last token
    assert shared_prefix_length([[7], [7]]) == 0
    assert shared_prefix_length([[1, 2], [1, 2, 3, 4]]) == 1  # a prefix of the other keeps one token
    assert shared_prefix_length([[1, 2, 3, 4]]) == 0  # a single sequence has nothing to share
    assert shared_prefix_length([[1, 2, 3], [9, 2, 3]]) == 0  # differing first token
    assert shared_prefix_length([[1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 2, 9, 4, 5]]) == 2  # the earliest split
    rng = random.Random(0)
    for seqs in random_groups(rng, 300):
        p = shared_prefix_length(seqs)
        assert p == common_prefix(seqs), seqs
        assert all(len(s) - p >= 1 for s in seqs)


def test_make_segment_positions_branches_and_ends():
    s = make_segment([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 4]])
    assert s.tokens == [1, 2, 3, 4, 5, 3, 4]
    assert s.positions == [0, 1, 2, 3, 2, 2, 3]
    assert s.branch == [0, 0, 1, 1, 2, 3, 3]
    assert s.reads == [3, 4, 6]
    assert len(s) == 7

    single = make_segment([[5, 6, 7]])
    assert (single.tokens, single.positions, single.branch, single.reads) == ([5, 6, 7], [0, 1, 2], [1, 1, 1], [2])

    rng = random.Random(1)
    for seqs in random_groups(rng, 200):
        s = make_segment(seqs)
        p = common_prefix(seqs)
        assert len(s) == p + sum(len(q) - p for q in seqs) == segment_tokens([enc(q) for q in seqs], share=True)
        for k, q in enumerate(seqs):
            # every sequence is recovered from the prefix plus its own branch, at the right positions
            own = [i for i in range(len(s)) if s.branch[i] in (0, k + 1)]
            assert [s.tokens[i] for i in own] == q
            assert [s.positions[i] for i in own] == list(range(len(q)))
            assert s.reads[k] == own[-1]


def test_segment_tokens_without_sharing_counts_every_token():
    group = [enc([1, 2, 3, 4]), enc([1, 2, 5])]
    assert segment_tokens(group, share=False) == 7
    assert segment_tokens(group, share=True) == 2 + 2 + 1


# -- pack_rows / budget_batches --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_pack_rows_respects_width_and_places_every_segment_once(seed):
    rng = random.Random(seed)
    width = rng.randrange(5, 40)
    lengths = [rng.randrange(1, 50) for _ in range(rng.randrange(1, 30))]
    rows = pack_rows(lengths, width)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        total = sum(lengths[i] for i in row)
        assert total <= width or (len(row) == 1 and lengths[row[0]] > width), (row, total, width)
    # first-fit: no two rows could have been one
    totals = sorted(sum(lengths[i] for i in row) for row in rows)
    assert len(rows) == 1 or totals[0] + totals[1] > width


def test_pack_rows_fits_everything_in_one_row_when_it_can():
    assert pack_rows([3, 4, 5], 12) == [[2, 1, 0]]
    assert sorted(map(sorted, pack_rows([6, 6, 6], 12))) == [[0, 1], [2]]


def check_batches(batches, widths, budget, rows=None, max_items=None):
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(widths)))  # every index exactly once
    assert [widths[i] for i in flat] == sorted(widths, reverse=True)  # longest first
    for b in batches:
        if rows is not None:
            cost = sum(rows[i] for i in b) * max(widths[i] for i in b)
        else:
            cost = sum(widths[i] for i in b)
        assert cost <= budget or len(b) == 1, (b, cost, budget)
        if max_items is not None:
            assert len(b) <= max_items


@pytest.mark.parametrize("seed", range(20))
def test_budget_batches_padded_and_packed(seed):
    rng = random.Random(seed)
    n = rng.randrange(1, 40)
    widths = [rng.randrange(1, 100) for _ in range(n)]
    rows = [rng.randrange(1, 6) for _ in range(n)]
    budget = rng.randrange(50, 600)
    max_items = rng.choice([None, 1, 3])
    check_batches(budget_batches(widths, budget, rows=rows, max_items=max_items), widths, budget, rows, max_items)
    check_batches(budget_batches(widths, budget, max_items=max_items), widths, budget, None, max_items)


def test_budget_batches_fills_batches_and_isolates_oversized_items():
    widths = [10, 40, 20, 30]
    assert budget_batches(widths, 1000) == [[1, 3, 2, 0]]  # all fit: one batch, longest first
    assert budget_batches(widths, 1000, max_items=2) == [[1, 3], [2, 0]]
    assert budget_batches(widths, 60) == [[1], [3, 2, 0]]  # packed: sums 40 | 30 + 20 + 10
    # padded: rows x widest; the 40-wide item of 3 rows is over budget alone and gets its own batch
    assert budget_batches(widths, 100, rows=[1, 3, 2, 1]) == [[1], [3, 2], [0]]
    assert budget_batches(widths, 100, rows=[1, 1, 1, 1]) == [[1, 3], [2, 0]]  # 2 x 40 | 2 x 20
    assert budget_batches([], 100) == []


def test_budget_batches_max_padding_keeps_similar_widths_together():
    widths = [128] * 8 + [100] * 8 + [20] * 3
    rows = [1] * len(widths)
    # without it, the budget alone puts the 100-wide rows in the 128-wide batch (28 padding tokens each)
    assert budget_batches(widths, 2048, rows=rows) == [list(range(16)), [16, 17, 18]]
    assert budget_batches(widths, 2048, rows=rows, max_padding=0.1) == [list(range(8)), list(range(8, 16)),
                                                                        [16, 17, 18]]
    # a batch under 1/16 of the budget takes shorter items anyway: a tail of short ones shares a pass
    assert budget_batches([128, 20, 20], 16384, rows=[1, 1, 1], max_padding=0.1) == [[0, 1, 2]]
    for seed in range(10):
        rng = random.Random(seed)
        n = rng.randrange(1, 40)
        widths, rows = [rng.randrange(1, 100) for _ in range(n)], [rng.randrange(1, 6) for _ in range(n)]
        budget = rng.randrange(50, 600)
        check_batches(budget_batches(widths, budget, rows=rows, max_padding=0.1), widths, budget, rows, None)


# -- plan_packed ------------------------------------------------------------------------------------------------
def layout(plan, groups, share):
    """Where each group's segment lies, found from the score positions and lengths computed here (not from the
    mask): returns (row, first column, prefix length, per-sequence suffix lengths) per group."""
    width = plan.input_ids.shape[1]
    out, k = [], 0
    for seqs in groups:
        p = common_prefix(seqs) if share else 0
        suffixes = [len(s) - p for s in seqs]
        last = int(plan.score_index[k + len(seqs) - 1])
        row, end_col = divmod(last, width)
        out.append((row, end_col + 1 - p - sum(suffixes), p, suffixes))
        k += len(seqs)
    return out


def reference_labels(plan, groups, share):
    """Per token: (group, branch) for real tokens (branch 0 = shared prefix, k + 1 = sequence k's own tokens),
    None for padding; and the expected input ids and positions."""
    rows, width = plan.input_ids.shape
    labels = [[None] * width for _ in range(rows)]
    ids = torch.full((rows, width), PAD, dtype=torch.long)
    pos = torch.zeros((rows, width), dtype=torch.long)
    for g, (seqs, (row, start, p, suffixes)) in enumerate(zip(groups, layout(plan, groups, share))):
        col = start
        for i in range(p):
            labels[row][col], ids[row, col], pos[row, col] = (g, 0), seqs[0][i], i
            col += 1
        for k, seq in enumerate(seqs):
            for i in range(p, len(seq)):
                assert labels[row][col] is None, "two segments overlap"
                labels[row][col], ids[row, col], pos[row, col] = (g, k + 1), seq[i], i
                col += 1
    return labels, ids, pos


def check_packed(plan, groups, share, width=None):
    seqs = [s for g in groups for s in g]
    longest = max(len(make_segment(g)) if share else sum(map(len, g)) for g in groups)
    assert plan.packed and plan.attention_mask.dtype == torch.bool
    rows, row_width = plan.input_ids.shape
    assert plan.attention_mask.shape == (rows, 1, row_width, row_width)
    assert row_width <= max(width or 0, longest)
    assert plan.score_index.shape == (len(seqs),)

    labels, ids, pos = reference_labels(plan, groups, share)
    assert torch.equal(plan.input_ids, ids)
    assert torch.equal(plan.position_ids[ids != PAD], pos[ids != PAD])
    assert plan.input_ids.flatten()[plan.score_index].tolist() == [s[-1] for s in seqs]
    assert plan.position_ids.flatten()[plan.score_index].tolist() == [len(s) - 1 for s in seqs]
    n_real = sum(lab is not None for row in labels for lab in row)
    assert plan.real_tokens == n_real == sum(segment_tokens([enc(s) for s in g], share) for g in groups)

    mask = plan.attention_mask[:, 0]
    for r in range(rows):
        assert mask[r].any(-1).all(), "a token attends to nothing (empty softmax row)"
        for i in range(row_width):
            for j in range(row_width):
                a, b = labels[r][i], labels[r][j]
                if a is None:  # padding: never seen by real tokens; sees padding only
                    assert not mask[r, j, i] or b is None
                    assert not mask[r, i, j] or b is None
                    continue
                expected = b is not None and a[0] == b[0] and j <= i and (b[1] == 0 or b[1] == a[1])
                assert bool(mask[r, i, j]) == expected, (r, i, j, a, b)


def test_plan_packed_small_example():
    groups = [[[1, 2, 3, 4], [1, 2, 5]], [[7, 8]]]
    plan = plan_packed([[enc(s) for s in g] for g in groups], PAD)
    # segment 0: [1 2 | 3 4 | 5] (5 tokens), segment 1: [7 8] (2 tokens): separate rows of width 5
    assert plan.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, PAD, PAD, PAD]]
    assert plan.position_ids[0].tolist() == [0, 1, 2, 3, 2]
    assert plan.score_index.tolist() == [3, 4, 6]
    assert plan.real_tokens == 7 and plan.computed_tokens == 10
    assert plan.attention_mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0],
                                                        [1, 1, 0, 0, 0],
                                                        [1, 1, 1, 0, 0],
                                                        [1, 1, 1, 1, 0],
                                                        [1, 1, 0, 0, 1]]
    check_packed(plan, groups, share=True)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_plan_packed_matches_the_reference_rule(seed, share):
    rng = random.Random(seed)
    groups = random_groups(rng, rng.randrange(1, 7))
    width = rng.choice([None, 10, 40, 80])
    plan = plan_packed([[enc(s) for s in g] for g in groups], PAD, share=share, width=width)
    check_packed(plan, groups, share, width)


def test_plan_packed_packs_several_groups_into_one_row():
    groups = [[[1, 2, 3], [1, 2, 4]], [[5, 6]], [[8, 9, 10, 11]]]
    plan = plan_packed([[enc(s) for s in g] for g in groups], PAD, width=10)
    assert plan.input_ids.shape == (1, 10)  # segments of 4 + 2 + 4 tokens in one row, no padding
    assert plan.real_tokens == plan.computed_tokens == 10
    check_packed(plan, groups, share=True, width=10)
    assert plan_packed([[enc(s) for s in g] for g in groups], PAD).input_ids.shape == (3, 4)  # default width


# -- plan_padded ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_plan_padded_score_index_points_at_the_last_real_token(side):
    eos = 9
    seqs = [[3, 4, eos], [5, eos], [6, 7, 8, 2, eos], [eos]]
    pad = eos  # a pad id equal to the EOS id must not move the score position
    plan = plan_padded([enc(s, [0] * (len(s) - 1) + [1]) for s in seqs], pad, side)
    width = 5
    assert plan.input_ids.shape == (4, width) and not plan.packed
    cols = [len(s) - 1 for s in seqs] if side == "right" else [width - 1] * 4
    assert plan.score_index.tolist() == [r * width + c for r, c in enumerate(cols)]
    assert plan.input_ids.flatten()[plan.score_index].tolist() == [s[-1] for s in seqs]
    assert plan.attention_mask.flatten()[plan.score_index].tolist() == [1] * 4
    assert plan.real_tokens == sum(map(len, seqs)) == int(plan.attention_mask.sum())
    for r, s in enumerate(seqs):
        real = plan.attention_mask[r].bool()
        assert plan.input_ids[r][real].tolist() == s
        assert plan.position_ids[r][real].tolist() == list(range(len(s)))
        assert plan.token_type_ids[r][real].tolist() == [0] * (len(s) - 1) + [1]
        n_pad = width - len(s)
        assert real.tolist() == ([True] * len(s) + [False] * n_pad if side == "right"
                                 else [False] * n_pad + [True] * len(s))
    assert set(plan.model_inputs()) == {"input_ids", "attention_mask", "position_ids", "score_index",
                                        "token_type_ids"}


def test_batch_plan_moves_and_reports():
    plan = plan_packed([[enc([1, 2, 3]), enc([1, 2, 4])]], PAD)
    moved = plan.to("cpu")
    assert isinstance(moved, BatchPlan) and moved.packed and moved.real_tokens == plan.real_tokens
    assert torch.equal(moved.attention_mask, plan.attention_mask)
    assert "token_type_ids" not in plan.model_inputs()


# -- Planner (with a stand-in model) ------------------------------------------------------------------------
def fake_model(supports: bool):
    calls = []

    def supports_prefix_sharing():
        calls.append(1)
        return supports
    model = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=PAD), meta=SimpleNamespace(padding_side="left"),
                            supports_prefix_sharing=supports_prefix_sharing)
    return model, calls


def test_planner_follows_the_model_check_unless_told():
    model, calls = fake_model(True)
    assert Planner(model).packed and calls == [1]
    assert not Planner(model, share_prefix=False).packed and calls == [1]  # an explicit choice skips the check
    model, _ = fake_model(False)
    assert not Planner(model).packed


@pytest.mark.parametrize("supports", [True, False])
def test_planner_batches_and_plans(supports):
    rng = random.Random(3)
    groups = [[enc(s) for s in g] for g in random_groups(rng, 15)]
    planner = Planner(fake_model(supports)[0], batch_tokens=60, max_batch_size=4)
    batches = planner.batches(groups)
    assert sorted(i for b in batches for i in b) == list(range(len(groups))) and len(batches) > 1
    for b in batches:
        assert len(b) <= 4
        plan = planner.plan([groups[i] for i in b])
        assert plan.packed == supports
        seqs = [e.input_ids for i in b for e in groups[i]]
        assert plan.input_ids.flatten()[plan.score_index].tolist() == [s[-1] for s in seqs]
        if supports:
            assert plan.real_tokens <= 60 or len(b) == 1
        else:
            assert plan.computed_tokens <= 60 or len(b) == 1
            assert plan.attention_mask[:, -1].all()  # the stand-in model pads on the left
