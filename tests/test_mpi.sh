#!/usr/bin/env bash
# libtally_mpi under Open MPI's mpirun: an ordinary MPI program (tests/mpi/mpi_shim_check.c) gives
# the same results without the shim, with it preloaded and with it linked before -lmpi; the calls
# it should take really ran on Tally (the decision log and TALLY_STATS=1); a count that differs
# between ranks is an error (MPI_ERRORS_RETURN) or an abort (MPI_ERRORS_ARE_FATAL), never wrong
# data; a malformed TALLY_MPI_COLLS is refused; the anchor benchmark ../shared/anchors/mpi_coll.c
# checks its own results (#wrong) with the shim; an mpi4py script (tests/mpi/mpi4py_check.py) gives
# the same results with and without it; under MPICH, where installed, libtally_mpich.so does the same
# and each shim refuses the other MPI. Skips (77) without mpirun, mpicc or the shim.
# usage: test_mpi.sh SOURCE_DIR BUILD_DIR [CC]
#   CC: in a sanitized build, the compiler whose ASan and UBSan runtimes are preloaded before the
#   instrumented shim (the MPI programs themselves are not instrumented); leak checks are off (MPI's).
set -uo pipefail
src=${1:?source dir}; build=${2:?build dir}; sanitizer_cc=${3:-}
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; exit 1; }
command -v mpirun >/dev/null || skip "no mpirun (install openmpi-bin: scripts/install-deps.sh)"
command -v mpicc >/dev/null || skip "no mpicc (install libopenmpi-dev: scripts/install-deps.sh)"
shim="$build/libtally_mpi.so"
[ -f "$shim" ] || skip "$shim was not built (cmake found no MPI: see its warning)"
mpirun --version 2>&1 | grep -q "Open MPI" || skip "mpirun is not Open MPI's: $(mpirun --version 2>&1 | head -1)"

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mpicc -O1 -o "$work/plain" "$src/tests/mpi/mpi_shim_check.c" || fail "mpicc could not build tests/mpi/mpi_shim_check.c"
mpicc -O1 -o "$work/linked" "$src/tests/mpi/mpi_shim_check.c" -L"$build" -ltally_mpi -Wl,-rpath,"$build" ||
  fail "mpicc could not link the check with -ltally_mpi"
readelf -d "$work/linked" | grep NEEDED | head -1 | grep -q libtally_mpi || fail "-ltally_mpi is not the first library"

ranks=4
# Where every rank of a communicator has a core of its own (a split of 2 ranks here) the shim leaves
# small calls to MPI by default (mpi_policy.c): the checks below want every call on Tally, so every
# threshold is 0 for them; the defaults are checked on their own after the anchor.
export TALLY_MPI_COLLS='allreduce>=0,reduce>=0,bcast>=0,allgather>=0,reduce_scatter_block>=0,alltoall>=0,gather>=0,scatter>=0,barrier>=0'
runtimes=""
if [ -n "$sanitizer_cc" ]; then
  runtimes="$("$sanitizer_cc" -print-file-name=libasan.so):$("$sanitizer_cc" -print-file-name=libubsan.so):"
  export ASAN_OPTIONS=detect_leaks=0
fi
# Every variable the ranks need is passed with -x (mpirun) or -env (mpirun.mpich).
mpi() { timeout 120 mpirun --allow-run-as-root --oversubscribe -np "$ranks" ${runtimes:+-x ASAN_OPTIONS} "$@"; }
preload=(-x LD_PRELOAD="$runtimes$shim")

# Each rank writes its results to its own file (CHECK_OUT), gathered sorted into one.
results() { cat "$work/$1".[0-9]* | sort >"$work/$1.out"; }
CHECK_OUT=$work/plain mpi -x CHECK_OUT "$work/plain" 2>"$work/plain.err" || { cat "$work/plain.err"; fail "the check failed without libtally_mpi"; }
results plain
[ "$(wc -l <"$work/plain.out")" -gt 300 ] || fail "the check printed too few results: $(wc -l <"$work/plain.out")"
CHECK_OUT=$work/preload TALLY_DEBUG=INFO TALLY_STATS=1 mpi -x CHECK_OUT -x TALLY_DEBUG -x TALLY_STATS "${preload[@]}" \
  "$work/plain" 2>"$work/preload.err" || { tail -20 "$work/preload.err"; fail "the check failed with LD_PRELOAD=libtally_mpi"; }
results preload
CHECK_OUT=$work/linked mpi -x CHECK_OUT ${runtimes:+-x LD_PRELOAD="$runtimes"} "$work/linked" 2>"$work/linked.err" ||
  { tail -20 "$work/linked.err"; fail "the check failed linked with -ltally_mpi"; }
