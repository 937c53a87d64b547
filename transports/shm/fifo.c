/* The ring of a shared-memory connection and the stream of messages over it.
 *
 * The ring is a single-producer single-consumer byte queue of slots x slot_bytes bytes: `head`
 * (bytes written, by the sender) and `tail` (bytes consumed, by the receiver) only grow, each on
 * its own cache line; the ring offset is the counter modulo the ring size (each side keeps its own
 * offset as it goes, rather than dividing on every copy). A side publishes its
 * counter with a release store after every slot's worth of copying and at the end of each pass,
 * so a long message streams through the ring with both copies overlapping, and the other side
 * reads the counter with an acquire load and checks that it is within one ring of its own.
 *
 * The stream carries the same records as TCP: a 40-byte header (tally_header_encode), then the
 * payload, or, for messages that take the single-copy path (cma.c), a 16-byte descriptor of the
 * sender's buffer; a waiting notice (tally_notice_encode) can stand between two messages. */
#include <string.h>

#include "core/error.h"
#include "shm.h"

int shm_uses_cma(const struct tally_conn *c, size_t len) { return c->cma_min_bytes > 0 && len >= c->cma_min_bytes; }

static size_t min_size(size_t a, uint64_t b) { return (uint64_t)a < b ? a : (size_t)b; }

tally_result_t shm_broke_protocol(const struct tally_conn *c, const char *counter, uint64_t value, uint64_t mine) {
  tally_error_blame(c->peer);
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "%s broke the shared-memory protocol: %s is %llu where this rank is at %llu with a ring of %llu "
                     "bytes (memory corruption in that process, or another program writing into /dev/shm)",
                     c->peer_text, counter, (unsigned long long)value, (unsigned long long)mine,
                     (unsigned long long)c->ring_bytes);
}

/* --- the sending side ------------------------------------------------------------------------ */

static tally_result_t load_space(struct tally_conn *c, uint64_t *space) {
  uint64_t tail = atomic_load_explicit(&c->seg->tail, memory_order_acquire);
  if (tail > c->head || c->head - tail > c->ring_bytes) return shm_broke_protocol(c, "the ring's tail", tail, c->head);
  c->tail_seen = tail;
  *space = c->ring_bytes - (c->head - tail);
  return TALLY_SUCCESS;
}

static void publish_head(struct tally_conn *c) {
  if (c->head == c->published_head) return;
  atomic_store_explicit(&c->seg->head, c->head, memory_order_release);
  c->published_head = c->head;
  shm_wake_peer(c);
}

/* Where a counter that was `at` in the ring is after n more bytes (n at most a ring). */
static uint64_t ring_advance(const struct tally_conn *c, uint64_t at, size_t n) {
  at += n;
  return at >= c->ring_bytes ? at - c->ring_bytes : at;
}

/* The head moves past n bytes just written, published once a slot's worth is unseen. */
static void head_advance(struct tally_conn *c, size_t n) {
  c->head += n;
  c->head_at = ring_advance(c, c->head_at, n);
  if (c->head - c->published_head >= c->slot_bytes) publish_head(c);
}

static void ring_put(struct tally_conn *c, const unsigned char *src, size_t n) {
  size_t at = (size_t)c->head_at, first = min_size(n, c->ring_bytes - at);
  memcpy(c->ring + at, src, first);
  if (n > first) memcpy(c->ring, src + first, n - first); /* wrapped around */
  head_advance(c, n);
}

/* Writes what fits of src[0..n) into the ring, at most a slot between publications; *space is the
 * free room, reloaded when it runs out. */
static tally_result_t put_some(struct tally_conn *c, const unsigned char *src, size_t n, uint64_t *space,
                               size_t *written) {
  *written = 0;
  while (*written < n) {
    if (*space == 0) {
      publish_head(c); /* the receiver can only free what it can see */
      TALLY_CHECK(load_space(c, space));
      if (*space == 0) break;
    }
    size_t chunk = min_size(min_size(n - *written, *space), c->slot_bytes);
    ring_put(c, src + *written, chunk);
    *written += chunk;
    *space -= chunk;
  }
  return TALLY_SUCCESS;
}

/* Writes a request not yet started whose header and payload fit in the room, in a slot and before
 * the ring's end, in one go (put_some's steps, without its loop); returns 0 where it does not. */
static int put_whole(struct tally_conn *c, struct tally_request *q, uint64_t *space) {
  size_t total = TALLY_WIRE_HEADER_BYTES + q->len;
  if (q->progressed || total > *space || total > c->slot_bytes || c->head_at + total > c->ring_bytes ||
      shm_uses_cma(c, q->len))
    return 0;
  unsigned char *at = c->ring + c->head_at;
  memcpy(at, q->wire, TALLY_WIRE_HEADER_BYTES);
  if (q->len) memcpy(at + TALLY_WIRE_HEADER_BYTES, q->buf, q->len);
  head_advance(c, total);
  *space -= total;
  q->progressed = total;
  return 1;
}

