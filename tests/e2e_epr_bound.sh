#!/usr/bin/env bash
# postprocess/epr_regions.py --bound: the class-wise lower bound on the exact score's mean |v_g|^2
# (docs/derivations.md, "A lower bound on the exact score's |v_g|^2 by class") on two AOUPs on a
# ring (input/ring_mlp.toml's system, a short trajectory), classes by contact (phi_i within 2.5a).
# With the numerically exact "fpe_pair" score the bound equals the class's mean |v_g|^2 within
# its error; with the exact score of another system (v0 = 2 instead of 1, same frames) it is far
# below the exact one and below that score's own |v_g|^2; an empty class is null.
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
check "printed bound lines" "grep -Eq '^  interface .* exact >= [0-9.e+-]+ \+- ' '$tmp/a.out'"
e2e_finish
