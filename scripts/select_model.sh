#!/usr/bin/env bash
# Selection and report of a trained candidate, with a set for each role (the model card quotes
# these roles):
#   training   bloodnet synth                  (scripts/train_cpu.sh)
#   selection  bench/holdout_phantom.py        calibration map + stored threshold (sens >= 0.95)
#   report     bench/radiology_phantom.py      figures only; nothing is chosen on it
# plus the own generator's test split (optimistic: same generator as training).
#
#   [COMPARE=previous.pt] scripts/select_model.sh CANDIDATE.pt OUT.pt [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CAND=$1
OUT=$2
WORK=${3:-/tmp/bloodnet-select}
PY=${PY:-.venv/bin/python}
BN=${BLOODNET:-.venv/bin/bloodnet}
W=${WORKERS:-2}
export BLOODNET_CACHE=${BLOODNET_CACHE:-$WORK/cache}
mkdir -p "$WORK" reports/model

gen() {  # generator folder studies seed matrix sites
  [ -f "$WORK/$2/labels.csv" ] || "$PY" "bench/$1.py" --out "$WORK/$2" --studies "$3" \
      --seed "$4" --matrix "$5" --sites "$6" --positive-rate 0.4 --workers "$W"
}
gen holdout_phantom sel-256 160 11 256 4
gen holdout_phantom sel-512 80 12 512 4
"$BN" calibrate --model "$CAND" --out "$OUT" --data "$WORK/sel-256" --data "$WORK/sel-512" \
  --method platt --target-sensitivity 0.95 --name holdout_phantom --json \
  > reports/model/selection.json

gen radiology_phantom rep-256 160 21 256 5
gen radiology_phantom rep-512 120 22 512 4
[ -f "$WORK/own-test/labels.csv" ] || "$BN" synth --out "$WORK/own-test" --studies 160 \
  --sites 6 --seed 97 --workers "$W"
for set in rep-256 rep-512 sel-256 sel-512 own-test; do
  "$PY" bench/bench_generalisation.py --data "$WORK/$set" --model "$OUT" \
    --out "reports/model/$set.json" --workers "$W"
done
if [ -n "${COMPARE:-}" ]; then  # the previous weights on the same report studies
  for set in rep-256 rep-512; do
    "$PY" bench/bench_generalisation.py --data "$WORK/$set" --model "$COMPARE" \
      --out "reports/model/$set-previous.json" --workers "$W"
  done
fi
"$BN" eval --data "$WORK/rep-256" --model "$OUT" --json --reliability \
  reports/model/reliability-rep-256.png --target-sensitivity 0.95 > reports/model/eval-rep-256.json
"$BN" eval --data "$WORK/sel-256" --model "$OUT" --json --reliability \
  reports/model/reliability-sel-256.png > reports/model/eval-sel-256.json
"$PY" bench/model_card_table.py reports/model
