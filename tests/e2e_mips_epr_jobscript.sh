#!/usr/bin/env bash
# jobscripts/run_chunked.slurm end to end, without SLURM: `srun` is a stand-in that runs the
# program on 2 ranks with mpiexec and `scontrol` one that records the requeue. A tiny MIPS input
# (simulate, train, epr) is run in chunks through the job script: SIGUSR1 to the batch shell
# during simulate, then during train (each chunk must exit 0, leave its checkpoint and requeue),
# then a chunk that finishes train and epr without requeueing, then one that finds the run
# complete and runs nothing. The trajectory, the trained model (every dataset of model.h5) and the
# per-particle EPR must equal an uninterrupted run's bit for bit. Also: the MIPS EPR inputs of
# input/ (mips_epr_*, equilibrium_*) pass `sgm_hpc --check`; the transfer_* inputs and
# input/swimmers64_paper.toml pass it once the files they read exist (a trained model, a held-out
# trajectory), and without them are refused with exit 2 before their output directory is made.
#   e2e_mips_epr_jobscript.sh SGM_HPC SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1; src=$2; shift 2
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
py=$("$src/scripts/find-python.sh") || { echo "FAIL no python3 with h5py"; exit 1; }

for f in "$src"/input/mips_epr_*.toml "$src"/input/equilibrium_*.toml; do
  "$exe" --check "$f" >/dev/null 2>"$tmp/check.err"
  check "--check $(basename "$f")" "[[ $? -eq 0 ]]"
done

mkdir -p "$tmp/bin"
{
  echo '#!/bin/bash'
  echo 'while [[ $1 == --* ]]; do shift; done'
  printf 'exec'; printf ' %q' "${mpi[@]}"; echo ' -n 2 "$@"'
} >"$tmp/bin/srun"
printf '#!/bin/bash\necho "scontrol $*" >> %q/scontrol.log\n' "$tmp" >"$tmp/bin/scontrol"
chmod +x "$tmp/bin/srun" "$tmp/bin/scontrol"

cat >"$tmp/tiny.toml" <<EOF
[run]
name = "tiny_mips_epr"
output = "$tmp/run"
seed = 11
stages = ["simulate", "train", "epr"]
progress_interval = 0.1
[system]
n = 256
phi = 0.5
v0 = 0.025
gamma = 1e-3
eps = 0.0
[simulate]
dt = 0.1
n_equil = 20000
n_steps = 400
frame_every = 100
relax_steps = 50
[model]
d_e = 16
layers = 1
heads = 2
K = 8
mlp_hidden = 16
embed_hidden = 16
embed_depth = 1
dec_hidden = 16
dec_depth = 1
learn = "g"
max_batch = 32
[train]
loss = "denoise"
steps = 3000   # long enough (~1-2 s) that SIGUSR1, sent at the first train progress line, lands
               # inside training (300 steps took 0.15 s once the window search got cheaper)
batch = 32
lr = 1e-3
warmup = 10
log_every = 50
[epr]
score = "model"
batches = 2
classify = true
EOF

# reference: uninterrupted, 2 ranks
"${mpi[@]}" -n 2 "$exe" --set "run.output=\"$tmp/ref\"" "$tmp/tiny.toml" >"$tmp/ref.log" 2>&1
check "reference run exits 0" "[[ $? -eq 0 && -f $tmp/ref/epr.h5 ]]"

chunk() { # log name, pattern of the progress line after which SIGUSR1 is sent ("": none)
  rm -f "$tmp/scontrol.log"
  PATH="$tmp/bin:$PATH" SLURM_JOB_ID=42 SGM_HPC="$exe" \
    bash "$src/jobscripts/run_chunked.slurm" "$tmp/tiny.toml" >"$tmp/$1.log" 2>&1 &
  local pid=$!
  if [[ -n $2 ]]; then
    for _ in $(seq 1 600); do
      grep -q "$2" "$tmp/$1.log" && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.05
    done
    kill -USR1 $pid
  fi
  wait $pid
}
requeued() { [[ -f $tmp/scontrol.log ]] && grep -q "requeue 42" "$tmp/scontrol.log"; }

chunk c1 '^\[simulate\] [0-9]*/'
check "chunk 1 (signal in simulate) exits 0 ($?)" "[[ $? -eq 0 ]]"
check "chunk 1 requeued" "requeued"
check "chunk 1 left checkpoint.h5 and no trajectory.h5" "[[ -f $tmp/run/checkpoint.h5 && ! -f $tmp/run/trajectory.h5 ]]"

