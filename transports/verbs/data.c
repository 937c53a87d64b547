/* The verbs data path: what each completion means, matching arrived messages to receives, and
 * handing credits and sends to the device in order (protocol in verbs.h). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "core/log.h"
#include "verbs.h"

struct tally_mr_hold *verbs_recv_hold(struct tally_conn *c, uint32_t number) {
  return &c->recv_holds[number % VERBS_CREDITS];
}

static struct tally_mr_hold *write_hold(struct tally_conn *c, uint32_t number) {
  return &c->write_holds[number % VERBS_MAX_WRITES];
}

static tally_result_t protocol_error(struct tally_conn *c, const char *what) {
  verbs_conn_broken(c, "protocol violation: %s", what);
  return verbs_conn_error(c, "talking to");
}

static tally_result_t push_arrival(struct tally_conn *c, int type, int slot, uint32_t seq, uint32_t bytes) {
  if (c->narrivals == VERBS_ARRIVALS) return protocol_error(c, "more messages arrived than receives were credited");
  c->arrivals[(c->arrival_head + c->narrivals++) % VERBS_ARRIVALS] = (struct verbs_arrival){type, slot, seq, bytes};
  return TALLY_SUCCESS;
}

static void pop_arrival(struct tally_conn *c) {
  c->arrival_head = (c->arrival_head + 1) % VERBS_ARRIVALS;
  c->narrivals--;
}

static tally_result_t on_frame(struct tally_conn *c, const unsigned char *frame) {
  uint32_t seq;
  if (tally_notice_decode(frame, c->peer, &seq)) {
    if (c->recv_head && c->recv_head->hdr.seq == seq) c->recv_head->peer_waiting = 1;
  } else if (!c->error_frame_pending) {
    memcpy(c->error_frame, frame, sizeof c->error_frame);
    c->error_frame_pending = 1;
  }
  return TALLY_SUCCESS;
}

/* A control message landed in receive slot `slot`. */
static tally_result_t on_message(struct tally_conn *c, int slot, uint32_t length, int *moved) {
  const unsigned char *m = verbs_recv_slot(c, slot);
  if (length < VERBS_CTRL_HEAD) return protocol_error(c, "a control message shorter than its head");
  c->budget += (int)tally_get_u32(m + 4);
  uint32_t seq = tally_get_u32(m + 8), body = length - VERBS_CTRL_HEAD;
  const unsigned char *b = m + VERBS_CTRL_HEAD;
  switch (m[0]) {
    case MSG_CREDIT: {
      struct verbs_credit *cr = &c->credits[seq % VERBS_CREDITS];
      if (body < 20) return protocol_error(c, "a malformed credit");
      if ((int32_t)(seq - c->send_seq) < 0) return verbs_repost_recv(c, slot); /* that message went eager */
      if ((int32_t)(seq - c->send_seq) >= VERBS_CREDITS || cr->valid)
        return protocol_error(c, "more receives credited than this side can track");
      *cr = (struct verbs_credit){.seq = seq,
                                  .valid = 1,
                                  .eager_only = m[1] & FLAG_EAGER_ONLY,
                                  .addr = tally_get_u64(b),
                                  .rkey = tally_get_u32(b + 8),
                                  .len = tally_get_u64(b + 12)};
      return verbs_repost_recv(c, slot);
    }
    case MSG_EAGER:
    case MSG_HEADER:
      if (body < TALLY_WIRE_HEADER_BYTES) return protocol_error(c, "a message without its header");
      *moved = 1;
      return push_arrival(c, m[0], slot, seq, body - TALLY_WIRE_HEADER_BYTES);
    case MSG_AUTH: return push_arrival(c, MSG_AUTH, slot, seq, body);
    case MSG_FRAME:
      if (body < TALLY_WIRE_HEADER_BYTES) return protocol_error(c, "a short frame");
      TALLY_CHECK(on_frame(c, b));
      return verbs_repost_recv(c, slot);
    case MSG_ACK: return verbs_repost_recv(c, slot);
    default: return protocol_error(c, "a control message of unknown type");
  }
}

