"""The one canonical record every input format is converted into.

Nothing past the loader sees a format-specific field. A record holds a prompt (a conversation), two or more
candidate responses, and the preference in whichever form the source had it. `comparisons()` turns any of
those forms into the (winner, loser, probability) triples that pairwise training and evaluation consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
ROLES = ("system", "user", "assistant")


@dataclass
class Response:
    """One candidate final assistant turn; `steps` when the source splits it into reasoning steps."""

    content: str
    steps: list[str] | None = None


@dataclass
class Comparison:
    """Response `winner` is preferred over `loser` with probability `p` (1.0 for a hard label)."""

    winner: int
    loser: int
    p: float = 1.0
    margin: float | None = None


@dataclass
class PreferenceRecord:
    """A prompt, its candidate responses and the preference between them.

    Preference fields (any subset may be present; all index into `responses`):
      chosen:      index of the preferred response (pairwise or best-of-K data).
      ranking:     response indices from best to worst (a full ranking).
      scores:      one scalar rating per response (higher is better; equal ratings are ties).
      attributes:  per response, a dict objective -> rating (None where the source has no label).
      votes:       per annotator, the index of the preferred response, or None for a tie.
      soft_label:  probability that response 0 is preferred over response 1 (pairs only).
      step_labels: per response, one label per step (1 correct, 0 wrong, fractions for soft labels, None
                   for steps the source leaves unlabeled).
      margin:      preference strength or margin for the pair (Llama-2 margin / scaled BT).
    """

    id: str
    prompt: list[Message]
    responses: list[Response]
    chosen: int | None = None
    ranking: list[int] | None = None
    scores: list[float] | None = None
    attributes: list[dict[str, float | None]] | None = None
    votes: list[int | None] | None = None
    soft_label: float | None = None
    step_labels: list[list[float | None] | None] | None = None
    margin: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # subset, source, line, anything format-specific

    @property
    def subset(self) -> str | None:
        return self.meta.get("subset")

    @property
    def label_kinds(self) -> list[str]:
        """Which preference forms this record carries, e.g. ['chosen'] or ['votes', 'soft_label']."""
        kinds = ("chosen", "ranking", "scores", "attributes", "votes", "soft_label", "step_labels")
        return [k for k in kinds if getattr(self, k) is not None]

    def preference_probability(self) -> float | None:
        """P(response 0 beats response 1) from votes (a tie counts 1/2) or the soft label; pairs only."""
        if self.soft_label is not None:
            return self.soft_label
        if self.votes:
            return sum(1.0 if v == 0 else 0.5 if v is None else 0.0 for v in self.votes) / len(self.votes)
        return None

    def comparisons(self) -> list[Comparison]:
        """Every ordered (winner, loser) pair the labels imply, strongest form of label first.

        chosen -> chosen beats each other response; ranking -> each earlier beats each later; scores ->
        every pair with different ratings; votes / soft_label -> the favoured response with p > 0.5 (an even
        split implies no comparison, never a hard label).
        """
        n = len(self.responses)
        if self.chosen is not None:
            return [Comparison(self.chosen, j, 1.0, self.margin) for j in range(n) if j != self.chosen]
        if self.ranking is not None:
            return [Comparison(a, b, 1.0, self.margin) for a, b in combinations(self.ranking, 2)]
        if self.scores is not None:
            out = []
            for i, j in combinations(range(n), 2):
                if self.scores[i] != self.scores[j]:
                    w, l = (i, j) if self.scores[i] > self.scores[j] else (j, i)
                    out.append(Comparison(w, l, 1.0, abs(self.scores[i] - self.scores[j])))
            return out
        p = self.preference_probability()
        if p is not None and p != 0.5:
            return [Comparison(0, 1, p, self.margin) if p > 0.5 else Comparison(1, 0, 1.0 - p, self.margin)]
        return []

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form (what `rewardkit data convert` writes); empty fields are left out."""
        out: dict[str, Any] = {"id": self.id, "prompt": self.prompt}
        out["responses"] = [
            {"content": r.content, "steps": r.steps} if r.steps is not None else r.content
            for r in self.responses
        ]
        for k in ("chosen", "ranking", "scores", "attributes", "votes", "soft_label", "step_labels", "margin"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.meta:
            out["meta"] = self.meta
        return out


def user_prompt(text: str) -> list[Message]:
    """A plain-text prompt becomes one user turn."""
    return [{"role": "user", "content": text}]