/* Writes what fits of the request's header and then of its payload or descriptor. */
static tally_result_t put_request(struct tally_conn *c, struct tally_request *q, uint64_t *space, int *moved) {
  if (put_whole(c, q, space)) {
    *moved = 1;
    return TALLY_SUCCESS;
  }
  size_t written;
  if (q->progressed < TALLY_WIRE_HEADER_BYTES) {
    TALLY_CHECK(put_some(c, q->wire + q->progressed, TALLY_WIRE_HEADER_BYTES - q->progressed, space, &written));
    q->progressed += written;
    if (written) *moved = 1, c->send_mid = 1;
    if (q->progressed < TALLY_WIRE_HEADER_BYTES) return TALLY_SUCCESS;
  }
  size_t body_done = q->progressed - TALLY_WIRE_HEADER_BYTES;
  if (shm_uses_cma(c, q->len)) {
    unsigned char desc[SHM_CMA_DESC_BYTES];
    shm_cma_describe(q, desc);
    TALLY_CHECK(put_some(c, desc + body_done, sizeof desc - body_done, space, &written));
  } else {
    TALLY_CHECK(put_some(c, (const unsigned char *)q->buf + body_done, q->len - body_done, space, &written));
  }
  q->progressed += written;
  if (written) *moved = 1;
  return TALLY_SUCCESS;
}

static size_t wire_bytes(const struct tally_conn *c, const struct tally_request *q) {
  return TALLY_WIRE_HEADER_BYTES + (shm_uses_cma(c, q->len) ? SHM_CMA_DESC_BYTES : q->len);
}

tally_result_t shm_send_pass(struct tally_conn *c, int *moved) {
  /* the room known from the last look at the tail: the tail line is read again only when that room
   * runs out, so a sender whose ring has room does not wait for a line the receiver keeps writing */
  uint64_t space = c->ring_bytes - (c->head - c->tail_seen);
  if (c->notice_left > 0) { /* ahead of any data, and not progress */
    size_t written;
    TALLY_CHECK(put_some(c, c->notice + sizeof c->notice - c->notice_left, c->notice_left, &space, &written));
    c->notice_left -= written;
  }
  while (c->notice_left == 0 && c->send_head) {
    struct tally_request *q = c->send_head;
    TALLY_CHECK(put_request(c, q, &space, moved));
    if (q->progressed < wire_bytes(c, q)) break;
    c->send_head = q->next;
    if (!c->send_head) c->send_tail = NULL;
    if (shm_uses_cma(c, q->len)) { /* done when the receiver says it has read the buffer */
      q->next = NULL;
      if (c->ack_tail)
        c->ack_tail->next = q;
      else
        c->ack_head = q;
      c->ack_tail = q;
      c->cma_sent++;
    } else {
      q->done = 1;
    }
  }
  c->send_mid = c->send_head && c->send_head->progressed > 0;
  publish_head(c);
  return TALLY_SUCCESS;
}

/* --- the receiving side ---------------------------------------------------------------------- */

static tally_result_t load_avail(struct tally_conn *c, uint64_t *avail) {
  uint64_t head = atomic_load_explicit(&c->seg->head, memory_order_acquire);
  if (head < c->tail || head - c->tail > c->ring_bytes) return shm_broke_protocol(c, "the ring's head", head, c->tail);
  *avail = head - c->tail;
  return TALLY_SUCCESS;
}

static void publish_tail(struct tally_conn *c) {
  if (c->tail == c->published_tail) return;
  atomic_store_explicit(&c->seg->tail, c->tail, memory_order_release);
  c->published_tail = c->tail;
  shm_wake_peer(c);
}

/* The tail moves past n bytes just read, published once a slot's worth is unseen. */
static void tail_advance(struct tally_conn *c, size_t n) {
  c->tail += n;
  c->tail_at = ring_advance(c, c->tail_at, n);
  if (c->tail - c->published_tail >= c->slot_bytes) publish_tail(c);
}

static void ring_get(struct tally_conn *c, unsigned char *dst, size_t n) {
  size_t at = (size_t)c->tail_at, first = min_size(n, c->ring_bytes - at);
  memcpy(dst, c->ring + at, first);
  if (n > first) memcpy(dst + first, c->ring, n - first); /* wrapped around */
  tail_advance(c, n);
}

