"""The real server (a subprocess on a loopback port) on a tiny process reward model: `{steps: [...]}` responses
get the library's step rewards, plain-text responses are split into paragraphs, `aggregation` re-aggregates the
step scores, bad bodies get 422, `aggregation` to an outcome model gets 400, and /info says what is served."""

import math

import httpx
import pytest

from rewardkit.data.record import Response
from rewardkit.models import ScoreItem
from rewardkit.steps import AGGREGATIONS, aggregate
from serve_helpers import API_KEY, MAX_LENGTH, ServerProcess, server_in_thread
from tiny import assert_nested_close

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOL = 1e-5

PROBLEM = "Add 48 and half of 48."
GOOD = ["Half of 48 is 24.", "48 + 24 = 72.", "The answer is 72."]
BAD = ["Half of 48 is 96.", "48 + 96 = 144."]


@pytest.fixture(scope="module")
def prm_dir(llama_dir, tmp_path_factory):
    """An (untrained) process reward model on the tiny Llama backbone: a newline after every step. Its head is
    scaled up so step probabilities spread out (the fresh head gives all of them about 0.5)."""
    import torch

    from rewardkit.models import RewardModel

    model = RewardModel.from_pretrained(llama_dir, step_separator="auto", step_aggregation="min")
    with torch.no_grad():
        model.head_layer.weight.mul_(40.0)
    return model.save_pretrained(tmp_path_factory.mktemp("prm") / "model")


