"""The METHODS.md Checks of §2.1 (masked attribute regression), §2.2 (learned static weights) and §3.1 (ODIN's
terms) on the pure loss functions, the batch layout that routes a pair to its objective's head, and the config
shape of multi-objective runs."""

import math

import pytest
import torch

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.errors import DataError, RewardkitError
from rewardkit.multiobjective.heads import fit_static_weights
from rewardkit.losses import (
    bradley_terry,
    combine_objectives,
    compute_loss,
    from_helpsteer,
    inverse_static_weights,
    masked_mse,
    odin_length_loss,
    odin_orthogonality,
    pearson,
    static_weights,
    to_helpsteer,
)
from rewardkit.train import DataSource, load_config, save_config
from rewardkit.train.batches import build_examples, collate_examples

D = torch.float64


# -- §2.1 masked attribute regression ---------------------------------------------------------------------------
def test_masked_mse_is_the_mean_over_present_labels():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=D)
    target = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=D)
    mask = torch.tensor([[True, False], [True, True]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 4 + 16) / 3)
    assert masked_mse(pred, target, mask, denominator=7).item() == pytest.approx((1 + 4 + 16) / 7)


def test_values_at_masked_positions_do_not_change_the_loss_or_its_gradient():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 3, dtype=D, generator=g)
    target = torch.randn(6, 3, dtype=D, generator=g)
    mask = torch.rand(6, 3, generator=g) > 0.4
    grads = []
    for fill in (0.0, 1e6, float("nan")):
        p = pred.clone().requires_grad_(True)
        loss = masked_mse(p, torch.where(mask, target, torch.full_like(target, fill)), mask)
        loss.backward()
        grads.append((loss.item(), p.grad))
    for loss, grad in grads[1:]:
        # the gradient bit-exact: masked entries get an exact zero, the others the same arithmetic on the same values
        assert loss == pytest.approx(grads[0][0], abs=1e-12) and torch.equal(grad, grads[0][1])
    assert math.isfinite(grads[2][0])


