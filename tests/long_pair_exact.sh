#!/usr/bin/env bash
# Learned scores of two interacting AOUPs against their numerically exact score ([epr] score =
# "fpe_pair"), label long (about 8 min on 2 cores; docs/validation.md, "Two AOUPs in d = 1
# against the numerically exact score"):
#  - the ring, input/ring_mlp.toml as committed (online composite, periodic inputs, 20000 steps):
#    on its own frames the relative score error below 0.25 (measured 0.18) and, away from
#    overlaps, the per-particle div_g v_g and div_x v_x correlated above 0.85 and 0.7 with the
#    exact ones (measured 0.91, 0.84);
#  - two swimmers with the 64-swimmer interaction in a 1D trap (input/pair_trap_fpe.toml), a
#    64 x 3 MLP trained online with the composite loss (20000 steps of 256 replicas): relative
#    error below 0.1 and the per-particle div v correlated above 0.85 with the exact one.
#   long_pair_exact.sh SGM_HPC PYTHON SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1 py=$2 src=$3; shift 3
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
js() { "$py" -c "import json, sys; s = json.load(open('$tmp/$1/epr_split.json'))['against_reference']; print(s['score_error_rel']); $2"; }
# the ring
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/ring\"" --set epr.write_fields=false \
  "$src/input/ring_mlp.toml" >"$tmp/ring.log" 2>&1
check "ring input exits 0" "[[ $? -eq 0 ]]"
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/ring_fpe\"" --set 'run.stages=["epr"]' \
  --set epr.score='"fpe_pair"' --set epr.trajectory="\"$tmp/ring/trajectory.h5\"" \
  --set epr.write_fields=false "$src/input/ring_mlp.toml" >"$tmp/ring_fpe.log" 2>&1
check "exact ring score exits 0" "[[ $? -eq 0 ]]"
"$py" "$src/postprocess/epr_split.py" --reference "$tmp/ring_fpe" "$tmp/ring" | tail -9
check "ring: relative score error < 0.25" "js ring 'sys.exit(0 if s[\"score_error_rel\"] < 0.25 else 1)'"
check "ring: div_g v_g per particle, Pearson with the exact > 0.85" \
  "js ring 'sys.exit(0 if s[\"div_g_away_pearson_ref\"] > 0.85 else 1)'"
check "ring: div_x v_x per particle away from overlaps, Pearson > 0.7" \
  "js ring 'sys.exit(0 if s[\"div_x_away_pearson_ref\"] > 0.7 else 1)'"
# two swimmers in the trap
"${mpi[@]}" -n 1 "$exe" --set run.output="\"$tmp/pt\"" --set simulate.n_steps=2000000 \
  "$src/input/pair_trap_fpe.toml" >"$tmp/pt.log" 2>&1
check "pair in the trap with the exact score exits 0" "[[ $? -eq 0 ]]"
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/pm\"" --set 'run.stages=["train", "epr"]' \
  --set train.trajectory="\"$tmp/pt/trajectory.h5\"" --set epr.trajectory="\"$tmp/pt/trajectory.h5\"" \
  --set epr.score='"model"' --set model.kind='"mlp"' --set model.learn='"xg"' \
  --set model.hidden=64 --set model.depth=3 --set model.max_batch=256 \
  --set train.mode='"online"' --set train.sde_steps=50 --set train.loss='"composite"' \
  --set train.steps=20000 --set train.batch=256 --set train.optimizer='"adamw"' \
  --set train.weight_decay=1e-4 --set train.lr=1e-3 --set train.schedule='"warmup_cosine"' \
  --set train.warmup=1000 --set train.lr_end=1e-5 --set train.ema=0.995 \
  --set train.log_every=2000 "$src/input/pair_trap_fpe.toml" >"$tmp/pm.log" 2>&1
check "pair in the trap: MLP train + epr exits 0" "[[ $? -eq 0 ]]"
"$py" "$src/postprocess/epr_split.py" --reference "$tmp/pt" "$tmp/pm" | tail -9
check "trap pair: relative score error < 0.1" "js pm 'sys.exit(0 if s[\"score_error_rel\"] < 0.1 else 1)'"
check "trap pair: div v per particle, Pearson with the exact > 0.85" \
  "js pm 'sys.exit(0 if s[\"div_pearson_ref\"] > 0.85 else 1)'"
e2e_finish
