/* The stream queue (stream_queue.h): one thread per communicator that runs stream-ordered
 * collectives and point-to-point work on pinned staging memory, fed by host functions the streams
 * reach. */
#define _GNU_SOURCE
#include "stream_queue.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_split.h"
#include "comm/comm.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "device/ipc/ipc_collectives.h"
#include "dispatch/dispatch.h"
#include "pinned_pool.h"

enum { STAGING_ALIGN = 256 }; /* the flag's line, then each staged region, on this boundary */

/* What the queue thread does with an op. */
enum op_kind {
  OP_COLLECTIVE, /* runs desc */
  OP_CHECK,      /* runs nothing: reports whether an earlier call failed (see enqueue_check) */
  OP_AGREE,      /* desc gathers every rank's fingerprint of a call; they must all be the same */
  OP_WORK,       /* runs work (point-to-point messages) on its staged spans */
};

/* A stretch of device memory a work's regions cover (one region, or several that overlap), staged
 * at `at` in the op's block. */
struct staged_span {
  uintptr_t user;
  size_t bytes;
  size_t at;
  int copy_in, copy_out;
};

/* What every rank must agree on before a call made of several steps (src/device/ipc). */
struct call_fingerprint {
  uint64_t count;
  int32_t coll, datatype, op, root;
};

struct stream_op {
  struct tally_stream_queue *queue;
  const char *fn;
  struct tally_coll_desc desc; /* its device buffers replaced by their staging */
  struct tally_pinned_block *block;
  _Atomic uint32_t *flag; /* at the block's start: 1 lets the stream go on, 2 too after a failure */
  void *result_staging;   /* filled with 0xff when the collective fails */
  size_t result_bytes;
  void *device_poison; /* where the wait kernel writes 0xff on failure (a check op's result) */
  size_t device_poison_bytes;
  enum op_kind kind;
  int persistent;                      /* captured into a graph: runs at every replay, freed at destroy */
  int orphan;                          /* its stream work was enqueued only in part: the thread retires it */
  int host_call, done;                 /* a blocking host-memory call waiting for its turn */
  struct call_fingerprint fingerprint; /* OP_AGREE: this rank's */
  struct tally_stream_work work;       /* OP_WORK (owned), and its staged spans */
  struct staged_span *spans;
  int nspans;
  tally_result_t result;
  struct stream_op *next;      /* in the ready list */
  struct stream_op *next_kept; /* in the persistent list */
};

struct tally_stream_queue {
  struct tally_comm *comm;
  const struct tally_device_ops *dev;
  pthread_mutex_t lock;
  pthread_cond_t changed; /* on CLOCK_MONOTONIC */
  pthread_t thread;
  int stopping;
  int abandoned; /* destroy gave up waiting: late hand-offs are failed at once, nothing is freed */
  struct stream_op *ready_head, *ready_tail;
  int not_ready; /* enqueued calls whose streams have not reached the hand-off */
  int in_flight; /* calls handed off or enqueued and not yet retired */
  tally_result_t failed;
  struct tally_pinned_pool pool;
  struct stream_op *kept;              /* persistent (captured) calls */
  struct tally_pinned_block *orphaned; /* blocks of orphans: their streams may still read them */
  struct tally_stream_queue *next_abandoned;
};

/* Queues their communicators' destroy gave up on: streams may still reach their host functions,
 * so they stay allocated for the life of the process. */
static struct tally_stream_queue *abandoned_queues;
static pthread_mutex_t abandoned_lock = PTHREAD_MUTEX_INITIALIZER;

/* --- which buffers are staged, and where -------------------------------------------------------- */

void tally_call_memory_find(const struct tally_device_ops *dev, const struct tally_coll_desc *d, int rank, int nranks,
                            struct tally_call_memory *m) {
  size_t send, recv;
  tally_coll_buffer_bytes(d, rank, nranks, &send, &recv);
  m->send_used = d->sendbuf && send > 0;
  m->recv_used = d->recvbuf && recv > 0;
  m->send_on_device = m->send_used && tally_device_memory(dev, d->sendbuf);
  m->recv_on_device = m->recv_used && tally_device_memory(dev, d->recvbuf);
}

/* Internal steps (barriers, checks, agreements) touch no user buffer. */
static const struct tally_call_memory no_user_memory = {0, 0, 0, 0};

