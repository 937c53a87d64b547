/* The host board's shared pages: where all ranks of a communicator that lives on one host meet
 * (algorithms/board.h runs small collectives on it). This layer owns the pages and what the
 * communicator's waiting and failure paths need of them: a failure reported on the board wakes
 * and fails the ranks waiting there, and ranks waiting on the ring check the board for failures
 * and strays. Layout, created by rank 0 and unlinked once every rank has mapped it:
 *
 *   page header   magic, communicator id, ranks, slot size, each rank's pid, `failed`, and where
 *                 each rank keeps the value the others read with process_vm_readv to test it
 *   arrived[2]    per set of slots, each on its own cache line: a futex word sleepers wait on and
 *                 how many sleep
 *   slots[2][n]   per rank: the call it has arrived at, the call's fingerprint, its input
 *   big[n + 1]    the shared-buffer algorithm's areas (algorithms/shared.h): one per rank, then
 *                 one for results, each `big_bytes` (tally_board_big_bytes)
 *
 * Call c (counted per communicator on every rank alike) uses set c % 2 and is complete once every
 * rank's slot of that set says it has arrived at c: a waiting rank reads the others' slots, where
 * the fingerprints are too, and no rank writes a line another one writes. */
#ifndef TALLY_BOARD_PAGE_H
#define TALLY_BOARD_PAGE_H

#include <stdalign.h>
#include <stdint.h>

#include "comm.h"
#include "core/wire.h"

#define TALLY_BOARD_MAX_RANKS 64
#define TALLY_BOARD_SLOT_BYTES 16384

struct board_slot {
  alignas(64) _Atomic uint32_t call; /* 1 + the call this rank has arrived at (its data is in) */
  unsigned char fingerprint[TALLY_WIRE_HEADER_BYTES];
  alignas(64) unsigned char data[TALLY_BOARD_SLOT_BYTES];
};

/* A set's futex word, which waiters sleep on and arriving ranks bump, and how many of them sleep
 * (so that an arriving rank touches the word and makes a system call only when someone sleeps). */
struct board_arrivals {
  alignas(64) _Atomic uint32_t count;
  _Atomic uint32_t sleepers;
};

struct board_page {
  uint64_t comm_id;
  uint32_t nranks, slot_bytes, big_bytes;
  int32_t pid[TALLY_BOARD_MAX_RANKS];
  uint64_t cma_probe_address[TALLY_BOARD_MAX_RANKS]; /* tally_board_open's test of process_vm_readv */
  uint64_t cma_probe_value[TALLY_BOARD_MAX_RANKS];
  _Atomic uint64_t failed; /* 0, or the first failure reported: code, 1 + reporter, 1 + culprit */
  _Atomic uint64_t magic;  /* BOARD_MAGIC once the fields above are written */
  struct board_arrivals arrived[2]; /* each on its own cache line */
  struct board_slot slots[]; /* [2][nranks] */
};

struct tally_board {
  struct board_page *page;
  size_t bytes;
  char name[64];
  int linked; /* rank 0: the name still exists */
  int pidfd[TALLY_BOARD_MAX_RANKS];
  uint32_t calls;
  uint32_t alltoall_rounds; /* rounds of the shared alltoall so far: round k uses half k % 2 of each area */
  int areas_read_late;      /* other ranks may still read the last alltoall round (no meet since it) */
  uint64_t cma_probe; /* the value the other ranks read from this process while the board opens */
  int cma; /* every rank may read every other's memory with process_vm_readv (the same on all) */
  int cores_apart;  /* two ranks whose cores are far apart (algorithms/board.c, the same on both); else 0 */
};

static inline struct board_slot *tally_board_slot(struct board_page *page, int set, int rank) {
  return &page->slots[(size_t)set * page->nranks + (size_t)rank];
}

/* The size of each big area on a board of `nranks`: 256 KiB, less where n + 1 of them would pass
 * 4 MiB (a multiple of 4 KiB). */
size_t tally_board_big_bytes(int nranks);

/* Big area `i`: 0 <= i < nranks, rank i's; nranks, the results'. */
static inline unsigned char *tally_board_big(struct board_page *page, int i) {
  unsigned char *first = (unsigned char *)&page->slots[2 * (size_t)page->nranks];
  return first + (size_t)i * page->big_bytes;
}

/* Wakes every rank sleeping on `set`. */
void tally_board_wake_all(struct board_arrivals *set);
/* After this rank wrote its slot: bumps the word and wakes the sleepers, only when there are any
 * (the common case, ranks spinning on cores of their own, costs no system call and no write). */
void tally_board_arrived(struct board_arrivals *set);
/* Sleeping, in three steps so that no arrival is missed: read the word, announce the sleep, check
 * again for what the rank waits for, then sleep while the word still reads `seen` (at most `ms`)
 * or, when what it waits for came meanwhile, cancel. Either the arriving rank sees the sleeper and
 * bumps the word, or the sleeper's check sees the arrival (both sequentially consistent). */
uint32_t tally_board_word(struct board_arrivals *set);
void tally_board_sleep_announce(struct board_arrivals *set);
void tally_board_sleep(struct board_arrivals *set, uint32_t seen, int ms);
void tally_board_sleep_cancel(struct board_arrivals *set);

/* Creates (rank 0) or maps (the others, waiting for rank 0 until `deadline`) this communicator's
 * pages. *out is the board, also on failure when it was allocated (free it with tally_board_free). */
tally_result_t tally_board_map(struct tally_comm *comm, uint64_t deadline, struct tally_board **out);
void tally_board_free(struct tally_board *board);
/* Once every rank has mapped its board: drops the name (rank 0), watches the peers' pids, and makes
 * it comm->board. */
void tally_board_install(struct tally_comm *comm, struct tally_board *board);
void tally_board_close(struct tally_comm *comm);

/* Wakes whoever sleeps on the board (tally_comm_abort: the waiter then sees the abort). */
void tally_board_wake(struct tally_comm *comm);

/* Reports this rank's failed collective on the board, so that ranks waiting there return at once. */
void tally_board_fail(struct tally_comm *comm, tally_result_t code, int culprit);

/* A failure another rank reported on the board, as this rank's error; TALLY_SUCCESS when none. */
tally_result_t tally_board_reported_failure(struct tally_comm *comm);

/* For ranks waiting in a collective on the ring (`call` is its header): fails with what another
 * rank reported on the board, or with MISMATCH when a rank has arrived at a board collective
 * instead of this one. With `call` NULL (point-to-point waits, which other ranks may have left
 * for their next collective) only the reported failures count. */
tally_result_t tally_board_check(struct tally_comm *comm, const struct tally_msg_header *call);

#endif
