#!/usr/bin/env bash
# The training recipe on a lent GPU (16 cores render the data in memory, then a 5-minute stage 1
# at batch 64 and the study head); the checkpoint lands under $OUT within 8 minutes. Run it
# through the device tool from the repository root:
#   bash scripts/train_gpu.sh            (timeout_s 560; carry .whl when pydicom is missing)
# The device image has torch, numpy, scipy, tqdm and pillow; pydicom travels as a wheel:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl pydicom==3.0.2
# Then select on the CPU: scripts/select_model.sh $OUT/bloodnet-gpu.pt models/bloodnet.pt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bloodnet-gpu-out}
mkdir -p "$OUT"
PY=${PY:-python3}
if ! "$PY" -c "import pydicom" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 470 "$PY" -m bloodnet_ops.model.gpu_recipe --out "$OUT/bloodnet-gpu.pt" \
  --workers "$(nproc)" --budget-s "${BUDGET_S:-300}" --init models/bloodnet.pt \
  ${STUDIES:+--studies "$STUDIES"} 2>&1 | tee "$OUT/train_gpu.log"
ls -l "$OUT"