struct staging_plan {
  size_t send_bytes, recv_bytes;
  int stage_send, stage_recv;
  size_t send_at, recv_at; /* offsets of the staged regions in the block */
  size_t block_bytes;
};

static size_t align_up(size_t n) { return (n + STAGING_ALIGN - 1) / STAGING_ALIGN * STAGING_ALIGN; }

/* Buffers that overlap (in place) share one staged region with the same layout, so the host
 * algorithm sees the aliasing the caller meant. */
static void plan_staging(const struct tally_coll_desc *d, const struct tally_call_memory *m, int rank, int nranks,
                         struct staging_plan *p) {
  memset(p, 0, sizeof *p);
  tally_coll_buffer_bytes(d, rank, nranks, &p->send_bytes, &p->recv_bytes);
  p->stage_send = m->send_on_device;
  p->stage_recv = m->recv_on_device;
  uintptr_t s = (uintptr_t)d->sendbuf, r = (uintptr_t)d->recvbuf;
  p->block_bytes = STAGING_ALIGN;
  if (p->stage_send && p->stage_recv && s < r + p->recv_bytes && r < s + p->send_bytes) {
    uintptr_t lo = s < r ? s : r, hi_s = s + p->send_bytes, hi_r = r + p->recv_bytes;
    p->send_at = p->block_bytes + (s - lo);
    p->recv_at = p->block_bytes + (r - lo);
    p->block_bytes += align_up((hi_s > hi_r ? hi_s : hi_r) - lo);
    return;
  }
  if (p->stage_send) {
    p->send_at = p->block_bytes;
    p->block_bytes += align_up(p->send_bytes);
  }
  if (p->stage_recv) {
    p->recv_at = p->block_bytes;
    p->block_bytes += align_up(p->recv_bytes);
  }
}

/* --- the thread ---------------------------------------------------------------------------------- */

static void poison(struct stream_op *op) {
  if (op->result_staging) memset(op->result_staging, 0xff, op->result_bytes);
  if (op->kind != OP_WORK || op->host_call) return; /* a blocking call's failure is its return value */
  for (int i = 0; i < op->work.nregions; i++) {
    const struct tally_stream_region *r = &op->work.regions[i];
    if (r->copy_out && r->bytes) memset(r->at, 0xff, r->bytes);
  }
}

void tally_stream_work_release(struct tally_stream_work *work) {
  if (work->release) work->release(work->ctx);
  free(work->regions);
  work->ctx = NULL;
  work->regions = NULL;
}

/* Frees an op that will not run again (no device call: safe in a host function). */
static void free_op(struct stream_op *op) {
  if (op->kind == OP_WORK) tally_stream_work_release(&op->work);
  free(op->spans);
  free(op);
}

/* The lock is held. The block of an orphan may still be read by its stream: it is not reused
 * before the queue closes. */
static void retire_locked(struct tally_stream_queue *q, struct stream_op *op) {
  q->in_flight--;
  if (op->persistent) return;
  if (op->orphan) {
    op->block->next = q->orphaned;
    q->orphaned = op->block;
  } else {
    tally_pinned_give_back(&q->pool, op->block);
  }
  free_op(op);
}

static const char *or_unknown(const char *name) { return name ? name : "?"; }

static void describe(const struct call_fingerprint *f, char *buf, size_t len) {
  snprintf(buf, len, "%s(count=%llu, %s, %s, root %d)", tally_coll_name((enum tally_coll)f->coll),
           (unsigned long long)f->count, or_unknown(tally_datatype_name((tally_datatype_t)f->datatype)),
           or_unknown(tally_op_name((tally_op_t)f->op)), (int)f->root);
}

/* OP_AGREE: gathers the fingerprints, then fails the communicator (as a mismatch naming the first
 * rank that differs) unless all are this rank's. */
static tally_result_t agree(struct tally_comm *comm, struct stream_op *op) {
  TALLY_CHECK(tally_coll_execute(op->fn, &op->desc, comm));
  const struct call_fingerprint *all = op->desc.recvbuf;
  for (int r = 0; r < comm->nranks; r++) {
    if (memcmp(&all[r], &op->fingerprint, sizeof op->fingerprint) == 0) continue;
    char theirs[160], mine[160];
    describe(&all[r], theirs, sizeof theirs);
    describe(&op->fingerprint, mine, sizeof mine);
    tally_error_blame(r);
    return tally_coll_fail(
        comm, TALLY_ERROR(TALLY_ERR_MISMATCH, "%s: collective mismatch: rank %d called %s but this rank called %s",
                          op->fn, r, theirs, mine));
  }
  return TALLY_SUCCESS;
}

