/* A communicator's counters for users: tally_comm_stats, and the summary TALLY_STATS=1 prints at
 * destroy. The counting itself happens below (comm.h's struct tally_counters: calls in dispatch,
 * bytes where links post messages, waits in tally_comm_progress); this file only reads and names. */
#include "stats.h"

#define _GNU_SOURCE
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "comm/comm.h"
#include "core/clock.h"
#include "core/error.h"
#include "dispatch/dispatch.h"
#include "registry.h"

/* The public rows and transports of comm's counters. */
static void fill(const struct tally_comm *comm, tally_stats_t *out) {
  const struct tally_counters *k = &comm->counters;
  memset(out, 0, sizeof *out);
  out->size = sizeof *out;
  out->nranks = comm->nranks;
  for (int s = 0; s < TALLY_NUM_SLOTS && out->ntransports < TALLY_STATS_MAX_TRANSPORTS; s++) {
    if (!comm->slots[s].ep) continue;
    int t = out->ntransports++;
    out->transports[t].name = comm->slots[s].ops->name;
    out->transports[t].bytes_sent = atomic_load_explicit(&k->slot_sent[s], memory_order_relaxed);
    out->transports[t].bytes_received = atomic_load_explicit(&k->slot_received[s], memory_order_relaxed);
    out->transports[t].messages_sent = atomic_load_explicit(&k->slot_messages[s], memory_order_relaxed);
  }
  for (int c = 0; c < TALLY_COUNTED_KINDS; c++)
    for (int a = 0; a < TALLY_COUNTED_ALGOS && out->nrows < TALLY_STATS_MAX_ROWS; a++) {
      uint64_t calls = atomic_load_explicit(&k->calls[c][a], memory_order_relaxed);
      if (!calls) continue;
      tally_stats_row_t *row = &out->rows[out->nrows++];
      row->collective = c == TALLY_NUM_COLLS ? "point-to-point" : tally_coll_name(c);
      row->algorithm = a == TALLY_NUM_ALGOS ? "none" : tally_algo_name((enum tally_algo_id)a);
      row->calls = calls;
      row->bytes = atomic_load_explicit(&k->bytes[c][a], memory_order_relaxed);
      row->ns = (uint64_t)((double)atomic_load_explicit(&k->ticks[c][a], memory_order_relaxed) * tally_tick_ns());
    }
}

/* One per-peer counter into `to` (nranks values; zeros before any connection exists). */
static void copy_per_peer(const struct tally_comm *comm, _Atomic uint64_t *const from, uint64_t *to) {
  if (!to) return;
  for (int r = 0; r < comm->nranks; r++) to[r] = from ? atomic_load_explicit(&from[r], memory_order_relaxed) : 0;
}

tally_result_t tally_comm_stats(tally_comm_t comm, tally_stats_t *stats, uint64_t *sent_to, uint64_t *received_from,
                                uint64_t *waited_ns) {
  static const char fn[] = "tally_comm_stats";
  if (!comm || !tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: comm is NULL, destroyed or never created", fn);
  if (!stats) return tally_coll_remember(comm, TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: stats is NULL", fn));
  size_t size = stats->size, least = offsetof(tally_stats_t, rows);
  if (size < least)
    return tally_coll_remember(
        comm,
        TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                    "%s: stats->size is %zu; set it to sizeof(tally_stats_t) (%zu in this version) before the call", fn,
                    size, sizeof *stats));
  tally_stats_t all;
  fill(comm, &all);
  size_t rows_fit = (size - least) / sizeof all.rows[0];
  if ((size_t)all.nrows > rows_fit) all.nrows = (int)rows_fit;
  memcpy(stats, &all, size < sizeof all ? size : sizeof all);
  stats->size = size;
  copy_per_peer(comm, comm->counters.sent, sent_to);
  copy_per_peer(comm, comm->counters.received, received_from);
  copy_per_peer(comm, comm->counters.waited_ns, waited_ns);
  return TALLY_SUCCESS;
}

/* "1.5 MiB" */
static const char *bytes_text(uint64_t bytes, char *buf, size_t len) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, u++;
  snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

void tally_stats_print(const struct tally_comm *comm) {
  tally_stats_t s;
  fill(comm, &s);
  FILE *out = stderr;
  char a[32], b[32];
  fprintf(out, "tally stats: rank %d of %d, communicator %016llx\n", comm->rank, comm->nranks,
          (unsigned long long)comm->comm_id);
  for (int i = 0; i < s.nrows; i++) {
    const tally_stats_row_t *r = &s.rows[i];
    double seconds = (double)r->ns / 1e9;
    fprintf(out, "tally stats:   %-14s %-9s %8llu calls %10s in %9.3f ms (%.2f GB/s of input)\n", r->collective,
            r->algorithm, (unsigned long long)r->calls, bytes_text(r->bytes, a, sizeof a), seconds * 1e3,
            seconds > 0 ? (double)r->bytes / seconds / 1e9 : 0.0);
  }
  for (int t = 0; t < s.ntransports; t++)
    fprintf(out, "tally stats:   %-5s sent %s in %llu messages, received %s\n", s.transports[t].name,
            bytes_text(s.transports[t].bytes_sent, a, sizeof a), (unsigned long long)s.transports[t].messages_sent,
            bytes_text(s.transports[t].bytes_received, b, sizeof b));
  const struct tally_counters *k = &comm->counters;
  for (int r = 0; k->sent && r < comm->nranks; r++) {
    uint64_t sent = atomic_load(&k->sent[r]), received = atomic_load(&k->received[r]),
             waited = atomic_load(&k->waited_ns[r]);
    if (!sent && !received && !waited) continue;
    fprintf(out, "tally stats:   rank %-4d sent %10s, received %10s, waited %9.3f ms\n", r,
            bytes_text(sent, a, sizeof a), bytes_text(received, b, sizeof b), (double)waited / 1e6);
  }
}
