"""Sample a policy on a prompts file into a resumable JSONL file of generic records (optionally scored).

Each line is one prompt's record in rewardkit's generic format, so `rewardkit score`, `rerank` and `eval` read
the file as it is:

    {"id", "prompt": [messages], "responses": [n texts],
     "rewards", ... (with a scorer: every field its ScoreResult has),
     "meta": {"source": "sample", "sampling": {policy, backend, n, temperature, top_p, max_new_tokens, seed, ...},
              "seed": this prompt's seed, "policy": how it was sampled,
              "prompt_ids", "response_ids", "finish_reasons", "response_logprobs" (where the policy gave them),
              "prompt_source": {file, line, format}, "score": {model, input: token_ids | text, why}}}

Lines go to OUT.partial one batch of prompts at a time (flushed and fsynced), in prompt order, and the file is
renamed to OUT when every prompt is done. Run the same call again after an interruption and it keeps the
complete lines of OUT.partial (a torn last line is cut off), checks that they were written with the same
sampling settings, scorer and prompts, and samples only the prompts not there yet. Batches are cut at fixed
positions of the prompt list; for a policy whose batch rows are computed together (a local model) a batch the
interruption cut short is regenerated whole and only its missing prompts are written, so every prompt is
sampled in the same batch, with the same arithmetic, as in an uninterrupted run: the files are identical.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.data.prompts import Prompt, load_prompts
from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreItem, ScoreResult, Scorer
from rewardkit.sampling.settings import Generation, Policy, SamplingSettings, prompt_seed
from rewardkit.scoring import partial_path, read_partial

WRITER = "rewardkit sample"


class SamplingError(RewardkitError):
    """A sampling run that stopped; what it had finished is kept in OUT.partial."""


@dataclass
class SampleSummary:
    output: Path
    prompts: int  # prompts in the file written
    sampled: int  # prompts sampled in this run
    resumed: int  # prompts kept from an interrupted run
    samples: int  # responses generated in this run
    seconds: float  # spent generating (and scoring) in this run
    score_input: str | None = None  # "token_ids", "text" or "mixed" with a scorer

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """What a run reports as it goes (the CLI draws a bar from it); this base reports nothing."""

    def start(self, total_samples: int, done_samples: int) -> None:
        pass

    def advance(self, samples: int) -> None:
        pass


# -- scoring as it goes --------------------------------------------------------------------------------------
def scorer_tokenizer(scorer: Scorer) -> Any:
    """The tokenizer behind a reward-model scorer, or None (judges, functions, remote scorers...)."""
    return getattr(getattr(scorer, "model", None), "tokenizer", None)


def same_vocabulary(policy_tokenizer: Any, scorer_tok: Any) -> bool:
    """Whether every token of the policy's vocabulary has the same id in the scorer's (a scorer may have added
    a pad token of its own)."""
    mine, theirs = policy_tokenizer.get_vocab(), scorer_tok.get_vocab()
    return all(theirs.get(token) == i for token, i in mine.items())


def token_id_reason(policy: Policy, scorer: Scorer) -> tuple[bool, str]:
    """(score the policy's token ids?, why): only when the scorer takes token ids and reads them with the
    policy's own vocabulary; otherwise the scorer reads the text with its own chat template."""
    if not (hasattr(scorer, "encode_token_ids") and hasattr(scorer, "score_encoded")):
        return False, "the scorer does not take token ids"
    if getattr(getattr(getattr(scorer, "model", None), "meta", None), "is_process", False):
        return False, "a process reward model reads steps from text"
    tok = scorer_tokenizer(scorer)
    if policy.tokenizer is None or tok is None:
        return False, "the policy's tokenizer is not known here"
    if not same_vocabulary(policy.tokenizer, tok):
        return False, "the scorer's tokenizer is not the policy's"
    return True, "the scorer's tokenizer is the policy's"


class ScoreAsYouGo:
    """Scores each batch of generations: from the policy's token ids (prompt ids as rendered, each response's
    generated ids, exactly as sampled) where `token_id_reason` allows and the policy returned them, else from
    the text."""

    def __init__(self, scorer: Scorer, name: str, policy: Policy):
        self.scorer, self.name = scorer, name
        self.use_ids, self.why = token_id_reason(policy, scorer)

    def __call__(self, prompts: Sequence[Prompt], generations: Sequence[Generation]
                 ) -> list[tuple[ScoreResult, dict[str, Any]]]:
        by_ids = [self.use_ids and g.prompt_ids is not None and g.response_ids is not None
                  and all(g.response_ids) for g in generations]
        results: list[ScoreResult | None] = [None] * len(generations)
        ids_rows = [i for i, yes in enumerate(by_ids) if yes]
        text_rows = [i for i, yes in enumerate(by_ids) if not yes]
        if ids_rows:
            encoded = [self.scorer.encode_token_ids(generations[i].prompt_ids, generations[i].response_ids)
                       for i in ids_rows]
            for i, r in zip(ids_rows, self.scorer.score_encoded(encoded)):
                results[i] = r
        if text_rows:
            items = [ScoreItem(prompts[i].messages, [Response(t) for t in generations[i].texts]) for i in text_rows]
            for i, r in zip(text_rows, self.scorer.score(items)):
                results[i] = r
        out = []
        for i, result in enumerate(results):
            why = self.why if by_ids[i] or not self.use_ids else "the policy returned no token ids"
            out.append((result, {"model": self.name, "input": "token_ids" if by_ids[i] else "text", "why": why}))
        return out


# -- records -------------------------------------------------------------------------------------------------
def run_settings(policy: Policy, settings: SamplingSettings, score_name: str | None) -> dict[str, Any]:
    """What every line of one run's file shares and a resumed run must match."""
    return {**policy.identity(), **settings.to_json(), "score": score_name}


def sample_record(prompt: Prompt, generation: Generation, run: dict[str, Any], settings: SamplingSettings,
                  policy_info: dict[str, Any], scored: tuple[ScoreResult, dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """One prompt's line: a generic record (see the module docstring)."""
    if len(generation.texts) != settings.n:
        raise SamplingError(f"prompt {prompt.id!r}: the policy returned {len(generation.texts)} responses, "
                            f"not n={settings.n}")
    meta: dict[str, Any] = {"source": "sample", "sampling": run, "seed": prompt_seed(settings.seed, prompt.id),
                            "policy": policy_info}
    for key, value in (("prompt_ids", generation.prompt_ids), ("response_ids", generation.response_ids),
                       ("finish_reasons", generation.finish_reasons), ("response_logprobs", generation.logprobs)):
        if value is not None:
            meta[key] = value
    meta["prompt_source"] = prompt.source
    row: dict[str, Any] = {"id": prompt.id, "prompt": prompt.messages, "responses": list(generation.texts)}
    if scored is not None:
        result, how = scored
        row.update(result.to_json())
        meta["score"] = how
    row["meta"] = meta
    return row


def check_resumable(rows: list[dict[str, Any]], prompts: Sequence[Prompt], run: dict[str, Any], partial: Path
                    ) -> set[str]:
    """The ids an interrupted run finished, after checking that it sampled these prompts with these settings."""
    by_id = {p.id: p for p in prompts}
    done = set()
    for n, row in enumerate(rows, 1):
        where = f"{partial}:{n}"
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        theirs = meta.get("sampling") if isinstance(meta.get("sampling"), dict) else {}
        if theirs != run:
            diff = sorted(k for k in set(run) | set(theirs) if theirs.get(k) != run.get(k))
            shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {run.get(k)!r} now" for k in diff[:4])
            raise SamplingError(f"{where}: written with other settings ({shown}); run with the same settings to "
                                f"resume, or delete {partial} to start over")
        prompt = by_id.get(row["id"])
        if prompt is None:
            raise SamplingError(f"{where}: id {row['id']!r} is not in the prompts file: {partial} belongs to "
                                f"another input; delete it to start over")
        if row.get("prompt") != prompt.messages:
            raise SamplingError(f"{where}: the prompt of id {row['id']!r} differs from the prompts file's: {partial} "
                                f"belongs to another input; delete it to start over")
        if row["id"] in done:
            raise SamplingError(f"{where}: id {row['id']!r} is there twice; delete {partial} to start over")
        done.add(row["id"])
    return done


# -- the run -------------------------------------------------------------------------------------------------
def sample_to_file(policy: Policy, prompts: Sequence[Prompt], output: str | os.PathLike, settings: SamplingSettings,
                   *, batch_size: int = 8, scorer: Scorer | None = None, score_name: str | None = None,
                   overwrite: bool = False, progress: Progress | None = None) -> SampleSummary:
    """Sample every prompt into `output` (see the module docstring); `batch_size` prompts per policy call."""
    if batch_size < 1:
        raise RewardkitError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        raise RewardkitError("no prompts to sample")
    output = Path(output)
    if output.exists() and not overwrite:
        raise RewardkitError(f"{output} already exists; pass overwrite (--overwrite) to replace it")
    progress = progress or Progress()
    score_name = score_name or (None if scorer is None else str(scorer.describe().get("name") or "scorer"))
    run = run_settings(policy, settings, score_name)
    partial = partial_path(output)
    done = check_resumable(read_partial(partial, WRITER), prompts, run, partial)
    score = ScoreAsYouGo(scorer, score_name, policy) if scorer is not None else None
    progress.start(len(prompts) * settings.n, len(done) * settings.n)
    sampled = 0
    inputs: set[str] = set()
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as out:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start: start + batch_size])
            todo = [p for p in batch if p.id not in done]
            if not todo:
                continue
            run_on = todo if policy.batch_invariant else batch
            finished: list[tuple[Prompt, Generation]] = []
            failure: Exception | None = None
            try:
                for prompt, generation in zip(run_on, policy.generate(run_on, settings)):
                    finished.append((prompt, generation))
            except (RewardkitError, OSError) as e:
                failure = e
            if failure is None and len(finished) != len(run_on):
                failure = SamplingError(f"the policy returned {len(finished)} generations for {len(run_on)} prompts")
            keep = [(p, g) for p, g in finished if p.id not in done]
            if keep:
                scores = score([p for p, _ in keep], [g for _, g in keep]) if score is not None else [None] * len(keep)
                policy_info = policy.describe()
                for (prompt, generation), scored in zip(keep, scores):
                    row = sample_record(prompt, generation, run, settings, policy_info, scored)
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    inputs.add(_score_input(scored))
                out.flush()
                os.fsync(out.fileno())
                done.update(p.id for p, _ in keep)
                sampled += len(keep)
                progress.advance(len(keep) * settings.n)
            if failure is not None:
                raise SamplingError(f"{failure}. {len(done)} of {len(prompts)} prompts are sampled and kept in "
                                    f"{partial}: run the same command again to continue") from failure
    os.replace(partial, output)
    inputs.discard(None)
    return SampleSummary(output, len(prompts), sampled, len(prompts) - sampled, sampled * settings.n,
                         time.perf_counter() - started,
                         None if not inputs else inputs.pop() if len(inputs) == 1 else "mixed")


def _score_input(scored) -> str | None:
    return None if scored is None else scored[1]["input"]


# -- the library entry point ---------------------------------------------------------------------------------
def load_policy(policy: str, *, endpoint: str | None = None, precision: str = "auto",
                tokenizer: str | None = None, **endpoint_options) -> Policy:
    """A policy by name: with `endpoint` (an http(s)://HOST/v1 base URL), the model served there under that name;
    else a local causal LM (a directory, a hub id or the packaged "smollm2"). `tokenizer` (endpoints only): the
    served model's tokenizer, loaded to let a scorer read the returned token ids."""
    if not isinstance(policy, str) or not policy.strip():
        raise RewardkitError("--policy names no model")
    if endpoint:
        from rewardkit.models.reward_model import load_tokenizer
        from rewardkit.sampling.endpoint import EndpointPolicy

        tok = load_tokenizer(tokenizer) if tokenizer else None
        return EndpointPolicy(endpoint, policy, tokenizer=tok, **endpoint_options)
    if tokenizer or endpoint_options:
        given = ", ".join(["tokenizer"] * bool(tokenizer) + sorted(endpoint_options))
        raise RewardkitError(f"{given}: endpoint options; a local policy has its own tokenizer")
    from rewardkit.sampling.local import LocalPolicy

    return LocalPolicy.from_pretrained(policy, precision=precision)


def sample(policy: str | Policy, prompts: str | os.PathLike | Sequence[Prompt], output: str | os.PathLike, *,
           n: int = 4, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256, seed: int = 0,
           batch_size: int = 8, endpoint: str | None = None, score: str | Scorer | None = None,
           score_name: str | None = None, precision: str = "auto", format: str | None = None,
           limit: int | None = None, overwrite: bool = False, progress: Progress | None = None,
           **policy_options) -> SampleSummary:
    """Sample `n` responses per prompt from a policy into `output` (generic JSONL, resumable; see the module
    docstring), and score them as they come when `score` names a model (any spec `load_scorer` takes) or is a
    Scorer (named in the records by `score_name`, default its describe()'s name). `prompts` is a file
    (rewardkit.data.prompts) or a list of Prompts; `policy` a name (see `load_policy`, which `policy_options` go
    to) or a Policy."""
    settings = SamplingSettings(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    if not isinstance(prompts, (str, os.PathLike)):
        prompt_list = list(prompts)
    else:
        prompt_list = load_prompts(prompts, format=format, limit=limit)
    if isinstance(policy, str):
        policy = load_policy(policy, endpoint=endpoint, precision=precision, **policy_options)
    elif policy_options:
        raise RewardkitError(f"{', '.join(sorted(policy_options))}: options for loading a policy by name")
    scorer = score
    if isinstance(score, str):
        from rewardkit.models.spec import load_scorer

        scorer, score_name = load_scorer(score, precision=precision), score_name or score
    return sample_to_file(policy, prompt_list, output, settings, batch_size=batch_size, scorer=scorer,
                          score_name=score_name, overwrite=overwrite, progress=progress)

