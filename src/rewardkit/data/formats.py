"""Format adapters: one small function per source format, each turning one row into a PreferenceRecord.

Every adapter is registered by name with a detector that looks at one row (a dict). `detect_format` tries
the detectors in registration order, most specific first, so a row that several formats could read goes to
the one that understands the most of it. `validate_record` then checks what every record must satisfy,
whatever format it came from; all problems raise a DataError naming the file, the line and the field.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.data.record import ROLES, Message, PreferenceRecord, Response, user_prompt
from rewardkit.errors import DataError

# RM-Bench gives each prompt three chosen and three rejected responses in these styles, in this order;
# meta["styles"] holds the style index of each of the six responses.
RM_BENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")


@dataclass(frozen=True)
class RowContext:
    """Where a row came from: used for default ids and for errors that point at the row.

    unit is "line" for JSON Lines (1-based file line), "item" for a JSON list (1-based item number) and
    "row" for Parquet / `datasets` tables (1-based row number).
    """

    file: str
    line: int
    unit: str = "line"

    @property
    def default_id(self) -> str:
        return f"{file_stem(self.file)}:{self.line}"

    def error(self, message: str, field: str | None = None) -> DataError:
        if self.unit != "line":  # DataError prints "file:N"; say what N counts when it is not a line
            message = f"{message} ({self.unit} {self.line})"
        return DataError(message, file=self.file, line=self.line, field=field)


def file_stem(path: str) -> str:
    """'data/test.jsonl.gz' -> 'test' (every suffix dropped, so ids don't carry '.jsonl')."""
    return Path(path).name.split(".")[0] or Path(path).name


Detector = Callable[[dict], bool]
Converter = Callable[[dict, RowContext], PreferenceRecord]
OptionCheck = Callable[[Any], Any]  # returns the value to pass on, or raises ValueError saying what is wrong


@dataclass(frozen=True)
class Format:
    name: str
    detect: Detector
    convert: Converter
    summary: str  # one line: the fields that identify the format (shown when detection fails)
    # Keyword options the converter takes (a choice the source leaves open, e.g. PRM800K's neutral rating),
    # each with its check. Most formats take none.
    options: Mapping[str, OptionCheck]


FORMATS: dict[str, Format] = {}


def register(name: str, detect: Detector, summary: str,
             options: Mapping[str, OptionCheck] | None = None) -> Callable[[Converter], Converter]:
    def wrap(convert: Converter) -> Converter:
        FORMATS[name] = Format(name, detect, convert, summary, dict(options or {}))
        return convert

    return wrap


def converter_for(name: str, options: Mapping[str, Any] | None = None, file: str | None = None) -> Converter:
    """The format's converter with `options` checked and bound as keywords.

    Checked once per load, here, so that a bad option is an error in the call (raised before or at the first
    row, never skippable) rather than one bad row per line. An option the format does not take is an error
    too: silently ignoring it would load the data under a different choice than the one asked for.
    """
    fmt = FORMATS[resolve_format(name)]
    if not options:
        return fmt.convert
    bound = {}
    for key, value in options.items():
        where = f"format_options.{key}"
        if key not in fmt.options:
            takes = f"it takes: {', '.join(fmt.options)}" if fmt.options else "it takes no options"
            raise DataError(f"format {name!r} has no option {key!r} ({takes})", file=file, field=where)
        try:
            bound[key] = fmt.options[key](value)
        except ValueError as e:
            raise DataError(f"format {name!r}: {e}", file=file, field=where) from None
    return functools.partial(fmt.convert, **bound)


def name_key(name: str) -> str:
    """How a format or benchmark name is compared: case, surrounding space and '-' vs '_' do not matter, so
    'rm-bench', 'rm_bench' and 'RM-Bench' are one name."""
    return name.strip().lower().replace("-", "_")


def registered_name(name: str, registry: Mapping[str, Any], what: str) -> str:
    """The registry's own spelling of `name` (compared by `name_key`); an unknown name is a DataError that
    lists the known ones. The one lookup for format names and benchmark names alike."""
    if not isinstance(name, str):
        raise DataError(f"a {what} name must be a string, got {type(name).__name__}")
    for known in registry:
        if name_key(known) == name_key(name):
            return known
    raise DataError(f"unknown {what} {name!r}; known {what}s: {', '.join(registry)}")


def resolve_format(name: str) -> str:
    """The registered name of format `name`, written with '-' or '_' alike ('rm_bench' -> 'rm-bench')."""
    return registered_name(name, FORMATS, "format")


def detect_format(row: dict) -> str | None:
    """The name of the first registered format whose detector accepts `row`, or None."""
    fitting = formats_fitting(row)
    return fitting[0] if fitting else None


def formats_fitting(row: dict) -> list[str]:
    """Every format whose detector accepts `row`, in detection order: the first is the detected one, the
    others are what the loader falls back to when it rejects every row."""
    return [fmt.name for fmt in FORMATS.values() if fmt.detect(row)]


def describe_formats() -> str:
    return "; ".join(f"{f.name} ({f.summary}{'; options: ' + ', '.join(f.options) if f.options else ''})"
                     for f in FORMATS.values())


# ---------------------------------------------------------------------------------------------- helpers


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_message_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, dict) and "role" in m for m in v)


