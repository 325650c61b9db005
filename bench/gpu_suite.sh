#!/usr/bin/env bash
# What a lent GPU machine should measure, in one call, with results written into $OUT.
#
#   OUT=$OUT bash bench/gpu_suite.sh [bench|train|all] [TRAIN_MINUTES]
#
# A lease is 15 minutes of device time in all (start-up included) and one call may run 10, so `all`
# keeps itself under BUDGET_S seconds (default 540): call it with the run tool's timeout_s=590.
#   bench  (<= 6 min): cached renderer vs full model on the GPU with large batches (issue: >= 1000 frames/s
#          batched, cached >= 50x faster), the full model's render cost, graminverter enrollment time,
#          a profile of the small GAN's training step (bench/train_step.py), and the GPU-only tests.
#   train  (TRAIN_MINUTES; default: what BUDGET_S leaves after bench, at least 2): one round of the small
#          GAN (training/scripts/gpu_round.sh) from $DATA (default data/lfw128_q75.zip, 34 MiB, carried:
#          data/ is ignored by git), warm-started from carry/gan-small-00001-of-*.safetensors when present
#          (34 MiB: with it and the ~7 MiB working tree, carry a <= 22 MiB set: the 128² q60 set, 28 MiB, no longer fits). Make the set with
#            gramcast-train pack-dataset data/lfw128 data/lfw128_q75.zip --quality 75 \
#              --exclude-people training/splits/lfw_validation_people.txt
#   all    both, bench first.
# PARTS picks bench's parts (default all: "tests render_cache enroll render_model train_step"); e.g.
# PARTS="tests render_cache train_step" skips what an earlier lease measured already.
# What comes back (a lent machine returns at most 8 files): bench.tar.gz (JSON + logs), the snapshot
# parts gan-small-0000i-of-0000n.safetensors (<= 15 MiB each) and train_logs.tar.gz.
# The machine's image has torch, numpy, safetensors, opencv, tqdm, tensorboard but no mediapipe, so
# nothing here needs the face models. Each part has its own time limit; a failing part does not stop
# the others. TRAIN_ARGS adds options to the training command. Runs on a CPU too, for a smoke test (the
# small GAN's batch of 32 needs ~23 GB there):
#   PYTHON=.venv/bin/python OUT=/tmp/gpu SIZES=64 BATCHES=1 PRESETS=tiny BUDGET_S=150 \
#     DATA=data/lfw64_train.zip TRAIN_ARGS="--batch-size 2" bash bench/gpu_suite.sh all
set -uo pipefail
mode=${1:-all} minutes=${2:-}
BUDGET_S=${BUDGET_S:-540}
PYTHON=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder that comes back}
work=$(mktemp -d)
mkdir -p "$OUT" "$work/bench" "$work/train"
if ! "$PYTHON" -c "import gramcast.training" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null || echo "no GPU") \
  | tee "$work/bench/gpu.txt"
if [ "$mode" = bench ] || [ "$mode" = all ]; then
  b="$work/bench"
  parts=" ${PARTS:-tests render_cache enroll render_model train_step} "
  if [[ $parts == *" tests "* ]]; then   # GPU-only tests: CUDA graph replay of the renderer equals eager rendering
    timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py > "$b/gpu_tests.log" 2>&1
    echo "gpu tests exit $?"; tail -n 3 "$b/gpu_tests.log"
  fi
  if [[ $parts == *" render_cache "* ]]; then
    timeout 120 "$PYTHON" bench/render_cache.py --device cuda --no-enrolled --sizes ${SIZES:-256 512} \
      --batches ${BATCHES:-1 8 64} --budget 3 --json "$b/render_cache_gpu.json" > "$b/render_cache_gpu.log" 2>&1
    echo "render_cache exit $?"; tail -n 25 "$b/render_cache_gpu.log"
  fi
  if [[ $parts == *" enroll "* ]]; then
    timeout 60 "$PYTHON" bench/enroll.py --no-face-models --presets ${PRESETS:-tiny,small,paper} --repeats 5 \
      --json "$b/enroll_gpu.json" > "$b/enroll_gpu.log" 2>&1
    echo "enroll exit $?"; tail -n 6 "$b/enroll_gpu.log"
  fi
  if [[ $parts == *" render_model "* ]]; then
    timeout 60 "$PYTHON" bench/render_model.py --preset small --sizes ${SIZES:-128 256} --grad-sizes 128 \
      --json "$b/render_model_gpu.json" > "$b/render_model_gpu.log" 2>&1
    echo "render_model exit $?"
  fi
  if [[ $parts == *" train_step "* ]]; then
    # where a small GAN step's 0.42 s went on the first lent H200 (76 images/s): variants + profile
    timeout 150 "$PYTHON" bench/train_step.py --data "${DATA:-data/lfw128_q75.zip}" --preset small --steps 5 \
      --warmup 2 --variant default --variant r1_every=16 --variant amp=false --variant cudnn_benchmark=false --profile-steps 2 \
      --json "$b/train_step_gpu.json" > "$b/train_step_gpu.log" 2>&1
    echo "train_step exit $?"; grep -v '^{' "$b/train_step_gpu.log" | tail -n 30
  fi
  tar czf "$OUT/bench.tar.gz" -C "$work" bench
fi
if [ "$mode" = train ] || [ "$mode" = all ]; then
  if [ -z "$minutes" ]; then   # what the budget leaves, less ~1 min for loading, the snapshot and packing
    minutes=$(( (BUDGET_S - SECONDS - 60) / 60 ))
    [ "$minutes" -lt 2 ] && minutes=2
  fi
  echo "training for $minutes min ($SECONDS s used of $BUDGET_S)"
  init=$(ls carry/gan-small-00001-of-*.safetensors 2>/dev/null | head -n 1)
  OUT="$work/train" PYTHON="$PYTHON" bash training/scripts/gpu_round.sh gan small "${DATA:-data/lfw128_q75.zip}" "$minutes" \
    "$init" --eval-every 0 --checkpoint-every 500 --image-every 500 ${TRAIN_ARGS:-} > "$work/train/train.log" 2>&1
  echo "train exit $?"
  mv "$work"/train/*.safetensors "$OUT"/ 2>/dev/null
  tail -n 8 "$work/train/train.log"
  tar czf "$OUT/train_logs.tar.gz" -C "$work" train
fi
rm -rf "$work"
ls -la "$OUT"
