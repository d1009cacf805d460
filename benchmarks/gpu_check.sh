#!/usr/bin/env bash
# GPU check: QLoRA SFT step and vLLM throughput on a model with the REAL Qwen2.5-VL-3B architecture and sizes.
#
# STATUS: UNVERIFIED. Written in a session without a GPU; `build --dry-run` (config, 3.75B parameter count,
# processor files) was checked on CPU, nothing else here has run. Treat the first GPU run as its test.
#
# What it does, offline (no hub access needed):
#   1. builds a random-weight Qwen2.5-VL with Qwen2.5-VL-3B-Instruct's config (36 layers, hidden 2048,
#      32-block vision tower, vocab 151,936; ~3.75B parameters, bf16, ~7.5 GB on disk);
#   2. renders N formulas (`unitune demo-data hmer` code) as the training / inference data;
#   3. QLoRA SFT with LLaMA-Factory and recipes/unimumer_qlora.yaml as it is (4-bit NF4, LoRA r64 on all
#      linears, batch 2 x grad-acc 8, 512x512 max pixels, bf16) for STEPS steps: peak GPU memory, samples/s;
#   4. vLLM, same N requests (built by unitune's shared prompt code): upstream's batch-size-1 loop vs all
#      requests submitted at once; fixed-length outputs (ignore_eos) so both do the same work: images/s.
#   5. prints one Markdown table (also $OUT/gpu_check.md).
#
# Usage (repository root, venv with the train + vllm extras):
#   bash benchmarks/gpu_check.sh                 # everything; ~15-25 min on one H100
#   OUT=runs/gpu_check N=512 STEPS=10 MAX_TOKENS=64 bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh build|data|sft|vllm|table    # one stage (the model and data are reused)
# Never a test dependency.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-runs/gpu_check}
N=${N:-512}
STEPS=${STEPS:-10}
MAX_TOKENS=${MAX_TOKENS:-64}
MODEL="$OUT/qwen2_5_vl_3b_random"
DATA="$OUT/data"
STAGE=${1:-all}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed); nothing to measure." >&2
  exit 1
}

if [[ $STAGE == all || $STAGE == build ]]; then
  if [ -f "$MODEL/model.safetensors.index.json" ] || [ -f "$MODEL/model.safetensors" ]; then
    echo "== model: reusing $MODEL"
  else
    echo "== building the random Qwen2.5-VL-3B-sized model in $MODEL"
    "$PY" benchmarks/gpu_check.py build "$MODEL"
  fi
fi
if [[ $STAGE == all || $STAGE == data ]]; then
  if [ -f "$DATA/hmer_demo_test.json" ]; then
    echo "== data: reusing $DATA"
  else
    echo "== rendering $N + $N formulas into $DATA"
    "$PY" benchmarks/gpu_check.py data "$DATA" --n "$N"
  fi
fi
if [[ $STAGE == all || $STAGE == sft ]]; then
  echo "== QLoRA SFT, $STEPS steps"
  rm -rf "$OUT/sft_out"
  "$PY" benchmarks/gpu_check.py sft "$MODEL" "$DATA" "$OUT/sft.json" --steps "$STEPS" 2>&1 | tee "$OUT/sft.log" | tail -20
fi
if [[ $STAGE == all || $STAGE == vllm ]]; then
  echo "== vLLM: $N requests, batch-size-1 loop vs all at once ($MAX_TOKENS tokens each)"
  "$PY" benchmarks/gpu_check.py vllm "$MODEL" "$DATA" "$OUT/vllm.json" --n "$N" --max-tokens "$MAX_TOKENS" \
    2>&1 | tee "$OUT/vllm.log" | tail -20
fi
"$PY" benchmarks/gpu_check.py table "$OUT/sft.json" "$OUT/vllm.json" | tee "$OUT/gpu_check.md"
