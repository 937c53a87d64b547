/* A verbs connection's resources (queue pair, completion queue, control slots), its queue pair's
 * states and remote access, and the posting of control messages with their flow control (verbs.h).
 *
 * The queue pair is this transport's own (ibv_create_qp, not rdma_create_qp), so that the connection
 * manager never moves it: it goes through INIT, RTR and RTS with the manager's attributes but with
 * no remote access at all, and is granted RDMA WRITE (what credited payloads need) only once the
 * peer has passed the authentication handshake. Until then a connected stranger can only send into
 * the control slots, which the handshake reads; with a guessed rkey its RDMA write or read of this
 * rank's registered memory fails on the device. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "core/log.h"
#include "verbs.h"

unsigned char *verbs_recv_slot(struct tally_conn *c, int slot) { return c->ctrl + (size_t)slot * VERBS_CTRL_BYTES; }

unsigned char *verbs_send_slot(struct tally_conn *c, int slot) {
  return c->ctrl + (size_t)(VERBS_RECV_SLOTS + slot) * VERBS_CTRL_BYTES;
}

tally_result_t verbs_repost_recv(struct tally_conn *c, int slot) {
  struct ibv_sge sge = {(uintptr_t)verbs_recv_slot(c, slot), VERBS_CTRL_BYTES, c->ctrl_mr->lkey};
  struct ibv_recv_wr wr = {.wr_id = VERBS_WR_ID(WR_RECV, slot), .sg_list = &sge, .num_sge = 1}, *bad;
  int err = ibv_post_recv(c->qp, &wr, &bad);
  if (err) return TALLY_ERROR(TALLY_ERR_SYSTEM, "posting a receive for %s: %s", c->peer_text, strerror(err));
  c->to_return++;
  return TALLY_SUCCESS;
}

/* Moves the queue pair to `state` with the attributes the connection manager gives for it, less
 * any remote access (verbs_grant_remote_write adds that). */
static tally_result_t move_qp(struct tally_conn *c, enum ibv_qp_state state, const char *name) {
  struct ibv_qp_attr attr = {.qp_state = state};
  int mask = 0;
  if (rdma_init_qp_attr(c->id, &attr, &mask))
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "the connection manager has no %s attributes for the queue pair to %s: %s",
                       name, c->peer_text, strerror(errno));
  attr.qp_access_flags = 0;
  int err = ibv_modify_qp(c->qp, &attr, mask);
  if (err)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "moving the queue pair to %s to %s on %s: %s", c->peer_text, name,
                       c->ep->device_text, strerror(err));
  return TALLY_SUCCESS;
}

/* A queue pair that can hold every control message and write in flight, inline sends when the
 * device offers them, in INIT with no remote access. */
static tally_result_t create_qp(struct tally_conn *c) {
  struct ibv_qp_init_attr attr = {.send_cq = c->cq,
                                  .recv_cq = c->cq,
                                  .qp_type = IBV_QPT_RC,
                                  .cap = {.max_send_wr = VERBS_SEND_SLOTS + VERBS_MAX_WRITES,
                                          .max_recv_wr = VERBS_RECV_SLOTS,
                                          .max_send_sge = 1,
                                          .max_recv_sge = 1,
                                          .max_inline_data = 128}};
  c->qp = ibv_create_qp(c->ep->pd, &attr);
  if (!c->qp) {
    attr.cap.max_inline_data = 0;
    c->qp = ibv_create_qp(c->ep->pd, &attr);
  }
  if (!c->qp)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "creating a queue pair on %s for %s: %s", c->ep->device_text, c->peer_text,
                       strerror(errno));
  c->max_inline = attr.cap.max_inline_data;
  return move_qp(c, IBV_QPS_INIT, "INIT");
}

tally_result_t verbs_qp_ready(struct tally_conn *c) {
  TALLY_CHECK(move_qp(c, IBV_QPS_RTR, "RTR"));
  return move_qp(c, IBV_QPS_RTS, "RTS");
}

tally_result_t verbs_grant_remote_write(struct tally_conn *c) {
  struct ibv_qp_attr attr = {.qp_access_flags = IBV_ACCESS_REMOTE_WRITE};
  int err = ibv_modify_qp(c->qp, &attr, IBV_QP_ACCESS_FLAGS);
  if (err)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "granting %s RDMA writes on %s: %s", c->peer_text, c->ep->device_text,
                       strerror(err));
  return TALLY_SUCCESS;
}

void verbs_disconnect(struct tally_conn *c) {
  if (!c->qp) return;
  struct ibv_qp_attr attr = {.qp_state = IBV_QPS_ERR}; /* flushes what is posted, as rdma_disconnect would */
  ibv_modify_qp(c->qp, &attr, IBV_QP_STATE);
  rdma_disconnect(c->id);
}

