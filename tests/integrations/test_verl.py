"""rewardkit.integrations.verl under verl's own calls.

Without verl: verl's call patterns reproduced here, keyword for keyword (verl 0.9.1: the reward loop's
managers, verl/experimental/reward_loop/reward_manager/naive.py, call `compute_score(data_source=,
solution_str=, ground_truth=, extra_info=)` per response from a thread pool, with the config's reward_kwargs
merged in over them, verl/trainer/ppo/reward.py; the batch manager, verl/workers/reward_manager/batch.py,
calls `compute_score_batch(data_sources=, solution_strs=, ground_truths=, extra_infos=, **reward_kwargs)`).
With verl installed: verl's own loader and reward managers drive the functions (skipped without it).
Against a real `rewardkit serve` on a loopback port for the server path, and every bad input.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # serve_helpers

from rewardkit.errors import RewardkitError  # noqa: E402
from rewardkit.integrations import verl  # noqa: E402
from serve_helpers import API_KEY, ServerProcess, free_port  # noqa: E402

# fp32 on both sides and the same tokens: only the batch layout (which responses share a pass, padding)
# differs between rewardkit's own scoring and the scoring behind verl's calls.
TOL = 1e-5
NORMALIZATION = {"mean": 0.25, "std": 2.0}

CHAT_A = [{"role": "user", "content": "How do I boil an egg?"}]
CHAT_B = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
ROWS = [  # (prompt as the data preprocessing stored it, the policy's response)
    (CHAT_A, "Put it in boiling water for eight minutes."),
    (CHAT_A, "I don't know."),
    (CHAT_B, "Blue."),
    (CHAT_A, "Boil water, add the egg, wait, cool it."),
    ("Plain text prompt, one user turn.", "A plain answer."),
]


@pytest.fixture(scope="module")
def rm_dir(qwen2_dir, tmp_path_factory):
    """A tiny causal reward model (prefix sharing applies) with normalization stats."""
    from rewardkit.models import RewardModel

    model = RewardModel.from_pretrained(qwen2_dir)
    model.meta.normalization = dict(NORMALIZATION)
    return str(model.save_pretrained(tmp_path_factory.mktemp("verl-rm") / "model"))


@pytest.fixture(scope="module")
def expected(rm_dir):
    """rewardkit's own rewards of ROWS, each response scored in its own pass."""
    from rewardkit.data.record import Response, user_prompt
    from rewardkit.models import RewardModelScorer, ScoreItem

    scorer = RewardModelScorer.from_pretrained(rm_dir, precision="fp32")
    items = [ScoreItem(user_prompt(p) if isinstance(p, str) else p, [Response(r)]) for p, r in ROWS]
    return [result.rewards[0] for result in scorer.score(items)]


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv(verl.MODEL_ENV, raising=False)
    verl.clear_cache()
    yield
    verl.clear_cache()


def extra_info(prompt, index):
    """extra_info as verl's data preprocessing writes it (split, index) plus the prompt, and the keys verl's
    managers add before calling (num_turns, rollout_reward_scores)."""
    return {"split": "train", "index": index, "prompt": prompt, "num_turns": None, "rollout_reward_scores": {}}


def bind(fn, reward_kwargs):
    """What verl's custom-function loader returns: fn with the config's reward_kwargs merged over the call's."""
    return lambda *args, **kwargs: fn(*args, **{**kwargs, **reward_kwargs})


def reward_loop_calls(fn, rows):
    """verl's reward loop: one call per response, each run in the event loop's thread pool, all at once."""
    async def run():
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(None, lambda k=k, p=p, r=r: fn(
            data_source="hh", solution_str=r, ground_truth=None, extra_info=extra_info(p, k)))
            for k, (p, r) in enumerate(rows)]
        return await asyncio.gather(*calls)

    return asyncio.run(run())


def scores(results):
    return [r["score"] for r in results]


# -- verl's call patterns, without verl --------------------------------------------------------------------------