results linked
for run in preload linked; do
  diff "$work/plain.out" "$work/$run.out" >"$work/$run.diff" ||
    { head -20 "$work/$run.diff"; fail "results differ between plain MPI and libtally_mpi ($run)"; }
done
echo "same $(wc -l <"$work/plain.out") results without the shim, preloaded and linked"

# The calls went to Tally: the decision log names each collective, every rank's TALLY_STATS has it.
for coll in MPI_Allreduce MPI_Reduce MPI_Bcast MPI_Allgather MPI_Reduce_scatter_block MPI_Alltoall MPI_Gather \
  MPI_Scatter MPI_Barrier; do
  n=$(grep -c "\[tally INFO\] .*libtally_mpi: $coll to Tally" "$work/preload.err")
  [ "$n" -eq "$ranks" ] || fail "$coll: $n of $ranks ranks logged it going to Tally"
done
for why in "MPI_Allreduce to MPI: an op Tally does not have" "MPI_Bcast to MPI: a datatype Tally does not have" \
  "MPI_Alltoall to MPI: send and receive datatypes or counts differ" "MPI_Allreduce to MPI: an intercommunicator"; do
  grep -q "$why" "$work/preload.err" || fail "no log line '$why' for a call that must fall through"
done
for coll in allreduce reduce broadcast allgather reduce_scatter alltoall gather scatter barrier; do
  n=$(grep -c "^tally stats:   $coll " "$work/preload.err")
  # world, two parity halves and the reversed split: 3 communicators per rank
  [ "$n" -eq $((ranks * 3)) ] || fail "TALLY_STATS: $n rows for $coll, expected $((ranks * 3)) (4 ranks x 3 communicators)"
done
echo "every intercepted collective ran on Tally on each rank and communicator; the fall-through cases went to MPI"

# TALLY_MPI_COLLS leaves the others to MPI.
CHECK_OUT=$work/except TALLY_DEBUG=INFO TALLY_STATS=1 TALLY_MPI_COLLS='^allreduce,bcast' mpi -x CHECK_OUT -x TALLY_DEBUG \
  -x TALLY_STATS -x TALLY_MPI_COLLS "${preload[@]}" "$work/plain" 2>"$work/except.err" ||
  fail "the check failed with TALLY_MPI_COLLS=^allreduce,bcast"
results except
diff -q "$work/plain.out" "$work/except.out" >/dev/null || fail "results differ with TALLY_MPI_COLLS"
grep -q "MPI_Allreduce to MPI: not selected by TALLY_MPI_COLLS" "$work/except.err" || fail "^allreduce: allreduce not left to MPI"
grep -q "^tally stats:   allreduce " "$work/except.err" && fail "^allreduce: allreduce still ran on Tally"
grep -q "^tally stats:   broadcast " "$work/except.err" && fail "^allreduce,bcast: bcast still ran on Tally"
grep -q "^tally stats:   allgather " "$work/except.err" || fail "^allreduce,bcast: allgather no longer ran on Tally"
TALLY_DEBUG=INFO TALLY_STATS=1 TALLY_MPI_COLLS='allgather,barrier,allreduce>=64K' mpi -x TALLY_DEBUG -x TALLY_STATS \
  -x TALLY_MPI_COLLS "${preload[@]}" "$work/plain" >/dev/null 2>"$work/only.err" || fail "the check failed with a threshold"
grep -q "MPI_Allreduce to MPI: below its size threshold" "$work/only.err" || fail "allreduce>=64K: small allreduce not left to MPI"
grep -q "MPI_Reduce to MPI: not selected" "$work/only.err" || fail "a list without reduce still sent reduce to Tally"
echo "TALLY_MPI_COLLS: exclusions, lists and thresholds send the calls where they say"

# Malformed TALLY_MPI_COLLS values are refused at MPI_Init with the reason.
for bad in 'allreduce,allreduse' 'allreduce>=12Q' 'allreduce>4096' '^alltoall>=4K' 'bcast,'; do
  TALLY_MPI_COLLS=$bad mpi -x TALLY_MPI_COLLS "${preload[@]}" "$work/plain" >/dev/null 2>"$work/bad.err" &&
    fail "TALLY_MPI_COLLS='$bad' was accepted"
  grep -q "libtally_mpi: TALLY_MPI_COLLS='$bad' is malformed" "$work/bad.err" ||
    { head -3 "$work/bad.err"; fail "TALLY_MPI_COLLS='$bad': no clear message"; }
done
# A Tally setting Tally refuses ends the job with Tally's message, as in any Tally program.
TALLY_TRANSPORT=bogus mpi -x TALLY_TRANSPORT "${preload[@]}" "$work/plain" >/dev/null 2>"$work/bad.err" &&
  fail "TALLY_TRANSPORT=bogus was accepted"
