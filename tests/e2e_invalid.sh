#!/usr/bin/env bash
# End-to-end: every file in tests/data/inputs/invalid must make `sgm_hpc` (on 2 ranks) exit with
# status 2, print each "# expect: LINE: text" of its header as "FILE:LINE: text" on stderr (a
# line-less "# expect: text" must appear as is), and create no output directory.
#   e2e_invalid.sh SGM_HPC MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
exe=$1; shift
mpiexec=("$@")
dir=$(cd "$(dirname "$0")" && pwd)/data/inputs/invalid
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0; n=0
for f in "$dir"/*.toml; do
  n=$((n + 1))
  name=$(basename "$f" .toml)
  out="$tmp/out_$name"
  "${mpiexec[@]}" -n 2 "$exe" --set "run.output=\"$out\"" "$f" >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  ok=1
  if [[ $rc -ne 2 ]]; then echo "FAIL $name: exit status $rc, expected 2"; ok=0; fi
  if [[ -e "$out" ]]; then echo "FAIL $name: output directory was created"; ok=0; fi
  while IFS= read -r line; do
    want=${line#\# expect: }
    if [[ $want =~ ^([0-9]+):(.*)$ ]]; then
      want="$f:${BASH_REMATCH[1]}:${BASH_REMATCH[2]}"
    fi
    if ! grep -qF -- "$want" "$tmp/stderr"; then
      echo "FAIL $name: expected on stderr: $want"; ok=0
    fi
  done < <(grep '^# expect: ' "$f")
  if [[ $ok -eq 0 ]]; then
    echo "---- stderr of $name:"; cat "$tmp/stderr"; fail=$((fail + 1))
  else
    echo "ok   $name"
  fi
done
echo "$((n - fail)) passed, $fail failed"
[[ $fail -eq 0 ]]
