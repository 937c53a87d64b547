/* The flight recorder (flight.h): a ring of records per communicator, written out on failure. */
#define _GNU_SOURCE
#include "flight.h"

#include <stdio.h>
#include <stdlib.h>

#include "comm.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/wire.h"

void tally_flight_init(struct tally_flight *flight, int wanted, int locked) {
  if (locked) pthread_mutex_init(&flight->lock, NULL);
  flight->locked = locked;
  flight->wanted = wanted;
}

static void lock(struct tally_flight *f) {
  if (f->locked) pthread_mutex_lock(&f->lock);
}
static void unlock(struct tally_flight *f) {
  if (f->locked) pthread_mutex_unlock(&f->lock);
}

/* The first call (TALLY_FLIGHT_RECORDS records from now on), and every call with the lock. */
void tally_flight_begin_slowly(struct tally_flight *f, const struct tally_flight_record *call) {
  if (!f->records) {
    f->current = NULL;
    if (f->wanted <= 0) return;
    struct tally_flight_record *records = calloc((size_t)f->wanted, sizeof *records);
    if (!records) return;
    lock(f);
    f->capacity = f->wanted;
    f->records = records;
    if (!f->locked) f->unlocked = records;
    unlock(f);
  }
  lock(f);
  tally_flight_write(f, f->records, call);
  unlock(f);
}

void tally_flight_end_slowly(struct tally_flight *f, int failed, uint64_t now) {
  lock(f);
  struct tally_flight_record *r = f->current;
  if (!now && r->start) now = tally_ticks(); /* a call not timed that waited: its wait set start */
  tally_flight_close(f, r, failed, now);
  unlock(f);
}

void tally_flight_waiting_for(struct tally_comm *comm, int rank) {
  struct tally_flight *f = &comm->flight;
  if (!f->current) return;
  lock(f);
  f->current->waiting_for = rank;
  if (!f->current->start) f->current->start = tally_ticks(); /* a call the counters did not time */
  unlock(f);
}

/* One record as a line: "#12 allreduce ring count 1024 float32: failed after 2.001 s, last waiting for rank 3". */
static void format_record(const struct tally_flight_record *r, uint64_t now, char *buf, size_t len) {
  static const char *const states[] = {"running for", "done in", "failed after"};
  static const char *const untimed_states[] = {"running", "done", "failed"};
  const char *kind = r->kind == TALLY_NUM_COLLS ? "point-to-point batch" : tally_coll_name(r->kind);
  const char *algo = r->algo == TALLY_NUM_ALGOS ? "" : tally_algo_name((enum tally_algo_id)r->algo);
  const char *type = tally_datatype_name((tally_datatype_t)r->datatype);
  uint64_t until = r->state == TALLY_FLIGHT_RUNNING ? now : r->end;
  char took[48] = ""; /* a call the counters did not time, and that never waited, has no duration */
  if (r->start && until) snprintf(took, sizeof took, " %.6f s", (double)(until - r->start) * tally_tick_ns() / 1e9);
  int n = snprintf(buf, len, "#%u %s%s%s %s %llu%s%s: %s%s", r->seq, kind, algo[0] ? " " : "", algo,
                   r->kind == TALLY_NUM_COLLS ? "messages" : "count", (unsigned long long)r->count,
                   r->kind == TALLY_NUM_COLLS ? "" : " ", r->kind == TALLY_NUM_COLLS ? "" : (type ? type : "?"),
                   took[0] ? states[r->state] : untimed_states[r->state], took);
  if (r->waiting_for >= 0 && n > 0 && (size_t)n < len)
    snprintf(buf + n, len - (size_t)n, ", last waiting for rank %d", r->waiting_for);
}

static void dump_records(const struct tally_comm *comm, const char *why) {
  const struct tally_flight *f = &comm->flight;
  if (!f->records || f->calls == 0) return;
  FILE *file = NULL;
  if (comm->cfg.flight_dir[0]) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tally-flight-%016llx-%d.txt", comm->cfg.flight_dir,
             (unsigned long long)comm->comm_id, comm->rank);
    if (!(file = fopen(path, "w"))) TLOG_WARN(TALLY_SUBSYS_COLL, "flight recorder: cannot write %s", path);
  }
  uint64_t first = f->calls > (uint64_t)f->capacity ? f->calls - (uint64_t)f->capacity : 0, now = tally_ticks();
  TLOG_WARN(TALLY_SUBSYS_COLL, "flight recorder of rank %d of %d, communicator %016llx, its last %llu calls: %s",
            comm->rank, comm->nranks, (unsigned long long)comm->comm_id, (unsigned long long)(f->calls - first), why);
  if (file)
    fprintf(file, "rank %d of %d, communicator %016llx: %s\n", comm->rank, comm->nranks,
            (unsigned long long)comm->comm_id, why);
  for (uint64_t i = first; i < f->calls; i++) {
    char line[256];
    format_record(&f->records[i % (uint64_t)f->capacity], now, line, sizeof line);
    TLOG_WARN(TALLY_SUBSYS_COLL, "  %s", line);
    if (file) fprintf(file, "%s\n", line);
  }
  if (file) fclose(file);
}

void tally_flight_dump(struct tally_comm *comm, const char *why) {
  lock(&comm->flight);
  dump_records(comm, why);
  unlock(&comm->flight);
}

void tally_flight_free(struct tally_flight *flight) {
  free(flight->records);
  flight->records = flight->unlocked = NULL;
  flight->current = NULL;
  if (flight->locked) pthread_mutex_destroy(&flight->lock);
  flight->locked = 0;
}
