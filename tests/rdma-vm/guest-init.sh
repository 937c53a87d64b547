#!/bin/bash
# PID 1 of the rdma-vm guest (baked into the image as /sbin/rdma-vm-init by build-image.sh).
# Mounts the basics and the 9p shares that run.sh passes in, brings up the virtio NIC with a
# Soft-RoCE device (rxe0) on it, runs the job from the per-run share with cwd = the build
# directory, writes its output and exit status into that share, and powers the VM off.
#
# Protocol with run.sh (the per-run share, 9p tag "run", mounted at /mnt/run):
#   config  written by the host: VM_MOUNTS (array of "tag=path": 9p shares to mount at those paths),
#           VM_CWD (directory to run the job in)
#   env     written by the host: `export NAME=value` lines for the job
#   cmd     written by the host: the job, one shell command line
#   stage   appended by the guest: "booted", then "rxe-ok" once rxe0 is up
#   error   written by the guest when it could not set the VM up (then no status)
#   output  the job's stdout and stderr
#   status  the job's exit status
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8

RUN=/mnt/run

poweroff_now() {
  sync
  echo o >/proc/sysrq-trigger
  sleep 10 # poweroff is asynchronous; if PID 1 exits first the kernel panics, which also ends qemu
}

# Report a setup failure to the host (if the share is there) and on the console, then power off.
fail() {
  echo "rdma-vm guest: $*" >/dev/console
  if mountpoint -q "$RUN"; then echo "$*" >"$RUN/error"; fi
  poweroff_now
}

mount_if_needed() { # FSTYPE SOURCE DIR [OPTIONS]
  mkdir -p "$3"
  mountpoint -q "$3" || mount -t "$1" -o "${4:-defaults}" "$2" "$3" || fail "cannot mount $1 on $3"
}

mount_if_needed proc proc /proc
mount_if_needed sysfs sysfs /sys
mount_if_needed devtmpfs devtmpfs /dev
mount_if_needed tmpfs tmpfs /tmp mode=1777
mount_if_needed tmpfs tmpfs /run mode=0755
mount_if_needed tmpfs tmpfs /dev/shm mode=1777
mount_if_needed devpts devpts /dev/pts gid=5,mode=620,ptmxmode=666
exec </dev/null >/dev/console 2>&1

hostname rdma-vm

ninep_opts=trans=virtio,version=9p2000.L,msize=262144,cache=none
modprobe -a 9p 9pnet_virtio || fail "cannot load the 9p modules"
mount_if_needed 9p run "$RUN" "$ninep_opts"
echo booted >>"$RUN/stage"

VM_MOUNTS=() VM_CWD=/
# shellcheck disable=SC1091 # written by run.sh for each run
. "$RUN/config" || fail "cannot read $RUN/config"
for m in "${VM_MOUNTS[@]}"; do
  mount_if_needed 9p "${m%%=*}" "${m#*=}" "$ninep_opts"
done

# Network: the first virtio NIC (its name depends on the PCI slot: ens3, enp0s3, eth0, ...).
ip link set lo up
modprobe -a virtio_net >/dev/null 2>&1
nic=""
for _ in $(seq 50); do
  for d in /sys/class/net/*; do
    if [ "$(basename "$(readlink -f "$d/device/driver" 2>/dev/null)")" = virtio_net ]; then
      nic=$(basename "$d")
      break 2
    fi
  done
  sleep 0.1
done
[ -n "$nic" ] || fail "no virtio network interface found"
ip addr add 10.0.2.15/24 dev "$nic" || fail "cannot give $nic an address"
ip link set "$nic" up || fail "cannot bring $nic up"
ip route add default via 10.0.2.2 dev "$nic" 2>/dev/null

# Soft-RoCE on that NIC.
modprobe -a rdma_rxe ib_uverbs rdma_ucm || fail "cannot load rdma_rxe ib_uverbs rdma_ucm"
rdma link add rxe0 type rxe netdev "$nic" || fail "rdma link add rxe0 on $nic failed"
ok=""
for _ in $(seq 100); do
  if ibv_devices 2>/dev/null | grep -qw rxe0 && ibv_devinfo -d rxe0 2>/dev/null | grep -q PORT_ACTIVE; then
    ok=1
    break
  fi
  sleep 0.1
done
[ -n "$ok" ] || fail "rxe0 did not come up: $(ibv_devices 2>&1 | tr '\n' ' ') $(rdma link show 2>&1 | tr '\n' ' ')"
echo rxe-ok >>"$RUN/stage"

# The job. RDMA memory registration pins pages, so lift the locked-memory limit.
ulimit -l unlimited
ulimit -n 65536 2>/dev/null
cd "$VM_CWD" || fail "cannot cd to $VM_CWD"
# Its output goes straight to the share (run.sh follows it live), not through a pipe, so that
# background processes it leaves behind holding stdout cannot delay the status; poweroff ends them.
(
  # shellcheck disable=SC1091 # written by run.sh for each run
  . "$RUN/env"
  exec bash "$RUN/cmd"
) >"$RUN/output" 2>&1 </dev/null
status=$?
echo "$status" >"$RUN/status"
poweroff_now
