#!/usr/bin/env bash
# Allreduce over verbs against allreduce over TCP, 2 ranks, in the same machine and run, with
# ib_write_bw's bandwidth as the RDMA device's own limit. Meant for the Soft-RoCE VM, where
# emulation makes absolute numbers meaningless and the ratios are what count:
#   tests/rdma-vm/run.sh bash ../bench/verbs_vm.sh [MINBYTES MAXBYTES REPEAT]
# (run.sh starts commands in the build directory). Prints medians of REPEAT runs per size.
set -euo pipefail
minb=${1:-8}; maxb=${2:-16777216}; repeat=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
perf=${TALLY_PERF:-$root/build/tally-perf}
ip=$(ip -4 -o addr show | awk '$2 != "lo" {sub(/\/.*/, "", $4); print $4; exit}')
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT

# the device's limit: one-way RDMA WRITE bandwidth at 1 MiB messages between two processes
# (perftest's MB/sec are MiB/s; tally-perf's busbw is GB/s; -n, because with -D the emulated
# device reports 0 iterations)
for i in $(seq "$repeat"); do
  ib_write_bw -d rxe0 -s 1048576 -n 200 -F >/dev/null 2>&1 &
  sleep 1
  ib_write_bw -d rxe0 -s 1048576 -n 200 -F "$ip" 2>/dev/null | awk '$1 == 1048576 {print $4}' >>"$raw/ib"
  wait || true
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
ib_mbs=$(median <"$raw/ib")

for i in $(seq "$repeat"); do
  for t in verbs tcp; do
    TALLY_TRANSPORT=$t "$perf" allreduce -N 2 -b "$minb" -e "$maxb" -f 4 -n 10 -w 2 |
      awk '/^ +[0-9]/ {print $1, $6}' >>"$raw/$t"
  done
done
printf "# allreduce float sum, 2 ranks, medians of %d runs; ib_write_bw 1 MiB: %.1f MB/s\n" "$repeat" "$ib_mbs"
printf "%12s %10s %10s %10s %10s %8s %12s\n" bytes verbs_us tcp_us verbs_bus tcp_bus v/tcp verbs/ib_bw
# busbw from the median time (tally-perf prints it with two decimals only): with 2 ranks it equals
# algbw, bytes / time
for size in $(awk '{print $1}' "$raw/verbs" | sort -n -u); do
  vu=$(awk -v s="$size" '$1==s {print $2}' "$raw/verbs" | median)
  tu=$(awk -v s="$size" '$1==s {print $2}' "$raw/tcp" | median)
  awk -v s="$size" -v vu="$vu" -v tu="$tu" -v ib="$ib_mbs" 'BEGIN {
    vb = s / (vu * 1000); tb = s / (tu * 1000)
    printf "%12d %10.1f %10.1f %10.4f %10.4f %8.2f %12.2f\n", s, vu, tu, vb, tb, vb / tb, vb * 1e9 / (ib * 1048576) }'
done
