#!/usr/bin/env bash
# The one-host figures of the README: Tally against Open MPI (../shared/anchors, shared memory) for
# allreduce, allgather, reduce-scatter and broadcast on N = 2, 4 and 8 ranks, every power of two
# from 4 KiB to 64 MiB, float32, busbw medians of REPEAT runs (default 3), the two taking turns;
# the ratio tally/mpi per size, the largest drop of Tally's busbw from one size to the next, and
# what the tuner ran, beside one core's memcpy of as many bytes (perf bench mem memcpy, glibc's
# default) and its own drop: where the caches run out, memcpy falls off a cliff of its own, and
# Tally's drop at that size is the machine's. Then the physical references measured in the same
# run: one core's memcpy bandwidth at 64 MiB and one-stream loopback TCP (iperf3) against Tally
# over TCP on 2 ranks at 64 MiB; and, before and after, the round trip of a cache line between
# CPUs 0 and 1 (core-pingpong): on a VM the host may place the virtual CPUs near each other or
# far apart, and every figure here moves with it.
# usage: bench/onehost_figures.sh [BUILD [REPEAT [RANKS [COLLS]]]]   (from the repository root)
#   RANKS default "2 4 8", COLLS default "allreduce allgather reducescatter broadcast"
#   ITERS (environment, default 20): timed calls a size, the same for both; nccl-tests' default.
#   This VM's copies speed up over the first hundred or so calls of a process (2 ranks, allgather of
#   1 MiB: 1.54x the busbw after 200 warm-up calls than after 3, and plain memcpy ramps alike), so
#   20 calls understate steady state at mid sizes; ITERS=200 measures closer to it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
repeat=${2:-3}
ranks=${3:-2 4 8}
colls=${4:-allreduce allgather reducescatter broadcast}
perf=$build/tally-perf
anchor=${ANCHORS:-$root/../shared/anchors}/run.sh
[ -x "$perf" ] || { echo "onehost_figures.sh: $perf is missing; build first" >&2; exit 2; }
minb=4096 maxb=67108864
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
iters=${ITERS:-20}
pingpong() { [ -x "$build/core-pingpong" ] && "$build/core-pingpong" | sed "s/^/# $1: /" || true; }
pingpong before

# one core's memcpy of every size, medians of REPEAT (GB/s), as "SIZE GBPS" lines
if command -v perf >/dev/null; then
  for ((size = minb; size <= maxb; size *= 2)); do
    bw=$(for _ in $(seq "$repeat"); do
      perf bench mem memcpy -s "$size" -l $((size < 1048576 ? 2000 : 20)) -f default 2>/dev/null |
        awk '/GB\/sec/ {print $1} /MB\/sec/ {print $1 / 1000}'
    done | median)
    echo "$size $bw" >>"$raw/memcpy"
  done
fi