chunk c2 '^\[train\] [0-9]*/'
check "chunk 2 (signal in train) exits 0" "[[ $? -eq 0 ]]"
check "chunk 2 continued the simulation" "grep -q 'restarting from' $tmp/c2.log"
check "chunk 2 requeued" "requeued"
check "chunk 2 left train_checkpoint.h5 and no model.h5" "[[ -f $tmp/run/train_checkpoint.h5 && ! -f $tmp/run/model.h5 ]]"

# a restart with another [model] than the network it continues: refused before anything is
# written (exit 2, the difference named, run.toml of the run untouched)
cp "$tmp/run/run.toml" "$tmp/run.toml.c2"
"$exe" --set 'run.stages=["train", "epr"]' --set model.d_e=32 \
  --restart "$tmp/run/train_checkpoint.h5" "$tmp/tiny.toml" >/dev/null 2>"$tmp/rn.err"
rc=$?
check "--restart with [model] d_e = 32: exit 2 (got $rc), naming d_e, run.toml kept" \
  "[[ $rc -eq 2 ]] && grep -q -- \"--restart: .*train_checkpoint.h5: architecture attribute 'd_e' is 16 in the file but 32\" '$tmp/rn.err' && cmp -s '$tmp/run/run.toml' '$tmp/run.toml.c2'"

chunk c3 ''
check "chunk 3 exits 0" "[[ $? -eq 0 ]]"
check "chunk 3 ran train and epr only, from the checkpoint" "grep -q 'train: restarting from' $tmp/c3.log && ! grep -q 'stage simulate' $tmp/c3.log"
check "chunk 3 not requeued" "! requeued"
check "chunk 3 wrote model.h5 and epr.h5" "[[ -f $tmp/run/model.h5 && -f $tmp/run/epr.h5 ]]"

chunk c4 ''
check "chunk 4 exits 0 and runs nothing" "[[ $? -eq 0 ]] && grep -q 'complete' $tmp/c4.log && ! grep -q '== stage' $tmp/c4.log"

"$py" - "$tmp/ref" "$tmp/run" >"$tmp/cmp.log" 2>&1 <<'PY'
import sys, h5py
ref, run = sys.argv[1], sys.argv[2]
ok = True
def same(a, b, name):
    global ok
    x, y = a[name][()], b[name][()]
    eq = x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
    if not eq:
        print("DIFFERENT", name)
    ok &= eq
with h5py.File(f"{ref}/trajectory.h5") as a, h5py.File(f"{run}/trajectory.h5") as b:
    for q in ("position", "orientation"):
        same(a, b, f"particles/all/{q}/value")
with h5py.File(f"{ref}/model.h5") as a, h5py.File(f"{run}/model.h5") as b:
    names = []
    a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    print(len(names), "datasets in model.h5")
    for n in names:
        same(a, b, n)
with h5py.File(f"{ref}/epr.h5") as a, h5py.File(f"{run}/epr.h5") as b:
    for q in ("velocity_g", "epr_total", "phase_class"):
        same(a, b, q)
print("bitwise equal" if ok else "differences")
sys.exit(0 if ok else 1)
PY
check "trajectory, model.h5 and epr.h5 bitwise equal to the uninterrupted run" "[[ $? -eq 0 ]]"
cat "$tmp/cmp.log"

# input/swimmers64_paper.toml (run by the same job script) needs its held-out trajectory first:
# refused with exit 2 naming the key, accepted once the file exists (here: any trajectory)
"$exe" --check "$src/input/swimmers64_paper.toml" >/dev/null 2>"$tmp/sw.err"
rc=$?
check "--check swimmers64_paper.toml without the held-out trajectory: exit 2 (got $rc)" "[[ $rc -eq 2 ]]"
check "  naming train.validate_trajectory" "grep -q 'validate_trajectory' '$tmp/sw.err'"
# a short held-out trajectory as the input's header makes it (the input check reads its shape)
"${mpi[@]}" -n 1 "$exe" --set run.seed=65 --set run.output="\"$tmp/held\"" \
  --set 'run.stages=["simulate"]' --set simulate.n_equil=100 --set simulate.n_steps=200 \
  --set simulate.frame_every=100 --set simulate.checkpoint_every=0 \
  "$src/input/swimmers64_paper.toml" >"$tmp/held.log" 2>&1