tally_result_t verbs_conn_create(struct tally_endpoint *ep, struct rdma_cm_id *id, struct tally_conn **out) {
  struct tally_conn *c = calloc(1, sizeof *c);
  if (!c) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a verbs connection");
  c->ep = ep;
  c->id = id;
  c->peer = -1;
  snprintf(c->peer_text, sizeof c->peer_text, "a peer not yet authenticated");
  id->context = c;
  size_t bytes = (size_t)(VERBS_RECV_SLOTS + VERBS_SEND_SLOTS) * VERBS_CTRL_BYTES;
  tally_result_t r = TALLY_SUCCESS;
  c->ctrl = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  c->cq =
      ibv_create_cq(ep->verbs, 2 * (VERBS_RECV_SLOTS + VERBS_SEND_SLOTS + VERBS_MAX_WRITES), c, ep->comp_channel, 0);
  if (!c->ctrl || !c->cq)
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "creating a completion queue on %s: %s", ep->device_text,
                    c->ctrl ? strerror(errno) : "out of memory");
  if (r == TALLY_SUCCESS && !(c->ctrl_mr = ibv_reg_mr(ep->pd, c->ctrl, bytes, IBV_ACCESS_LOCAL_WRITE)))
    r = TALLY_ERROR(TALLY_ERR_SYSTEM,
                    "registering %zu bytes of control slots on %s: %s (is the locked-memory limit too low? see "
                    "`ulimit -l`)",
                    bytes, ep->device_text, strerror(errno));
  if (r == TALLY_SUCCESS) r = create_qp(c);
  for (int i = 0; i < VERBS_RECV_SLOTS && r == TALLY_SUCCESS; i++) r = verbs_repost_recv(c, i);
  if (r != TALLY_SUCCESS) {
    verbs_conn_destroy(c);
    return r;
  }
  c->to_return = 0; /* the first posting is the peer's starting budget, not a return */
  c->budget = VERBS_RECV_SLOTS;
  for (int i = 0; i < VERBS_SEND_SLOTS; i++) c->free_send[c->nfree_send++] = i;
  *out = c;
  return TALLY_SUCCESS;
}

void verbs_conn_destroy(struct tally_conn *c) {
  if (!c) return;
  if (c->qp) {
    verbs_disconnect(c);
    ibv_destroy_qp(c->qp);
  }
  if (c->id) rdma_destroy_id(c->id);
  if (c->cq) ibv_destroy_cq(c->cq);
  if (c->ctrl_mr) ibv_dereg_mr(c->ctrl_mr);
  free(c->ctrl);
  free(c);
}

int verbs_ctrl_begin(struct tally_conn *c, enum verbs_msg type, int flags, uint32_t seq, int need) {
  if (c->budget < need || c->nfree_send == 0) return -1;
  int slot = c->free_send[--c->nfree_send];
  unsigned char *m = verbs_send_slot(c, slot);
  m[0] = (unsigned char)type;
  m[1] = (unsigned char)flags;
  tally_put_u16(m + 2, 0);
  tally_put_u32(m + 4, (uint32_t)c->to_return);
  tally_put_u32(m + 8, seq);
  tally_put_u32(m + 12, 0);
  c->to_return = 0;
  return slot;
}

tally_result_t verbs_ctrl_post(struct tally_conn *c, int slot, size_t body) {
  uint32_t length = (uint32_t)(VERBS_CTRL_HEAD + body);
  struct ibv_sge sge = {(uintptr_t)verbs_send_slot(c, slot), length, c->ctrl_mr->lkey};
  struct ibv_send_wr wr = {.wr_id = VERBS_WR_ID(WR_SEND, slot),
                           .sg_list = &sge,
                           .num_sge = 1,
                           .opcode = IBV_WR_SEND,
                           .send_flags = IBV_SEND_SIGNALED | (length <= c->max_inline ? IBV_SEND_INLINE : 0)},
                     *bad;
  int err = ibv_post_send(c->qp, &wr, &bad);
  if (err) {
    c->free_send[c->nfree_send++] = slot;
    verbs_conn_broken(c, "cannot post a send: %s", strerror(err));
    return verbs_conn_error(c, "sending to");
  }
  c->budget--;
  return TALLY_SUCCESS;
}

tally_result_t verbs_poll(struct tally_conn *c, int *moved) {
  struct ibv_wc wc[16];
  int n;
  while ((n = ibv_poll_cq(c->cq, 16, wc)) > 0)
    for (int i = 0; i < n; i++) TALLY_CHECK(verbs_on_completion(c, &wc[i], moved));
  if (n < 0) {
    verbs_conn_broken(c, "polling its completion queue failed");
    return verbs_conn_error(c, "talking to");
  }
  return TALLY_SUCCESS;
}

void verbs_conn_broken(struct tally_conn *c, const char *fmt, ...) {
  if (c->broken[0]) return; /* the first cause is the one worth reporting */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->broken, sizeof c->broken, fmt, ap);
  va_end(ap);
}

tally_result_t verbs_conn_error(struct tally_conn *c, const char *what) {
  if (c->error_frame_pending) return tally_error_frame_decode(c->error_frame, c->peer);
  tally_error_blame(c->peer);
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "%s %s over RDMA (%s): %s; that rank has probably failed or exited early (check its log)", what,
                     c->peer_text, c->ep->device_text, c->broken[0] ? c->broken : "connection lost");
}
