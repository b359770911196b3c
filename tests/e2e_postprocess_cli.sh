#!/usr/bin/env bash
# The command line of every postprocess/ script (postprocess/sgm_cli.py): --help prints a usage
# and exits 0; a run directory that is not there ends the script with one line "SCRIPT: error:
# ..." naming the missing file and exit status 2, no traceback; a missing argument is a usage
# error (exit 2). Scripts are found by listing postprocess/, so a new one is covered by default;
# periodic_neighbours.py and sgm_cli.py are modules.
#   e2e_postprocess_cli.sh PYTHON SOURCE_DIR
set -uo pipefail
py=$1 src=$2
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
n=0
for f in "$src"/postprocess/*.py; do
  b=$(basename "$f")
  [[ $b == periodic_neighbours.py || $b == sgm_cli.py ]] && continue
  n=$((n + 1))
  "$py" "$f" --help >"$tmp/h" 2>&1
  check "$b --help: exit 0 with a usage" "[[ $? -eq 0 ]] && grep -q '^usage: $b' '$tmp/h'"
  "$py" "$f" >"$tmp/u" 2>&1
  check "$b without arguments: exit 2, a usage error" "[[ $? -eq 2 ]] && grep -q 'error:' '$tmp/u'"
  # a missing run directory, or files in it, as the script's required arguments
  case $b in
    noise_frames.py) args=("$tmp/none/trajectory.h5" "$tmp/none/out.h5" --sigma 0.1) ;;
    swimmers_linear_sm.py) args=("$tmp/none/trajectory.h5" "$tmp/none/run.toml") ;;
    *) args=("$tmp/none") ;;
  esac
  "$py" "$f" "${args[@]}" >"$tmp/o" 2>&1
  rc=$?
  check "$b on a missing run directory: exit 2 (got $rc), one error line naming it, no traceback" \
    "[[ $rc -eq 2 ]] && grep -q '^$b: error: .*$tmp/none' '$tmp/o' && ! grep -q Traceback '$tmp/o'"
done
check "the scripts were found ($n)" "[[ $n -ge 10 ]]"
e2e_finish
