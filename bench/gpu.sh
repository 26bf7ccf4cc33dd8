#!/usr/bin/env bash
# The GPU throughput checks of README "Throughput", as one script for a lent GPU machine (no install: the
# machine's own torch and timm; hlvm from the checkout). Writes each bench's output to $OUT (or ./gpu-bench).
# Usage: bash bench/gpu.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-gpu-bench}"; mkdir -p "$out"
nproc_=$(nproc)
workers=$(( nproc_ > 2 ? nproc_ - 2 : 1 ))
{ nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; } 2>&1 | tee "$out/env.txt"
common=(--device cuda --model mae_vit_base_patch16 --dtype bf16 --repeats 5 --iters 10 --num-workers "$workers"
        --synthetic-images 3000 --loader-batches 8)
python3 bench/train.py "${common[@]}" --batch 256 2>&1 | tee "$out/vitb_bf16_b256.txt"
python3 bench/train.py "${common[@]}" --batch 256 --compile 2>&1 | tee "$out/vitb_bf16_b256_compile.txt"
python3 bench/train.py "${common[@]}" --batch 512 --compile 2>&1 | tee "$out/vitb_bf16_b512_compile.txt"
python3 bench/train.py --device cuda --tiny-only --dtype bf16 --batch 1024 --repeats 5 --iters 10 2>&1 | tee "$out/tiny_bf16_b1024.txt"
