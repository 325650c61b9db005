#!/usr/bin/env bash
# One time-boxed training round on a lent GPU machine (no network; only the working tree travels).
#
#   bash training/scripts/gpu_round.sh STAGE CONFIG DATA.zip MINUTES [SNAPSHOT_PART] [extra gramcast-train args]
#
# Installs gramcast from the working tree without dependencies (the machine's image has torch, numpy,
# safetensors, opencv, tqdm, tensorboard), trains STAGE for at most MINUTES (warm-starting from
# SNAPSHOT_PART, a part written by `gramcast-train snapshot`, when given), then writes the networks
# as <= 15 MiB parts into $OUT (what comes back from the machine) with the run's logs.
# The same script runs on a CPU for a smoke test: PYTHON=.venv/bin/python OUT=/tmp/out bash ... tiny ...
set -euo pipefail
stage=$1 config=$2 data=$3 minutes=$4 init=${5:-}
shift $(( $# < 5 ? $# : 5 ))
PYTHON=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder that comes back}
RUN=${RUN:-runs/round-$stage-$config}
if ! "$PYTHON" -c "import gramcast.training" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
args=("$stage" --config "$config" --data "$data" --out "$RUN" --max-minutes "$minutes" --no-progress --resume)
[ -n "$init" ] && args+=(--init-from "$init")
set +e
"$PYTHON" -m gramcast.training.cli "${args[@]}" "$@" 2>&1 | tail -n 40
code=${PIPESTATUS[0]}
set -e
mkdir -p "$OUT"
"$PYTHON" -m gramcast.training.cli snapshot "$RUN" "$OUT/$stage-$config"
cp "$RUN/scalars.jsonl" "$RUN/config.json" "$OUT/" 2>/dev/null || true
exit "$code"
