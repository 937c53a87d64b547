#!/usr/bin/env bash
# The compression figures of the README (TALLY_COMPRESS), in one run: on emulated hosts
# (bench/hosts.sh: one network namespace per host, links shaped with tc tbf; needs root)
#   - allreduce busbw, float sum, out of place, for none, bf16 and fp16, each the median of REPEAT
#     runs (default 3, the three formats taking turns), and the compressed over the uncompressed:
#     4 hosts x 2 ranks at 1 Gbit/s and 2 hosts x 2 ranks at 10 Gbit/s, SIZES (default 1M 16M 64M);
#     the last line of each says from which size compression pays (>= 1.05x), if any: where it
#     stops paying;
#   - the DDP example (examples/ddp_train.py) on the 4 x 2 hosts at 1 Gbit/s, when the PyTorch
#     backend is built: steps per second and the final loss after the same steps for none, bf16,
#     fp16 and the error-feedback hook (DDP_STEPS, DDP_WIDTH, DDP_RATES=RATE:HOSTS:RANKS change it;
#     DDP_RATES=off leaves it out);
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

# The DDP example on the 1 Gbit/s hosts (when the PyTorch backend is built: make torch): steps/s
# (median) and the final loss after the same steps, for none, bf16, fp16 and the error-feedback hook.
ddp_spec=${DDP_RATES:-1gbit:4:2}
if [ "$ddp_spec" = off ]; then
  :
elif PYTHONPATH="$build/python/lib" /usr/bin/python3 -c 'import tally_torch' 2>/dev/null; then
  IFS=: read -r rate hosts per_host <<<"$ddp_spec"
  ddp_args=(--backend tally --steps "${DDP_STEPS:-30}" --warmup 3 --width "${DDP_WIDTH:-1024}" --layers 4)
  for _ in $(seq "$repeat"); do
    for how in none bf16 fp16 ef-bf16; do
      case $how in
      ef-*) env=(TALLY_COMPRESS=none) hook=(--hook "$how") ;;
      *) env=(TALLY_COMPRESS="$how") hook=() ;;
      esac
      out=$(env "${env[@]}" HOSTS_PROGRAM=/usr/bin/python3 PYTHONPATH="$build/python/lib" \
        "$root/bench/hosts.sh" --rate "$rate" "$build" "$hosts" "$per_host" run -- \
        "$root/examples/ddp_train.py" "${ddp_args[@]}" "${hook[@]}" 2>"$raw/err") ||
        { echo "compress_figures.sh: DDP $how failed:" >&2; cat "$raw/err" >&2; exit 1; }
      sed -n 's/.*final_loss=\([^ ]*\) steps_per_s=\([^ ]*\).*/\1 \2/p' <<<"$out" | awk -v h=$how '{print h, $1, $2}' >>"$raw/ddp"
    done
  done
  echo "# examples/ddp_train.py ${ddp_args[*]:2}, $hosts hosts x $per_host ranks, $rate: median of $repeat"
  printf '%-8s %12s %10s %14s\n' how steps/s loss loss/none-1
  base=$(awk '$1 == "none" {print $2}' "$raw/ddp" | median)
  for how in none bf16 fp16 ef-bf16; do
    loss=$(awk -v h=$how '$1 == h {print $2}' "$raw/ddp" | median)
    printf '%-8s %12s %10s %14s\n' "$how" "$(awk -v h=$how '$1 == h {print $3}' "$raw/ddp" | median)" "$loss" \
      "$(awk -v a="$loss" -v b="$base" 'BEGIN {printf "%+.4f%%", (a / b - 1) * 100}')"
  done
  echo
else
  echo "# (no DDP figures: tally_torch is not built in $build/python/lib; make torch)"
  echo
fi

echo "# worst error per element / sum |x_i| against the bound (tests/test_compress, reduce.h)"
if [ -x "$build/tests/test_compress" ]; then
  "$build/tests/test_compress" --jobs 1 --filter 'compress/*within*' 2>&1 | grep 'worst error' || true
else
  echo "(no $build/tests/test_compress: build the tests)"
fi
