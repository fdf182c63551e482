"""The demo end to end on the synthetic task (real data hidden), with a tiny encoder so it runs in seconds."""

import json

from rewardkit.demo import run_demo


def test_demo_trains_and_reports_on_the_synthetic_task(bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REWARDKIT_DATA", str(tmp_path / "no-data-here"))
    lines = []
    summary = run_demo(tmp_path / "demo", model=str(bert_dir), precision="fp32", log=lines.append,
                       synthetic_sizes=(96, 48))
    assert any("synthetic task" in line for line in lines)
    for name in ("before", "report"):
        report = json.loads((tmp_path / "demo" / name / "report.json").read_text())
        assert report["n"] == 48 and "gold" in report
        assert -1 <= report["gold"]["spearman_with_gold"] <= 1
    assert summary["after"]["gold"]["bayes_accuracy"] > 0.5
    assert (tmp_path / "demo" / "train" / "best" / "rewardkit.json").is_file()
    assert any(line.startswith("accuracy (ties wrong)") for line in lines)

    # A second run trains anew (it does not "resume" a finished run and report zero steps).
    again = run_demo(tmp_path / "demo", model=str(bert_dir), precision="fp32", log=lambda _: None,
                     synthetic_sizes=(96, 48))
    assert again["steps"] == summary["steps"] > 0
    # exact: the identical seeded training again in this process (same files, shapes and threads)
    assert again["after"]["accuracy"] == summary["after"]["accuracy"]


def test_the_help_examples_data_is_written_beside_real_data(tmp_path, monkeypatch):
    """Every --help example reads runs/demo/data/synthetic_*.jsonl, so the demo writes them whatever it trains on."""
    from rewardkit.demo import HH_HARMLESS, plan

    shared = tmp_path / "shared"
    (shared / HH_HARMLESS).parent.mkdir(parents=True)
    (shared / HH_HARMLESS).write_bytes(b"")
    monkeypatch.setenv("REWARDKIT_DATA", str(shared))
    chosen = plan(tmp_path / "demo", synthetic_sizes=(8, 4))
    assert chosen.name == "HH-RLHF harmless-base"
    lines = (tmp_path / "demo" / "data" / "synthetic_test.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["responses"]
    assert (tmp_path / "demo" / "data" / "synthetic_train.jsonl").is_file()