static tally_result_t run_op(struct tally_comm *comm, struct stream_op *op) {
  switch (op->kind) {
    case OP_CHECK: return TALLY_SUCCESS; /* the thread reads the queue's failure instead */
    case OP_AGREE: return agree(comm, op);
    case OP_WORK: return op->work.run(comm, op->work.ctx, op->work.regions);
    default: return tally_coll_execute(op->fn, &op->desc, comm);
  }
}

static void *queue_thread(void *arg) {
  struct tally_stream_queue *q = arg;
  pthread_mutex_lock(&q->lock);
  for (;;) {
    while (!q->ready_head && !q->stopping) pthread_cond_wait(&q->changed, &q->lock);
    struct stream_op *op = q->ready_head;
    if (!op) break;
    q->ready_head = op->next;
    if (!q->ready_head) q->ready_tail = NULL;
    pthread_mutex_unlock(&q->lock);

    tally_result_t r = run_op(q->comm, op);
    if (r != TALLY_SUCCESS) poison(op);

    pthread_mutex_lock(&q->lock);
    if (op->kind == OP_CHECK) r = q->failed;
    if (r != TALLY_SUCCESS && q->failed == TALLY_SUCCESS) q->failed = r;
    if (op->host_call) {
      op->result = r;
      op->done = 1;
    } else {
      atomic_store_explicit(op->flag, r == TALLY_SUCCESS ? 1 : 2, memory_order_release);
      if (op->orphan) retire_locked(q, op);
    }
    pthread_cond_broadcast(&q->changed);
  }
  pthread_mutex_unlock(&q->lock);
  return NULL;
}

static void push_ready_locked(struct tally_stream_queue *q, struct stream_op *op) {
  op->next = NULL;
  if (q->ready_tail)
    q->ready_tail->next = op;
  else
    q->ready_head = op;
  q->ready_tail = op;
  pthread_cond_broadcast(&q->changed);
}

/* --- host functions the streams run (they must not block or call the device runtime) ------------ */

static void op_ready(void *arg) {
  struct stream_op *op = arg;
  struct tally_stream_queue *q = op->queue;
  pthread_mutex_lock(&q->lock);
  atomic_store_explicit(op->flag, 0, memory_order_relaxed); /* a graph replay reuses the flag */
  if (op->persistent)
    q->in_flight++;
  else
    q->not_ready--;
  if (q->abandoned) {
    poison(op);
    atomic_store_explicit(op->flag, 2, memory_order_release);
  } else {
    push_ready_locked(q, op);
  }
  pthread_cond_broadcast(&q->changed);
  pthread_mutex_unlock(&q->lock);
}

static void op_retire(void *arg) {
  struct stream_op *op = arg;
  struct tally_stream_queue *q = op->queue;
  pthread_mutex_lock(&q->lock);
  retire_locked(q, op);
  pthread_cond_broadcast(&q->changed);
  pthread_mutex_unlock(&q->lock);
}

/* --- opening, enqueueing, closing ------------------------------------------------------------------ */

static tally_result_t queue_open(struct tally_comm *comm, const struct tally_device_ops *dev,
                                 struct tally_stream_queue **out) {
  struct tally_stream_queue *q = calloc(1, sizeof *q);
  if (!q) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the communicator's stream queue");
  q->comm = comm;
  q->dev = dev;
  q->pool.dev = dev;
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&q->changed, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&q->lock, NULL);
  int err = pthread_create(&q->thread, NULL, queue_thread, q);
  if (err) {
    pthread_cond_destroy(&q->changed);
    pthread_mutex_destroy(&q->lock);
    free(q);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "could not start the stream queue's thread: %s", strerror(err));
  }
  *out = q;
  return TALLY_SUCCESS;
}

/* Waits on the queue's condition until `done(q)` or the communicator's timeout; the lock is held.
 * Returns 0 when done, -1 on timeout. */
