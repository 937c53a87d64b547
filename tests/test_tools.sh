#!/usr/bin/env bash
# Tests of the command-line tools: tally-run (launch, failure propagation), core-pingpong (a
# round trip between CPUs 0 and 1, bad CPU numbers) and tally-perf (every collective and sendrecv
# with checking on, under tally-run and with -N, JSON output, bad arguments, a short --soak of
# random collectives and splits, -a, --sweep of every algorithm of the reduction collectives,
# alltoall, gather and scatter, --gpu where there is a GPU).
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
# The calls made of point-to-point messages. Rows at 256 KiB: alltoall's receive buffer, gather's
# and scatter's root buffer hold 3 blocks of 21845 floats (8 B, less than a float per rank, is
# skipped); sendrecv is one buffer. #wrong 0 out of place and in place; busbw from -J.
for coll in alltoall gather scatter sendrecv; do
  n=3 bytes=262140 count=21845 root=-1 factor=0.6667 args=(-r 0)
  case $coll in
  gather | scatter) root=1 args=(-r 1) ;;
  sendrecv) n=2 bytes=262144 count=65536 factor=1.0000 ;;
  esac
  json=$(mktemp)
  check "tally-perf -N $n $coll" 0 "$bin/tally-perf" "$coll" -N $n -b 8 -e 256K -f 8 -n 2 -w 1 -c 1 "${args[@]}" -J "$json"
  expect_text "$coll table" "^ +$bytes +$count +float +none +$root( +[0-9.]+){3} +0( +[0-9.]+){3} +0$"
  expect_text "$coll no wrong values" "Out of bounds values : 0 OK"
  if [ $coll = sendrecv ]; then
    expect_text "sendrecv times one way" "ranks 0 and 1 ping-pong.*one way"
  else
    expect_text "$coll skips 8 B" "^# 8 B skipped: less than one float element per rank$"
  fi
  got=$(grep -o '"algbw": [0-9.]*, "busbw": [0-9.]*' "$json" | tail -1 | awk '{printf "%.4f", $4 / $2}')
  [ "$got" = $factor ] || { echo "FAIL $coll busbw/algbw: $got, expected $factor"; fail=1; }
  rm -f "$json"
done
if [ "$(nproc)" -ge 2 ]; then
  check "core-pingpong" 0 "$bin/core-pingpong"
  expect_text "core-pingpong round trip" "^CPU 0 <-> CPU 1: [0-9]+ ns a round trip"
else
  echo "SKIPPED: core-pingpong needs 2 CPUs, this machine has $(nproc)"
fi
check "core-pingpong on a CPU that is not there" 1 "$bin/core-pingpong" 0 1000
expect_text "core-pingpong names the CPU" "cannot run on CPU 1000"
check "core-pingpong on one CPU" 2 "$bin/core-pingpong" 1 1
expect_text "core-pingpong usage" "two different CPU numbers"
check "tally-perf sendrecv -N 1" 2 "$bin/tally-perf" sendrecv -N 1
expect_text "sendrecv rank message" "sendrecv ping-pongs between ranks 0 and 1: give -N 2 or more"
check "tally-perf scatter -r 7 -N 3" 2 "$bin/tally-perf" scatter -N 3 -r 7
expect_text "scatter root message" "r 7 is not a rank of a 3-rank job"
check "tally-perf sendrecv --sweep" 2 "$bin/tally-perf" sendrecv --sweep -N 2
expect_text "sendrecv sweep message" "sweep compares the library's algorithms; sendrecv has none"
check "tally-perf sendrecv --gpu" 2 "$bin/tally-perf" sendrecv --gpu -N 2
expect_text "sendrecv gpu message" "gpu: tally-perf runs sendrecv on host memory only"
json=$(mktemp)
check "tally-perf -J" 0 "$bin/tally-perf" allreduce -N 2 -b 8 -e 64 -n 2 -w 1 -J "$json"
grep -q '"busbw"' "$json" || { echo "FAIL -J: no busbw in $json"; fail=1; }
rm -f "$json"
check "tally-perf --soak -N 4" 0 "$bin/tally-perf" --soak 3 -N 4
expect_text "soak counts operations" "^# +operations +[1-9][0-9]* "
expect_text "soak finds no wrong results" "^# +wrong results +0$"
expect_text "soak prints its seed" "seed 1"
expect_text "soak splits the communicator" "^# +splits +[1-9][0-9]* \\(split off and destroyed; [1-9][0-9]* of rank 0's operations"
json=$(mktemp)
check "tally-perf --soak under tally-run" 0 "$bin/tally-run" -n 3 "$bin/tally-perf" --soak 2 --seed 7 -J "$json"
expect_text "soak ran 3 ranks" "soak: 3 ranks, 2 s, seed 7"
grep -q '"mode": "soak"' "$json" && grep -q '"wrong": 0,' "$json" && grep -q '"splits": [1-9]' "$json" || { echo "FAIL soak -J: $(cat "$json")"; fail=1; }
rm -f "$json"
check "tally-perf --soak needs seconds" 2 "$bin/tally-perf" --soak ten
expect_text "soak message" "soak needs a positive number of seconds, not 'ten'"
check "tally-perf --soak 0 is refused" 2 "$bin/tally-perf" --soak 0
check "tally-perf --soak with a collective" 2 "$bin/tally-perf" allreduce --soak 1
expect_text "soak collective message" "drop 'allreduce'"
check "tally-perf --gpu with --sweep" 2 "$bin/tally-perf" allreduce --gpu --sweep
expect_text "gpu sweep message" "gpu measures the size range only"
# --gpu: with a GPU, checked results; without one (or without CUDA in the build), a line saying so.
for coll in allreduce alltoall gather scatter; do
  out=$(timeout 120 "$bin/tally-perf" $coll --gpu -N 2 -b 8 -e 64K -r 1 2>&1)
  status=$?
  if [ $status = 0 ]; then
    expect_text "tally-perf $coll --gpu results" "Out of bounds values : 0 OK"
    expect_text "tally-perf $coll --gpu copy limit" "device-to-device cudaMemcpy of 65536 bytes"
  else
    # 77 (skipped) without a GPU, 2 (refused) in a build without CUDA
    if { [ $status = 77 ] && grep -q "no CUDA device: skipped" <<<"$out"; } ||
       { [ $status = 2 ] && grep -q "no CUDA support" <<<"$out"; }; then
      echo "ok   tally-perf $coll --gpu: no GPU here, and it says so"
    else
      echo "FAIL tally-perf $coll --gpu without a GPU: exit $status, or it does not say why"; echo "$out" | tail -20; fail=1
    fi
  fi
