#!/usr/bin/env bash
# The GPU half of the ANN benchmark on a lent GPU machine (Python 3.12, PyTorch/JAX/CuPy, no
# TensorFlow, no internet), in under 8 minutes on an H200:
#   here:   pip download scann==1.4.2 --python-version 3.12 --only-binary=:all: --no-deps -d .wheels
#   there:  bash benchmarks/gpu_half.sh            (the device tool carries .wheels/ along)
# Writes benchmarks/results/gpu/<device>.json (and a copy under $OUT when the device tool sets it);
# then here: scaleout bench-report --out benchmarks/reports/cpu --gpu-results benchmarks/results/gpu/<device>.json
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --no-deps --no-index .wheels/scann-*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
out=benchmarks/results/gpu/$(python3 -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())" 2>/dev/null || echo gpu).json
timeout 470 python3 benchmarks/gpu_bruteforce.py --out "$out" --budget 300
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/gpu" && cp "$out" "$OUT/gpu/"; fi
