/* TALLY_ALGO: which algorithms each collective may use, in NCCL_ALGO's syntax. Pure parsing, no
 * I/O; the tuner consults the result before it asks the cost model (cost_model.h) to choose.
 *
 *   auto, empty or unset        every algorithm for every collective
 *   ring,tree                   only these, for every collective
 *   ^board                      every algorithm except these, for every collective
 *   allreduce:rhd,ring;broadcast:tree
 *                               per collective; a collective not named gets every algorithm
 *   allreduce:^tree;ring        a part without "collective:" applies to every collective not named
 *                               in another part (barrier, which cannot be named, included)
 *   alltoall:bruck;gather:direct
 *                               alltoall, gather and scatter have their own algorithms (pairwise,
 *                               bruck, hier; direct, binomial)
 *
 * Names are case-insensitive ("Ring" as NCCL writes it works) and may have blanks around them.
 * `auto` inside a list stands for every algorithm (`broadcast:auto`). The values of the old
 * TALLY_ALGO keep their meaning: `ring` is the ring alone, and `hier` on its own means `auto`
 * (hierarchical where the topology allows it), while `allreduce:hier` means hier alone.
 */
#ifndef TALLY_ALGO_SPEC_H
#define TALLY_ALGO_SPEC_H

#include "descriptor.h"
#include "tally.h"

enum tally_algo_id {
  TALLY_ALGO_RING,  /* ring (and, for broadcast and reduce, the pipelined chain along it) */
  TALLY_ALGO_TREE,  /* double binary tree, pipelined in chunks */
  TALLY_ALGO_RHD,   /* recursive halving-doubling (Rabenseifner for allreduce) */
  TALLY_ALGO_HIER,  /* hierarchical: within each host, then across hosts */
  TALLY_ALGO_BOARD, /* the one-host shared-memory board (algorithms/board.h) */
  TALLY_ALGO_PAIRWISE, /* alltoall: every block straight to its rank, p-1 exchanges in flight at once */
  TALLY_ALGO_BRUCK,    /* alltoall: Bruck's log2 p exchanges of packed blocks */
  TALLY_ALGO_DIRECT,   /* gather, scatter: every block straight to or from the root */
  TALLY_ALGO_BINOMIAL, /* gather, scatter: a binomial tree, log2 p levels */
  TALLY_ALGO_SHARED,   /* one host: rounds through the host board's shared areas (algorithms/shared.h) */
  TALLY_NUM_ALGOS
};

#define TALLY_ALGO_BIT(a) (1u << (a))
#define TALLY_ALGO_ALL ((1u << TALLY_NUM_ALGOS) - 1)

/* For each collective (enum tally_coll, barrier included), the TALLY_ALGO_BIT()s it may use;
 * never 0 after a successful parse. `named` has bit c set where a part named collective c (the
 * tuner lets a part without a name that leaves alltoall, gather or scatter none of their own
 * algorithms leave them on auto, so that TALLY_ALGO=ring keeps working). */
struct tally_algo_spec {
  unsigned allowed[TALLY_NUM_COLLS];
  unsigned named;
};

/* Parses `text` (NULL or "" allow everything). A malformed value is TALLY_ERR_INVALID_ARGUMENT with
 * a message naming TALLY_ALGO, the offending part and the valid choices; `spec` is then unchanged. */
tally_result_t tally_algo_spec_parse(const char *text, struct tally_algo_spec *spec);

/* Whether `spec` lets `coll` use `algo`. */
int tally_algo_spec_allows(const struct tally_algo_spec *spec, enum tally_coll coll, enum tally_algo_id algo);

/* "ring", "tree", "rhd", "hier", "board", "pairwise", "bruck", "direct", "binomial"; "unknown" when out
 * of range. */
const char *tally_algo_name(enum tally_algo_id algo);

#endif
