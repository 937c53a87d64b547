/* The shared-memory segment of one connection: its name, its creation by the sender (reserved in
 * full with posix_fallocate, so that a full /dev/shm is an error now rather than a SIGBUS later),
 * the receiver's open with every field of the header checked, and the handshake after which the
 * name is unlinked, so that a crash leaves nothing behind in /dev/shm. Both sides map it with
 * MAP_POPULATE: a page first touched during a collective costs a fault in each process, which made
 * the first hundred 64 KiB allgathers on 2 ranks several times slower than the rest.
 *
 *   sender (connect)                          receiver (accept)
 *   shm_open(O_CREAT|O_EXCL, 0600)
 *   posix_fallocate, mmap, write the header
 *   state = READY  ------------------------>  shm_open (retried until the deadline), check, mmap
 *                                             pidfd_open(sender), probe process_vm_readv
 *                  <------------------------  receiver_pid, cma_ok; state = MAPPED; unlink
 *   pidfd_open(receiver), unlink (again) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "shm.h"

enum { HANDSHAKE_POLL_MS = 1 };

void shm_segment_name(uint64_t comm_id, int from, int to, char name[SHM_NAME_BYTES]) {
  snprintf(name, SHM_NAME_BYTES, "/tally-%016" PRIx64 "-%d-%d", comm_id, from, to);
}

/* The identity of this process's PID namespace (0 when /proc cannot say): pids in the segment
 * mean something only to processes of the same namespace. */
static uint64_t pid_namespace(void) {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

void shm_segment_unlink(struct tally_conn *c) {
  if (!c->linked) return;
  if (shm_unlink(c->name) != 0 && errno != ENOENT)
    TLOG_WARN(TALLY_SUBSYS_NET, "cannot remove the shared-memory segment /dev/shm%s: %s; remove it by hand", c->name,
              strerror(errno));
  c->linked = 0;
}

void shm_segment_unmap(struct tally_conn *c) {
  if (c->seg) munmap(c->seg, c->seg_bytes);
  c->seg = NULL;
  c->ring = NULL;
}

/* posix_fallocate failed: says how much was needed, what /dev/shm has, and what fixes it. */
static tally_result_t reserve_failed(const struct tally_conn *c, size_t bytes, int err) {
  if (err != ENOSPC)
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "cannot reserve %zu bytes of shared memory (/dev/shm%s) for the connection to "
                       "rank %d: %s; or use TALLY_TRANSPORT=tcp",
                       bytes, c->name, c->peer, strerror(err));
  struct statvfs vfs;
  char space[96] = "";
  if (statvfs("/dev/shm", &vfs) == 0)
    snprintf(space, sizeof space, " (%.1f MiB free of %.1f MiB)",
             (double)vfs.f_bavail * (double)vfs.f_frsize / 1048576.0,
             (double)vfs.f_blocks * (double)vfs.f_frsize / 1048576.0);
  return TALLY_ERROR(TALLY_ERR_SYSTEM,
                     "cannot reserve %zu bytes (%.1f MiB) of shared memory for the connection to rank %d: /dev/shm is "
                     "too small%s. Give it more room (docker run --shm-size=1g, or mount a bigger tmpfs on /dev/shm), "
                     "make the rings smaller (TALLY_SHM_SLOTS, TALLY_SHM_SLOT_BYTES), or use TALLY_TRANSPORT=tcp",
                     bytes, (double)bytes / 1048576.0, c->peer, space);
}

tally_result_t shm_segment_create(struct tally_conn *c, uint64_t comm_id) {
  struct tally_endpoint *ep = c->ep;
  const struct shm_settings *s = &ep->settings;
  size_t ring_bytes = (size_t)s->slots * s->slot_bytes, bytes = SHM_HEADER_BYTES + ring_bytes;
  shm_segment_name(comm_id, ep->rank, c->peer, c->name);
  int fd = shm_open(c->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST)
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "the shared-memory segment /dev/shm%s for rank %d -> rank %d already exists: two processes "
                       "claim rank %d of this communicator, or a crashed job left it (remove it by hand)",
                       c->name, ep->rank, c->peer, ep->rank);
  if (fd < 0)
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "cannot create the shared-memory segment /dev/shm%s: %s; check that /dev/shm "
                       "is a writable tmpfs, or use TALLY_TRANSPORT=tcp",
                       c->name, strerror(errno));
  c->linked = 1;
  int err = posix_fallocate(fd, 0, (off_t)bytes);
  void *map = err ? MAP_FAILED : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  int map_err = errno;
  close(fd);
  if (err || map == MAP_FAILED) {
    shm_segment_unlink(c);
    if (err) return reserve_failed(c, bytes, err);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot map %zu bytes of shared memory (/dev/shm%s): %s", bytes, c->name,
                       strerror(map_err));
  }
  c->seg = map;
  c->seg_bytes = bytes;
  c->ring = (unsigned char *)map + SHM_HEADER_BYTES;
  c->ring_bytes = ring_bytes;
  c->slot_bytes = s->slot_bytes;
  struct shm_segment *seg = c->seg;
  seg->magic = SHM_MAGIC;
  seg->version = SHM_VERSION;
  seg->header_bytes = SHM_HEADER_BYTES;
  seg->comm_id = comm_id;
  seg->sender_rank = ep->rank;
  seg->receiver_rank = c->peer;
  seg->sender_pid = (int32_t)getpid();
  seg->pid_namespace = pid_namespace();
  seg->slots = s->slots;
  seg->slot_bytes = s->slot_bytes;
  seg->ring_offset = SHM_HEADER_BYTES;
  seg->segment_bytes = bytes;
  seg->cma_min_bytes = s->cma_min_bytes;
  seg->cma_probe_address = (uint64_t)(uintptr_t)&c->cma_probe;
  seg->cma_probe_value = c->cma_probe;
  atomic_store_explicit(&seg->state, SEGMENT_READY, memory_order_release);
  return TALLY_SUCCESS;
}

