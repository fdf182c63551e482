"""Process rewards, pure math: step aggregation (METHODS.md §4.3 Checks), splitting a solution into steps,
outcome labels from step labels, and the step BCE loss (§4.2)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardkit.errors import RewardkitError
from rewardkit.losses import step_bce
from rewardkit.steps import AGGREGATIONS, DEFAULT_AGGREGATION, aggregate, last_step_only, outcome_label, split_steps

PROBS = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
STEP_PROBS = st.lists(PROBS, min_size=1, max_size=30)


# -- aggregation -----------------------------------------------------------------------------------------------
def test_rules_and_default():
    assert AGGREGATIONS == ("product", "min", "mean", "last")
    assert DEFAULT_AGGREGATION in AGGREGATIONS
    p = [0.9, 0.5, 0.8]
    assert aggregate(p, "product") == pytest.approx(0.36)
    assert aggregate(p, "min") == 0.5
    assert aggregate(p, "mean") == pytest.approx(2.2 / 3)
    assert aggregate(p, "last") == 0.8
    assert aggregate(p) == aggregate(p, DEFAULT_AGGREGATION)


@settings(max_examples=200, deadline=None)
@given(STEP_PROBS)
def test_product_le_min_le_mean(p):
    product, low, mean = aggregate(p, "product"), aggregate(p, "min"), aggregate(p, "mean")
    assert 0.0 <= product <= low  # exact: multiplying by a factor <= 1 never rounds up
    assert low <= mean + 1e-12  # the mean's summation may round by a few ulp
    assert mean <= max(p) + 1e-12
    assert low <= aggregate(p, "last") <= max(p)


@settings(max_examples=100, deadline=None)
@given(PROBS)
def test_all_rules_agree_for_one_step(p):
    assert {aggregate([p], rule) for rule in AGGREGATIONS} == {p}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), PROBS), min_size=1, max_size=20))
def test_unscored_steps_are_left_out(p):
    scored = [v for v in p if v is not None]
    for rule in AGGREGATIONS:
        got = aggregate(p, rule)
        if not scored:
            assert math.isnan(got)
        else:
            assert got == aggregate(scored, rule)


def test_none_entries_and_all_none():
    assert aggregate([0.9, None, 0.2], "mean") == pytest.approx(0.55)
    assert aggregate([0.9, 0.3, None], "last") == 0.3  # the last scored step (trailing steps cut by truncation)
    assert aggregate([None, 0.4, 0.5], "product") == pytest.approx(0.2)
    for rule in AGGREGATIONS:
        assert math.isnan(aggregate([None, None], rule))
        assert math.isnan(aggregate([], rule))


@pytest.mark.parametrize("rule", ["median", "MIN", "", "sum"])
def test_unknown_rule_raises(rule):
    with pytest.raises(RewardkitError, match="unknown step aggregation"):
        aggregate([0.5], rule)
    with pytest.raises(RewardkitError):
        aggregate([], rule)  # checked before the (empty) scores


# -- splitting a solution into steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,steps", [
    ("Step 1.\n\nStep 2.", ["Step 1.", "Step 2."]),
    ("a\n\n\n\nb", ["a", "b"]),                          # a run of blank lines is one break
    ("a\n  \n\tb", ["a", "b"]),                          # a whitespace-only line is blank
    ("a\nb", ["a\nb"]),                                  # a single newline stays inside a step
    ("  one paragraph  ", ["one paragraph"]),
    ("\n\nA\n\nB\n\n", ["A", "B"]),                     # leading / trailing blank lines make no empty step
    ("a\r\n\r\nb", ["a", "b"]),                          # Windows line endings
    ("x = 1\n  y = 2\n\nSo 3.", ["x = 1\n  y = 2", "So 3."]),
])
def test_split_steps(text, steps):
    assert split_steps(text) == steps


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_split_steps_always_gives_one_step(text):
    assert len(split_steps(text)) == 1


# -- outcome labels ---------------------------------------------------------------------------------------------
def processbench_labels(n: int, first_error: int) -> list:
    """ProcessBench-style labels: steps before the first error correct, the error wrong, later steps unlabeled
    (first_error == -1: every step correct)."""
    if first_error < 0:
        return [1.0] * n
    return [1.0] * first_error + [0.0] + [None] * (n - first_error - 1)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_outcome_of_processbench_patterns(n):
    assert outcome_label(processbench_labels(n, -1)) == 1.0
    for k in range(n):
        labels = processbench_labels(n, k)
        assert outcome_label(labels) == 0.0
        assert last_step_only(labels) == [None] * (n - 1) + [0.0]
    assert last_step_only(processbench_labels(n, -1)) == [None] * (n - 1) + [1.0]


@pytest.mark.parametrize("labels,outcome", [
    ([1, 1, 1], 1.0),
    ([1, 0, 1], 0.0),          # a wrong step anywhere makes the solution wrong
    ([0], 0.0),
    ([1, None, 1], None),      # an unlabeled step and no wrong one: unknown
    ([None, None], None),
    ([], None),
    ([1, None, 0], 0.0),       # wrong is wrong, whatever is unlabeled
    ([0.9, 0.8], 0.8),         # soft labels: the last step's own value when no step is wrong
    ([0.9, 0.3, 0.9], 0.0),    # a soft label under 0.5 is a wrong step
    ([0.5], 0.5),              # 0.5 is not wrong
    ([1, 0.49], 0.0),
])
def test_outcome_label(labels, outcome):
    got = outcome_label(labels)
    assert got == outcome and (got is None or isinstance(got, float))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), PROBS), min_size=1, max_size=12))
def test_last_step_only_keeps_the_length_and_labels_only_the_last_step(labels):
    out = last_step_only(labels)
    assert len(out) == len(labels)
    assert out[:-1] == [None] * (len(labels) - 1)
    assert out[-1] == outcome_label(labels)


# -- step BCE ----------------------------------------------------------------------------------------------------
D = torch.float64


def hand_bce(logits, target, mask, denominator=None):
    total = 0.0
    for x, y, m in zip(logits, target, mask):
        if m:
            p = 1.0 / (1.0 + math.exp(-x))
            total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    count = sum(bool(m) for m in mask) if denominator is None else denominator
    return total / max(count, 1)


@pytest.mark.parametrize("target", [[1.0, 0.0, 1.0, 0.0], [0.75, 0.1, 1.0, 0.5]], ids=["hard", "soft"])
def test_step_bce_equals_hand_computation(target):
    logits = [0.3, -1.2, 2.0, -0.4]
    mask = [True, True, True, True]
    loss = step_bce(torch.tensor(logits, dtype=D), torch.tensor(target, dtype=D), torch.tensor(mask))
    assert loss.item() == pytest.approx(hand_bce(logits, target, mask), rel=1e-12)
    masked = [True, False, True, False]
    loss = step_bce(torch.tensor(logits, dtype=D), torch.tensor(target, dtype=D), torch.tensor(masked))
    assert loss.item() == pytest.approx(hand_bce(logits, target, masked), rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-8, 8), PROBS, st.booleans()), min_size=1, max_size=10))
def test_step_bce_matches_hand_and_its_gradient_is_sigmoid_minus_target(rows):
    logits, target, mask = (list(c) for c in zip(*rows))
    x = torch.tensor(logits, dtype=D, requires_grad=True)
    loss = step_bce(x, torch.tensor(target, dtype=D), torch.tensor(mask))
    assert loss.item() == pytest.approx(hand_bce(logits, target, mask), rel=1e-9, abs=1e-12)
    loss.backward()
    count = max(sum(mask), 1)
    expected = [(1 / (1 + math.exp(-v)) - y) / count if m else 0.0 for v, y, m in zip(logits, target, mask)]
    assert x.grad.tolist() == pytest.approx(expected, abs=1e-12)


def test_masked_steps_get_zero_gradient_whatever_their_target():
    x = torch.tensor([0.5, -3.0, 1.5], dtype=D, requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 7.0], dtype=D)  # any value where the mask is False
    mask = torch.tensor([True, False, False])
    loss = step_bce(x, target, mask)
    assert torch.isfinite(loss)
    loss.backward()
    assert x.grad[1:].tolist() == [0.0, 0.0] and x.grad[0].item() != 0.0
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))


def test_denominator_replaces_the_labelled_count():
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=D, requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.25], dtype=D)
    mask = torch.tensor([True, True, False])
    own = step_bce(logits, target, mask)
    glob = step_bce(logits, target, mask, denominator=8)
    assert glob.item() == pytest.approx(own.item() * 2 / 8, rel=1e-12)
    assert glob.item() == pytest.approx(hand_bce([0.3, -1.2, 2.0], [1.0, 0.0, 0.25], [1, 1, 0], denominator=8))
    assert step_bce(logits, target, mask, denominator=torch.tensor(8)).item() == pytest.approx(glob.item())
    # two halves of a batch with the global count sum to the whole batch's loss (same gradient either way)
    m1, m2 = torch.tensor([True, False, False]), torch.tensor([False, True, False])
    parts = step_bce(logits, target, m1, denominator=2) + step_bce(logits, target, m2, denominator=2)
    assert parts.item() == pytest.approx(own.item(), rel=1e-12)


def test_no_labelled_step_gives_zero_attached_to_the_graph():
    x = torch.tensor([0.3, -1.2], requires_grad=True)
    loss = step_bce(x, torch.tensor([1.0, 0.0]), torch.tensor([False, False]))
    assert loss.item() == 0.0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shapes", [((3,), (2,), (3,)), ((3,), (3,), (2,)), ((2, 2), (4,), (4,))])
def test_step_bce_shape_mismatch_raises(shapes):
    a, b, c = shapes
    with pytest.raises(ValueError, match="one shape"):
        step_bce(torch.zeros(a), torch.zeros(b), torch.ones(c, dtype=torch.bool))


def test_step_bce_accepts_float_masks_and_keeps_the_logits_dtype():
    x = torch.tensor([0.2, -0.7], dtype=torch.float32)
    a = step_bce(x, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
    b = step_bce(x, torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    assert a.dtype == torch.float32 and a.item() == b.item()