def _require(row: dict, key: str, ctx: RowContext) -> Any:
    if key not in row or row[key] is None:
        raise ctx.error("missing", key)
    return row[key]


def _text(row: dict, key: str, ctx: RowContext) -> str:
    value = _require(row, key, ctx)
    if not isinstance(value, str):
        raise ctx.error(f"expected a string, got {type(value).__name__}", key)
    return value


def _texts(row: dict, key: str, ctx: RowContext) -> list[str]:
    value = _require(row, key, ctx)
    if not isinstance(value, list) or not value:
        raise ctx.error("expected a non-empty list of strings", key)
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise ctx.error(f"expected a string, got {type(x).__name__}", f"{key}[{i}]")
    return value


def _messages(value: Any, field: str, ctx: RowContext) -> list[Message]:
    """A chat as a list of {role, content}; extra keys (name, tool calls, ...) are dropped."""
    if not isinstance(value, list) or not value:
        raise ctx.error("expected a non-empty list of {role, content} messages", field)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise ctx.error(f"expected a {{role, content}} message, got {type(m).__name__}", f"{field}[{i}]")
        if m.get("role") not in ROLES:
            raise ctx.error(f"role must be one of {', '.join(ROLES)}, got {m.get('role')!r}",
                            f"{field}[{i}].role")
        if not isinstance(m.get("content"), str):
            raise ctx.error(f"content must be a string, got {type(m.get('content')).__name__}",
                            f"{field}[{i}].content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _prompt(value: Any, field: str, ctx: RowContext) -> list[Message]:
    """A prompt given as plain text (one user turn) or as chat messages."""
    return user_prompt(value) if isinstance(value, str) else _messages(value, field, ctx)


def _row_id(row: dict, ctx: RowContext, key: str = "id") -> str:
    value = row.get(key)
    return ctx.default_id if value is None or value == "" else str(value)


def _meta(source: str, ctx: RowContext, **extra: Any) -> dict[str, Any]:
    meta = {"source": source, "line": ctx.line}
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def split_shared_prompt(chosen: list[Message], rejected: list[Message], ctx: RowContext,
                        fields: tuple[str, str] = ("chosen", "rejected")) -> tuple[list[Message], str, str]:
    """Two whole conversations that share every turn but one final assistant turn each.

    Returns (shared prompt, final turn of the first, final turn of the second). The shared part is the
    longest common prefix, capped so each side keeps its last turn (identical conversations are allowed:
    identical responses are real data and `inspect` reports them). Anything else, conversations that differ
    earlier or end in a user turn, raises a DataError naming the side that breaks the rule.
    """
    for msgs, field in zip((chosen, rejected), fields):
        if not msgs:
            raise ctx.error("empty conversation", field)
    shared = 0
    limit = min(len(chosen), len(rejected)) - 1
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    for msgs, field in zip((chosen, rejected), fields):
        tail = msgs[shared:]
        if tail[-1]["role"] != "assistant":
            raise ctx.error(f"the conversation ends with a {tail[-1]['role']} turn, not an assistant turn",
                            field)
        if len(tail) != 1:
            raise ctx.error(f"'{fields[0]}' and '{fields[1]}' differ before the final assistant turn "
                            f"(they share {shared} turn(s); this one has {len(msgs)})", field)
    if shared == 0:
        raise ctx.error("there is no prompt: the conversations share no turn before the final one", fields[0])
    return chosen[:shared], chosen[-1]["content"], rejected[-1]["content"]


# -------------------------------------------------------------------------------------------- adapters
# Registration order is detection order: the most specific detectors come first.


@register("generic", lambda r: "responses" in r and "prompt" in r,
          "id, prompt, responses, and any of chosen/ranking/scores/votes/... - what `convert` writes")
def convert_generic(row: dict, ctx: RowContext) -> PreferenceRecord:
    """The canonical record as `PreferenceRecord.to_json()` writes it, so converted files load back unchanged.

    A response may be text, an assistant message, a list of messages (the final assistant turn is taken) or
    {"content", "steps"}. Label fields are copied as they are; `validate_record` checks them. The row's own
    meta (source, line of the original file) is kept: it is the record's provenance.
    """
    responses = _require(row, "responses", ctx)
    if not isinstance(responses, list):
        raise ctx.error("expected a list of responses", "responses")
    if not isinstance(row.get("meta") or {}, dict):
        raise ctx.error("expected an object", "meta")
    meta = dict(row.get("meta") or {})
    if row.get("subset") is not None:
        meta["subset"] = row["subset"]
    meta.setdefault("source", "generic")
    meta.setdefault("line", ctx.line)
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=_prompt(_require(row, "prompt", ctx), "prompt", ctx),
        responses=[_generic_response(r, f"responses[{i}]", ctx) for i, r in enumerate(responses)],
        chosen=row.get("chosen"), ranking=row.get("ranking"), scores=row.get("scores"),
        attributes=row.get("attributes"), votes=row.get("votes"), soft_label=row.get("soft_label"),
        step_labels=row.get("step_labels"), margin=row.get("margin"), meta=meta,
    )