def test_reward_loop_call_pattern(rm_dir, expected):
    fn = bind(verl.compute_score, {"model": rm_dir})
    results = reward_loop_calls(fn, ROWS)
    assert all(set(r) == {"score"} and isinstance(r["score"], float) for r in results)
    assert scores(results) == pytest.approx(expected, abs=TOL)


def test_batch_manager_call_pattern(rm_dir, expected):
    """The batch manager passes numpy object arrays from the batch and its own reward_kwargs as keywords."""
    fn = bind(verl.compute_score_batch, {"model": rm_dir})
    results = fn(data_sources=np.array(["hh"] * len(ROWS), dtype=object),
                 solution_strs=[r for _, r in ROWS],
                 ground_truths=[None] * len(ROWS),
                 extra_infos=np.array([extra_info(p, k) for k, (p, _) in enumerate(ROWS)], dtype=object),
                 max_length=256)
    assert scores(results) == pytest.approx(expected, abs=TOL)


def test_positional_call_and_numpy_chat(rm_dir, expected):
    """The documented custom-function signature, positionally; a chat read back from parquet by pandas (a
    numpy array of dicts) is a chat too."""
    chat = np.array(CHAT_A, dtype=object)
    got = verl.compute_score("hh", ROWS[0][1], None, {"prompt": chat}, model=rm_dir)
    assert got["score"] == pytest.approx(expected[0], abs=TOL)


def test_model_from_the_environment_and_loaded_once(rm_dir, monkeypatch):
    monkeypatch.setenv(verl.MODEL_ENV, rm_dir)
    first = verl.compute_score(data_source="hh", solution_str="Hi.", extra_info={"prompt": "Hello"})
    rewards = verl.rewards_for()
    assert verl.rewards_for() is rewards  # kept: the next call does not load again
    assert verl.rewards_for(model=rm_dir) is rewards  # the same spec and options, however they came
    assert verl.rewards_for(model=rm_dir, normalize=True) is not rewards  # other options, another entry
    again = verl.compute_score(data_source="hh", solution_str="Hi.", extra_info={"prompt": "Hello"})
    assert again == first  # the same model on the same input, one pass each: identical arithmetic


def test_options_normalize_and_empty_reward(rm_dir, expected):
    fn = bind(verl.compute_score, {"model": rm_dir, "normalize": True, "empty_reward": -3.0, "prompt_key": "chat"})
    got = fn(data_source="hh", solution_str=ROWS[0][1], ground_truth=None, extra_info={"chat": CHAT_A})
    assert got["score"] == pytest.approx((expected[0] - NORMALIZATION["mean"]) / NORMALIZATION["std"], abs=TOL)
    assert fn(data_source="hh", solution_str="", ground_truth=None, extra_info={"chat": CHAT_A}) == {"score": -3.0}


def test_verl_reward_model_kwargs_are_ignored(rm_dir, expected):
    """verl adds these when its own reward model is on; they are not loading options."""
    got = verl.compute_score(data_source="hh", solution_str=ROWS[2][1], ground_truth=None,
                             extra_info={"prompt": CHAT_B}, reward_router_address="127.0.0.1:1",
                             reward_model_tokenizer=object(), model=rm_dir)
    assert got["score"] == pytest.approx(expected[2], abs=TOL)


# -- concurrent calls become batches -----------------------------------------------------------------------------

