"""The wire format of POST /score: typed pydantic models, so the OpenAPI schema documents it and bad input
is rejected with a reason before anything is queued.

A request is one item (`prompt` + `responses`, or `prompt_ids` + `response_ids`) or `items`, a list of
such objects. A prompt is a string (one user turn) or a list of chat messages; a response is a string, or
{steps: [...]} for a process reward model. Token ids are scored exactly
as given (no template, no special tokens added), so a policy and its reward model never disagree about
tokenization.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, StrictStr, \
    Tag, model_validator

from rewardkit.data.record import Response

ITEM_FORMS = ("give prompt and responses (text or chat messages), or prompt_ids and response_ids (token ids), "
              "not both")


def _utf8(text: str) -> str:
    """JSON escapes can carry unpaired surrogates, which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains an unpaired surrogate (not valid Unicode)") from None
    return text


Text = Annotated[StrictStr, AfterValidator(_utf8)]


class ChatMessage(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Text


def _prompt_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text-prompt"
    if isinstance(value, list):
        return "chat-prompt"
    return None


Prompt = Annotated[
    Union[Annotated[Text, Tag("text-prompt")],
          Annotated[list[ChatMessage], Field(min_length=1), Tag("chat-prompt")]],
    Discriminator(_prompt_kind, custom_error_type="prompt_type",
                  custom_error_message="prompt must be a string or a list of {role, content} messages"),
]
TokenIds = list[StrictInt]


class StepsIn(BaseModel):
    """A response split into reasoning steps, for a process reward model (one score per step)."""

    model_config = ConfigDict(extra="forbid")
    steps: Annotated[list[Text], Field(min_length=1)] = Field(description="The steps, in order.")
    content: Text | None = Field(None, description="The whole response (default: the steps joined by blank "
                                                   "lines).")

    def response(self) -> Response:
        return Response(self.content if self.content is not None else "\n\n".join(self.steps), list(self.steps))


def _response_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text-response"
    if isinstance(value, dict):
        return "steps-response"
    return None


ResponseIn = Annotated[
    Union[Annotated[Text, Tag("text-response")], Annotated[StepsIn, Tag("steps-response")]],
    Discriminator(_response_kind, custom_error_type="response_type",
                  custom_error_message="a response must be a string or {steps: [...], content?}"),
]
Aggregation = Literal["product", "min", "mean", "last"]


def response_objects(responses: list) -> list[Response]:
    return [Response(r) if isinstance(r, str) else r.response() for r in responses]


def check_item_form(prompt, responses, prompt_ids, response_ids) -> None:
    """Exactly one of the two forms, complete."""
    text = prompt is not None or responses is not None
    ids = prompt_ids is not None or response_ids is not None
    if text == ids:
        raise ValueError(ITEM_FORMS)
    if text and (prompt is None or responses is None):
        raise ValueError(f"missing field '{'prompt' if prompt is None else 'responses'}'")
    if ids and (prompt_ids is None or response_ids is None):
        raise ValueError(f"missing field '{'prompt_ids' if prompt_ids is None else 'response_ids'}'")


class ItemIn(BaseModel):
    """One prompt and its candidate responses, as text or as token ids."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "What is the capital of France?", "responses": ["Paris.", "London."]},
        {"prompt_ids": [1, 2, 3], "response_ids": [[4, 5], [6]]},
    ]})

    prompt: Prompt | None = Field(None, description="One user turn, or a conversation of chat messages.")
    responses: Annotated[list[ResponseIn], Field(min_length=1)] | None = Field(
        None, description="Candidate final assistant turns; one reward each. A process reward model also takes "
                          "{steps: [...]} and scores every step.")
    prompt_ids: TokenIds | None = Field(
        None, description="The prompt as token ids, special tokens included (nothing is added).")
    response_ids: Annotated[list[Annotated[TokenIds, Field(min_length=1)]], Field(min_length=1)] | None = Field(
        None, description="Each response as token ids; the reward is read at its last id.")

    @model_validator(mode="after")
    def _one_form(self):
        check_item_form(self.prompt, self.responses, self.prompt_ids, self.response_ids)
        return self

    @property
    def uses_ids(self) -> bool:
        return self.prompt_ids is not None

    @property
    def n_responses(self) -> int:
        return len(self.response_ids if self.uses_ids else self.responses)

    def response_objects(self) -> list[Response]:
        return response_objects(self.responses)

    def messages(self) -> list[dict[str, str]]:
        """The prompt as a conversation (a plain string is one user turn)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [{"role": m.role, "content": m.content} for m in self.prompt]


class ScoreRequest(BaseModel):
    """One item at the top level, or several under `items`; `normalize` adds normalized rewards."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "What is the capital of France?", "responses": ["Paris.", "London."]},
        {"items": [{"prompt": [{"role": "user", "content": "Hi!"}], "responses": ["Hello!", "Go away."]}],
         "normalize": True},
    ]})

    prompt: Prompt | None = None
    responses: Annotated[list[ResponseIn], Field(min_length=1)] | None = None
    prompt_ids: TokenIds | None = None
    response_ids: Annotated[list[Annotated[TokenIds, Field(min_length=1)]], Field(min_length=1)] | None = None
    items: Annotated[list[ItemIn], Field(min_length=1)] | None = Field(
        None, description="Several prompts, each with its responses; answered as {'items': [...]} in order.")
    normalize: StrictBool = Field(False, description="Also return (reward - mean) / std with the stats stored "
                                                     "with the model.")
    aggregation: Aggregation | None = Field(None, description="Process reward models: how step scores become "
                                                              "each reward (default: the server's).")
    aggregator: Literal["mean", "wco", "uwo", "mean_minus_std"] | None = Field(
        None, description="Ensembles: how the members' rewards combine (default: the ensemble's).")

    @model_validator(mode="after")
    def _items_or_one(self):
        single = {k: getattr(self, k) for k in ("prompt", "responses", "prompt_ids", "response_ids")
                  if getattr(self, k) is not None}
        if self.items is not None and single:
            raise ValueError(f"give either 'items' or one item at the top level, not both "
                             f"(found 'items' and {', '.join(repr(k) for k in single)})")
        if self.items is None:
            if not single:
                raise ValueError("missing field: give prompt and responses, prompt_ids and response_ids, or items")
            check_item_form(self.prompt, self.responses, self.prompt_ids, self.response_ids)
        return self

    @property
    def batched(self) -> bool:
        return self.items is not None

    def item_list(self) -> list[ItemIn]:
        if self.items is not None:
            return self.items
        return [ItemIn.model_construct(prompt=self.prompt, responses=self.responses, prompt_ids=self.prompt_ids,
                                       response_ids=self.response_ids)]


class ItemScores(BaseModel):
    """Scores for one item's responses. Only `rewards` is always present; the rest is whatever the Scorer has."""

    rewards: list[float | None] = Field(description="One reward per response (null if not finite).")
    normalized_rewards: list[float | None] | None = Field(None, description="(reward - mean) / std, when asked.")
    objectives: dict[str, list[float | None]] | None = Field(None, description="Per objective, one score per "
                                                                              "response.")
    weights: dict[str, float] | None = Field(None, description="The weights that combined the objectives.")
    step_rewards: list[list[float | None]] | None = Field(None, description="Per response, one score per step.")
    members: list[list[float | None]] | None = Field(None, description="Per ensemble member, one score per "
                                                                      "response.")
    uncertainty: list[float | None] | None = Field(None, description="Per response, the ensemble members' "
                                                                     "spread.")
    response_tokens: list[int] | None = Field(None, description="Per response, its length in model tokens.")
    truncated: list[int] | None = Field(None, description="Per response, tokens that truncation removed.")


class BatchScores(BaseModel):
    """The answer to an `items` request: one ItemScores per item, in order."""

    items: list[ItemScores]


class ErrorDetail(BaseModel):
    """Every error: a human-readable reason."""

    detail: str


# -- validation errors as one readable line ----------------------------------------------------------------------
def _where(loc: tuple) -> str:
    """('body', 'items', 0, 'prompt', 'chat-prompt', 1, 'role') -> 'items[0].prompt[1].role'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif "-" in part or "[" in part:  # a union branch tag, not a field
            continue
        else:
            out += f".{part}" if out else part
    return out or "body"


def _message(error: dict) -> str:
    msg = str(error.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def validation_detail(errors: list[dict], limit: int = 5) -> str:
    """pydantic/FastAPI errors as 'where: why; where: why' (the first `limit`, deduplicated)."""
    lines: list[str] = []
    for e in errors:
        line = f"{_where(tuple(e.get('loc', ())))}: {_message(e)}"
        if e.get("type") == "json_invalid":
            line = f"body is not valid JSON: {(e.get('ctx') or {}).get('error', 'decode error')}"
        if line not in lines:
            lines.append(line)
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def validation_errors(errors: list[dict]) -> list[dict[str, Any]]:
    """The same errors as JSON-safe dicts ({loc, msg, type}) for clients that want them structured."""
    return [{"loc": [p if isinstance(p, (int, str)) else str(p) for p in e.get("loc", ())],
             "msg": _message(e), "type": str(e.get("type", ""))} for e in errors]
