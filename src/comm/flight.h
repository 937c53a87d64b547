/* The flight recorder: the last TALLY_FLIGHT_RECORDS calls of a communicator, kept in memory at all
 * times (what was called, which algorithm ran it, how far it got, which rank it was waiting for),
 * and written out when the communicator fails, and on SIGUSR1 when TALLY_FLIGHT_SIGNAL=1
 * (api/flight_signal.c): to the log (WARN) and, with TALLY_FLIGHT_DIR, to a file per rank and
 * communicator, so that the records of all ranks of a stuck job point at the rank that stalled. */
#ifndef TALLY_FLIGHT_H
#define TALLY_FLIGHT_H

#include <pthread.h>
#include <stdint.h>

enum tally_flight_state { TALLY_FLIGHT_RUNNING, TALLY_FLIGHT_DONE, TALLY_FLIGHT_FAILED };

struct tally_flight_record {
  uint32_t seq; /* the call's sequence number (point-to-point batches: the next collective's) */
  int kind;     /* enum tally_coll, or TALLY_NUM_COLLS for a batch of point-to-point messages */
  int algo;     /* enum tally_algo_id, or TALLY_NUM_ALGOS for none */
  int datatype;
  uint64_t count;      /* the call's count; a batch's: its messages */
  uint64_t start, end; /* ticks (core/clock.h); 0: not read (calls the counters do not time,
                          dispatch.c; a wait sets start) */
  int waiting_for;     /* the rank the call last waited on with nothing moving; -1: none */
  enum tally_flight_state state;
};

struct tally_flight {
  /* With TALLY_FLIGHT_SIGNAL=1 a dumper thread reads the records while calls write them: every write
   * and the dump then hold this lock (briefly, never while a call waits); else nobody takes it. */
  pthread_mutex_t lock;
  int locked; /* cfg.flight_signal: the lock exists and is taken */
  struct tally_flight_record *records; /* a ring of `capacity`, allocated at the first call */
  int capacity;                        /* TALLY_FLIGHT_RECORDS, read at the first call; 0: off */
  uint64_t calls;                      /* records written so far; the newest is (calls - 1) % capacity */
  int next;                            /* calls % capacity, kept without a division on every call */
  struct tally_flight_record *current; /* the running call's, or NULL */
};

struct tally_comm;

/* Prepares an empty recorder; `locked` (TALLY_FLIGHT_SIGNAL=1): other threads may dump it. */
void tally_flight_init(struct tally_flight *flight, int locked);
/* Starts the record of a call that started at tick `now` (nothing when the recorder is off or out
 * of memory). */
void tally_flight_begin(struct tally_comm *comm, int kind, int algo, int datatype, uint64_t count, uint64_t now);
/* Ends the running call's record at tick `now`: done, or failed. */
void tally_flight_end(struct tally_comm *comm, int failed, uint64_t now);
/* Notes that the running call now waits on `rank` (nothing when no call is recorded). */
void tally_flight_waiting_for(struct tally_comm *comm, int rank);
/* Writes the records, oldest first, with `why` (the failure's message) to the log and, when
 * TALLY_FLIGHT_DIR is set, to DIR/tally-flight-<communicator id>-<rank>.txt. Safe from another
 * thread than the one running calls only with TALLY_FLIGHT_SIGNAL=1 (see the lock). */
void tally_flight_dump(struct tally_comm *comm, const char *why);
/* Frees the records. */
void tally_flight_free(struct tally_flight *flight);

#endif
