#!/usr/bin/env bash
# libtally_mpi's figures for the README: Open MPI's own collectives against the same unmodified
# program with libtally_mpi preloaded (../shared/anchors/run.sh mpi, MPIRUN_ARGS="-x LD_PRELOAD=..."),
# each figure the median of REPEAT runs, the two taking turns; then the shim's own overhead at 8 B:
# MPI_Allreduce through the shim against tally-perf's tally_allreduce on as many ranks, and, on one
# rank where nothing else varies, against tally_allreduce in the same process (bench/mpi_overhead.c).
# Per size: both times (us), both busbw (GB/s), and shim/MPI (busbw ratio; from 64 KiB down the
# ratio of times, MPI's over the shim's: above 1 the shim is faster either way); #wrong: the
# results mpi_coll found wrong in all the shim's runs (must be 0).
# Sizes up to 64 KiB run SMALL_ITERS calls per size, larger ones ITERS: a few calls of a
# microsecond measure the start of each size, not the call (2 ranks, allreduce 16 B to 4 KiB: shim
# 0.58-0.84 of Open MPI with 100 calls a size, 1.83-3.48 with 3000).
# usage: bench/mpi_figures.sh [BUILD [REPEAT]]   (from the repository root, after a build)
#   NRANKS="2 4 8"  COLLS="allreduce allgather reducescatter bcast alltoall"  MINBYTES=8
#   MAXBYTES=67108864  SMALL_ITERS=3000  ITERS=20  OVERHEAD_ITERS=5000   (environment, defaults shown)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
repeat=${2:-3}
shim=$build/libtally_mpi.so
perf=$build/tally-perf
anchor=${ANCHORS:-$root/../shared/anchors}/run.sh
nranks=${NRANKS:-2 4 8}
colls=${COLLS:-allreduce allgather reducescatter bcast alltoall}
minb=${MINBYTES:-8} maxb=${MAXBYTES:-67108864} iters=${ITERS:-20} oiters=${OVERHEAD_ITERS:-5000}
small_iters=${SMALL_ITERS:-3000} small_max=65536
[ -f "$shim" ] || { echo "mpi_figures.sh: $shim is missing: build with an MPI installed (libopenmpi-dev)" >&2; exit 2; }
[ -x "$perf" ] || { echo "mpi_figures.sh: $perf is missing; build first" >&2; exit 2; }
[ -x "$anchor" ] || { echo "mpi_figures.sh: the anchor $anchor is missing (set ANCHORS)" >&2; exit 2; }
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {if (NR) print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2); else print "-"}'; }
# One anchor run's rows as "WHO SIZE TIME BUSBW WRONG".
rows() { awk -v who="$1" '$1 ~ /^[0-9]+$/ {print who, $1, $5, $7, $8}'; }
pick() { awk -v w="$1" -v s="$2" -v c="$3" '$1==w && $2==s {print $c}' "$4" | median; }
# One anchor run of N ranks and COLL over the sizes from minb to maxb, plain (WHO mpi) or with the
# shim (shim), its rows appended to FILE: the small sizes and the large ones as two runs.
measure() {
  local who=$1 n=$2 coll=$3 file=$4 args=""
  [ "$who" = shim ] && args="-x LD_PRELOAD=$shim"
  if [ "$minb" -le $small_max ]; then
    MPIRUN_ARGS="$args" "$anchor" mpi "$n" "$minb" "$((maxb < small_max ? maxb : small_max))" "$small_iters" "$coll" \
      2>/dev/null | rows "$who" >>"$file"
  fi
  if [ "$maxb" -gt $small_max ]; then
    MPIRUN_ARGS="$args" "$anchor" mpi "$n" "$((minb > small_max ? minb : 2 * small_max))" "$maxb" "$iters" "$coll" \
      2>/dev/null | rows "$who" >>"$file"
  fi
}

for n in $nranks; do
  for coll in $colls; do
    for _ in $(seq "$repeat"); do
      measure mpi "$n" "$coll" "$raw/$n-$coll"
      measure shim "$n" "$coll" "$raw/$n-$coll"
    done
    echo "# $coll, $n ranks: medians of $repeat runs (time us, busbw GB/s)"
    printf "%12s %10s %10s %9s %9s %8s %7s\n" size mpi-us shim-us mpi-bw shim-bw shim/mpi '#wrong'
    for size in $(awk '{print $2}' "$raw/$n-$coll" | sort -n -u); do
      mt=$(pick mpi "$size" 3 "$raw/$n-$coll") st=$(pick shim "$size" 3 "$raw/$n-$coll")
      mb=$(pick mpi "$size" 4 "$raw/$n-$coll") sb=$(pick shim "$size" 4 "$raw/$n-$coll")
      wrong=$(awk -v s="$size" '$1=="shim" && $2==s {w += $5} END {print w + 0}' "$raw/$n-$coll")
      ratio=$(awk -v s="$size" -v mt="$mt" -v st="$st" -v mb="$mb" -v sb="$sb" \
        'BEGIN {if (s <= 65536) r = (st > 0 ? mt / st : 0); else r = (mb > 0 ? sb / mb : 0); printf "%.2f", r}')
      printf "%12s %10s %10s %9s %9s %8s %7s\n" "$size" "$mt" "$st" "$mb" "$sb" "$ratio" "$wrong"
    done
  done
done

echo "# the shim's overhead: allreduce of 8 B, medians of $repeat runs of $oiters iterations (us)"
printf "%6s %14s %16s %10s\n" ranks shim-us tally-perf-us overhead
for n in $nranks; do
  for _ in $(seq "$repeat"); do
    MPIRUN_ARGS="-x LD_PRELOAD=$shim" "$anchor" mpi "$n" 8 8 "$oiters" allreduce 2>/dev/null |
      awk '$1 == 8 {print $5}' >>"$raw/over-shim-$n"
    "$perf" allreduce -N "$n" -b 8 -e 8 -n "$oiters" -w 100 | awk '$1 == 8 {print $6}' >>"$raw/over-perf-$n"
  done
  s=$(median <"$raw/over-shim-$n") p=$(median <"$raw/over-perf-$n")
  printf "%6s %14s %16s %10s\n" "$n" "$s" "$p" "$(awk -v s="$s" -v p="$p" 'BEGIN {printf "%.2f", s - p}')"
done

mpicc -O2 -I"$root/include" -o "$raw/mpi_overhead" "$root/bench/mpi_overhead.c" -L"$build" -ltally -Wl,-rpath,"$build"
for _ in $(seq "$repeat"); do
  mpirun --allow-run-as-root -np 1 -x LD_PRELOAD="$shim" "$raw/mpi_overhead" 1000000 >>"$raw/over1"
done
echo "# one rank, 8 B, 10^6 calls, medians of $repeat: MPI_Allreduce through the shim" \
  "$(awk '{print $2}' "$raw/over1" | median) us, tally_allreduce $(awk '{print $3}' "$raw/over1" | median) us," \
  "overhead $(awk '{print $4}' "$raw/over1" | median) us"