def _generic_response(value: Any, field: str, ctx: RowContext) -> Response:
    if isinstance(value, str):
        return Response(value)
    if isinstance(value, list):  # a conversation: the response is its final assistant turn
        last = _messages(value, field, ctx)[-1]
        if last["role"] != "assistant":
            raise ctx.error(f"the last message must be an assistant turn, got {last['role']!r}", field)
        return Response(last["content"])
    if isinstance(value, dict):
        if "role" in value:
            msg = _messages([value], field, ctx)[0]
            if msg["role"] != "assistant":
                raise ctx.error(f"a response must be an assistant turn, got {msg['role']!r}", f"{field}.role")
            return Response(msg["content"])
        if not isinstance(value.get("content"), str):
            raise ctx.error("content must be a string", f"{field}.content")
        steps = value.get("steps")
        if steps is not None and not _is_str_list(steps):
            raise ctx.error("steps must be a list of strings", f"{field}.steps")
        return Response(value["content"], steps)
    raise ctx.error(f"expected text, a message, a list of messages or {{content, steps}}, "
                    f"got {type(value).__name__}", field)


@register("processbench", lambda r: {"problem", "steps", "label"} <= r.keys(),
          "problem, steps, label (index of the earliest wrong step, -1 if none)")
def convert_processbench(row: dict, ctx: RowContext) -> PreferenceRecord:
    """One step-by-step solution: steps before `label` are correct, the step at `label` is wrong, and the
    steps after it are unlabeled (None), since ProcessBench only marks the earliest error. The split is the
    file's name (gsm8k.json -> "gsm8k"), which the benchmark's per-split F1 needs."""
    steps = _texts(row, "steps", ctx)
    label = _require(row, "label", ctx)
    n = len(steps)
    if not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < n:
        raise ctx.error(f"expected -1 or a step index below {n}, got {label!r}", "label")
    labels = [1.0] * n if label < 0 else [1.0] * label + [0.0] + [None] * (n - label - 1)
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=user_prompt(_text(row, "problem", ctx)),
        responses=[Response("\n\n".join(steps), list(steps))],
        step_labels=[labels],
        meta=_meta("processbench", ctx, split=file_stem(ctx.file), earliest_error=label,
                   final_answer_correct=row.get("final_answer_correct"), generator=row.get("generator")),
    )


_PANDALM_VOTE = {0: None, 1: 0, 2: 1}  # 0 tie, 1 response1 better, 2 response2 better


def _annotator_keys(row: dict) -> list[str]:
    keys = [k for k in row if re.fullmatch(r"annotator\d+", k)]
    return sorted(keys, key=lambda k: int(k[len("annotator"):]))


def _is_pandalm(r: dict) -> bool:
    return {"instruction", "response1", "response2"} <= r.keys() and bool(_annotator_keys(r))


@register("pandalm", _is_pandalm,
          "instruction, input, response1, response2, annotator1..N (0 tie, 1 or 2)")
def convert_pandalm(row: dict, ctx: RowContext) -> PreferenceRecord:
    """Two responses and one vote per annotator (None for a tie), kept separate for consensus and
    agreement analysis rather than collapsed to one label here."""
    prompt = _text(row, "instruction", ctx)
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ctx.error("expected a string", "input")
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    votes = []
    for key in _annotator_keys(row):
        vote = row[key]
        if not isinstance(vote, int) or isinstance(vote, bool) or vote not in _PANDALM_VOTE:
            raise ctx.error(f"expected 0 (tie), 1 or 2, got {vote!r}", key)
        votes.append(_PANDALM_VOTE[vote])
    return PreferenceRecord(
        id=_row_id(row, ctx, "idx" if "idx" in row else "id"),
        prompt=user_prompt(prompt),
        responses=[Response(_pandalm_text(row, "response1", ctx)), Response(_pandalm_text(row, "response2", ctx))],
        votes=votes,
        meta=_meta("pandalm", ctx, subset=row.get("motivation_app"), cmp_key=row.get("cmp_key")),
    )


def _pandalm_text(row: dict, key: str, ctx: RowContext) -> str:
    # The published test set has six responses that were the text "True" and reached the JSON as the
    # boolean true (a spreadsheet/YAML round trip); read them back as the text the model wrote.
    value = row.get(key)
    return str(value) if isinstance(value, bool) else _text(row, key, ctx)


@register("rewardbench2", lambda r: "num_correct" in r and "chosen" in r and isinstance(r["chosen"], list),
          "prompt, chosen[...], rejected[...], num_correct, subset")
def convert_rewardbench2(row: dict, ctx: RowContext) -> PreferenceRecord:
    """Best-of-4 (or the Ties subset's several correct answers): every chosen response beats every
    rejected one. One chosen response is a plain `chosen` index; several become scores 1/0."""
    chosen, rejected = _texts(row, "chosen", ctx), _texts(row, "rejected", ctx)
    one = len(chosen) == 1
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=user_prompt(_text(row, "prompt", ctx)),
        responses=[Response(t) for t in chosen + rejected],
        chosen=0 if one else None,
        scores=None if one else [1.0] * len(chosen) + [0.0] * len(rejected),
        meta=_meta("rewardbench2", ctx, subset=row.get("subset"), num_correct=row.get("num_correct"),
                   models=row.get("models")),
    )


# RM-Bench's domains as its files name them, and the domain each is scored under (the two safety files pool).
RM_BENCH_DOMAINS = {"chat": "chat", "math": "math", "code": "code",
                    "safety-refuse": "safety", "safety-response": "safety", "safety": "safety"}


