/* Link calibration: fills comm->link_cost, the cost model's parameters for each link class (alpha,
 * the latency of a message; beta, the time per byte on the link; gamma, the time to reduce a byte),
 * with the same values on every rank, so that every rank's tuner makes the same choices.
 *
 * Rank 0 decides where they come from, in this order (the other ranks' TALLY_TUNING_FILE and
 * TALLY_TUNING_CACHE are validated but not used):
 *   1. TALLY_TUNING_FILE (tuning_file.h's format), over the built-in defaults below. A file that
 *      cannot be read or parsed fails init on every rank, naming the variable and the path.
 *   2. The cache: one file per host name of rank 0 and per pair of transports carrying its shm and
 *      net classes, $XDG_CACHE_HOME/tally/links-HOST-shm-T-net-T.tune (or under ~/.cache/tally/), in
 *      TALLY_TUNING_FILE's format with a comment saying when and how it was measured.
 *      TALLY_TUNING_CACHE=0 turns it off (neither read nor written). A malformed cache file is
 *      ignored with a WARN and measured again; a directory that cannot be written is logged at
 *      INFO and is no error.
 *   3. A measurement of a few milliseconds: messages of 8 B and up to 256 KiB timed around one
 *      small ring per link class (the pair {rank 0, a peer} when rank 0 has connections both ways
 *      with a rank of that class: a ping-pong), and a float sum of 1 MiB for gamma. A class rank 0
 *      cannot measure (no other rank on its host: shm; a single host: net) keeps the defaults, and
 *      the cache file's name says "none" for it.
 * Then rank 0 broadcasts the values (or the error) to every rank on the world ring, and logs them
 * at INFO under TUNE.
 *
 * The built-in defaults: a shared-memory link of 2 us and 5 GB/s, a network link of 25 us and
 * 1.25 GB/s (10 Gbit/s Ethernet), and a reduction of 10 GB/s (one byte every 0.1 ns). */
#ifndef TALLY_CALIBRATE_H
#define TALLY_CALIBRATE_H

#include "comm/comm.h"

#define TALLY_DEFAULT_SHM_ALPHA_US 2.0
#define TALLY_DEFAULT_SHM_GBPS 5.0
#define TALLY_DEFAULT_NET_ALPHA_US 25.0
#define TALLY_DEFAULT_NET_GBPS 1.25
#define TALLY_DEFAULT_REDUCE_GBPS 10.0

/* The built-in defaults above, for every link class. */
void tally_calibrate_defaults(struct tally_cost_params costs[TALLY_NUM_LINK_CLASSES]);

/* Fills comm->link_cost. Collective: every rank of the communicator calls it once, right after its
 * links are connected, before any collective. With one rank: TALLY_TUNING_FILE or the defaults,
 * nothing measured or cached. Fails on every rank alike when TALLY_TUNING_FILE is unusable. */
tally_result_t tally_calibrate(struct tally_comm *comm);

#endif
