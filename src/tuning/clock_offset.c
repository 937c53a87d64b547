/* Clock alignment (clock_offset.h): rank 0 answers each other rank's pings in rank order. */
#define _GNU_SOURCE
#include "clock_offset.h"

#include <stdlib.h>

#include "algorithms/p2p.h"
#include "comm/links.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/wire.h"

/* The header of sample `k`'s ping and answer: a point-to-point kind, numbered far above any send's
 * number, so it can never be taken for a user's message. */
static struct tally_msg_header sample_header(const struct tally_comm *comm, int k) {
  return (struct tally_msg_header){.seq = comm->seq,
                                   .coll = TALLY_MSG_SEND,
                                   .datatype = TALLY_UINT8,
                                   .index = (1ull << 62) + (uint64_t)k,
                                   .bytes = 8};
}

static tally_result_t connect_to_rank_0(struct tally_comm *comm) {
  int n = comm->rank == 0 ? comm->nranks - 1 : 1;
  int *peers = malloc((size_t)n * sizeof *peers);
  if (!peers) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for clock alignment's %d peers", n);
  for (int i = 0; i < n; i++) peers[i] = comm->rank == 0 ? i + 1 : 0;
  tally_result_t r = tally_links_connect_peers(comm, peers, n, peers, n, tally_deadline_after(comm->cfg.timeout_s));
  free(peers);
  return r;
}

static tally_result_t answer_pings(struct tally_comm *comm) {
  for (int peer = 1; peer < comm->nranks; peer++)
    for (int k = 0; k < TALLY_CLOCK_SAMPLES; k++) {
      struct tally_msg_header h = sample_header(comm, k);
      uint64_t ping, now;
      TALLY_CHECK(tally_p2p_exchange(comm, &h, -1, NULL, 0, peer, &ping, sizeof ping));
      now = tally_now_ns();
      TALLY_CHECK(tally_p2p_exchange(comm, &h, peer, &now, sizeof now, -1, NULL, 0));
    }
  return TALLY_SUCCESS;
}

tally_result_t tally_clock_offset_measure(struct tally_comm *comm, int64_t *offset_ns, uint64_t *error_ns) {
  *offset_ns = 0;
  *error_ns = 0;
  if (comm->nranks == 1) return TALLY_SUCCESS;
  TALLY_CHECK(connect_to_rank_0(comm));
  if (comm->rank == 0) return answer_pings(comm);
  uint64_t best_rtt = UINT64_MAX;
  for (int k = 0; k < TALLY_CLOCK_SAMPLES; k++) {
    struct tally_msg_header h = sample_header(comm, k);
    uint64_t t1 = tally_now_ns(), rank0_time;
    TALLY_CHECK(tally_p2p_exchange(comm, &h, 0, &t1, sizeof t1, -1, NULL, 0));
    TALLY_CHECK(tally_p2p_exchange(comm, &h, -1, NULL, 0, 0, &rank0_time, sizeof rank0_time));
    uint64_t t2 = tally_now_ns();
    if (t2 - t1 >= best_rtt) continue;
    best_rtt = t2 - t1;
    *offset_ns = (int64_t)(rank0_time - t1) - (int64_t)(best_rtt / 2);
    *error_ns = (best_rtt + 1) / 2;
  }
  return TALLY_SUCCESS;
}
