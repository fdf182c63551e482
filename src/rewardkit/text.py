"""Text to tokens, exactly once and exactly right.

The most common silent bug in reward modelling is reading the reward from the wrong token. This module owns
the rules:

- A (prompt, response) pair is rendered with the model's chat template, a configured one, or — for models
  that have none — a plain template (causal models) or the tokenizer's sentence-pair encoding (encoders
  such as BERT, as encoder reward models are trained).
- The prompt/response boundary is found on tokens, not strings: a token that merges across it belongs to
  the response.
- Truncation drops prompt tokens from the left first; only a response longer than the whole budget loses
  its own leading tokens. Its end, where the reward is read, is never cut, and what was cut is counted.
- A response split into reasoning steps (process reward models, METHODS.md §4.2) is tokenized step by step,
  each step followed by the separator's own tokens, so no token ever merges across a separator, and a
  step's score is read at its separator's last token. A solution too long for the budget loses whole steps
  from its end: the early steps, where the first error is looked for, keep exact scores.

How encoded sequences are laid out in a batch, and where their scores are read, is rewardkit.batching's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rewardkit.data.record import Message
from rewardkit.errors import RewardkitError

# Used by causal models whose tokenizer has no chat template. Every turn ends with a blank line so that
# the rendered prompt (with the generation prompt) is a string prefix of the rendered conversation.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}System: {% elif m['role'] == 'user' %}User: {% else %}Assistant: {% endif %}"
    "{{ m['content'] }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)

TextMode = Literal["chat", "pair"]


@dataclass
class Encoded:
    """One (prompt, response) sequence, ready to batch.

    input_ids:           (seq_len,) token ids, special tokens included.
    token_type_ids:      (seq_len,) segment ids for sentence-pair encoders, else None.
    response_start:      index of the first response token (the boundary).
    response_tokens:     length of the response content alone, template tokens excluded.
    prompt_truncated:    prompt tokens dropped from the left to fit max_length.
    response_truncated:  response tokens dropped from its start (only when the response alone overflows), or,
                         for a step-split response, from its end.
    reads:               offsets into input_ids where scores are read: one per step for a step-split response
                         (the separator's last token), in step order; None reads the last token only.
    n_steps:             steps of a step-split response (more than len(reads) when trailing steps were cut).
    """

    input_ids: list[int]
    token_type_ids: list[int] | None
    response_start: int
    response_tokens: int
    prompt_truncated: int = 0
    response_truncated: int = 0
    reads: list[int] | None = None
    n_steps: int = 0

    @property
    def read_offsets(self) -> list[int]:
        """Where this sequence's scores are read: its steps' separators, else its last token."""
        return self.reads if self.reads is not None else [len(self.input_ids) - 1]

    @property
    def truncated(self) -> int:
        return self.prompt_truncated + self.response_truncated


class TextEncoder:
    """Renders and tokenizes (prompt, response) pairs for one reward model.

    mode "chat": the conversation is rendered with `chat_template` (or the tokenizer's own), tokenized once,
      and split at the token boundary; a BOS is added when the tokenizer expects one and the template did not
      emit it, and an EOS is appended when the response part has none (`append_eos`).
    mode "pair": the prompt and the response are the two segments of the tokenizer's sentence-pair input
      ([CLS] prompt [SEP] response [SEP] for BERT).
    """

    def __init__(self, tokenizer, *, mode: TextMode = "chat", chat_template: str | None = None,
                 max_length: int | None = None, append_eos: bool = True):
        if mode not in ("chat", "pair"):
            raise RewardkitError(f"text mode must be 'chat' or 'pair', got {mode!r}")
        self.tokenizer = tokenizer
        self.mode = mode
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE
        self.max_length = max_length
        self.append_eos = append_eos
        self._single = special_layout(tokenizer, pair=False)
        self._pair = special_layout(tokenizer, pair=True) if mode == "pair" else None

    # -- rendering -----------------------------------------------------------------------------------------
    def render(self, prompt: list[Message], response: str) -> tuple[str, str]:
        """The prompt string and the full conversation string (chat mode). The prompt string is the
        rendering with the generation prompt when that is a prefix of the full rendering, else without."""
        full = self.apply_template(prompt + [{"role": "assistant", "content": response}], generation_prompt=False)
        for generation_prompt in (True, False):
            head = self.apply_template(prompt, generation_prompt=generation_prompt)
            if full.startswith(head):
                return head, full
        # A template that rewrites earlier turns once an answer follows: fall back to the common prefix.
        return full[: common_prefix_length(head, full)], full

    def apply_template(self, messages: list[Message], *, generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False,
                add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja errors: a template that rejects this conversation shape
            raise RewardkitError(f"chat template failed on a conversation of roles "
                                 f"{[m['role'] for m in messages]}: {e}") from e

    # -- encoding ------------------------------------------------------------------------------------------
    def encode(self, prompt: list[Message], response: str) -> Encoded:
        if self.mode == "pair":
            prompt_ids = self.token_ids(_plain_prompt_text(prompt))
            response_ids = self.token_ids(response)
            prefix, middle, suffix = self._pair
        else:
            prompt_str, full = self.render(prompt, response)
            full_ids = self.token_ids(full)
            boundary = common_prefix_length(self.token_ids(prompt_str), full_ids)  # a merged token goes right
            prompt_ids, response_ids = full_ids[:boundary], full_ids[boundary:]
            prefix, _, suffix = self._single
            prefix, prompt_ids = _template_bos(prefix, prompt_ids)
            middle = []
            eos = self.tokenizer.eos_token_id
            suffix = [t for t in suffix if t != eos]
            if eos in response_ids:
                # Read the reward at the end-of-turn token itself, not at template whitespace after it
                # (ChatML renders "<|im_end|>\n").
                last = len(response_ids) - 1 - response_ids[::-1].index(eos)
                response_ids = response_ids[: last + 1]
            elif self.append_eos and eos is not None:
                suffix = suffix + [eos]
        prompt_ids, response_ids, cut_p, cut_r = _truncate_left(
            prompt_ids, response_ids, self.max_length, fixed=len(prefix) + len(middle) + len(suffix))
        ids = prefix + prompt_ids + middle + response_ids + suffix
        start = len(prefix) + len(prompt_ids) + len(middle)
        types = [0] * start + [1] * (len(ids) - start) if self._pair is not None else None
        return Encoded(ids, types, start, len(self.token_ids(response)), cut_p, cut_r)

    def encode_rendered(self, prompt_text: str, response_text: str, *, eos: bool = False) -> Encoded:
        """A conversation someone else rendered already (an RL trainer's query: the policy's own chat template,
        the prompt included), laid out as `encode` lays out its own rendering, with no template applied again.

        mode "chat": `prompt_text + response_text` is tokenized once and split at the token boundary (a token
          merging across it goes to the response); a BOS is added when the tokenizer expects one and the text
          lacks it; the response ends with one EOS, where the reward is read, when `eos` (the text ended with
          one, which the caller took off with any padding) or `append_eos`. An empty `prompt_text` makes the
          whole text the response: a causal model's reward does not depend on where the boundary is.
        mode "pair": the two texts are the two segments ([CLS] prompt [SEP] response [SEP] for BERT); `eos` is
          ignored, as the layout ends the response itself.
        Truncation is `encode`'s: prompt tokens from the left first.
        """
        if self.mode == "pair":
            prompt_ids, response_ids = self.token_ids(prompt_text), self.token_ids(response_text)
            prefix, middle, suffix = self._pair
        else:
            full_ids = self.token_ids(prompt_text + response_text)
            boundary = common_prefix_length(self.token_ids(prompt_text), full_ids)
            prefix, _, suffix = self._single
            if prefix and full_ids[: len(prefix)] == prefix:  # the text carries the BOS itself: once, not twice
                full_ids, boundary = full_ids[len(prefix):], max(0, boundary - len(prefix))
            prompt_ids, response_ids = full_ids[:boundary], full_ids[boundary:]
            middle = []
            end = self.tokenizer.eos_token_id
            suffix = [t for t in suffix if t != end]
            if end is not None and (eos or self.append_eos):
                suffix = suffix + [end]
        content_tokens = len(response_ids)
        prompt_ids, response_ids, cut_p, cut_r = _truncate_left(
            prompt_ids, response_ids, self.max_length, fixed=len(prefix) + len(middle) + len(suffix))
        ids = prefix + prompt_ids + middle + response_ids + suffix
        start = len(prefix) + len(prompt_ids) + len(middle)
        types = [0] * start + [1] * (len(ids) - start) if self._pair is not None else None
        return Encoded(ids, types, start, content_tokens, cut_p, cut_r)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- step-split responses (process reward models) --------------------------------------------------------
    def encode_steps(self, prompt: list[Message], steps: Sequence[str], separator: str) -> Encoded:
        """A response given as reasoning steps: `[prompt | step 1, sep | ... | step n, sep | end]`, each step and
        each separator tokenized on its own (so nothing merges across a separator), one read per step at its
        separator's last token.

        The prompt is rendered as `encode` renders it; the template's text around the response (its opening
        and its end-of-turn) is kept. Over max_length, prompt tokens go first, then whole steps from the end;
        if even the first step does not fit, its leading tokens are dropped so its separator stays.
        """
        if not steps:
            raise RewardkitError("a step-split response needs at least one step")
        sep_ids = self.token_ids(separator)
        if not sep_ids:
            raise RewardkitError(f"the step separator {separator!r} encodes to no tokens with this tokenizer")
        pieces = [self.token_ids(step) + sep_ids for step in steps]
        if self.mode == "pair":
            prefix, middle, suffix = self._pair
            prompt_ids, opening, closing = self.token_ids(_plain_prompt_text(prompt)), [], []
        else:
            prompt_ids, opening, closing = self._steps_frame(prompt)
            prefix, _, suffix = self._single
            prefix, prompt_ids = _template_bos(prefix, prompt_ids)
            middle = []
            eos = self.tokenizer.eos_token_id
            suffix = [t for t in suffix if t != eos]
            if eos is not None and eos in closing:
                closing = closing[: closing.index(eos) + 1]
            elif self.append_eos and eos is not None:
                suffix = suffix + [eos]
        fixed = len(prefix) + len(middle) + len(opening) + len(closing) + len(suffix)
        prompt_ids, pieces, cut_p, cut_r = _truncate_steps(prompt_ids, pieces, self.max_length, fixed)
        head = prefix + prompt_ids + middle
        ids, reads = head + opening, []
        for piece in pieces:
            ids += piece
            reads.append(len(ids) - 1)
        ids += closing + suffix
        types = [0] * len(head) + [1] * (len(ids) - len(head)) if self._pair is not None else None
        content_tokens = sum(len(self.token_ids(step)) for step in steps)
        return Encoded(ids, types, len(head), content_tokens, cut_p, cut_r, reads, len(steps))

    def _steps_frame(self, prompt: list[Message]) -> tuple[list[int], list[int], list[int]]:
        """(prompt ids, the template's opening of the answer, its closing) in chat mode, found by rendering
        the conversation with a marker for the answer."""
        marker = "\u2063rewardkit-steps\u2063"
        prompt_str, full = self.render(prompt, marker)
        at = full.find(marker, len(prompt_str))
        if at < 0:
            raise RewardkitError("the chat template does not show the answer's text verbatim; step-split "
                                 "responses need a template that does")
        opening, closing = full[len(prompt_str): at], full[at + len(marker):]
        return (self.token_ids(prompt_str), self.token_ids(opening) if opening else [],
                self.token_ids(closing) if closing else [])


def _template_bos(prefix: list[int], prompt_ids: list[int]) -> tuple[list[int], list[int]]:
    """(special prefix, prompt ids) with the tokenizer's special prefix (a BOS) that the chat template emitted
    itself moved out of the prompt: it is there once, and truncation, which cuts the prompt from the left,
    never drops it."""
    if prefix and prompt_ids[: len(prefix)] == prefix:
        return prefix, prompt_ids[len(prefix):]
    return prefix, prompt_ids


def _plain_prompt_text(prompt: list[Message]) -> str:
    """A single user turn is its own text; longer conversations are rendered as plain 'Role: text' turns."""
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in prompt)


def common_prefix_length(a: Sequence, b: Sequence) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _truncate_left(prompt: list[int], response: list[int], max_length: int | None, fixed: int):
    """Drop prompt tokens from the left, then (only if still too long) response tokens from the left."""
    if max_length is None or fixed + len(prompt) + len(response) <= max_length:
        return prompt, response, 0, 0
    room = max_length - fixed
    if room < 1:
        raise RewardkitError(f"max_length {max_length} leaves no room for any token "
                             f"({fixed} special tokens are needed)")
    keep_prompt = max(0, room - len(response))
    cut_p = len(prompt) - keep_prompt
    prompt = prompt[cut_p:]
    cut_r = max(0, len(response) - room)
    return prompt, response[cut_r:], cut_p, cut_r


def _truncate_steps(prompt: list[int], pieces: list[list[int]], max_length: int | None, fixed: int):
    """(prompt, step pieces, prompt tokens cut, step tokens cut): prompt tokens from the left first; when the
    steps alone overflow, whole steps from the end (the prompt keeps what room they leave), and, if the first
    step alone is too long, its leading tokens."""
    total = fixed + len(prompt) + sum(len(p) for p in pieces)
    if max_length is None or total <= max_length:
        return prompt, pieces, 0, 0
    room = max_length - fixed
    if room < 1:
        raise RewardkitError(f"max_length {max_length} leaves no room for any token "
                             f"({fixed} template and special tokens are needed)")
    kept, used = [], 0
    for piece in pieces:
        if used + len(piece) > room:
            break
        kept.append(piece)
        used += len(piece)
    if not kept:
        kept, used = [pieces[0][len(pieces[0]) - room:]], room
    keep_prompt = min(len(prompt), room - used)  # what the kept steps leave, for the prompt's end
    cut_p = len(prompt) - keep_prompt
    prompt = prompt[cut_p:]
    cut_r = sum(len(p) for p in pieces) - sum(len(p) for p in kept)
    return prompt, kept, cut_p, cut_r


def resolve_separator(tokenizer, separator: str = "auto") -> str:
    """The step separator for a tokenizer. "auto": a newline where the tokenizer keeps it as a token of its own
    (byte-level BPE, SentencePiece families), else the tokenizer's [SEP] token (WordPiece encoders, which
    drop whitespace). Any other string is checked to encode to at least one token."""
    def kept(text: str) -> bool:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return bool(ids) and text in tokenizer.decode(ids)

    if separator != "auto":
        if not tokenizer(separator, add_special_tokens=False)["input_ids"]:
            raise RewardkitError(f"the step separator {separator!r} encodes to no tokens with this tokenizer")
        return separator
    if kept("\n"):
        return "\n"
    if getattr(tokenizer, "sep_token", None):
        return tokenizer.sep_token
    raise RewardkitError("this tokenizer keeps no newline and has no [SEP] token: set step_separator")


def special_layout(tokenizer, *, pair: bool) -> tuple[list[int], list[int], list[int]]:
    """The special tokens the tokenizer wraps content in: (prefix, middle, suffix).

    Found by encoding probe words with and without special tokens, so it works for any tokenizer family
    (BERT: [CLS] a [SEP] b [SEP]; Llama: <s> a; GPT-NeoX: nothing).
    """
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    full = (tokenizer("a", "b") if pair else tokenizer("a"))["input_ids"]
    i = _find(full, a)
    if i < 0:
        return [], [], []
    prefix, rest = full[:i], full[i + len(a):]
    if not pair:
        return prefix, [], rest
    j = _find(rest, b)
    if j < 0:
        raise RewardkitError("cannot find the sentence-pair layout of this tokenizer; use a chat template")
    return prefix, rest[:j], rest[j + len(b):]


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i: i + len(sub)] == sub:
            return i
    return -1
