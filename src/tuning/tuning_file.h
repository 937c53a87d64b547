/* TALLY_TUNING_FILE: measured link parameters for the cost model (cost_model.h). The caller reads
 * the file; this parses its text, with no I/O. The format, one setting a line:
 *
 *   # a comment (blank lines too)
 *   alpha_us = 2.5             latency of one message, microseconds (0 or more)
 *   beta_us_per_byte = 1e-4    transfer time of one byte, microseconds (more than 0), or instead
 *   bandwidth_GBps = 10        the link's bandwidth in gigaBYTES per second (1e9 bytes/s, as
 *                              nccl-tests prints it, not gigabits): beta = 1e-3 / bandwidth_GBps
 *   gamma_us_per_byte = 5e-5   reduction time of one byte, microseconds (0 or more)
 *
 * A key may start with a link class, `shm.` (shared memory within a host) or `net.` (the network
 * between hosts): `net.alpha_us = 12.5`. A key without one sets both classes. Each parameter of
 * each class may be given once (so `alpha_us` and `net.alpha_us` in one file, or beta_us_per_byte
 * and bandwidth_GBps for one class, are a duplicate). Keys are case-sensitive.
 */
#ifndef TALLY_TUNING_FILE_H
#define TALLY_TUNING_FILE_H

#include "cost_model.h"
#include "tally.h"


/* Bits of struct tally_tuning.given. */
#define TALLY_TUNING_ALPHA 1u
#define TALLY_TUNING_BETA 2u
#define TALLY_TUNING_GAMMA 4u

struct tally_tuning {
  struct tally_cost_params params[TALLY_NUM_LINK_CLASSES]; /* 0 where not given */
  unsigned given[TALLY_NUM_LINK_CLASSES];                  /* TALLY_TUNING_* bits of what the file set */
};

/* Parses `text` (the whole file, NUL-terminated). `path` names the file in messages (not NULL). A malformed
 * line is TALLY_ERR_INVALID_ARGUMENT with a message naming TALLY_TUNING_FILE, the path, the line
 * number and what is wrong (unknown key, malformed number, value out of range, duplicate, no '=');
 * `out` is then unchanged. */
tally_result_t tally_tuning_parse(const char *text, const char *path, struct tally_tuning *out);

/* Overwrites the parameters of `params` that the file gave for `link`, keeping the others. */
void tally_tuning_apply(const struct tally_tuning *t, enum tally_link_class link, struct tally_cost_params *params);

#endif
