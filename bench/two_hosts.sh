#!/usr/bin/env bash
# Two emulated hosts of two ranks each: bench/hosts.sh with H=2, R=2 (see it for how the hosts
# are made). Kept for its callers (the test suite's test_two_hosts, the README's figures).
#
#   bench/two_hosts.sh BUILD check        every result of allreduce, allgather, reduce-scatter,
#                                         broadcast, reduce and alltoall checked: flat ring, the
#                                         tuner's choice and hierarchical (links unshaped)
#   bench/two_hosts.sh BUILD bench [RATE [COLL]]  COLL's busbw (default allreduce), flat ring
#                                         against hierarchical, over links shaped to RATE
#                                         (default 1gbit), medians of 3 runs
# Exit status 77: namespaces cannot be made here (the test is then skipped, and says why).
set -euo pipefail
build=${1:?usage: two_hosts.sh BUILD check|bench [RATE [COLL]]}
mode=${2:-check}
hosts="$(dirname "$0")/hosts.sh"
case $mode in
check) exec bash "$hosts" --rate off "$build" 2 2 check ;;
bench) exec bash "$hosts" --rate "${3:-1gbit}" "$build" 2 2 bench "${4:-allreduce}" ;;
*) echo "two_hosts.sh: unknown mode '$mode' (check or bench)" >&2; exit 2 ;;
esac
