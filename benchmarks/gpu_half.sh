#!/usr/bin/env bash
# The GPU half of the ANN benchmark on a lent GPU machine (Python 3.12 with PyTorch, JAX and CuPy; no TensorFlow,
# no package registry), in about 6 minutes on an H200:
#   here:   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#             --platform manylinux_2_27_x86_64 -d .wheels scann==1.4.2
#   there:  bash benchmarks/gpu_half.sh            (the device tool carries .wheels/ along); first, in seconds:
#           python3 benchmarks/gpu_fused_check.py  (the Triton searches right, compiled, and their kernel times)
# Writes benchmarks/results/gpu/<device>.json (rewritten after every step; copied under $OUT when the device tool
# sets it), then here:
#   scaleout bench-report --out benchmarks/reports/cpu --gpu-results benchmarks/results/gpu/<device>.json
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/scann-site \
    .wheels/scann-*.whl
export PYTHONPATH=/tmp/scann-site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv || true
name=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())" 2>/dev/null || echo gpu)
timeout "${GPU_HALF_TIMEOUT:-470}" python3 benchmarks/gpu_bruteforce.py --out "benchmarks/results/gpu/$name.json" \
    --budget "${GPU_HALF_BUDGET:-240}" "$@"