grep -q "TALLY_TRANSPORT='bogus' is not supported" "$work/bad.err" && grep -q "libtally_mpi: Tally refused its configuration" "$work/bad.err" ||
  { head -3 "$work/bad.err"; fail "TALLY_TRANSPORT=bogus: no clear message"; }
echo "malformed TALLY_MPI_COLLS values and a malformed Tally setting are refused with a message"

# A mismatched count: every rank gets an error whose string is Tally's, and the job goes on.
CHECK_OUT=$work/mismatch mpi -x CHECK_OUT "${preload[@]}" "$work/plain" mismatch 2>"$work/mismatch.err" ||
  { tail "$work/mismatch.err"; fail "MPI_ERRORS_RETURN with a mismatched count: the job failed"; }
results mismatch
n=$(grep -c "mismatch rc=error .*MPI_Allreduce through Tally failed (collective mismatch)" "$work/mismatch.out")
[ "$n" -eq "$ranks" ] || { cat "$work/mismatch.out"; fail "MPI_ERRORS_RETURN: $n of $ranks ranks got Tally's mismatch error"; }
[ "$(grep -c "after-mismatch $ranks" "$work/mismatch.out")" -eq "$ranks" ] || fail "MPI_COMM_WORLD unusable after the mismatch"
mpi "${preload[@]}" "$work/plain" mismatch-fatal >"$work/fatal.out" 2>"$work/fatal.err" &&
  fail "MPI_ERRORS_ARE_FATAL with a mismatched count: the job did not abort"
grep -q "libtally_mpi: MPI_Allreduce through Tally failed (collective mismatch)" "$work/fatal.err" ||
  fail "MPI_ERRORS_ARE_FATAL: Tally's message was not printed"
echo "a mismatched count: an error on every rank (MPI_ERRORS_RETURN), an abort with Tally's message (fatal)"

# The anchor benchmark, unmodified: its own check of every result (#wrong) with and without the shim.
anchor="$src/../shared/anchors/mpi_coll.c"
if [ ! -f "$anchor" ]; then
  echo "NOTE: $anchor not found: the anchor part is skipped"
else
  mpicc -O2 -o "$work/mpi_coll" "$anchor" || fail "could not build $anchor"
  for coll in allreduce allgather reducescatter alltoall bcast reduce; do
    for with in plain shim; do
      args=(); [ $with = shim ] && args=("${preload[@]}")
      mpi "${args[@]}" "$work/mpi_coll" "$coll" 8 262144 2 >"$work/anchor.out" 2>"$work/anchor.err" ||
        { tail "$work/anchor.err"; fail "mpi_coll $coll ($with) failed"; }
      rows=$(grep -c '^ ' "$work/anchor.out")
      wrong=$(awk '/^ / && $NF != 0' "$work/anchor.out")
      [ "$rows" -ge 10 ] && [ -z "$wrong" ] || { cat "$work/anchor.out"; fail "mpi_coll $coll ($with): wrong results"; }
    done
  done
  echo "mpi_coll: allreduce, allgather, reducescatter, alltoall, bcast, reduce from 8 B to 256 KiB, #wrong 0 with and without the shim"
  # Two ranks, each with a core of its own (when the machine has two): allgathers below 256 B stay
  # with MPI, larger ones go to Tally, and the results are still right.
  if [ "$(nproc)" -ge 2 ]; then
    env -u TALLY_MPI_COLLS TALLY_DEBUG=INFO mpirun --allow-run-as-root -np 2 ${runtimes:+-x ASAN_OPTIONS} -x TALLY_DEBUG "${preload[@]}" \
      "$work/mpi_coll" allgather 8 65536 2 >"$work/own.out" 2>"$work/own.err" || { tail "$work/own.err"; fail "mpi_coll on 2 ranks failed"; }
    grep -q "MPI_Allgather to MPI: below its size threshold" "$work/own.err" ||
      fail "2 ranks with a core each: small allgathers were not left to MPI"
    grep -q "MPI_Allgather to Tally" "$work/own.err" || fail "2 ranks with a core each: 64 KiB allgathers did not go to Tally"
    [ -z "$(awk '/^ / && $NF != 0' "$work/own.out")" ] || { cat "$work/own.out"; fail "mpi_coll on 2 ranks: wrong results"; }
    echo "2 ranks with a core each: allgather below 256 B with MPI, from 256 B on Tally, #wrong 0"
  else
    echo "SKIP part: one core here, so no communicator has a core per rank (the default thresholds are not exercised)"
  fi
