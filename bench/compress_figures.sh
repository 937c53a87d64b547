#!/usr/bin/env bash
# The compression figures of the README (TALLY_COMPRESS), in one run: on emulated hosts
# (bench/hosts.sh: one network namespace per host, links shaped with tc tbf; needs root)
#   - allreduce busbw, float sum, out of place, for none, bf16 and fp16, each the median of REPEAT
#     runs (default 3, the three formats taking turns), and the compressed over the uncompressed:
#     4 hosts x 2 ranks at 1 Gbit/s and 2 hosts x 2 ranks at 10 Gbit/s, SIZES (default 1M 16M 64M);
#     the last line of each says from which size compression pays (>= 1.05x), if any: where it
#     stops paying;
#   - the measured worst error per element, relative to sum |x_i|, of the random, cancelling and
#     wide-range inputs of tests/test_compress against the stated bound (its output).
# usage: bench/compress_figures.sh [BUILD [REPEAT]]     (from the repository root, after a build)
#   SIZES="1M 4M" RATES="1gbit:4:2" ITERS=5 bench/compress_figures.sh build 1   a quick try
#   RATES: RATE:HOSTS:RANKS_PER_HOST, space-separated (default "1gbit:4:2 10gbit:2:2").
# TALLY_COMPRESS_MIN_BYTES is 0 here, so every size is compressed whatever the default.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
repeat=${2:-3}
sizes=${SIZES:-1M 16M 64M}
rates=${RATES:-1gbit:4:2 10gbit:2:2}
iters=${ITERS:-10}
[ -x "$build/tally-perf" ] || { echo "compress_figures.sh: $build/tally-perf is missing; build first" >&2; exit 2; }
raw=$(mktemp -d); trap 'rm -rf "$raw"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
bytes_of() { numfmt --from=iec "$1"; }
export TALLY_COMPRESS_MIN_BYTES=0

for spec in $rates; do
  IFS=: read -r rate hosts per_host <<<"$spec"
  for _ in $(seq "$repeat"); do
    for format in none bf16 fp16; do
      for size in $sizes; do # one size per run: each size's median is over whole runs
        rc=0
        out=$(TALLY_ALGO=auto "$root/bench/hosts.sh" --rate "$rate" "$build" "$hosts" "$per_host" run -- \
          allreduce -d float -b "$size" -e "$size" -n "$iters" -w 2 -c 1 --compress "$format" 2>"$raw/err") || rc=$?
        if [ "$rc" = 77 ]; then cat "$raw/err" >&2; exit 77; fi
        [ "$rc" = 0 ] || { echo "compress_figures.sh: $spec $format $size failed:" >&2; cat "$raw/err" >&2; exit 1; }
        awk -v f="$format" '$1 ~ /^[0-9]+$/ {print f, $1, $8}' <<<"$out" >>"$raw/$spec"
      done
    done
  done
  echo "# allreduce float sum, $hosts hosts x $per_host ranks, $rate links: busbw GB/s, median of $repeat"
  printf '%-10s %9s %9s %9s %10s %10s\n' bytes none bf16 fp16 bf16/none fp16/none
  pays=""
  for size in $sizes; do
    b=$(bytes_of "$size")
    for f in none bf16 fp16; do
      declare "bw_$f=$(awk -v f=$f -v b="$b" '$1 == f && $2 == b {print $3}' "$raw/$spec" | median)"
    done
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0 && a != "-") printf "%.2fx", a / b; else print "-"}'; }
    r16=$(ratio "$bw_bf16" "$bw_none")
    printf '%-10s %9s %9s %9s %10s %10s\n' "$b" "$bw_none" "$bw_bf16" "$bw_fp16" "$r16" "$(ratio "$bw_fp16" "$bw_none")"
    [ -n "$pays" ] || ! awk -v r="${r16%x}" 'BEGIN {exit !(r + 0 >= 1.05)}' || pays=$b
  done
  if [ -n "$pays" ]; then
    echo "# bf16 pays (>= 1.05x) from $pays bytes up at $rate; below that size it stops paying"
  else
    echo "# bf16 does not pay (>= 1.05x) at any of these sizes at $rate"
  fi
  echo
done

echo "# worst error per element / sum |x_i| against the bound (tests/test_compress, reduce.h)"
if [ -x "$build/tests/test_compress" ]; then
  "$build/tests/test_compress" --jobs 1 --filter 'compress/*within*' 2>&1 | grep 'worst error' || true
else
  echo "(no $build/tests/test_compress: build the tests)"
fi
