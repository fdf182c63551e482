"""`rewardkit ensemble create`: a manifest from member specs with stats fitted on reference records, which
`--model` then reads; bad members and a reference set without spread are clear errors that write nothing."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.models.ensemble import EnsembleScorer
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.scorer import ScoreItem
from rewardkit.models.spec import load_scorer
from tiny import toy_pairs, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def members(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    for seed in range(2):
        RewardModel.from_pretrained(llama_dir, seed=seed).save_pretrained(root / f"seed{seed}")
    return root


@pytest.fixture
def reference(tmp_path):
    return write_jsonl(tmp_path / "ref.jsonl", toy_pairs(6))


def test_create_fits_stats_on_the_reference_and_the_manifest_is_a_model(members, reference, tmp_path):
    out = tmp_path / "ens"
    result = runner.invoke(app, ["ensemble", "create", str(members / "seed0"), f"b={members / 'seed1'}",
                                 "-r", str(reference), "-o", str(out), "--agg", "uwo", "--lambda", "0.25",
                                 "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "ensemble.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["seed0", "b"]
    assert (manifest["aggregator"], manifest["lambda"]) == ("uwo", 0.25)
    items = [ScoreItem(r.prompt, r.responses) for r in load_records(reference).records]
    for member, spec in zip(manifest["members"], ["seed0", "seed1"]):
        values = [v for res in load_scorer(str(members / spec), precision="fp32").score(items) for v in res.rewards]
        # the same fp32 model on the same inputs: the stats agree to float32 rounding of the rewards
        assert member["stats"]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-6)
        assert member["stats"]["std"] == pytest.approx(statistics.pstdev(values), abs=1e-6)
    ensemble = load_scorer(str(out), precision="fp32")
    assert isinstance(ensemble, EnsembleScorer) and ensemble.names == ["seed0", "b"]
    scored = runner.invoke(app, ["score", "-m", str(out), "-i", str(reference), "-o", str(tmp_path / "s.jsonl"),
                                 "--precision", "fp32"])
    assert scored.exit_code == 0, scored.output
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["members"]) == 2 and len(r["uncertainty"]) == 2 for r in rows)


def test_a_missing_member_is_named_and_nothing_is_written(members, reference, tmp_path):
    out = tmp_path / "ens"
    result = runner.invoke(app, ["ensemble", "create", str(members / "seed0"), str(tmp_path / "nowhere"),
                                 "-r", str(reference), "-o", str(out)])
    assert result.exit_code == 2 and "nowhere" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_a_reference_without_spread_is_an_error_and_nothing_is_written(members, tmp_path):
    same = [{"id": f"s{i}", "prompt": "Hi", "responses": ["Same.", "Same."], "chosen": 0} for i in range(3)]
    reference = write_jsonl(tmp_path / "same.jsonl", same)
    out = tmp_path / "ens"
    result = runner.invoke(app, ["ensemble", "create", str(members / "seed0"), str(members / "seed1"),
                                 "-r", str(reference), "-o", str(out), "--precision", "fp32"])
    assert result.exit_code == 2 and "no spread" in " ".join(result.output.split())
    assert not (out / "ensemble.json").exists()


def test_an_unknown_aggregator_is_a_clear_error(members, reference, tmp_path):
    result = runner.invoke(app, ["ensemble", "create", str(members / "seed0"), "-r", str(reference),
                                 "-o", str(tmp_path / "e"), "--agg", "median"])
    assert result.exit_code == 2 and "unknown ensemble aggregator 'median'" in result.output