for n in $ranks; do
  for coll in $colls; do
    anchor_coll=$coll; [ "$coll" = broadcast ] && anchor_coll=bcast
    key="$coll-$n"
    # what the tuner runs at each size, from its log of one untimed call per size (logging every
    # timed call would slow the small ones)
    TALLY_DEBUG=INFO TALLY_DEBUG_SUBSYS=TUNE "$perf" "$coll" -N "$n" -b $minb -e $maxb -n 1 -w 0 2>"$raw/log" >/dev/null
    grep -o "[0-9]* bytes per rank on $n ranks: [a-z]*" "$raw/log" | awk '{print $1, $NF}' >>"$raw/$key.algo" || true
    for _ in $(seq "$repeat"); do
      # size, busbw (out of place)
      "$perf" "$coll" -N "$n" -b $minb -e $maxb -n "$iters" -w 3 |
        awk '$1 ~ /^[0-9]+$/ {print $1, $8}' >>"$raw/$key.tally"
      "$anchor" mpi "$n" $minb $maxb "$iters" "$anchor_coll" 2>/dev/null |
        awk '$1 ~ /^[0-9]+$/ {print $1, $7}' >>"$raw/$key.mpi"
    done
    printf "\n# %s float32, %d ranks, busbw GB/s, medians of %d runs\n" "$coll" "$n" "$repeat"
    printf "%10s %9s %9s %7s %8s  %-10s %7s %8s\n" bytes tally mpi ratio drop algorithm memcpy 'its drop'
    prev="" prev_copy=""
    for size in $(awk '{print $1}' "$raw/$key.tally" | sort -n -u); do
      t=$(awk -v s="$size" '$1==s {print $2}' "$raw/$key.tally" | median)
      m=$(awk -v s="$size" '$1==s {print $2}' "$raw/$key.mpi" | median)
      # the bytes per rank the tuner logged: the vector for allreduce and broadcast, a block otherwise
      per_rank=$size
      case $coll in allgather | reducescatter) per_rank=$((size / n)) ;; esac
      algo=$(awk -v s="$per_rank" '$1==s {print $2}' "$raw/$key.algo" | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')
      copy=$(awk -v s="$size" '$1==s {print $2}' "$raw/memcpy" 2>/dev/null)
      awk -v s="$size" -v t="$t" -v m="$m" -v p="$prev" -v a="${algo:--}" -v c="${copy:-0}" -v pc="$prev_copy" 'BEGIN {
        drop = (p != "" && p > 0) ? 1 - t / p : 0
        copy_drop = (pc != "" && pc > 0) ? 1 - c / pc : 0
        printf "%10d %9.3f %9.3f %7.2f %7.0f%%  %-10s %7.1f %7.0f%%\n", s, t, m, (m > 0 ? t / m : 0),
          (drop > 0 ? 100 * drop : 0), a, c, (copy_drop > 0 ? 100 * copy_drop : 0) }'
      prev=$t prev_copy=$copy
    done
  done
done

echo
if [ -s "$raw/memcpy" ]; then # the largest size of the memcpy column, measured before the tables
  bw=$(awk -v s="$maxb" '$1==s {print $2}' "$raw/memcpy")
  echo "# one core's memcpy bandwidth at 64 MiB (perf bench mem memcpy, median of $repeat): $bw GB/s"
fi
if command -v iperf3 >/dev/null; then
  for _ in $(seq "$repeat"); do
    TALLY_TRANSPORT=tcp "$perf" allreduce -N 2 -b $maxb -e $maxb -n 10 -w 2 | awk '$1 ~ /^[0-9]+$/ {print $8}' >>"$raw/tcp"
    iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
    sleep 0.5
    iperf3 -c 127.0.0.1 -p 5299 -t 3 -f g 2>/dev/null | awk '/receiver/ {print $(NF-2) / 8}' >>"$raw/iperf"
    wait || true
    # both directions at once, as a 2-rank allreduce sends (each iperf3 process, one thread, both
    # sends and receives): the mean of the two directions' rates
    iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
    sleep 0.5
    iperf3 -c 127.0.0.1 -p 5299 -t 3 -f g --bidir 2>/dev/null |
      awk '/receiver/ {sum += $(NF-2) / 8; n++} END {if (n) print sum / n}' >>"$raw/iperf-bidir"
    wait || true
  done
  t=$(median <"$raw/tcp"); i=$(median <"$raw/iperf"); b=$(median <"$raw/iperf-bidir")
  awk -v t="$t" -v i="$i" -v b="$b" -v r="$repeat" 'BEGIN {
    printf "# TCP, 2 ranks, 64 MiB allreduce busbw %.2f GB/s against one-stream loopback iperf3 %.2f GB/s: %.2f (medians of %d)\n",
      t, i, (i > 0 ? t / i : 0), r
    printf "#   and against iperf3 --bidir, %.2f GB/s each way: %.2f\n", b, (b > 0 ? t / b : 0) }'
fi
pingpong after
