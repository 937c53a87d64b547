#!/usr/bin/env bash
# Installs the Debian packages Tally needs to build, test and benchmark.
# Idempotent: packages already present are not reinstalled; apt is only touched when one is missing.
set -euo pipefail
packages=(build-essential cmake pkg-config libssl-dev libcriterion-dev libhwloc-dev libudev-dev libibverbs-dev librdmacm-dev iperf3 openmpi-bin iptables iproute2
          python3-matplotlib libopenmpi-dev python3-mpi4py python3-numpy)
# python3-matplotlib draws tally-trace's and tally-perf's pictures; libopenmpi-dev builds libtally_mpi (src/mpi/);
# python3-mpi4py and python3-numpy run its mpi4py check.
# `install-deps.sh fuzz` adds what `make fuzz` needs: clang, and libclang-rt-dev for libFuzzer and the
# sanitizer runtimes (clang only recommends it, and recommends are not installed here).
if [ "${1:-}" = fuzz ]; then packages+=(clang libclang-rt-dev); fi
# `install-deps.sh torch` adds what `make torch` and the PyTorch backend's tests need: Debian's
# PyTorch 1.13 (for /usr/bin/python3), its C++ headers and libraries, pybind11, the Python headers,
# setuptools for python/setup.py, ninja (torch's extension builder, parallel under MAX_JOBS), pytest.
if [ "${1:-}" = torch ]; then
  packages+=(python3-torch libtorch-dev pybind11-dev python3-dev python3-setuptools ninja-build python3-pytest)
fi
# `install-deps.sh mpich` adds Debian's MPICH 4 for libtally_mpi's MPICH flavour (libtally_mpich.so) and its
# test. Its alternatives have priority 40 against Open MPI's 50: mpirun, mpicc and mpi.h stay Open MPI's.
if [ "${1:-}" = mpich ]; then packages+=(mpich libmpich-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
