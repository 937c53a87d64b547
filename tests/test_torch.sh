#!/usr/bin/env bash
# The PyTorch backend's tests (python/tests, pytest): builds tally_torch against this build tree's
# libtally, then runs them. Where Debian's torch or pytest is missing, says so and exits 77, which
# ctest reports as skipped (scripts/install-deps.sh torch, or make torch, installs them).
#   tests/test_torch.sh BUILD_DIR [pytest arguments...]
set -euo pipefail
build=$(cd "${1:?usage: tests/test_torch.sh BUILD_DIR [pytest args]}" && pwd)
shift
src=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}
if ! "$python" -c 'import torch.distributed, pytest' 2>/dev/null; then
  echo "SKIPPED: $python cannot import torch.distributed and pytest; run" \
    "'bash scripts/install-deps.sh torch' (or make torch) to install Debian's python3-torch and python3-pytest"
  exit 77
fi
bash "$src/python/build.sh" "$build"
export TALLY_BUILD_DIR="$build"  # test_ddp.py runs $build/tally-run
# Not from python/: there, the source tree's tally_torch (without the built _C) would shadow the built one.
cd "$build/python"
PYTHONPATH="$build/python/lib" PYTHONDONTWRITEBYTECODE=1 exec "$python" -m pytest -p no:cacheprovider -q \
  --rootdir "$src/python" "$src/python/tests" "$@"
