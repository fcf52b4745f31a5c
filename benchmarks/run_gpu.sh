#!/usr/bin/env bash
# The benchmarks at the Qwen shapes on one NVIDIA GPU (what docs/performance.md's "Qwen shapes on a GPU"
# records). Random weights with the real Qwen2.5-1.5B shape: nothing is downloaded.
#
#   bash benchmarks/run_gpu.sh [OUTPUT_DIR]        # about 5 minutes on one H100; writes OUTPUT_DIR/*.md
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-runs/benchmarks-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# (a) the tutorial's batch: 7 prompts x 12 completions, P = 100, T = 400, bf16; no_grad = old/ref log-probs
timeout 150 $PY benchmarks/bench_logprobs.py --device cuda --model qwen2.5-1.5b --batch 84 --prompt-len 100 \
    --completion-len 400 --chunk 12 --modes no_grad 2>&1 | tee "$OUT/logprobs_no_grad.md"
# (a) the update's micro-batch (the Qwen preset's micro_batch_size = 12), forward + backward
timeout 120 $PY benchmarks/bench_logprobs.py --device cuda --model qwen2.5-1.5b --batch 12 --prompt-len 100 \
    --completion-len 400 --chunk 4 --modes grad 2>&1 | tee "$OUT/logprobs_grad.md"
# (c) KV cache: the tiny policy (128 rows) and the Qwen2.5-1.5B shape at 128 and 512 new tokens
timeout 240 $PY benchmarks/bench_kv_cache.py --device cuda --model qwen2.5-1.5b --lengths 128,512 --batch 8 --tiny-batch 128 \
    --repeats 2 2>&1 | tee "$OUT/kv_cache.md"
# (b) one step of the tiny preset on one GPU
timeout 120 $PY benchmarks/bench_step.py --device cuda --configs 1x1 2>&1 | tee "$OUT/step.md"