static int wait_locked(struct tally_stream_queue *q, int (*done)(const struct tally_stream_queue *)) {
  uint64_t deadline = tally_deadline_after(q->comm->cfg.timeout_s);
  struct timespec at = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
  while (!done(q))
    if (pthread_cond_timedwait(&q->changed, &q->lock, &at) != 0 && !done(q)) return -1;
  return 0;
}

static tally_result_t refuse_if_failed(struct tally_stream_queue *q, const char *fn) {
  pthread_mutex_lock(&q->lock);
  tally_result_t failed = q->failed;
  pthread_mutex_unlock(&q->lock);
  if (failed == TALLY_SUCCESS) return TALLY_SUCCESS;
  return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                     "%s: the communicator is in error state since a stream-ordered call failed (%s: %s); destroy "
                     "it and create a new one",
                     fn, tally_result_string(failed), q->comm->failure);
}

static struct stream_op *op_for_call(struct tally_stream_queue *q, const char *fn, const struct tally_coll_desc *d,
                                     int persistent) {
  struct stream_op *op = calloc(1, sizeof *op);
  if (!op) return NULL;
  op->queue = q;
  op->fn = fn;
  op->desc = *d;
  op->persistent = persistent;
  return op;
}

/* Points op's descriptor at the staging block and notes what a failure poisons. */
static void attach_block(struct stream_op *op, const struct staging_plan *plan) {
  char *base = op->block->mem;
  op->flag = (_Atomic uint32_t *)base;
  atomic_store_explicit(op->flag, 0, memory_order_relaxed);
  if (plan->stage_send) op->desc.sendbuf = base + plan->send_at;
  if (plan->stage_recv) op->desc.recvbuf = base + plan->recv_at;
  /* Staged or host memory (pinned or not), the queue thread can poison it. */
  op->result_staging = plan->recv_bytes ? op->desc.recvbuf : NULL;
  op->result_bytes = plan->recv_bytes;
}

/* The stream's part is steps 1 and 2 (inputs) then 3 to 5 (outputs) of stream_queue.h; a call in
 * pieces enqueues every piece's inputs before the first piece's outputs, so that copies and
 * transfers of different pieces overlap. Once the hand-off is enqueued the piece will run, so a
 * later failure only orphans it (the thread retires it, its block is not reused). */
enum enqueued { NOTHING_ENQUEUED, INPUT_COPY_ENQUEUED, HANDED_OFF };

static tally_result_t enqueue_inputs(struct tally_stream_queue *q, struct stream_op *op,
                                     const struct tally_coll_desc *user, const struct staging_plan *plan, void *stream,
                                     enum enqueued *got_to) {
  *got_to = NOTHING_ENQUEUED;
  if (plan->stage_send) {
    TALLY_CHECK(q->dev->copy_async((void *)op->desc.sendbuf, user->sendbuf, plan->send_bytes, stream));
    *got_to = INPUT_COPY_ENQUEUED;
  }
  for (int k = 0; k < op->nspans; k++) {
    const struct staged_span *span = &op->spans[k];
    if (!span->copy_in) continue;
    TALLY_CHECK(q->dev->copy_async((char *)op->block->mem + span->at, (const void *)span->user, span->bytes, stream));
    *got_to = INPUT_COPY_ENQUEUED;
  }
  TALLY_CHECK(q->dev->host_call_async(stream, op_ready, op));
  *got_to = HANDED_OFF;
  return TALLY_SUCCESS;
}

static tally_result_t enqueue_outputs(struct tally_stream_queue *q, struct stream_op *op,
                                      const struct tally_coll_desc *user, const struct staging_plan *plan,
                                      void *stream) {
  const struct tally_device_ops *dev = q->dev;
  TALLY_CHECK(dev->wait_flag_async(stream, (volatile uint32_t *)op->flag, op->device_poison, op->device_poison_bytes));
  if (plan->stage_recv) TALLY_CHECK(dev->copy_async(user->recvbuf, op->desc.recvbuf, plan->recv_bytes, stream));
  for (int k = 0; k < op->nspans; k++) {
    const struct staged_span *span = &op->spans[k];
    if (span->copy_out)
      TALLY_CHECK(dev->copy_async((void *)span->user, (char *)op->block->mem + span->at, span->bytes, stream));
  }
  return dev->host_call_async(stream, op_retire, op);
}

/* After a failed enqueue: an op never handed off is undone (its block kept off the pool if a copy
 * into it is on the stream); one handed off is orphaned. */
