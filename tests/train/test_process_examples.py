"""Process-model training examples: which step labels survive truncation, for step and outcome-only training."""

import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.text import Encoded
from rewardkit.train.batches import build_examples


class CuttingEncoder:
    """Encodes a response's steps with one read per step, keeping only the first `keep` (as truncation does)."""

    def __init__(self, keep):
        self.keep = keep

    def encode(self, prompt, response):
        n = len(response.steps)
        kept = min(self.keep, n)
        return Encoded(list(range(10 * kept + 3)), None, 3, 10 * n, 0, 10 * (n - kept),
                       [3 + 10 * k + 9 for k in range(kept)], n)


def record(labels, id="r"):
    steps = [f"step {k}" for k in range(len(labels))]
    return PreferenceRecord(id, user_prompt("q"), [Response("\n\n".join(steps), steps)], step_labels=[labels])


@pytest.mark.parametrize("labels,keep,step_labels,outcome_labels", [
    # nothing cut: every label / the outcome on the last step
    ([1.0, 1.0, 0.0, None], 4, [1.0, 1.0, 0.0, None], [None, None, None, 0.0]),
    ([1.0, 1.0, 1.0], 3, [1.0, 1.0, 1.0], [None, None, 1.0]),
    # the wrong step is kept: the cut solution is known to be wrong
    ([1.0, 0.0, None, None], 2, [1.0, 0.0], [None, 0.0]),
    # only correct steps kept: the outcome of the cut solution is unknown, so nothing is trained on
    ([1.0, 1.0, 0.0, None], 2, [1.0, 1.0], None),
    ([1.0, 1.0, 1.0], 2, [1.0, 1.0], None),
])
def test_truncated_steps_lose_their_labels_and_outcomes_stay_honest(labels, keep, step_labels, outcome_labels):
    encoder = CuttingEncoder(keep)
    examples, unusable = build_examples([record(labels)], encoder, process=True)
    assert unusable == 0 and examples[0].step_labels == [step_labels]
    examples, unusable = build_examples([record(labels)], encoder, process=True, last_step_only=True)
    if outcome_labels is None:
        assert examples == [] and unusable == 1
    else:
        assert unusable == 0 and examples[0].step_labels == [outcome_labels]
        assert examples[0].n_step_labels == 1
