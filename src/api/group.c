/* Running calls (group.h): one at a time, or a thread's group at its outermost tally_group_end.
 * The communicators a list of calls uses are claimed for its whole run, in order of their id. A
 * batch of point-to-point messages whose buffers include device memory is one stream-ordered unit
 * (device/device_call.h): its messages are built when the stream reaches it. */
#include "group.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "algorithms/p2p.h"
#include "comm/comm.h"
#include "core/error.h"
#include "device/device_call.h"
#include "device/stream_queue.h"
#include "dispatch/dispatch.h"
#include "registry.h"

/* This thread's open group: how deeply nested, and the calls queued so far. */
struct group {
  int depth;
  struct tally_call *calls;
  int n, cap;
};
static _Thread_local struct group open_group;
/* Threads with an open group: while there are none, a call runs at once without looking up this
 * thread's group (a thread-local lookup in a shared library costs a function call). */
static atomic_int groups_open;

static void free_calls(struct tally_call *calls, int n) {
  for (int i = 0; i < n; i++) free(calls[i].counts);
}

static int by_comm_id(const void *a, const void *b) {
  const struct tally_comm *x = *(const tally_comm_t *)a, *y = *(const tally_comm_t *)b;
  if (x->comm_id != y->comm_id) return x->comm_id < y->comm_id ? -1 : 1;
  return (x > y) - (x < y);
}

tally_result_t tally_call_check_comm(const char *fn, tally_comm_t comm) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: comm is NULL", fn);
  if (!tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "%s: the communicator was destroyed or never created", fn);
  return TALLY_SUCCESS;
}

/* Claims comm, a live communicator, for this thread, with the message the API has always given. */
static tally_result_t claim(const char *fn, tally_comm_t comm) {
  if (atomic_exchange(&comm->busy, 1))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "%s: another thread is running a collective on this communicator; use one communicator per "
                       "thread or serialise the calls",
                       fn);
  return TALLY_SUCCESS;
}

/* After `call` failed with r: its communicator's message (which names the rank at fault), led by
 * the call's name, and in a group by the group's end and the call's place in it. */
static tally_result_t name_call(const char *group_fn, const struct tally_call *call, int index, tally_result_t r) {
  const char *why = call->comm->last_error;
  if (group_fn)
    return tally_coll_remember(
        call->comm, TALLY_ERROR(r, "%s: %s (call %d of the group) failed: %s", group_fn, call->fn, index + 1, why));
  size_t named = strlen(call->fn);
  if (!strncmp(why, call->fn, named) && why[named] == ':') return TALLY_ERROR(r, "%s", why);
  return tally_coll_remember(call->comm, TALLY_ERROR(r, "%s: %s", call->fn, why));
}

/* A call's in-place copy in the scratch buffer, rounded up to a cache line. */
static size_t copy_room(const struct tally_call *call) { return (tally_call_copy_bytes(call) + 63) / 64 * 64; }

static int in_batch(const struct tally_call *call, tally_comm_t comm) {
  return call->comm == comm && call->kind != TALLY_CALL_COLLECTIVE;
}

/* Every point-to-point call of `comm` in the list (host memory, or its staging), as one batch.
 * In-place copies live in the communicator's scratch buffer, which the collectives (run before) no
 * longer need. */
static tally_result_t run_batch(const char *group_fn, tally_comm_t comm, struct tally_call *calls, int n) {
  int ncalls = 0;
  size_t copies = 0;
  for (int i = 0; i < n; i++) {
    if (!in_batch(&calls[i], comm)) continue;
    ncalls++;
    copies += copy_room(&calls[i]);
  }
  if (!ncalls) return TALLY_SUCCESS;
  /* the communicator's array from the last batch (claimed, so no other batch uses it), grown as needed */
  struct tally_p2p_msg *msgs = comm->p2p_msgs;
  int nmsgs = 0, cap = (int)(comm->p2p_msgs_bytes / sizeof *msgs), failed = -1;
  size_t used = 0;
  tally_result_t r = tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, copies);
  for (int i = 0; i < n && r == TALLY_SUCCESS; i++) {
    if (!in_batch(&calls[i], comm)) continue;
    failed = i;
    size_t room = copy_room(&calls[i]);
    r = tally_call_messages(&calls[i], i, &msgs, &nmsgs, &cap, room ? (char *)comm->scratch + used : NULL);
    used += room;
  }
  if (r != TALLY_SUCCESS) tally_coll_remember(comm, r);
  if (r == TALLY_SUCCESS && nmsgs > 0)
    r = tally_p2p_execute(group_fn ? group_fn : calls[failed].fn, comm, msgs, nmsgs, ncalls, &failed);
  if (r != TALLY_SUCCESS && failed >= 0) r = name_call(group_fn, &calls[failed], failed, r);
  comm->p2p_msgs = msgs;
  comm->p2p_msgs_bytes = (size_t)cap * sizeof *msgs;
  return r;
}

