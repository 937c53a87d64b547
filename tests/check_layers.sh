#!/usr/bin/env bash
# The layer rule (ARCHITECTURE.md): a file of the library may include headers of its own layer and
# of the layers below it, never of a layer above; a transport includes no other transport's files.
# Reads every quoted #include under src/, transports/ and algorithms/, resolves it as the compiler
# does (the including file's folder, then src/, include/ and the top), and names each file and line
# that breaks the rule, or an include it cannot resolve.
#   check_layers.sh SOURCE_DIR        check the tree; exit 1 on any violation
#   check_layers.sh --self-test       plant violations in a copy of this tree and check each is caught
set -uo pipefail

# Lowest first. include/ (the public header) is below them all. mpi (libtally_mpi, src/mpi/) sits above
# the library and, as any program using it, may include only the public header and its own files.
LAYERS=(core topology bootstrap transports comm algorithms tuning dispatch device api mpi)

# The layer a repository path belongs to, or "" for paths outside the library.
layer_of() {
  case "$1" in
    include/*) echo public ;;
    src/*/*) local rest=${1#src/}; echo "${rest%%/*}" ;;
    transports/*) echo transports ;;
    algorithms/*) echo algorithms ;;
    *) echo "" ;;
  esac
}

rank_of() {
  [ "$1" = public ] && { echo -1; return; }
  local i
  for i in "${!LAYERS[@]}"; do [ "${LAYERS[$i]}" = "$1" ] && { echo "$i"; return; }; done
  echo ""
}

# The transport a path under transports/ belongs to ("" for the shared files at its top).
transport_of() {
  local rest=${1#transports/}
  case "$rest" in */*) echo "${rest%%/*}" ;; *) echo "" ;; esac
}

check_tree() {
  local root=$1 violations=0 file line inc target dir base
  report() { echo "$1"; violations=$((violations + 1)); }
  cd "$root" || return 2
  while IFS= read -r file; do
    local from_layer from_rank
    from_layer=$(layer_of "$file")
    from_rank=$(rank_of "$from_layer")
    if [ -z "$from_rank" ]; then
      report "$file: folder '$from_layer' is not a layer: add it to LAYERS in tests/check_layers.sh and to ARCHITECTURE.md"
      continue
    fi
    dir=$(dirname "$file")
    while IFS=: read -r line inc; do
      target=""
      for base in "$dir" src include .; do
        if [ -f "$base/$inc" ]; then target=$(realpath -m --relative-to=. "$base/$inc"); break; fi
      done
      if [ -z "$target" ]; then
        report "$file:$line: #include \"$inc\" resolves to no file of the tree"
        continue
      fi
      local to_layer to_rank
      to_layer=$(layer_of "$target")
      to_rank=$(rank_of "$to_layer")
      if [ -z "$to_rank" ]; then
        report "$file:$line: includes $target, which is outside the library's layers"
      elif [ "$from_layer" = mpi ] && [ "$to_layer" != mpi ] && [ "$to_layer" != public ]; then
        report "$file:$line: mpi includes $target of $to_layer: libtally_mpi uses only the public include/tally.h"
      elif [ "$to_rank" -gt "$from_rank" ]; then
        report "$file:$line: $from_layer includes $target of $to_layer, a higher layer ($from_layer may use: ${LAYERS[*]:0:$((from_rank + 1))})"
      elif [ "$from_layer" = transports ] && [ "$to_layer" = transports ]; then
        local from_t to_t
        from_t=$(transport_of "$file")
        to_t=$(transport_of "$target")
        if [ -n "$to_t" ] && [ "$to_t" != "$from_t" ]; then
          report "$file:$line: transport '${from_t:-shared}' includes $target of transport '$to_t': transports meet only through transports/transport.h"
        fi
      fi
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" | sed -E 's/^([0-9]+):[^"]*"([^"]+)".*/\1:\2/')
  done < <(find src transports algorithms -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) | sort)
  if [ "$violations" -gt 0 ]; then
    echo "check_layers: $violations include(s) break the layer rule (lowest first: ${LAYERS[*]})"
    return 1
  fi
  echo "check_layers: every include of $(find src transports algorithms -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) | wc -l) files respects the layers (lowest first: ${LAYERS[*]})"
  return 0
}

self_test() {
  local here scratch out status=0
  here=$(cd "$(dirname "$0")/.." && pwd)
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  cp -r "$here/src" "$here/include" "$here/transports" "$here/algorithms" "$scratch/"
  # A lower layer reaching up, a transport reaching into another one, the MPI shim into the library.
  sed -i '0,/#include "/s//#include "tuning\/tuner.h"\n#include "/' "$scratch/src/comm/comm.c"
  sed -i '0,/#include "/s//#include "transports\/shm\/shm.h"\n#include "/' "$scratch/transports/tcp/tcp.c"
  sed -i '0,/#include "/s//#include "api\/registry.h"\n#include "/' "$scratch/src/mpi/mpi_comms.c"
  local comm_line tcp_line mpi_line
  mpi_line=$(grep -n '#include "api/registry.h"' "$scratch/src/mpi/mpi_comms.c" | cut -d: -f1)
  comm_line=$(grep -n '#include "tuning/tuner.h"' "$scratch/src/comm/comm.c" | cut -d: -f1)
  tcp_line=$(grep -n '#include "transports/shm/shm.h"' "$scratch/transports/tcp/tcp.c" | cut -d: -f1)
  out=$( (check_tree "$scratch") 2>&1)
  local rc=$?
  echo "$out"
  [ "$rc" -eq 1 ] || { echo "self-test: the planted violations were not refused (exit $rc)"; status=1; }
  echo "$out" | grep -q "^src/comm/comm.c:$comm_line: comm includes src/tuning/tuner.h of tuning, a higher layer" ||
    { echo "self-test: src/comm/comm.c:$comm_line (comm including tuning) was not named"; status=1; }
  echo "$out" | grep -q "^transports/tcp/tcp.c:$tcp_line: transport 'tcp' includes transports/shm/shm.h" ||
    { echo "self-test: transports/tcp/tcp.c:$tcp_line (tcp including shm) was not named"; status=1; }
  echo "$out" | grep -q "^src/mpi/mpi_comms.c:$mpi_line: mpi includes src/api/registry.h of api" ||
    { echo "self-test: src/mpi/mpi_comms.c:$mpi_line (the MPI shim reaching into the library) was not named"; status=1; }
  [ "$status" -eq 0 ] && echo "self-test: the three planted violations were caught, with file and line"
  return "$status"
}

case "${1:-}" in
  --self-test) self_test ;;
  "") echo "usage: $0 SOURCE_DIR | --self-test" >&2; exit 2 ;;
  *) check_tree "$1" ;;
esac
