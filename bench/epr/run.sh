#!/bin/bash
# EPR evaluation and training throughput of the real stages against the PyTorch anchor, in one
# invocation (issue #4, performance).
#
#   epr    the `epr` stage of sgm_hpc with score = "model" (the local transformer of model.h5):
#          windows, s_g and the exact divergence d s_g/d g (forward + 2 JVPs) of every particle,
#          EPR quantities; rate = N x frames / (time of the SgmEpr log event, the slowest rank).
#          PyTorch: bench/nn/torch_worker.py --only div (forward + 2 backward per chunk), the same
#          model, centres in chunks of the same size as [model] max_batch.
#   train  the `train` stage: denoising loss (noise on x and g, no antithetic pairs, as the
#          anchor's dsm_loss), Adam, global batch B centres per step; rate = the stage's
#          particles/s (metrics.json), with the SgmTrainLoss/Allreduce/Optim event times of
#          -log_view and the allreduce alone (allreduce_probe: MPI_Allreduce of the model's
#          parameter count after a barrier, i.e. without the wait for the slower rank).
#          PyTorch: torch_worker.py --only train (zero_grad, DSM, forward, backward, Adam), same B.
# C runs on 1 and 2 MPI ranks (1 BLAS thread each), torch on 1 and 2 threads (OMP_WAIT_POLICY=
# PASSIVE for 2, see the anchor's results.md). The host drifts, so everything is interleaved:
# R rounds, in each the C and torch runs of every model alternate (the order flips per round);
# summary.py pools the rounds and prints medians, bests and C/torch ratios (> 1: C faster).
#
# Models (the anchor's model.py sizes, built as [model] tables):
#   small  d_e 64, 2 layers, 2 heads, K 16, all hidden widths 64, 2-hidden-layer embeddings/decoder
#   mips   the model of input/mips_small_epr.toml and the quickstart (as small, but mlp_hidden 128,
#          1 hidden layer in the embeddings and decoder)
#   big    the paper size = the [model] defaults: d_e 256, 4 layers, 4 heads, K 64, widths 256
# Inputs are generated (not timed): MIPS trajectories (phi = 0.5, random start, 200 relaxation +
# 400 steps, 3 frames) at N (EPR; 32768) and N_train (training; 4096), and an untrained model.h5
# per model (train stage with steps = 0; the throughput does not depend on the weights).
#
# usage: bench/epr/run.sh [--models small,mips,big] [--parts epr,train] [--rounds R] [--n N]
#                         [--n-big N] [--n-train N] [--batch B] [--build DIR] [--work DIR]
#                         [--frames F] [--quick]
#   defaults: all three models, both parts, 2 rounds, N = 32768 (small, mips), N = 1024 for the
#   big model's EPR (~15-60 particles/s: N = 32768 would take 10+ min per frame on this host),
#   N_train = 4096, B = 1024; ~15 min on the 2-vCPU host when it is quiet, ~35 min at load 8-13.
#   --frames F: EPR on frames 1..F of the 3-frame trajectory (default 2; 1 for the big model
#   at N = 32768: ~10 min per C run here).
#   --quick: small only, N = 4096, 1 round, few steps: a smoke test, not a measurement.
# Needs: sgm_hpc in BUILD, mpicc/mpiexec, Debian's /usr/bin/python3 with python3-torch, the
# anchor at ../shared/anchors/torch (SGM_TORCH_ANCHOR).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELS=small,mips,big
PARTS=epr,train
ROUNDS=2
N=32768
NBIG=1024
NTRAIN=4096
BATCH=1024
BUILD=$ROOT/build
WORK=
QUICK=0
FRAMES=2
usage="usage: $0 [--models small,mips,big] [--parts epr,train] [--rounds R] [--n N] [--n-big N] [--n-train N] [--batch B] [--build DIR] [--work DIR] [--frames F] [--quick]"
while [ $# -gt 0 ]; do
  case $1 in
    --models) MODELS=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --n-big) NBIG=$2; shift 2 ;;
    --n-train) NTRAIN=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --frames) FRAMES=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then MODELS=small; N=4096; NTRAIN=4096; ROUNDS=1; BATCH=256; fi
BUILD=$(cd "$BUILD" 2>/dev/null && pwd || echo "$BUILD")
BIN=$BUILD/sgm_hpc
[ -x "$BIN" ] || { echo "no $BIN: cmake --build $BUILD --target sgm_hpc" >&2; exit 2; }
export SGM_TORCH_ANCHOR=${SGM_TORCH_ANCHOR:-$ROOT/../shared/anchors/torch}
[ -f "$SGM_TORCH_ANCHOR/model.py" ] || { echo "no PyTorch anchor at $SGM_TORCH_ANCHOR" >&2; exit 2; }
for m in ${MODELS//,/ }; do
  case $m in small|mips|big) ;; *) echo "unknown model $m (small, mips, big)" >&2; exit 2 ;; esac
