/* The public questions to the tuner (tally_comm_tuner_choice, tally_comm_predict): argument checks,
 * then the same decision and prediction the collectives use (algorithms/algorithm.h). */
#include <stdio.h>
#include <string.h>

#include "comm/comm.h"
#include "core/error.h"
#include "registry.h"
#include "tuning/tuner.h"

static tally_result_t describe(const char *fn, tally_comm_t comm, const char *collective, size_t count,
                               tally_datatype_t datatype, struct tally_coll_desc *d) {
  if (!comm || !tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "%s: comm is NULL, destroyed or never created", fn);
  if ((unsigned)datatype >= TALLY_NUM_DATATYPES)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: datatype %d is not a tally_datatype_t", fn, (int)datatype);
  *d = (struct tally_coll_desc){.count = count, .datatype = datatype, .op = TALLY_SUM};
  for (int c = 0; c < TALLY_NUM_COLLS; c++)
    if (collective && !strcmp(collective, tally_coll_name((enum tally_coll)c))) {
      d->coll = (enum tally_coll)c;
      return TALLY_SUCCESS;
    }
  return TALLY_ERROR(
      TALLY_ERR_INVALID_ARGUMENT,
      "%s: collective '%s' is not one of allreduce, allgather, reduce_scatter, broadcast, reduce, barrier, alltoall, "
      "gather, scatter",
      fn,
      collective ? collective : "(null)");
}

tally_result_t tally_comm_tuner_choice(tally_comm_t comm, const char *collective, size_t count,
                                       tally_datatype_t datatype, const char **algorithm, double *predicted_us) {
  struct tally_coll_desc d;
  TALLY_CHECK(describe("tally_comm_tuner_choice", comm, collective, count, datatype, &d));
  struct tally_tuner_decision dec;
  tally_tuner_decide(comm, &d, &dec);
  if (algorithm) *algorithm = tally_algo_name(dec.algo);
  if (predicted_us) *predicted_us = dec.predicted_us[dec.algo];
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_predict(tally_comm_t comm, const char *collective, const char *algorithm, size_t count,
                                  tally_datatype_t datatype, double *predicted_us) {
  struct tally_coll_desc d;
  TALLY_CHECK(describe("tally_comm_predict", comm, collective, count, datatype, &d));
  if (!predicted_us) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_predict: predicted_us is NULL");
  for (int a = 0; a < TALLY_NUM_ALGOS; a++)
    if (algorithm && !strcmp(algorithm, tally_algo_name((enum tally_algo_id)a))) {
      *predicted_us = tally_tuner_predict(comm, &d, (enum tally_algo_id)a);
      return TALLY_SUCCESS;
    }
  char names[256] = "";
  for (int a = 0; a < TALLY_NUM_ALGOS; a++)
    snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", a ? ", " : "",
             tally_algo_name((enum tally_algo_id)a));
  return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_predict: algorithm '%s' is not one of %s",
                     algorithm ? algorithm : "(null)", names);
}