tally_result_t verbs_on_completion(struct tally_conn *c, const struct ibv_wc *wc, int *moved) {
  int kind = (int)(wc->wr_id >> 32), index = (int)(uint32_t)wc->wr_id;
  if (wc->status != IBV_WC_SUCCESS) {
    if (c->stopped) return TALLY_SUCCESS; /* a failed connection's leftovers */
    verbs_conn_broken(c, "%s failed on %s: %s",
                      kind == WR_RECV    ? "a receive"
                      : kind == WR_WRITE ? "an RDMA write"
                                         : "a send",
                      c->ep->device_text, ibv_wc_status_str(wc->status));
    return verbs_conn_error(c, "talking to");
  }
  switch (kind) {
    case WR_SEND: c->free_send[c->nfree_send++] = index; return TALLY_SUCCESS;
    case WR_WRITE: {
      if (c->stopped) return TALLY_SUCCESS; /* fail() already forgot its request and registration */
      struct tally_request *q = c->writing_head;
      tally_mr_put(&c->ep->mr_cache, write_hold(c, c->writes_done++));
      c->writing_head = q->next;
      if (!c->writing_head) c->writing_tail = NULL;
      q->done = 1;
      *moved = 1;
      return TALLY_SUCCESS;
    }
    default:
      if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) { /* a payload landed; the slot held nothing */
        *moved = 1;
        TALLY_CHECK(push_arrival(c, 0, -1, ntohl(wc->imm_data), 0));
        return verbs_repost_recv(c, index);
      }
      return on_message(c, index, wc->byte_len, moved);
  }
}

static void complete_recv(struct tally_conn *c, struct tally_request *q) {
  if (c->uncredited == q) c->uncredited = q->next; /* matched by an eager message: no credit needed */
  c->recv_head = q->next;
  if (!c->recv_head) c->recv_tail = NULL;
  tally_mr_put(&c->ep->mr_cache, verbs_recv_hold(c, c->recv_done++));
  c->header_checked = 0;
  q->done = 1;
}

tally_result_t verbs_match_receives(struct tally_conn *c) {
  while (c->recv_head && c->narrivals > 0) {
    struct tally_request *q = c->recv_head;
    const struct verbs_arrival *a = &c->arrivals[c->arrival_head];
    if (a->type == MSG_AUTH || a->seq != c->recv_done) return protocol_error(c, "a message out of order");
    if (c->header_checked) { /* waiting for the payload's immediate */
      if (a->type != 0) return protocol_error(c, "a message before the payload of the one before it");
      pop_arrival(c);
      complete_recv(c, q);
      continue;
    }
    if (a->type == 0) return protocol_error(c, "a payload without its header");
    const unsigned char *m = verbs_recv_slot(c, a->slot) + VERBS_CTRL_HEAD;
    TALLY_CHECK(tally_header_check(m, &q->hdr, c->peer));
    int slot = a->slot, type = a->type;
    uint32_t bytes = a->bytes;
    if (type == MSG_EAGER) {
      if (bytes != q->len) return protocol_error(c, "an eager message of another length than its header says");
      memcpy(q->buf, m + TALLY_WIRE_HEADER_BYTES, q->len);
    } else if (verbs_recv_slot(c, slot)[1] & FLAG_NO_PAYLOAD) {
      return protocol_error(c, "a message without payload where one was credited");
    }
    pop_arrival(c);
    TALLY_CHECK(verbs_repost_recv(c, slot));
    if (type == MSG_EAGER)
      complete_recv(c, q);
    else
      c->header_checked = 1;
  }
  return TALLY_SUCCESS;
}

tally_result_t verbs_post_credits(struct tally_conn *c, int *moved) {
  while (c->uncredited) {
    struct tally_request *q = c->uncredited;
    int eager = q->len <= VERBS_EAGER_BYTES;
    int slot = verbs_ctrl_begin(c, MSG_CREDIT, eager ? FLAG_EAGER_ONLY : 0, (uint32_t)q->progressed, 2);
    if (slot < 0) return TALLY_SUCCESS;
    unsigned char *b = verbs_send_slot(c, slot) + VERBS_CTRL_HEAD;
    const struct tally_mr_hold *hold = verbs_recv_hold(c, (uint32_t)q->progressed);
    tally_put_u64(b, eager ? 0 : (uintptr_t)q->buf);
    tally_put_u32(b + 8, eager ? 0 : hold->mr->rkey);
    tally_put_u64(b + 12, q->len);
    TALLY_CHECK(verbs_ctrl_post(c, slot, 20));
    c->uncredited = q->next;
    *moved = 1;
  }
  return TALLY_SUCCESS;
}

static void pop_send(struct tally_conn *c) {
  c->send_head = c->send_head->next;
  if (!c->send_head) c->send_tail = NULL;
  c->send_seq++;
}

