#!/usr/bin/env bash
# Two swimmers with the 64-swimmer interaction in a 2D trap against their numerically exact score
# ([epr] score = "fpe_pair" in d = 2), label long (about 12 min on 2 cores; docs/validation.md,
# "Two AOUPs in d = 2: the exact per-particle split"):
#  - input/pair_trap2d_fpe.toml as committed (T = 10^5, 100001 frames, the exact score): the
#    per-frame FPE residual below 0.1 of the spread of div v (measured 0.06), |E[div v]| below
#    0.002 per particle (measured 0.0011, the grid's far-field error), the stage's score-error
#    estimate 0 within 3 standard errors + 0.002; the per-particle split by class: cancelling
#    apart (median |div v| / median |div_g v_g| below 0.02, measured 0.007) and not at contact
#    (above 0.8, measured 1.10);
#  - the 64-swimmer input's transformer trained on the pair with 8x its batch (6000 steps of 256
#    replicas): relative error against the exact score below 0.2 (measured 0.13), and the stage's
#    estimate of that error within 3 of its standard errors + 0.002 of the measured one.
#   long_pair2d_exact.sh SGM_HPC PYTHON SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1 py=$2 src=$3; shift 3
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
met() { "$py" -c "import json, sys; m = json.load(open('$tmp/$1/metrics.json'))['epr']; $2"; }
spl() { "$py" -c "import json, sys; s = json.load(open('$tmp/$1/epr_split.json')); $2"; }
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/ex\"" "$src/input/pair_trap2d_fpe.toml" \
  >"$tmp/ex.log" 2>&1
check "pair input with the exact score exits 0" "[[ $? -eq 0 ]]"
grep 'fpe_pair' "$tmp/ex.log" | head -2
check "exact: FPE residual std < 0.1 std(div v)" \
  "met ex 'sys.exit(0 if m[\"fpe_residual_std\"] < 0.1 * m[\"div_v_std\"] else 1)'"
check "exact: |E[div v]| < 0.002 per particle" "met ex 'sys.exit(0 if abs(m[\"div_v_mean\"]) < 0.002 else 1)'"
check "exact: score-error estimate 0 within 3 s.e. + 0.002" \
  "met ex 'sys.exit(0 if abs(m[\"score_error_mean\"]) < 3 * m[\"score_error_se\"] + 0.002 else 1)'"
"$py" "$src/postprocess/epr_split.py" "$tmp/ex" | tail -4
check "exact: apart (>= 3a), median ratio < 0.02" \
  "spl ex 'c = {r[\"class\"]: r for r in s[\"split\"][\"by_class\"]}; sys.exit(0 if c[\"apart\"][\"median_ratio\"] < 0.02 else 1)'"
check "exact: contact (< 2.4a), median ratio > 0.8" \
  "spl ex 'c = {r[\"class\"]: r for r in s[\"split\"][\"by_class\"]}; sys.exit(0 if c[\"contact\"][\"median_ratio\"] > 0.8 else 1)'"
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/tf\"" --set 'run.stages=["train", "epr"]' \
  --set system.n=2 --set train.trajectory="\"$tmp/ex/trajectory.h5\"" \
  --set epr.trajectory="\"$tmp/ex/trajectory.h5\"" --set epr.stride=1 --set train.batch=256 \
  "$src/input/swimmers64_v1_transformer.toml" >"$tmp/tf.log" 2>&1
check "transformer on the pair: train + epr exits 0" "[[ $? -eq 0 ]]"
"$py" "$src/postprocess/epr_split.py" --reference "$tmp/ex" "$tmp/tf" | grep 'against the reference'
check "transformer: relative error against the exact < 0.2" \
  "spl tf 'sys.exit(0 if s[\"against_reference\"][\"score_error_rel\"] < 0.2 else 1)'"
err=$("$py" -c "import json; print(json.load(open('$tmp/tf/epr_split.json'))['against_reference']['score_error'])")
check "transformer: the stage's estimate within 3 s.e. + 0.002 of the measured error" \
  "met tf 'sys.exit(0 if abs(m[\"score_error_mean\"] - $err) < 3 * m[\"score_error_se\"] + 0.002 else 1)'"
e2e_finish
