#!/usr/bin/env bash
# Issue 7's GPU checks in one call of the device tool (about 5 minutes on an H100; nothing is downloaded):
#   1. the CUDA tests (tests/test_cuda.py: GPU == CPU, a bf16 step follows the float32 one, train + checkpoint);
#   2. pairs/s of the tiny and small presets and the ViT-B/32 shapes, training in bf16 autocast as train() does
#      (add --compare-openai when clip-anytorch is installed there: its wheel is pure Python and can be carried);
#   3. the main job on the GPU (the Makefile's MAIN_JOB, what `make train` runs) end to end, with its held-out report.
# Run from the repository root: `bash benchmarks/gpu_check.sh`; results go to $OUT (or /tmp/gpu_check).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())" | tee "$OUT/device.txt"
"$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py 2>&1 | tee "$OUT/tests.txt"
"$PY" benchmarks/bench.py --device cuda --preset tiny small ViT-B/32 --steps 20 --warmup 5 "$@" 2>&1 | tee "$OUT/bench.txt"
MAIN_JOB=$(sed -n '/^MAIN_JOB ?=/,/[^\\]$/p' Makefile | sed 's/^MAIN_JOB ?=//; s/\\$//' | tr '\n' ' ')
( time "$PY" -m minclip train $MAIN_JOB --out /tmp/gpu_main --quiet ) 2>&1 | tee "$OUT/train.txt"