def test_an_attribute_with_every_label_missing_gets_zero_gradient():
    pred = torch.randn(5, 3, dtype=D).requires_grad_(True)
    target = torch.full((5, 3), float("nan"), dtype=D)
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[:, 0] = mask[1:3, 2] = True
    target[mask] = 1.0
    masked_mse(pred, target, mask).backward()
    assert torch.all(pred.grad[:, 1] == 0) and torch.all(pred.grad[:, 0] != 0)
    assert torch.all(pred.grad[[0, 3, 4], 2] == 0) and torch.all(pred.grad[1:3, 2] != 0)
    nothing = pred.detach().clone().requires_grad_(True)
    loss = masked_mse(nothing, target, torch.zeros(5, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(nothing.grad == 0)  # no label at all: 0, never NaN


def test_helpsteer_rescale_round_trips():
    y = torch.arange(5, dtype=D)
    assert to_helpsteer(y).tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert from_helpsteer(to_helpsteer(y)).tolist() == pytest.approx(y.tolist())
    assert from_helpsteer(to_helpsteer(3)) == pytest.approx(3)


# -- §2.2 learned static weights ----------------------------------------------------------------------------------
def bt_pairs(n=4000, seed=0):
    """Pairs whose labels are sampled by BT from attribute 0; attributes 1 and 2 are unrelated noise."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 3, dtype=D, generator=g), torch.randn(n, 3, dtype=D, generator=g)
    a_wins = torch.rand(n, dtype=D, generator=g) < torch.sigmoid(a[:, 0] - b[:, 0])
    return torch.where(a_wins[:, None], a, b), torch.where(a_wins[:, None], b, a)


@pytest.mark.parametrize("nonnegative", [True, False])
def test_learned_weights_concentrate_on_the_attribute_that_is_the_true_bt_score(nonnegative):
    chosen, rejected = bt_pairs()
    w = fit_static_weights(chosen, rejected, nonneg=nonnegative).weights  # the one offline fit
    assert w[0] > 0.8 and abs(w[1]) < 0.1 and abs(w[2]) < 0.1
    assert w[0] / w.abs().sum() > 0.85
    assert w[0] == pytest.approx(1.0, abs=0.15)  # the BT scale of the generating score
    equal = torch.full((3,), 1 / 3, dtype=D)
    fitted_loss = bradley_terry(combine_objectives(chosen, w) - combine_objectives(rejected, w))
    assert fitted_loss < bradley_terry(combine_objectives(chosen, equal) - combine_objectives(rejected, equal))


def test_static_weights_parametrisation():
    w = torch.tensor([0.25, 1.0, 3.0], dtype=D)
    assert static_weights(inverse_static_weights(w)).tolist() == pytest.approx(w.tolist())
    assert torch.all(static_weights(torch.tensor([-30.0, 0.0, 30.0])) > 0)
    assert static_weights(w, nonnegative=False) is w
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    assert combine_objectives(r, w).item() == pytest.approx(0.25 + 2 + 9)


# -- §3.1 ODIN ---------------------------------------------------------------------------------------------------
def test_odin_length_term():
    lengths = torch.tensor([3.0, 10.0, 7.0, 1.0, 5.0], dtype=D)
    noise = torch.tensor([0.3, -0.1, 0.2, 0.5, -0.9], dtype=D)
    assert pearson(2 * lengths + 1, lengths).item() == pytest.approx(1.0)
    assert pearson(torch.ones(5, dtype=D), lengths).item() == 0.0  # constant series: 0, not NaN
    # best case: r_Q uncorrelated with length, r_L exactly length
    uncorrelated = noise - pearson(noise, lengths) * noise.std() / lengths.std() * (lengths - lengths.mean())
    assert odin_length_loss(uncorrelated, lengths, lengths).item() == pytest.approx(-1.0, abs=1e-9)
    # the sign of rho(r_Q, len) does not matter; each quality head counts (their mean)
    assert odin_length_loss(-lengths, lengths, lengths).item() == pytest.approx(0.0, abs=1e-12)
    both = torch.stack([lengths, uncorrelated], dim=1)
    assert odin_length_loss(both, lengths, lengths).item() == pytest.approx(-0.5, abs=1e-9)
    # rho is scale-free: rescaling either reward leaves the term unchanged
    r_q, r_l = noise + 0.2 * lengths, noise * 0.5 + lengths
    base = odin_length_loss(r_q, r_l, lengths).item()
    assert odin_length_loss(5 * r_q + 2, 0.1 * r_l - 3, lengths).item() == pytest.approx(base)


def test_odin_orthogonality_on_mean_centred_unit_norm_weights():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    assert odin_orthogonality(w, 3 * w + 5).item() == pytest.approx(1.0)  # centred: the offset drops out
    assert odin_orthogonality(w, -w).item() == pytest.approx(1.0)
    assert odin_orthogonality(w, torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=D)).item() == pytest.approx(0.0)
    two = torch.stack([w, torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=D)])
    assert odin_orthogonality(two, w).item() == pytest.approx(0.5)


# -- routing pairs to their objective's head ----------------------------------------------------------------------
class FakeText:
    def encode(self, prompt, response):
        from rewardkit.text import Encoded

        response = response.content
        ids = list(range(len(response.split()) + 3))
        return Encoded(ids, None, 3, len(response.split()))


class FakePlanner:
    def plan(self, groups):
        return None


def record(id, objective=None, chosen=0, attributes=None, n=2):
    meta = {"objective": objective} if objective else {}
    return PreferenceRecord(id, user_prompt("q"), [Response("a " * (k + 1)) for k in range(n)], chosen=chosen,
                            attributes=attributes, meta=meta)


def test_pairs_read_their_objectives_slots_and_ratings_are_masked():
    records = [record("h", "helpful", chosen=1), record("s", "harmless", chosen=0, n=3),
               record("r", chosen=None, attributes=[{"harmless": 4, "verbose": 1}, {"helpful": None}])]
    examples, unusable = build_examples(records, FakeText(), ["helpful", "harmless"], attribute_scale="helpsteer")
    assert unusable == 0 and [ex.objective for ex in examples] == [0, 1, 0]
    _, labels = collate_examples(examples, FakePlanner(), n_objectives=2)
    # responses in plan order: h0 h1 | s0 s1 s2 | r0 r1; slot = response * 2 + objective
    assert labels.pairs.winner.tolist() == [1 * 2 + 0, 2 * 2 + 1, 2 * 2 + 1]
    assert labels.pairs.loser.tolist() == [0 * 2 + 0, 3 * 2 + 1, 4 * 2 + 1]
    assert labels.pairs.weight.tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert labels.n_pref == 2 and labels.n_ratings == 1
    assert labels.target_mask.tolist() == [[False, False]] * 5 + [[False, True], [False, False]]
    assert labels.targets[5, 1].item() == pytest.approx(to_helpsteer(4))
    assert labels.lengths.tolist() == [1, 2, 1, 2, 3, 1, 2]
    rewards = torch.arange(14, dtype=D)  # (7 responses x 2 objectives) flattened
    inputs = labels.pairs.to("cpu", rewards=rewards)
    assert inputs.delta().tolist() == [2.0 - 0.0, 5.0 - 7.0, 5.0 - 9.0]
    compute_loss("bt", inputs)  # the objective layer takes the slot layout as it is


def test_untagged_and_unknown_objectives_are_named_errors():
    with pytest.raises(DataError, match="record 'x'.*no objective"):
        build_examples([record("x")], FakeText(), ["a", "b"])
    with pytest.raises(DataError, match="record 'y'.*'c' is not among"):
        build_examples([record("y", "c")], FakeText(), ["a", "b"])
    examples, _ = build_examples([record("z"), record("t", "other")], FakeText(), ["only"])
    assert [ex.objective for ex in examples] == [0, 0]  # one objective: every preference trains it


# -- config -------------------------------------------------------------------------------------------------------
def test_data_entries_are_paths_or_tagged_files(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("objectives: [helpfulness, harmlessness]\n"
                    "data:\n  - {path: a.jsonl, objective: helpfulness}\n  - b.jsonl\n"
                    "eval_data: [{path: c.jsonl, objective: harmlessness}]\n"
                    "weights: {helpfulness: 0.7, harmlessness: 0.3}\n")
    cfg = load_config(path)
    assert cfg.data_sources() == [DataSource(path="a.jsonl", objective="helpfulness"), DataSource(path="b.jsonl")]
    assert cfg.data_paths() == ["a.jsonl", "b.jsonl"]
    assert cfg.eval_sources()[0].objective == "harmlessness"
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    plain = load_config(None, data=["x.jsonl"])
    assert plain.data == ["x.jsonl"] and plain.objectives is None  # single-objective runs are unchanged


@pytest.mark.parametrize("overrides,message", [
    (["data=[{path: a, objective: x}]"], "need the objectives field"),
    (["objectives=[a, b]", "data=[{path: a, objective: c}]"], r"\['c'\] are not among"),
    (["objectives=[a, b]", "data=[{path: a, objectve: a}]"], "objectve"),
    (["objectives=[a, a]"], "distinct"),
    (["objectives=[a, _length]"], "reserved"),
    (["objectives=[a, b]", "weights={a: 1}"], "one number per objective"),
    (["combination=learned"], "two or more objectives"),
    (["objectives=[a, b]", "combination=learned", "weights={a: 1, b: 0}"], "must be > 0"),
    (["combination=gated"], "field 'combination'"),
    (["attribute_weight=-1"], "field 'attribute_weight'"),
])
def test_invalid_multi_objective_configs_name_the_field(overrides, message):
    with pytest.raises(RewardkitError, match=message):
        load_config(None, overrides)


def test_the_two_objective_hh_example_config():
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[2] / "examples" / "train_hh_two_objectives.yaml")
    assert cfg.objectives == ["helpfulness", "harmlessness"] and cfg.model == "minilm"
    for sources in (cfg.data_sources(), cfg.eval_sources()):
        tags = {Path(s.path).parent.name: s.objective for s in sources}
        assert tags == {"helpful-base": "helpfulness", "helpful-online": "helpfulness",
                        "helpful-rejection-sampled": "helpfulness", "harmless-base": "harmlessness"}
    assert (cfg.split, cfg.eval_split) == ("train", "test")
