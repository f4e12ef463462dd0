#!/usr/bin/env bash
# BloodNet inference on a CUDA GPU: the CPU benchmark's measurements plus a batch-size sweep and
# the peers of bf16 autocast and channels-last, all in one run. Pinned host buffers and the
# background loading thread are on in every Predictor run.
#
# Needs a CUDA build of torch in $PY's environment, e.g.
#   make install EXTRAS=test,gpu TORCH_INDEX=https://download.pytorch.org/whl/cu128
# Usage: bench/gpu.sh [studies=16] [matrix=512]      (results under bench/out/)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STUDIES=${1:-16}
MATRIX=${2:-512}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"

"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: torch reports no CUDA device (install a CUDA build of torch)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}",
      file=sys.stderr)
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

common=(--device cuda --studies "$STUDIES" --matrix "$MATRIX" --repeats 3)
echo "== bf16 + channels-last (product path), batch sweep"
"$PY" bench/bench_inference.py "${common[@]}" --batch-sweep 64,128,256,512,1024 \
  --json "$OUT/inference_gpu.json"
echo "== peer: fp32 (no autocast)"
"$PY" bench/bench_inference.py "${common[@]}" --no-amp --json "$OUT/inference_gpu_fp32.json"
echo "== peer: contiguous NCHW (no channels-last)"
"$PY" bench/bench_inference.py "${common[@]}" --no-channels-last \
  --json "$OUT/inference_gpu_nchw.json"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
best = json.loads((out / "inference_gpu.json").read_text())
fp32 = json.loads((out / "inference_gpu_fp32.json").read_text())
nchw = json.loads((out / "inference_gpu_nchw.json").read_text())
c = lambda r: r["slices_per_s"]["compute"]
print(f"compute slices/s: bf16+CL {c(best):.0f}, fp32 {c(fp32):.0f} (x{c(best)/c(fp32):.2f}), "
      f"NCHW {c(nchw):.0f} (x{c(best)/c(nchw):.2f}); overlapped {best['slices_per_s']['overlapped']:.0f}"
      f" slices/s = {best['studies_per_s']['overlapped']:.1f} studies/s")
EOF