def _is_rm_bench(r: dict) -> bool:
    """Both published layouts: the hub's total_dataset.json (a `domain` on every row) and the GitHub
    repository's per-domain files (chat_filtered.json, ...: `id, subset, prompt, chosen[3], rejected[3]`)."""
    chosen, rejected = r.get("chosen"), r.get("rejected")
    if not (_is_str_list(chosen) and _is_str_list(rejected)):
        return False
    return "domain" in r or len(chosen) == len(rejected) == len(RM_BENCH_STYLES)


def _known_rm_bench_domain(name: Any) -> str | None:
    """RM-Bench's spelling of a domain name ('Safety_Refuse' -> 'safety-refuse'), or None."""
    if not isinstance(name, str):
        return None
    return next((d for d in RM_BENCH_DOMAINS if name_key(d) == name_key(name)), None)


def rm_bench_domain_from_file(path: str) -> str | None:
    """The domain a per-domain file is named after: 'safety-refuse_filtered.json' -> 'safety-refuse',
    'chat.jsonl' -> 'chat'; None for a name such as 'total_dataset.json'."""
    stem = name_key(file_stem(path))
    for domain in sorted(RM_BENCH_DOMAINS, key=len, reverse=True):  # safety-refuse before safety
        if stem == name_key(domain) or stem.startswith(name_key(domain) + "_"):
            return domain
    return None


def rm_bench_domain(row: dict, ctx: RowContext) -> str | None:
    """A row's domain: its `domain` (the hub's layout); else its `subset` when that names a domain; else the
    domain its file is named after (the repository's layout); else its `subset` as it is (scored as a domain
    of its own). None when there is none of these: the record loads, and the benchmark asks for a domain."""
    domain = row.get("domain")
    if domain is not None:
        if not isinstance(domain, str):
            raise ctx.error(f"expected a string, got {type(domain).__name__}", "domain")
        return domain
    subset = row.get("subset")
    if subset is not None and not isinstance(subset, str):
        raise ctx.error(f"expected a string, got {type(subset).__name__}", "subset")
    return _known_rm_bench_domain(subset) or rm_bench_domain_from_file(ctx.file) or subset


@register("rm-bench", _is_rm_bench,
          "prompt, chosen[3], rejected[3], and domain (the hub's total_dataset.json) or subset / the file's "
          "name (the repository's chat_filtered.json, safety-refuse_filtered.json, ...)")
def convert_rm_bench(row: dict, ctx: RowContext) -> PreferenceRecord:
    """Three chosen then three rejected responses; meta["styles"] gives each one's RM_BENCH_STYLES index
    (0 concise, 1 detailed plain, 2 detailed markdown) for RM-Bench's easy/normal/hard accuracy.

    The domain (`rm_bench_domain`) becomes the record's subset, which RM-Bench scores by; a row `subset`
    that is not the domain is kept as meta["source_subset"]."""
    chosen, rejected = _texts(row, "chosen", ctx), _texts(row, "rejected", ctx)
    for key, texts in (("chosen", chosen), ("rejected", rejected)):
        if len(texts) != len(RM_BENCH_STYLES):
            raise ctx.error(f"expected {len(RM_BENCH_STYLES)} responses (one per style), got {len(texts)}", key)
    domain = rm_bench_domain(row, ctx)
    subset = row.get("subset")
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=user_prompt(_text(row, "prompt", ctx)),
        responses=[Response(t) for t in chosen + rejected],
        scores=[1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        meta=_meta("rm-bench", ctx, subset=domain, styles=[0, 1, 2, 0, 1, 2],
                   source_subset=subset if subset is not None and subset != domain else None),
    )


def _is_rewardbench(r: dict) -> bool:
    return "subset" in r and all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected"))


@register("rewardbench", _is_rewardbench,
          "prompt, chosen, rejected (text), chosen_model, rejected_model, subset")
def convert_rewardbench(row: dict, ctx: RowContext) -> PreferenceRecord:
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=user_prompt(_text(row, "prompt", ctx)),
        responses=[Response(_text(row, "chosen", ctx)), Response(_text(row, "rejected", ctx))],
        chosen=0,
        meta=_meta("rewardbench", ctx, subset=row.get("subset"),
                   models=[row.get("chosen_model"), row.get("rejected_model")]
                   if "chosen_model" in row or "rejected_model" in row else None),
    )


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def _is_hh_transcript(v: Any) -> bool:
    return isinstance(v, str) and "Human:" in v and "\n\nAssistant:" in v


