#!/usr/bin/env bash
# H emulated hosts on one machine, R ranks each: one network namespace per host, each with a veth
# ("eth0", 10.77.0.i/24) whose other end is a port of a bridge in a namespace of its own (the
# "switch"), so traffic between hosts crosses real, separate network stacks and a switch, while
# the ranks of a host talk within it. Each host's link is shaped with tc tbf in both directions
# (egress of the host's eth0: host to switch; egress of the switch port: switch to host), like a
# switch port of the given rate. Rank r runs on host r / R with TALLY_HOSTID naming its host, so
# Tally sees H hosts. Nothing is added to or changed in the root namespace, and everything
# (ranks, namespaces, links, bridge) is removed on exit, failure or interrupt. Needs root.
#
#   bench/hosts.sh [--rate RATE] BUILD H R check [ALGO...]
#       every result of allreduce, allgather, reduce-scatter, broadcast, reduce and alltoall
#       checked, with TALLY_ALGO set to each ALGO in turn; default: ring, hier (on its own, the
#       tuner's free choice) and the hierarchical algorithm forced where it exists (HIER_ONLY below)
#   bench/hosts.sh [--rate RATE] BUILD H R bench [COLL]
#       COLL's busbw (default allreduce), flat (TALLY_ALGO=ring; for alltoall alltoall:pairwise)
#       against hierarchical (TALLY_ALGO=COLL:hier), 1 MiB to 64 MiB, medians of 3 runs
#   bench/hosts.sh [--rate RATE] BUILD H R run -- TALLY-PERF-ARGS...
#       BUILD/tally-perf TALLY-PERF-ARGS on all H*R ranks; prints rank 0's output, fails if any
#       rank fails (and prints the failing ranks' output)
#
#   --rate RATE   each host link's rate in tc's units (1gbit, 100mbit, 10gbit...; default 1gbit,
#                 tbf burst 128kb: smaller buckets lose throughput at 1gbit, larger ones let a
#                 short burst through at the veth's speed); off leaves the links unshaped
#   --stats       after the job(s), each host link's bytes and packets sent and dropped in each
#                 direction (tc -s), on stderr: to see what crossed the links
#   HOSTS_PROGRAM=PATH in the environment runs PATH instead of BUILD/tally-perf in run mode (for
#                 example /usr/bin/python3 with a script of examples/ as the first argument)
#   H >= 2 hosts (at most 250), R >= 1 ranks per host. TALLY_* variables in the environment
#   (TALLY_ALGO, TALLY_DEBUG...) reach every rank; TALLY_TIMEOUT defaults to 120 here.
#
# Example: bench/hosts.sh build 4 2 run -- allreduce -b 8 -e 16M -f 8 -c 1
# Exit status: 0 success, 1 a rank failed or a result was wrong, 2 bad usage, 77 the emulated
# network cannot be made here (no root, no netns, veth, bridge or tbf; "SKIPPED: reason" on
# stderr, and ctest counts the test skipped). A run killed with SIGKILL leaves its namespaces
# behind: `ip netns list | grep tally-` shows them, `ip netns del NAME` removes them.
set -euo pipefail

usage() {
  sed -n '/^#   bench\/hosts.sh/,/TALLY_TIMEOUT defaults/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
rate=1gbit stats=0
while [ $# -gt 0 ]; do
  case $1 in
  --rate) [ $# -ge 2 ] || usage; rate=$2; shift 2 ;;
  --rate=*) rate=${1#--rate=}; shift ;;
  --stats) stats=1; shift ;;
  -h | --help) usage ;;
  *) break ;;
  esac
done
[ $# -ge 4 ] || usage
build=$1 nhosts=$2 per_host=$3 mode=$4
shift 4
[[ $nhosts =~ ^[0-9]+$ ]] && [ "$nhosts" -ge 2 ] && [ "$nhosts" -le 250 ] ||
  { echo "hosts.sh: H must be a number from 2 to 250, not '$nhosts'" >&2; exit 2; }
[[ $per_host =~ ^[0-9]+$ ]] && [ "$per_host" -ge 1 ] ||
  { echo "hosts.sh: R must be a number of ranks per host, 1 or more, not '$per_host'" >&2; exit 2; }
case $mode in
check | bench) ;;
run) [ "${1:-}" = -- ] && shift; [ $# -ge 1 ] || { echo "hosts.sh: run needs -- TALLY-PERF-ARGS" >&2; exit 2; } ;;
*) echo "hosts.sh: unknown mode '$mode'" >&2; usage ;;
esac
case $rate in off | none | 0) rate=off ;; esac
shopt -s nocasematch
[ "$rate" = off ] || [[ $rate =~ ^[0-9]+(\.[0-9]+)?([kmgt]i?)?(bit|bps)$ ]] ||
  { echo "hosts.sh: --rate wants a rate in tc's units (1gbit, 500mbit, 10gbit) or off, not '$rate'" >&2; exit 2; }
