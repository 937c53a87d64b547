/* Unit tests of the list of connections kept for a later accept (transports/early_conns.c), which
 * the TCP and verbs transports share: what it refuses and why, keeping and taking by rank, and
 * emptying it. The connections are stand-ins: the list never looks inside them. */
#include <criterion/criterion.h>
#include <string.h>

#include "transports/early_conns.h"

/* Distinct addresses to stand for connections; never dereferenced. */
static char stand_in[100];
#define CONN(k) ((struct tally_conn *)&stand_in[k])

static int room(struct tally_early_conns *list, int peer, int self, int most, char *why) {
  return tally_early_conns_make_room(list, peer, self, most, why, 160);
}

Test(early_conns, refuses_itself_and_negative_ranks) {
  struct tally_early_conns list = {0};
  char why[160];
  cr_assert_not(room(&list, 3, 3, 0, why));
  cr_assert_str_eq(why, "rank 3 is not a peer this rank can take a connection from");
  cr_assert_not(room(&list, -1, 0, 0, why));
  cr_assert(strstr(why, "rank -1"), "%s", why);
  tally_early_conns_free(&list);
}

Test(early_conns, refuses_a_second_connection_from_one_rank) {
  struct tally_early_conns list = {0};
  char why[160];
  cr_assert(room(&list, 2, 0, 0, why));
  tally_early_conns_keep(&list, CONN(2), 2);
  cr_assert_not(room(&list, 2, 0, 0, why));
  cr_assert_str_eq(why, "rank 2 is already connected to this rank");
  cr_assert(room(&list, 5, 0, 0, why), "another rank still may wait");
  tally_early_conns_free(&list);
}

Test(early_conns, refuses_beyond_the_limit) {
  struct tally_early_conns list = {0};
  char why[160];
  for (int peer = 1; peer <= 3; peer++) {
    cr_assert(room(&list, peer, 0, 3, why), "%s", why);
    tally_early_conns_keep(&list, CONN(peer), peer);
  }
  cr_assert_not(room(&list, 4, 0, 3, why));
  cr_assert_str_eq(why, "3 connections already wait for an accept");
  cr_assert(room(&list, 4, 0, 0, why), "no limit: %s", why);
  tally_early_conns_free(&list);
}

Test(early_conns, takes_each_rank_once_past_the_first_growth) {
  enum { PEERS = 40 }; /* the list grows several times */
  struct tally_early_conns list = {0};
  char why[160];
  for (int peer = 1; peer <= PEERS; peer++) {
    cr_assert(room(&list, peer, 0, 0, why), "%s", why);
    tally_early_conns_keep(&list, CONN(peer), peer);
  }
  cr_assert_null(tally_early_conns_take(&list, PEERS + 1));
  for (int peer = PEERS; peer >= 1; peer -= 2) {
    cr_assert_eq(tally_early_conns_take(&list, peer), CONN(peer));
    cr_assert_null(tally_early_conns_take(&list, peer), "rank %d taken twice", peer);
  }
  int left = 0;
  for (struct tally_conn *c; (c = tally_early_conns_take_any(&list));) {
    int peer = (int)((char *)c - stand_in);
    cr_assert(peer % 2 == 1 && peer < PEERS, "rank %d was taken already", peer);
    left++;
  }
  cr_assert_eq(left, PEERS / 2);
  cr_assert(room(&list, 2, 0, 0, why), "an emptied list takes rank 2 again: %s", why);
  tally_early_conns_free(&list);
  cr_assert_null(list.items);
}
