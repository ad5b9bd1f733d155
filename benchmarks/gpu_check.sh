#!/bin/bash
# The GPU checks, as one script for a lent machine (device tool). Writes logs and the benchmark
# section under $OUT; afterwards `python benchmarks/bench_features.py --publish FILE` records it.
# It needs about 6 minutes: run it with timeout_s=420, as the only call of a fresh machine, so that
# a session's 15 minutes of device time leave room for one rerun on a fresh machine.
#
# The machine has torch, timm, h5py and scikit-image but cannot reach PyPI, so our other
# dependencies travel as Python 3.12 wheels in .whl/ (ignored by git). Prepare them once with:
#   echo /.whl/ >> .git/info/exclude; for w in WHEELS; do python3 -m pip download --no-deps \
#     --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
#     --platform manylinux_2_24_x86_64 -d .whl $w; done
# WHEELS (the versions the tests ran with): albucore==0.0.24 albumentations==2.0.8 annotated-
# types==0.7.0 donfig==0.8.1.post1 google-crc32c==1.9.0 imagecodecs==2026.3.6
# monai==1.6.1 numcodecs==0.16.6 openslide-bin==4.0.1.2 openslide-python==1.4.7 pydantic==2.13.4 pydantic-
# core==2.46.4 shapely==2.2.0 simsimd==6.5.16 stringzilla==5.3.2 tifffile==2026.3.3 tiffslide==3.0.1
# torchstain==1.4.1 typing-inspection==0.4.2 zarr==3.1.6
# (The image has numba, llvmlite, OpenCV and timm: carrying them would pass the 64 MiB limit.)
# Real data travels as carry paths through a link: ln -s ../shared shared (and ignore it), then
# carry ".whl", "shared/data/wsi" and "shared/data/he_liver" (59 MiB with the tree).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
[ -e ../shared ] || ln -s "$PWD/shared" ../shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
lscpu | grep -E "^(Model name|CPU\(s\))"
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/features/test_features.py tests/features/test_tile_feed.py tests/training/test_training.py tests/stain/test_stain_torch.py -k "cuda or gpu or feed" \
  2>&1 | tee "$OUT/pytest_cuda.log" | tail -8
# rows in order of importance (ResNet-34, LiverNet, loader and decoder ceilings, feed alone), so a
# run cut short by its timeout still leaves the ones that matter most
timeout 320 python3 benchmarks/bench_features.py --device cuda --copies 64 --synthetic-px 16384 --repeats 3 \
  --profile "$OUT/profile.txt" --save-section "$OUT/gpu_features.json" 2>&1 | tee "$OUT/bench_features_gpu.log"
