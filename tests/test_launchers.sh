#!/usr/bin/env bash
# tally_comm_init_env under the launchers' own variables: torchrun's (RANK, WORLD_SIZE,
# MASTER_ADDR, MASTER_PORT; no secret, so the job runs unauthenticated and warns) and Open MPI's
# mpirun (OMPI_COMM_WORLD_RANK/SIZE, with TALLY_ROOT and TALLY_SECRET exported by -x).
# usage: test_launchers.sh BUILD_DIR
set -uo pipefail
bin=${1:?build directory}
fail=0
port=$((20000 + RANDOM % 30000))

# torchrun-style: three processes started by hand with torchrun's variables.
log=$(mktemp); pids=()
for r in 0 1 2; do
  RANK=$r WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port timeout 60 \
    "$bin/tally-perf" allreduce -b 8 -e 64K -n 2 -w 1 >"$log.$r" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do wait "${pids[$i]}" || { echo "FAIL torchrun-style rank $i:"; cat "$log.$i"; fail=1; }; done
grep -q "Out of bounds values : 0 OK" "$log.0" || { echo "FAIL torchrun-style: no clean table"; cat "$log.0"; fail=1; }
grep -q "TALLY_SECRET is not set" "$log.0" || { echo "FAIL torchrun-style: no unauthenticated warning"; fail=1; }
[ $fail = 0 ] && echo "ok   torchrun-style variables (unauthenticated, warned)"
rm -f "$log"*

# mpirun
if command -v mpirun >/dev/null; then
  out=$(TALLY_ROOT=127.0.0.1:$((port + 1)) TALLY_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 3 -x TALLY_ROOT -x TALLY_SECRET \
    "$bin/tally-perf" allreduce -b 8 -e 1M -n 2 -w 1 2>&1)
  if [ $? = 0 ] && grep -q "Out of bounds values : 0 OK" <<<"$out"; then
    echo "ok   mpirun -np 3 -x TALLY_ROOT -x TALLY_SECRET"
  else
    echo "FAIL mpirun:"; echo "$out" | tail -20; fail=1
  fi
else
  echo "SKIP mpirun: not installed (scripts/install-deps.sh installs openmpi-bin)"
fi
exit $fail
