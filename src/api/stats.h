/* The summary of a communicator's counters that TALLY_STATS=1 prints (stats.c). */
#ifndef TALLY_API_STATS_H
#define TALLY_API_STATS_H

struct tally_comm;

/* Prints this rank's counters of comm to stderr: one line per collective and algorithm that ran,
 * one per transport, one per rank it exchanged with. */
void tally_stats_print(const struct tally_comm *comm);

#endif