done
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIEXEC=(mpiexec --oversubscribe --bind-to none)
[ -n "$WORK" ] || WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench_epr.XXXXXX")
mkdir -p "$WORK/logs"
LOG=$WORK/logs
cd "$WORK"
echo "bench/epr/run.sh: models $MODELS, parts $PARTS, $ROUNDS rounds, N = $N (big: $NBIG), N_train = $NTRAIN, B = $BATCH; work dir $WORK"
echo "host: $(date -u '+%F %T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)

# ---- inputs (not timed)
model_toml() { # model max_batch
  case $1 in
    small) printf 'd_e = 64\nlayers = 2\nheads = 2\nK = 16\nmlp_hidden = 64\nembed_hidden = 64\nembed_depth = 2\ndec_hidden = 64\ndec_depth = 2\n' ;;
    mips) printf 'd_e = 64\nlayers = 2\nheads = 2\nK = 16\nmlp_hidden = 128\nembed_hidden = 64\nembed_depth = 1\ndec_hidden = 64\ndec_depth = 1\n' ;;
    big) printf 'd_e = 256\nlayers = 4\nheads = 4\nK = 64\nmlp_hidden = 256\nembed_hidden = 256\nembed_depth = 2\ndec_hidden = 256\ndec_depth = 2\n' ;;
  esac
  printf 'kind = "local_transformer"\nactivation = "gelu"\nlearn = "g"\nmax_batch = %s\n' "$2"
}
torch_args() { # model -> torch_worker.py options for the same network
  case $1 in
    small) echo "--config small" ;;
    mips) echo "--config small --cfg-ff_hidden 128 --embed-depth 1 --dec-depth 1" ;;
    big) echo "--config big" ;;
  esac
}
chunk_of() { [ "$1" = big ] && echo 128 || echo 256; } # [model] max_batch = torch's chunk (EPR)
mbatch_of() { [ "$1" = big ] && echo 128 || echo 1024; } # [model] max_batch in training
system_toml() { # name output n stages
  cat <<EOF
[run]
name = "$1"
output = "$2"
seed = $3
stages = $4
overwrite = true

[system]
kind = "aoup"
dim = 2
n = $3
phi = 0.5
mu = 1.0
v0 = 0.025
gamma = 1e-4
eps = 0.0
a = 1.0
k = 1.0
potential = "harmonic"
boundary = "periodic"

[simulate]
dt = 0.1
n_equil = 0
n_steps = 400
frame_every = 200
init = "random"
relax_steps = 200

EOF
}
make_traj() { # n
  [ -f "traj$1/trajectory.h5" ] && return 0
  system_toml "traj$1" "traj$1" "$1" '["simulate"]' > "traj$1.toml"
  nice "$BIN" "traj$1.toml" > "traj$1.log" 2>&1 || { cat "traj$1.log"; exit 1; }
}
nepr_of() { [ "$1" = big ] && echo "$NBIG" || echo "$N"; }
for m in ${MODELS//,/ }; do
  [[ $PARTS == *epr* ]] && make_traj "$(nepr_of "$m")"
done
[[ $PARTS == *train* ]] && make_traj "$NTRAIN"
for m in ${MODELS//,/ }; do # untrained model.h5 (train with 0 steps)
  n0=$NTRAIN
  [[ $PARTS == *train* ]] || n0=$(nepr_of "$m")
  { system_toml "model_$m" "model_$m" "$n0" '["train"]'
    printf '[model]\n'; model_toml "$m" "$(chunk_of "$m")"
    printf '\n[train]\ntrajectory = "traj%s/trajectory.h5"\nsteps = 0\nbatch = 16\n' "$n0"; } > "model_$m.toml"
  nice "$BIN" "model_$m.toml" > "model_$m.log" 2>&1 || { cat "model_$m.log"; exit 1; }
done
STEPS_SMALL=20
STEPS_BIG=3
[ "$QUICK" = 1 ] && STEPS_SMALL=3
for m in ${MODELS//,/ }; do
  ne=$(nepr_of "$m")
  { system_toml "epr_$m" "epr_$m" "$ne" '["epr"]'
    printf '[model]\n'; model_toml "$m" "$(chunk_of "$m")"
    cat <<EOF

[epr]
score = "model"
model = "model_$m/model.h5"
trajectory = "traj$ne/trajectory.h5"
first = 1
last = $FRAMES
batches = 2
write_particles = false
write_fields = false
classify = false
EOF
  } > "epr_$m.toml"
  steps=$STEPS_SMALL
  [ "$m" = big ] && steps=$STEPS_BIG
  { system_toml "train_$m" "train_$m" "$NTRAIN" '["train"]'
    printf '[model]\n'; model_toml "$m" "$(mbatch_of "$m")"
    cat <<EOF

[train]
trajectory = "traj$NTRAIN/trajectory.h5"
loss = "denoise"
noise_x = true
antithetic = false
steps = $steps
batch = $BATCH
optimizer = "adam"
lr = 1e-4
schedule = "constant"
log_every = 1000
EOF
  } > "train_$m.toml"
done
if [[ $PARTS == *train* ]]; then
  mpicc -O2 -o allreduce_probe "$ROOT/bench/epr/allreduce_probe.c"
fi
echo "inputs ready after $(( $(date +%s) - start )) s"

# ---- timed runs
run_c() { # part model np round
  local f=$LOG/r$4_$1_$2_c$3.log
  echo "== round $4: C $1 $2, $3 rank(s)"
  if [ "$3" = 1 ]; then "$BIN" "$1_$2.toml" -log_view > "$f" 2>&1
  else "${MPIEXEC[@]}" -n "$3" "$BIN" "$1_$2.toml" -log_view > "$f" 2>&1; fi || { tail -20 "$f"; exit 1; }
  cp "$1_$2/metrics.json" "$LOG/r$4_$1_$2_c$3.json"
  grep -E "particle-frames/s|particles/s, allreduce" "$f" | cut -c1-150 || true
}
run_t() { # part model threads round
  local f=$LOG/r$4_$1_$2_t$3.log what reps warm=1 extra bt
  if [ "$1" = epr ]; then
    what=div; extra="--chunk $(chunk_of "$2")"
    if [ "$2" = big ]; then bt=256; reps=2; else bt=2048; reps=3; fi
  else
    what=train; extra=; bt=$BATCH
    if [ "$2" = big ]; then reps=2; else reps=5; fi
  fi
  [ "$QUICK" = 1 ] && reps=1 && bt=$(( bt < 512 ? bt : 512 ))
  echo "== round $4: torch $1 ($what) $2, $3 thread(s), B = $bt"
  local envs=()
  [ "$3" -gt 1 ] && envs=(OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS="$3")
  # shellcheck disable=SC2046,SC2086
  env "${envs[@]}" "$PY" "$ROOT/bench/nn/torch_worker.py" $(torch_args "$2") \
    --batch "$bt" --reps "$reps" --warmup "$warm" --threads "$3" --only "$what" $extra > "$f" 2>&1 \
    || { tail -20 "$f"; exit 1; }
  cut -c1-150 "$f"
}
KBIN=$BUILD/tests/bench_nn
run_k() { # model round: the network alone (bench_nn div, 1 thread), same chunk and B as torch
  [ -x "$KBIN" ] && [ "$1" != mips ] || return 0
  local f=$LOG/r$2_epr_$1_k1.log bt=2048 reps=3
  [ "$1" = big ] && bt=256 && reps=2
  [ "$QUICK" = 1 ] && bt=512 && reps=1
  echo "== round $2: C kernel (bench_nn div) $1, 1 thread, B = $bt"
  BENCH_NN_PARTS=div "$KBIN" --config "$1" --batch "$bt" --reps "$reps" --chunk "$(chunk_of "$1")" \
    --only model > "$f" 2>&1 || { tail -20 "$f"; exit 1; }
  grep "RESULT div_model" "$f" | cut -c1-150
}
for r in $(seq 1 "$ROUNDS"); do
  for part in ${PARTS//,/ }; do
    for m in ${MODELS//,/ }; do
      if [ $((r % 2)) = 1 ]; then
        run_c "$part" "$m" 1 "$r"; run_t "$part" "$m" 1 "$r"; run_c "$part" "$m" 2 "$r"; run_t "$part" "$m" 2 "$r"
        [ "$part" = epr ] && run_k "$m" "$r"
      else
        [ "$part" = epr ] && run_k "$m" "$r"
        run_t "$part" "$m" 2 "$r"; run_c "$part" "$m" 2 "$r"; run_t "$part" "$m" 1 "$r"; run_c "$part" "$m" 1 "$r"
      fi
    done
  done
  if [[ $PARTS == *train* ]]; then
    for m in ${MODELS//,/ }; do
      np=$(grep -o 'nparams=[0-9]*' "$LOG/r${r}_train_${m}_t1.log" | head -1 | cut -d= -f2)
      "${MPIEXEC[@]}" -n 2 ./allreduce_probe "$np" 20 > "$LOG/r${r}_probe_$m.log" 2>&1 || true
    done
  fi
done
echo "host after: $(date -u '+%F %T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$ROOT/bench/epr/summary.py" "$LOG" "$ROUNDS" "$MODELS" "$PARTS" "$N" "$NBIG" "$BATCH"
echo "total wall $(( $(date +%s) - start )) s"
