/* Algorithm selection, within what TALLY_ALGO allows each collective (algo_spec.h):
 *   - board: single-host communicators, small allreduces and barriers (one round, algorithms/board.h);
 *   - rhd:   allreduces of more than TALLY_SMALL_ALLREDUCE_BYTES up to RHD_MAX_BYTES on 4 or more
 *            ranks of a job that spans several hosts; and every allreduce, or allgather and
 *            reduce-scatter on a power-of-two number of ranks, when TALLY_ALGO leaves it no ring;
 *   - hier:  on communicators with hierarchical rings (several hosts with the same number of ranks,
 *            more than one each), allreduce, and allgather and reduce-scatter when the hosts' ranks
 *            are contiguous in rank order; small calls stay on the ring (fewer steps);
 *   - ring:  everything else, and whatever the others do not apply to.
 * The thresholds are measured placeholders: the cost model (cost_model.h), calibrated at init, is
 * to replace them. */
#include <stdio.h>
#include <string.h>

#include "../algorithms/algorithm.h"
#include "../algorithms/board.h"
#include "error.h"
#include "log.h"

/* Where recursive halving-doubling beat the ring on 8 ranks of this 2-core machine over TCP (up to
 * 2 MiB) and shared memory (32 KiB, not 128 KiB). */
#define RHD_MAX_BYTES (64 * 1024)

static int allows(const struct tally_comm *comm, const struct tally_coll_desc *desc, enum tally_algo_id algo) {
  return tally_algo_spec_allows(&comm->cfg.algo, desc->coll, algo);
}

/* TALLY_ALGO allows `coll` halving-doubling and not the ring. */
static int rhd_forced(const struct tally_algo_spec *spec, enum tally_coll coll) {
  unsigned a = spec->allowed[coll];
  return (a & TALLY_ALGO_BIT(TALLY_ALGO_RHD)) && !(a & TALLY_ALGO_BIT(TALLY_ALGO_RING));
}

int tally_tuner_wants_rhd(const struct tally_config *cfg, int nhosts) {
  if (rhd_forced(&cfg->algo, TALLY_COLL_ALLREDUCE) || rhd_forced(&cfg->algo, TALLY_COLL_ALLGATHER) ||
      rhd_forced(&cfg->algo, TALLY_COLL_REDUCE_SCATTER))
    return 1;
  return nhosts > 1 && tally_algo_spec_allows(&cfg->algo, TALLY_COLL_ALLREDUCE, TALLY_ALGO_RHD);
}

static int halving_doubling(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (!comm->rhd_ready || !allows(comm, desc, TALLY_ALGO_RHD) || !tally_rhd_suits(comm, desc)) return 0;
  if (rhd_forced(&comm->cfg.algo, desc->coll)) return 1;
  if (desc->coll != TALLY_COLL_ALLREDUCE) return 0; /* allgather and reduce-scatter: not measured yet */
  size_t bytes = desc->count * tally_datatype_size(desc->datatype);
  return comm->nranks >= 4 && bytes > TALLY_SMALL_ALLREDUCE_BYTES && bytes <= RHD_MAX_BYTES;
}

static int hierarchical(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  size_t bytes = desc->count * tally_datatype_size(desc->datatype) * (size_t)comm->nranks;
  if (!allows(comm, desc, TALLY_ALGO_HIER) || comm->local.size == 0 || bytes <= TALLY_SMALL_ALLREDUCE_BYTES) return 0;
  if (desc->coll == TALLY_COLL_ALLREDUCE) return 1;
  return (desc->coll == TALLY_COLL_ALLGATHER || desc->coll == TALLY_COLL_REDUCE_SCATTER) &&
         tally_hier_hosts_in_rank_order(comm);
}

static const struct tally_algorithm *choose(const struct tally_comm *comm, const struct tally_coll_desc *desc,
                                            const char **why) {
  if (allows(comm, desc, TALLY_ALGO_BOARD) && tally_board_suits(comm, desc)) {
    *why = "small, every rank on this host";
    return &tally_board_algorithm;
  }
  if (halving_doubling(comm, desc)) {
    *why = rhd_forced(&comm->cfg.algo, desc->coll) ? "TALLY_ALGO" : "mid-sized allreduce across hosts";
    return &tally_rhd_algorithm;
  }
  if (hierarchical(comm, desc)) {
    *why = "several hosts with the same number of ranks";
    return &tally_hier_algorithm;
  }
  *why = "the default";
  return &tally_ring_algorithm;
}

const struct tally_algorithm *tally_tuner_select(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  const char *why;
  const struct tally_algorithm *algo = choose(comm, desc, &why);
  TLOG_INFO(TALLY_SUBSYS_TUNE, "%s #%u, %zu bytes per rank on %d ranks: %s (%s)", tally_coll_name(desc->coll),
            comm->seq, desc->count * tally_datatype_size(desc->datatype), comm->nranks, algo->name, why);
  return algo;
}

/* The algorithms implemented for each collective (the ring runs them all). */
static unsigned implemented(enum tally_coll coll) {
  unsigned ring = TALLY_ALGO_BIT(TALLY_ALGO_RING), hier = TALLY_ALGO_BIT(TALLY_ALGO_HIER);
  switch (coll) {
    case TALLY_COLL_ALLREDUCE: return ring | hier | TALLY_ALGO_BIT(TALLY_ALGO_RHD) | TALLY_ALGO_BIT(TALLY_ALGO_BOARD);
    case TALLY_COLL_ALLGATHER:
    case TALLY_COLL_REDUCE_SCATTER: return ring | hier | TALLY_ALGO_BIT(TALLY_ALGO_RHD);
    case TALLY_COLL_BARRIER: return ring | TALLY_ALGO_BIT(TALLY_ALGO_BOARD);
    default: return ring;
  }
}

tally_result_t tally_tuner_check(const struct tally_algo_spec *spec) {
  for (int c = 0; c < TALLY_NUM_COLLS; c++) {
    if (spec->allowed[c] & implemented((enum tally_coll)c)) continue;
    char have[64] = "";
    for (int a = 0; a < TALLY_NUM_ALGOS; a++)
      if (implemented((enum tally_coll)c) & TALLY_ALGO_BIT(a))
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", have[0] ? ", " : "",
                 tally_algo_name((enum tally_algo_id)a));
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_ALGO leaves %s only algorithms this version of Tally does not implement for it; "
                       "implemented for %s: %s",
                       tally_coll_name((enum tally_coll)c), tally_coll_name((enum tally_coll)c), have);
  }
  return TALLY_SUCCESS;
}
