#!/usr/bin/env bash
# Installs Tally into a scratch prefix and builds a consumer against it twice: once through
# pkg-config, once through CMake's find_package(Tally) and the Tally::tally target. Both must run.
# Then the installed tools run from the prefix with an empty LD_LIBRARY_PATH (their RPATH is
# relative to their own folder), after the build tree's library has been hidden.
# usage: test_install.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=${1:?source dir}; build=${2:?build dir}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cat >"$work/consumer.c" <<'C'
#include <stdio.h>
#include <tally.h>
int main(void) {
  int v = 0;
  if (tally_get_version(&v) != TALLY_SUCCESS || v != TALLY_VERSION_CODE) return 1;
  tally_unique_id_t id;
  tally_comm_t comm;
  float x = 2, y = 0;
  if (tally_get_unique_id(&id) || tally_comm_init_rank(&comm, 1, id, 0) ||
      tally_allreduce(&x, &y, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL) || y != 2 || tally_comm_destroy(comm))
    return 1;
  printf("consumer ok %d\n", v);
  return 0;
}
C
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig:$work/prefix/lib/x86_64-linux-gnu/pkgconfig"
gcc -o "$work/by_pkgconfig" "$work/consumer.c" $(pkg-config --cflags --libs tally) \
  -Wl,-rpath,"$(pkg-config --variable=libdir tally)"
"$work/by_pkgconfig"
readelf -d "$(pkg-config --variable=libdir tally)/libtally.so" | grep -q 'SONAME.*libtally.so.0' || { echo "no versioned soname"; exit 1; }
mkdir "$work/cm"
cat >"$work/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(Tally 0.1 REQUIRED)
add_executable(by_cmake ../consumer.c)
target_link_libraries(by_cmake PRIVATE Tally::tally)
CM
cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cm/build" >/dev/null
"$work/cm/build/by_cmake"
test -x "$work/prefix/bin/tally-run" && test -x "$work/prefix/bin/tally-perf" && test -f "$work/prefix/include/tally.h"

# Relocatable: move the prefix, so that nothing can point at the old one, and run every tool from it
# with no LD_LIBRARY_PATH. The loader's trace names the library each program found.
mv "$work/prefix" "$work/moved"
bin="$work/moved/bin"
run_installed() { env -u LD_LIBRARY_PATH LD_LIBRARY_PATH= "$@"; }
for tool in tally-perf tally-topo tally-run; do
  if ldd "$bin/$tool" | grep -q 'not found'; then
    echo "installed $tool misses a library:"; ldd "$bin/$tool"; exit 1
  fi
done
ldd "$bin/tally-perf" | grep -q "libtally.so.0 => $work/moved/" ||
  { echo "installed tally-perf does not load the installed libtally:"; ldd "$bin/tally-perf"; exit 1; }
run_installed "$bin/tally-perf" allreduce -N 2 -b 8 -e 64K -n 3 -w 1 | grep -q "Avg bus bandwidth" ||
  { echo "installed tally-perf allreduce -N 2 failed"; exit 1; }
run_installed "$bin/tally-run" -n 2 "$bin/tally-perf" allreduce -b 8 -e 1K -n 2 -w 1 | grep -q "Avg bus bandwidth" ||
  { echo "installed tally-run with tally-perf failed"; exit 1; }
run_installed "$bin/tally-topo" | grep -q "^host: " || { echo "installed tally-topo failed"; exit 1; }
echo "install ok: the installed tally-perf, tally-run and tally-topo run from a moved prefix with no LD_LIBRARY_PATH"
