"""The text layer: rendering, the token boundary, truncation and the score position."""

import pytest
import torch

from tiny import CHATML_TEMPLATE, make_bpe_tokenizer
from rewardkit.errors import RewardkitError
from rewardkit.batching import last_token_index, plan_padded, position_ids_from_mask
from rewardkit.text import PLAIN_CHAT_TEMPLATE, TextEncoder

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
CONCAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def test_chat_template_renders_prompt_as_prefix_and_reads_at_eos(bpe_tokenizer):
    enc = TextEncoder(bpe_tokenizer)
    prompt_str, full = enc.render(PROMPT, "Paris.")
    assert full.startswith(prompt_str) and prompt_str.endswith("<|im_start|>assistant\n")
    e = enc.encode(PROMPT, "Paris.")
    # The response part is the answer and the end-of-turn token; template whitespace after it is not read.
    assert bpe_tokenizer.decode(e.input_ids[e.response_start:]) == "Paris.<|im_end|>"
    assert e.input_ids[-1] == bpe_tokenizer.eos_token_id
    assert e.response_tokens == len(bpe_tokenizer("Paris.", add_special_tokens=False)["input_ids"])


def test_configured_template_overrides_the_tokenizers(bpe_tokenizer):
    enc = TextEncoder(bpe_tokenizer, chat_template=PLAIN_CHAT_TEMPLATE)
    e = enc.encode(PROMPT, "Paris.")
    text = bpe_tokenizer.decode(e.input_ids)
    assert text.startswith("User: What is the capital") and "<|im_start|>" not in text
    # The plain template has no end-of-turn token, so EOS is appended.
    assert e.input_ids[-1] == bpe_tokenizer.eos_token_id


def test_plain_fallback_when_the_tokenizer_has_no_template():
    tok = make_bpe_tokenizer(chat_template=None)
    enc = TextEncoder(tok)
    assert enc.chat_template == PLAIN_CHAT_TEMPLATE
    e = enc.encode(PROMPT + [{"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Sure?"}],
                   "Yes.")
    assert tok.decode(e.input_ids[e.response_start:]).startswith("Yes.")


def test_bos_is_added_once():
    tok = make_bpe_tokenizer(add_bos=True)
    e = TextEncoder(tok).encode(PROMPT, "Paris.")
    assert e.input_ids[0] == tok.bos_token_id and e.input_ids.count(tok.bos_token_id) == 1
    bos_template = "<s>" + CHATML_TEMPLATE  # a template that emits BOS itself gets no second one
    e = TextEncoder(tok, chat_template=bos_template).encode(PROMPT, "Paris.")
    assert e.input_ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("prompt_text,response", [("capital of Fr", "ance"), ("What is the cap", "ital?")])
def test_boundary_is_found_on_tokens_when_a_token_merges_across_it(prompt_text, response):
    tok = make_bpe_tokenizer(chat_template=CONCAT_TEMPLATE)
    enc = TextEncoder(tok, append_eos=False)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tok(prompt_text + response, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] != prompt_ids, "the case must really merge across the boundary"
    e = enc.encode([{"role": "user", "content": prompt_text}], response)
    assert e.input_ids == full_ids
    # The merged token belongs to the response: the prompt part is a clean prefix of the prompt's own tokens.
    assert e.input_ids[: e.response_start] == prompt_ids[: e.response_start]
    assert e.response_start < len(prompt_ids)
    assert tok.decode(e.input_ids[e.response_start:]).endswith(response)


def test_no_merge_means_boundary_at_prompt_length(bpe_tokenizer):
    enc = TextEncoder(bpe_tokenizer)
    prompt_str, _ = enc.render(PROMPT, "Paris.")
    e = enc.encode(PROMPT, "Paris.")
    assert e.response_start == len(bpe_tokenizer(prompt_str, add_special_tokens=False)["input_ids"])


def test_bert_pair_encoding(bert_tokenizer):
    enc = TextEncoder(bert_tokenizer, mode="pair", append_eos=False)
    e = enc.encode(PROMPT, "Paris is the capital.")
    tokens = bert_tokenizer.convert_ids_to_tokens(e.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[e.response_start - 1] == "[SEP]"
    assert tokens[e.response_start] == "paris"
    assert e.token_type_ids == [0] * e.response_start + [1] * (len(tokens) - e.response_start)
    # Same ids as the tokenizer's own sentence-pair call.
    assert e.input_ids == bert_tokenizer(PROMPT[0]["content"], "Paris is the capital.")["input_ids"]


def test_truncation_drops_prompt_from_the_left_first(bpe_tokenizer):
    full = TextEncoder(bpe_tokenizer).encode(PROMPT, "Paris.")
    n_response = len(full.input_ids) - full.response_start
    enc = TextEncoder(bpe_tokenizer, max_length=n_response + 3)
    e = enc.encode(PROMPT, "Paris.")
    assert len(e.input_ids) == n_response + 3
    assert e.prompt_truncated == full.response_start - 3 and e.response_truncated == 0
    assert e.input_ids[-n_response:] == full.input_ids[-n_response:]  # response intact
    assert e.input_ids[: 3] == full.input_ids[full.response_start - 3: full.response_start]  # left cut


def test_truncation_cuts_a_too_long_response_at_its_start_never_its_end(bpe_tokenizer):
    long = "word " * 50 + "END"
    enc = TextEncoder(bpe_tokenizer, max_length=20)
    e = enc.encode(PROMPT, long)
    assert len(e.input_ids) == 20 and e.response_start == 0
    assert e.prompt_truncated > 0 and e.response_truncated > 0
    assert bpe_tokenizer.decode(e.input_ids).endswith("END<|im_end|>")
    assert e.truncated == e.prompt_truncated + e.response_truncated


def test_truncation_with_no_room_is_an_error(bert_tokenizer):
    with pytest.raises(RewardkitError, match="max_length 2"):
        TextEncoder(bert_tokenizer, mode="pair", max_length=2).encode(PROMPT, "Paris.")


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]
    assert position_ids_from_mask(left)[0].tolist() == [0, 0, 0, 1, 2]


def test_score_position_ignores_token_ids_when_pad_equals_eos(bpe_tokenizer):
    eos = bpe_tokenizer.eos_token_id
    enc = TextEncoder(bpe_tokenizer)
    rows = [enc.encode(PROMPT, "Paris."), enc.encode(PROMPT, "It is Paris, a lovely city.")]
    for side in ("left", "right"):
        batch = plan_padded(rows, pad_id=eos, padding_side=side)  # pad == EOS, and every row ends in EOS
        ids, width = batch.input_ids, batch.input_ids.shape[1]
        idx = batch.score_index - torch.arange(len(rows)) * width  # flat positions -> column in each row
        for b, e in enumerate(rows):
            assert ids[b, idx[b]].item() == eos
            real = ids[b][batch.attention_mask[b].bool()].tolist()
            assert real == e.input_ids
        # The short row's read position is its own EOS, not the padding EOS after or before it.
        short = 0
        assert idx[short].item() == (len(rows[0].input_ids) - 1 if side == "right" else ids.shape[1] - 1)