shopt -u nocasematch
perf="${HOSTS_PROGRAM:-$build/tally-perf}"
[ -x "$perf" ] || { echo "hosts.sh: $perf is missing; build first" >&2; exit 2; }
nranks=$((nhosts * per_host))

# ---- the emulated network ------------------------------------------------------------------
tag=$$
sw=tally-sw-$tag
hosts=() addr=()
for ((i = 1; i <= nhosts; i++)); do hosts+=("tally-h$i-$tag"); addr+=("10.77.0.$i"); done
tmp=$(mktemp -d /tmp/tally-hosts.XXXXXX)
made=()  # namespaces created so far, the only ones cleanup deletes
pids=()  # ranks of the job in flight

# Each host link's counters from tc -s: bytes and packets sent, dropped, each direction.
link_stats() {
  local i
  [ "$rate" != off ] || { echo "hosts.sh: --stats needs shaped links (tc counts in tbf)" >&2; return; }
  echo "# hosts.sh: link counters (tc -s; up: host to switch, down: switch to host)" >&2
  for ((i = 0; i < nhosts; i++)); do
    printf '#   host %-3d %-11s   up: %s\n#   %-21s down: %s\n' $((i + 1)) "${addr[$i]}" \
      "$(tc -s -n "${hosts[$i]}" qdisc show dev eth0 | sed -n 's/^ *Sent \(.*\))/\1)/p')" "" \
      "$(tc -s -n "$sw" qdisc show dev "p$((i + 1))" | sed -n 's/^ *Sent \(.*\))/\1)/p')" >&2
  done
}

cleanup() {
  local p n
  trap '' INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # Anything still inside our namespaces was started by this script (ranks, their children).
  for n in "${made[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Deleting a namespace destroys its devices: the veths (both ends go together) and the bridge.
  for n in "${made[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

skip() { # REASON [HINT]: the network cannot be made here
  echo "SKIPPED: $1 ($(tr '\n' ' ' <"$tmp/err" | sed 's/ *$//')); ${2:-run as root with iproute2}" >&2
  exit 77
}
for n in "$sw" "${hosts[@]}"; do
  made+=("$n") # before it exists: an interrupt in between must not leave it behind
  ip netns add "$n" 2>"$tmp/err" || skip "cannot create network namespaces"
done
ip -n "$sw" link add br0 type bridge forward_delay 0 stp_state 0 2>"$tmp/err" ||
  skip "cannot create a bridge in a network namespace" "the kernel needs bridge support"
ip -n "$sw" link set br0 up
for ((i = 0; i < nhosts; i++)); do
  h=${hosts[$i]} port=p$((i + 1))
  # Both ends are created directly in their namespaces: no device ever appears in the root one.
  ip link add eth0 netns "$h" type veth peer name "$port" netns "$sw" 2>"$tmp/err" ||
    skip "cannot create veth pairs between network namespaces" "the kernel needs veth support"
  ip -n "$sw" link set "$port" master br0
  ip -n "$sw" link set "$port" up
  ip -n "$h" link set lo up
  ip -n "$h" addr add "${addr[$i]}/24" dev eth0
  ip -n "$h" link set eth0 up
  if [ "$rate" != off ]; then
    # Host to switch on the host's eth0, switch to host on the switch's port.
    tc -n "$h" qdisc add dev eth0 root tbf rate "$rate" burst 128kb latency 100ms 2>"$tmp/err" &&
      tc -n "$sw" qdisc add dev "$port" root tbf rate "$rate" burst 128kb latency 100ms 2>"$tmp/err" ||
      skip "cannot shape links with tc tbf at rate '$rate'" "the kernel needs sch_tbf; --rate off runs unshaped"
  fi
done
[ "$rate" = off ] && shaped="links unshaped" || shaped="links shaped to $rate with tc tbf"
desc="$nhosts emulated hosts x $per_host ranks, $shaped"

# ---- jobs ----------------------------------------------------------------------------------
secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Runs tally-perf ARGS on all ranks, R per host in rank order; prints rank 0's output; fails
# (printing each failed rank's output on stderr) if any rank failed.
run_job() {
  local port=$((20000 + RANDOM % 20000)) status=0 rank host out=$tmp/job failed=()
  pids=()
  for ((rank = 0; rank < nranks; rank++)); do
    host=$((rank / per_host))
    ip netns exec "${hosts[$host]}" env TALLY_RANK=$rank TALLY_SIZE=$nranks \
      TALLY_ROOT="${addr[0]}:$port" TALLY_SECRET="$secret" TALLY_HOSTID="${hosts[$host]}" \
      TALLY_TIMEOUT="${TALLY_TIMEOUT:-120}" "$perf" "$@" >"$out.$rank" 2>&1 &
    pids+=($!)
  done
  for ((rank = 0; rank < nranks; rank++)); do
    wait "${pids[$rank]}" || { status=1; failed+=("$rank"); }
  done
  pids=()
  cat "$out.0"
  for rank in "${failed[@]}"; do
    [ "$rank" = 0 ] && continue
    echo "hosts.sh: rank $rank (host $((rank / per_host + 1))) failed:" >&2
    sed 's/^/  /' "$out.$rank" >&2
  done
  [ $status -eq 0 ] || echo "hosts.sh: ranks failed: ${failed[*]}" >&2
  rm -f "$out".*
  return $status
}

# TALLY_ALGO=hier on its own lets the tuner choose among all algorithms; this forces the
# hierarchical one for the collectives that have it (broadcast and reduce keep the tuner's choice).
HIER_ONLY='allreduce:hier;allgather:hier;reducescatter:hier;alltoall:hier'

case $mode in
run)
  echo "# hosts.sh: $desc" >&2
  status=0
  run_job "$@" || status=$?
  [ "$stats" = 0 ] || link_stats
  exit $status
  ;;