fi
# mpi4py (Debian's, with numpy buffers): several dtypes, MPI.IN_PLACE, Split, a user-defined MPI.Op.
if ! /usr/bin/python3 -c 'import mpi4py.MPI, numpy' 2>/dev/null; then
  echo "NOTE: /usr/bin/python3 has no mpi4py or numpy (install python3-mpi4py python3-numpy: scripts/install-deps.sh): the mpi4py part is skipped"
else
  py="$src/tests/mpi/mpi4py_check.py"
  CHECK_OUT=$work/py-plain mpi -x CHECK_OUT /usr/bin/python3 "$py" 2>"$work/py.err" || { tail "$work/py.err"; fail "mpi4py check failed without the shim"; }
  results py-plain
  CHECK_OUT=$work/py-shim TALLY_DEBUG=INFO mpi -x CHECK_OUT -x TALLY_DEBUG "${preload[@]}" /usr/bin/python3 "$py" 2>"$work/py.err" ||
    { tail "$work/py.err"; fail "mpi4py check failed with the shim"; }
  results py-shim
  [ "$(wc -l <"$work/py-plain.out")" -gt 200 ] || fail "the mpi4py check printed too few results"
  diff "$work/py-plain.out" "$work/py-shim.out" >"$work/py.diff" || { head "$work/py.diff"; fail "mpi4py: results differ with the shim"; }
  grep -q "libtally_mpi: MPI_Allreduce to Tally" "$work/py.err" || fail "mpi4py: Allreduce did not go to Tally"
  grep -q "libtally_mpi: MPI_Allreduce to MPI: an op Tally does not have" "$work/py.err" || fail "mpi4py: the MPI.Op did not fall through"
  echo "mpi4py: $(wc -l <"$work/py-plain.out") results the same with and without the shim; its user-defined MPI.Op fell through"
fi
# MPICH (`scripts/install-deps.sh mpich`): the same program under mpirun.mpich with libtally_mpich.so,
# and each shim refusing, at MPI_Init, a program of the other MPI.
mpich_shim="$build/libtally_mpich.so"
if ! command -v mpirun.mpich >/dev/null || ! command -v mpicc.mpich >/dev/null || [ ! -f "$mpich_shim" ]; then
  echo "NOTE: no MPICH (mpirun.mpich, mpicc.mpich, $mpich_shim): the MPICH part is skipped"
else
  mpich() { timeout 120 mpirun.mpich -np "$ranks" ${runtimes:+-env ASAN_OPTIONS detect_leaks=0} "$@"; }
  mpicc.mpich -O1 -o "$work/mpich" "$src/tests/mpi/mpi_shim_check.c" || fail "mpicc.mpich could not build the check"
  CHECK_OUT=$work/mpich-plain mpich -env CHECK_OUT "$work/mpich-plain" "$work/mpich" 2>"$work/mpich.err" ||
    { tail "$work/mpich.err"; fail "the check failed under MPICH without the shim"; }
  results mpich-plain
  mpich -env CHECK_OUT "$work/mpich-shim" -env TALLY_STATS 1 -env LD_PRELOAD "$runtimes$mpich_shim" "$work/mpich" \
    2>"$work/mpich.err" || { tail "$work/mpich.err"; fail "the check failed under MPICH with libtally_mpich"; }
  results mpich-shim
  diff "$work/mpich-plain.out" "$work/mpich-shim.out" >"$work/mpich.diff" ||
    { head "$work/mpich.diff"; fail "MPICH: results differ with libtally_mpich"; }
  diff -q "$work/plain.out" "$work/mpich-plain.out" >/dev/null || fail "MPICH and Open MPI give different results"
  n=$(grep -c "^tally stats:   allreduce " "$work/mpich.err")
  [ "$n" -eq $((ranks * 3)) ] || fail "MPICH: $n Tally communicators ran allreduce, expected $((ranks * 3))"
  mpich -env LD_PRELOAD "$runtimes$shim" "$work/mpich" >/dev/null 2>"$work/cross.err" && fail "an MPICH program ran with the Open MPI shim"
  grep -q 'runs the MPI library "MPICH.*built against Open MPI' "$work/cross.err" || { head -3 "$work/cross.err"; fail "no clear refusal of MPICH"; }
  mpi -x LD_PRELOAD="$runtimes$mpich_shim" "$work/plain" >/dev/null 2>"$work/cross.err" && fail "an Open MPI program ran with the MPICH shim"
  grep -q 'runs the MPI library "Open MPI.*built against MPICH' "$work/cross.err" || { head -3 "$work/cross.err"; fail "no clear refusal of Open MPI"; }
  echo "MPICH: the same results with libtally_mpich.so, on Tally; each shim refuses the other MPI at MPI_Init"
fi
echo "test_mpi: ok"
