#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each one in turn for FUZZ_SECONDS
# (default 600), then prints how many inputs each executed. `make fuzz` calls this after installing clang.
#
# Each target fuzz/fuzz_<name>.c reads the committed seeds in fuzz/corpus/<name>/ and writes the new
# inputs it finds into build-fuzz/corpus/<name>/ (the committed corpus is never modified). A crash is
# saved under build-fuzz/artifacts/ and makes this script fail after the other targets have run.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_BUILD (build directory), JOBS (build parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-600}
build=${FUZZ_BUILD:-build-fuzz}
jobs=${JOBS:-2}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: FUZZ_SECONDS='$seconds' is not a positive number of seconds per target" >&2
  exit 2
fi

cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTALLY_FUZZ=ON \
  -DTALLY_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target fuzz_targets
mkdir -p "$build/artifacts" "$build/logs"

targets=() # the executables CMake built from TALLY_FUZZ_TARGETS
for program in "$build"/fuzz/fuzz_*; do
  [ -f "$program" ] && [ -x "$program" ] && targets+=("${program##*/fuzz_}")
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets were built in $build/fuzz; see the build output above" >&2
  exit 1
fi

summary=()
crashed=0
for t in "${targets[@]}"; do
  log="$build/logs/$t.log"
  mkdir -p "$build/corpus/$t"
  echo "fuzz: running fuzz_$t for $seconds s (log: $log)"
  status=0
  "$build/fuzz/fuzz_$t" "$build/corpus/$t" "fuzz/corpus/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$build/artifacts/$t-" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  found=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    result="ok"
  else
    crashed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    result="FAILED (exit $status): ${artifact:-see $log}"
  fi
  summary+=("$(printf '%-10s %14s %10s  %s' "$t" "${execs:-?}" "${found:-?}" "$result")")
done

echo
echo "fuzz: $seconds s per target"
printf '%-10s %14s %10s  %s\n' target executions new-inputs result
printf '%s\n' "${summary[@]}"
if [ "$crashed" -ne 0 ]; then
  echo "fuzz: a target failed. Reproduce with $build/fuzz/fuzz_<target> <artifact>, fix the parser, and copy" \
    "the artifact into fuzz/corpus/<target>/ as crash-<what> so that the test suite replays it" >&2
  exit 1
fi
