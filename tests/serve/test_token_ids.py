"""Token-id input in the library (RewardModelScorer.score_token_ids): the ids of an encoded text, split at
the response boundary, score exactly as the text does, on a causal backbone with a BOS (packed plans with
shared prefixes) and on an encoder (padded plans, sentence-pair segment ids)."""

import pytest

from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.models import RewardModelScorer, ScoreItem

ITEMS = [
    ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
              [Response("Paris."), Response("The capital of France is Paris."), Response("")]),
    ScoreItem([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
              [Response("Sunlight scatters off molecules in the air.")]),
]


def split_ids(scorer, items):
    out = []
    for group in scorer.encode(items):
        start = group[0].response_start
        out.append((group[0].input_ids[:start], [e.input_ids[start:] for e in group]))
        assert all(e.input_ids[: e.response_start] == out[-1][0] for e in group)
    return out


@pytest.mark.parametrize("backbone", ["llama_dir", "bert_dir"])
def test_token_ids_score_like_the_text_they_encode(backbone, request):
    scorer = RewardModelScorer.from_pretrained(request.getfixturevalue(backbone), precision="fp32")
    text = scorer.score(ITEMS)
    ids = scorer.score_token_ids(split_ids(scorer, ITEMS))
    for t, i in zip(text, ids):
        assert len(t.rewards) == len(i.rewards)
        assert max(abs(a - b) for a, b in zip(t.rewards, i.rewards)) < 1e-5
        assert i.truncated == [0] * len(i.rewards)
    assert len({round(r, 6) for r in text[0].rewards}) > 1  # the responses really differ


def test_long_token_ids_lose_prompt_tokens_from_the_left(llama_dir):
    scorer = RewardModelScorer.from_pretrained(llama_dir, precision="fp32", max_length=12)
    prompt, response = list(range(10, 30)), [40, 41, 42]
    [encoded] = scorer.encode_token_ids(prompt, [response])
    assert encoded.input_ids == prompt[-9:] + response and encoded.response_start == 9
    assert encoded.prompt_truncated == 11 and encoded.response_tokens == 3
    [result] = scorer.score_token_ids([(prompt, [response])])
    [same] = scorer.score_token_ids([(prompt[-9:], [response])])
    assert result.truncated == [11] and result.rewards == pytest.approx(same.rewards, abs=1e-6)


def test_bad_token_ids_are_user_errors(llama_dir):
    scorer = RewardModelScorer.from_pretrained(llama_dir, precision="fp32")
    with pytest.raises(RewardkitError, match=r"response_ids\[1\]\[2\]: token id 400 is outside"):
        scorer.score_token_ids([([1, 2], [[3], [4, 5, 400]])])
    with pytest.raises(RewardkitError, match=r"prompt_ids\[0\]: token id -1"):
        scorer.score_token_ids([([-1], [[3]])])
    with pytest.raises(RewardkitError, match="empty"):
        scorer.score_token_ids([([1], [[]])])
