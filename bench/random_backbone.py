"""A backbone with the real architecture and tokenizer but random weights: enough to time a model.

Speed does not depend on the weights, and a GPU machine that cannot download or receive a large checkpoint can
still time the real architecture. Two steps, so only the small files travel:

    python bench/random_backbone.py smollm2 arch/smollm2 --no-weights   # here: config + tokenizer (a few MB)
    python bench/random_backbone.py arch/smollm2 /tmp/smollm2-random    # there: random weights (seeded)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rewardkit.models.reward_model import resolve_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a packaged short name (smollm2, minilm) or a model directory")
    parser.add_argument("out")
    parser.add_argument("--no-weights", action="store_true", help="write only the config and the tokenizer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path, gguf_file = resolve_model(args.source)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(path, **extra)
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    out = Path(args.out)
    tokenizer.save_pretrained(out)
    if args.no_weights:
        config.save_pretrained(out)
    else:
        torch.manual_seed(args.seed)
        AutoModel.from_config(config).save_pretrained(out)
    print(f"wrote {out} ({config.model_type}, {'config only' if args.no_weights else 'random weights'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
