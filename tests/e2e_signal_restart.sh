#!/usr/bin/env bash
# Restart under a real signal: `mpiexec -n 2 sgm_hpc` on a MIPS input gets SIGUSR1 (mpiexec
# forwards it to the ranks) once it has printed a progress line (so it is stepping, with most steps
# still to go); the run must exit 0 with checkpoint.h5 and no
# trajectory.h5, `--restart` must finish it, and the final trajectory.h5 (positions and g, every
# frame) must equal an uninterrupted run's bit for bit.
#   e2e_signal_restart.sh SGM_HPC SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1; src=$2; shift 2
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
py=$("$src/scripts/find-python.sh") || { echo "FAIL no python3 with h5py"; exit 1; }
N=${SGM_E2E_N:-4096}
STEPS=${SGM_E2E_STEPS:-20000}
sets=(--set run.progress_interval=0.2 --set "system.n=$N" --set simulate.n_equil=100 --set "simulate.n_steps=$STEPS"
  --set simulate.frame_every=500 --set simulate.checkpoint_every=0 --set simulate.relax_steps=50)
in=$src/input/aoup_mips_4096.toml

# reference, uninterrupted
"${mpi[@]}" -n 2 "$exe" --set "run.output=\"$tmp/ref\"" "${sets[@]}" "$in" >"$tmp/ref.log" 2>&1
check "reference run exits 0" "[[ $? -eq 0 ]] && [[ -f $tmp/ref/trajectory.h5 ]]"

# interrupted: SIGUSR1 to mpiexec once the stage reports progress (0.2 s of stepping)
"${mpi[@]}" -n 2 "$exe" --set "run.output=\"$tmp/run\"" "${sets[@]}" "$in" >"$tmp/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "^\[simulate\] [0-9]*/" "$tmp/run.log" && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
sleep "${SGM_E2E_DELAY:-0}"
kill -USR1 $pid
wait $pid; rc=$?
check "signalled run exits 0 (rc $rc)" "[[ $rc -eq 0 ]]"
check "stop reported" "grep -q 'stop requested; checkpoint written at step' $tmp/run.log"
check "checkpoint.h5 written" "[[ -f $tmp/run/checkpoint.h5 ]]"
check "no final trajectory.h5 yet" "[[ ! -f $tmp/run/trajectory.h5 ]]"
stopped=$(sed -n 's/.*checkpoint written at step \([0-9]*\).*/\1/p' "$tmp/run.log")
echo "     stopped at step ${stopped:-?} of $((100 + STEPS))"
check "stopped mid-run" "[[ -n '$stopped' ]] && (( ${stopped:-0} > 0 && ${stopped:-0} < 100 + STEPS ))"

"${mpi[@]}" -n 2 "$exe" --set "run.output=\"$tmp/run\"" "${sets[@]}" --restart "$tmp/run/checkpoint.h5" \
  "$in" >"$tmp/restart.log" 2>&1
check "restart exits 0" "[[ $? -eq 0 ]] && [[ -f $tmp/run/trajectory.h5 ]]"

"$py" - "$tmp/ref/trajectory.h5" "$tmp/run/trajectory.h5" >"$tmp/cmp.log" 2>&1 <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
ok = True
for q in ("position", "orientation"):
    for f in ("value", "step"):
        x, y = a[f"particles/all/{q}/{f}"][...], b[f"particles/all/{q}/{f}"][...]
        same = x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        print(q, f, x.shape, "bitwise equal" if same else "DIFFERENT")
        ok &= same
sys.exit(0 if ok else 1)
PY
rc=$?
cat "$tmp/cmp.log"
check "restarted trajectory equals the uninterrupted one bit for bit" "[[ $rc -eq 0 ]]"

e2e_finish
