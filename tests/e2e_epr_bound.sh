#!/usr/bin/env bash
# postprocess/epr_regions.py --bound: the class-wise lower bound on the exact score's mean |v_g|^2
# (docs/derivations.md, "A lower bound on the exact score's |v_g|^2 by class") on two AOUPs on a
# ring (input/ring_mlp.toml's system, a short trajectory), classes by contact (phi_i within 2.5a).
# With the numerically exact "fpe_pair" score the bound equals the class's mean |v_g|^2 within
# its error; with the exact score of another system (v0 = 2 instead of 1, same frames) it is far
# below the exact one and below that score's own |v_g|^2; an empty class is null. Also
# postprocess/noise_frames.py (the frames of the sigma-smoothed density): the noise's size, the
# untouched frames, the refusal to overwrite. And the input check of a trajectory of another
# particle count, or of a file that holds none.
#   e2e_epr_bound.sh SGM_HPC PYTHON SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1 py=$2 src=$3; shift 3
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
in="$src/input/ring_mlp.toml"
cls=(--set epr.score='"fpe_pair"' --set epr.classify=true --set epr.local_radius=2.5
  --set epr.phi_dilute=0.3 --set epr.phi_dense=0.5 --set epr.write_fields=false)
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/a\"" --set 'run.stages=["simulate", "epr"]' \
  "${cls[@]}" "$in" >"$tmp/a.log" 2>&1
check "simulate + epr with the exact pair score exits 0" "[[ $? -eq 0 ]]"
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/b\"" --set 'run.stages=["epr"]' \
  --set epr.trajectory="\"$tmp/a/trajectory.h5\"" --set system.v0=2.0 "${cls[@]}" "$in" \
  >"$tmp/b.log" 2>&1
check "epr with the v0 = 2 pair's score on the same frames (2 ranks) exits 0" "[[ $? -eq 0 ]]"
# the input check reads the trajectory's shape: another particle count, or a file that holds no
# trajectory, is refused before the output directory is made (exit 2, the key named)
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/wrong\"" --set 'run.stages=["epr"]' \
  --set epr.trajectory="\"$tmp/a/trajectory.h5\"" --set system.n=3 "${cls[@]}" "$in" \
  >"$tmp/w.log" 2>&1
check "epr on a trajectory of 2 particles with [system] n = 3: exit 2, named, no output" \
  "[[ $? -eq 2 && ! -e $tmp/wrong ]] && grep -q '\[epr\] trajectory: .* holds 2 particles in 1 dimensions; \[system\] n = 3, dim = 1' '$tmp/w.log'"
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/wrong\"" --set 'run.stages=["epr"]' \
  --set epr.trajectory="\"$tmp/a/epr.h5\"" "${cls[@]}" "$in" >"$tmp/w.log" 2>&1
check "epr on an HDF5 file that holds no trajectory: exit 2, named, no output" \
  "[[ $? -eq 2 && ! -e $tmp/wrong ]] && grep -q 'epr.h5 holds no trajectory of particle group \"all\"' '$tmp/w.log'"
for r in a b; do
  "$py" "$src/postprocess/epr_regions.py" "$tmp/$r" --bound --no-figure --batches 10 \
    >"$tmp/$r.out" 2>&1
  check "script on run $r exits 0 and writes epr_bound.json" "[[ $? -eq 0 && -s '$tmp/$r/epr_bound.json' ]]"
done
cat "$tmp/a.out" "$tmp/b.out"
js() { "$py" -c "import json, sys; a = json.load(open('$tmp/a/epr_bound.json'))[0]['classes']; b = json.load(open('$tmp/b/epr_bound.json'))[0]['classes']; $1"; }
for c in dilute interface; do
  check "exact score, $c: bound = mean |v_g|^2 within 3 errors" \
    "js 'q = a[\"$c\"]; sys.exit(0 if abs(q[\"bound\"] - q[\"vg2\"]) < 3 * q[\"bound_se\"] else 1)'"
done
check "exact score, interface: the bound's error < 15 % of mean |v_g|^2 (the check above has power)" \
  "js 'q = a[\"interface\"]; sys.exit(0 if q[\"bound_se\"] < 0.15 * q[\"vg2\"] else 1)'"
