#!/usr/bin/env bash
# Alltoall over verbs against alltoall over TCP: the pairs an alltoall adds after init are
# connected on first use, on verbs since the RDMA endpoint keeps listening (before, such pairs went
# over TCP, so TCP is the anchor). NRANKS ranks, pairwise exchange, each transport forced, in the
# same machine and run; prints medians of REPEAT runs per size side by side. Meant for the
# Soft-RoCE VM, where emulation makes absolute numbers meaningless and the ratio is what counts,
# or for a real RDMA host:
#   tests/rdma-vm/run.sh bash ../bench/verbs_alltoall_vm.sh [MINBYTES MAXBYTES REPEAT NRANKS]
# (run.sh starts commands in the build directory; TALLY_PERF names another tally-perf).
set -euo pipefail
minb=${1:-1024}; maxb=${2:-16777216}; repeat=${3:-3}; nranks=${4:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
perf=${TALLY_PERF:-$root/build/tally-perf}
[ -x "$perf" ] || perf=./tally-perf
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT

for i in $(seq "$repeat"); do
  for t in verbs tcp; do
    TALLY_TRANSPORT=$t TALLY_ALGO=alltoall:pairwise "$perf" alltoall -N "$nranks" -b "$minb" -e "$maxb" -f 4 -n 10 -w 2 |
      awk '/^ +[0-9]/ {print $1, $6}' >>"$raw/$t"
  done
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
printf "# alltoall (pairwise), %d ranks, every pair beyond the ring connected on first use; medians of %d runs\n" \
  "$nranks" "$repeat"
printf "%12s %10s %10s %10s %10s %8s\n" bytes verbs_us tcp_us verbs_bus tcp_bus v/tcp
# busbw from the median time, as tally-perf computes it for alltoall: bytes / time * (n-1)/n
for size in $(awk '{print $1}' "$raw/verbs" | sort -n -u); do
  vu=$(awk -v s="$size" '$1==s {print $2}' "$raw/verbs" | median)
  tu=$(awk -v s="$size" '$1==s {print $2}' "$raw/tcp" | median)
  awk -v s="$size" -v vu="$vu" -v tu="$tu" -v n="$nranks" 'BEGIN {
    f = (n - 1) / n; vb = s / (vu * 1000) * f; tb = s / (tu * 1000) * f
    printf "%12d %10.1f %10.1f %10.4f %10.4f %8.2f\n", s, vu, tu, vb, tb, vb / tb }'
done
