#!/usr/bin/env bash
# tests/rdma-vm/run.sh [COMMAND...]: runs COMMAND inside a Debian VM (qemu) that has a working
# Soft-RoCE device, rxe0, on its NIC (10.0.2.15), for testing the verbs transport on a host whose
# kernel has no RDMA stack. The checkout is shared into the VM by 9p at the same absolute path, and
# COMMAND runs there as root with cwd = the build directory; its output is printed here and its
# exit status is this script's. Default COMMAND: ctest -L verbs --output-on-failure.
#
# The image (build-image.sh: debootstrap, 1 to 5 minutes with a near mirror) is built once and
# cached under ${XDG_CACHE_HOME:-$HOME/.cache}/tally/rdma-vm/KEY/, KEY hashing the recipe; from
# the cache, boot to COMMAND's result takes about 20 s without KVM.
#
# Exit status: COMMAND's; 77 with "rdma-vm: SKIPPED: reason" when this host cannot run the VM (not
# root for a missing package or image, apt or debootstrap failing); 1 with "rdma-vm: FAILED:
# reason" and the end of the console when the VM or rxe0 does not come up or the run times out.
# Environment:
#   BUILD            build directory, relative to the checkout or absolute (default build)
#   RDMA_VM_TIMEOUT  seconds before the VM is killed (default 1200; the image build is not counted)
#   RDMA_VM_MEM      guest memory in MiB (default 3072)     RDMA_VM_CPUS  guest CPUs (default 2)
#   RDMA_VM_ACCEL    qemu accelerator: tcg (default) or kvm (where nested KVM works)
#   RDMA_VM_CONSOLE  1: print the serial console (boot, guest-init) too, not just COMMAND's output
#   RDMA_VM_ENV      names of more variables to pass to COMMAND (TALLY_* and CTEST_* always are)
#   RDMA_VM_SUITE, RDMA_VM_MIRROR, RDMA_VM_EXTRA_PACKAGES: see build-image.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
project=$(cd "$here/../.." && pwd -P)
timeout_s=${RDMA_VM_TIMEOUT:-1200}
build=${BUILD:-build}
[[ $build = /* ]] || build="$project/$build"

skip() { echo "rdma-vm: SKIPPED: $*" >&2; exit 77; }
say() { echo "rdma-vm: $*" >&2; }

work="" building="" qpid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  # timeout(1), whose pid the subshell below leaves in qemu.pid, passes the signal on to qemu.
  if [ -n "$qpid" ] && [ -s "$work/qemu.pid" ]; then kill "$(cat "$work/qemu.pid")" 2>/dev/null || true; fi
  if [ -n "$building" ]; then rm -rf "$building"; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The end of the console (kernel, initramfs and guest-init messages), for failures.
console_tail() {
  if [ -s "$work/console.log" ]; then
    echo "rdma-vm: last lines of the VM console:" >&2
    tr -d '\r' <"$work/console.log" | tail -n 40 | sed 's/^/  | /' >&2
  fi
  if [ -s "$work/qemu.log" ]; then
    echo "rdma-vm: qemu said:" >&2
    tail -n 20 "$work/qemu.log" | sed 's/^/  | /' >&2
  fi
}
die() { echo "rdma-vm: FAILED: $*" >&2; console_tail; exit 1; }

[[ $timeout_s =~ ^[0-9]+$ ]] || die "RDMA_VM_TIMEOUT must be a number of seconds, not '$timeout_s'"
[ -d "$build" ] || die "build directory $build does not exist: build the project first (make build), or set BUILD"

# 1. Host tools, installed like scripts/install-deps.sh does: only the missing ones, only as root.
host_packages=(qemu-system-x86 debootstrap e2fsprogs)
if command -v dpkg >/dev/null; then
  missing=()
  for p in "${host_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || skip "missing Debian packages ${missing[*]}, and not root to install them"
    say "installing ${missing[*]}"
    if ! apt_log=$(apt-get update -qq 2>&1); then echo "$apt_log" >&2; skip "apt-get update failed"; fi
    if ! apt_log=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1); then
      echo "$apt_log" | tail -n 20 >&2
      skip "apt-get install ${missing[*]} failed"
    fi
  fi
fi
for c in qemu-system-x86_64 timeout flock sha256sum; do
  command -v "$c" >/dev/null || skip "$c not found (install qemu-system-x86, coreutils, util-linux)"
done

# 2. The image, cached under a key that changes with the recipe.
key=$({
  cat "$here/build-image.sh" "$here/guest-init.sh"
  echo "suite=${RDMA_VM_SUITE:-bookworm} extra=${RDMA_VM_EXTRA_PACKAGES:-}"
} | sha256sum | cut -c 1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tally/rdma-vm
image=$cache/$key
if [ ! -f "$image/disk.img" ]; then
  [ "$(id -u)" -eq 0 ] || skip "no cached VM image in $image, and building one (debootstrap) needs root"
  mkdir -p "$cache" || skip "cannot create $cache"
  exec 9>"$cache/.lock"
  flock 9 # another run may be building the same image
  if [ ! -f "$image/disk.img" ]; then
    for c in debootstrap mkfs.ext4; do
      command -v "$c" >/dev/null || skip "$c not found (install debootstrap, e2fsprogs)"
    done
    building=$(mktemp -d "$cache/.build-$key.XXXXXX")
    say "building the VM image $key (a few minutes; log in $building.log)"
    start=$SECONDS
    if ! bash "$here/build-image.sh" "$building" >"$building.log" 2>&1; then
      tail -n 20 "$building.log" | sed 's/^/  | /' >&2
      skip "building the VM image failed (debootstrap or mkfs.ext4; log above and in $building.log)"
    fi
    mv -T "$building" "$image" # atomic: an interrupted build leaves no half image under $key
    building=""
    rm -f "$cache/.build-$key".*.log
    say "built the VM image in $((SECONDS - start)) s"
  fi
  exec 9>&-
fi

# 3. The run: a per-run 9p share carries the command in and its output and status out.
work=$(mktemp -d "${TMPDIR:-/tmp}/rdma-vm.XXXXXX")
share=$work/share
mkdir "$share"
touch "$share/output"
[ $# -gt 0 ] || set -- ctest -L verbs --output-on-failure

mounts=("project=$project")
case "$build/" in "$project"/*) ;; *) mounts+=("build=$build") ;; esac
{
  printf 'VM_MOUNTS=('; printf '%q ' "${mounts[@]}"; printf ')\n'
  printf 'VM_CWD=%q\n' "$build"
} >"$share/config"
{
  for v in $(compgen -e); do
    case " ${RDMA_VM_ENV:-} " in *" $v "*) printf 'export %s=%q\n' "$v" "${!v}"; continue ;; esac
    case "$v" in TALLY_* | CTEST_*) printf 'export %s=%q\n' "$v" "${!v}" ;; esac
  done
} >"$share/env"
{ printf 'exec'; printf ' %q' "$@"; printf '\n'; } >"$share/cmd"
shown="" # COMMAND as one would type it, for messages
for a in "$@"; do
  if [[ $a =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then shown+=" $a"; else shown+=" '${a//\'/\'\\\'\'}'"; fi
done
shown=${shown# }

# TCG by default: KVM is opt-in because nested KVM is often broken (on Firecracker hosts the
# guest kernel hangs right after "Probing EDD", with -cpu max failing outright on MSR 0x10a).
accel=${RDMA_VM_ACCEL:-tcg}
case "$accel" in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  tcg) accel_args=(-accel 'tcg,thread=multi' -cpu max) ;;
  *) die "RDMA_VM_ACCEL must be kvm or tcg, not '$accel'" ;;
esac

qpath() { printf '%s' "${1//,/,,}"; } # qemu option values double their commas
virtfs=()
for m in "${mounts[@]}"; do
  virtfs+=(-virtfs "local,path=$(qpath "${m#*=}"),mount_tag=${m%%=*},security_model=none")
done

say "running $shown in $build (image $key, $accel, timeout ${timeout_s} s)"
start=$SECONDS
# (In a subshell, so that bash's "Aborted" or "Killed" note about qemu lands in qemu.log.)
(
  timeout -k 10 "$timeout_s" qemu-system-x86_64 \
    -nodefaults -display none -no-reboot \
    -m "${RDMA_VM_MEM:-3072}" -smp "${RDMA_VM_CPUS:-2}" "${accel_args[@]}" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 init=/sbin/rdma-vm-init panic=-1 quiet loglevel=3" \
    -drive "file=$(qpath "$image/disk.img"),format=raw,if=virtio,snapshot=on" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -virtfs "local,path=$(qpath "$share"),mount_tag=run,security_model=none" "${virtfs[@]}" \
    -serial "file:$(qpath "$work/console.log")" &
  echo $! >"$work/qemu.pid"
  wait $!
) </dev/null >"$work/qemu.log" 2>&1 &
qpid=$!

# Follow the output live until qemu exits (tail reads what is left after that); with
# RDMA_VM_CONSOLE=1 the console too, interleaved.
follow=("$share/output")
if [ "${RDMA_VM_CONSOLE:-0}" = 1 ]; then touch "$work/console.log"; follow=("$work/console.log" "$share/output"); fi
tail -q -n +1 -f --pid="$qpid" "${follow[@]}" | if [ ${#follow[@]} -gt 1 ]; then tr -d '\r'; else cat; fi
rc=0
wait "$qpid" || rc=$?
qpid=""

if [ -f "$share/status" ]; then
  status=$(cat "$share/status")
  [[ $status =~ ^[0-9]+$ ]] || die "the VM wrote a bad exit status '$status'"
  say "$shown exited with $status ($((SECONDS - start)) s in the VM)"
  exit "$status"
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  die "timed out after ${timeout_s} s (RDMA_VM_TIMEOUT) while running $shown"
fi
if [ -s "$share/error" ]; then die "setting up the VM failed: $(cat "$share/error")"; fi
if ! grep -qx booted "$share/stage" 2>/dev/null; then die "the VM did not come up (qemu exited with $rc)"; fi
if ! grep -qx rxe-ok "$share/stage" 2>/dev/null; then die "rxe0 did not appear in the VM"; fi
die "the VM stopped before $shown finished (qemu exited with $rc)"
