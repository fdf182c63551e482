"""The sampled file: generic records the loader reads, resumable with no duplicates or losses, scored as it goes."""

import json

import pytest

from rewardkit.data import load_records
from rewardkit.data.prompts import load_prompts
from rewardkit.errors import DataError, RewardkitError
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import FunctionScorer
from rewardkit.sampling import SamplingError, SamplingSettings, sample, sample_to_file
from rewardkit.scoring import partial_path

from sampling_helpers import QUESTIONS, read_rows

SETTINGS = SamplingSettings(n=2, max_new_tokens=6, seed=11)


class FailingAfter:
    """The policy, but its call number `after` (0-based) fails as an endpoint that went down would."""

    def __init__(self, policy, after):
        self.policy, self.after, self.calls = policy, after, 0
        self.batch_invariant, self.tokenizer = policy.batch_invariant, policy.tokenizer

    def generate(self, prompts, settings):
        self.calls += 1
        if self.calls > self.after:
            raise RewardkitError("injected: the policy went away")
        yield from self.policy.generate(prompts, settings)

    def identity(self):
        return self.policy.identity()

    def describe(self):
        return self.policy.describe()


def test_n_responses_per_prompt_as_generic_records(policy, prompts_file, tmp_path):
    out = tmp_path / "s.jsonl"
    summary = sample_to_file(policy, load_prompts(prompts_file), out, SETTINGS, batch_size=4)
    assert (summary.prompts, summary.sampled, summary.resumed, summary.samples) == (10, 10, 0, 20)
    assert not partial_path(out).exists()
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(10)]
    meta = rows[0]["meta"]
    assert meta["sampling"] == {"policy": policy.name, "backend": "local", "precision": "fp32", "n": 2,
                                "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 11, "score": None}
    assert meta["prompt_ids"][0] == policy.tokenizer.bos_token_id and len(meta["response_ids"]) == 2
    assert meta["policy"]["backend"] == "local" and meta["prompt_source"]["line"] == 1
    records = load_records(out).records  # the generic format, as rewardkit score / rerank / eval read it
    assert [r.id for r in records] == [r["id"] for r in rows]
    assert all(len(r.responses) == 2 for r in records)
    assert records[3].prompt == [{"role": "user", "content": QUESTIONS[3]}]
    assert [x.content for x in records[3].responses] == rows[3]["responses"]


def test_the_same_seed_reproduces_the_file(policy, prompts_file, tmp_path):
    prompts = load_prompts(prompts_file)
    sample_to_file(policy, prompts, tmp_path / "a.jsonl", SETTINGS, batch_size=3)
    sample_to_file(policy, prompts, tmp_path / "b.jsonl", SETTINGS, batch_size=3)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    sample_to_file(policy, prompts, tmp_path / "c.jsonl", SamplingSettings(n=2, max_new_tokens=6, seed=12),
                   batch_size=3)
    assert [r["responses"] for r in read_rows(tmp_path / "c.jsonl")] != [r["responses"] for r in
                                                                          read_rows(tmp_path / "a.jsonl")]


def test_an_interrupted_run_resumes_with_no_duplicates_or_losses(policy, prompts_file, tmp_path):
    prompts = load_prompts(prompts_file)
    whole = tmp_path / "whole.jsonl"
    sample_to_file(policy, prompts, whole, SETTINGS, batch_size=3)

    out = tmp_path / "s.jsonl"
    with pytest.raises(SamplingError, match="injected.*6 of 10 prompts are sampled and kept in .*s.jsonl.partial"):
        sample_to_file(FailingAfter(policy, 2), prompts, out, SETTINGS, batch_size=3)
    assert len(read_rows(partial_path(out))) == 6 and not out.exists()
    with open(partial_path(out), "a") as f:  # the run died while writing its next line
        f.write('{"id": "q6", "prompt": [{"role": "us')
    summary = sample_to_file(policy, prompts, out, SETTINGS, batch_size=3)
    assert (summary.sampled, summary.resumed) == (4, 6)
    assert out.read_bytes() == whole.read_bytes()


def test_a_batch_cut_short_is_regenerated_whole(policy, prompts_file, tmp_path):
    """The partial file ends inside a batch: the batch runs again whole and only its missing prompts are
    written, so they were computed in the same batch as in the uninterrupted run (bit-identical)."""
    prompts = load_prompts(prompts_file)
    whole = tmp_path / "whole.jsonl"
    sample_to_file(policy, prompts, whole, SETTINGS, batch_size=3)
    out = tmp_path / "s.jsonl"
    partial_path(out).write_text("".join(line + "\n" for line in whole.read_text().splitlines()[:4]))
    summary = sample_to_file(policy, prompts, out, SETTINGS, batch_size=3)
    assert (summary.sampled, summary.resumed) == (6, 4)
    assert out.read_bytes() == whole.read_bytes()


def test_a_partial_file_from_other_settings_or_input_is_refused(policy, prompts_file, tmp_path):
    prompts = load_prompts(prompts_file)
    out = tmp_path / "s.jsonl"
    with pytest.raises(SamplingError):
        sample_to_file(FailingAfter(policy, 1), prompts, out, SETTINGS, batch_size=3)
    with pytest.raises(SamplingError, match=r"s.jsonl.partial:1: written with other settings \(seed: 11 there, 12 "
                                            r"now\)"):
        sample_to_file(policy, prompts, out, SamplingSettings(n=2, max_new_tokens=6, seed=12))
    with pytest.raises(SamplingError, match="n: 2 there, 3 now"):
        sample_to_file(policy, prompts, out, SamplingSettings(n=3, max_new_tokens=6, seed=11))
    with pytest.raises(SamplingError, match="score: None there, 'gold' now"):
        sample_to_file(policy, prompts, out, SETTINGS, scorer=FunctionScorer(lambda p, r: 0.0), score_name="gold")
    changed = [p for p in prompts]
    changed[1] = type(prompts[1])("q1", [{"role": "user", "content": "another question"}])
    with pytest.raises(SamplingError, match=r"partial:2: the prompt of id 'q1' differs"):
        sample_to_file(policy, changed, out, SETTINGS)
    with pytest.raises(SamplingError, match=r"id 'q0' is not in the prompts file"):
        sample_to_file(policy, prompts[3:], out, SETTINGS)
    partial_path(out).write_text('{"id": "q0"}\nnot json\n')
    with pytest.raises(DataError, match=r"s\.jsonl\.partial:2: not a line written by rewardkit sample"):
        sample_to_file(policy, prompts, out, SETTINGS)


def test_an_existing_output_is_kept_unless_overwrite(policy, prompts_file, tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(RewardkitError, match="already exists"):
        sample_to_file(policy, load_prompts(prompts_file), out, SETTINGS)
    sample_to_file(policy, load_prompts(prompts_file, limit=2), out, SETTINGS, overwrite=True)
    assert len(read_rows(out)) == 2


def test_score_reads_the_policys_token_ids_when_the_tokenizer_is_the_same(policy, prompts_file, same_tok_rm,
                                                                          tmp_path):
    scorer = RewardModelScorer.from_pretrained(same_tok_rm, precision="fp32")
    out = tmp_path / "s.jsonl"
    summary = sample_to_file(policy, load_prompts(prompts_file, limit=4), out, SETTINGS, scorer=scorer,
                             score_name="rm")
    assert summary.score_input == "token_ids"
    rows = read_rows(out)
    for row in rows:
        assert row["meta"]["score"] == {"model": "rm", "input": "token_ids",
                                        "why": "the scorer's tokenizer is the policy's"}
        assert len(row["rewards"]) == 2 and len(row["response_tokens"]) == 2 and len(row["truncated"]) == 2
        assert row["meta"]["sampling"]["score"] == "rm"
    # the rewards are those of the exact ids sampled (another batch composition: an fp32 tolerance)
    again = scorer.score_token_ids([(r["meta"]["prompt_ids"], r["meta"]["response_ids"]) for r in rows])
    for row, result in zip(rows, again):
        assert row["rewards"] == pytest.approx(result.rewards, abs=1e-5)
        assert row["response_tokens"] == [len(ids) for ids in row["meta"]["response_ids"]]


def test_score_reads_the_text_for_another_tokenizer_or_a_text_scorer(policy, prompts_file, other_tok_rm, tmp_path):
    scorer = RewardModelScorer.from_pretrained(other_tok_rm, precision="fp32")
    out = tmp_path / "s.jsonl"
    sample_to_file(policy, load_prompts(prompts_file, limit=3), out, SETTINGS, scorer=scorer, score_name="bert")
    rows = read_rows(out)
    assert {r["meta"]["score"]["input"] for r in rows} == {"text"}
    assert rows[0]["meta"]["score"]["why"] == "the scorer's tokenizer is not the policy's"
    again = scorer.score(load_records(out).records)
    for row, result in zip(rows, again):
        assert row["rewards"] == pytest.approx(result.rewards, abs=1e-5)

    gold = FunctionScorer(lambda prompt, response: float(len(response.content)), name="length")
    sample_to_file(policy, load_prompts(prompts_file, limit=3), tmp_path / "g.jsonl", SETTINGS, scorer=gold)
    for row in read_rows(tmp_path / "g.jsonl"):
        assert row["rewards"] == [float(len(t)) for t in row["responses"]]  # the same Python arithmetic
        assert row["meta"]["score"] == {"model": "length", "input": "text",
                                        "why": "the scorer does not take token ids"}


def test_the_library_entry_point(policy_dir, prompts_file, tmp_path):
    out = tmp_path / "s.jsonl"
    summary = sample(str(policy_dir), prompts_file, out, n=3, max_new_tokens=4, seed=1, limit=2, precision="fp32",
                     score="python:sampling_helpers:length_scorer")
    rows = read_rows(out)
    assert summary.samples == 6 and [len(r["responses"]) for r in rows] == [3, 3]
    assert rows[0]["meta"]["sampling"]["score"] == "python:sampling_helpers:length_scorer"
    with pytest.raises(RewardkitError, match="n must be an integer >= 1"):
        sample(str(policy_dir), prompts_file, tmp_path / "x.jsonl", n=0)
    with pytest.raises(RewardkitError, match="tokenizer: endpoint options"):
        sample(str(policy_dir), prompts_file, tmp_path / "x.jsonl", tokenizer="smollm2")
    assert not (tmp_path / "x.jsonl").exists() and not partial_path(tmp_path / "x.jsonl").exists()
    assert json.loads(out.read_text().splitlines()[0])["id"] == "q0"
