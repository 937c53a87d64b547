#!/usr/bin/env bash
# Issue 17's figures (communicators made from communicators), as the README's table gives them:
# runs BUILD/tests/comm-bench (bench/comm_bench.c; 8 ranks on this host) `split`, `shrink` and `grow`
# ROUNDS times each and prints, per row, the median of the rounds (each round's figure is itself
# the slowest rank's median over its calls or kills), with the smallest and largest round, side by
# side with the anchor (a new communicator from a unique id); then one 1,000-split `loop`
# (file descriptors and memory at its start and end). Run it on a quiet machine.
#   bench/comm_figures.sh BUILD_DIR [ROUNDS (default 5)] [KILLS per shrink round (default 5)]
# LOOP=N sets the loop's splits (default 1000).
set -euo pipefail
build=${1:?usage: bench/comm_figures.sh BUILD_DIR [ROUNDS] [KILLS]}
rounds=${2:-5}
kills=${3:-5}
bench="$build/tests/comm-bench"
[[ -x $bench ]] || { echo "comm_figures.sh: no $bench; build the tree first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((i = 1; i <= rounds; i++)); do
  echo "round $i of $rounds" >&2
  "$bench" split 20 >>"$out/split.txt"
  "$bench" shrink "$kills" >>"$out/shrink.txt"
  "$bench" grow 20 >>"$out/grow.txt"
done
"$bench" loop "${LOOP:-1000}" >"$out/loop.txt"
# Every "LABEL  VALUE ms" line gathered per label.
/usr/bin/python3 - "$out" "$rounds" <<'EOF'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for name in ("split", "shrink", "grow"):
    for line in open("%s/%s.txt" % (out, name)):
        m = re.match(r"^(\S.*?)\s+([0-9.]+) ms", line)
        if m and not line.startswith("run "):
            rows.setdefault(m.group(1).strip(), []).append(float(m.group(2)))
anchor = next((v for k, v in rows.items() if "unique id" in k), None)
print("| 8 ranks, median of %d rounds | ms | min | max | vs. the unique-id anchor |" % rounds)
print("|---|---|---|---|---|")
for label, values in rows.items():
    med = statistics.median(values)
    ratio = "%.2f" % (med / statistics.median(anchor)) if anchor and label.startswith("tally_comm") else ""
    print("| %s | %.3f | %.3f | %.3f | %s |" % (label, med, min(values), max(values), ratio))
print()
print("".join(l for l in open("%s/loop.txt" % out)))
EOF
