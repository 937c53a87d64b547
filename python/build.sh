#!/usr/bin/env bash
# Builds tally_torch against the libtally of a CMake build tree of this repository:
#   python/build.sh BUILD_DIR
# leaves the importable package in BUILD_DIR/python/lib (put it on PYTHONPATH), linked with an
# rpath to BUILD_DIR, so nothing needs installing. Incremental (ninja); MAX_JOBS caps the
# compiler processes (default 2). PYTHON is Debian's /usr/bin/python3, the one torch belongs to.
set -euo pipefail
build=$(cd "${1:?usage: python/build.sh BUILD_DIR}" && pwd)
cd "$(dirname "$0")"
MAX_JOBS=${MAX_JOBS:-2} TALLY_BUILD_DIR=$build "${PYTHON:-/usr/bin/python3}" setup.py -q build \
  --build-base "$build/python" --build-lib "$build/python/lib"
