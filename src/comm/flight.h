/* The flight recorder: the last TALLY_FLIGHT_RECORDS calls of a communicator, kept in memory at all
 * times (what was called, which algorithm ran it, how far it got, which rank it was waiting for),
 * and written out when the communicator fails, and on SIGUSR1 when TALLY_FLIGHT_SIGNAL=1
 * (api/flight_signal.c): to the log (WARN) and, with TALLY_FLIGHT_DIR, to a file per rank and
 * communicator, so that the records of all ranks of a stuck job point at the rank that stalled. */
#ifndef TALLY_FLIGHT_H
#define TALLY_FLIGHT_H

#include <pthread.h>
#include <stdint.h>

#include "counting.h"

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
  int locked;                          /* cfg.flight_signal: the lock exists and is taken */
  int wanted;                          /* TALLY_FLIGHT_RECORDS: the records allocated at the first call; 0: off */
  struct tally_flight_record *records; /* a ring of `capacity`, allocated at the first call */
  /* `records` where a call may write them without the lock, else NULL: the one test of a call's
   * common path (tally_flight_begin) */
  struct tally_flight_record *unlocked;
  int capacity;                        /* `wanted`, once allocated */
  int next;                            /* calls % capacity, kept without a division on every call */
  uint64_t calls;                      /* records written so far; the newest is (calls - 1) % capacity */
  struct tally_flight_record *current; /* the running call's, or NULL */
};

struct tally_comm;

/* Prepares an empty recorder of `wanted` records (TALLY_FLIGHT_RECORDS; 0: off); `locked`
 * (TALLY_FLIGHT_SIGNAL=1): other threads may dump it. */
void tally_flight_init(struct tally_flight *flight, int wanted, int locked);
/* The uncommon steps of tally_flight_begin / _end (the first call, the lock, a call not timed). */
void tally_flight_begin_slowly(struct tally_flight *f, const struct tally_flight_record *call);
void tally_flight_end_slowly(struct tally_flight *f, int failed, uint64_t now);

/* The next record, filled in with `call` (the caller holds the lock where there is one). */
static inline void tally_flight_write(struct tally_flight *f, struct tally_flight_record *records,
                                      const struct tally_flight_record *call) {
  struct tally_flight_record *r = &records[f->next];
  f->next = f->next + 1 == f->capacity ? 0 : f->next + 1;
  f->calls++;
  *r = *call;
  f->current = r;
}

/* Closes record `r`, the running call's, at tick `now`: done, or failed. */
static inline void tally_flight_close(struct tally_flight *f, struct tally_flight_record *r, int failed,
                                      uint64_t now) {
  r->end = now;
  r->state = failed ? TALLY_FLIGHT_FAILED : TALLY_FLIGHT_DONE;
  f->current = NULL;
}

/* Starts the record of call `seq` that started at tick `now` (nothing when the recorder is off or
 * out of memory). Inline, as is tally_flight_end: they run on every call, which at 8 bytes takes a
 * quarter of a microsecond, of which the counters may take 2%. */
static inline void tally_flight_begin(struct tally_flight *f, uint32_t seq, int kind, int algo, int datatype,
                                      uint64_t count, uint64_t now) {
  if (!TALLY_COUNTING) return;
  struct tally_flight_record call = {.seq = seq,
                                     .kind = kind,
                                     .algo = algo,
                                     .datatype = datatype,
                                     .count = count,
                                     .start = now,
                                     .waiting_for = -1,
                                     .state = TALLY_FLIGHT_RUNNING};
  if (__builtin_expect(!f->unlocked, 0))
    tally_flight_begin_slowly(f, &call);
  else
    tally_flight_write(f, f->unlocked, &call);
}

/* Ends the running call's record at tick `now` (0: the call was not timed): done, or failed. */
static inline void tally_flight_end(struct tally_flight *f, int failed, uint64_t now) {
  struct tally_flight_record *r = f->current;
  if (!r) return;
  if (__builtin_expect(!f->unlocked || (!now && r->start), 0)) {
    tally_flight_end_slowly(f, failed, now);
    return;
  }
  tally_flight_close(f, r, failed, now);
}

/* Notes that the running call now waits on `rank` (nothing when no call is recorded). */
void tally_flight_waiting_for(struct tally_comm *comm, int rank);
/* Writes the records, oldest first, with `why` (the failure's message) to the log and, when
 * TALLY_FLIGHT_DIR is set, to DIR/tally-flight-<communicator id>-<rank>.txt. Safe from another
 * thread than the one running calls only with TALLY_FLIGHT_SIGNAL=1 (see the lock). */
void tally_flight_dump(struct tally_comm *comm, const char *why);
/* Frees the records. */
void tally_flight_free(struct tally_flight *flight);

#endif