/* The batch as device work (stream_queue.h): copies of the list's calls, whose buffers become their
 * regions' places (staging for device memory) when the stream reaches the batch. */
struct batch_work {
  const char *group_fn;
  struct tally_call *calls; /* the list's; those outside the batch are only skipped */
  int n;
  int *regions_of; /* per call: the first of its two regions (what it sends, what it receives); -1: none */
};

static void release_batch_work(void *ctx) {
  struct batch_work *w = ctx;
  if (!w) return;
  if (w->calls) free_calls(w->calls, w->n);
  free(w->calls);
  free(w->regions_of);
  free(w);
}

static tally_result_t run_batch_work(tally_comm_t comm, void *ctx, const struct tally_stream_region *regions) {
  struct batch_work *w = ctx;
  for (int i = 0; i < w->n; i++) {
    int k = w->regions_of[i];
    if (k < 0) continue;
    w->calls[i].sendbuf = regions[k].at;
    w->calls[i].recvbuf = regions[k + 1].at;
  }
  return run_batch(w->group_fn, comm, w->calls, w->n);
}

/* Copies the batch's calls (and their counts) into w, and describes their buffers as regions. */
static tally_result_t describe_batch(tally_comm_t comm, const struct tally_call *calls, int n, struct batch_work *w,
                                     struct tally_stream_region *regions) {
  int k = 0;
  for (int i = 0; i < n; i++) {
    w->calls[i] = calls[i];
    w->calls[i].counts = NULL;
    w->regions_of[i] = -1;
  }
  for (int i = 0; i < n; i++) {
    if (!in_batch(&calls[i], comm)) continue;
    if (calls[i].counts) {
      size_t bytes = 4 * (size_t)comm->nranks * sizeof *calls[i].counts;
      w->calls[i].counts = malloc(bytes);
      if (!w->calls[i].counts) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory copying counts", calls[i].fn);
      memcpy(w->calls[i].counts, calls[i].counts, bytes);
    }
    size_t send, recv;
    int recv_whole;
    tally_call_extent(&calls[i], &send, &recv, &recv_whole);
    regions[k] = (struct tally_stream_region){.user = calls[i].sendbuf, .bytes = send, .copy_in = 1};
    regions[k + 1] = (struct tally_stream_region){
        .user = calls[i].recvbuf, .bytes = recv, .copy_in = !recv_whole, .copy_out = 1}; /* gaps keep their bytes */
    w->regions_of[i] = k;
    k += 2;
  }
  return TALLY_SUCCESS;
}

/* The batch through the device path: stream-ordered when a buffer is device memory. */
static tally_result_t run_batch_on_device(const char *group_fn, tally_comm_t comm, const struct tally_call *calls,
                                          int n, int ncalls, const char *fn, tally_stream_t stream) {
  struct batch_work *w = calloc(1, sizeof *w);
  struct tally_stream_region *regions = calloc(2 * (size_t)ncalls, sizeof *regions);
  tally_result_t r = TALLY_SUCCESS;
  if (w) {
    w->group_fn = group_fn;
    w->n = n;
    w->calls = calloc((size_t)n, sizeof *w->calls);
    w->regions_of = malloc((size_t)n * sizeof *w->regions_of);
  }
  if (!w || !regions || !w->calls || !w->regions_of)
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory describing %d calls", fn, ncalls);
  if (r == TALLY_SUCCESS) r = describe_batch(comm, calls, n, w, regions);
  if (r != TALLY_SUCCESS) {
    release_batch_work(w);
    free(regions);
    return tally_coll_remember(comm, r);
  }
  struct tally_stream_work work = {.fn = fn,
                                   .run = run_batch_work,
                                   .release = release_batch_work,
                                   .ctx = w,
                                   .regions = regions,
                                   .nregions = 2 * ncalls};
  return tally_device_work(comm, &work, stream);
}

/* Every point-to-point call of `comm` in the list, as one batch: on host memory at once, or
 * through the device path (which may enqueue it) when there is a stream or a device runtime. */
static tally_result_t run_messages(const char *group_fn, tally_comm_t comm, struct tally_call *calls, int n) {
  int ncalls = 0, first = -1;
  for (int i = 0; i < n; i++)
    if (in_batch(&calls[i], comm) && ncalls++ == 0) first = i;
  if (!ncalls) return TALLY_SUCCESS;
  tally_stream_t stream = calls[first].stream; /* one for the batch (tally_call_submit) */
  if (!tally_device_call_needed(stream)) return run_batch(group_fn, comm, calls, n);
  return run_batch_on_device(group_fn, comm, calls, n, ncalls, group_fn ? group_fn : calls[first].fn, stream);
}

/* A call outside a group (its communicator checked a moment ago): the same steps for one call,
 * without the list's bookkeeping. */
static tally_result_t run_one(struct tally_call *call) {
  TALLY_CHECK(claim(call->fn, call->comm));
  tally_result_t r = call->kind == TALLY_CALL_COLLECTIVE ? tally_collective_run_claimed(call)
                                                         : run_messages(NULL, call->comm, call, 1);
  atomic_store_explicit(&call->comm->busy, 0, memory_order_release);
  return r;
}

