/* A small mutex-protected array of live communicator handles. Every call checks its handle here, so
 * each thread remembers the last handle it found and the registry's count of changes then: while
 * nothing was added or removed since, the same handle is still live without taking the lock. */
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/error.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static tally_comm_t *live;
static size_t nlive, cap;
static _Atomic uint64_t changes; /* adds and removes so far, bumped under the lock */
static _Thread_local struct {
  tally_comm_t comm;
  uint64_t changes;
} last_found;

tally_result_t tally_registry_add(tally_comm_t comm) {
  pthread_mutex_lock(&lock);
  if (nlive == cap) {
    size_t grown_cap = cap ? 2 * cap : 16;
    tally_comm_t *grown = realloc(live, grown_cap * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&lock);
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory registering a communicator");
    }
    live = grown;
    cap = grown_cap;
  }
  live[nlive++] = comm;
  atomic_fetch_add(&changes, 1);
  pthread_mutex_unlock(&lock);
  return TALLY_SUCCESS;
}

int tally_registry_remove(tally_comm_t comm) {
  int found = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nlive && !found; i++)
    if (live[i] == comm) {
      live[i] = live[--nlive];
      found = 1;
    }
  atomic_fetch_add(&changes, 1);
  if (nlive == 0) { /* give the memory back so leak checkers see a clean exit */
    free(live);
    live = NULL;
    cap = 0;
  }
  pthread_mutex_unlock(&lock);
  return found;
}

int tally_registry_contains(tally_comm_t comm) {
  if (comm && comm == last_found.comm && atomic_load(&changes) == last_found.changes) return 1;
  int found = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nlive && !found; i++) found = live[i] == comm;
  if (found) {
    last_found.comm = comm;
    last_found.changes = atomic_load(&changes);
  }
  pthread_mutex_unlock(&lock);
  return found;
}

void tally_registry_each(void (*fn)(tally_comm_t comm, void *arg), void *arg) {
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nlive; i++) fn(live[i], arg);
  pthread_mutex_unlock(&lock);
}
