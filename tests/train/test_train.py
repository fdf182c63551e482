"""The training loop on tiny models: it learns, resumes exactly, guards against NaN, trains LoRA, and runs
every loss through the same code."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner
from transformers import AutoModelForSequenceClassification

from rewardkit.cli import app
from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.batching import plan_padded
from rewardkit.train import load_config, train
from rewardkit.train.loop import NonFiniteLoss
from tiny import toy_pairs as pairs
from tiny import write_jsonl as write


@pytest.fixture
def toy(tmp_path):
    return write(tmp_path / "train.jsonl", pairs(48)), write(tmp_path / "test.jsonl", pairs(16, offset=100))


def config(backbone, data, out, *overrides, **fields):
    base = ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0"]
    return load_config(None, base + list(overrides), model=str(backbone), data=[str(data[0])],
                       eval_data=[str(data[1])], output=str(out), **fields)


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_learns_and_writes_checkpoints(llama_dir, toy, tmp_path, capsys):
    out = tmp_path / "run"
    result = train(config(llama_dir, toy, out, "epochs=3"))
    assert result.steps == 18 and result.records_trained == 3 * 48
    assert result.final_eval["accuracy"] == 1.0 and result.best_accuracy == 1.0
    trajectory = losses(out)
    assert len(trajectory) == 18 and trajectory[-1] < 0.2 < math.log(2) - 0.05 < trajectory[0] + 0.05
    for name in ("last", "best"):
        model = RewardModel.from_pretrained(out / name)
        assert model.meta.training["records"] == 48 and model.meta.training["loss"] == "bt"
    assert "lr: 0.002" in (out / "last" / "train_config.yaml").read_text()
    # the finished run's checkpoint keeps no optimizer state (nothing can resume from it) ...
    state = json.loads((out / "last" / "trainer" / "state.json").read_text())
    assert state["finished"] and state["step"] == 18 and not (out / "last" / "trainer" / "optimizer.pt").exists()
    # ... and running the same config again finds the run finished: no step, nothing rewritten
    weights = (out / "last" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    again = train(config(llama_dir, toy, out, "epochs=3"))
    assert "already finished: nothing to do" in " ".join(capsys.readouterr().err.split())
    assert again.resumed_from == 18 and again.steps == 18 and again.records_trained == 0
    # bit-exact: nothing ran, so this reads back the very numbers the first run wrote
    assert losses(out) == trajectory and (out / "last" / "model.safetensors").stat().st_mtime_ns == weights


def test_resume_follows_the_uninterrupted_trajectory(llama_dir, toy, tmp_path):
    full = tmp_path / "full"
    train(config(llama_dir, toy, full, "epochs=2", "save_every=2", "eval_every=100"))

    cut = tmp_path / "cut"

    def interrupt(step, metrics):
        if step == 7:  # after the step-6 checkpoint, one step of work is lost, as in a real crash
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(llama_dir, toy, cut, "epochs=2", "save_every=2", "eval_every=100"), on_step=interrupt)
    assert len(losses(cut)) == 7
    saved = cut / "last" / "trainer"
    assert (saved / "optimizer.pt").is_file() and not json.loads((saved / "state.json").read_text())["finished"]
    resumed = train(config(llama_dir, toy, cut, "epochs=2", "save_every=2", "eval_every=100"))
    assert resumed.resumed_from == 6 and resumed.steps == 12
    # a tolerance, not bit-exactness: the resumed steps run on weights and optimizer state read back from disk
    # (other memory offsets, where MKL may round differently); fp32 losses of 0.1-0.7, 1e-6 (measured: equal)
    assert losses(cut) == pytest.approx(losses(full), abs=1e-6)
    a = RewardModelScorer(RewardModel.from_pretrained(full / "last"), precision="fp32")
    b = RewardModelScorer(RewardModel.from_pretrained(cut / "last"), precision="fp32")
    items = [ScoreItem([{"role": "user", "content": "Tell me about cats"}], [Response("Sure!"), Response("No.")])]
    assert a.score(items)[0].rewards == pytest.approx(b.score(items)[0].rewards, abs=1e-5)


def test_resume_without_optimizer_state_is_a_clear_error(llama_dir, toy, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config(llama_dir, toy, out, "epochs=2", "save_every=2", "eval_every=100"),
              on_step=lambda step, _: step == 3 and (_ for _ in ()).throw(KeyboardInterrupt))
    (out / "last" / "trainer" / "optimizer.pt").unlink()  # a damaged, unfinished checkpoint
    with pytest.raises(RewardkitError, match="no optimizer state to resume from"):
        train(config(llama_dir, toy, out, "epochs=2", "save_every=2", "eval_every=100"))


def test_resume_refuses_a_changed_config(llama_dir, toy, tmp_path):
    out = tmp_path / "run"
    train(config(llama_dir, toy, out, "max_steps=2"))
    with pytest.raises(RewardkitError, match="different settings .*lr"):
        train(config(llama_dir, toy, out, "max_steps=2", "lr=1e-4"))


def test_non_finite_loss_stops_with_a_good_checkpoint(llama_dir, toy, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="stopped before applying it.*last good checkpoint"):
        train(config(llama_dir, toy, out, "lr=1e12", "save_every=1", "max_grad_norm=null", "epochs=3"))
    saved = json.loads((out / "last" / "trainer" / "state.json").read_text())["step"]
    assert saved >= 1
    model = RewardModel.from_pretrained(out / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_data_fails_before_training_and_writes_nothing(llama_dir, tmp_path):
    bad = write(tmp_path / "bad.jsonl", pairs(4) + [{"id": "x", "prompt": "q", "responses": ["a"], "chosen": 0}])
    with pytest.raises(RewardkitError, match=r"bad\.jsonl:5"):
        train(config(llama_dir, (bad, bad), tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_lora_trains_head_and_exports_a_portable_checkpoint(llama_dir, toy, tmp_path):
    out = tmp_path / "lora"
    result = train(config(llama_dir, toy, out, "epochs=2", "lora.r=4", "lora.alpha=8", "lr=5e-3"))
    assert result.final_eval["accuracy"] >= 0.9
    files = {p.name for p in (out / "last").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    lora = RewardModel.from_pretrained(out / "last")
    untrained = RewardModel.from_pretrained(llama_dir)
    assert not torch.equal(lora.hf_model.score.modules_to_save["default"].weight, untrained.hf_model.score.weight)

    code = CliRunner().invoke(app, ["export", "--model", str(out / "last"), "--output", str(tmp_path / "merged")])
    assert code.exit_code == 0, code.output
    merged = RewardModel.from_pretrained(tmp_path / "merged")
    assert merged.meta.lora is None
    items = [ScoreItem([{"role": "user", "content": "Tell me about cats, please."}],
                       [Response("Thank you for asking! Here is a clear answer about cats."), Response("No.")])]
    want = RewardModelScorer(lora, precision="fp32").score(items)[0].rewards
    assert RewardModelScorer(merged, precision="fp32").score(items)[0].rewards == pytest.approx(want, abs=1e-4)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    batch = plan_padded([merged.text.encode(items[0].prompt, r.content) for r in items[0].responses],
                    hf.config.pad_token_id)
    with torch.no_grad():
        plain = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0].tolist()
    assert plain == pytest.approx(want, abs=1e-4)


def kwise_rows(n):
    return [{"id": f"k{i}", "prompt": f"Rank answers {i}",
             "responses": [f"Thank you! A clear answer {i}.", f"An answer {i}.", f"No. whatever {i}"],
             "ranking": [0, 1, 2]} for i in range(n)]


def vote_rows(n):
    return [{"id": f"v{i}", "prompt": f"Question {i}", "responses": [f"Thank you! A clear answer {i}.",
                                                                   f"No. whatever {i}"],
             "votes": [0, 0, None] if i % 2 else [0, 1, 0]} for i in range(n)]


@pytest.mark.parametrize("loss,rows,extra", [
    ("soft", vote_rows, []), ("kwise", kwise_rows, []), ("plackett_luce", kwise_rows, []),
    ("margin", lambda n: [{**r, "margin": 1.0} for r in pairs(n)], []),
    ("scaled", lambda n: [{**r, "margin": 2.0} for r in pairs(n)], []),
    ("smoothed", pairs, ["eps=0.1"]), ("robust", pairs, ["eps=0.1"]), ("bt", pairs, ["center=0.01"]),
])
def test_every_loss_trains_through_the_same_loop(loss, rows, extra, llama_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", rows(16))
    result = train(config(llama_dir, (data, data), tmp_path / loss, f"loss={loss}", "epochs=3", *extra))
    trajectory = losses(tmp_path / loss)
    assert all(math.isfinite(x) for x in trajectory)
    assert trajectory[-1] < trajectory[0], f"{loss} did not decrease: {trajectory}"
    assert result.final_eval["accuracy"] >= 0.75


def test_distillation_from_a_teacher(llama_dir, toy, tmp_path):
    teacher = tmp_path / "teacher"
    train(config(llama_dir, toy, teacher, "epochs=3"))
    for loss in ("distill_soft", "distill_regression"):
        out = tmp_path / loss
        result = train(config(llama_dir, toy, out, f"loss={loss}", f"teacher={teacher / 'last'}", "epochs=3",
                              "center=0"))
        assert result.final_eval["accuracy"] >= 0.9, loss


def test_tensorboard_logging(llama_dir, toy, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is a dev dependency (pip install -e '.[dev]')")
    out = tmp_path / "tb"
    train(config(llama_dir, toy, out, "log_with=tensorboard", "max_steps=2"))
    assert list(out.rglob("events.out.tfevents.*")), "no TensorBoard event file written"
    assert len(losses(out)) == 2  # the JSONL log is written as well