def wait_until(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def test_calls_that_arrive_while_scoring_are_the_next_batch():
    """A call that comes while the model is busy waits; everything that waited is scored as one batch, the
    responses of one prompt as one item."""
    kwargs = {"model": "python:serve_helpers:GatedScorer"}
    scorer = verl.rewards_for(**kwargs).scorer
    batcher = verl._batcher(kwargs)

    def call(prompt, response):
        return verl.compute_score(data_source="t", solution_str=response, extra_info={"prompt": prompt}, **kwargs)

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(call, "request number 1", "10")
        assert scorer.entered.wait(30)
        later = [pool.submit(call, "request number 2", "20"), pool.submit(call, "request number 2", "21"),
                 pool.submit(call, "request number 3", "30")]
        wait_until(lambda: len(batcher.waiting) == 3, "three calls waiting")
        scorer.gate.set()
        got = [first.result(30)] + [f.result(30) for f in later]
    assert scores(got) == pytest.approx([10.001, 20.002, 21.002, 30.003], abs=1e-9)  # echo_reward's sums
    assert scorer.calls == [1, 2]  # the lone call at once, then prompts 2 (two responses) and 3


def test_a_failed_batch_fails_each_of_its_calls_and_the_next_one_runs():
    kwargs = {"model": "python:serve_helpers:GatedScorer"}
    scorer = verl.rewards_for(**kwargs).scorer
    batcher = verl._batcher(kwargs)
    fail = threading.Event()
    score = scorer.score

    def flaky(items):
        if fail.is_set():
            fail.clear()
            raise RuntimeError("the model failed")
        return score(items)

    scorer.score = flaky
    scorer.gate.set()
    fail.set()
    with pytest.raises(RuntimeError, match="the model failed"):
        verl.compute_score(data_source="t", solution_str="10", extra_info={"prompt": "request number 1"}, **kwargs)
    assert not batcher.busy and not batcher.waiting
    assert verl.compute_score(data_source="t", solution_str="10", extra_info={"prompt": "request number 1"},
                              **kwargs) == {"score": 10.001}


# -- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    ({"extra_info": {"split": "train", "index": 7}},
     r"the item \(data_source 'hh', extra_info index 7\): extra_info has no 'prompt' \(its keys: split, index\)"),
    ({"extra_info": None}, r"the item \(data_source 'hh'\): a reward model needs the prompt.*extra_info is none"),
    ({"extra_info": "How do I boil an egg?"}, r"put the prompt in extra_info\['prompt'\].*extra_info is a str"),
    ({"extra_info": {"prompt": 42}}, r"extra_info\['prompt'\]: expected text or a list of \{role, content\}"),
    ({"extra_info": {"prompt": [{"role": "robot", "content": "hi"}]}}, r"extra_info\['prompt'\], message 0"),
    ({"solution_str": ["a", "list"]}, r"solution_str must be the decoded response text, got list"),
    ({"solution_str": ""}, r"the item \(data_source 'hh'\): the response is empty.*empty_reward"),
    ({"prompt_key": ""}, r"prompt_key must be the name of an extra_info field"),
    ({"normalize": "yes"}, r"normalize must be true or false"),
    ({"empty_reward": "zero"}, r"empty_reward must be a number"),
    ({"objective": "helpfulness"}, r"objective 'helpfulness': the model's objectives are"),
    ({"no_such_option": 1}, r"reward_kwargs model '.*': cannot load it: TypeError: .*no_such_option"),
])
def test_bad_input_is_a_clear_error(rm_dir, call, message):
    kwargs = {"data_source": "hh", "solution_str": "An answer.", "ground_truth": None,
              "extra_info": {"prompt": CHAT_A}, "model": rm_dir, **call}
    with pytest.raises(RewardkitError, match=message):
        verl.compute_score(**kwargs)


def test_bad_batch_input_names_the_item(rm_dir):
    infos = [extra_info(CHAT_A, 0), {"index": 1}]
    with pytest.raises(RewardkitError, match=r"item 1 \(data_source 'hh', extra_info index 1\): extra_info has no"):
        verl.compute_score_batch(data_sources=["hh", "hh"], solution_strs=["a", "b"], ground_truths=[None, None],
                                 extra_infos=infos, model=rm_dir)
    with pytest.raises(RewardkitError, match=r"item 0 \(data_source 'hh', extra_info index 1\): the response is "
                                             r"empty \(2 of 2 are\)"):
        verl.compute_score_batch(data_sources=["hh", "hh"], solution_strs=["", ""],
                                 extra_infos=[extra_info(CHAT_A, 1)] * 2, model=rm_dir)
    with pytest.raises(RewardkitError, match="1 extra_infos for 2 solution_strs"):
        verl.compute_score_batch(data_sources=["hh", "hh"], solution_strs=["a", "b"],
                                 extra_infos=[extra_info(CHAT_A, 0)], model=rm_dir)
    with pytest.raises(RewardkitError, match="needs solution_strs="):
        verl.compute_score_batch(data_sources=["hh"], solution_strs="a", model=rm_dir)
    assert verl.compute_score_batch(data_sources=[], solution_strs=[], ground_truths=[], extra_infos=[],
                                    model=rm_dir) == []


