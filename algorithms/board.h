/* The host board: one shared-memory page set where all ranks of a communicator that lives on a
 * single host meet for small collectives in one round instead of n-1 ring steps. Each rank writes
 * its input and the call's fingerprint into its own slot and counts itself in; once all have
 * arrived (one futex wake), every rank checks the fingerprints and takes its result from the
 * slots: an allreduce reduces the n inputs itself, in rank order, so every rank gets the same bits
 * (a reduce-scatter its own block of them), an allgather copies them all out, a broadcast the
 * root's, an alltoall its own block of each. Two sets of slots alternate: a rank that starts
 * the next-but-one call has seen every rank arrive at the call in between, so nobody still reads
 * the slots it overwrites. The pages themselves, and the failures reported on them, are the
 * communicator's (comm/board_page.h). */
#ifndef TALLY_BOARD_H
#define TALLY_BOARD_H

#include "algorithm.h"
#include "comm/board_page.h"

/* Sets up comm->board when every rank of the communicator is on this host and shared memory is
 * allowed; every rank ends with the same answer (one small allreduce on the ring decides). A
 * board that cannot be made is not an error: the collectives then stay on the ring. */
tally_result_t tally_board_open(struct tally_comm *comm, uint64_t deadline);

/* Whether `desc` runs on the board: allreduce, allgather, reduce-scatter, broadcast and alltoall
 * whose input fits a rank's slot (16 KiB; reduce-scatter's and alltoall's p blocks), and barrier. */
int tally_board_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc);

/* A barrier on the board for the call `desc` (the shared-buffer algorithm's phases, shared.h):
 * counts this rank in with the call's fingerprint, waits for every rank (abort, failures reported
 * on the board, dead ranks and TALLY_TIMEOUT end the wait, naming who did not arrive) and checks
 * that every rank is in the same call. */
tally_result_t tally_board_meet(struct tally_comm *comm, const struct tally_coll_desc *desc);

/* The same meet, posting `bytes` (at most TALLY_BOARD_SLOT_BYTES) of `data` in this rank's slot:
 * once it returns, rank r's are in tally_board_slot(page, *set, r)->data until this rank's next
 * meet but one. */
tally_result_t tally_board_meet_posting(struct tally_comm *comm, const struct tally_coll_desc *desc, const void *data,
                                        size_t bytes, int *set);

/* Copies `bytes` at `address` in `peer`'s memory to `local` with process_vm_readv (comm->board->cma
 * says whether the ranks may). A peer that died, or failed and said so, is blamed. */
tally_result_t tally_board_read_peer(struct tally_comm *comm, int peer, void *local, uint64_t address, size_t bytes);

extern const struct tally_algorithm tally_board_algorithm;

#endif
