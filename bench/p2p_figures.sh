#!/usr/bin/env bash
# The point-to-point, alltoall, gather and scatter figures of the README, in one run, side by side
# with Open MPI's (../shared/anchors): each figure the median of REPEAT runs (default 5), Tally and
# the anchor taking turns.
#   sendrecv 2 ranks: 8-byte one-way time, 4 MiB busbw
#   alltoall 8 ranks: 8 bytes per peer, pairwise against Bruck against the tuner's choice and
#                     Open MPI; busbw at 64 KiB, 1 MiB and 16 MiB (the whole receive buffer), the
#                     tuner's choice against forced pairwise and Open MPI, and tally / mpi
#   alltoall and allreduce, 4 ranks over TCP: busbw at 1 MiB and 16 MiB
#   gather and scatter 8 ranks: direct against binomial
# usage: bench/p2p_figures.sh [BUILD [REPEAT [PART]]]   (run from the repository root after a build)
#   PART: all (default), or alltoall for the 8-rank alltoall rows alone
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
perf=${1:-$root/build}/tally-perf
repeat=${2:-5}
part=${3:-all}
case "$part" in all | alltoall) ;; *) echo "p2p_figures.sh: PART is all or alltoall, not '$part'" >&2; exit 2 ;; esac
anchor=${ANCHORS:-$root/../shared/anchors}/run.sh
[ -x "$perf" ] || { echo "p2p_figures.sh: $perf is missing; build first" >&2; exit 2; }
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
pick() { awk -v k="$1" -v s="${2:-}" '$1==k && (s=="" || $2==s) {print $NF}' "$raw/$3" | median; }

for _ in $(seq "$repeat"); do
  for algo in pairwise bruck auto; do
    TALLY_ALGO=alltoall:$algo "$perf" alltoall -N 8 -b 64 -e 64 -n 200 -w 20 | awk -v a=$algo '$1==64 {print a, $6}' \
      >>"$raw/a2a8"
  done
  "$anchor" mpi 8 64 64 200 alltoall 2>/dev/null | awk '$1==64 {print "mpi", $5}' >>"$raw/a2a8"
  for algo in auto pairwise; do
    TALLY_ALGO=alltoall:$algo "$perf" alltoall -N 8 -b 65536 -e 16777216 -f 16 -n 50 -w 5 |
      awk -v a=$algo '$1 ~ /^[0-9]+$/ {print a, $1, $8}' >>"$raw/a2a"
  done
  "$anchor" mpi 8 65536 16777216 50 alltoall 2>/dev/null | awk '$1 ~ /^[0-9]+$/ {print "mpi", $1, $7}' >>"$raw/a2a"
  [ "$part" = all ] || continue
  "$perf" sendrecv -N 2 -b 8 -e 8 -n 20000 -w 200 | awk '$1==8 {print "tally", $6}' >>"$raw/sr8"
  "$anchor" mpi 2 8 8 20000 sendrecv 2>/dev/null | awk '$1==8 {print "mpi", $5}' >>"$raw/sr8"
  "$perf" sendrecv -N 2 -b 4M -e 4M -n 50 -w 5 | awk '$1==4194304 {print "tally", $8}' >>"$raw/sr4m"
  "$anchor" mpi 2 4194304 4194304 50 sendrecv 2>/dev/null | awk '$1==4194304 {print "mpi", $7}' >>"$raw/sr4m"
  for coll in alltoall allreduce; do
    TALLY_TRANSPORT=tcp "$perf" $coll -N 4 -b 1M -e 16M -f 16 -n 10 -w 2 |
      awk -v c=$coll '$1 ~ /^[0-9]+$/ {print c, $1, $8}' >>"$raw/tcp"
  done
  for algo in direct binomial; do
    for coll in gather scatter; do
      TALLY_ALGO="$coll:$algo" "$perf" $coll -N 8 -b 64 -e 16M -f 64 -n 50 -w 5 |
        awk -v k="$coll-$algo" '$1 ~ /^[0-9]+$/ {print k, $1, $6}' >>"$raw/rooted"
    done
  done
done

echo "# medians of $repeat runs; times in us, busbw in GB/s"
echo "alltoall 8 ranks, 8 B per peer: pairwise $(pick pairwise '' a2a8) bruck $(pick bruck '' a2a8)" \
  "tuner $(pick auto '' a2a8) mpi $(pick mpi '' a2a8)"
for s in 65536 1048576 16777216; do
  tally=$(pick auto $s a2a) mpi=$(pick mpi $s a2a)
  echo "alltoall 8 ranks, $s B busbw: tally $tally (pairwise $(pick pairwise $s a2a)) mpi $mpi" \
    "tally/mpi $(awk -v t="$tally" -v m="$mpi" 'BEGIN {printf "%.2f", (m > 0 ? t / m : 0)}')"
done
[ "$part" = all ] || exit 0
echo "sendrecv 2 ranks, 8 B one-way: tally $(pick tally '' sr8) mpi $(pick mpi '' sr8)"
echo "sendrecv 2 ranks, 4 MiB busbw: tally $(pick tally '' sr4m) mpi $(pick mpi '' sr4m)"
for s in 1048576 16777216; do
  echo "TCP 4 ranks, $s B busbw: alltoall $(pick alltoall $s tcp) allreduce $(pick allreduce $s tcp)"
done
for coll in gather scatter; do
  for s in 64 4096 262144 16777216; do
    echo "$coll 8 ranks, $s B: direct $(pick $coll-direct $s rooted) binomial $(pick $coll-binomial $s rooted)"
  done
done
