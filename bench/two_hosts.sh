#!/usr/bin/env bash
# Two emulated hosts on one machine: network namespaces joined by a veth pair, so that traffic
# between the "hosts" crosses a real, separate network stack (and, shaped with tc tbf, a link of a
# chosen speed), while the two ranks of each host talk within it. Needs root (ip netns).
#
#   bench/two_hosts.sh BUILD check        every result of allreduce, allgather, reduce-scatter,
#                                         broadcast and reduce checked, flat ring and hierarchical
#   bench/two_hosts.sh BUILD bench [RATE [COLL]]  COLL's busbw (default allreduce), flat ring
#                                         against hierarchical, over a link shaped to RATE
#                                         (default 1gbit), medians of 3 runs
# Exit status 77: namespaces cannot be made here (the test is then skipped, and says why).
set -euo pipefail
build=${1:?usage: two_hosts.sh BUILD check|bench [RATE]}
mode=${2:-check}
rate=${3:-1gbit}
coll=${4:-allreduce}
perf="$build/tally-perf"
[ -x "$perf" ] || { echo "two_hosts: $perf is missing; build first" >&2; exit 2; }

tag=$$
ns=(tally-h1-$tag tally-h2-$tag)
addr=(10.77.0.1 10.77.0.2)
cleanup() { for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null || true; done; }
trap cleanup EXIT
if ! ip netns add "${ns[0]}" 2>/tmp/two_hosts.$tag || ! ip netns add "${ns[1]}" 2>>/tmp/two_hosts.$tag; then
  echo "SKIPPED: cannot create network namespaces ($(cat /tmp/two_hosts.$tag)); run as root with iproute2" >&2
  rm -f /tmp/two_hosts.$tag
  exit 77
fi
rm -f /tmp/two_hosts.$tag
ip link add "v1-$tag" netns "${ns[0]}" type veth peer name "v2-$tag" netns "${ns[1]}"
for i in 0 1; do
  dev=v$((i + 1))-$tag
  ip -n "${ns[$i]}" link set lo up
  ip -n "${ns[$i]}" addr add "${addr[$i]}/24" dev "$dev"
  ip -n "${ns[$i]}" link set "$dev" up
  [ "$mode" = bench ] && tc -n "${ns[$i]}" qdisc add dev "$dev" root tbf rate "$rate" burst 256kb latency 100ms
done

secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Runs tally-perf ARGS on 4 ranks, 2 per host; prints rank 0's output; fails if any rank failed.
run_job() {
  local port=$((20000 + RANDOM % 20000)) pids=() status=0 out
  out=$(mktemp)
  for rank in 0 1 2 3; do
    local host=$((rank / 2))
    ip netns exec "${ns[$host]}" env TALLY_RANK=$rank TALLY_SIZE=4 TALLY_ROOT="${addr[0]}:$port" \
      TALLY_SECRET="$secret" TALLY_HOSTID="${ns[$host]}" TALLY_TIMEOUT=120 "$perf" "$@" \
      >"$out.$rank" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  cat "$out.0"
  [ $status -eq 0 ] || { echo "two_hosts: a rank failed:" >&2; cat "$out".[123] >&2; }
  rm -f "$out" "$out".*
  return $status
}

if [ "$mode" = check ]; then
  fail=0
  for algo in ring hier; do
    for coll in allreduce allgather reducescatter broadcast reduce; do
      if TALLY_ALGO=$algo run_job "$coll" -b 8 -e 4M -f 8 -n 2 -w 1 -c 1 >/tmp/two_hosts.out.$tag; then
        echo "ok   $coll ($algo) across two emulated hosts"
      else
        echo "FAIL $coll ($algo) across two emulated hosts"; cat /tmp/two_hosts.out.$tag; fail=1
      fi
    done
  done
  rm -f /tmp/two_hosts.out.$tag
  exit $fail
fi

# bench: the out-of-place busbw column of each size, median of 3 runs, ring and hierarchical.
echo "# $coll float sum, 2 emulated hosts x 2 ranks, veth shaped to $rate with tc tbf; busbw GB/s, median of 3"
printf '%12s %10s %10s %8s\n' bytes ring hier hier/ring
declare -A runs
for algo in ring hier; do
  for i in 1 2 3; do
    TALLY_ALGO=$algo run_job "$coll" -b 1M -e 64M -f 4 -n 5 -w 2 -c 0 |
      awk -v a=$algo -v i=$i '$1 ~ /^[0-9]+$/ {print a, i, $1, $8}' >>/tmp/two_hosts.bench.$tag
  done
done
for bytes in $(awk '{print $3}' /tmp/two_hosts.bench.$tag | sort -n -u); do
  ring=$(awk -v b="$bytes" '$1 == "ring" && $3 == b {print $4}' /tmp/two_hosts.bench.$tag | sort -g | sed -n 2p)
  hier=$(awk -v b="$bytes" '$1 == "hier" && $3 == b {print $4}' /tmp/two_hosts.bench.$tag | sort -g | sed -n 2p)
  printf '%12s %10s %10s %8.2f\n' "$bytes" "$ring" "$hier" "$(echo "$hier / $ring" | bc -l)"
done
rm -f /tmp/two_hosts.bench.$tag
