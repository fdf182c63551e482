#!/usr/bin/env bash
# The GPU numbers in one run (used on a lent GPU machine with no network; see README "Speed").
#   bash bench/gpu_suite.sh [PART ...]    parts: check smollm2 minilm best_of_16 profile (default: all)
# Expects, in .gpu/ (ignored by git): whl/ (wheels of the Python packages the machine lacks), smollm2-arch/ and
# minilm-arch/ (config + tokenizer, from bench/random_backbone.py --no-weights) and data/hh-rlhf/harmless-base.
# Backbones get random weights there: speed does not depend on them, so accuracies in these tables mean nothing.
set -uo pipefail
PARTS=" ${*:-check smollm2 minilm best_of_16 profile} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
PY=${PY:-python3}  # the dry run on a CPU machine passes its virtualenv's python
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
$PY -V; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
[ -n "${SKIP_INSTALL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site --find-links .gpu/whl \
  transformers trl datasets accelerate huggingface_hub pydantic pydantic_core annotated-types typing-inspection \
  dill multiprocess fsspec peft typer tokenizers safetensors httpx2 httpcore2 truststore || exit 1
export PYTHONPATH=/tmp/site:$PWD/src REWARDKIT_DATA=$PWD/.gpu/data
$PY bench/random_backbone.py .gpu/smollm2-arch /tmp/smollm2 && $PY bench/random_backbone.py .gpu/minilm-arch /tmp/minilm || exit 1
quiet() { grep -v -i "warn\|Loading weights\|Writing model\|MISSING\|UNEXPECTED\|^Key \|^---\|LOAD REPORT\|^Notes\|Tokenizing\|Adding EOS\|Filtering"; }
want check && timeout 150 $PY bench/gpu_check.py --tokenizer .gpu/minilm-arch --out "$OUT" ${DRY_RUN:+--dry-run} 2>&1 | quiet
# rewardkit in both precisions: at these sizes a GPU is launch-bound, and bf16 autocast adds casts
want smollm2 && timeout 240 $PY bench/train_vs_trl.py --model /tmp/smollm2 --precision auto,fp32 --trl-precision bf16 ${LIMIT:+--limit $LIMIT} 2>&1 | tee "$OUT/train_smollm2.txt" | quiet
want minilm && timeout 200 $PY bench/train_vs_trl.py --model /tmp/minilm --precision auto,fp32 ${LIMIT:+--limit $LIMIT} 2>&1 | tee "$OUT/train_minilm.txt" | quiet
want best_of_16 && timeout 150 $PY bench/best_of_n.py --model /tmp/smollm2 --prompts ${PROMPTS:-128} 2>&1 | tee "$OUT/best_of_16.txt" | quiet
want profile && timeout 200 $PY bench/gpu_profile.py --model /tmp/smollm2 --pairs ${PAIRS:-320} 2>&1 | quiet > "$OUT/profile.txt"
echo; echo "== tables (full logs in $OUT) =="
for f in train_smollm2 train_minilm best_of_16; do [ -f "$OUT/$f.txt" ] && echo "-- $f" && grep -E '^\||^- rewardkit|peak|speed-up vs' "$OUT/$f.txt"; done
[ -f "$OUT/profile.txt" ] && grep -E "=====|cProfile|GPU busy|wall|rewardkit/|functional_call|accelerator.py|adam.py:[0-9]+\(step\)" "$OUT/profile.txt" | cut -c1-160
exit 0