/* Collectives run in two phases (group.h): 0 the others, 1 alltoall, gather and scatter. */
static int collective_phase(const struct tally_call *call) {
  enum tally_coll coll = call->desc.coll;
  return coll == TALLY_COLL_ALLTOALL || coll == TALLY_COLL_GATHER || coll == TALLY_COLL_SCATTER;
}

/* Runs a group's calls as group.h says; returns the first failure. `group_fn` names the group's
 * end in messages. */
static tally_result_t run_calls(const char *group_fn, struct tally_call *calls, int n) {
  tally_comm_t *comms = malloc((size_t)n * sizeof *comms);
  if (!comms) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory running %d calls", n);
  int ncomms = 0;
  for (int i = 0; i < n; i++) {
    int known = 0;
    for (int c = 0; c < ncomms; c++) known |= comms[c] == calls[i].comm;
    if (!known) comms[ncomms++] = calls[i].comm;
  }
  tally_result_t r = TALLY_SUCCESS;
  int claimed = 0;
  for (; claimed < ncomms && r == TALLY_SUCCESS; claimed++) {
    r = tally_call_check_comm(group_fn, comms[claimed]); /* destroyed since the call? */
    if (r == TALLY_SUCCESS) r = claim(group_fn, comms[claimed]);
  }
  if (r != TALLY_SUCCESS) claimed--;
  if (r == TALLY_SUCCESS) qsort(comms, (size_t)ncomms, sizeof *comms, by_comm_id); /* ids are valid once claimed */
  for (int c = 0; c < ncomms && claimed == ncomms; c++) {
    for (int phase = 0; phase < 2; phase++)
      for (int i = 0; i < n; i++) {
        if (calls[i].comm != comms[c] || calls[i].kind != TALLY_CALL_COLLECTIVE || collective_phase(&calls[i]) != phase)
          continue;
        tally_result_t one = tally_collective_run_claimed(&calls[i]);
        if (one != TALLY_SUCCESS) one = name_call(group_fn, &calls[i], i, one);
        if (r == TALLY_SUCCESS) r = one;
      }
    tally_result_t batch = run_messages(group_fn, comms[c], calls, n);
    if (r == TALLY_SUCCESS) r = batch;
  }
  for (int c = 0; c < claimed; c++) atomic_store_explicit(&comms[c]->busy, 0, memory_order_release);
  free(comms);
  return r;
}

int tally_group_open(void) {
  return atomic_load_explicit(&groups_open, memory_order_relaxed) > 0 && open_group.depth > 0;
}

tally_result_t tally_group_start(void) {
  if (open_group.depth == INT_MAX)
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "tally_group_start: groups are nested %d deep on this thread", INT_MAX);
  if (open_group.depth++ == 0) atomic_fetch_add(&groups_open, 1);
  return TALLY_SUCCESS;
}

tally_result_t tally_group_end(void) {
  if (open_group.depth == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "tally_group_end: this thread has no open group (call tally_group_start first; each "
                       "tally_group_start takes one tally_group_end)");
  if (--open_group.depth > 0) return TALLY_SUCCESS;
  atomic_fetch_sub(&groups_open, 1);
  struct group done = open_group;
  open_group = (struct group){0};
  tally_result_t r = done.n > 0 ? run_calls("tally_group_end", done.calls, done.n) : TALLY_SUCCESS;
  free_calls(done.calls, done.n);
  free(done.calls);
  return r;
}

tally_result_t tally_call_submit(struct tally_call *call) {
  if (atomic_load_explicit(&groups_open, memory_order_relaxed) == 0 || open_group.depth == 0) {
    tally_result_t r = run_one(call);
    free_calls(call, 1);
    return r;
  }
  for (int i = open_group.n - 1; i >= 0 && call->kind != TALLY_CALL_COLLECTIVE; i--) {
    const struct tally_call *earlier = &open_group.calls[i]; /* the last of the batch: all before agree with it */
    if (!in_batch(earlier, call->comm)) continue;
    if (earlier->stream == call->stream) break;
    free_calls(call, 1);
    return tally_coll_remember(
        call->comm, TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                                "%s: its stream differs from that of call %d of the group (%s on the same "
                                "communicator): a group's sends, recvs and alltoallvs on one communicator run as one "
                                "unit, on one stream; pass them all the same stream, or end the group between them",
                                call->fn, i + 1, earlier->fn));
  }
  if (open_group.n == open_group.cap) {
    int cap = open_group.cap ? 2 * open_group.cap : 16;
    struct tally_call *calls = realloc(open_group.calls, (size_t)cap * sizeof *calls);
    if (!calls) {
      free_calls(call, 1);
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory queueing call %d of a group", call->fn, open_group.n + 1);
    }
    open_group.calls = calls;
    open_group.cap = cap;
  }
  open_group.calls[open_group.n++] = *call;
  return TALLY_SUCCESS;
}
