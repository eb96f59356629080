#!/usr/bin/env bash
# GPU memory and speed check for a machine with one CUDA GPU (about 5–8 minutes on an H100/H200):
#   1. bench/bench_memory.py on CUDA: planner vs torch.cuda.max_memory_allocated, every measurable mode;
#   2. 50 LoRA steps each on random-weight real-size SDXL (1024 px, bf16) and Flux-dev (1024 px, fp8 — the
#      24 GB mode), printing steps/s and peak memory.
# Usage: bash scripts/gpu_check.sh   (uses .venv/bin/python when present; PYTHON=… to choose another)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch")'
echo "== memory: planner vs measured (CUDA) =="
"$PY" bench/bench_memory.py --device cuda
echo "== training throughput =="
"$PY" bench/bench_gpu_train.py --steps 50
