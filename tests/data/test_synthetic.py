"""The synthetic preference task: determinism, a gold reward that means what it says, labels that follow it
at the Bradley–Terry rate, a length effect that is not the answer, and records that survive a JSONL trip."""

from __future__ import annotations

import re

import pytest

from rewardkit.data import load_records, write_canonical_jsonl
from rewardkit.data.record import Response, user_prompt
from rewardkit.data.synthetic import (
    EVASIONS, EVASIVE, FILLER, FILLERS, HELD_OUT_SUBJECTS, MAX_RESPONSES, NEUTRAL_OPENERS, POLITE, POLITE_CLOSERS,
    POLITE_OPENERS, RUDE, RUDE_CLOSERS, RUDE_OPENERS, TOPICS, bayes_accuracy, gold_features, gold_reward,
    gold_scorer, make_synthetic_preferences, synthetic_splits, topic_of,
)
from rewardkit.eval.evaluate import evaluate


@pytest.fixture(scope="module")
def pairs():
    return make_synthetic_preferences(2000, seed=0)


def _json(records):
    return [r.to_json() for r in records]


def test_same_seed_same_records_and_different_seeds_differ():
    a = make_synthetic_preferences(100, seed=3)
    assert _json(a) == _json(make_synthetic_preferences(100, seed=3))
    assert _json(a) != _json(make_synthetic_preferences(100, seed=4))
    assert [r.id for r in a[:2]] == ["synthetic-0", "synthetic-1"]


def test_splits_hold_out_subjects():
    train, test = synthetic_splits(300, 100, seed=0)
    assert train[0].id == "synthetic-train-0" and test[0].id == "synthetic-test-0"
    held_out = [s for t in TOPICS for s in t.subjects[-HELD_OUT_SUBJECTS:]]
    train_text = " ".join(r.prompt[0]["content"] + " " + " ".join(x.content for x in r.responses) for r in train)
    assert not any(s in train_text for s in held_out)  # not in prompts, not even in off-topic answers
    assert all(any(s in r.prompt[0]["content"] for s in held_out) for r in test)


def test_phrase_banks_say_what_gold_reads():
    """Each advice, detail and subject is about its own topic only; each tone, evasion or filler phrase
    carries exactly one marker of its kind and nothing else gold reads."""
    for topic in TOPICS:
        for template in (*topic.subjects, *topic.advice, *topic.details):
            text = template.format(subject=topic.subjects[0], n=5)
            words = set(re.findall(r"[a-z0-9']+", text.lower()))
            assert topic_of(text) == topic.name, text
            assert all(not (words & t.lexicon) for t in TOPICS if t is not topic), text
            assert not (POLITE.search(text) or RUDE.search(text) or EVASIVE.search(text) or FILLER.search(text))
    kinds = {POLITE: POLITE_OPENERS + POLITE_CLOSERS, RUDE: RUDE_OPENERS + RUDE_CLOSERS, EVASIVE: EVASIONS,
             FILLER: FILLERS}
    for pattern, bank in kinds.items():
        for text in bank:
            assert len(pattern.findall(text.lower())) == 1, text
            assert not any(other.search(text.lower()) for other in kinds if other is not pattern), text
            assert topic_of(text) is None, text
    assert not any(p.search(t.lower()) for p in kinds for t in NEUTRAL_OPENERS)


def test_gold_reward_rewards_relevance_tone_detail_and_penalises_padding():
    prompt = user_prompt("Any tips for growing tomatoes?")
    good = "Happy to help! Check the soil with your finger before watering. Plant the seeds 6 millimetres deep."
    g = lambda text: gold_reward(prompt, Response(text))  # noqa: E731
    assert gold_features(prompt, Response(good)) == {
        "evasion": 0.0, "relevance": 1.0, "tone": 0.4, "detail": 0.7, "length": 0.0}
    assert g(good) == 2.1
    assert g(good.replace("Happy to help!", "Ugh, fine.")) == 1.1  # rude instead of polite
    assert g("Happy to help! Keep each function short. Keep functions under 40 lines.") < g(good)  # off topic
    assert g("It really depends on a lot of things.") == -1.0  # evasive: no topic, dodges
    # Length is not monotone: too short loses, and so does padding the good answer out.
    assert g("Check the soil.") < g("Check the soil with your finger before watering it.")
    padded = good + " At the end of the day, it is what it is. Check the soil with your finger before watering."
    assert g(padded) == pytest.approx(g(good) - 1.0)


