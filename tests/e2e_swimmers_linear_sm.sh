#!/usr/bin/env bash
# postprocess/swimmers_linear_sm.py on free swimmers, where its linear class holds the exact
# (Gaussian) score: non-interacting AOUPs in a harmonic trap (input/trap_mlp.toml: mu A = 1,
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
e2e_finish