tally_result_t shm_segment_wait_mapped(struct tally_conn *c, uint64_t deadline) {
  struct shm_segment *seg = c->seg;
  while (atomic_load_explicit(&seg->state, memory_order_acquire) != SEGMENT_MAPPED) {
    if (tally_now_ns() >= deadline)
      return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                         "rank %d did not open its shared-memory segment /dev/shm%s within TALLY_TIMEOUT: it has not "
                         "started, failed earlier, or does not run on this host (shared memory joins ranks of one "
                         "host only; check TALLY_HOSTID)",
                         c->peer, c->name);
    TALLY_CHECK(shm_check_peer_alive(c->ep, c->peer, "waiting for it to open a new shared-memory segment"));
    TALLY_CHECK(shm_pause(c->ep, HANDSHAKE_POLL_MS));
  }
  pid_t receiver = seg->receiver_pid;
  uint32_t cma_ok = seg->cma_ok;
  shm_segment_unlink(c); /* both sides have it mapped: the name is no longer needed */
  if (receiver <= 0 || cma_ok > 1)
    return TALLY_ERROR(TALLY_ERR_REMOTE, "rank %d wrote a malformed handshake into /dev/shm%s (pid %d, cma_ok %u)",
                       c->peer, c->name, (int)receiver, cma_ok);
  c->peer_pid = receiver;
  c->cma_min_bytes = cma_ok ? c->ep->settings.cma_min_bytes : 0;
  return TALLY_SUCCESS;
}

/* The header of a segment this rank opened: every field must be what this rank expects. */
static tally_result_t check_header(const struct tally_conn *c, const struct shm_segment *seg, uint64_t comm_id,
                                   size_t file_bytes) {
  const struct {
    const char *name;
    unsigned long long got, want;
  } fields[] = {
      {"magic", seg->magic, SHM_MAGIC},
      {"version", seg->version, SHM_VERSION},
      {"header size", seg->header_bytes, SHM_HEADER_BYTES},
      {"communicator id", seg->comm_id, comm_id},
      {"sending rank", (unsigned long long)seg->sender_rank, (unsigned long long)c->peer},
      {"receiving rank", (unsigned long long)seg->receiver_rank, (unsigned long long)c->ep->rank},
      {"ring offset", seg->ring_offset, SHM_HEADER_BYTES},
      {"segment size", seg->segment_bytes, SHM_HEADER_BYTES + (uint64_t)seg->slots * seg->slot_bytes},
      {"file size", file_bytes, seg->segment_bytes},
  };
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
    if (fields[i].got != fields[i].want)
      return TALLY_ERROR(TALLY_ERR_REMOTE,
                         "the shared-memory segment /dev/shm%s is not what rank %d should have made for this rank: "
                         "its %s is %llu where %llu was expected (ranks running different Tally versions, or a file "
                         "left by another program: remove it by hand)",
                         c->name, c->peer, fields[i].name, fields[i].got, fields[i].want);
  if (!shm_settings_valid(seg->slots, seg->slot_bytes))
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "the shared-memory segment /dev/shm%s from rank %d has a ring of %u slots of %u bytes, outside "
                       "what TALLY_SHM_SLOTS and TALLY_SHM_SLOT_BYTES allow",
                       c->name, c->peer, seg->slots, seg->slot_bytes);
  if (seg->sender_pid <= 0)
    return TALLY_ERROR(TALLY_ERR_REMOTE, "the shared-memory segment /dev/shm%s from rank %d names pid %d", c->name,
                       c->peer, (int)seg->sender_pid);
  uint64_t mine = pid_namespace();
  if (seg->pid_namespace && mine && seg->pid_namespace != mine)
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "rank %d runs in another PID namespace (another container) than this rank: shared memory needs "
                       "the ranks of a host to see each other's processes. Share the PID namespace (docker run "
                       "--pid=host, or --pid=container:NAME) or use TALLY_TRANSPORT=tcp",
                       c->peer);
  return TALLY_SUCCESS;
}