static void abandon_op(struct tally_stream_queue *q, struct stream_op *op, enum enqueued got_to) {
  if (op->persistent) return; /* a failed capture is invalid anyway; the op stays kept */
  pthread_mutex_lock(&q->lock);
  if (got_to == HANDED_OFF) {
    op->orphan = 1; /* the thread retires it after running it */
  } else {
    q->not_ready--;
    q->in_flight--;
    if (got_to == INPUT_COPY_ENQUEUED) {
      op->block->next = q->orphaned;
      q->orphaned = op->block;
    } else {
      tally_pinned_give_back(&q->pool, op->block);
    }
    free_op(op);
  }
  pthread_mutex_unlock(&q->lock);
}

/* Enqueues op (its block attached) on the stream. */
static tally_result_t enqueue_op(struct tally_stream_queue *q, struct stream_op *op, const struct tally_coll_desc *user,
                                 const struct staging_plan *plan, void *stream) {
  enum enqueued got_to;
  tally_result_t r = enqueue_inputs(q, op, user, plan, stream, &got_to);
  if (r == TALLY_SUCCESS) r = enqueue_outputs(q, op, user, plan, stream);
  if (r != TALLY_SUCCESS) abandon_op(q, op, got_to);
  return r;
}

/* A new op with its staging block, counted as in flight (or kept, when captured). */
static tally_result_t new_op(struct tally_stream_queue *q, const char *fn, const struct tally_coll_desc *d,
                             const struct staging_plan *plan, void *stream, struct stream_op **out) {
  int capturing = 0;
  TALLY_CHECK(q->dev->is_capturing(stream, &capturing));
  struct stream_op *op = op_for_call(q, fn, d, capturing);
  if (!op) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory for a stream-ordered call", fn);
  pthread_mutex_lock(&q->lock);
  op->block = tally_pinned_take_free(&q->pool, plan->block_bytes);
  pthread_mutex_unlock(&q->lock);
  tally_result_t r = op->block ? TALLY_SUCCESS : tally_pinned_alloc(&q->pool, plan->block_bytes, &op->block);
  pthread_mutex_lock(&q->lock);
  if (r == TALLY_SUCCESS) {
    if (capturing) {
      op->next_kept = q->kept;
      q->kept = op;
    } else {
      q->not_ready++;
      q->in_flight++;
    }
  }
  pthread_mutex_unlock(&q->lock);
  if (r != TALLY_SUCCESS) {
    free(op);
    return r;
  }
  attach_block(op, plan);
  *out = op;
  return TALLY_SUCCESS;
}

/* The communicator's queue, opened on first use. */
static tally_result_t queue_opened(struct tally_comm *comm, const struct tally_device_ops *dev) {
  return comm->stream_queue ? TALLY_SUCCESS : queue_open(comm, dev, &comm->stream_queue);
}

/* The queue for a new call: refused once a stream-ordered call has failed. */
static tally_result_t queue_for(struct tally_comm *comm, const struct tally_device_ops *dev, const char *fn) {
  TALLY_CHECK(queue_opened(comm, dev));
  return refuse_if_failed(comm->stream_queue, fn);
}

static tally_result_t enqueue_staged(struct tally_comm *comm, const char *fn, const struct tally_coll_desc *d,
                                     const struct tally_call_memory *m, void *stream) {
  struct staging_plan plan;
  plan_staging(d, m, comm->rank, comm->nranks, &plan);
  struct stream_op *op;
  TALLY_CHECK(new_op(comm->stream_queue, fn, d, &plan, stream, &op));
  return enqueue_op(comm->stream_queue, op, d, &plan, stream);
}

