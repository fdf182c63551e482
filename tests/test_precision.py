"""precision="auto": decided on a CPU by a timed, cached probe (rewardkit.precision), overridable by env."""

import json

import pytest
import torch

from rewardkit import precision
from rewardkit.errors import RewardkitError

CPU = torch.device("cpu")


@pytest.fixture
def probe_env(monkeypatch, tmp_path):
    """No override, an empty cache of this test's own, and no figure remembered from an earlier call."""
    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setenv("REWARDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_probed", {})
    return tmp_path / "cache" / precision.PROBE_FILE


def fake_speeds(monkeypatch, fp32: float, bf16: float) -> list:
    """Replace the timing with fixed figures; returns the list of dtypes measured, in order."""
    measured = []

    def gflops(dtype, **_):
        measured.append(dtype)
        return {torch.float32: fp32, torch.bfloat16: bf16}[dtype]

    monkeypatch.setattr(precision, "matmul_gflops", gflops)
    return measured


@pytest.mark.parametrize("fp32, bf16, expected", [(100.0, 500.0, "bf16"), (100.0, 150.0, "bf16"),
                                                  (100.0, 149.0, "fp32"), (100.0, 20.0, "fp32")])
def test_auto_follows_the_measured_speedup(probe_env, monkeypatch, fp32, bf16, expected):
    fake_speeds(monkeypatch, fp32, bf16)
    assert precision.resolve_precision("auto", CPU) == expected


def test_the_probe_runs_once_per_machine_and_is_read_back_from_the_cache(probe_env, monkeypatch):
    measured = fake_speeds(monkeypatch, 100.0, 300.0)
    first = precision.cpu_probe()
    assert measured == [torch.float32, torch.bfloat16]
    saved = json.loads(probe_env.read_text())
    assert saved[precision.machine_key()]["bf16_gflops"] == 300.0

    monkeypatch.setattr(precision, "_probed", {})  # a new process: only the file remembers
    again = precision.cpu_probe()
    assert measured == [torch.float32, torch.bfloat16], "the cached figure must not be measured again"
    assert again == first and again.bf16_speedup == pytest.approx(3.0)

    precision.cpu_probe(refresh=True)
    assert len(measured) == 4


def test_a_cache_for_other_machines_is_kept_and_a_broken_one_is_replaced(probe_env, monkeypatch):
    fake_speeds(monkeypatch, 100.0, 50.0)
    probe_env.parent.mkdir(parents=True)
    other = {"machine": "other", "fp32_gflops": 1.0, "bf16_gflops": 5.0, "measured_at": "then"}
    probe_env.write_text(json.dumps({"other": other}))
    assert not precision.cpu_probe().bf16_is_fast
    saved = json.loads(probe_env.read_text())
    assert saved["other"] == other and precision.machine_key() in saved

    monkeypatch.setattr(precision, "_probed", {})
    probe_env.write_text("{not json")
    assert precision.cpu_probe().fp32_gflops == 100.0
    assert precision.machine_key() in json.loads(probe_env.read_text())


def test_no_cache_or_an_unwritable_one_still_decides(probe_env, monkeypatch, tmp_path):
    fake_speeds(monkeypatch, 100.0, 400.0)
    monkeypatch.setenv("REWARDKIT_CACHE", "off")
    assert precision.resolve_precision("auto", CPU) == "bf16"

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("REWARDKIT_CACHE", str(blocker / "cache"))  # its parent is a file: cannot be made
    monkeypatch.setattr(precision, "_probed", {})
    assert precision.resolve_precision("auto", CPU) == "bf16"


def test_the_environment_decides_without_a_probe(probe_env, monkeypatch):
    measured = fake_speeds(monkeypatch, 100.0, 500.0)
    monkeypatch.setenv(precision.AUTO_ENV, "fp32")
    assert precision.resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setenv(precision.AUTO_ENV, "BF16")
    assert precision.resolve_precision("auto", CPU) == "bf16"
    assert measured == []
    assert precision.resolve_precision("fp32", CPU) == "fp32", "an explicit precision is never overridden"
    monkeypatch.setenv(precision.AUTO_ENV, "fast")
    with pytest.raises(RewardkitError, match="REWARDKIT_AUTO_PRECISION must be bf16 or fp32"):
        precision.resolve_precision("auto", CPU)


def test_the_real_probe_measures_both_products(probe_env):
    result = precision.cpu_probe()
    assert result.fp32_gflops > 0 and result.bf16_gflops > 0
    assert result.machine == precision.machine_key()
    assert precision.resolve_precision("auto", CPU) == ("bf16" if result.bf16_is_fast else "fp32")


def test_matmul_gflops_counts_two_flops_per_multiply_add(monkeypatch):
    clock = iter(range(1000))
    monkeypatch.setattr(precision.time, "perf_counter", lambda: float(next(clock)))
    # The fake clock moves 1 s per reading. The warm-up reads 1 s < 5 s, so 5 calls per repeat, timed at 1 s:
    # 2 * 8^3 flops per call, 5 calls a second.
    assert precision.matmul_gflops(torch.float32, size=8, seconds=5, repeats=1) == pytest.approx(5 * 2 * 8**3 / 1e9)
    # A first call longer than the budget is the answer on its own (where bf16 is emulated: seconds a call).
    assert precision.matmul_gflops(torch.float32, size=8, seconds=0.5, repeats=3) == pytest.approx(2 * 8**3 / 1e9)


# -- rewardkit doctor ------------------------------------------------------------------------------------


def test_doctor_reports_the_probe_and_what_auto_picks(probe_env, monkeypatch):
    from typer.testing import CliRunner

    from rewardkit.cli import app

    fake_speeds(monkeypatch, 100.0, 250.0)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["precision_auto"]["picks"] == "bf16"
    assert report["precision_auto"]["probe"]["bf16_speedup"] == pytest.approx(2.5)
    assert report["cpu"] == precision.cpu_name() and report["torch"] == torch.__version__
    assert report["native_kernels"].startswith(("used", "not used: "))

    monkeypatch.setenv(precision.AUTO_ENV, "fp32")
    text = CliRunner().invoke(app, ["doctor"]).output
    assert "auto = fp32: REWARDKIT_AUTO_PRECISION=fp32" in text and "kernels" in text

    monkeypatch.setenv("REWARDKIT_KERNELS", "off")
    monkeypatch.setenv(precision.AUTO_ENV, "maybe")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 2 and "REWARDKIT_AUTO_PRECISION must be bf16 or fp32" in result.output


def test_doctor_refresh_measures_once_and_reports_the_new_figure(probe_env, monkeypatch):
    from rewardkit.doctor import machine_report

    fake_speeds(monkeypatch, 100.0, 50.0)
    assert machine_report()["precision_auto"]["picks"] == "fp32"
    measured = fake_speeds(monkeypatch, 100.0, 300.0)  # the machine changed (say, a new PyTorch build)
    report = machine_report(refresh_probe=True)
    assert measured == [torch.float32, torch.bfloat16]
    assert report["precision_auto"]["picks"] == "bf16" and report["precision_auto"]["probe"]["bf16_gflops"] == 300.0
