#!/usr/bin/env bash
# The tracing figures of the README (issue 19), in one run: allreduce time on 2 ranks with
# TALLY_TRACE unset against TALLY_TRACE set, at 8 B and 1 MiB, and against the same tree built
# without the always-on counters and flight records (CMake TALLY_COUNTERS=OFF, built here into
# BUILD-nocounters), each the median of REPEAT runs (default 5) taken in turns; and with --ddp,
# the DDP example on 4 ranks (34 MB of parameters: two gradient buckets a step) traced and drawn
# with `tally-trace plot` (needs `make torch` first: PYTHONPATH=BUILD/python/lib).
# usage: bench/trace_figures.sh [BUILD [REPEAT [--ddp PNG]]]   (from the repository root, after a build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
repeat=${2:-5}
ddp_png=
[ "${3:-}" = --ddp ] && ddp_png=${4:?--ddp needs the PNG to write}
perf=$build/tally-perf
[ -x "$perf" ] || { echo "trace_figures.sh: $perf is missing; build first" >&2; exit 2; }
bare=$build-nocounters
same() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; } # the other build's setting, for a like comparison
cmake -S "$root" -B "$bare" -DCMAKE_BUILD_TYPE="$(same CMAKE_BUILD_TYPE)" -DTALLY_CUDA="$(same TALLY_CUDA)" \
  -DTALLY_COUNTERS=OFF -DTALLY_BUILD_TESTS=OFF >/dev/null
cmake --build "$bare" -j2 --target tally-perf >/dev/null
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
# the out-of-place time (us) of a tally-perf run of one size (its arguments), from its JSON (-J):
# three decimals, where the table's two are 5% of an 8-byte call
time_us() {
  "$@" -J "$raw/run.json" >/dev/null
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"][0]["out_of_place"]["time_us"])' \
    "$raw/run.json"
}

for _ in $(seq "$repeat"); do
  for size in 8 1048576; do
    iters=$([ $size = 8 ] && echo 20000 || echo 200)
    time_us "$perf" allreduce -N 2 -b $size -e $size -n $iters -w 100 -c 0 >>"$raw/off-$size"
    time_us "$bare/tally-perf" allreduce -N 2 -b $size -e $size -n $iters -w 100 -c 0 >>"$raw/bare-$size"
    rm -rf "$raw/trace" && mkdir "$raw/trace"
    TALLY_TRACE=$raw/trace time_us "$perf" allreduce -N 2 -b $size -e $size -n $iters -w 100 -c 0 >>"$raw/on-$size"
  done
done
echo "# allreduce, 2 ranks, one host; medians of $repeat runs, microseconds (tally-perf out-of-place time)"
printf "%10s %14s %18s %10s %16s %10s\n" size "no counters" "TALLY_TRACE unset" counters "TALLY_TRACE=DIR" tracing
percent() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f%%", (b / a - 1) * 100}'; }
for size in 8 1048576; do
  bare_us=$(median <"$raw/bare-$size") off=$(median <"$raw/off-$size") on=$(median <"$raw/on-$size")
  printf "%10s %14s %18s %10s %16s %10s\n" $size "$bare_us" "$off" "$(percent "$bare_us" "$off")" "$on" \
    "$(percent "$off" "$on")"
done

if [ -n "$ddp_png" ]; then
  dir=$(mktemp -d)
  TALLY_TRACE=$dir PYTHONPATH="$build/python/lib" "$build/tally-run" -n 4 /usr/bin/python3 \
    "$root/examples/ddp_train.py" --backend tally --steps 5 --warmup 1 --width 2048 --layers 3 --batch 8
  "$build/tally-trace" plot "$dir" -o "$ddp_png" --size 1400x900
  "$build/tally-trace" summary "$dir"
  echo "# DDP timeline: $ddp_png (traces in $dir)"
fi
