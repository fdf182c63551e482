"""A rewardkit reward model as verl's custom reward function (`compute_score`, and `compute_score_batch` for
verl's batch reward manager).

verl loads a reward function by file (or package) path and name, so no Python code of the user's chooses the
model: it comes from the config's reward kwargs, which verl adds to every call, or else from
$REWARDKIT_VERL_MODEL. verl 0.9:

    reward.custom_reward_function.path=pkg://rewardkit.integrations.verl
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.model=http://rm-host:8000     # or a checkpoint directory

(verl 0.7: the same keys without `reward.`; its batch manager, `reward_model.use_reward_loop=False
reward_model.reward_manager=batch`, calls `compute_score_batch`.) docs/rl.md has the whole recipe.

How verl calls it. Every reward manager of verl's reward loop (naive, dapo, limited, ...) calls
`compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)` once per response,
from a thread pool, many at once; verl's older batch manager calls `compute_score_batch(data_sources=,
solution_strs=, ground_truths=, extra_infos=, **reward_kwargs)` once per training batch (read in verl 0.9.1:
verl/trainer/ppo/reward.py, verl/experimental/reward_loop/reward_manager/naive.py,
verl/workers/reward_manager/batch.py; tests/integrations/test_verl.py drives them). `solution_str` is
the decoded response only: the prompt a reward model needs is read from `extra_info["prompt"]` (text, or the
chat as {role, content} messages), which the user's data preprocessing puts there; `ground_truth` and
`data_source` are not used (they only name an item in errors).

The model is loaded once per process and kept (keyed by the spec and options): a checkpoint, hub id, judge:,
dpo: or python: spec is scored in this process, an http(s) URL through RewardClient against a running
`rewardkit serve` (its API key from $REWARDKIT_API_KEY). Calls that arrive while the model is busy are scored
together as the next batch, so the per-response calls of verl's reward loop still reach the model as batches
and the responses of one prompt still share its tokens (rewardkit.integrations.rewards).

Each call returns `{"score": reward}`: verl's managers take the "score" as the reward and log every key (a
plain float would be logged as "acc").
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.integrations.rewards import CompletionRewards, conversation, load_reward_scorer

MODEL_ENV = "REWARDKIT_VERL_MODEL"
PROMPT_KEY = "prompt"
# Keyword arguments verl's reward loop adds when verl itself serves a reward model (reward.reward_model.enable):
# they belong to verl's model, not to rewardkit's, and are ignored.
VERL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
DOCS = "docs/rl.md, section verl"


def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                  extra_info: Any = None, **reward_kwargs: Any) -> dict[str, float]:
    """The reward of one response, as `{"score": reward}`.

    reward_kwargs (verl's `custom_reward_function.reward_kwargs`):
        model:        the model spec (default: $REWARDKIT_VERL_MODEL).
        objective:    score with this objective of a multi-objective model.
        normalize:    standardise with the model's stored mean and std.
        empty_reward: the reward of an empty response (default: an error naming it).
        prompt_key:   where in extra_info the prompt is (default "prompt").
        anything else: loading options of a spec (max_length, precision, batch_tokens, share_prefix, ...).
    """
    options, prompt_key = _split_kwargs(reward_kwargs)
    where = _name(None, data_source, extra_info)
    pair = _pair(extra_info, solution_str, prompt_key, where=where)
    batcher = _batcher(options)
    _check_empty(batcher, [pair], [where])
    return {"score": batcher.score([pair])[0]}


def compute_score_batch(data_sources: Sequence[Any] | None = None, solution_strs: Sequence[Any] | None = None,
                        ground_truths: Sequence[Any] | None = None, extra_infos: Sequence[Any] | None = None,
                        **reward_kwargs: Any) -> list[dict[str, float]]:
    """The rewards of a batch of responses, one `{"score": reward}` each, in order; reward_kwargs as for
    compute_score."""
    options, prompt_key = _split_kwargs(reward_kwargs)
    if solution_strs is None or isinstance(solution_strs, (str, bytes, Mapping)):
        raise RewardkitError("compute_score_batch needs solution_strs=: a list of response texts (verl's batch "
                             "reward manager passes it)")
    n = len(solution_strs)
    for name, values in (("data_sources", data_sources), ("extra_infos", extra_infos),
                         ("ground_truths", ground_truths)):
        if values is not None and len(values) != n:
            raise RewardkitError(f"{len(values)} {name} for {n} solution_strs: they must pair up")
    pairs, names = [], []
    for k in range(n):
        extra = extra_infos[k] if extra_infos is not None else None
        names.append(_name(k, data_sources[k] if data_sources is not None else None, extra))
        pairs.append(_pair(extra, solution_strs[k], prompt_key, where=names[-1]))
    batcher = _batcher(options)
    _check_empty(batcher, pairs, names)
    rewards = batcher.score(pairs) if pairs else []
    return [{"score": r} for r in rewards]


# -- the inputs --------------------------------------------------------------------------------------------------

def _split_kwargs(reward_kwargs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    options = {k: v for k, v in reward_kwargs.items() if k not in VERL_KWARGS}
    prompt_key = options.pop("prompt_key", PROMPT_KEY)
    if not isinstance(prompt_key, str) or not prompt_key:
        raise RewardkitError(f"prompt_key must be the name of an extra_info field, got {prompt_key!r}")
    return options, prompt_key


def _name(index: int | None, data_source: Any, extra_info: Any) -> str:
    """How an error names an item: its position in the batch, and what verl's data gave to find it again."""
    parts = [f"item {index}"] if index is not None else ["the item"]
    if data_source is not None:
        parts.append(f"data_source {str(data_source)!r}")
    if isinstance(extra_info, Mapping) and extra_info.get("index") is not None:
        parts.append(f"extra_info index {extra_info['index']}")
    return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def _pair(extra_info: Any, response: Any, prompt_key: str, *, where: str) -> tuple[Any, str]:
    """(prompt, response) of one item, checked here so that a bad item fails alone, before batching."""
    if not isinstance(response, str):
        raise RewardkitError(f"{where}: solution_str must be the decoded response text, got "
                             f"{type(response).__name__}")
    if not isinstance(extra_info, Mapping):
        got = "none" if extra_info is None else f"a {type(extra_info).__name__}"
        raise RewardkitError(f"{where}: a reward model needs the prompt, and verl passes only the response: put "
                             f"the prompt in extra_info[{prompt_key!r}] when preprocessing the data (extra_info "
                             f"is {got}; {DOCS})")
    prompt = extra_info.get(prompt_key)
    if prompt is None:
        keys = ", ".join(map(str, extra_info)) or "none"
        raise RewardkitError(f"{where}: extra_info has no {prompt_key!r} (its keys: {keys}): a reward model needs "
                             f"the prompt, and verl passes only the response; put the prompt there when "
                             f"preprocessing the data ({DOCS})")
    if not isinstance(prompt, str) and hasattr(prompt, "tolist"):
        prompt = prompt.tolist()  # a chat read back from parquet through pandas is a numpy array of dicts
    if isinstance(prompt, tuple):
        prompt = list(prompt)
    try:
        messages, _ = conversation(prompt, response, 0)
    except RewardkitError as e:  # "prompt 0: expected ..." -> "ITEM: extra_info['prompt']: expected ..."
        raise RewardkitError(f"{where}: extra_info[{prompt_key!r}]{str(e).removeprefix('prompt 0')}") from None
    return messages, response


def _check_empty(batcher: _Batcher, pairs: list[tuple[Any, str]], names: list[str]) -> None:
    """An empty response fails its own call here; inside a batch it would fail every call batched with it."""
    if batcher.rewards.empty_reward is not None:
        return
    empty = [k for k, (_, response) in enumerate(pairs) if not response]
    if empty:
        more = f" ({len(empty)} of {len(pairs)} are)" if len(empty) > 1 else ""
        raise RewardkitError(f"{names[empty[0]]}: the response is empty{more}: a reward model has no response "
                             "token to read; set reward_kwargs.empty_reward=... to give empty responses a fixed "
                             "reward")


# -- the model, once per process ---------------------------------------------------------------------------------

_batchers: dict[str, _Batcher] = {}
_load_lock = threading.Lock()


def _batcher(options: dict[str, Any]) -> _Batcher:
    """The batcher for these options, loading the model on the first call (once, however many threads ask)."""
    options = dict(options)
    model = options.pop("model", None)
    source = "reward_kwargs model"
    if model is None:
        model, source = os.environ.get(MODEL_ENV) or None, f"${MODEL_ENV}"
    if model is None:
        raise RewardkitError(f"no reward model: set +reward.custom_reward_function.reward_kwargs.model=SPEC in verl's "
                             f"config (custom_reward_function.reward_kwargs in verl 0.7) or ${MODEL_ENV} (a "
                             f"checkpoint, a hub id, or the URL of a rewardkit serve)")
    if not isinstance(model, str):
        raise RewardkitError(f"{source}: expected a model spec (text), got {type(model).__name__}")
    key = json.dumps({"model": model, **options}, sort_keys=True, default=repr)
    batcher = _batchers.get(key)
    if batcher is not None:
        return batcher
    with _load_lock:
        if key not in _batchers:
            _batchers[key] = _Batcher(_load(model, source, options))
        return _batchers[key]


def _load(model: str, source: str, options: dict[str, Any]) -> CompletionRewards:
    objective = options.pop("objective", None)
    normalize = options.pop("normalize", False)
    empty_reward = options.pop("empty_reward", None)
    if objective is not None and not isinstance(objective, str):
        raise RewardkitError(f"objective must be an objective's name, got {objective!r}")
    if not isinstance(normalize, bool):
        raise RewardkitError(f"normalize must be true or false, got {normalize!r}")
    if empty_reward is not None and (isinstance(empty_reward, bool) or not isinstance(empty_reward, (int, float))):
        raise RewardkitError(f"empty_reward must be a number, got {empty_reward!r}")
    try:
        scorer = load_reward_scorer(model, **options)
        return CompletionRewards(scorer, objective=objective, normalize=normalize,
                                 empty_reward=None if empty_reward is None else float(empty_reward))
    except RewardkitError:
        raise
    except Exception as e:  # a missing path, an unknown option: say which model and where it was set
        raise RewardkitError(f"{source} {model!r}: cannot load it: {type(e).__name__}: {e}") from e


def rewards_for(**reward_kwargs: Any) -> CompletionRewards:
    """The model these reward_kwargs name, as the calls above use it: loaded on first use, then kept (a worker
    can call this at start-up to load the model before its first batch)."""
    options, _ = _split_kwargs(reward_kwargs)
    return _batcher(options).rewards


def clear_cache() -> None:
    """Forget the loaded models (the next call loads again)."""
    with _load_lock:
        _batchers.clear()


class _Call:
    def __init__(self, pairs: list[tuple[Any, str]]):
        self.pairs = pairs
        self.rewards: list[float] | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.rewards is not None or self.error is not None

    def result(self) -> list[float]:
        if self.error is not None:
            raise self.error
        return self.rewards


class _Batcher:
    """One model's calls, scored one batch at a time: a call that arrives while a batch is being scored waits,
    and when that batch is done the first waiting call scores everything that has arrived meanwhile as the next
    batch (no timer, so a lone call is scored at once). Every call in a failed batch gets its error."""

    def __init__(self, rewards: CompletionRewards):
        self.rewards = rewards
        self.cond = threading.Condition()
        self.waiting: list[_Call] = []
        self.busy = False

    def score(self, pairs: list[tuple[Any, str]]) -> list[float]:
        call = _Call(pairs)
        with self.cond:
            self.waiting.append(call)
            while self.busy and not call.done:
                self.cond.wait()
            if call.done:
                return call.result()
            self.busy = True
            batch, self.waiting = self.waiting, []
        try:
            self._run(batch)
        finally:
            with self.cond:
                self.busy = False
                self.cond.notify_all()
        return call.result()

    def _run(self, batch: list[_Call]) -> None:
        prompts = [p for c in batch for p, _ in c.pairs]
        responses = [r for c in batch for _, r in c.pairs]
        try:
            rewards = self.rewards(prompts, responses)
        except BaseException as e:  # whatever ended the batch, every call in it must wake with an outcome
            for c in batch:
                c.error = e
            return
        start = 0
        for c in batch:
            c.rewards = rewards[start:start + len(c.pairs)]
            start += len(c.pairs)
