/* The tuner: which algorithm runs each call, with which chunk and variant, and why (the cost model's
 * predictions within what TALLY_ALGO allows, the same on every rank); which algorithms' partners a
 * communicator connects at init; and whether TALLY_ALGO leaves every collective something to run. */
#ifndef TALLY_TUNER_H
#define TALLY_TUNER_H

#include "algorithms/algorithm.h"
#include "cost_model.h"

struct tally_tuner_decision {
  enum tally_algo_id algo;
  const char *why;
  size_t chunk_bytes; /* the chosen algorithm's pipelining chunk, where the model prices it; else 0 */
  /* Each algorithm's predicted time, microseconds: TALLY_COST_NOT_MODELLED where the model has no
   * formula for it or it cannot run this call here. */
  double predicted_us[TALLY_NUM_ALGOS];
};
/* The decision for `desc` on `comm`, within what TALLY_ALGO allows; the same on every rank. */
void tally_tuner_decide(const struct tally_comm *comm, const struct tally_coll_desc *desc,
                        struct tally_tuner_decision *out);
/* The cost model's time for `algo` running `desc` on `comm` (whether or not it may run), with the
 * best chunk for pipelined algorithms (tree; ring broadcast and reduce), or TALLY_COST_NOT_MODELLED. */
double tally_tuner_predict(const struct tally_comm *comm, const struct tally_coll_desc *desc, enum tally_algo_id algo);
/* Whether halving-doubling allreduce of `bytes` on `comm` should double the whole vector rather than
 * run Rabenseifner's schedule: the cost model's verdict, the same on every rank. */
int tally_tuner_rd_beats_rhd(const struct tally_comm *comm, size_t bytes);
/* The 16-bit format (enum tally_wire_format, core/reduce.h) call `desc` crosses hosts in when run by
 * an algorithm that compresses (ring, rhd, hier, tree): TALLY_COMPRESS's, for FLOAT32 SUM/AVG allreduce and
 * reduce-scatter, allgather and broadcast of at least TALLY_COMPRESS_MIN_BYTES (the vector; allgather's
 * output, reduce-scatter's input) on a job across hosts; else TALLY_WIRE_EXACT. */
int tally_tuner_wire_format(const struct tally_comm *comm, const struct tally_coll_desc *desc);
/* tally_tuner_decide's algorithm, logged with the predictions under TALLY_DEBUG_SUBSYS=TUNE; sets
 * desc->chunk_bytes to its chunk, desc->predicted_us to its predicted time (for traces),
 * desc->rhd_whole_vector to the halving-doubling variant and desc->wire to the wire format it runs
 * with. Remembers the choice in comm->tuner_choices, and makes it again for a call of the same shape
 * without pricing anything (unless the choices are logged). */
const struct tally_algorithm *tally_tuner_select(struct tally_comm *comm, struct tally_coll_desc *desc);
/* INVALID_ARGUMENT, naming what is implemented, when TALLY_ALGO leaves a collective nothing that runs it. */
tally_result_t tally_tuner_check(const struct tally_algo_spec *spec);
/* Whether TALLY_ALGO lets some collective use `algo` (rhd or tree): their partners are connected at
 * init only then. */
int tally_tuner_may_use(const struct tally_config *cfg, enum tally_algo_id algo);

/* The ranks this rank must be connected to, both ways, for the halving-doubling and tree algorithms
 * TALLY_ALGO lets some collective use, written to `partners` (at most TALLY_MAX_ALGO_PARTNERS, maybe
 * with repeats); sets comm->rhd_ready, tree_ready and tree_rooted_ready to match. */
#define TALLY_MAX_ALGO_PARTNERS (2 * 32 + 6 + 2 * TALLY_TREE_ROOTED_MAX_RANKS)
int tally_tuner_plan_partners(struct tally_comm *comm, int *partners);

#endif
