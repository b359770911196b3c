#!/usr/bin/env bash
# End-to-end command line: --help, --version, --check (prints every key, writes nothing), usage
# errors (exit 2), a run creates its directory and run.toml, another run refuses that directory
# and leaves it untouched, PETSc options reach PETSc.
#   e2e_cli.sh SGM_HPC MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1; shift
mpi=("$@")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
cat >"$tmp/in.toml" <<TOML
[run]
name = "cli"
output = "$tmp/out"
stages = []
seed = 7
TOML

"$exe" --help >"$tmp/o" 2>&1; rc=$?
check "help exits 0" "[[ $rc -eq 0 ]]"
check "help names docs/input.md and stages" "grep -q 'docs/input.md' $tmp/o && grep -q '^stages' $tmp/o"

"$exe" --version >"$tmp/o" 2>&1; rc=$?
check "version exits 0" "[[ $rc -eq 0 ]]"
for lib in MPI PETSc SLEPc HDF5 FFTW OpenBLAS; do
  check "version names $lib" "grep -q '^  $lib' $tmp/o"
done

"${mpi[@]}" -n 2 "$exe" --check --set run.seed=11 "$tmp/in.toml" >"$tmp/o" 2>&1; rc=$?
check "check exits 0" "[[ $rc -eq 0 ]]"
check "check prints set keys with line" "grep -Eq '^name +=  *\"cli\" +# set, line 2' $tmp/o"
check "check prints --set value" "grep -Eq '^seed += 11 +# set by --set' $tmp/o"
check "check prints defaults" "grep -Eq '^overwrite += false +# default' $tmp/o"
check "check prints units" "grep -Eq '^progress_interval += 5.0 +# default; unit: s' $tmp/o"
check "check printed once (rank 0 only)" "[[ \$(grep -c '^\[run\]' $tmp/o) -eq 1 ]]"
check "check creates nothing" "[[ ! -e $tmp/out ]]"

"$exe" --bogus "$tmp/in.toml" >"$tmp/o" 2>&1; rc=$?
check "unknown option exits 2" "[[ $rc -eq 2 ]] && grep -q 'unknown option --bogus' $tmp/o"
"$exe" >"$tmp/o" 2>&1; rc=$?
check "missing input exits 2" "[[ $rc -eq 2 ]] && grep -q 'no input file' $tmp/o"
"$exe" "$tmp/nonexistent.toml" >"$tmp/o" 2>&1; rc=$?
check "unreadable input exits 2" "[[ $rc -eq 2 ]] && grep -q 'cannot open' $tmp/o"

"${mpi[@]}" -n 2 "$exe" "$tmp/in.toml" -log_view >"$tmp/o" 2>&1; rc=$?
check "run exits 0" "[[ $rc -eq 0 ]]"
check "run writes run.toml" "grep -q 'name = \"cli\"' $tmp/out/run.toml"
check "PETSc option -log_view works" "grep -q 'Performance Summary' $tmp/o"

before=$(cd "$tmp/out" && ls -A && stat -c "%n %Y %s" * && md5sum run.toml)
sed 's/name = "cli"/name = "other"/' "$tmp/in.toml" >"$tmp/other.toml"
"${mpi[@]}" -n 2 "$exe" "$tmp/other.toml" >"$tmp/o" 2>&1; rc=$?
after=$(cd "$tmp/out" && ls -A && stat -c "%n %Y %s" * && md5sum run.toml)
check "another run's directory: exit 2" "[[ $rc -eq 2 ]] && grep -q 'holds the outputs of run \"cli\"' $tmp/o"
check "another run's directory: untouched" "[[ \"\$before\" == \"\$after\" ]]"
"${mpi[@]}" -n 2 "$exe" --set run.overwrite=true "$tmp/other.toml" >"$tmp/o" 2>&1; rc=$?
check "overwrite = true takes the directory" "[[ $rc -eq 0 ]] && grep -q 'name = \"other\"' $tmp/out/run.toml"

# --restart FILE: a file that is not HDF5, or one the simulate stage needs and is not there, is
# refused before the output directory is made or touched (exit 2, one line naming it)
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/rs\"" --set 'run.stages=["simulate"]' \
  --restart "$tmp/none.h5" "$tmp/in.toml" >"$tmp/o" 2>&1; rc=$?
check "--restart of a missing file: exit 2, named, nothing made" \
  "[[ $rc -eq 2 && ! -e $tmp/rs ]] && grep -q -- '--restart $tmp/none.h5: No such file' $tmp/o"
"${mpi[@]}" -n 2 "$exe" --set run.output="\"$tmp/rs\"" --restart "$tmp/in.toml" "$tmp/in.toml" \
  >"$tmp/o" 2>&1; rc=$?
check "--restart of a file that is not HDF5: exit 2, named, nothing made" \
  "[[ $rc -eq 2 && ! -e $tmp/rs ]] && grep -q -- '--restart $tmp/in.toml: not an HDF5 file' $tmp/o"
before=$(cd "$tmp/out" && ls -A && stat -c "%n %Y %s" * && md5sum run.toml)
"${mpi[@]}" -n 2 "$exe" --set run.overwrite=true --set 'run.stages=["simulate"]' \
  --restart "$tmp/none.h5" "$tmp/other.toml" >"$tmp/o" 2>&1; rc=$?
after=$(cd "$tmp/out" && ls -A && stat -c "%n %Y %s" * && md5sum run.toml)
check "--restart of a missing file into an existing directory: exit 2, untouched" \
  "[[ $rc -eq 2 && \"\$before\" == \"\$after\" ]]"

# A stage that stops early (as on SIGTERM) ends the run with status 0 before the next stage.
cat >"$tmp/stop.toml" <<TOML
[run]
name = "stop"
output = "$tmp/stop"
stages = ["simulate", "simulate"]
[system]
n = 64
phi = 0.3
[simulate]
n_steps = 100
frame_every = 50
stop_after = 30
TOML
"${mpi[@]}" -n 2 "$exe" "$tmp/stop.toml" >"$tmp/o" 2>&1; rc=$?
check "early stop exits 0" "[[ $rc -eq 0 ]] && [[ -f $tmp/stop/checkpoint.h5 ]]"
check "early stop runs no later stage" "! grep -q 'stage simulate (2/2)' $tmp/o && grep -q 'stages after simulate not run' $tmp/o"

e2e_finish
