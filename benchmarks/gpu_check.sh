#!/bin/bash
# The GPU checks, as one script for a lent machine (device tool). Expects the wheels of our
# dependencies in .whl/ (the machine has torch but cannot reach PyPI) and ../shared/data/wsi.
# Writes logs and the benchmark section under $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
[ -e ../shared ] || ln -s "$PWD/shared" ../shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_features.py tests/test_training.py -k "cuda or gpu" \
  2>&1 | tee "$OUT/pytest_cuda.log" | tail -8
timeout 240 python3 benchmarks/bench_features.py --device cuda --copies 16 --repeats 3 \
  --save-section "$OUT/gpu_features.json" 2>&1 | tee "$OUT/bench_features_gpu.log"
