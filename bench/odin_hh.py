"""ODIN length de-biasing on one HH-RLHF file: a baseline and an ODIN model trained side by side with
examples/train_hh_odin.yaml (MiniLM, agreed train split), then, on the test split, the accuracy and
reward-length Pearson of the baseline's reward and of ODIN's quality head r_Q (what it scores with), its length
head r_L and their sum r_Q + r_L (what the ranking loss saw).

    python bench/odin_hh.py --split harmless-base
    python bench/odin_hh.py --split helpful-base --out runs/odin-helpful

Training is whatever the machine gives (about 90 s a run on the 2-core CPU); the table is what matters.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import common  # noqa: F401  (offline mode)
from rewardkit.batching import Planner
from rewardkit.data import load_split, shared_data_dir
from rewardkit.eval.metrics import pearson
from rewardkit.models.reward_model import RewardModel
from rewardkit.precision import compute_context, compute_dtype, resolve_precision
from rewardkit.train import load_config, train

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "train_hh_odin.yaml"


@torch.inference_mode()
def head_outputs(model: RewardModel, records) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Per record, every output of the head (n_responses, n_outputs), and the responses' token lengths, at the
    precision `rewardkit eval` uses (auto: bf16 where fast), so the baseline's numbers are eval's."""
    precision = resolve_precision("auto", model.device)
    model.compute_dtype = compute_dtype(precision)
    planner = Planner(model)
    encoded = [[model.encode(r.prompt, x) for x in r.responses] for r in records]
    outputs: list = [None] * len(records)
    for part in planner.batches(encoded):
        plan = planner.plan([encoded[i] for i in part])
        with compute_context(precision, model.device):
            out = model(**plan.model_inputs(), all_outputs=True).float()
        k = 0
        for i in part:
            outputs[i] = out[k: k + len(encoded[i])]
            k += len(encoded[i])
    return outputs, [[e.response_tokens for e in row] for row in encoded]


def accuracy_and_pearson(values: list[list[float]], lengths: list[list[int]], records) -> tuple[float, float]:
    wins = sum(v[r.chosen] > v[1 - r.chosen] for v, r in zip(values, records))
    flat_v = [x for v in values for x in v]
    flat_l = [x for row in lengths for x in row]
    return wins / len(records), pearson(flat_v, flat_l)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="harmless-base", help="HH-RLHF file: harmless-base, helpful-base, ...")
    ap.add_argument("--out", default="runs/odin", help="where the two runs go (baseline/, odin/); a run already "
                                                        "there is reused, not trained again")
    args = ap.parse_args()
    shared = shared_data_dir()
    path = shared / "hh-rlhf" / args.split / "test.jsonl.gz" if shared else None
    if path is None or not path.is_file():
        sys.exit(f"needs ../shared/data/hh-rlhf/{args.split}/test.jsonl.gz")
    test = [r for r in load_split(path, "test").records if r.chosen is not None]

    rows = []
    for name, length_head in (("baseline", False), ("ODIN", True)):
        out = Path(args.out) / name.lower()
        config = load_config(CONFIG, [f"data=[{path}]", "eval_data=[]", f"output={out}", "progress=false",
                                      f"length_head={str(length_head).lower()}"])
        seconds = None  # a reused run
        if not (out / "last").is_dir():
            t0 = time.perf_counter()
            train(config)
            seconds = time.perf_counter() - t0
        model = RewardModel.from_pretrained(out / "last").eval()
        outputs, lengths = head_outputs(model, test)
        if not length_head:
            rows.append((name, "reward", *accuracy_and_pearson([o[:, 0].tolist() for o in outputs], lengths, test),
                         seconds))
            continue
        for head, pick in (("r_Q (scores)", lambda o: o[:, 0]), ("r_L", lambda o: o[:, 1]),
                           ("r_Q + r_L", lambda o: o[:, 0] + o[:, 1])):
            rows.append((name, head, *accuracy_and_pearson([pick(o).tolist() for o in outputs], lengths, test),
                         seconds))
    print(f"\nHH-RLHF {args.split}, {len(test)} test pairs, MiniLM, 1 epoch (examples/train_hh_odin.yaml)\n")
    print("| model | head | accuracy | Pearson(reward, length) | train s |")
    print("|---|---|---|---|---|")
    for name, head, acc, rho, seconds in rows:
        print(f"| {name} | {head} | {100 * acc:.1f}% | {rho:+.3f} | {'reused' if seconds is None else f'{seconds:.0f}'} |")


if __name__ == "__main__":
    main()