@pytest.fixture(scope="module")
def prm_scorer(prm_dir):
    """The library's scorer on the same checkpoint, configured as the server is."""
    from rewardkit.models import RewardModelScorer

    return RewardModelScorer.from_pretrained(prm_dir, precision="fp32", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def prm_server(prm_dir, tmp_path_factory):
    server = ServerProcess(["--model", str(prm_dir), "--api-key", API_KEY, "--precision", "fp32",
                            "--max-length", str(MAX_LENGTH)],
                           tmp_path_factory.mktemp("prm-server") / "server.log")
    yield server
    server.stop()


def post(server, body):
    return httpx.post(f"{server.url}/score", json=body, headers=AUTH, timeout=30)


def library(scorer, prompt: str, responses: list[Response]):
    return scorer.score([ScoreItem([{"role": "user", "content": prompt}], responses)])[0]


def assert_close(got, want):
    assert_nested_close(got, want, TOL)


# -- the library's step scores ------------------------------------------------------------------------------------
def test_steps_responses_get_the_library_step_rewards(prm_server, prm_scorer):
    r = post(prm_server, {"prompt": PROBLEM, "responses": [{"steps": GOOD}, {"steps": BAD}]})
    assert r.status_code == 200, r.text
    body = r.json()
    want = library(prm_scorer, PROBLEM, [Response("\n\n".join(GOOD), GOOD), Response("\n\n".join(BAD), BAD)])
    assert [len(s) for s in body["step_rewards"]] == [3, 2]
    assert_close(body["step_rewards"], want.step_rewards)
    assert_close(body["rewards"], want.rewards)
    assert_close(body["rewards"], [min(s) for s in body["step_rewards"]])  # the model's own rule: min
    assert all(0.0 < p < 1.0 for s in body["step_rewards"] for p in s)
    assert body["response_tokens"] == want.response_tokens


def test_content_is_optional_and_only_the_steps_are_scored(prm_server, prm_scorer):
    with_content = post(prm_server, {"prompt": PROBLEM, "responses": [{"steps": GOOD, "content": "ignored?"}]})
    without = post(prm_server, {"prompt": PROBLEM, "responses": [{"steps": GOOD}]})
    assert with_content.status_code == 200 and without.status_code == 200, (with_content.text, without.text)
    assert_close(with_content.json()["step_rewards"], without.json()["step_rewards"])
    want = library(prm_scorer, PROBLEM, [Response("ignored?", GOOD)])
    assert_close(with_content.json()["step_rewards"], want.step_rewards)


def test_plain_text_and_steps_responses_mix_in_one_request(prm_server, prm_scorer):
    text = "\n\n".join(BAD)  # a plain-text response: its paragraphs are its steps
    one_para = "Just the answer: 72."
    body = {"items": [
        {"prompt": PROBLEM, "responses": [text, {"steps": GOOD}, one_para]},
        {"prompt": "What is 2 + 2?", "responses": [{"steps": ["2 + 2 = 4.", "The answer is 4."]}]},
    ]}
    r = post(prm_server, body)
    assert r.status_code == 200, r.text
    first, second = r.json()["items"]
    assert [len(s) for s in first["step_rewards"]] == [2, 3, 1]
    want = library(prm_scorer, PROBLEM, [Response(text), Response("\n\n".join(GOOD), GOOD), Response(one_para)])
    assert_close(first["step_rewards"], want.step_rewards)
    assert_close(first["rewards"], want.rewards)
    steps = ["2 + 2 = 4.", "The answer is 4."]
    assert_close(second["step_rewards"], library(prm_scorer, "What is 2 + 2?",
                                                 [Response("\n\n".join(steps), steps)]).step_rewards)
    # the plain text and the same steps sent as steps are the same thing
    same = post(prm_server, {"prompt": PROBLEM, "responses": [{"steps": BAD}]}).json()
    assert_close(same["step_rewards"][0], first["step_rewards"][0])


@pytest.mark.parametrize("rule", AGGREGATIONS)
def test_aggregation_in_the_request_re_aggregates_the_step_rewards(prm_server, rule):
    body = {"prompt": PROBLEM, "responses": [{"steps": GOOD}, {"steps": BAD}, "One step only."]}
    default = post(prm_server, body).json()
    r = post(prm_server, {**body, "aggregation": rule})
    assert r.status_code == 200, r.text
    got = r.json()
    assert_close(got["step_rewards"], default["step_rewards"])  # the steps are scored the same
    want = [aggregate(s, rule) for s in got["step_rewards"]]
    assert_close(got["rewards"], want)
    if rule in ("product", "mean"):  # with several distinct step scores these differ from the default min
        assert abs(got["rewards"][0] - default["rewards"][0]) > 1e-3, (rule, got, default)
    assert abs(got["rewards"][2] - default["rewards"][2]) < TOL  # all rules agree on one step


def test_aggregation_applies_to_every_item(prm_server):
    body = {"items": [{"prompt": PROBLEM, "responses": [{"steps": GOOD}]},
                      {"prompt": "Another problem.", "responses": [{"steps": BAD}]}], "aggregation": "product"}
    r = post(prm_server, body)
    assert r.status_code == 200, r.text
    for item in r.json()["items"]:
        assert_close(item["rewards"], [math.prod(s) for s in item["step_rewards"]])


# -- bad bodies ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, where", [
    ({"prompt": "q", "responses": [{"steps": []}]}, "responses[0].steps"),
    ({"prompt": "q", "responses": [{"steps": [1, 2]}]}, "responses[0].steps[0]"),
    ({"prompt": "q", "responses": [{"steps": "one step"}]}, "responses[0].steps"),
    ({"prompt": "q", "responses": [{"steps": ["a", None]}]}, "responses[0].steps[1]"),
    ({"prompt": "q", "responses": [{"content": "no steps"}]}, "responses[0].steps"),
    ({"prompt": "q", "responses": [{"steps": ["a"], "content": 3}]}, "responses[0].content"),
    ({"prompt": "q", "responses": [{"steps": ["a"], "labels": [1]}]}, "responses[0].labels"),
    ({"prompt": "q", "responses": [["a", "b"]]}, "responses[0]"),
    ({"prompt": "q", "responses": [{"steps": ["a"]}], "aggregation": "bogus"}, "aggregation"),
    ({"prompt": "q", "responses": [{"steps": ["a"]}], "aggregation": 1}, "aggregation"),
    ({"items": [{"prompt": "q", "responses": [{"steps": []}]}]}, "items[0].responses[0].steps"),
])
def test_bad_step_bodies_get_422_naming_the_field(prm_server, body, where):
    r = post(prm_server, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and where in detail, detail


def test_with_overlength_reject_an_over_long_steps_response_is_refused_by_name(prm_scorer):
    from rewardkit.serve import create_app

    long_steps = [" ".join(["word"] * 40) for _ in range(6)]
    with server_in_thread(create_app(prm_scorer, overlength="reject")) as url:
        r = httpx.post(f"{url}/score", json={"prompt": "q", "responses": [{"steps": ["fine"]}, {"steps": long_steps}]},
                       timeout=30)
    assert r.status_code == 422, r.text
    assert "responses[1]" in r.json()["detail"] and f"max_length {MAX_LENGTH}" in r.json()["detail"]


def test_token_ids_to_a_process_model_are_refused_with_a_reason(prm_server):
    r = post(prm_server, {"prompt_ids": [5, 6], "response_ids": [[7, 8]]})
    assert 400 <= r.status_code < 500, r.text
    assert "process reward model" in r.json()["detail"]


def test_get_reward_to_a_process_model_is_refused_with_a_reason(prm_server):
    r = httpx.post(f"{prm_server.url}/get_reward", json={"query": ["User: q\n\nAssistant: a"]}, headers=AUTH,
                   timeout=30)
    assert r.status_code == 400, r.text
    assert "process reward model" in r.json()["detail"] and "steps" in r.json()["detail"]


def test_a_process_model_says_it_takes_no_token_ids(prm_server):
    info = httpx.get(f"{prm_server.url}/info", headers=AUTH).json()
    assert info["scorer"]["token_ids"] is False
    assert post(prm_server, {"prompt_ids": [5, 6], "response_ids": [[7, 8]]}).status_code == 400


def test_steps_cut_by_truncation_come_back_as_null(prm_server, prm_scorer):
    """By default (overlength=truncate) whole steps are cut from the end: their scores are null, and the reward
    aggregates the scored steps only, as the library does."""
    long_steps = GOOD + [f"Check {k}: " + " ".join(["word"] * 30) for k in range(5)]
    r = post(prm_server, {"prompt": PROBLEM, "responses": [{"steps": long_steps}, {"steps": GOOD}],
                          "aggregation": "product"})
    assert r.status_code == 200, r.text
    body = r.json()
    steps = body["step_rewards"][0]
    assert len(steps) == len(long_steps)
    assert steps[0] is not None and steps[-1] is None
    want = library(prm_scorer, PROBLEM, [Response("\n\n".join(long_steps), long_steps)]).step_rewards[0]
    assert [s is None for s in steps] == [s is None for s in want]
    assert_close([s for s in steps if s is not None], [s for s in want if s is not None])
    assert abs(body["rewards"][0] - math.prod(s for s in steps if s is not None)) < TOL
    assert body["truncated"][0] > 0 and body["truncated"][1] == 0
    assert None not in body["step_rewards"][1]


# -- outcome models and /info -------------------------------------------------------------------------------------
def test_aggregation_to_an_outcome_model_gets_400(rm_scorer):
    from rewardkit.serve import create_app

    with server_in_thread(create_app(rm_scorer)) as url:
        ok = httpx.post(f"{url}/score", json={"prompt": "q", "responses": ["a", "b"]}, timeout=30)
        assert ok.status_code == 200, ok.text
        r = httpx.post(f"{url}/score", json={"prompt": "q", "responses": ["a", "b"], "aggregation": "min"},
                       timeout=30)
        assert r.status_code == 400, r.text
        assert "aggregation" in r.json()["detail"] and "not a process reward model" in r.json()["detail"]
        # steps sent to an outcome model are read as the whole text: one reward, no step scores
        steps = httpx.post(f"{url}/score", json={"prompt": "q", "responses": [{"steps": ["a", "b"]}, "a\n\nb"]},
                           timeout=30)
        assert steps.status_code == 200, steps.text
        assert "step_rewards" not in steps.json()
        assert_close([steps.json()["rewards"][0]], [steps.json()["rewards"][1]])


def test_info_says_process_reward_model(prm_server):
    info = httpx.get(f"{prm_server.url}/info", headers=AUTH).json()["scorer"]
    assert info["kind"] == "process_reward_model"
    assert info["step_separator"] == "\n" and info["step_aggregation"] == "min"
    assert info["server_max_length"] == MAX_LENGTH and info["precision"] == "fp32"