/* Reads what has arrived of the next n bytes of the stream into dst; *avail as in put_some. */
static tally_result_t take_some(struct tally_conn *c, unsigned char *dst, size_t n, uint64_t *avail, size_t *got) {
  *got = 0;
  while (*got < n) {
    if (*avail == 0) {
      publish_tail(c); /* the sender can only refill what it sees freed */
      TALLY_CHECK(load_avail(c, avail));
      if (*avail == 0) break;
    }
    size_t chunk = min_size(min_size(n - *got, *avail), c->slot_bytes);
    ring_get(c, dst + *got, chunk);
    *got += chunk;
    *avail -= chunk;
  }
  return TALLY_SUCCESS;
}

/* Reads the next header for the receive q. Returns with *ready set once a data header was checked
 * against q's; waiting notices in between mark q (when about its collective) and are dropped. */
static tally_result_t take_header(struct tally_conn *c, struct tally_request *q, uint64_t *avail, int *moved,
                                  int *ready) {
  *ready = 0;
  for (;;) {
    size_t got;
    TALLY_CHECK(take_some(c, c->rhdr + c->rhdr_have, sizeof c->rhdr - c->rhdr_have, avail, &got));
    c->rhdr_have += got;
    if (c->rhdr_have < sizeof c->rhdr) return TALLY_SUCCESS;
    uint32_t seq;
    if (!tally_notice_decode(c->rhdr, c->peer, &seq)) break;
    if (seq == q->hdr.seq) q->peer_waiting = 1;
    c->rhdr_have = 0;
  }
  *moved = 1;
  TALLY_CHECK(tally_header_check(c->rhdr, &q->hdr, c->peer));
  c->rhdr_checked = 1;
  *ready = 1;
  return TALLY_SUCCESS;
}

/* Reads what has arrived of q's payload, or its descriptor and then the payload from the sender;
 * *complete once all of it is in q->buf. */
static tally_result_t take_payload(struct tally_conn *c, struct tally_request *q, uint64_t *avail, int *moved,
                                   int *complete) {
  size_t got;
  *complete = 0;
  if (!shm_uses_cma(c, q->len)) {
    TALLY_CHECK(take_some(c, (unsigned char *)q->buf + q->progressed, q->len - q->progressed, avail, &got));
    q->progressed += got;
    if (got) *moved = 1;
    *complete = q->progressed == q->len;
    return TALLY_SUCCESS;
  }
  TALLY_CHECK(take_some(c, c->cma_desc + c->cma_desc_have, sizeof c->cma_desc - c->cma_desc_have, avail, &got));
  c->cma_desc_have += got;
  if (c->cma_desc_have < sizeof c->cma_desc) return TALLY_SUCCESS;
  publish_tail(c); /* the descriptor's room is free while the payload is copied */
  *moved = 1;
  return shm_cma_read(c, q, complete);
}

/* Reads the message for q, not yet started, when all of it has arrived in a slot before the ring's
 * end and its header is the expected one: take_header's and take_payload's steps without their
 * loops. Returns 0, having read nothing, where it does not apply (a notice or a wrong header among
 * them: the general steps read and report those). */
static int take_whole(struct tally_conn *c, struct tally_request *q, uint64_t *avail) {
  size_t total = TALLY_WIRE_HEADER_BYTES + q->len;
  if (c->rhdr_have || total > *avail || total > c->slot_bytes || c->tail_at + total > c->ring_bytes ||
      shm_uses_cma(c, q->len))
    return 0;
  const unsigned char *at = c->ring + c->tail_at;
  if (!tally_header_is(at, &q->hdr)) return 0;
  if (q->len) memcpy(q->buf, at + TALLY_WIRE_HEADER_BYTES, q->len);
  q->progressed = q->len;
  tail_advance(c, total);
  *avail -= total;
  return 1;
}

tally_result_t shm_recv_pass(struct tally_conn *c, int *moved) {
  uint64_t avail = 0;
  TALLY_CHECK(load_avail(c, &avail));
  while (c->recv_head) {
    struct tally_request *q = c->recv_head;
    if (c->rhdr_checked || !take_whole(c, q, &avail)) {
      int ready = c->rhdr_checked, complete;
      if (!ready) TALLY_CHECK(take_header(c, q, &avail, moved, &ready));
      if (!ready) break;
      TALLY_CHECK(take_payload(c, q, &avail, moved, &complete));
      if (!complete) break;
    }
    c->recv_head = q->next;
    if (!c->recv_head) c->recv_tail = NULL;
    c->rhdr_have = 0;
    c->rhdr_checked = 0;
    c->cma_desc_have = 0;
    q->done = 1;
    *moved = 1;
  }
  publish_tail(c);
  return TALLY_SUCCESS;
}
