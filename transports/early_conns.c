/* The connections kept for a later accept, shared by the TCP and verbs transports (early_conns.h). */
#include "early_conns.h"

#include <stdio.h>
#include <stdlib.h>

int tally_early_conns_make_room(struct tally_early_conns *list, int peer, int self, int most, char *why,
                                size_t whylen) {
  if (peer < 0 || peer == self) {
    snprintf(why, whylen, "rank %d is not a peer this rank can take a connection from", peer);
    return 0;
  }
  for (int i = 0; i < list->n; i++)
    if (list->items[i].peer == peer) {
      snprintf(why, whylen, "rank %d is already connected to this rank", peer);
      return 0;
    }
  if (most > 0 && list->n >= most) {
    snprintf(why, whylen, "%d connections already wait for an accept", list->n);
    return 0;
  }
  if (list->n < list->cap) return 1;
  int cap = list->cap ? 2 * list->cap : 4;
  struct tally_early_conn *grown = realloc(list->items, (size_t)cap * sizeof *grown);
  if (!grown) {
    snprintf(why, whylen, "out of memory");
    return 0;
  }
  list->items = grown;
  list->cap = cap;
  return 1;
}

void tally_early_conns_keep(struct tally_early_conns *list, struct tally_conn *conn, int peer) {
  list->items[list->n++] = (struct tally_early_conn){.conn = conn, .peer = peer};
}

struct tally_conn *tally_early_conns_take(struct tally_early_conns *list, int peer) {
  for (int i = 0; i < list->n; i++) {
    if (list->items[i].peer != peer) continue;
    struct tally_conn *conn = list->items[i].conn;
    list->items[i] = list->items[--list->n];
    return conn;
  }
  return NULL;
}

struct tally_conn *tally_early_conns_take_any(struct tally_early_conns *list) {
  return list->n > 0 ? list->items[--list->n].conn : NULL;
}

void tally_early_conns_free(struct tally_early_conns *list) {
  free(list->items);
  *list = (struct tally_early_conns){0};
}
