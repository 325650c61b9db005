#!/usr/bin/env bash
# One GRAMInverter round on a lent GPU machine: the w+ encoder, then the detail reconstructor, against a
# frozen prior (default bundled:tiny, the one that ships), with the real LPIPS and ArcFace losses; then
# the inverter bundle they make.
#
#   OUT=$OUT bash training/scripts/gpu_inversion_round.sh ENC_MINUTES DETAIL_MINUTES [DATA] [GENERATOR]
#
# Nothing can be fetched there and 64 MiB travel in all, so carry the weights as
#   python -m gramcast.training.pretrained.fetch pack carry/pretrained      # LPIPS fp16 28 + ArcFace 13 MiB
# writes them, and a 64² set (15 MiB):
#   gramcast-train pack-dataset data/lfw128 data/lfw64_q60.zip --size 64 --quality 60 \
#     --exclude-people training/splits/lfw_validation_people.txt
# i.e. run(carry=["carry/pretrained", "data/lfw64_q60.zip"], timeout_s=590) with ENC + DETAIL <= 8 minutes.
# An earlier round's parts in carry/inversion/ (encoder-tiny-00001-of-*.safetensors, detail-tiny-...)
# warm-start this one (carry that folder too). What comes back in $OUT (at most 8 files): the two runs'
# snapshot parts, graminverter_tiny.safetensors (for `gramcast evaluate --weights`, run back here:
# the machine has no mediapipe) and logs.tar.gz.
# Smoke test on a CPU: PYTHON=.venv/bin/python OUT=/tmp/inv XDG_CACHE_HOME=carry/pretrained \
#   bash training/scripts/gpu_inversion_round.sh 0.5 0.5
set -uo pipefail
enc_min=${1:?encoder minutes} det_min=${2:?detail minutes}
data=${3:-data/lfw64_q60.zip} gen=${4:-bundled:tiny}
OUT=${OUT:?set OUT to the folder that comes back}
PYTHON=${PYTHON:-python3}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$PWD/carry/pretrained}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
mkdir -p "$OUT" "$work/logs"
if ! "$PYTHON" -c "import gramcast.training" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
"$PYTHON" -m gramcast.training.pretrained.fetch status 2>&1 | tee "$work/logs/weights.txt"
first() { ls "$@" 2>/dev/null | head -n 1; }

RUN=runs/round-encoder-tiny OUT="$work/enc" PYTHON="$PYTHON" bash "$here/gpu_round.sh" encoder tiny "$data" "$enc_min" \
  "$(first carry/inversion/encoder-tiny-00001-of-*.safetensors)" --generator "$gen" > "$work/logs/encoder.log" 2>&1
echo "encoder exit $?"; tail -n 4 "$work/logs/encoder.log"
RUN=runs/round-detail-tiny OUT="$work/det" PYTHON="$PYTHON" bash "$here/gpu_round.sh" detail tiny "$data" "$det_min" \
  "$(first carry/inversion/detail-tiny-00001-of-*.safetensors)" --generator "$gen" \
  --encoder runs/round-encoder-tiny/encoder.safetensors > "$work/logs/detail.log" 2>&1
echo "detail exit $?"; tail -n 4 "$work/logs/detail.log"
"$PYTHON" -m gramcast.training.cli export-inverter --generator "$gen" --encoder runs/round-encoder-tiny/encoder.safetensors \
  --detail runs/round-detail-tiny/detail.safetensors -o "$OUT/graminverter_tiny.safetensors" 2>&1 | tail -n 2
mv "$work"/enc/encoder-tiny-* "$work"/det/detail-tiny-* "$OUT"/ 2>/dev/null
for s in enc det; do for f in scalars.jsonl config.json; do
  [ -f "$work/$s/$f" ] && mv "$work/$s/$f" "$work/logs/$s-$f"; done; done
tar czf "$OUT/logs.tar.gz" -C "$work" logs
rm -rf "$work"
ls -la "$OUT"