done
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
# --compress across two fake hosts (TALLY_HOSTID per rank): every result still checked
check "tally-perf --compress bf16 across hosts" 0 "$bin/tally-run" -n 4 sh -c \
  'TALLY_HOSTID=host$((TALLY_RANK / 2)) TALLY_COMPRESS_MIN_BYTES=0 exec "$0" allreduce -b 8 -e 1M -f 16 -n 2 -w 1 -c 1 -o avg --compress bf16' \
  "$bin/tally-perf"
check "tally-perf --compress with an unknown format" 2 "$bin/tally-perf" allreduce --compress zip
TALLY_TIMEOUT=never check "bad TALLY_TIMEOUT is refused" 1 "$bin/tally-perf" allreduce -N 2 -b 8 -e 8
expect_text "TALLY_TIMEOUT message" "TALLY_TIMEOUT"
TALLY_SOCKET_IFNAME=nosuchif0 check "unknown interface is refused" 1 "$bin/tally-perf" allreduce -N 2 -b 8 -e 8
expect_text "interface list" "interfaces here: .*lo"
TALLY_DEBUG=INFO TALLY_DEBUG_SUBSYS=TUNE check "tally-perf -a rhd" 0 "$bin/tally-perf" allreduce -N 3 -a allreduce:rhd -b 8 -e 1M -n 2 -w 1
expect_text "TUNE logs each choice" "allreduce #[0-9]+, 1048576 bytes per rank on 3 ranks: rhd \\(TALLY_ALGO[;)]"
check "tally-perf -a with an unknown algorithm" 1 "$bin/tally-perf" allreduce -N 2 -a treee -b 8 -e 8
expect_text "TALLY_ALGO message lists the algorithms" "TALLY_ALGO.*treee.*ring"
# --sweep: a row per size with each algorithm's time ("-" where the library would run the ring
# instead: board past its small sizes, hier on one host), the fastest and the tuner's choice.
json=$(mktemp)
check "tally-perf --sweep -N 3" 0 "$bin/tally-perf" allreduce --sweep -N 3 -b 8 -e 1M -f 131072 -n 2 -w 1 --repeat 2 -J "$json"
expect_text "sweep columns" "size \\(B\\) +ring +tree +rhd +hier +board +shared +best +choice +predicted +measured +choice/best"
expect_text "sweep row at 8 B" "^ +8 +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +[0-9.]+ +[0-9.]+ +[a-z]+ +(ring|tree|rhd|board|shared) "
expect_text "sweep row at 1 MiB, board cannot run it" "^ +1048576 +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +[0-9.]+ +[a-z]+ +(ring|tree|rhd|shared) "
expect_text "sweep model table" "^ +1048576 +ring +([0-9.]+|-) +[0-9.]+ +([0-9.]+|-)$"
expect_text "sweep tuner summary" "^# Tuner's worst size \\([0-9]+ B\\), its choice over the best: .* = [0-9.]+$"
expect_text "sweep smallest size summary" "^# Smallest size \\(8 B\\), the better of tree and rhd over the ring: .* = [0-9.]+$"
expect_text "sweep largest size summary" "^# Largest size \\(1048576 B\\), the ring over the best other: .* = [0-9.]+$"
expect_text "sweep checks results" "Out of bounds values : 0 OK"
grep -q '"mode": "sweep"' "$json" && grep -q '"choice": "' "$json" && grep -q '"hier": null' "$json" ||
  { echo "FAIL sweep -J: $(cat "$json")"; fail=1; }
