"""Property-based fuzz of POST /score and POST /get_reward (hypothesis): arbitrary JSON, schema-shaped bodies with
wrong values, and raw bytes never get a 5xx. A 200 answers with one reward per response (per query), in the
request's shape; anything else is a 4xx with a string reason. Runs against the app in-process on the tiny reward
model."""

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardkit.serve import create_app
from serve_helpers import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FUZZ = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(rm_scorer):
    with TestClient(create_app(rm_scorer, api_key=API_KEY, max_body_bytes=32768)) as c:
        yield c


scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=30)
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                        st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)

# Well-formed parts, so that many bodies reach tokenization and the model ...
text = st.text(max_size=60)
good_message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text})
good_prompt = text | st.lists(good_message, min_size=1, max_size=4)
good_ids = st.lists(st.integers(0, 399), max_size=20)
good_text_item = st.fixed_dictionaries({"prompt": good_prompt, "responses": st.lists(text, min_size=1, max_size=4)})
good_ids_item = st.fixed_dictionaries({"prompt_ids": good_ids, "response_ids": st.lists(
    st.lists(st.integers(0, 399), min_size=1, max_size=10), min_size=1, max_size=3)})
good_item = good_text_item | good_ids_item

# ... and wrong values to put in their place.
token_id = st.integers(-3, 420) | st.sampled_from([2**63, -2**63, 10**30]) | st.floats(0, 400) | st.booleans()
wrong = (scalars | any_json | st.lists(token_id, max_size=6) | st.lists(st.lists(token_id, max_size=4), max_size=3)
         | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["tool", "", "USER"]), "content": scalars}),
                    max_size=2)
         | st.text(st.characters(categories=["Cs", "Lu"]), max_size=3)  # unpaired surrogates
         | st.lists(st.text(max_size=4000), min_size=1, max_size=2))  # over-long or over the body limit


def corrupt(item: dict):
    """The item with one field (or an extra one) set to a wrong value, or one field left out."""
    keys = sorted(item) + ["extra", "items", "normalize"]
    set_wrong = st.sampled_from(keys).flatmap(lambda k: wrong.map(lambda v: {**item, k: v}))
    drop_one = st.sampled_from(sorted(item)).map(lambda k: {x: v for x, v in item.items() if x != k})
    return set_wrong | drop_one


item = good_item | good_item.flatmap(corrupt) | st.dictionaries(
    st.sampled_from(["prompt", "responses", "prompt_ids", "response_ids"]), wrong, max_size=4)
body_shapes = item | st.fixed_dictionaries({"items": st.lists(good_item | item, max_size=4)})
normalize = st.just({}) | st.booleans().map(lambda b: {"normalize": b}) | scalars.map(lambda v: {"normalize": v})
single_or_items = st.tuples(body_shapes, normalize).map(lambda t: {**t[0], **t[1]})


def send(client, body):
    """As JSON text, NaN and Infinity included (Python's json reads them, so a server must cope)."""
    return client.post("/score", content=json.dumps(body).encode(),
                       headers={**AUTH, "Content-Type": "application/json"})


def check(r, body=None):
    assert r.status_code < 500, (r.status_code, r.text, body)
    data = r.json()
    if r.status_code == 200:
        batch = isinstance(body, dict) and body.get("items") is not None  # "items": null is the single form
        answers = data["items"] if batch else [data]
        wanted = body["items"] if batch else [body]
        assert len(answers) == len(wanted)
        for got, want in zip(answers, wanted):
            n = len(want.get("responses") or want.get("response_ids"))
            assert len(got["rewards"]) == n
            if body.get("normalize"):
                assert len(got["normalized_rewards"]) == n
    else:
        assert 400 <= r.status_code < 500 and isinstance(data["detail"], str) and data["detail"]


@FUZZ
@given(body=any_json)
def test_arbitrary_json_never_500(client, body):
    check(send(client, body), body)


@FUZZ
@given(body=single_or_items)
def test_schema_shaped_bodies_never_500(client, body):
    check(send(client, body), body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
def test_raw_bytes_never_500(client, raw, content_type):
    r = client.post("/score", content=raw, headers={**AUTH, "Content-Type": content_type})
    assert r.status_code < 500, (r.status_code, r.text, raw)
    if r.status_code == 200:  # only when the bytes happen to be a valid request
        assert "rewards" in r.json() or "items" in r.json()
    else:
        assert isinstance(r.json()["detail"], str)


def test_schema_fuzz_reaches_the_model(client):
    """The fuzz is only worth something if valid-looking bodies get through: a known one scores."""
    body = {"prompt": [{"role": "user", "content": "hi"}], "responses": ["a", ""], "normalize": True}
    check(send(client, body), body)
    assert json.dumps(body)  # plain JSON


def test_items_null_is_the_single_form(client):
    """Found by the fuzz: `"items": null` beside a single item is that item, answered in the single form."""
    body = {"prompt": "Hi", "responses": ["Hello!", "Go away."], "items": None}
    r = send(client, body)
    assert r.status_code == 200 and len(r.json()["rewards"]) == 2
    check(r, body)


# -- POST /get_reward (OpenRLHF's protocol) ------------------------------------------------------------------------
chatml = st.tuples(text, text).map(lambda t: (f"<|im_start|>user\n{t[0]}<|im_end|>\n<|im_start|>assistant\n",
                                              t[1]))
good_queries = st.lists(chatml, min_size=1, max_size=4).map(
    lambda pairs: {"query": [p + a + "<|im_end|>" for p, a in pairs], "prompts": [p for p, _ in pairs]})
get_reward_bodies = (any_json | good_queries | good_queries.flatmap(corrupt)
                     | st.dictionaries(st.sampled_from(["query", "prompts", "labels", "normalize"]), wrong, max_size=3))


@FUZZ
@given(body=get_reward_bodies)
def test_get_reward_never_500(client, body):
    r = client.post("/get_reward", content=json.dumps(body).encode(),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text, body)
    if r.status_code == 200:
        out = r.json()
        assert len(out["rewards"]) == len(out["scores"]) == len(body["query"])
    else:
        assert 400 <= r.status_code < 500 and isinstance(r.json()["detail"], str) and r.json()["detail"]
