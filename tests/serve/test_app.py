"""The app in-process (starlette's TestClient runs its startup and shutdown): readiness while a model loads,
what a non-reward-model scorer cannot do, scorer failures, and truncation (the default) or rejection of
over-long sequences."""

import math
import threading

import pytest
from fastapi.testclient import TestClient

from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.models import FunctionScorer, ScoreItem, ScoreResult
from rewardkit.serve import create_app
from serve_helpers import echo_request, echo_reward

ECHO = FunctionScorer(echo_reward, name="echo")


def test_ready_is_503_until_the_model_is_loaded():
    loaded = threading.Event()

    def load():
        loaded.wait(10)
        return ECHO

    with TestClient(create_app(load)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        r = client.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        busy = client.post("/score", json=echo_request(1)[0])
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        loaded.set()
        for _ in range(200):
            if client.get("/ready").status_code == 200:
                break
            threading.Event().wait(0.01)
        assert client.get("/ready").json() == {"status": "ready"}
        assert client.post("/score", json=echo_request(1)[0]).json()["rewards"] == echo_request(1)[1]


def test_a_model_that_fails_to_load_is_never_ready():
    def load():
        raise RewardkitError("no such model: nowhere/at-all")

    with TestClient(create_app(load)) as client:
        for _ in range(200):
            if client.get("/ready").json()["status"] != "loading":
                break
            threading.Event().wait(0.01)
        r = client.get("/ready")
        assert r.status_code == 503 and "nowhere/at-all" in r.json()["detail"]
        assert client.post("/score", json=echo_request(1)[0]).status_code == 503
        assert client.get("/health").status_code == 200


def test_token_ids_and_normalization_need_a_model_that_has_them():
    with TestClient(create_app(ECHO)) as client:
        ids = client.post("/score", json={"prompt_ids": [1, 2], "response_ids": [[3]]})
        assert ids.status_code == 400 and "does not accept token ids" in ids.json()["detail"]
        norm = client.post("/score", json={**echo_request(1)[0], "normalize": True})
        assert norm.status_code == 400 and "normalization" in norm.json()["detail"]
        ok = client.post("/score", json={"items": [echo_request(1)[0], echo_request(2)[0]]})
        assert [it["rewards"] for it in ok.json()["items"]] == [echo_request(1)[1], echo_request(2)[1]]


class Picky:
    """Refuses one prompt as a user error, crashes on another, and returns NaN for a third."""

    def score(self, items):
        out = []
        for it in items:
            text = it.prompt[-1]["content"]
            if text == "refuse":
                raise RewardkitError("chat template failed on this conversation")
            if text == "crash":
                raise RuntimeError("CUDA out of memory")
            out.append(ScoreResult(rewards=[math.nan]) if text == "nan" else ECHO.score([it])[0])
        return out

    def describe(self):
        return {"name": "picky"}


def test_scorer_errors_fail_only_their_request():
    with TestClient(create_app(Picky())) as client:
        refused = client.post("/score", json={"prompt": "refuse", "responses": ["1"]})
        assert refused.status_code == 422 and "chat template failed" in refused.json()["detail"]
        crashed = client.post("/score", json={"prompt": "crash", "responses": ["1"]})
        assert crashed.status_code == 500 and "out of memory" in crashed.json()["detail"]
        nan = client.post("/score", json={"prompt": "nan", "responses": ["1"]})
        assert nan.status_code == 200 and nan.json()["rewards"] == [None]
        assert client.post("/score", json=echo_request(3)[0]).json()["rewards"] == echo_request(3)[1]


def test_by_default_over_long_sequences_are_scored_as_the_library_does(rm_scorer):
    long_prompt = " ".join(["word"] * 200)
    with TestClient(create_app(rm_scorer)) as client:
        r = client.post("/score", json={"prompt": long_prompt, "responses": ["Paris.", "No."]})
        assert r.status_code == 200, r.text
        want = rm_scorer.score([ScoreItem([{"role": "user", "content": long_prompt}],
                                          [Response("Paris."), Response("No.")])])[0]
        assert r.json()["truncated"] == want.truncated and min(want.truncated) > 0
        assert max(abs(a - b) for a, b in zip(r.json()["rewards"], want.rewards)) < 1e-5
    with pytest.raises(ValueError, match="overlength='reject'"):  # truncating shorter is the model's max_length
        create_app(rm_scorer, max_length=16)


def test_a_server_limit_below_the_models_rejects_with_overlength_reject(rm_scorer):
    with TestClient(create_app(rm_scorer, max_length=16, overlength="reject")) as client:
        r = client.post("/score", json={"prompt": "What is the capital of France?", "responses": ["Paris."]})
        assert r.status_code == 422 and "responses[0]" in r.json()["detail"] and "max_length 16" in r.json()["detail"]
        assert client.get("/info").json()["scorer"]["overlength"] == "reject"


def test_launcher_reports_a_model_that_cannot_load(tmp_path, capsys):
    from rewardkit.serve.__main__ import main

    assert main(["--model", str(tmp_path / "no-such-model"), "--port", "0"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_bad_server_options_fail_at_creation():
    with pytest.raises(ValueError):
        create_app(ECHO, max_queue=0)
    with pytest.raises(ValueError):
        create_app(ECHO, overlength="ignore")
    with pytest.raises(TypeError):
        create_app(42)