def hh_transcript(text: str, field: str, ctx: RowContext) -> list[Message]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages, contents stripped of surrounding whitespace.

    Only a marker after a blank line starts a turn: the data has a few 'Human:' strings inside turns (the
    model imitating the user) and they stay part of the content, as the annotators saw them.
    """
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))  # some copies drop the leading blank line
    if parts[0].strip():
        raise ctx.error("a transcript must start with '\\n\\nHuman: '", field)
    return [{"role": _HH_ROLE[who], "content": content.strip()} for who, content in zip(parts[1::2], parts[2::2])]


def _is_hh(r: dict) -> bool:
    return "prompt" not in r and _is_hh_transcript(r.get("chosen")) and _is_hh_transcript(r.get("rejected"))


@register("hh", _is_hh,
          "chosen, rejected as whole '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts")
def convert_hh(row: dict, ctx: RowContext) -> PreferenceRecord:
    """Anthropic HH-RLHF: the prompt is the turns both transcripts share, the responses their final
    assistant turns. An empty final turn is kept.

    A few rows (19 of the 8,552 test rows) continue past the first differing assistant turn, or end in a
    Human turn. Annotators compared the two continuations as wholes, so they are kept as such: the prompt
    is the shared turns up to the first differing assistant turn, and each response is the rest of its
    transcript as text (meta["continuation"] = True). Only a row with no shared user turn is an error.
    """
    chosen = hh_transcript(_text(row, "chosen", ctx), "chosen", ctx)
    rejected = hh_transcript(_text(row, "rejected", ctx), "rejected", ctx)
    try:
        prompt, good, bad = split_shared_prompt(chosen, rejected, ctx)
        meta = _meta("hh", ctx)
    except DataError:
        prompt, good, bad = _hh_continuations(chosen, rejected, ctx)
        meta = _meta("hh", ctx, continuation=True)
    return PreferenceRecord(id=_row_id(row, ctx), prompt=prompt, responses=[Response(good), Response(bad)],
                            chosen=0, meta=meta)


def _hh_continuations(chosen: list[Message], rejected: list[Message], ctx: RowContext):
    """(shared turns up to the first differing assistant turn, rest of chosen, rest of rejected)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and not (chosen[shared - 1]["role"] == "user" and _assistant_at(chosen, shared)
                              and _assistant_at(rejected, shared)):
        shared -= 1
    if shared == 0:
        raise ctx.error("the transcripts share no Human turn that both answer", "chosen")
    names = {"user": "Human", "assistant": "Assistant"}

    def rest(msgs: list[Message]) -> str:
        first, *later = msgs[shared:]
        return first["content"] + "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in later)

    return chosen[:shared], rest(chosen), rest(rejected)


def _assistant_at(msgs: list[Message], i: int) -> bool:
    return i < len(msgs) and msgs[i]["role"] == "assistant"


def _trl_conversation(row: dict, key: str, ctx: RowContext) -> list[Message]:
    value = _require(row, key, ctx)
    return [{"role": "assistant", "content": value}] if isinstance(value, str) else _messages(value, key, ctx)


def _is_trl(r: dict) -> bool:
    return "chosen" in r and "rejected" in r and ("prompt" in r or _is_message_list(r["chosen"]))


@register("trl", _is_trl,
          "prompt, chosen, rejected as text or messages; or chosen, rejected as whole conversations")
def convert_trl(row: dict, ctx: RowContext) -> PreferenceRecord:
    """TRL preference data in all three shapes: plain text, conversational (prompt messages plus
    completion messages) and implicit prompt (two whole conversations). All three become two whole
    conversations, and the prompt is what they share, so the three shapes follow one rule."""
    if "prompt" in row:
        prompt = _prompt(row["prompt"], "prompt", ctx)
    elif isinstance(row.get("chosen"), str):
        raise ctx.error("missing (plain-text chosen/rejected need a prompt)", "prompt")
    else:
        prompt = []
    chosen = prompt + _trl_conversation(row, "chosen", ctx)
    rejected = prompt + _trl_conversation(row, "rejected", ctx)
    shared, good, bad = split_shared_prompt(chosen, rejected, ctx)
    margin = row.get("margin")
    if margin is not None and not _is_number(margin):
        raise ctx.error(f"expected a number, got {margin!r}", "margin")
    return PreferenceRecord(id=_row_id(row, ctx), prompt=shared, responses=[Response(good), Response(bad)],
                            chosen=0, margin=margin, meta=_meta("trl", ctx))


# ------------------------------------------------------------------------------------ step-labelled (PRM)
# Three more sources of step labels, each read into the processbench shape: one response whose `steps` are
# the solution's steps and `step_labels=[labels]`, one label per step (1.0 correct, 0.0 wrong, a fraction
# for a soft label, None for a step the source leaves unlabeled). Registered last: their detectors look for
# fields the formats above do not read, and a row that has both keeps going where it went before.


def _solution(steps: list[str]) -> Response:
    return Response("\n\n".join(steps), list(steps))


def _is_unit(v: Any) -> bool:
    return _is_number(v) and 0.0 <= v <= 1.0


# PRM800K rates each step -1 (wrong), 0 (neutral: not wrong, but no progress or debatable) or +1 (correct
# and useful). Where neutral belongs is a modelling choice the data leaves open, hence an option.
PRM800K_NEUTRAL = 1.0


def prm800k_neutral(value: Any) -> float | None:
    """Check the `neutral` option: a label in [0, 1], or None to leave neutral steps unlabeled (masked)."""
    if value is None:
        return None
    if not _is_unit(value):
        raise ValueError(f"neutral must be a number in [0, 1] or None, got {value!r}")
    return float(value)


def prm800k_label(rating: int | None, neutral: float | None = PRM800K_NEUTRAL) -> float | None:
    """+1 -> 1.0, -1 -> 0.0, the neutral 0 -> `neutral`; a null rating (an unrated step) -> None."""
    if rating is None:
        return None
    return 1.0 if rating == 1 else 0.0 if rating == -1 else neutral


