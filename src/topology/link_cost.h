/* What a link between two ranks costs the cost model: the classes of link (shared memory within a
 * host, the network between hosts) and each one's measured latency, bandwidth and reduction speed.
 * The communicator holds one set per class (comm/comm.h); tuning/calibrate.c measures them and
 * tuning/cost_model.c prices algorithms with them. */
#ifndef TALLY_LINK_COST_H
#define TALLY_LINK_COST_H

enum tally_link_class { TALLY_LINK_SHM, TALLY_LINK_NET, TALLY_NUM_LINK_CLASSES };

/* One class of link (shared memory, or the network). */
struct tally_cost_params {
  double alpha_us;          /* latency of one message */
  double beta_us_per_byte;  /* transfer time of one byte on the link: 1 / bandwidth */
  double gamma_us_per_byte; /* time to reduce one byte into another */
};

#endif
