#!/usr/bin/env bash
# Tests of tally-topo: it prints the host and at least one NUMA node, sees a CPU binding made with
# taskset, lets TALLY_HOSTID replace the host id, still prints sane values when hwloc cannot load
# the topology, and refuses unknown arguments.
# usage: test_topo_tool.sh BUILD_DIR
set -uo pipefail
bin=${1:?build directory}/tally-topo
. "$(dirname "$0")/checks.sh"

check "tally-topo runs" 0 "$bin"
expect_text "host line" "^host: $(hostname | cut -c1-63), id [0-9a-f]{16} \(from the boot id and hostname\)$"
expect_text "numa node count" "^numa nodes: [1-9][0-9]*$"
expect_text "numa node line" "^numa node 0: os index [0-9]+, cpus [0-9]"
expect_text "binding line" "^binding: cpus [0-9][0-9,-]* \(cores [1-9][0-9]*, hardware threads [1-9][0-9]*\), numa node [0-9]+$"
expect_text "nearest interface line" "^nearest interface: [^ ]+$"
if grep -qE '^  lo ' <<<"$out"; then echo "FAIL loopback listed"; fail=1; fi
real_id=$(sed -n 's/^host: .*, id \([0-9a-f]*\) .*/\1/p' <<<"$out")

check "tally-topo under taskset" 0 taskset -c 0 "$bin"
expect_text "binding to cpu 0" "^binding: cpus 0 \(cores 1, hardware threads 1\)"

check "TALLY_HOSTID a" 0 env TALLY_HOSTID=rack1-node7 "$bin"
id_a=$(sed -n 's/^host: .*, id \([0-9a-f]*\) (from TALLY_HOSTID)$/\1/p' <<<"$out")
check "TALLY_HOSTID b" 0 env TALLY_HOSTID=rack1-node8 "$bin"
id_b=$(sed -n 's/^host: .*, id \([0-9a-f]*\) (from TALLY_HOSTID)$/\1/p' <<<"$out")
check "TALLY_HOSTID a again" 0 env TALLY_HOSTID=rack1-node7 "$bin"
id_a2=$(sed -n 's/^host: .*, id \([0-9a-f]*\) (from TALLY_HOSTID)$/\1/p' <<<"$out")
if [ -z "$id_a" ] || [ "$id_a" = "$id_b" ] || [ "$id_a" != "$id_a2" ] || [ "$id_a" = "$real_id" ]; then
  echo "FAIL TALLY_HOSTID ids: real $real_id, a $id_a, b $id_b, a again $id_a2"; fail=1
fi

check "hwloc unable to load" 0 env HWLOC_COMPONENTS=stop "$bin"
expect_text "one warning" "\[tally WARN\] .*topology: hwloc cannot load"
expect_text "fallback node" "^numa nodes: 1$"
expect_text "fallback binding" "numa node 0$"

check "unknown argument" 2 "$bin" --frobnicate
expect_text "argument named" "unexpected argument '--frobnicate'"
check "help" 0 "$bin" --help
expect_text "usage" "^usage: tally-topo"
exit $fail
