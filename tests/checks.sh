# Helpers sourced by the shell tests: run a command and compare its exit status, then look for a
# pattern in its output. Each records a failure in $fail and prints one "ok"/"FAIL" line.
fail=0
check() { # check NAME EXPECTED_STATUS COMMAND... ; output in $out
  local name=$1 want=$2; shift 2
  out=$(timeout 120 "$@" 2>&1); local got=$?
  if [ "$got" != "$want" ]; then echo "FAIL $name: exit $got, expected $want"; echo "$out" | tail -20; fail=1; return 1; fi
  echo "ok   $name"
}
expect_text() { # expect_text NAME PATTERN
  if ! grep -qE "$2" <<<"$out"; then echo "FAIL $1: output lacks /$2/"; echo "$out" | tail -20; fail=1; fi
}
