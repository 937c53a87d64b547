/* The single-copy path for large messages: in place of the payload the sender writes a descriptor
 * of its buffer (address and length) into the ring, and the receiver copies the payload straight
 * from the sender's memory into the posted buffer with process_vm_readv ("cross-memory attach").
 * The sender's request completes only when the receiver has acknowledged the copy (cma_acked, a
 * counter in the segment), so the buffer stays valid while it is read.
 *
 * Whether the kernel allows it (ptrace rules: Yama's ptrace_scope, containers without
 * SYS_PTRACE, non-dumpable processes) is tested once per connection while connecting, by reading
 * a random value from the sender; where it is refused the connection uses the ring only. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "core/bytes.h"
#include "core/error.h"
#include "shm.h"

enum { CMA_BYTES_PER_CALL = 4 << 20 }; /* bounds one call, so other connections move in between */

void shm_cma_describe(const struct tally_request *req, unsigned char desc[SHM_CMA_DESC_BYTES]) {
  tally_put_u64(desc, (uint64_t)(uintptr_t)req->buf);
  tally_put_u64(desc + 8, (uint64_t)req->len);
}

int shm_cma_probe(pid_t sender, uint64_t address, uint64_t value, char *why, size_t whylen) {
  uint64_t got = 0;
  struct iovec local = {&got, sizeof got}, remote = {(void *)(uintptr_t)address, sizeof got};
  ssize_t n = process_vm_readv(sender, &local, 1, &remote, 1, 0);
  if (n != (ssize_t)sizeof got) {
    snprintf(why, whylen, "process_vm_readv: %s", n < 0 ? strerror(errno) : "short read");
    return 0;
  }
  if (got != value) {
    snprintf(why, whylen, "process_vm_readv read some other process: the ranks do not see the same pids");
    return 0;
  }
  return 1;
}

/* process_vm_readv failed with `err`: the sender died, failed and took the buffer back, or broke
 * the rules. */
static tally_result_t read_failed(struct tally_conn *c, int err, uint64_t address, size_t len) {
  if (err == ESRCH || shm_peer_gone(c)) return shm_peer_failed(c);
  TALLY_CHECK(shm_read_mailbox(c));
  tally_error_blame(c->peer);
  if (err == EPERM || err == EACCES)
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "reading a message from %s with process_vm_readv was refused (%s) although it worked when the "
                       "ranks connected; set TALLY_SHM_CMA_BYTES=0 to send every message through the ring",
                       c->peer_text, strerror(err));
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "%s described a %zu-byte buffer at 0x%llx that this rank cannot read (%s): protocol error or "
                     "memory corruption in that process",
                     c->peer_text, len, (unsigned long long)address, err ? strerror(err) : "nothing copied");
}

tally_result_t shm_cma_read(struct tally_conn *c, struct tally_request *q, int *complete) {
  *complete = 0;
  uint64_t address = tally_get_u64(c->cma_desc), len = tally_get_u64(c->cma_desc + 8);
  if (len != q->len || address + len < address)
    return shm_broke_protocol(c, "the length of a single-copy message", len, q->len);
  size_t want = q->len - q->progressed < CMA_BYTES_PER_CALL ? q->len - q->progressed : CMA_BYTES_PER_CALL;
  struct iovec local = {(char *)q->buf + q->progressed, want};
  struct iovec remote = {(void *)(uintptr_t)(address + q->progressed), want};
  ssize_t got;
  do got = process_vm_readv(c->peer_pid, &local, 1, &remote, 1, 0);
  while (got < 0 && errno == EINTR);
  if (got <= 0) return read_failed(c, got < 0 ? errno : 0, address, q->len);
  q->progressed += (size_t)got;
  /* What was read is the message only if the sender was alive all along (its pid was not reused)
   * and had not given the buffer back by failing: both are checked after the copy. */
  atomic_thread_fence(memory_order_seq_cst);
  if (shm_peer_gone(c)) return shm_peer_failed(c);
  TALLY_CHECK(shm_read_mailbox(c));
  if (q->progressed < q->len) return TALLY_SUCCESS;
  atomic_store_explicit(&c->seg->cma_acked, ++c->cma_acked, memory_order_release);
  shm_wake_peer(c);
  *complete = 1;
  return TALLY_SUCCESS;
}

tally_result_t shm_cma_collect_acks(struct tally_conn *c, int *moved) {
  uint64_t acked = atomic_load_explicit(&c->seg->cma_acked, memory_order_acquire);
  if (acked < c->cma_acked || acked > c->cma_sent)
    return shm_broke_protocol(c, "the count of single-copy messages read", acked, c->cma_sent);
  for (; c->cma_acked < acked && c->ack_head; c->cma_acked++) { /* the queue holds cma_sent - cma_acked */
    struct tally_request *q = c->ack_head;
    c->ack_head = q->next;
    if (!c->ack_head) c->ack_tail = NULL;
    q->done = 1;
    *moved = 1;
  }
  return TALLY_SUCCESS;
}