/* Maps the checked segment, opens a pidfd on the sender, probes process_vm_readv, and answers. */
static tally_result_t finish_open(struct tally_conn *c, int fd, const struct shm_segment *header) {
  size_t bytes = header->segment_bytes;
  pid_t sender = header->sender_pid;
  uint64_t cma_min = header->cma_min_bytes, probe_address = header->cma_probe_address;
  uint64_t probe_value = header->cma_probe_value;
  uint32_t slot_bytes = header->slot_bytes;
  void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (map == MAP_FAILED)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot map %zu bytes of shared memory (/dev/shm%s): %s", bytes, c->name,
                       strerror(errno));
  c->linked = 1; /* checked: this name is this connection's, and the receiver may remove it */
  c->seg = map;
  c->seg_bytes = bytes;
  c->ring = (unsigned char *)map + SHM_HEADER_BYTES;
  c->ring_bytes = bytes - SHM_HEADER_BYTES;
  c->slot_bytes = slot_bytes;
  c->peer_pid = sender;
  c->pidfd = shm_open_pidfd(sender);
  if (c->pidfd < 0 && errno == ESRCH) {
    shm_segment_unlink(c); /* its creator is gone: nobody else will remove it */
    tally_error_blame(c->peer);
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "rank %d (pid %d) made the shared-memory segment /dev/shm%s and then exited "
                       "or was killed; check that rank's log",
                       c->peer, (int)sender, c->name);
  }
  int cma_ok = 0;
  if (cma_min > 0) {
    char why[160];
    cma_ok = shm_cma_probe(sender, probe_address, probe_value, why, sizeof why);
    static atomic_int logged;
    if (!cma_ok && !atomic_exchange(&logged, 1))
      TLOG_INFO(TALLY_SUBSYS_NET,
                "shared memory: single-copy transfers (TALLY_SHM_CMA_BYTES) from rank %d are not possible (%s); "
                "every message takes two copies through the ring. To use them, allow ptrace between the ranks "
                "(kernel.yama.ptrace_scope=0, or the SYS_PTRACE capability in a container)",
                c->peer, why);
  }
  c->cma_min_bytes = cma_ok ? cma_min : 0;
  c->seg->receiver_pid = (int32_t)getpid();
  c->seg->cma_ok = (uint32_t)cma_ok;
  atomic_store_explicit(&c->seg->state, SEGMENT_MAPPED, memory_order_release);
  shm_segment_unlink(c); /* the sender does so too; whoever is first leaves nothing behind */
  return TALLY_SUCCESS;
}

/* The file is open: checks its owner and, once the sender has filled it, its header; maps it. */
static tally_result_t open_checked(struct tally_conn *c, int fd, uint64_t comm_id, int *found) {
  struct stat st;
  if (fstat(fd, &st) != 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "fstat on /dev/shm%s: %s", c->name, strerror(errno));
  if (st.st_uid != geteuid())
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "the shared-memory segment /dev/shm%s belongs to uid %u, not to this rank's uid %u: the ranks "
                       "of a job must run as one user (or remove the file if another program left it)",
                       c->name, (unsigned)st.st_uid, (unsigned)geteuid());
  if (st.st_size < SHM_HEADER_BYTES) return TALLY_SUCCESS; /* the sender is still reserving it */
  struct shm_segment *header = mmap(NULL, SHM_HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (header == MAP_FAILED) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot map /dev/shm%s: %s", c->name, strerror(errno));
  tally_result_t r = TALLY_SUCCESS;
  uint32_t state = atomic_load_explicit(&header->state, memory_order_acquire);
  if (state == SEGMENT_READY) {
    struct shm_segment copy; /* checked and used once: the other process cannot change it in between */
    memcpy(&copy, header, sizeof copy);
    r = check_header(c, &copy, comm_id, (size_t)st.st_size);
    if (r == TALLY_SUCCESS) r = finish_open(c, fd, &copy);
    *found = r == TALLY_SUCCESS;
  } else if (state == SEGMENT_MAPPED) {
    r = TALLY_ERROR(TALLY_ERR_SYSTEM,
                    "the shared-memory segment /dev/shm%s was already opened by another process: two processes claim "
                    "rank %d of this communicator",
                    c->name, c->ep->rank);
  } else if (state != SEGMENT_CREATING) {
    r = TALLY_ERROR(TALLY_ERR_REMOTE,
                    "the shared-memory segment /dev/shm%s has handshake state %u, which no Tally "
                    "writes (a file left by another program? remove it by hand)",
                    c->name, state);
  }
  munmap(header, SHM_HEADER_BYTES);
  return r;
}

tally_result_t shm_segment_try_open(struct tally_conn *c, uint64_t comm_id, int *found) {
  *found = 0;
  shm_segment_name(comm_id, c->peer, c->ep->rank, c->name);
  int fd = shm_open(c->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0) {
    if (errno == ENOENT) return TALLY_SUCCESS; /* not made yet */
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot open the shared-memory segment /dev/shm%s from rank %d: %s", c->name,
                       c->peer, strerror(errno));
  }
  tally_result_t r = open_checked(c, fd, comm_id, found);
  close(fd);
  if (r != TALLY_SUCCESS) shm_segment_unmap(c);
  return r;
}