def test_a_bad_call_does_not_fail_the_calls_batched_with_it(rm_dir, expected):
    rows = ROWS[:2] + [(CHAT_A, "")] + ROWS[2:3]
    fn = bind(verl.compute_score, {"model": rm_dir})

    async def run():
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(None, lambda p=p, r=r: fn(data_source="hh", solution_str=r,
                                                                  extra_info={"prompt": p}))
                 for p, r in rows]
        return await asyncio.gather(*calls, return_exceptions=True)

    got = asyncio.run(run())
    assert isinstance(got[2], RewardkitError) and "the response is empty" in str(got[2])
    assert scores([got[0], got[1], got[3]]) == pytest.approx(expected[:3], abs=TOL)


def test_no_model_and_a_model_that_is_not_text(rm_dir):
    with pytest.raises(RewardkitError, match=r"no reward model: set \+reward\.custom_reward_function\.reward_kwargs"
                                             r"\.model=SPEC .*\$REWARDKIT_VERL_MODEL"):
        verl.compute_score(data_source="hh", solution_str="x", extra_info={"prompt": "p"})
    with pytest.raises(RewardkitError, match="reward_kwargs model: expected a model spec"):
        verl.compute_score(data_source="hh", solution_str="x", extra_info={"prompt": "p"}, model=3)


# -- against a running rewardkit serve ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rm_server(rm_dir, tmp_path_factory):
    server = ServerProcess(["--model", rm_dir, "--api-key", API_KEY, "--precision", "fp32"],
                           tmp_path_factory.mktemp("verl-server") / "server.log")
    yield server
    server.stop()


def test_server_path(rm_server, expected, monkeypatch):
    monkeypatch.setenv("REWARDKIT_API_KEY", API_KEY)
    fn = bind(verl.compute_score, {"model": rm_server.url})
    assert scores(reward_loop_calls(fn, ROWS)) == pytest.approx(expected, abs=TOL)
    batch = bind(verl.compute_score_batch, {"model": rm_server.url, "normalize": True})
    got = batch(data_sources=["hh"] * len(ROWS), solution_strs=[r for _, r in ROWS], ground_truths=[None] * 5,
                extra_infos=[extra_info(p, k) for k, (p, _) in enumerate(ROWS)])
    want = [(r - NORMALIZATION["mean"]) / NORMALIZATION["std"] for r in expected]
    assert scores(got) == pytest.approx(want, abs=TOL)


def test_server_errors_are_clear(rm_server, monkeypatch):
    monkeypatch.delenv("REWARDKIT_API_KEY", raising=False)
    with pytest.raises(RewardkitError, match="401|API key|Unauthorized"):
        verl.compute_score(data_source="hh", solution_str="x", extra_info={"prompt": "p"}, model=rm_server.url)
    with pytest.raises(RewardkitError, match="max_length cannot be set for a served model"):
        verl.compute_score(data_source="hh", solution_str="x", extra_info={"prompt": "p"}, model=rm_server.url,
                           max_length=64)


def test_a_server_that_is_down_is_retried_then_an_error():
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RewardkitError, match=r"cannot reach the server.*\(after 4 attempts\)"):
        verl.compute_score(data_source="hh", solution_str="x", extra_info={"prompt": "p"}, model=down)


# -- verl's own loader and reward managers (skipped without verl) ------------------------------------------------

