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

# libtally_mpi, where the build found MPI: an MPI program linked with `pkg-config --libs tally-mpi`
# (libtally_mpi before libmpi) and one through find_package(Tally COMPONENTS mpi) run on Tally.
mpi_lib=$(ls "$work"/prefix/lib*/libtally_mpi.so "$work"/prefix/lib/*/libtally_mpi.so 2>/dev/null | head -1 || true)
if [ -z "$mpi_lib" ]; then
  echo "NOTE: libtally_mpi was not built (no MPI at configure time): its packaging is not checked"
elif ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  echo "NOTE: no mpicc or mpirun: the installed libtally_mpi is not checked"
else
  cat >"$work/mpi_consumer.c" <<'C'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int one = 1, sum = 0;
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("mpi consumer sum %d\n", sum);
  MPI_Finalize();
  return sum == 2 ? 0 : 1;
}
C
  mpicc -o "$work/mpi_by_pkgconfig" "$work/mpi_consumer.c" $(pkg-config --libs tally-mpi) \
    -Wl,-rpath,"$(pkg-config --variable=libdir tally-mpi)"
  readelf -d "$work/mpi_by_pkgconfig" | grep NEEDED | head -1 | grep -q libtally_mpi ||
    { echo "pkg-config tally-mpi does not put libtally_mpi before libmpi"; exit 1; }
  mkdir "$work/cm_mpi"
  cat >"$work/cm_mpi/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(mpi_consumer C)
find_package(Tally 0.1 REQUIRED COMPONENTS mpi)
find_package(MPI REQUIRED COMPONENTS C)
add_executable(mpi_by_cmake ../mpi_consumer.c)
target_link_libraries(mpi_by_cmake PRIVATE Tally::tally_mpi MPI::MPI_C)
CM
  cmake -S "$work/cm_mpi" -B "$work/cm_mpi/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
  cmake --build "$work/cm_mpi/build" >/dev/null
  for consumer in "$work/mpi_by_pkgconfig" "$work/cm_mpi/build/mpi_by_cmake"; do
    # its one small allreduce would stay with MPI where the 2 ranks have a core each (the default
    # threshold): this check is about linking, so every size goes to Tally
    TALLY_MPI_COLLS='allreduce>=0' TALLY_STATS=1 timeout 60 mpirun --allow-run-as-root --oversubscribe -np 2 \
      -x TALLY_MPI_COLLS -x TALLY_STATS "$consumer" \
      >"$work/mpi.out" 2>&1 || { cat "$work/mpi.out"; echo "$consumer failed"; exit 1; }
    grep -q "^tally stats:   allreduce " "$work/mpi.out" ||
      { cat "$work/mpi.out"; echo "$consumer: its MPI_Allreduce did not run on Tally"; exit 1; }
  done
  echo "libtally_mpi: found by pkg-config (tally-mpi) and find_package(Tally COMPONENTS mpi); MPI_Allreduce ran on Tally"
fi

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
if [ -n "$mpi_lib" ]; then
  moved_mpi_lib=${mpi_lib/$work\/prefix/$work\/moved}
  ldd "$moved_mpi_lib" | grep -q "libtally.so.0 => $work/moved/" ||
    { echo "the installed libtally_mpi does not load the installed libtally:"; ldd "$moved_mpi_lib"; exit 1; }
fi
echo "install ok: the installed tally-perf, tally-run and tally-topo run from a moved prefix with no LD_LIBRARY_PATH"