/* A small message: header and payload through a control slot; the request is done at once. */
static tally_result_t post_eager(struct tally_conn *c, struct tally_request *q, int *posted) {
  int slot = verbs_ctrl_begin(c, MSG_EAGER, 0, c->send_seq, 2);
  if (slot < 0) return TALLY_SUCCESS;
  unsigned char *b = verbs_send_slot(c, slot) + VERBS_CTRL_HEAD;
  memcpy(b, q->wire, TALLY_WIRE_HEADER_BYTES);
  memcpy(b + TALLY_WIRE_HEADER_BYTES, q->buf, q->len);
  TALLY_CHECK(verbs_ctrl_post(c, slot, TALLY_WIRE_HEADER_BYTES + q->len));
  struct verbs_credit *cr = &c->credits[c->send_seq % VERBS_CREDITS];
  if (cr->valid && cr->seq == c->send_seq) cr->valid = 0; /* credited, but not needed */
  pop_send(c);
  q->done = 1;
  *posted = 1;
  return TALLY_SUCCESS;
}

/* A large message: its header, then its payload written straight into the credited buffer. A
 * credit of another length means the ranks disagree: the header alone goes, and the receiver's
 * check of it reports the mismatch. */
static tally_result_t post_rendezvous(struct tally_conn *c, struct tally_request *q, int *posted) {
  struct verbs_credit *cr = &c->credits[c->send_seq % VERBS_CREDITS];
  if (!cr->valid || cr->seq != c->send_seq) return TALLY_SUCCESS; /* the receive is not posted yet */
  int mismatch = cr->eager_only || cr->len != q->len;
  if (!mismatch && c->writes_posted - c->writes_done == VERBS_MAX_WRITES) return TALLY_SUCCESS;
  int slot = verbs_ctrl_begin(c, MSG_HEADER, mismatch ? FLAG_NO_PAYLOAD : 0, c->send_seq, mismatch ? 2 : 3);
  if (slot < 0) return TALLY_SUCCESS;
  struct tally_mr_hold *hold = write_hold(c, c->writes_posted);
  if (!mismatch) {
    tally_result_t r = tally_mr_get(&c->ep->mr_cache, q->buf, q->len, 1, hold);
    if (r != TALLY_SUCCESS) {
      c->free_send[c->nfree_send++] = slot;
      return r;
    }
  }
  memcpy(verbs_send_slot(c, slot) + VERBS_CTRL_HEAD, q->wire, TALLY_WIRE_HEADER_BYTES);
  TALLY_CHECK(verbs_ctrl_post(c, slot, TALLY_WIRE_HEADER_BYTES));
  cr->valid = 0;
  pop_send(c);
  *posted = 1;
  if (mismatch) {
    q->done = 1;
    return TALLY_SUCCESS;
  }
  struct ibv_sge sge = {(uintptr_t)q->buf, (uint32_t)q->len, hold->mr->lkey};
  struct ibv_send_wr wr = {.wr_id = VERBS_WR_ID(WR_WRITE, 0),
                           .sg_list = &sge,
                           .num_sge = 1,
                           .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
                           .send_flags = IBV_SEND_SIGNALED,
                           .imm_data = htonl(c->send_seq - 1),
                           .wr.rdma = {.remote_addr = cr->addr, .rkey = cr->rkey}},
                     *bad;
  int err = ibv_post_send(c->qp, &wr, &bad);
  if (err) {
    tally_mr_put(&c->ep->mr_cache, hold);
    verbs_conn_broken(c, "cannot post an RDMA write: %s", strerror(err));
    return verbs_conn_error(c, "sending to");
  }
  c->budget--;
  c->writes_posted++;
  q->next = NULL;
  if (c->writing_tail)
    c->writing_tail->next = q;
  else
    c->writing_head = q;
  c->writing_tail = q;
  return TALLY_SUCCESS;
}

tally_result_t verbs_post_sends(struct tally_conn *c, int *moved) {
  int posted = 1;
  while (c->send_head && posted) {
    struct tally_request *q = c->send_head;
    posted = 0;
    TALLY_CHECK(q->len <= VERBS_EAGER_BYTES ? post_eager(c, q, &posted) : post_rendezvous(c, q, &posted));
    *moved |= posted;
  }
  if (c->to_return >= VERBS_ACK_BATCH) {
    int slot = verbs_ctrl_begin(c, MSG_ACK, 0, 0, 1);
    if (slot >= 0) TALLY_CHECK(verbs_ctrl_post(c, slot, 0));
  }
  return TALLY_SUCCESS;
}

void verbs_drop_requests(struct tally_conn *c) {
  for (uint32_t n = c->recv_done; n != c->recv_seq; n++) tally_mr_put(&c->ep->mr_cache, verbs_recv_hold(c, n));
  for (uint32_t n = c->writes_done; n != c->writes_posted; n++) tally_mr_put(&c->ep->mr_cache, write_hold(c, n));
  c->recv_done = c->recv_seq;
  c->writes_done = c->writes_posted;
  c->recv_head = c->recv_tail = c->send_head = c->send_tail = c->writing_head = c->writing_tail = NULL;
  c->uncredited = NULL;
}
