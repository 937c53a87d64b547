/* The queue of requests every transport keeps per connection and direction (transport.h). */
#include "transport.h"

void tally_request_enqueue(struct tally_request **head, struct tally_request **tail, struct tally_request *req) {
  req->next = NULL;
  req->done = 0;
  req->peer_waiting = 0;
  req->progressed = 0;
  if (*tail)
    (*tail)->next = req;
  else
    *head = req;
  *tail = req;
}
