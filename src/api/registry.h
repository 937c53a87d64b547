/* The set of live communicators, so that a destroyed or made-up handle is refused with a message
 * instead of being dereferenced. */
#ifndef TALLY_REGISTRY_H
#define TALLY_REGISTRY_H

#include "tally.h"

tally_result_t tally_registry_add(tally_comm_t comm);
int tally_registry_remove(tally_comm_t comm); /* 1 if it was registered */
int tally_registry_contains(tally_comm_t comm);
/* Calls fn on every live communicator, holding the registry's lock (none is destroyed meanwhile). */
void tally_registry_each(void (*fn)(tally_comm_t comm, void *arg), void *arg);

#endif