def test_generator_traits_match_gold_features(pairs):
    for rec in pairs[:300]:
        for response, traits in zip(rec.responses, rec.meta["traits"]):
            f = gold_features(rec.prompt, response)
            kind = traits.split("+")[0]
            assert f["relevance"] == {"on-topic": 1.0, "off-topic": -1.0, "evasive": 0.0}[kind]
            assert (f["evasion"] < 0) == (kind == "evasive")
            assert (f["detail"] > 0) == ("detail" in traits)


def test_gold_scorer_reproduces_meta_gold(pairs):
    scorer = gold_scorer()
    assert scorer.describe()["name"] == "gold"
    results = scorer.score(pairs[:50])
    # exact: the same pure Python function of the same texts (rounded to 6 decimals) that wrote meta["gold"]
    assert [res.rewards for res in results] == [rec.meta["gold"] for rec in pairs[:50]]


def test_labels_follow_gold_at_the_bradley_terry_rate_and_length_is_not_the_answer(pairs):
    ceiling = bayes_accuracy(pairs)
    assert 0.8 < ceiling < 0.95  # noisy enough to be realistic, clean enough to learn from
    assert all(r.chosen in (0, 1) and r.meta["gold"][0] != r.meta["gold"][1] for r in pairs)
    report = evaluate(pairs, gold_scorer().score(pairs))
    assert report["n_comparisons"] == 2000
    assert abs(report["accuracy"] - ceiling) < 0.03
    # Mean P(response 0 wins) matches how often it was chosen: the labels are sampled, not thresholded.
    mean_p = sum(r.meta["gold_p"] for r in pairs) / len(pairs)
    assert abs(mean_p - sum(r.chosen == 0 for r in pairs) / len(pairs)) < 0.03
    assert report["longer_baseline_accuracy"] < min(0.65, ceiling - 0.2)
    assert {r.subset for r in pairs} == {"evasion", "relevance", "tone", "detail", "length"}


def test_rankings_are_plackett_luce_permutations():
    records = make_synthetic_preferences(300, seed=1, responses_per_prompt=4)
    for rec in records:
        assert sorted(rec.ranking) == [0, 1, 2, 3] and rec.chosen is None
        assert len(set(rec.meta["gold"])) == 4
        assert sum(rec.meta["gold_top_p"]) == pytest.approx(1.0)
    # Any two responses are ordered with the Bradley–Terry probability, so pairwise agreement with gold
    # matches the ceiling computed over every pair.
    comps = [(rec, c) for rec in records for c in rec.comparisons()]
    assert len(comps) == 6 * len(records)
    agree = sum(rec.meta["gold"][c.winner] > rec.meta["gold"][c.loser] for rec, c in comps) / len(comps)
    assert abs(agree - bayes_accuracy(records)) < 0.03


def test_round_trip_through_canonical_jsonl(tmp_path):
    records = make_synthetic_preferences(20, seed=2) + make_synthetic_preferences(5, seed=2, responses_per_prompt=3)
    path = tmp_path / "synthetic.jsonl"
    assert write_canonical_jsonl(records, path) == 25
    loaded = load_records(path)
    assert loaded.format == "generic" and len(loaded) == 25
    for original, back in zip(records, loaded):
        assert back.meta.pop("line") > 0  # the loader adds provenance; everything else is unchanged
        assert back.to_json() == original.to_json()
    assert bayes_accuracy(loaded.records) == bayes_accuracy(records)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        make_synthetic_preferences(1, split="dev")
    for k in (1, MAX_RESPONSES + 1):
        with pytest.raises(ValueError, match="responses_per_prompt"):
            make_synthetic_preferences(1, responses_per_prompt=k)
    assert make_synthetic_preferences(0) == []
