#!/usr/bin/env bash
# Installs the Debian packages Tally needs to build, test and benchmark.
# Idempotent: packages already present are not reinstalled; apt is only touched when one is missing.
set -euo pipefail
packages=(build-essential cmake pkg-config libssl-dev libcriterion-dev libhwloc-dev libudev-dev libibverbs-dev librdmacm-dev iperf3 openmpi-bin iptables iproute2)
# `install-deps.sh fuzz` adds what `make fuzz` needs: clang, and libclang-rt-dev for libFuzzer and the
# sanitizer runtimes (clang only recommends it, and recommends are not installed here).
if [ "${1:-}" = fuzz ]; then packages+=(clang libclang-rt-dev); fi
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
