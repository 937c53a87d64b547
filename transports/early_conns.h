/* Connections a peer made before this rank was accepting them (connections on first use: a peer may
 * connect while this rank accepts others, or none), kept by rank for the accept that wants them.
 * The list only holds them: whether a kept connection is also in the endpoint's connection list,
 * and how one is closed, is the transport's. Used by the accepting thread alone, so no lock. */
#ifndef TALLY_EARLY_CONNS_H
#define TALLY_EARLY_CONNS_H

#include <stddef.h>

#include "tally.h"

struct tally_conn;

struct tally_early_conn {
  struct tally_conn *conn;
  int peer;
};

struct tally_early_conns {
  struct tally_early_conn *items;
  int n, cap;
};

/* Whether a connection from `peer`, which the accept running now does not want, may wait for a
 * later one: 1 with room made for it (tally_early_conns_keep then cannot fail), or 0 with the
 * reason it is refused in `why`: `peer` is no rank this one (`self`) takes connections from, it
 * already has one waiting, `most` of them wait already (0: no limit), or memory ran out. */
int tally_early_conns_make_room(struct tally_early_conns *list, int peer, int self, int most, char *why, size_t whylen);

/* Keeps `conn` from `peer`, after tally_early_conns_make_room said yes. */
void tally_early_conns_keep(struct tally_early_conns *list, struct tally_conn *conn, int peer);

/* Takes the waiting connection from `peer` out of the list, or returns NULL when there is none. */
struct tally_conn *tally_early_conns_take(struct tally_early_conns *list, int peer);

/* Takes any waiting connection out of the list (to close them all), or returns NULL when empty. */
struct tally_conn *tally_early_conns_take_any(struct tally_early_conns *list);

/* Frees the list itself (its connections are the transport's to close first). */
void tally_early_conns_free(struct tally_early_conns *list);

#endif
