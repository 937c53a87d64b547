/* Running calls (group.h): one at a time, or a thread's group at its outermost tally_group_end.
 * The communicators a list of calls uses are claimed for its whole run, in order of their id. */
#include "group.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "algorithms/p2p.h"
#include "comm/comm.h"
#include "core/error.h"
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

/* Every point-to-point call of `comm` in the list, as one batch. In-place copies live in the
 * communicator's scratch buffer, which the collectives (run before) no longer need. */
static tally_result_t run_messages(const char *group_fn, tally_comm_t comm, struct tally_call *calls, int n) {
  int ncalls = 0;
  size_t copies = 0;
  for (int i = 0; i < n; i++) {
    if (calls[i].comm != comm || calls[i].kind == TALLY_CALL_COLLECTIVE) continue;
    ncalls++;
    copies += copy_room(&calls[i]);
  }
  if (!ncalls) return TALLY_SUCCESS;
  struct tally_p2p_msg *msgs = NULL;
  int nmsgs = 0, cap = 0, failed = -1;
  size_t used = 0;
  tally_result_t r = tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, copies);
  for (int i = 0; i < n && r == TALLY_SUCCESS; i++) {
    if (calls[i].comm != comm || calls[i].kind == TALLY_CALL_COLLECTIVE) continue;
    failed = i;
    size_t room = copy_room(&calls[i]);
    r = tally_call_messages(&calls[i], i, &msgs, &nmsgs, &cap, room ? (char *)comm->scratch + used : NULL);
    used += room;
  }
  if (r != TALLY_SUCCESS) tally_coll_remember(comm, r);
  if (r == TALLY_SUCCESS && nmsgs > 0)
    r = tally_p2p_execute(group_fn ? group_fn : calls[failed].fn, comm, msgs, nmsgs, ncalls, &failed);
  if (r != TALLY_SUCCESS && failed >= 0) r = name_call(group_fn, &calls[failed], failed, r);
  free(msgs);
  return r;
}

/* A call outside a group (its communicator checked a moment ago): the same steps for one call,
 * without the list's bookkeeping. */
static tally_result_t run_one(struct tally_call *call) {
  TALLY_CHECK(claim(call->fn, call->comm));
  tally_result_t r = call->kind == TALLY_CALL_COLLECTIVE ? tally_collective_run_claimed(call)
                                                         : run_messages(NULL, call->comm, call, 1);
  atomic_store(&call->comm->busy, 0);
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
  for (int c = 0; c < claimed; c++) atomic_store(&comms[c]->busy, 0);
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