def verl_or_skip():
    pytest.importorskip("verl", reason="verl is not installed (this test needs verl 0.9 and what its reward "
                                       "managers import: ray, tensordict, omegaconf, aiohttp, codetiming)")
    try:
        from verl.trainer.ppo import reward
    except ImportError as e:
        pytest.skip(f"verl's reward module does not import here: {e}")
    if not hasattr(reward, "resolve_reward_manager_cls"):
        pytest.skip("this test drives verl 0.9's reward loop; the installed verl is older")
    return reward


def verl_config(name, reward_kwargs):
    from omegaconf import OmegaConf

    return OmegaConf.create({"reward": {
        "custom_reward_function": {"path": "pkg://rewardkit.integrations.verl", "name": name,
                                   "reward_kwargs": reward_kwargs},
        "reward_manager": {"source": "register", "name": "naive",
                           "module": {"path": None, "name": "custom_reward_manager"}},
        "sandbox_fusion": None}})


def verl_batch(tokenizer, rows):
    """A rollout batch as verl's trainer hands it to the reward managers: prompt ids left-padded, response ids
    right-padded, one attention mask over both, and the dataset's non-tensor columns."""
    import torch
    from verl import DataProto

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = [ids(p if isinstance(p, str) else p[-1]["content"]) for p, _ in rows]
    responses = [ids(r) for _, r in rows]
    assert [tokenizer.decode(r, skip_special_tokens=True) for r in responses] == [r for _, r in rows]
    width_p, width_r = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    p_ids = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])
    r_ids = torch.tensor([r + [pad] * (width_r - len(r)) for r in responses])
    mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width_r - len(r))
                         for p, r in zip(prompts, responses)])
    return DataProto.from_dict(
        tensors={"prompts": p_ids, "responses": r_ids, "attention_mask": mask,
                 "input_ids": torch.cat([p_ids, r_ids], dim=1)},
        non_tensors={"data_source": ["hh"] * len(rows),
                     "reward_model": [{"style": "model", "ground_truth": ""} for _ in rows],
                     "extra_info": [{"split": "train", "index": k, "prompt": p} for k, (p, _) in enumerate(rows)]})


def last_token_rewards(tensor, data):
    prompt_length = data.batch["prompts"].shape[1]
    lengths = data.batch["attention_mask"][:, prompt_length:].sum(dim=1)
    return [float(tensor[i, n - 1]) for i, n in enumerate(lengths.tolist())]


def test_verl_reward_loop_manager(rm_dir, expected):
    """verl's loader (pkg:// path, name, reward_kwargs) and its reward loop's naive manager, one run_single per
    response, all at once, as its reward-loop worker runs them."""
    reward = verl_or_skip()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    data = verl_batch(tokenizer, ROWS)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        manager = reward.load_reward_manager(verl_config("compute_score", {"model": rm_dir}), tokenizer)

        async def run():
            return await asyncio.gather(*[manager.run_single(data[i:i + 1]) for i in range(len(data))])

        outputs = loop.run_until_complete(run())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert [o["reward_extra_info"] for o in outputs] == [{"score": o["reward_score"]} for o in outputs]
    rm_scores = type(manager).assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    assert last_token_rewards(rm_scores, data) == pytest.approx(expected, abs=TOL)


def test_verl_batch_manager(rm_dir, expected):
    """verl's batch reward manager (verl/workers/reward_manager/batch.py) with compute_score_batch."""
    reward = verl_or_skip()
    from transformers import AutoTokenizer
    from verl.workers.reward_manager import BatchRewardManager

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    data = verl_batch(tokenizer, ROWS)
    fn = reward.get_custom_reward_fn(verl_config("compute_score_batch", {"model": rm_dir}))
    manager = BatchRewardManager(tokenizer=tokenizer, num_examine=0, compute_score=fn)
    out = manager(data, return_dict=True)
    assert last_token_rewards(out["reward_tensor"], data) == pytest.approx(expected, abs=TOL)
    assert out["reward_extra_info"]["score"] == pytest.approx(expected, abs=TOL)
