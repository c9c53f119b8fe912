#!/usr/bin/env bash
# The docs/RESULTS.md runs on the real spoken digits (fsdd-shd): all five models at 2x128,
# Cuba-LIF and SpikGRU also at 1x128, 3 seeds for the spiking models of interest.
# Two runs at a time, one thread each (faster than two threads on a shared 2-core machine).
# Usage: scripts/fsdd_results.sh [EPOCHS] [OUT_DIR]; rerunning resumes unfinished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-30}
OUT=${2:-runs/fsdd}
DATA=${DATA:-../shared/data/fsdd-shd}
PY=.venv/bin/python
mkdir -p "$OUT"
jobs=()
for spec in "gru 2 1" "spikgru 2 3" "cuba-lif 2 3" "lif 2 1" "rnn 2 1" "spikgru 1 3" "cuba-lif 1 3"; do
  read -r model layers seeds <<<"$spec"
  for ((s = 0; s < seeds; s++)); do
    dir="$OUT/$model-${layers}x128/seed$s"
    if [ -f "$dir/config.json" ]; then
      jobs+=("$PY cli.py train --quiet --resume $dir --epochs $EPOCHS")
    else
      jobs+=("$PY cli.py train --quiet --model $model --layers $layers --hidden 128 --data $DATA --epochs $EPOCHS --seed $s --recipe study --out $dir")
    fi
  done
done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P 2 -I{} bash -c '{} > /dev/null 2>&1 || echo "FAILED: {}"'
$PY cli.py summary "$OUT"
