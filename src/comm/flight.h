/* The flight recorder: the last TALLY_FLIGHT_RECORDS calls of a communicator, kept in memory at all
 * times (what was called, which algorithm ran it, how far it got, which rank it was waiting for),
 * and written out when the communicator fails: to the log (WARN) and, with TALLY_FLIGHT_DIR, to a
 * file per rank and communicator, so that the records of all ranks of a stuck job point at the
 * rank that stalled. */
#ifndef TALLY_FLIGHT_H
#define TALLY_FLIGHT_H

#include <stdint.h>

enum tally_flight_state { TALLY_FLIGHT_RUNNING, TALLY_FLIGHT_DONE, TALLY_FLIGHT_FAILED };

struct tally_flight_record {
  uint32_t seq; /* the call's sequence number (point-to-point batches: the next collective's) */
  int kind;     /* enum tally_coll, or TALLY_NUM_COLLS for a batch of point-to-point messages */
  int algo;     /* enum tally_algo_id, or TALLY_NUM_ALGOS for none */
  int datatype;
  uint64_t count;      /* the call's count; a batch's: its messages */
  uint64_t start, end; /* ticks (core/clock.h) */
  int waiting_for;     /* the rank the call last waited on with nothing moving; -1: none */
  enum tally_flight_state state;
};

struct tally_flight {
  struct tally_flight_record *records; /* a ring of `capacity`, allocated at the first call */
  int capacity;                        /* TALLY_FLIGHT_RECORDS, read at the first call; 0: off */
  uint64_t calls;                      /* records written so far; the newest is (calls - 1) % capacity */
  struct tally_flight_record *current; /* the running call's, or NULL */
};

struct tally_comm;

/* Starts the record of a call that started at tick `now` (nothing when the recorder is off or out
 * of memory). */
void tally_flight_begin(struct tally_comm *comm, int kind, int algo, int datatype, uint64_t count, uint64_t now);
/* Ends the running call's record at tick `now`: done, or failed. */
void tally_flight_end(struct tally_comm *comm, int failed, uint64_t now);
/* Writes the records, oldest first, with `why` (the failure's message) to the log and, when
 * TALLY_FLIGHT_DIR is set, to DIR/tally-flight-<communicator id>-<rank>.txt. */
void tally_flight_dump(const struct tally_comm *comm, const char *why);
/* Frees the records. */
void tally_flight_free(struct tally_flight *flight);

#endif
