#!/usr/bin/env bash
# The device figures of docs/gpu.md in one run of under 8 minutes on one H200 (see benchmarks/RESULTS.md).
#
#   benchmarks/device_check.sh --fetch-wheels   on a machine that reaches the package registry: the wheels the
#                                               device image lacks, into .device-wheels/ (git-ignored)
#   benchmarks/device_check.sh [OUT]            on the device, with .device-wheels carried: installs them offline,
#                                               then runs embed_bench; its log goes to OUT (default: $OUT or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.device-wheels
# The device image has torch, torchvision, transformers, pyarrow and Pillow; embed needs no faiss, and the corpus
# is cut from the demo's photos where scikit-image is missing: what is left fits the 64 MiB that a run carries.
MISSING=(apache-beam webdataset simplejpeg soundfile)
if [ "${1:-}" = "--fetch-wheels" ]; then
    python3 -m pip download -q -d "$WHEELS" --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        "apache-beam>=2.60,<3" "webdataset>=0.2.86" "simplejpeg>=1.9" "soundfile>=0.12"
    # what the device image already has would only weigh down the carry
    rm -f "$WHEELS"/torch-* "$WHEELS"/nvidia_* "$WHEELS"/pyarrow-* "$WHEELS"/numpy-* "$WHEELS"/pillow-*
    du -sh "$WHEELS"
    exit 0
fi
LOG_DIR=${1:-${OUT:-/tmp}}
python3 -m pip install -q --no-index --find-links "$WHEELS" "${MISSING[@]}"
python3 -c "import torchvision.io, simplejpeg, apache_beam, webdataset, soundfile; print('imports fine')"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
export PYTHONUNBUFFERED=1
timeout 450 python3 benchmarks/embed_bench.py --random-clip-vit-b32 --gpus 1 --images 20000 --max-side 1024 \
    --batch-size 256 --decode-workers 8 --decode cpu device --workdir /tmp/embed-bench 2>&1 \
    | grep -v "^\[transformers\]" | tee "$LOG_DIR/device_check.log"
