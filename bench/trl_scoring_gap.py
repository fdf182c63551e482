"""How far TRL's own scores of a rewardkit checkpoint fall from rewardkit's, on HH-RLHF pairs.

    .venv/bin/python bench/trl_scoring_gap.py --model encoder=runs/hh-minilm/best --model causal=runs/hh-smollm2/merged \
        [--pairs 200] [--json gap.json]

Handed a checkpoint path, TRL 1.16's GRPOTrainer/RLOOTrainer score it their own way: `prompt + completion` as
one text (the reward tokenizer's chat template only in the conversational format), tokenized with
add_special_tokens=False, right-padded, the first logit. rewardkit scores as the model was trained (its template
or sentence-pair encoding, special tokens, the read position it was trained at). Both are run here on the same
HH-RLHF harmless-base test pairs (the agreed split) that fit the model's max length whole (TRL never truncates,
rewardkit does: pairs it would cut are left out so that only the reading differs), TRL's through its own
`_calculate_rewards` (bench/trl_common.py, 32 texts a call), in both of TRL's formats:

- standard: the prompt as HH's own transcript text ("\\n\\nHuman: ...\\n\\nAssistant:"), the completion " " + response;
- conversational: the prompt's messages, the completion one assistant message.

Printed per model and format: pairwise agreement (share of pairs both order the same way), Spearman over all
responses, and each one's accuracy against the human label.
"""

from __future__ import annotations

import argparse
import json
import sys

from common import device_name, harmless_path
from trl_common import reward_harness, spearman, trl_rewards

from rewardkit.data import load_split  # noqa: E402
from rewardkit.models.spec import load_scorer, named_specs  # noqa: E402


def transcript(prompt: list[dict]) -> str:
    """HH-RLHF's own text form of a prompt, ending where the assistant's answer starts."""
    turns = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in prompt)
    return turns + "\n\nAssistant:"


def trl_batch(records, conversational: bool) -> tuple[list, list]:
    prompts, completions = [], []
    for record in records:
        for response in record.responses[:2]:
            if conversational:
                prompts.append(record.prompt)
                completions.append([{"role": "assistant", "content": response.content}])
            else:
                prompts.append(transcript(record.prompt))
                completions.append(" " + response.content)
    return prompts, completions


def compare(rk: list[float], trl: list[float], chosen: list[int]) -> dict:
    """rk, trl: [r(response 0), r(response 1)] per pair, flattened; chosen: the human's pick per pair."""
    diffs = [(rk[2 * i] - rk[2 * i + 1], trl[2 * i] - trl[2 * i + 1]) for i in range(len(chosen))]

    def accuracy(k):
        return sum((d[k] > 0) == (c == 0) and d[k] != 0 for d, c in zip(diffs, chosen)) / len(chosen)

    return {"pairwise_agreement": sum(a * b > 0 for a, b in diffs) / len(diffs),
            "spearman": spearman(rk, trl), "rewardkit_accuracy": accuracy(0), "trl_accuracy": accuracy(1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeat).")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()

    pool = [r for r in load_split(harmless_path(), "test").records if r.chosen is not None and len(r.responses) == 2]
    figures = {"device": device_name(), "data": "hh-rlhf harmless-base test", "models": {}}
    for name, path in named_specs(args.model):
        scorer = load_scorer(path)
        candidates = pool[: 4 * args.pairs]  # enough that `pairs` of them fit
        kept = [(r, res) for r, res in zip(candidates, scorer.score(candidates)) if not any(res.truncated or [])][: args.pairs]
        records = [r for r, _ in kept]
        chosen = [r.chosen for r in records]
        rk = [x for _, res in kept for x in res.rewards]
        harness = reward_harness(path, path)
        figures["models"][name] = row = {"checkpoint": path, "kind": scorer.describe().get("text_mode"),
                                         "pairs": len(records), "max_length": scorer.describe().get("max_length")}
        for fmt in ("standard", "conversational"):
            try:
                trl = trl_rewards(harness, *trl_batch(records, fmt == "conversational"), chunk=32)
            except Exception as e:  # e.g. an encoder's tokenizer without a chat template
                row[fmt] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            else:
                row[fmt] = compare(rk, trl, chosen)
        for fmt in ("standard", "conversational"):
            r = row[fmt]
            if "error" in r:
                print(f"{name:10} {fmt:15} TRL fails: {r['error']}")
            else:
                print(f"{name:10} {fmt:15} agreement {r['pairwise_agreement']:.3f}  Spearman {r['spearman']:.3f}  "
                      f"accuracy rewardkit {r['rewardkit_accuracy']:.3f} / TRL {r['trl_accuracy']:.3f}")
        print(f"{name:10} {len(records)} pairs that fit max_length {row['max_length']}, {figures['device']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