check)
  [ $# -gt 0 ] || set -- ring hier "$HIER_ONLY"
  fail=0
  for algo in "$@"; do
    for coll in allreduce allgather reducescatter broadcast reduce alltoall; do
      if TALLY_ALGO=$algo run_job "$coll" -b 8 -e 4M -f 8 -n 2 -w 1 -c 1 >"$tmp/out" 2>"$tmp/errs"; then
        echo "ok   $coll ($algo) across $desc"
      else
        echo "FAIL $coll ($algo) across $desc"; cat "$tmp/out" "$tmp/errs"; fail=1
      fi
    done
  done
  [ "$stats" = 0 ] || link_stats
  exit $fail
  ;;

bench)
  # The out-of-place busbw column of each size, median of 3 runs, ring and hierarchical.
  coll=${1:-allreduce}
  flat=ring flat_spec=ring
  [ "$coll" != alltoall ] || flat=pairwise flat_spec=alltoall:pairwise
  echo "# $coll float sum, $desc; busbw GB/s, median of 3"
  printf '%12s %10s %10s %8s\n' bytes $flat hier hier/$flat
  for algo in flat hier; do
    spec=$flat_spec
    [ $algo = flat ] || spec="$coll:hier"
    for i in 1 2 3; do
      TALLY_ALGO=$spec run_job "$coll" -b 1M -e 64M -f 4 -n 5 -w 2 -c 0 |
        awk -v a=$algo -v i=$i '$1 ~ /^[0-9]+$/ {print a, i, $1, $8}' >>"$tmp/bench"
    done
  done
  for bytes in $(awk '{print $3}' "$tmp/bench" | sort -n -u); do
    flat_bw=$(awk -v b="$bytes" '$1 == "flat" && $3 == b {print $4}' "$tmp/bench" | sort -g | sed -n 2p)
    hier=$(awk -v b="$bytes" '$1 == "hier" && $3 == b {print $4}' "$tmp/bench" | sort -g | sed -n 2p)
    printf '%12s %10s %10s %8.2f\n' "$bytes" "$flat_bw" "$hier" "$(echo "$hier / $flat_bw" | bc -l)"
  done
  [ "$stats" = 0 ] || link_stats
  ;;
esac
