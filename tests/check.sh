# Counted checks for the test scripts, sourced (not run): `suite=NAME; . tests/check.sh`.
#   check "what it shows" command...   runs the command; ok/FAIL line, counted
#   finish                              prints "NAME: N passed, N failed" and exits (1 if any failed)
#   fatal "why"                         a failure that stops the script here
# scripts/test.sh reads only the exit status; the summary line is for people and CI logs.
passed=0 failed=0
check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "ok   - $what"; passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
finish() { echo "$suite: $passed passed, $failed failed"; exit $((failed > 0 ? 1 : 0)); }
fatal() { echo "$suite: $*" >&2; failed=$((failed + 1)); finish; }
