"""The training config: YAML, flags and key=value overrides; every mistake named before a model loads."""

import pytest

from rewardkit.errors import RewardkitError
from rewardkit.train import load_config, save_config


def test_yaml_then_flags_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: some/backbone\ndata: [a.jsonl]\nlr: 1.0e-5\nlora: {r: 8}\nepochs: 3\n")
    cfg = load_config(path, ["lr=2e-4", "lora.alpha=4", "eps=0.2"], epochs=2, loss="smoothed")
    assert (cfg.model, cfg.data, cfg.lr, cfg.epochs, cfg.loss, cfg.eps) == (
        "some/backbone", ["a.jsonl"], 2e-4, 2, "smoothed", 0.2)
    assert cfg.lora.r == 8 and cfg.lora.alpha == 4
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("overrides,message", [
    (["lrr=1"], "field 'lrr'"),
    (["lr=-1"], "field 'lr'"),
    (["loss=hinge"], "unknown loss 'hinge'"),
    (["loss=distill_soft"], "needs a teacher"),
    (["batch_size=10", "grad_accum=3"], "not divisible"),
    (["eps=0.7", "loss=smoothed"], "eps"),
    (["lora.r=0"], "field 'lora.r'"),
    (["split=test"], "field 'split'"),
    (["epochs"], "expected key=value"),
])
def test_invalid_configs_name_the_field(overrides, message):
    with pytest.raises(RewardkitError, match=message):
        load_config(None, overrides, model="does/not/exist")


def test_bad_files(tmp_path):
    with pytest.raises(RewardkitError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("lr: [1,\n")
    with pytest.raises(RewardkitError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(RewardkitError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_tracker_packages_are_checked_up_front(monkeypatch):
    import rewardkit.train.config as config_module

    monkeypatch.setattr(config_module, "_installed", lambda package: False)
    with pytest.raises(RewardkitError, match="pip install tensorboard"):
        load_config(None, ["log_with=tensorboard"])
