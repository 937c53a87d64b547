#!/usr/bin/env bash
# The rdma-vm image recipe: `build-image.sh DEST` debootstraps a minimal Debian with the kernel,
# rdma-core and the runtime libraries of Tally's test binaries, bakes in guest-init.sh as
# /sbin/rdma-vm-init, and writes DEST/disk.img (ext4), DEST/vmlinuz and DEST/initrd.img.
# run.sh calls it (as root) and caches DEST under a key hashed from this file, guest-init.sh and
# the settings below, so editing any of them rebuilds the image on the next run.
#   RDMA_VM_SUITE            Debian suite (default bookworm: the host's, so binaries built here run there)
#   RDMA_VM_MIRROR           Debian mirror (default http://deb.debian.org/debian)
#   RDMA_VM_EXTRA_PACKAGES   more packages for the image, space separated
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: build-image.sh DEST}
suite=${RDMA_VM_SUITE:-bookworm}
mirror=${RDMA_VM_MIRROR:-http://deb.debian.org/debian}

packages=(
  # kernel, Soft-RoCE and the verbs tools
  linux-image-amd64 initramfs-tools kmod udev iproute2
  rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest
  # what the project's test binaries and ctest need at run time
  libcriterion3 libhwloc15 libssl3 libudev1 libibverbs1 librdmacm1 cmake procps iptables util-linux
)
# shellcheck disable=SC2206 # a space-separated list on purpose
packages+=(${RDMA_VM_EXTRA_PACKAGES:-})

root="$dest/rootfs"
mkdir -p "$root"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$root" "$mirror"

install -m 0755 "$here/guest-init.sh" "$root/sbin/rdma-vm-init"
echo rdma-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n10.0.2.15 rdma-vm\n' >"$root/etc/hosts"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

kernels=("$root"/boot/vmlinuz-*) initrds=("$root"/boot/initrd.img-*) # one each: linux-image-amd64
cp "${kernels[-1]}" "$dest/vmlinuz"
cp "${initrds[-1]}" "$dest/initrd.img"
mkfs.ext4 -q -L rdma-vm -d "$root" "$dest/disk.img" 2G
rm -rf "$root"
