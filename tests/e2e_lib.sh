# Shared set-up of the e2e test scripts (sourced, not run): a temporary directory removed on exit,
# pass/fail counters and check(); e2e_finish prints the counts and sets the exit status.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
check() { # name, condition (string evaluated by bash)
  if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi
}
e2e_finish() {
  echo "$pass passed, $fail failed"
  [[ $fail -eq 0 ]]
}
