/* A transport endpoint's connections: added by the connecting and the accepting thread at once
 * (hence the lock), walked by progress, removed when a connection is closed. */
#ifndef TALLY_CONN_LIST_H
#define TALLY_CONN_LIST_H

#include <pthread.h>

#include "tally.h"

struct tally_conn;

struct tally_conn_list {
  pthread_mutex_t lock;
  struct tally_conn **items;
  int n, cap;
};

void tally_conn_list_init(struct tally_conn_list *list);
/* SYSTEM with a message when memory runs out. */
tally_result_t tally_conn_list_add(struct tally_conn_list *list, struct tally_conn *conn);
void tally_conn_list_remove(struct tally_conn_list *list, struct tally_conn *conn);
/* Frees the list itself (its connections are the transport's to close first). */
void tally_conn_list_free(struct tally_conn_list *list);

#endif
