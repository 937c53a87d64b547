/* The shared-buffer algorithm: allreduce, reduce-scatter, allgather, broadcast and alltoall for a
 * communicator whose ranks all live on one host, through the host board's big areas in rounds
 * separated by board meets (shared.c says how, and what it costs in memory traffic). */
#ifndef TALLY_SHARED_H
#define TALLY_SHARED_H

#include "algorithm.h"

/* Whether `desc` can run on this communicator's board (it has one, and an area holds what a
 * round needs). */
int tally_shared_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc);

/* Alltoall blocks of at least this many bytes are read straight from the other ranks' sendbufs
 * (process_vm_readv) where the board allows it, the ranks share cores and no rank runs in place,
 * in place of two copies through the areas. Here
 * (2026-12-05, 8 ranks on 2 cores, medians of 3 with other builds running, out of place) the single
 * copy took 4.7 ms against the areas' 8.3 at 4 MiB a rank (blocks of 512 KiB) and 3.4 against 3.8
 * at 1 MiB (128 KiB), and lost at 256 KiB (32 KiB blocks: 420 against 330 us); in place, with a
 * copy of the sendbuf for the others to read, it lost at every size (16 MiB: 130 against 49 ms
 * under load 14), hence the areas there. */
#define TALLY_SHARED_ALLTOALL_SINGLE_COPY_BYTES (128 * 1024)

/* Whether the shared-buffer alltoall `desc` takes the single-copy form (shared.c). */
int tally_shared_alltoall_single_copy(const struct tally_comm *comm, const struct tally_coll_desc *desc);
/* Whether an allgather reads the other ranks' blocks straight from their sendbufs
 * (process_vm_readv): where the board allows it, every rank has a core of its own and all the
 * ranks' outputs together stay below the last-level cache (shared.c says what that gave). */
int tally_shared_allgather_single_copy(const struct tally_comm *comm, const struct tally_coll_desc *desc);

/* Whether a call with `output_bytes` of output on each rank writes it into the user's buffer with
 * streaming stores (core/copy.h): where the ranks' outputs together come to TALLY_STREAM_BYTES, by
 * default half the host's last-level cache (shared.c says what that gave). */
int tally_shared_streams(const struct tally_comm *comm, size_t output_bytes);

extern const struct tally_algorithm tally_shared_algorithm;

#endif
