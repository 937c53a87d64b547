/* The connection list every transport endpoint keeps (conn_list.h). */
#include "conn_list.h"

#include <stdlib.h>

#include "core/error.h"

void tally_conn_list_init(struct tally_conn_list *list) {
  pthread_mutex_init(&list->lock, NULL);
  list->items = NULL;
  list->n = list->cap = 0;
}

tally_result_t tally_conn_list_add(struct tally_conn_list *list, struct tally_conn *conn) {
  pthread_mutex_lock(&list->lock);
  if (list->n == list->cap) {
    int cap = list->cap ? 2 * list->cap : 4;
    struct tally_conn **grown = realloc(list->items, (size_t)cap * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&list->lock);
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a connection");
    }
    list->items = grown;
    list->cap = cap;
  }
  list->items[list->n++] = conn;
  pthread_mutex_unlock(&list->lock);
  return TALLY_SUCCESS;
}

void tally_conn_list_remove(struct tally_conn_list *list, struct tally_conn *conn) {
  pthread_mutex_lock(&list->lock);
  for (int i = 0; i < list->n; i++)
    if (list->items[i] == conn) list->items[i] = list->items[--list->n];
  pthread_mutex_unlock(&list->lock);
}

void tally_conn_list_free(struct tally_conn_list *list) {
  free(list->items);
  list->items = NULL;
  list->n = list->cap = 0;
  pthread_mutex_destroy(&list->lock);
}
