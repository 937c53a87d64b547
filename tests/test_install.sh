#!/usr/bin/env bash
# Installs Tally into a scratch prefix and builds a consumer against it twice: once through
# pkg-config, once through CMake's find_package(Tally) and the Tally::tally target. Both must run.
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
echo "install ok"