check "other system's score, interface: bound below the exact score's by > 3 errors" \
  "js 'p, q = a[\"interface\"], b[\"interface\"]; sys.exit(0 if p[\"bound\"] - q[\"bound\"] > 3 * (p[\"bound_se\"] ** 2 + q[\"bound_se\"] ** 2) ** 0.5 else 1)'"
check "other system's score, interface: its own mean |v_g|^2 above its bound by > 3 errors" \
  "js 'q = b[\"interface\"]; sys.exit(0 if q[\"vg2\"] - q[\"bound\"] > 3 * q[\"bound_se\"] else 1)'"
check "exact score, interface: the best scale of v_g is 1 within 0.1" \
  "js 'sys.exit(0 if abs(a[\"interface\"][\"scale\"] - 1) < 0.1 else 1)'"
check "other system's score, interface: best scale < 0.8 and its scaled bound below the exact's by > 3 errors" \
  "js 'p, q = a[\"interface\"], b[\"interface\"]; sys.exit(0 if q[\"scale\"] < 0.8 and p[\"bound_scaled\"] - q[\"bound_scaled\"] > 3 * (p[\"bound_scaled_se\"] ** 2 + q[\"bound_scaled_se\"] ** 2) ** 0.5 else 1)'"
check "empty dense class: null" "js 'sys.exit(0 if a[\"dense\"][\"bound\"] is None and a[\"dense\"][\"per_frame\"] == 0 else 1)'"
check "the epr stage's vg2_exact_lower_<class> (metrics.json) equals the script's bound" \
  "$py -c \"import json, sys; m = json.load(open('$tmp/a/metrics.json'))['epr']; b = json.load(open('$tmp/a/epr_bound.json'))[0]['classes']; sys.exit(0 if all(abs(m['vg2_exact_lower_' + c] - b[c]['bound']) <= 1e-9 * abs(b[c]['bound']) for c in ('dilute', 'interface')) else 1)\""
check "printed bound lines" "grep -Eq '^  interface .* exact >= [0-9.e+-]+ \+- ' '$tmp/a.out'"
# postprocess/noise_frames.py: samples of the sigma-smoothed density for the same bound
"$py" "$src/postprocess/noise_frames.py" "$tmp/a/trajectory.h5" "$tmp/n.h5" --sigma 0.1 \
  --stride 3 --seed 7 >"$tmp/n.out" 2>&1
check "noise_frames.py exits 0" "[[ $? -eq 0 && -s '$tmp/n.h5' ]]"
"$py" - "$tmp/a/trajectory.h5" "$tmp/n.h5" >"$tmp/n.chk" 2>&1 <<'PY'
import sys
import h5py
import numpy as np
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
L = a["particles/all/box/edges"][()]
ok = True
for q in ("position", "orientation"):
    x, y = a[f"particles/all/{q}/value"][()], b[f"particles/all/{q}/value"][()]
    d = y[::3] - x[::3]
    if q == "position":
        d -= L * np.rint(d / L)  # minimum image: the noised positions are wrapped
        ok &= bool(np.all((y >= 0) & (y < L)))
    sd = d.std()
    ok &= abs(sd - 0.1) < 0.005 and abs(d.mean()) < 0.005
    untouched = np.delete(np.arange(len(x)), np.arange(0, len(x), 3))
    ok &= bool(np.array_equal(x[untouched], y[untouched]))
    print(q, "std of the noise", sd)
sys.exit(0 if ok else 1)
PY
check "noised frames: std 0.1 on x (minimum image, wrapped) and g, other frames unchanged" "[[ $? -eq 0 ]]"
cat "$tmp/n.chk"
"$py" "$src/postprocess/noise_frames.py" "$tmp/a/trajectory.h5" "$tmp/n.h5" --sigma 0.1 \
  >"$tmp/n2.out" 2>&1
check "an existing output is refused" "[[ $? -ne 0 ]] && grep -q 'not overwritten' '$tmp/n2.out'"
e2e_finish
