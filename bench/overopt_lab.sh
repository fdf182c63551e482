#!/usr/bin/env bash
# The over-optimization lab end to end on HH-RLHF, at a size the 2-core CPU runs in about an hour
# (docs/BENCHMARKS.md, "The over-optimization lab"). Every step keeps what it finished: rerun after an
# interruption and it continues.
#   bash bench/overopt_lab.sh            # from the repository root, with ../shared/data present
set -euo pipefail
RK=".venv/bin/rewardkit"
HH="../shared/data/hh-rlhf"
OUT="${OUT:-runs/overopt-lab}"

# 1. The gold: SmolLM2-135M with LoRA (examples/overopt_gold.yaml), here on harmless-base's train split for
#    60 steps of 16 pairs. The config's default, the four train splits for a whole epoch (428 steps), takes
#    about 2 hours on this CPU (744 s for 40 steps); 40 steps of it leave the gold at chance (50.5% held out).
GOLD="${GOLD:-runs/overopt-gold-harmless}"
[ -f "$GOLD/best/rewardkit.json" ] || $RK train examples/overopt_gold.yaml --set max_steps=60 \
    --set "data=[$HH/harmless-base/test.jsonl.gz]" --set "eval_data=[$HH/harmless-base/test.jsonl.gz]" \
    --set output="$GOLD"

# 2. Gold labels on the test split of two files (pairs the gold never saw), MiniLM proxies on 250 and 500.
$RK overopt prepare --gold "$GOLD/best" -d "$HH/harmless-base/test.jsonl.gz" \
    -d "$HH/helpful-base/test.jsonl.gz" --split test --counts 250,500 --backbones minilm \
    --set max_length=256 --set lr=1e-4 --set epochs=2 --out "$OUT"

# 3. Short single-turn prompts for the policy: the first 64 of at most 200 characters from two other files.
.venv/bin/python - "$HH" runs/overopt-prompts.jsonl <<'EOF'
import json, sys
from rewardkit.data import load_split
rows = []
for name in ("helpful-online", "helpful-rejection-sampled"):
    for r in load_split(f"{sys.argv[1]}/{name}/test.jsonl.gz", "test").records:
        if len(r.prompt) == 1 and len(r.prompt[0]["content"]) <= 200 and len(rows) < 64:
            rows.append({"id": f"{name}:{r.id}", "prompt": r.prompt[0]["content"]})
open(sys.argv[2], "w").write("".join(json.dumps(row) + "\n" for row in rows))
EOF

# 4. Best-of-n: 32 prompts x 16 SmolLM2-135M-Instruct samples.
$RK overopt --config "$OUT/overopt.yaml" --prompts runs/overopt-prompts.jsonl --limit 32 --pool 16 --n-max 16 \
    --max-new-tokens 64

# 5. GRPO against the 500-label proxy, with and without a KL penalty.
$RK overopt rl --config "$OUT/overopt.yaml" --prompts runs/overopt-prompts.jsonl --objective minilm-500 \
    --beta 0.04 --beta 0 --steps 20 --eval-every 5 --eval-prompts 8 --eval-samples 4 --lr 1e-5