def _is_prm800k(r: dict) -> bool:
    return "question" in r and isinstance(r.get("label"), dict) and "steps" in r["label"]


@register("prm800k", _is_prm800k,
          "question{problem}, label{steps[{completions, chosen_completion, human_completion}], finish_reason}",
          options={"neutral": prm800k_neutral})
def convert_prm800k(row: dict, ctx: RowContext, *, neutral: float | None = PRM800K_NEUTRAL) -> PreferenceRecord:
    """One labeled solution of OpenAI's PRM800K ("Let's Verify Step by Step", phase 1 or 2).

    The solution is rebuilt step by step from the chosen completion, else the labeler's own (human)
    completion. A step with neither is where the labeler stopped (typically at finish_reason "found_error"):
    its first completion rated -1 is the last step, and with none rated -1 the solution ends before it.
    Ratings +1 -> 1.0, -1 -> 0.0, null -> None. The neutral 0 -> `neutral`, by default 1.0: a neutral step is
    not wrong, so it counts as correct; 0.0 (only progress counts) and None (neutral steps masked out) are
    the other usual choices. A human step without a rating counts as correct (1.0): labelers could only
    write one in place of a wrong step, and had to make it a +1 step.
    """
    question = _require(row, "question", ctx)
    if not isinstance(question, dict):
        raise ctx.error(f"expected an object with 'problem', got {type(question).__name__}", "question")
    problem = question.get("problem")
    if not isinstance(problem, str):
        raise ctx.error("missing" if problem is None else f"expected a string, got {type(problem).__name__}",
                        "question.problem")
    label = _require(row, "label", ctx)
    if not isinstance(label, dict):
        raise ctx.error(f"expected an object with 'steps', got {type(label).__name__}", "label")
    if not isinstance(label.get("steps"), list):
        raise ctx.error(f"expected a list of steps, got {type(label.get('steps')).__name__}", "label.steps")
    steps, ratings = _prm800k_path(label["steps"], ctx)
    if not steps:
        raise ctx.error("no steps: the labeler stopped before the first step had a chosen, human or wrong "
                        "completion", "label.steps")
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=user_prompt(problem),
        responses=[_solution(steps)],
        step_labels=[[prm800k_label(r, neutral) for r in ratings]],
        meta=_meta("prm800k", ctx, finish_reason=label.get("finish_reason"),
                   ground_truth_answer=question.get("ground_truth_answer")),
    )


def _prm800k_path(steps: list, ctx: RowContext) -> tuple[list[str], list[int | None]]:
    """(text, rating) of each step of the labeled path, up to where the labeler stopped."""
    texts, ratings = [], []
    for i, step in enumerate(steps):
        where = f"label.steps[{i}]"
        if not isinstance(step, dict):
            raise ctx.error(f"expected an object, got {type(step).__name__}", where)
        completions = step.get("completions") or []
        if not isinstance(completions, list):
            raise ctx.error("expected a list of completions", f"{where}.completions")
        rated = [_prm800k_completion(c, f"{where}.completions[{j}]", ctx) for j, c in enumerate(completions)]
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if chosen is not None:
            if not _is_index(chosen, len(rated)):
                raise ctx.error(f"expected a completion index in 0..{len(rated) - 1} or null, got {chosen!r}",
                                f"{where}.chosen_completion")
            text, rating = rated[chosen]
        elif human is not None:
            text, rating = _prm800k_human(human, f"{where}.human_completion", ctx)
        else:  # the labeler stopped here: the solution ends at the first wrong alternative, if any
            wrong = next((t for t, r in rated if r == -1), None)
            if wrong is not None:
                texts.append(wrong)
                ratings.append(-1)
            break
        texts.append(text)
        ratings.append(rating)
    return texts, ratings


def _prm800k_rating(value: Any, field: str, ctx: RowContext) -> int | None:
    if value is not None and not (_is_number(value) and value in (-1, 0, 1)):
        raise ctx.error(f"expected -1, 0, 1 or null, got {value!r}", field)
    return None if value is None else int(value)


def _prm800k_completion(value: Any, field: str, ctx: RowContext) -> tuple[str, int | None]:
    if not isinstance(value, dict):
        raise ctx.error(f"expected an object with 'text' and 'rating', got {type(value).__name__}", field)
    if not isinstance(value.get("text"), str):
        raise ctx.error(f"expected a string, got {type(value.get('text')).__name__}", f"{field}.text")
    return value["text"], _prm800k_rating(value.get("rating"), f"{field}.rating", ctx)


def _prm800k_human(value: Any, field: str, ctx: RowContext) -> tuple[str, int]:
    """A labeler-written step, as {text, rating, ...} or plain text; unrated means +1 (see convert_prm800k)."""
    if isinstance(value, str):
        return value, 1
    text, rating = _prm800k_completion(value, field, ctx)
    return text, 1 if rating is None else rating


# Math-Shepherd (Wang et al. 2024) tags the end of each step of `input` with "ки"; `label` is the same text
# with "+" (a good step) or "-" (a bad one) in place of each tag.
SHEPHERD_TAG = "ки"


