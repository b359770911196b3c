#!/bin/bash
# C network kernels against the PyTorch anchor, like for like, in one invocation.
#
# Both sides run the same model (the anchor's model.py sizes), the same batch B of centre
# windows, 1 thread (OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1; bench_nn calls
# openblas_set_num_threads(1), torch_worker.py sets torch's and OpenBLAS's counts), and the same
# measurements:
#   fwd   forward pass (C: centre-only last block, and the full last block = torch's work)
#   train DSM training step: noise, forward, loss, backward, Adam
#   div   score + exact divergence d s/d g_centre (C: forward + 2 JVPs; torch: forward + 2
#         backward, the anchor's fastest route)
#   adam  the Adam step alone
# The host's speed drifts (other jobs, the VM), so the two sides are INTERLEAVED: R rounds, each
# one bench_nn process and one torch_worker.py process (alternating which goes first), each
# timing W warm-up + r repetitions of everything. Every repetition's time is pooled over the
# rounds; the summary prints per side the median, best and [min-max] spread, and the ratios
# C/torch of the medians, of the bests, and the range of the per-round median ratios.
#
# usage: bench/nn/run.sh [--config big|small] [--batch B] [--rounds R] [--reps r] [--build DIR]
#                        [--quick]
#   defaults: small: B=1024, 4 rounds x 5 reps (~1.5 min); big: B=1024, 2 rounds x 2 reps (~8 min)
#   --quick: B=64, 2 rounds x 1 rep: a smoke test, not a measurement
# Needs: a build with bench_nn (cmake --build BUILD --target bench_nn), Debian's /usr/bin/python3
# with python3-torch and python3-scipy, the anchor at ../shared/anchors/torch (SGM_TORCH_ANCHOR).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONFIG=small
BATCH=1024
ROUNDS=
REPS=
QUICK=0
BUILD=$ROOT/build
while [ $# -gt 0 ]; do
  case $1 in
    --config) CONFIG=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --build) BUILD=$2; shift 2 ;;
    *) echo "usage: $0 [--config big|small] [--batch B] [--rounds R] [--reps r] [--build DIR] [--quick]" >&2; exit 2 ;;
  esac
done
case $CONFIG in big|small) ;; *) echo "--config must be big or small" >&2; exit 2 ;; esac
if [ "$CONFIG" = big ]; then : "${ROUNDS:=2}" "${REPS:=2}"; else : "${ROUNDS:=4}" "${REPS:=5}"; fi
WARMUP=1
[ "$CONFIG" = small ] && WARMUP=2
if [ "$QUICK" = 1 ]; then BATCH=64; ROUNDS=2; REPS=1; fi
BIN=$BUILD/tests/bench_nn
[ -x "$BIN" ] || { echo "no $BIN: cmake --build $BUILD --target bench_nn" >&2; exit 2; }
export SGM_TORCH_ANCHOR=${SGM_TORCH_ANCHOR:-$ROOT/../shared/anchors/torch}
[ -f "$SGM_TORCH_ANCHOR/model.py" ] || { echo "no PyTorch anchor at $SGM_TORCH_ANCHOR (set SGM_TORCH_ANCHOR)" >&2; exit 2; }
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
LOG=$(mktemp -d "${TMPDIR:-/tmp}/bench_nn.XXXXXX")
echo "bench/nn/run.sh: config $CONFIG, B=$BATCH, $ROUNDS rounds x $REPS reps (+$WARMUP warm-up), 1 thread, logs in $LOG"
echo "host: $(date -u '+%F %T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
run_c() {
  echo "== round $1: C (bench_nn)"
  "$BIN" --config "$CONFIG" --batch "$BATCH" --reps "$REPS" --only sgemm,model,optim | tee "$LOG/c$1.log" | grep -v "^RESULT sgemm_" | cut -c1-150
}
run_t() {
  echo "== round $1: PyTorch (torch_worker.py)"
  "$PY" "$ROOT/bench/nn/torch_worker.py" --config "$CONFIG" --batch "$BATCH" --reps "$REPS" \
    --warmup "$WARMUP" --threads 1 | tee "$LOG/t$1.log" | cut -c1-150
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_c "$r"; run_t "$r"; else run_t "$r"; run_c "$r"; fi
done
echo "host after: $(date -u '+%F %T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$ROOT/bench/nn/summary.py" "$LOG" "$CONFIG" "$BATCH" "$ROUNDS"
echo "total wall $(( $(date +%s) - start )) s"