rm -f "$json"
check "tally-perf --sweep under tally-run" 0 "$bin/tally-run" -n 4 "$bin/tally-perf" broadcast --sweep -b 64 -e 128 -n 2 -w 1 --repeat 1 -r 1
expect_text "sweep skips what the library refuses" "^# Not run: rhd, hier: TALLY_ALGO leaves broadcast only algorithms"
expect_text "sweep broadcast rows" "^ +128 +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +(ring|tree|board|shared) +(ring|tree|board|shared) "
# Alltoall's algorithms are pairwise, bruck, hier, board and shared (hier needs two hosts: '-' on
# one; the board takes inputs of up to 16 KiB a rank: '-' at 64 KiB); gather's and scatter's direct
# and binomial.
json=$(mktemp)
check "tally-perf alltoall --sweep -N 3" 0 "$bin/tally-perf" alltoall --sweep -N 3 -b 64 -e 64K -f 1024 -n 2 -w 1 --repeat 2 -J "$json"
expect_text "alltoall sweep columns" "size \\(B\\) +pairwise +bruck +hier +board +shared +best +choice +predicted +measured +choice/best"
expect_text "alltoall sweep row at 64 KiB" "^ +65532 +[0-9.]+ +[0-9.]+ +- +- +[0-9.]+ +(pairwise|bruck|shared) +(pairwise|bruck|shared) "
expect_text "alltoall sweep model table" "^ +65532 +bruck +([0-9.]+|-) +[0-9.]+ +([0-9.]+|-)$"
expect_text "alltoall sweep smallest summary" "^# Smallest size \\([0-9]+ B\\), bruck over pairwise: .* = [0-9.]+$"
expect_text "alltoall sweep largest summary" "^# Largest size \\(65532 B\\), pairwise over the best other: .* = [0-9.]+$"
expect_text "alltoall sweep checks results" "Out of bounds values : 0 OK"
grep -q '"collective": "alltoall"' "$json" && grep -q '"hier": null' "$json" && grep -q '"smallest_bruck_over_pairwise"' "$json" ||
  { echo "FAIL alltoall sweep -J: $(cat "$json")"; fail=1; }
rm -f "$json"
check "tally-perf alltoall --sweep, two hosts" 0 "$bin/tally-run" -n 4 sh -c 'TALLY_HOSTID=h$((TALLY_RANK / 2)) exec "$0" alltoall --sweep -b 64 -e 64 -n 2 -w 1 --repeat 1' "$bin/tally-perf"
expect_text "alltoall sweep runs hier across hosts" "^ +64 +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +(pairwise|bruck|hier) +(pairwise|bruck|hier) "
for coll in gather scatter; do
  check "tally-perf $coll --sweep -N 3" 0 "$bin/tally-perf" $coll --sweep -N 3 -r 2 -b 1K -e 1M -f 1024 -n 2 -w 1 --repeat 1
  expect_text "$coll sweep columns" "size \\(B\\) +direct +binomial +best +choice"
  expect_text "$coll sweep row" "^ +1048572 +[0-9.]+ +[0-9.]+ +(direct|binomial) +(direct|binomial) "
  expect_text "$coll sweep summary" "^# Smallest size \\(1020 B\\), binomial over direct: .* = [0-9.]+$"
  expect_text "$coll sweep checks results" "Out of bounds values : 0 OK"
done
TALLY_ALGO=ring check "tally-perf --sweep replaces TALLY_ALGO" 0 "$bin/tally-perf" reducescatter --sweep -N 2 -b 1K -e 1K -n 2 -w 1 --repeat 1
expect_text "sweep says TALLY_ALGO is replaced" "TALLY_ALGO=ring from the environment is not used"
check "tally-perf --repeat 0" 2 "$bin/tally-perf" allreduce --sweep --repeat 0
expect_text "repeat message" "tally-perf: --repeat needs an integer from 1 to 100, not '0'"
check "tally-perf --repeat without --sweep" 2 "$bin/tally-perf" allreduce --repeat 3
expect_text "repeat needs sweep message" "tally-perf: --repeat only applies to --sweep"
check "tally-perf --sweep with a value" 2 "$bin/tally-perf" allreduce --sweep=tree
expect_text "sweep value message" "option '--sweep=tree' takes no value"
check "tally-perf --sweep with -a" 2 "$bin/tally-perf" allreduce --sweep -a tree
expect_text "sweep -a message" "tally-perf: --sweep forces each algorithm in turn itself: drop -a"
check "tally-perf --sweep with --soak" 2 "$bin/tally-perf" --soak 1 --sweep
expect_text "sweep soak message" "tally-perf: --sweep and --soak are different runs"
exit $fail
