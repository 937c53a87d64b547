#!/usr/bin/env bash
# Side-by-side comparison of one collective in one run: tally-perf against an anchor from
# ../shared/anchors, each run REPEAT times, medians per size and the ratios; plus one-stream
# loopback TCP throughput from iperf3 as the physical reference.
# usage: [ANCHOR=gloo|mpi] [TRANSPORT=tcp|auto|shm] [COLL=allreduce] bench/compare.sh NRANKS [MINBYTES MAXBYTES REPEAT]
#   ANCHOR=gloo (default): Gloo's ring allreduce over TCP loopback; compare with TRANSPORT=tcp (default).
#   ANCHOR=mpi: Open MPI, which uses shared memory on one host; compare with TRANSPORT=auto. COLL is
#   any collective of tally-perf that the MPI anchor has: allreduce, allgather, reducescatter,
#   broadcast, reduce, alltoall, sendrecv.
# Run from the repository root after a build.
set -euo pipefail
n=${1:-2}; minb=${2:-8}; maxb=${3:-67108864}; repeat=${4:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
anchor=${ANCHOR:-gloo}
transport=${TRANSPORT:-tcp}
coll=${COLL:-allreduce}
case "$anchor:$coll" in
  gloo:allreduce | mpi:allreduce | mpi:allgather | mpi:reducescatter | mpi:reduce | mpi:alltoall | mpi:sendrecv)
    anchor_coll=$coll ;;
  mpi:broadcast) anchor_coll=bcast ;;
  *) echo "compare.sh: the $anchor anchor has no $coll" >&2; exit 2 ;;
esac
anchors=${ANCHORS:-$root/../shared/anchors}
perf=${TALLY_PERF:-$root/build/tally-perf}
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT
for i in $(seq "$repeat"); do
  # columns kept: size, time(us), busbw (out-of-place)
  TALLY_TRANSPORT=$transport "$perf" "$coll" -N "$n" -b "$minb" -e "$maxb" -n 20 -w 3 |
    awk '/^ +[0-9]/ {print $1, $6, $8}' >>"$raw/tally"
  "$anchors/run.sh" "$anchor" "$n" "$minb" "$maxb" 20 "$anchor_coll" 2>/dev/null |
    awk '/^ +[0-9]/ {print $1, $5, $7}' >>"$raw/anchor"
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
printf "# %s float, %d ranks, medians of %d runs: tally (TALLY_TRANSPORT=%s) vs %s\n" "$coll" "$n" "$repeat" \
  "$transport" "$anchor"
printf "%12s %12s %12s %8s %10s %10s %8s\n" bytes tally_us "${anchor}_us" ratio tally_bus "${anchor}_bus" ratio
for size in $(awk '{print $1}' "$raw/tally" | sort -n -u); do
  tu=$(awk -v s="$size" '$1==s {print $2}' "$raw/tally" | median)
  gu=$(awk -v s="$size" '$1==s {print $2}' "$raw/anchor" | median)
  tb=$(awk -v s="$size" '$1==s {print $3}' "$raw/tally" | median)
  gb=$(awk -v s="$size" '$1==s {print $3}' "$raw/anchor" | median)
  awk -v s="$size" -v tu="$tu" -v gu="$gu" -v tb="$tb" -v gb="$gb" 'BEGIN {
    printf "%12d %12.1f %12.1f %8.2f %10.3f %10.3f %8.2f\n", s, tu, gu, (gu > 0 ? tu / gu : 0), tb, gb, (gb > 0 ? tb / gb : 0) }'
done
if command -v iperf3 >/dev/null; then
  iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
  sleep 0.5
  gbps=$(iperf3 -c 127.0.0.1 -p 5299 -t 3 -f g 2>/dev/null | awk '/receiver/ {print $(NF-2)}')
  wait || true
  awk -v g="$gbps" 'BEGIN { printf "# one-stream loopback TCP (iperf3): %.2f GB/s\n", g / 8 }'
fi