check "a short held-out trajectory for swimmers64_paper.toml" "[[ $? -eq 0 ]]"
"$exe" --check --set train.validate_trajectory="\"$tmp/held/trajectory.h5\"" \
  --set epr.trajectory="\"$tmp/held/trajectory.h5\"" \
  "$src/input/swimmers64_paper.toml" >/dev/null 2>"$tmp/sw.err"
check "--check swimmers64_paper.toml with it" "[[ $? -eq 0 ]]"
# the tiny MIPS run's trajectory is not of this system: refused, naming its particle count
"$exe" --check --set train.validate_trajectory="\"$tmp/held/trajectory.h5\"" \
  --set epr.trajectory="\"$tmp/run/trajectory.h5\"" \
  "$src/input/swimmers64_paper.toml" >/dev/null 2>"$tmp/sw.err"
check "--check swimmers64_paper.toml with another system's trajectory: exit 2" \
  "[[ $? -eq 2 ]] && grep -q '\[epr\] trajectory: .* particles in 2 dimensions; \[system\] n = 64' '$tmp/sw.err'"
"$exe" --check --set train.validate_trajectory="\"$tmp/run/trajectory.h5\"" \
  --set epr.trajectory="\"$tmp/held/trajectory.h5\"" \
  "$src/input/swimmers64_paper.toml" >/dev/null 2>"$tmp/sw.err"
check "  and as its validation trajectory: exit 2" \
  "[[ $? -eq 2 ]] && grep -q '\[train\] validate_trajectory: .* particles in 2 dimensions; \[system\] n = 64' '$tmp/sw.err'"

# the transfer inputs read a trained model.h5: refused without it (a real run, not only --check:
# exit 2 naming [epr] model, and no output directory made), accepted with one of their [model]
# (the network of input/mips_epr_validate.toml, trained for 2 steps on the tiny run's frames)
"$exe" --set run.output="\"$tmp/xm\"" --set 'run.stages=["train"]' \
  --set train.trajectory="\"$tmp/ref/trajectory.h5\"" --set train.steps=2 --set model.d_e=64 \
  --set model.layers=2 --set model.K=16 --set model.mlp_hidden=128 --set model.embed_hidden=64 \
  --set model.dec_hidden=64 --set model.boltzmann=true --set model.max_batch=128 \
  "$tmp/tiny.toml" >"$tmp/xm.log" 2>&1
check "a 2-step model of the transfer inputs' network" "[[ $? -eq 0 && -f $tmp/xm/model.h5 ]]"
for f in "$src"/input/transfer_*.toml; do
  b=$(basename "$f" .toml)
  "$exe" --set run.output="\"$tmp/$b\"" --set epr.model="\"$tmp/none/model.h5\"" "$f" \
    >/dev/null 2>"$tmp/xf.err"
  rc=$?
  check "$b without its model: exit 2 (got $rc), naming [epr] model, no output" \
    "[[ $rc -eq 2 && ! -e $tmp/$b ]] && grep -q '\[epr\] model: cannot read' '$tmp/xf.err'"
  "$exe" --check --set epr.model="\"$tmp/xm/model.h5\"" "$f" >/dev/null 2>"$tmp/xf.err"
  check "--check $b with a model" "[[ $? -eq 0 ]]"
done
# a model trained as another network than [model] builds: refused before anything is made,
# naming the [model] key (a real run), here d_e and the activation
f="$src/input/transfer_n32768.toml"
for kv in "model.d_e=32:d_e" 'model.activation="silu":activation'; do
  rm -rf "$tmp/xa"
  "$exe" --set run.output="\"$tmp/xa\"" --set epr.model="\"$tmp/xm/model.h5\"" \
    --set "${kv%:*}" "$f" >/dev/null 2>"$tmp/xa.err"
  rc=$?
  check "transfer_n32768 with --set ${kv%:*}: exit 2 (got $rc), naming [model] ${kv##*:}, no output" \
    "[[ $rc -eq 2 && ! -e $tmp/xa ]] && grep -q '\[model\] ${kv##*:}: .*xm/model.h5 (\[epr\] model) was trained as another network' '$tmp/xa.err'"
done

echo "$pass passed, $fail failed"
if [[ $fail -ne 0 ]]; then
  for f in ref c1 c2 c3 c4; do echo "--- $f.log"; tail -n 15 "$tmp/$f.log"; done
fi
[[ $fail -eq 0 ]]
