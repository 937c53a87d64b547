/* A small mutex-protected array of live communicator handles. */
#include "registry.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/error.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static tally_comm_t *live;
static size_t nlive, cap;

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
  if (nlive == 0) { /* give the memory back so leak checkers see a clean exit */
    free(live);
    live = NULL;
    cap = 0;
  }
  pthread_mutex_unlock(&lock);
  return found;
}

int tally_registry_contains(tally_comm_t comm) {
  int found = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nlive && !found; i++) found = live[i] == comm;
  pthread_mutex_unlock(&lock);
  return found;
}

void tally_registry_each(void (*fn)(tally_comm_t comm, void *arg), void *arg) {
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nlive; i++) fn(live[i], arg);
  pthread_mutex_unlock(&lock);
}