def hard_from_soft(soft: Sequence[float | None]) -> list[float | None]:
    """Math-Shepherd's hard estimate from its soft one, HE = 1[SE > 0]: SE is the fraction of completions
    from the step that reach the right answer, and the step is good (1.0) when any of them does."""
    return [None if s is None else float(s > 0) for s in soft]


def _is_math_shepherd(r: dict) -> bool:
    return "label" in r and isinstance(r.get("input"), str) and SHEPHERD_TAG in r["input"]


@register("math_shepherd", _is_math_shepherd,
          "input with 'ки' after each step, label: the input with '+'/'-' in place of each 'ки' (or a list "
          "of soft labels), task")
def convert_math_shepherd(row: dict, ctx: RowContext) -> PreferenceRecord:
    """One Math-Shepherd solution: the question is the text before "Step 1:" (the first line when there is
    no "Step 1:"), and each step keeps its "Step k:" prefix, as the data has it, so every step reads alike.

    `label` as text gives the hard labels; as a list of numbers in [0, 1], one per tag, soft ones. A
    `soft_labels` list alongside a text `label` replaces the hard labels, which must then be what they
    imply (HE = 1[SE > 0], `hard_from_soft`), or the two came from different estimates.
    """
    text = _text(row, "input", ctx)
    question, steps = _shepherd_steps(text, ctx)
    label = _require(row, "label", ctx)
    if isinstance(label, str):
        labels = _shepherd_hard_labels(text, label, ctx)
    elif isinstance(label, list):
        labels = _shepherd_soft_labels(label, "label", len(steps), ctx)
    else:
        raise ctx.error(f"expected the tagged text or a list of soft labels, got {type(label).__name__}", "label")
    if row.get("soft_labels") is not None:
        if not isinstance(label, str):
            raise ctx.error("soft labels are given twice, in 'label' and 'soft_labels'", "soft_labels")
        soft = _shepherd_soft_labels(row["soft_labels"], "soft_labels", len(steps), ctx)
        for k, (hard, implied) in enumerate(zip(labels, hard_from_soft(soft))):
            if hard != implied:
                raise ctx.error(f"step {k + 1}: soft label {soft[k]} implies the hard label {implied:g} "
                                f"(HE = 1[SE > 0]), but 'label' has {hard:g}", f"soft_labels[{k}]")
        labels = soft
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=user_prompt(question),
        responses=[_solution(steps)],
        step_labels=[labels],
        meta=_meta("math_shepherd", ctx, task=row.get("task")),
    )


def _shepherd_steps(text: str, ctx: RowContext) -> tuple[str, list[str]]:
    """(question, steps) of a tagged input; steps lose their tag and surrounding whitespace."""
    *parts, tail = text.split(SHEPHERD_TAG)
    if tail.strip():
        raise ctx.error(f"text after the last '{SHEPHERD_TAG}': every step must end with the tag", "input")
    head = parts[0].strip()
    if "Step 1:" in head:
        at = head.index("Step 1:")
        question, parts[0] = head[:at], head[at:]
    elif "\n" in head:
        question, parts[0] = head.split("\n", 1)
    else:
        raise ctx.error(f"cannot tell the question from the first step: no 'Step 1:' and no line break "
                        f"before the first '{SHEPHERD_TAG}'", "input")
    if not question.strip():
        raise ctx.error("no question before the first step", "input")
    steps = [p.strip() for p in parts]
    for k, step in enumerate(steps):
        if not step:
            raise ctx.error(f"step {k + 1} is empty", "input")
    return question.strip(), steps


def _shepherd_hard_labels(text: str, label: str, ctx: RowContext) -> list[float]:
    """The '+' / '-' that stand where `text` has its tags. Read by position, as '+' and '-' occur in the
    steps' arithmetic too, so the rest of the two strings must match."""
    *segments, tail = text.split(SHEPHERD_TAG)
    expected = f"expected 'input' with '+' or '-' in place of each of its {len(segments)} '{SHEPHERD_TAG}' tags"
    labels, pos = [], 0
    for k, segment in enumerate(segments):
        end = pos + len(segment)
        mark = label[end:end + 1]
        if label[pos:end] != segment or mark not in ("+", "-"):
            raise ctx.error(f"{expected}; the label has no tag for step {k + 1}", "label")
        labels.append(1.0 if mark == "+" else 0.0)
        pos = end + 1
    if label[pos:].strip() != tail.strip():
        raise ctx.error(f"{expected}; the label goes on after the last one", "label")
    return labels


def _shepherd_soft_labels(value: Any, field: str, n: int, ctx: RowContext) -> list[float]:
    if not isinstance(value, list):
        raise ctx.error(f"expected a list of numbers in [0, 1], got {type(value).__name__}", field)
    if len(value) != n:
        raise ctx.error(f"expected {n} labels, one per '{SHEPHERD_TAG}' tag, got {len(value)}", field)
    for i, v in enumerate(value):
        if not _is_unit(v):
            raise ctx.error(f"expected a number in [0, 1], got {v!r}", f"{field}[{i}]")
    return [float(v) for v in value]


def _is_stepwise(r: dict) -> bool:
    return "prompt" in r and "labels" in r and ("completions" in r or "steps" in r)


@register("stepwise", _is_stepwise,
          "prompt, completions (or steps) [step, ...], labels [true/false/number/null, ...]")
