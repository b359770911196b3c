#!/usr/bin/env bash
# postprocess/epr_split.py on two AOUPs in a one-dimensional trap (input/pair_trap_fpe.toml, a
# short trajectory) scored by the numerically exact "fpe_pair" score on two grids: the coarse
# grid against the fine one is the grid's own error (small), a run against itself is exactly 0,
# the exact score's E[div v] per particle is 0 within its spread, and runs of different frames
# are refused.
#   e2e_epr_split.sh SGM_HPC PYTHON SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1 py=$2 src=$3; shift 3
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
in="$src/input/pair_trap_fpe.toml"
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/a\"" --set simulate.n_steps=400000 "$in" \
  >"$tmp/a.log" 2>&1
check "simulate + epr (fpe_pair, fpe_dr 0.04) exits 0" "[[ $? -eq 0 ]]"
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/b\"" --set 'run.stages=["epr"]' \
  --set epr.trajectory="\"$tmp/a/trajectory.h5\"" --set epr.fpe_dr=0.02 --set epr.fpe_nh=240 \
  "$in" >"$tmp/b.log" 2>&1
check "epr on a finer grid (2 ranks) exits 0" "[[ $? -eq 0 ]]"
"$py" "$src/postprocess/epr_split.py" --reference "$tmp/b" "$tmp/a" >"$tmp/o" 2>&1
check "script exits 0" "[[ $? -eq 0 ]]"
cat "$tmp/o"
js() { "$py" -c "import json, sys; s = json.load(open('$tmp/$1/epr_split.json')); $2"; }
check "split file" "[[ -s '$tmp/a/epr_split.json' && -s '$tmp/b/epr_split.json' ]]"
check "coarse grid against fine: relative score error < 0.02" \
  "js a 'sys.exit(0 if s[\"against_reference\"][\"score_error_rel\"] < 0.02 else 1)'"
check "coarse grid against fine: div v correlation > 0.98" \
  "js a 'sys.exit(0 if s[\"against_reference\"][\"div_pearson_ref\"] > 0.98 else 1)'"
check "exact score: |E[div v]| < 0.1 rms(div v)" \
  "js b 'st = s[\"split\"]; sys.exit(0 if abs(st[\"mean_div\"]) < 0.1 * st[\"rms_div\"] else 1)'"
check "bins by nearest distance cover all particle-frames" \
  "js b 'sys.exit(0 if abs(sum(r[\"fraction\"] for r in s[\"split\"][\"by_nearest\"]) - 1) < 1e-9 else 1)'"
check "classes contact / shell / apart cover all particle-frames" \
  "js b 'c = s[\"split\"][\"by_class\"]; sys.exit(0 if [r[\"class\"] for r in c] == [\"contact\", \"shell\", \"apart\"] and abs(sum(r[\"fraction\"] for r in c) - 1) < 1e-9 else 1)'"
check "printed comparison line" "grep -Eq '^  against the reference: E\|s - s_ref\|\^2_D [0-9.e+-]+ \+- ' '$tmp/o'"
"$py" "$src/postprocess/epr_split.py" --reference "$tmp/a" "$tmp/a" >"$tmp/self" 2>&1
check "a run against itself: error 0" \
  "js a 'sys.exit(0 if s[\"against_reference\"][\"score_error\"] == 0.0 else 1)'"
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/c\"" --set 'run.stages=["epr"]' \
  --set epr.trajectory="\"$tmp/a/trajectory.h5\"" --set epr.stride=2 "$in" >"$tmp/c.log" 2>&1
"$py" "$src/postprocess/epr_split.py" --reference "$tmp/a" "$tmp/c" >"$tmp/d" 2>&1
check "different frames are refused" "[[ $? -ne 0 ]] && grep -q 'different frames' '$tmp/d'"
e2e_finish