tally_result_t tally_stream_enqueue_barrier(struct tally_comm *comm, const struct tally_device_ops *dev, const char *fn,
                                            void *stream) {
  TALLY_CHECK(queue_opened(comm, dev)); /* a step of an admitted call: see stream_queue.h */
  struct tally_coll_desc barrier = {TALLY_COLL_BARRIER, NULL, NULL, 0, TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  return enqueue_staged(comm, fn, &barrier, &no_user_memory, stream);
}

/* After a call made of several steps: a hand-off that runs nothing and, if any step failed, has
 * the wait kernel fill the call's result with 0xff. */
static tally_result_t enqueue_check(struct tally_comm *comm, const char *fn, const struct tally_coll_desc *d,
                                    void *stream) {
  struct tally_coll_desc nothing = {TALLY_COLL_BARRIER, NULL, NULL, 0, TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  struct staging_plan plan;
  plan_staging(&nothing, &no_user_memory, comm->rank, comm->nranks, &plan);
  struct stream_op *op;
  TALLY_CHECK(new_op(comm->stream_queue, fn, &nothing, &plan, stream, &op));
  size_t send_bytes;
  tally_coll_buffer_bytes(d, comm->rank, comm->nranks, &send_bytes, &op->device_poison_bytes);
  op->device_poison = op->device_poison_bytes ? d->recvbuf : NULL;
  op->kind = OP_CHECK;
  return enqueue_op(comm->stream_queue, op, &nothing, &plan, stream);
}

tally_result_t tally_stream_enqueue_agreement(struct tally_comm *comm, const struct tally_device_ops *dev,
                                              const char *fn, const struct tally_coll_desc *d, void *stream) {
  TALLY_CHECK(queue_opened(comm, dev)); /* a step of an admitted call: see stream_queue.h */
  /* An allgather of one fingerprint per rank, into the op's block; the send side is the op itself. */
  struct tally_coll_desc gather = {
      TALLY_COLL_ALLGATHER, NULL, NULL, sizeof(struct call_fingerprint), TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  struct staging_plan plan = {.block_bytes =
                                  STAGING_ALIGN + align_up(sizeof(struct call_fingerprint) * (size_t)comm->nranks)};
  struct stream_op *op;
  TALLY_CHECK(new_op(comm->stream_queue, fn, &gather, &plan, stream, &op));
  op->kind = OP_AGREE;
  op->fingerprint =
      (struct call_fingerprint){d->count, (int32_t)d->coll, (int32_t)d->datatype, (int32_t)d->op, (int32_t)d->root};
  op->desc.sendbuf = &op->fingerprint;
  op->desc.recvbuf = (char *)op->block->mem + STAGING_ALIGN;
  return enqueue_op(comm->stream_queue, op, &gather, &plan, stream);
}

/* One staged piece of a call in pieces. */
struct staged_piece {
  struct tally_coll_desc user;
  struct staging_plan plan;
  struct stream_op *op;
};

/* A call in pieces (call_split.h): every piece's inputs, then every piece's outputs. */
static tally_result_t enqueue_pieces(struct tally_comm *comm, const char *fn, const struct tally_coll_desc *d,
                                     const struct tally_call_memory *m, void *stream, size_t piece_elems) {
  struct tally_stream_queue *q = comm->stream_queue;
  size_t n = (d->count + piece_elems - 1) / piece_elems, handed_off = 0;
  struct staged_piece *pieces = calloc(n, sizeof *pieces);
  if (!pieces) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory for %zu pieces", fn, n);
  tally_result_t r = TALLY_SUCCESS;
  while (handed_off < n) {
    struct staged_piece *p = &pieces[handed_off];
    size_t first = handed_off * piece_elems;
    p->user = tally_call_piece(d, first, d->count - first < piece_elems ? d->count - first : piece_elems);
    plan_staging(&p->user, m, comm->rank, comm->nranks, &p->plan);
    r = new_op(q, fn, &p->user, &p->plan, stream, &p->op);
    if (r != TALLY_SUCCESS) break;
    enum enqueued got_to;
    r = enqueue_inputs(q, p->op, &p->user, &p->plan, stream, &got_to);
    if (r != TALLY_SUCCESS) {
      abandon_op(q, p->op, got_to); /* not handed off: handing off is the inputs' last step */
      break;
    }
    handed_off++;
  }
  for (size_t k = 0; k < handed_off; k++) { /* the pieces handed off run, and must be waited for */
    tally_result_t out = enqueue_outputs(q, pieces[k].op, &pieces[k].user, &pieces[k].plan, stream);
    if (out != TALLY_SUCCESS) abandon_op(q, pieces[k].op, HANDED_OFF);
    if (r == TALLY_SUCCESS) r = out;
  }
  free(pieces);
  return r;
}

tally_result_t tally_stream_enqueue(struct tally_comm *comm, const struct tally_device_ops *dev, const char *fn,
                                    const struct tally_coll_desc *d, const struct tally_call_memory *m, void *stream) {
  TALLY_CHECK(queue_for(comm, dev, fn));
  if (tally_ipc_wanted(comm, dev, d, m)) {
    int taken = 0;
    TALLY_CHECK(tally_ipc_enqueue(comm, dev, d, stream, &taken));
    if (taken) return enqueue_check(comm, fn, d, stream);
  }
  size_t piece_elems = tally_call_piece_elems(comm, d);
  if (piece_elems) return enqueue_pieces(comm, fn, d, m, stream, piece_elems);
  return enqueue_staged(comm, fn, d, m, stream);
}

/* --- point-to-point work ------------------------------------------------------------------------- */

struct region_ref {
  uintptr_t user;
  int index;
};

static int by_address(const void *a, const void *b) {
  const struct region_ref *x = a, *y = b;
  return (x->user > y->user) - (x->user < y->user);
}

/* The spans of work's device regions, laid out in a block after the flag's line (*block_bytes in
 * all); span_of[i] is region i's span, -1 for a region used where it is. */
static tally_result_t plan_spans(const struct tally_device_ops *dev, const struct tally_stream_work *work, int *span_of,
                                 struct staged_span **out, int *nout, size_t *block_bytes) {
  int n = work->nregions;
  struct region_ref *refs = malloc(((size_t)n + 1) * sizeof *refs);
  struct staged_span *spans = calloc((size_t)n + 1, sizeof *spans);
  if (!refs || !spans) {
    free(refs);
    free(spans);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory staging %d buffers", work->fn, n);
  }
  int nrefs = 0, nspans = 0;
  for (int i = 0; i < n; i++) {
    const struct tally_stream_region *r = &work->regions[i];
    span_of[i] = -1;
    if (r->bytes && tally_device_memory(dev, r->user)) refs[nrefs++] = (struct region_ref){(uintptr_t)r->user, i};
  }
  qsort(refs, (size_t)nrefs, sizeof *refs, by_address);
  for (int k = 0; k < nrefs; k++) { /* in address order, a region that overlaps the last span joins it */
    const struct tally_stream_region *r = &work->regions[refs[k].index];
    struct staged_span *span = nspans ? &spans[nspans - 1] : NULL;
    if (!span || refs[k].user >= span->user + span->bytes) {
      span = &spans[nspans++];
      span->user = refs[k].user;
    }
    size_t end = (size_t)(refs[k].user - span->user) + r->bytes;
    if (end > span->bytes) span->bytes = end;
    span->copy_in |= r->copy_in;
    span->copy_out |= r->copy_out;
    span_of[refs[k].index] = nspans - 1;
  }
  *block_bytes = STAGING_ALIGN;
  for (int k = 0; k < nspans; k++) {
    spans[k].at = *block_bytes;
    *block_bytes += align_up(spans[k].bytes);
  }
  free(refs);
  *out = spans;
  *nout = nspans;
  return TALLY_SUCCESS;
}

tally_result_t tally_stream_enqueue_work(struct tally_comm *comm, const struct tally_device_ops *dev,
                                         struct tally_stream_work *work, void *stream) {
  static const struct tally_coll_desc nothing = {
      TALLY_COLL_BARRIER, NULL, NULL, 0, TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  struct staging_plan plan = {0};
  struct staged_span *spans = NULL;
  int nspans = 0;
  int *span_of = malloc(((size_t)work->nregions + 1) * sizeof *span_of);
  tally_result_t r = queue_for(comm, dev, work->fn);
  if (r == TALLY_SUCCESS && !span_of) r = TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory", work->fn);
  if (r == TALLY_SUCCESS) r = plan_spans(dev, work, span_of, &spans, &nspans, &plan.block_bytes);
  struct stream_op *op = NULL;
  if (r == TALLY_SUCCESS) r = new_op(comm->stream_queue, work->fn, &nothing, &plan, stream, &op);
  if (r != TALLY_SUCCESS) {
    free(span_of);
    free(spans);
    tally_stream_work_release(work);
    return r;
  }
  op->kind = OP_WORK;
  op->work = *work;
  op->spans = spans;
  op->nspans = nspans;
  for (int i = 0; i < work->nregions; i++) {
    struct tally_stream_region *region = &op->work.regions[i];
    const struct staged_span *span = span_of[i] >= 0 ? &spans[span_of[i]] : NULL;
    region->at =
        span ? (char *)op->block->mem + span->at + ((uintptr_t)region->user - span->user) : (void *)region->user;
  }
  free(span_of);
  return enqueue_op(comm->stream_queue, op, &nothing, &plan, stream);
}

/* --- host-memory calls ------------------------------------------------------------------------------ */

static int all_handed_off(const struct tally_stream_queue *q) { return q->not_ready == 0; }

/* Runs `op` (on the caller's stack) on the queue thread after every earlier stream call has
 * reached its hand-off, and waits for it. */
static tally_result_t run_host_op(struct tally_comm *comm, struct stream_op *op) {
  struct tally_stream_queue *q = comm->stream_queue;
  const char *fn = op->fn;
  TALLY_CHECK(refuse_if_failed(q, fn));
  pthread_mutex_lock(&q->lock);
  if (wait_locked(q, all_handed_off) != 0) {
    int pending = q->not_ready;
    pthread_mutex_unlock(&q->lock);
    return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                       "%s: waited %.0f s for %d earlier stream-ordered call(s) on this communicator to start; "
                       "their streams are stuck (waiting on work that never comes?): synchronize those streams "
                       "before host-memory calls",
                       fn, comm->cfg.timeout_s, pending);
  }
  push_ready_locked(q, op);
  while (!op->done) pthread_cond_wait(&q->changed, &q->lock);
  pthread_mutex_unlock(&q->lock);
  if (op->result != TALLY_SUCCESS) TALLY_ERROR(op->result, "%s", comm->last_error);
  return op->result;
}

int tally_stream_run_host(struct tally_comm *comm, const char *fn, const struct tally_coll_desc *d,
                          tally_result_t *result) {
  if (!comm->stream_queue) return -1;
  struct stream_op op = {.queue = comm->stream_queue, .fn = fn, .desc = *d, .host_call = 1};
  *result = run_host_op(comm, &op);
  return 0;
}

int tally_stream_run_host_work(struct tally_comm *comm, struct tally_stream_work *work, tally_result_t *result) {
  if (!comm->stream_queue) return -1;
  struct stream_op op = {.queue = comm->stream_queue, .fn = work->fn, .kind = OP_WORK, .work = *work, .host_call = 1};
  *result = run_host_op(comm, &op);
  return 0;
}

tally_result_t tally_stream_async_error(struct tally_comm *comm) {
  struct tally_stream_queue *q = comm->stream_queue;
  if (!q) return comm->error; /* no other thread runs this communicator's collectives */
  pthread_mutex_lock(&q->lock);
  tally_result_t failed = q->failed;
  pthread_mutex_unlock(&q->lock);
  return failed;
}

static int drained(const struct tally_stream_queue *q) { return q->in_flight == 0 && q->not_ready == 0; }

void tally_stream_queue_close(struct tally_comm *comm) {
  struct tally_stream_queue *q = comm->stream_queue;
  if (!q) return;
  comm->stream_queue = NULL;
  pthread_mutex_lock(&q->lock);
  int stuck = wait_locked(q, drained) != 0;
  if (stuck) {
    TLOG_WARN(TALLY_SUBSYS_COLL,
              "tally_comm_destroy: %d stream-ordered call(s) had not finished after %.0f s; they will fail (their "
              "results filled with 0xff) when their streams reach them. Synchronize the streams before destroying "
              "the communicator",
              q->in_flight, comm->cfg.timeout_s);
    q->abandoned = 1;
  }
  q->stopping = 1;
  pthread_cond_broadcast(&q->changed);
  pthread_mutex_unlock(&q->lock);
  pthread_join(q->thread, NULL);
  if (stuck) { /* streams may still reach the queue's host functions: it stays allocated */
    pthread_mutex_lock(&abandoned_lock);
    q->next_abandoned = abandoned_queues;
    abandoned_queues = q;
    pthread_mutex_unlock(&abandoned_lock);
    return;
  }
  while (q->kept) {
    struct stream_op *op = q->kept;
    q->kept = op->next_kept;
    tally_pinned_release(&q->pool, op->block);
    free_op(op);
  }
  while (q->orphaned) {
    struct tally_pinned_block *b = q->orphaned;
    q->orphaned = b->next;
    tally_pinned_release(&q->pool, b);
  }
  tally_pinned_release_all(&q->pool);
  pthread_cond_destroy(&q->changed);
  pthread_mutex_destroy(&q->lock);
  free(q);
}
