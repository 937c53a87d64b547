#!/usr/bin/env bash
# Tests of the command-line tools: tally-run (launch, failure propagation) and tally-perf (every
# collective with checking on, under tally-run and with -N, JSON output, bad arguments, a short
# --soak of random collectives, -a).
# usage: test_tools.sh BUILD_DIR
set -uo pipefail
bin=${1:?build directory}
. "$(dirname "$0")/checks.sh"

check "tally-run launches tally-perf" 0 "$bin/tally-run" -n 3 "$bin/tally-perf" allreduce -b 8 -e 256K -n 3 -w 1
expect_text "tally-run table" "^ +262144 +65536 +float +sum .* 0$"
expect_text "tally-run avg line" "Avg bus bandwidth"
for coll in allreduce allgather reducescatter broadcast reduce; do
  check "tally-perf -N 3 $coll" 0 "$bin/tally-perf" "$coll" -N 3 -b 1K -e 1M -d half -o max -r 2 -n 2 -w 1
  expect_text "$coll no wrong values" "Out of bounds values : 0 OK"
done
json=$(mktemp)
check "tally-perf -J" 0 "$bin/tally-perf" allreduce -N 2 -b 8 -e 64 -n 2 -w 1 -J "$json"
grep -q '"busbw"' "$json" || { echo "FAIL -J: no busbw in $json"; fail=1; }
rm -f "$json"
check "tally-perf --soak -N 4" 0 "$bin/tally-perf" --soak 3 -N 4
expect_text "soak counts operations" "^# +operations +[1-9][0-9]* "
expect_text "soak finds no wrong results" "^# +wrong results +0$"
expect_text "soak prints its seed" "seed 1"
json=$(mktemp)
check "tally-perf --soak under tally-run" 0 "$bin/tally-run" -n 3 "$bin/tally-perf" --soak 2 --seed 7 -J "$json"
expect_text "soak ran 3 ranks" "soak: 3 ranks, 2 s, seed 7"
grep -q '"mode": "soak"' "$json" && grep -q '"wrong": 0,' "$json" || { echo "FAIL soak -J: $(cat "$json")"; fail=1; }
rm -f "$json"
check "tally-perf --soak needs seconds" 2 "$bin/tally-perf" --soak ten
expect_text "soak message" "soak needs a positive number of seconds, not 'ten'"
check "tally-perf --soak 0 is refused" 2 "$bin/tally-perf" --soak 0
check "tally-perf --soak with a collective" 2 "$bin/tally-perf" allreduce --soak 1
expect_text "soak collective message" "drop 'allreduce'"
# Only rank 1 fails (the others would run for 30 s): tally-run must stop them and exit with its status.
check "tally-run names the failing rank" 1 "$bin/tally-run" -n 3 sh -c '[ $TALLY_RANK = 1 ] && exit 1; exec sleep 30'
expect_text "failing rank named" "rank 1 .*exited with status 1"
check "tally-run reports a killed rank" 137 "$bin/tally-run" -n 2 sh -c '[ $TALLY_RANK = 1 ] && kill -9 $$; exec sleep 30'
expect_text "killed rank named" "rank 1 .*signal 9"
check "tally-run without -n" 2 "$bin/tally-run" true
check "tally-run program missing" 127 "$bin/tally-run" -n 1 /nonexistent/program
check "tally-perf unknown collective" 2 "$bin/tally-perf" allsmash
check "tally-perf bad size" 2 "$bin/tally-perf" allreduce -b 12Q
check "tally-perf bad datatype" 2 "$bin/tally-perf" allreduce -d complex
TALLY_TIMEOUT=never check "bad TALLY_TIMEOUT is refused" 1 "$bin/tally-perf" allreduce -N 2 -b 8 -e 8
expect_text "TALLY_TIMEOUT message" "TALLY_TIMEOUT"
TALLY_SOCKET_IFNAME=nosuchif0 check "unknown interface is refused" 1 "$bin/tally-perf" allreduce -N 2 -b 8 -e 8
expect_text "interface list" "interfaces here: .*lo"
TALLY_DEBUG=INFO TALLY_DEBUG_SUBSYS=TUNE check "tally-perf -a rhd" 0 "$bin/tally-perf" allreduce -N 3 -a allreduce:rhd -b 8 -e 1M -n 2 -w 1
expect_text "TUNE logs each choice" "allreduce #[0-9]+, 1048576 bytes per rank on 3 ranks: rhd \\(TALLY_ALGO\\)"
check "tally-perf -a with an unknown algorithm" 1 "$bin/tally-perf" allreduce -N 2 -a treee -b 8 -e 8
expect_text "TALLY_ALGO message lists the algorithms" "TALLY_ALGO.*treee.*ring"
exit $fail
