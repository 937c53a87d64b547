/* Splitting large calls on GPU communicators, so that a device call's copies overlap its transfers
 * (stream_queue.c pipelines the pieces): when every rank drives a GPU, an allreduce, broadcast or
 * reduce of more than twice TALLY_STAGING_CHUNK_MB runs as consecutive collectives of that size,
 * on every rank and whatever its buffers are (host-memory calls too), so that ranks whose buffers
 * differ in kind still make the same calls. Other communicators and collectives run whole. */
#ifndef TALLY_CALL_SPLIT_H
#define TALLY_CALL_SPLIT_H

#include <stddef.h>

#include "core/descriptor.h"

struct tally_comm;

/* Elements per piece of d, or 0 when d runs whole. */
size_t tally_call_piece_elems(const struct tally_comm *comm, const struct tally_coll_desc *d);

/* The piece of d from element `first`, `elems` long (NULL buffers stay NULL). */
struct tally_coll_desc tally_call_piece(const struct tally_coll_desc *d, size_t first, size_t elems);

#endif
