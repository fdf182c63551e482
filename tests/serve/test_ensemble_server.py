"""An ensemble manifest served and scored from the CLI gives the aggregate the library computes."""

import json

import httpx
import pytest
from serve_helpers import ServerProcess
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data.record import Response
from rewardkit.models import RewardModel
from rewardkit.models.ensemble import EnsembleScorer
from rewardkit.models.scorer import ScoreItem

PROMPT = [{"role": "user", "content": "Name a colour."}]
RESPONSES = ["Blue.", "Green, like grass in spring.", "I would rather not say."]
# fp32 forward passes of the same texts; the server may batch them with others, which moves the last bits
TOL = 1e-5


@pytest.fixture(scope="module")
def ensemble_dir(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    for seed in range(3):
        RewardModel.from_pretrained(llama_dir, seed=seed).save_pretrained(root / f"seed{seed}")
    ensemble = EnsembleScorer.from_specs(["seed0", "seed1", "seed2"], base=root, aggregator="uwo", precision="fp32")
    ensemble.fit_stats([ScoreItem(PROMPT, [Response(r) for r in RESPONSES + ["Red.", "Every colour at once."]])])
    ensemble.save(root)
    return root


@pytest.fixture(scope="module")
def expected(ensemble_dir):
    return EnsembleScorer.load(ensemble_dir, precision="fp32").score([ScoreItem(PROMPT, [Response(r) for r in
                                                                                         RESPONSES])])[0]


def test_served_ensemble_answers_members_and_uncertainty(ensemble_dir, expected, tmp_path):
    server = ServerProcess(["--model", str(ensemble_dir), "--precision", "fp32"], tmp_path / "server.log")
    body = {"prompt": PROMPT, "responses": RESPONSES}
    try:
        got = httpx.post(f"{server.url}/score", json=body, timeout=60).json()
        worst = httpx.post(f"{server.url}/score", json={**body, "aggregator": "wco"}, timeout=60).json()
        bad = httpx.post(f"{server.url}/score", json={**body, "aggregator": "median"}, timeout=60)
    finally:
        server.stop()
    # wco per request: the smallest standardised member reward, recomputed here from the members
    ensemble = EnsembleScorer.load(ensemble_dir, precision="fp32")
    z = [[(r - s.mean) / s.std for r in member] for member, s in zip(got["members"], ensemble.stats)]
    assert worst["rewards"] == pytest.approx([min(col) for col in zip(*z)], abs=TOL)
    assert worst["members"] == got["members"]
    assert bad.status_code == 422
    assert got["rewards"] == pytest.approx(expected.rewards, abs=TOL)
    assert got["uncertainty"] == pytest.approx(expected.uncertainty, abs=TOL)
    assert [m for m in got["members"]] == [pytest.approx(m, abs=TOL) for m in expected.members]


def test_cli_score_of_the_manifest_matches(ensemble_dir, expected, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": PROMPT, "responses": RESPONSES}) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", "-m", str(ensemble_dir), "-i", str(data), "-o", str(out),
                                      "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text().splitlines()[0])
    assert row["rewards"] == pytest.approx(expected.rewards, abs=TOL)
    assert row["uncertainty"] == pytest.approx(expected.uncertainty, abs=TOL)


def test_aggregator_on_a_single_model_is_a_clear_400(rm_server):
    from serve_helpers import API_KEY

    answer = httpx.post(f"{rm_server.url}/score", json={"prompt": PROMPT, "responses": RESPONSES, "aggregator": "wco"},
                        headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert answer.status_code == 400 and "not an ensemble" in answer.json()["detail"]
