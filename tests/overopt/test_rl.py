"""The RL over-optimization curve: the KL measurement, the curve summary and its fit, and `rewardkit overopt rl`
end to end with TRL's GRPO on a tiny policy (python: gold and proxy), its resumption and its bad input."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import overopt_task as task
from rewardkit.cli import app
from rewardkit.errors import RewardkitError
from rewardkit.overopt.config import OverOptConfig, RLSettings
from rewardkit.overopt.rl import curve_summary, mean_se, proxy_objective, rl_run, run_name, sequence_logprobs

runner = CliRunner()
GOLD, PROXY = "python:overopt_task:length_gold", "python:overopt_task:long_proxy"
TINY = {"steps": 2, "eval_every": 1, "eval_prompts": 2, "eval_samples": 2, "prompts_per_step": 2, "generations": 2,
        "max_new_tokens": 8, "lr": 1e-3}


def test_sequence_logprobs_match_one_row_at_a_time(qwen2_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(qwen2_dir, dtype=torch.float32).eval()
    prompts, completions = [[1, 2, 3], [4, 5], [6]], [[7, 8], [9, 10, 11, 12], [13]]
    batched = sequence_logprobs(model, prompts, completions, batch=3)
    for p, c, value in zip(prompts, completions, batched):
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
        alone = sum(float(logp[len(p) - 1 + t, tok]) for t, tok in enumerate(c))
        assert value == pytest.approx(alone, abs=1e-4)  # right padding changes nothing but fp32 rounding
        assert value < 0


def test_mean_se():
    assert mean_se([2.0]) == (2.0, 0.0)
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5, abs=1e-12) and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2, abs=1e-12)


def row(step, kl, gold, proxy):
    return {"step": step, "kl": kl, "gold": gold, "gold_se": 0.1, "proxy": proxy, "proxy_se": 0.1, "tokens": 8.0}


def test_curve_summary_normalises_to_step_zero_and_fits_the_rl_form():
    alpha, beta = 1.0, 0.8
    d = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    rows = [row(5 * k, x * x, 3.0 + (x * (alpha - beta * math.log(x)) if x > 0 else 0.0), 1.0 + x)
            for k, x in enumerate(d)]
    summary = curve_summary(list(reversed(rows)))  # order of the rows does not matter
    assert summary["step"] == [0, 5, 10, 15, 20, 25]
    assert summary["gold"][0] == 0.0 and summary["proxy"][0] == 0.0
    assert summary["d"] == pytest.approx(d.tolist(), abs=1e-12)
    fit = summary["fit"]
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-9) and fit["beta"] == pytest.approx(beta, abs=1e-9)
    assert fit["d_star"] == pytest.approx(math.exp(alpha / beta - 1), rel=1e-9)
    assert summary["peak"]["step"] == 5 * int(np.argmax([r["gold"] for r in rows]))
    assert summary["final"]["proxy"] == pytest.approx(4.0, abs=1e-12)
    assert curve_summary(rows[:2])["fit"] is None  # too few points to fit
    with pytest.raises(RewardkitError, match="step-0"):
        curve_summary(rows[1:])


def test_proxy_objective_and_run_names():
    single, ensemble = task.proxy_a(), task.ensemble()
    assert proxy_objective(single, "a") is single
    wco = proxy_objective(ensemble, "ens wco")
    assert wco.aggregator == "wco" and ensemble.aggregator == "mean"  # a copy: the loaded ensemble is unchanged
    with pytest.raises(RewardkitError, match="not an ensemble"):
        proxy_objective(single, "a wco")
    with pytest.raises(RewardkitError, match="unknown ensemble aggregator"):
        proxy_objective(ensemble, "ens median")
    assert run_name("ens wco", 0.04) == "ens-wco-beta0.04" and run_name("a", 0.0) == "a-beta0"


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Say something about topic {i}."}) + "\n"
                            for i in range(6)))
    return path


def run(*args):
    result = runner.invoke(app, ["overopt", "rl", *args])
    return result.exit_code, " ".join(result.output.split())


def tiny_flags():
    return [item for key, value in TINY.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def test_overopt_rl_writes_curves_for_each_penalty_and_keeps_finished_runs(qwen2_dir, prompts_file, tmp_path):
    out = tmp_path / "lab"
    args = ["--gold", GOLD, "--proxy", f"long={PROXY}", "--proxy", "ens=python:overopt_task:length_ensemble",
            "--policy", str(qwen2_dir), "--prompts", str(prompts_file), "--out", str(out), "--objective", "long",
            "--objective", "ens wco", "--beta", "0.04", "--beta", "0", *tiny_flags()]
    code, output = run(*args)
    assert code == 0, output
    report = json.loads((out / "rl.json").read_text())
    assert [(r["run"], r["objective"]) for r in report["runs"]] == [
        ("long-beta0.04", "long"), ("long-beta0", "long"), ("ens-wco-beta0.04", "ens wco"), ("ens-wco-beta0", "ens wco")]
    for r in report["runs"]:
        assert r["step"] == [0, 1, 2] and r["gold"][0] == 0.0 and r["proxy"][0] == 0.0
        assert abs(r["kl"][0]) < 1e-4  # the untrained policy is the reference: one function computes both
        assert all(math.isfinite(x) for x in r["kl"] + r["gold"] + r["proxy"])
        assert r["fit"] is not None and not r["skipped"]
    assert report["settings"]["steps"] == 2 and report["policy"] == str(qwen2_dir)
    assert (out / "rl.md").is_file() and (out / "rl_curves.png").stat().st_size > 0
    assert "long-beta0: peak gold" in output and "stands in for human judgement" in (out / "rl.md").read_text()
    raw = {r["run"]: json.loads((out / "rl" / r["run"] / "curve.jsonl").read_text().splitlines()[0])
           for r in report["runs"]}
    assert abs(raw["ens-wco-beta0"]["proxy"] - raw["long-beta0"]["proxy"]) > 1e-3  # wco of 3 members, not "long"
    assert all(r["kl"][-1] > 1e-3 for r in report["runs"])  # training moved the policy away from the reference
    curves = {p: p.stat().st_mtime_ns for p in (out / "rl").glob("*/curve.jsonl")}
    assert len(curves) == 4

    code, output = run(*args)
    assert code == 0, output
    assert output.count("kept from an earlier run") == 4 and "step 1:" not in output
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in curves.items())
    again = json.loads((out / "rl.json").read_text())
    assert [r["gold"] for r in again["runs"]] == [r["gold"] for r in report["runs"]]

    code, output = run(*args, "--steps", "3")  # the same folders with other settings: refused, nothing touched
    assert code == 2 and "made with other settings" in output and "steps: 2 then, 3 now" in output
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in curves.items())


def test_an_interrupted_run_resumes_from_its_last_checkpoint(qwen2_dir, tmp_path):
    from rewardkit.data.prompts import Prompt

    prompts = [Prompt(f"q{i}", [{"role": "user", "content": f"Tell me about {i}."}]) for i in range(6)]
    settings = RLSettings(**TINY, betas=[0.0])
    gold, proxy = task.length_gold(), task.long_proxy()
    out = tmp_path / "run"

    def stop_at_step_2(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rl_run(str(qwen2_dir), gold, proxy, prompts, settings, 0.0, out, on_row=stop_at_step_2)
    assert not (out / "run.json").exists()
    first = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in first] == [0, 1, 2]  # step 2 was measured, but its weights were never saved

    measured = []
    info = rl_run(str(qwen2_dir), gold, proxy, prompts, settings, 0.0, out, on_row=measured.append)
    assert info["resumed_from"] == 1 and not info["skipped"]
    assert [r["step"] for r in measured] == [2]  # steps 0 and 1 are kept, not measured again
    assert info["rows"][:2] == first[:2]
    assert [r["step"] for r in info["rows"]] == [0, 1, 2]
    assert rl_run(str(qwen2_dir), gold, proxy, prompts, settings, 0.0, out)["skipped"]


def test_bad_input(qwen2_dir, prompts_file, tmp_path):
    base = ["--gold", GOLD, "--proxy", f"long={PROXY}", "--policy", str(qwen2_dir), "--out", str(tmp_path / "x")]
    code, output = run(*base, "--prompts", str(prompts_file), "--eval-prompts", "6")
    assert code == 2 and "held out" in output and "Traceback" not in output
    code, output = run(*base, "--prompts", str(prompts_file), "--objective", "other")
    assert code == 2 and "'other' is not one of the proxies" in output
    code, output = run(*base, "--prompts", str(prompts_file), "--beta", "-1")
    assert code == 2 and "KL penalty" in output
    code, output = run(*base)
    assert code == 2 and "need a policy and prompts" in output
    assert not (tmp_path / "x" / "rl").exists()  # refused before any training


def test_the_config_carries_the_rl_settings(tmp_path):
    cfg = OverOptConfig(gold=GOLD, proxies={"long": PROXY}, out=str(tmp_path), rl=RLSettings(steps=7, betas=[0.1]))
    assert cfg.rl.steps == 7 and cfg.rl.betas == [0.1] and cfg.rl.eval_every == 5
