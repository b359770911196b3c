#!/usr/bin/env bash
# postprocess/swimmers_linear_sm.py on free swimmers, where its linear class holds the exact
# (Gaussian) score, and postprocess/swimmers_spearman.py on the `epr` stage's output with that
# exact score (div v = 0 per particle, no contacts): non-interacting AOUPs in a harmonic trap (input/trap_mlp.toml: mu A = 1,
# gamma = 1, eps = 0.5, v0 = 1, d = 2; T = 10^4) have div_x v_x = -div_g v_g = -2/3 per
# particle (Lyapunov covariance: Var x = 1, Cov(x, g) = 1/2, Var g = 1), so E[div v] = 0.
#   e2e_swimmers_linear_sm.sh SGM_HPC PYTHON SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1 py=$2 src=$3; shift 3
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/run\"" --set 'run.stages=["simulate"]' \
  "$src/input/trap_mlp.toml" >"$tmp/sim.log" 2>&1
check "simulate exits 0" "[[ $? -eq 0 ]]"
"$py" "$src/postprocess/swimmers_linear_sm.py" "$tmp/run/trajectory.h5" "$tmp/run/run.toml" \
  >"$tmp/o" 2>&1
check "script exits 0" "[[ $? -eq 0 ]]"
cat "$tmp/o"
read -r dx dg dv < <(sed -n 's/^  all: div_x v_x \([^,]*\), div_g v_g \([^,]*\), E\[div v\] \(.*\)$/\1 \2 \3/p' "$tmp/o")
near() { "$py" -c "import sys; sys.exit(0 if abs(float('$1') - ($2)) < $3 else 1)"; }
check "div_x v_x = -2/3 (got ${dx:-none})" "near '${dx:-nan}' -2/3 0.05"
check "div_g v_g = +2/3 (got ${dg:-none})" "near '${dg:-nan}' 2/3 0.05"
check "E[div v] = 0 (got ${dv:-none})" "near '${dv:-nan}' 0 0.05"
# the pair class holds the exact score too (the pair features only add freedom): E[div v] ~ 0,
# and it prints |v_g|^2 per radius quintile
"$py" "$src/postprocess/swimmers_linear_sm.py" "$tmp/run/trajectory.h5" "$tmp/run/run.toml" \
  --frames 20 --pair-basis 5 >"$tmp/p" 2>&1
check "pair class exits 0" "[[ $? -eq 0 ]]"
cat "$tmp/p"
pv=$(sed -n 's/^    all: .*E\[div v\] \([^;]*\);.*$/\1/p' "$tmp/p")
check "pair class E[div v] = 0 (got ${pv:-none})" "near '${pv:-nan}' 0 0.1"
check "pair class |v_g|^2 by quintile" "grep -Eq '^    \|v_g\|\^2( [0-9.e+-]+){5}$' '$tmp/p'"
check "pair class by number of contacts" "grep -Eq '^    by number of contacts .* share( [0-9.]+){4}; div_x v_x( [0-9.e+-]+){4}; div_g v_g( [0-9.e+-]+){4}$' '$tmp/p'"
# swimmers_spearman.py on the exact score ([epr] score = "exact_trap"): every particle has
# div_x v_x = -div_g v_g = -2/3, so rms(div v)/rms(div_g v_g) vanishes to round-off, and with
# k = 0 every particle is in the no-contact class
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/run\"" --set 'run.stages=["epr"]' \
  --set epr.score='"exact_trap"' --set epr.stride=50 --set epr.write_fields=false \
  "$src/input/trap_mlp.toml" >"$tmp/epr.log" 2>&1
check "epr with the exact score exits 0" "[[ $? -eq 0 ]]"
PYTHONPATH="$src/postprocess" "$py" "$src/postprocess/swimmers_spearman.py" "$tmp/run" >"$tmp/s" 2>&1
check "swimmers_spearman exits 0" "[[ $? -eq 0 ]]"
cat "$tmp/s"
js() { "$py" -c "import json, sys; s = json.load(open('$tmp/run/swimmers_stats.json')); $1"; }
check "stats file" "[[ -s '$tmp/run/swimmers_stats.json' ]]"
check "rms(div v)/rms(div_g v_g) < 1e-9" "js 'sys.exit(0 if s[\"rms_div_v_over_rms_divg_vg\"] < 1e-9 else 1)'"
check "div_x v_x = -2/3 per particle" "js 'sys.exit(0 if abs(s[\"mean_divx_vx\"] + 2 / 3) < 1e-9 else 1)'"
check "one contact class, no contact, share 1" "js 'c = s[\"by_contact_load\"]; sys.exit(0 if len(c) == 1 and c[0][\"class\"] == \"no contact\" and c[0][\"share\"] == 1.0 else 1)'"
check "div v = 0 in every contact-count class" "js 'c = s[\"by_contact_count\"]; sys.exit(0 if len(c) >= 2 and abs(sum(x[\"share\"] for x in c) - 1) < 1e-12 and all(abs(x[\"div_v\"]) < 1e-9 for x in c) else 1)'"
e2e_finish
