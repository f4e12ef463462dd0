#!/usr/bin/env bash
# The BloodNet training recipe on 2 CPU cores, in about 75 minutes (under 2 hours with the data):
# domain-randomised synthetic heads from `bloodnet synth`, study-balanced batches with hard-
# negative mining and soft edge labels, fine-tuned from the previous release at 192².
# Selection (calibration and threshold) is a separate step on an outside generator:
# scripts/select_model.sh. Nothing here reads the selection or report sets.
#
#   scripts/train_cpu.sh [WORK_DIR] [OUT_CHECKPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/bloodnet-train}
OUT=${2:-models/candidates/bloodnet-cpu.pt}
BN=${BLOODNET:-.venv/bin/bloodnet}
INIT=${INIT:-models/bloodnet.pt}
STEPS=${STEPS:-300}
EPOCHS=${EPOCHS:-12}
export BLOODNET_CACHE=${BLOODNET_CACHE:-$WORK/cache}
mkdir -p "$WORK" "$(dirname "$OUT")"

synth() {  # folder studies sites seed matrix
  [ -f "$WORK/$1/labels.csv" ] || "$BN" synth --out "$WORK/$1" --studies "$2" --sites "$3" \
      --seed "$4" --matrix "$5" --positive-rate 0.45 --workers "${WORKERS:-2}"
}
synth A 960 16 41 256   # slice model: 256² studies
synth B 200 8 43 512    # slice model: 512² studies (finer partial volume, other noise grain)
synth S 240 8 45 256    # study head only: studies the slice model never saw

"$BN" train --data "$WORK/A" --extra-data "$WORK/B" --stack-data "$WORK/S" --out "$OUT" \
  --init "$INIT" --size 192 --epochs "$EPOCHS" --steps "$STEPS" --batch 16 --lr 1e-3 \
  --pos-frac 0.4 --hard-frac 0.5 --mine-every 300 --val-frac 0.1 --study-epochs 15 \
  --threads "${THREADS:-2}" ${DEVICE:+--device "$DEVICE"}
echo "candidate written to $OUT; next: scripts/select_model.sh $OUT" >&2