def convert_stepwise(row: dict, ctx: RowContext) -> PreferenceRecord:
    """TRL's stepwise-supervision shape: one solution as a list of steps and one label per step. Booleans
    are hard labels (1.0 / 0.0), numbers in [0, 1] soft ones, and null leaves the step unlabeled."""
    if "completions" in row and "steps" in row:
        raise ctx.error("give the steps as 'completions' or as 'steps', not both", "steps")
    key = "completions" if "completions" in row else "steps"
    steps = _texts(row, key, ctx)
    labels = _require(row, "labels", ctx)
    if not isinstance(labels, list):
        raise ctx.error(f"expected a list, got {type(labels).__name__}", "labels")
    if len(labels) != len(steps):
        raise ctx.error(f"expected one label per step ({len(steps)}), got {len(labels)}", "labels")
    return PreferenceRecord(
        id=_row_id(row, ctx),
        prompt=_prompt(_require(row, "prompt", ctx), "prompt", ctx),
        responses=[_solution(steps)],
        step_labels=[[_step_label(v, f"labels[{i}]", ctx) for i, v in enumerate(labels)]],
        meta=_meta("stepwise", ctx),
    )


def _step_label(value: Any, field: str, ctx: RowContext) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if not _is_unit(value):
        raise ctx.error(f"expected true, false, a number in [0, 1] or null, got {value!r}", field)
    return float(value)


# ------------------------------------------------------------------------------------------ validation


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_index(v: Any, n: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n


def _is_permutation(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(_is_index(i, n) for i in v) and len(set(v)) == n


def _check_length(values: Sequence | None, n: int, field: str, what: str, ctx: RowContext) -> None:
    if values is None:
        return
    if not isinstance(values, list):
        raise ctx.error(f"expected a list ({what})", field)
    if len(values) != n:
        raise ctx.error(f"expected {n} entries ({what}), got {len(values)}", field)


def validate_record(rec: PreferenceRecord, ctx: RowContext) -> PreferenceRecord:
    """The rules every record obeys, whatever its source; field names are the canonical ones."""
    for i, m in enumerate(rec.prompt):
        if m.get("role") not in ROLES:
            raise ctx.error(f"role must be one of {', '.join(ROLES)}, got {m.get('role')!r}", f"prompt[{i}].role")
        if not isinstance(m.get("content"), str):
            raise ctx.error("content must be a string", f"prompt[{i}].content")
    n = len(rec.responses)
    if n < 2 and rec.step_labels is None:  # process data may score a single solution
        raise ctx.error(f"need at least 2 responses (or step_labels), got {n}", "responses")
    if n == 0:
        raise ctx.error("need at least 1 response", "responses")
    for i, r in enumerate(rec.responses):
        if not isinstance(r.content, str):
            raise ctx.error("content must be a string", f"responses[{i}]")
    if rec.chosen is not None and not _is_index(rec.chosen, n):
        raise ctx.error(f"expected a response index in 0..{n - 1}, got {rec.chosen!r}", "chosen")
    if rec.ranking is not None and not _is_permutation(rec.ranking, n):
        raise ctx.error(f"expected a permutation of 0..{n - 1}, got {rec.ranking!r}", "ranking")
    _check_length(rec.scores, n, "scores", "one per response", ctx)
    for i, s in enumerate(rec.scores or []):
        if not _is_number(s):
            raise ctx.error(f"expected a number, got {s!r}", f"scores[{i}]")
    _check_length(rec.attributes, n, "attributes", "one per response", ctx)
    for i, attrs in enumerate(rec.attributes or []):
        if not isinstance(attrs, dict) or not all(v is None or _is_number(v) for v in attrs.values()):
            raise ctx.error("expected an object of objective -> number or null", f"attributes[{i}]")
    if rec.votes is not None:
        if not isinstance(rec.votes, list) or not rec.votes:
            raise ctx.error("expected a non-empty list of response indices (null for a tie)", "votes")
        for i, v in enumerate(rec.votes):
            if v is not None and not _is_index(v, n):
                raise ctx.error(f"expected a response index in 0..{n - 1} or null, got {v!r}", f"votes[{i}]")
    if rec.soft_label is not None and not (_is_number(rec.soft_label) and 0.0 <= rec.soft_label <= 1.0):
        raise ctx.error(f"expected a probability in [0, 1], got {rec.soft_label!r}", "soft_label")
    if rec.soft_label is not None and n != 2:
        raise ctx.error(f"a soft label needs exactly 2 responses, got {n}", "soft_label")
    _check_length(rec.step_labels, n, "step_labels", "one list per response", ctx)
    for i, labels in enumerate(rec.step_labels or []):
        if labels is None:
            continue
        steps = rec.responses[i].steps
        if not isinstance(labels, list) or not all(v is None or _is_number(v) for v in labels):
            raise ctx.error("expected a list of numbers or nulls", f"step_labels[{i}]")
        if steps is None or len(labels) != len(steps):
            raise ctx.error(f"expected one label per step ({0 if steps is None else len(steps)} steps), "
                            f"got {len(labels)}", f"step_labels[{i}]")
    if rec.margin is not None and not _is_number(rec.margin):
        raise ctx.error(f"expected a number, got {rec.margin!r}", "margin")
    return rec
