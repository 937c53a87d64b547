/* Link calibration (calibrate.h): the cost model's link parameters from TALLY_TUNING_FILE, the cache
 * or a measurement, decided by rank 0 and broadcast to every rank.
 *
 *   rank 0                                      every other rank
 *   decide: file | cache | plan a measurement
 *   broadcast the decision  ------------------> costs or an error: done
 *   plan: time trips around each class's ring <-> the ring's other members pass the trips on
 *         time a float sum for gamma
 *   broadcast the costs     ------------------> done
 *   log them; write the cache when measured
 *
 * A trip: rank 0 sends a message around a ring whose other members each pass it on as soon as they
 * have it, and times its return; over the ring's size that is one hop, alpha + bytes * beta. For
 * each class rank 0 takes the first ring it has of that class: the hierarchical ring of its host
 * (shm) or across hosts (net); else the world ring when every hop of it is of the class (one host:
 * shm; one rank per host: net); else the pair {rank 0, the lowest rank of the class it has
 * connections both to and from} (a ping-pong). A ring of the job's own ranks comes first because
 * its hops pay what the collectives' hops pay: with more ranks than cores on a host, a hop waits
 * for its rank to be scheduled, which a ping-pong between two ranks of an idle job never sees. Rank 0 says in each
 * message's first byte what follows (a small trip, a large one, or nothing), so it can stop once its time budget is
 * spent while the members, which read that byte, stay in step.
 *
 * Sequence numbers: collectives are numbered from 0 (comm->seq) and every message header carries
 * the number. Calibration runs before the first collective with comm->seq set to numbers of its
 * own at the top of the 32-bit range, CALIBRATION_SEQ + phase (0: the decision; 1 + class: that
 * class's trips; 1 + TALLY_NUM_LINK_CLASSES: the costs), and sets it back afterwards. Every
 * calibration message is received before its receiver leaves calibration (trips return to rank 0,
 * and a broadcast's chain ends with an acknowledgement to rank 0), so none is left over; were one
 * ever left, its number would make the first collective fail with a mismatch rather than be taken
 * for data, since collectives reach those numbers only after 2^32 - 256 calls. */
#define _GNU_SOURCE
#include "calibrate.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "algorithms/algorithm.h"
#include "algorithms/pipeline.h"
#include "core/bytes.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/reduce.h"
#include "tuning_io.h"

#define CALIBRATION_SEQ 0xffffff00u

/* Trips: small ones (SMALL_BYTES) give alpha; large ones of two sizes, L and 2L, give beta from the
 * slope between them, so that what a large message pays once (a link's initial burst: a token
 * bucket's, TCP's window opening; the copy into a fresh buffer) cancels out. L is about TRIP_BYTES
 * over the ring's size (within [MIN_LARGE_BYTES, MAX_LARGE_BYTES]), so a long ring takes no longer
 * than a pair and the noise of its hops averages out. A round is a small trip that wakes the
 * members up (one that waited longer than TALLY_SPIN_US for it sleeps, and its waking is no part
 * of a message's latency), then a timed small trip and the two timed large ones. The first round
 * warms the connections up and is not counted; then rounds follow until MAX_ROUNDS, or until
 * MIN_ROUNDS once the class has taken CLASS_BUDGET_NS (a few milliseconds, unless the network is
 * slow: at 1 Gbit/s the minimum takes some 50 ms, once per cache file). */
enum { SMALL_BYTES = 8, MIN_LARGE_BYTES = 32 * 1024, MAX_LARGE_BYTES = 256 * 1024, TRIP_BYTES = 512 * 1024 };
enum { TRIPS_PER_ROUND = 4, MIN_ROUNDS = 3, MAX_ROUNDS = 7 };
#define CLASS_BUDGET_NS 1500000ull
enum { NEXT_NONE, NEXT_SMALL, NEXT_LARGE, NEXT_LARGER }; /* a trip's first byte: what follows it */

/* Gamma: a float sum of GAMMA_BYTES into as many (beyond L1 and most L2s), median of GAMMA_ROUNDS. */
enum { GAMMA_BYTES = 1 << 20, GAMMA_ROUNDS = 5 };

/* Beta is at least this (1 TB/s): a large trip that timing noise made no slower than a small one. */
#define BETA_FLOOR_US_PER_BYTE 1e-6

static const char *const class_names[TALLY_NUM_LINK_CLASSES] = {"shm", "net"};

void tally_calibrate_defaults(struct tally_cost_params costs[TALLY_NUM_LINK_CLASSES]) {
  double gamma = 1e-3 / TALLY_DEFAULT_REDUCE_GBPS; /* 1 GB/s = 1e3 bytes per microsecond */
  costs[TALLY_LINK_SHM] = (struct tally_cost_params){TALLY_DEFAULT_SHM_ALPHA_US, 1e-3 / TALLY_DEFAULT_SHM_GBPS, gamma};
  costs[TALLY_LINK_NET] = (struct tally_cost_params){TALLY_DEFAULT_NET_ALPHA_US, 1e-3 / TALLY_DEFAULT_NET_GBPS, gamma};
}

/* --- what rank 0 broadcasts ------------------------------------------------------------------ */

/* The ring a class is timed on (see the top of the file); `peer` for ROUTE_PAIR only. */
enum { ROUTE_NONE, ROUTE_PAIR, ROUTE_LOCAL, ROUTE_CROSS, ROUTE_WORLD };
struct route {
  int kind, peer;
};

enum { RECORD_COSTS = 1, RECORD_PLAN, RECORD_FAILED };

/* The wire form, big-endian: 0 magic "TLYK", 4 kind, 8 per class {route kind, peer}, 24 per class
 * {alpha, beta, gamma} (IEEE doubles), 72 result code, 76 message (NUL-terminated). */
enum { OFF_KIND = 4, OFF_ROUTES = 8, OFF_COSTS = 24, OFF_CODE = 72, OFF_MESSAGE = 76, RECORD_BYTES = 1024 };
#define RECORD_MAGIC 0x544c594bu
_Static_assert(OFF_COSTS == OFF_ROUTES + 8 * TALLY_NUM_LINK_CLASSES &&
                   OFF_CODE == OFF_COSTS + 24 * TALLY_NUM_LINK_CLASSES,
               "the record's layout follows the number of link classes");

struct record {
  int kind;
  struct route routes[TALLY_NUM_LINK_CLASSES];            /* RECORD_PLAN */
  struct tally_cost_params costs[TALLY_NUM_LINK_CLASSES]; /* RECORD_COSTS */
  tally_result_t code;                                    /* RECORD_FAILED */
  char message[RECORD_BYTES - OFF_MESSAGE];
};

static void put_double(unsigned char *p, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  tally_put_u64(p, bits);
}

static double get_double(const unsigned char *p) {
  uint64_t bits = tally_get_u64(p);
  double v;
  memcpy(&v, &bits, sizeof v);
  return v;
}

static void encode(const struct record *rec, unsigned char wire[RECORD_BYTES]) {
  memset(wire, 0, RECORD_BYTES);
  tally_put_u32(wire, RECORD_MAGIC);
  tally_put_u32(wire + OFF_KIND, (uint32_t)rec->kind);
  for (int c = 0; c < TALLY_NUM_LINK_CLASSES; c++) {
    tally_put_u32(wire + OFF_ROUTES + 8 * c, (uint32_t)rec->routes[c].kind);
    tally_put_u32(wire + OFF_ROUTES + 8 * c + 4, (uint32_t)rec->routes[c].peer);
    put_double(wire + OFF_COSTS + 24 * c, rec->costs[c].alpha_us);
    put_double(wire + OFF_COSTS + 24 * c + 8, rec->costs[c].beta_us_per_byte);
    put_double(wire + OFF_COSTS + 24 * c + 16, rec->costs[c].gamma_us_per_byte);
  }
  tally_put_u32(wire + OFF_CODE, (uint32_t)rec->code);
  snprintf((char *)wire + OFF_MESSAGE, RECORD_BYTES - OFF_MESSAGE, "%s", rec->message);
}

/* The ranges TALLY_TUNING_FILE accepts. */
static int costs_valid(const struct tally_cost_params *p) {
  return isfinite(p->alpha_us) && p->alpha_us >= 0 && isfinite(p->beta_us_per_byte) && p->beta_us_per_byte > 0 &&
         isfinite(p->gamma_us_per_byte) && p->gamma_us_per_byte >= 0;
}

/* Whether this rank has what `route` needs of it (every rank plans rings alike, so a route that
 * does not fit comes from a rank 0 that is not this version of Tally). */
static int route_fits(const struct tally_comm *c, struct route r) {
  switch (r.kind) {
    case ROUTE_NONE:
    case ROUTE_WORLD: return 1;
    case ROUTE_PAIR: return r.peer > 0 && r.peer < c->nranks && (c->rank != r.peer || (c->to[0].ops && c->from[0].ops));
    case ROUTE_LOCAL: return c->local.size > 1;
    case ROUTE_CROSS: return c->cross.size > 1;
  }
  return 0;
}

/* Reads rank 0's record; everything is checked, as for anything from the network. */
static tally_result_t decode(const struct tally_comm *c, unsigned char wire[RECORD_BYTES], struct record *rec) {
  memset(rec, 0, sizeof *rec);
  rec->kind = (int)tally_get_u32(wire + OFF_KIND);
  rec->code = (tally_result_t)tally_get_u32(wire + OFF_CODE);
  wire[RECORD_BYTES - 1] = '\0';
  snprintf(rec->message, sizeof rec->message, "%s", (const char *)wire + OFF_MESSAGE);
  int ok = tally_get_u32(wire) == RECORD_MAGIC && rec->kind >= RECORD_COSTS && rec->kind <= RECORD_FAILED;
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) {
    rec->routes[k] = (struct route){(int)tally_get_u32(wire + OFF_ROUTES + 8 * k),
                                    (int)tally_get_u32(wire + OFF_ROUTES + 8 * k + 4)};
    rec->costs[k] =
        (struct tally_cost_params){get_double(wire + OFF_COSTS + 24 * k), get_double(wire + OFF_COSTS + 24 * k + 8),
                                   get_double(wire + OFF_COSTS + 24 * k + 16)};
    if (rec->kind == RECORD_PLAN) ok &= route_fits(c, rec->routes[k]);
    if (rec->kind == RECORD_COSTS) ok &= costs_valid(&rec->costs[k]);
  }
  if (rec->kind == RECORD_FAILED) ok &= rec->code > TALLY_SUCCESS && rec->code <= TALLY_ERR_INTERNAL;
  if (!ok)
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "rank 0 sent link costs this rank cannot use (a malformed record, or a plan that does not fit "
                       "this rank's connections): do all ranks run the same version of Tally?");
  return TALLY_SUCCESS;
}

/* Rank 0's record to every rank, on the world ring. */
static tally_result_t share(struct tally_comm *c, struct record *rec) {
  unsigned char wire[RECORD_BYTES];
  if (c->rank == 0) encode(rec, wire);
  struct tally_coll_desc d = {TALLY_COLL_BROADCAST, wire, wire, sizeof wire, TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  uint64_t start = tally_now_ns();
  TALLY_CHECK(tally_ring_algorithm.run(c, &d));
  TLOG_TRACE(TALLY_SUBSYS_TUNE, "link costs: rank 0's record broadcast in %.1f us",
             (double)(tally_now_ns() - start) / 1e3);
  return c->rank == 0 ? TALLY_SUCCESS : decode(c, wire, rec);
}

/* --- tuning files: TALLY_TUNING_FILE and the cache ------------------------------------------- */

static tally_result_t costs_from_tuning_file(const char *path, struct tally_cost_params *costs) {
  char *text = tally_tuning_read_text(path);
  if (!text)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_TUNING_FILE=%s cannot be read (%s); point it at a readable tuning file (lines such as "
                       "net.alpha_us = 12.5, see the README) or unset it to let Tally measure the links",
                       path, strerror(errno));
  tally_result_t r = tally_tuning_apply_text(text, path, costs);
  free(text);
  return r;
}

/* 1 when the cache file at `path` gave `costs`; 0 (with a WARN unless it does not exist) when not. */
static int costs_from_cache(const char *path, struct tally_cost_params *costs) {
  char *text = tally_tuning_read_text(path);
  if (!text) {
    if (errno != ENOENT && errno != ENOTDIR) /* not there: measured, then written (or not: see write_cache) */
      TLOG_WARN(TALLY_SUBSYS_TUNE, "cannot read the link-cost cache %s (%s): measuring the links instead", path,
                strerror(errno));
    return 0;
  }
  tally_result_t r = tally_tuning_apply_text(text, path, costs);
  free(text);
  if (r != TALLY_SUCCESS) {
    const char *why = strstr(tally_error_message(), ", line "); /* after the parser's "TALLY_TUNING_FILE=path" */
    TLOG_WARN(TALLY_SUBSYS_TUNE,
              "ignoring the link-cost cache %s, which is not a valid tuning file (%s): measuring the links again "
              "and rewriting it",
              path, why ? why + 2 : tally_error_message());
    tally_error_clear();
  }
  return r == TALLY_SUCCESS;
}

/* --- routes: the ring each class is timed on ------------------------------------------------- */

static int in_class(const struct tally_comm *c, int rank, int cls) {
  return tally_job_topo_same_host(&c->topo, 0, rank) == (cls == TALLY_LINK_SHM);
}

/* Rank 0's choice for class `cls` (see the top of the file). */
static struct route choose_route(const struct tally_comm *c, int cls) {
  int one_host = c->topo.nhosts == 1, one_rank_per_host = c->topo.nhosts == c->nranks;
  if (cls == TALLY_LINK_SHM && (c->local.size > 1 || one_host))
    return (struct route){c->local.size > 1 ? ROUTE_LOCAL : ROUTE_WORLD, 0};
  if (cls == TALLY_LINK_NET && (c->cross.size > 1 || one_rank_per_host))
    return (struct route){c->cross.size > 1 ? ROUTE_CROSS : ROUTE_WORLD, 0};
  for (int r = 1; r < c->nranks; r++)
    if (in_class(c, r, cls) && c->to[r].ops && c->from[r].ops) return (struct route){ROUTE_PAIR, r};
  return (struct route){ROUTE_NONE, 0};
}

/* The ring of `route` as this rank sees it, or NULL when this rank is not on it; a pair ring is
 * built in `pair`. Rank 0 is the first member of each (index 0). */
static const struct tally_ring *route_ring(const struct tally_comm *c, struct route route, struct tally_ring *pair) {
  const struct tally_job_topo *t = &c->topo;
  switch (route.kind) {
    case ROUTE_PAIR: {
      if (c->rank != 0 && c->rank != route.peer) return NULL;
      int partner = c->rank == 0 ? route.peer : 0;
      *pair = (struct tally_ring){.index = c->rank != 0,
                                  .size = 2,
                                  .next_rank = partner,
                                  .prev_rank = partner,
                                  .to_next = c->to[partner],
                                  .from_prev = c->from[partner]};
      return pair;
    }
    case ROUTE_LOCAL: return t->host_index[c->rank] == t->host_index[0] ? &c->local : NULL;
    case ROUTE_CROSS: return t->local_rank[c->rank] == t->local_rank[0] ? &c->cross : NULL;
    case ROUTE_WORLD: return &c->world;
  }
  return NULL;
}

/* The transport of rank 0's first hop on `route` ("none" when there is no route), for the cache. */
static const char *route_transport(const struct tally_comm *c, struct route route) {
  struct tally_ring pair;
  const struct tally_ring *ring = route_ring(c, route, &pair);
  return ring ? ring->to_next.ops->name : "none";
}

/* "ping-pong with rank 1 over shm", or why a class keeps the defaults. */
static void describe_route(const struct tally_comm *c, int cls, struct route route, char *buf, size_t len) {
  const char *over = route_transport(c, route);
  switch (route.kind) {
    case ROUTE_PAIR: snprintf(buf, len, "ping-pong with rank %d over %s", route.peer, over); return;
    case ROUTE_LOCAL:
      snprintf(buf, len, "trips around the %d ranks of rank 0's host over %s", c->local.size, over);
      return;
    case ROUTE_CROSS: snprintf(buf, len, "trips around %d hosts over %s", c->cross.size, over); return;
    case ROUTE_WORLD: snprintf(buf, len, "trips around all %d ranks over %s", c->nranks, over); return;
  }
  if (cls == TALLY_LINK_NET && c->topo.nhosts == 1)
    snprintf(buf, len, "built-in default: the job runs on one host");
  else if (cls == TALLY_LINK_SHM && c->topo.local_size[0] == 1)
    snprintf(buf, len, "built-in default: no other rank on rank 0's host");
  else
    snprintf(buf, len, "built-in default: rank 0 has no ring of this class to time");
}

/* --- measuring ------------------------------------------------------------------------------- */

/* A trip's plan: one message out on ring->to_next, one back from ring->from_prev. */
struct trip {
  struct pipeline_plan plan;
  struct tally_coll_desc desc;
  char *send, *recv;
  size_t bytes;
};

static void trip_send_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct trip *t = plan->ctx;
  (void)step, (void)chunk;
  span->ptr = t->send;
  span->bytes = t->bytes;
}

static void trip_recv_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct trip *t = plan->ctx;
  (void)step, (void)chunk;
  span->ptr = t->recv;
  span->bytes = t->bytes;
}

/* One trip of `bytes` around `ring`: its first member (rank 0) sends `send` and receives into
 * `recv`; every other member receives into `send` and passes that on once it is in. */
static tally_result_t trip(struct tally_comm *c, const struct tally_ring *ring, char *send, char *recv, size_t bytes) {
  int first = ring->index == 0;
  struct trip t = {.desc = {TALLY_COLL_BROADCAST, send, send, bytes, TALLY_UINT8, TALLY_SUM, 0},
                   .send = send,
                   .recv = first ? recv : send,
                   .bytes = bytes};
  t.plan = (struct pipeline_plan){.desc = &t.desc,
                                  .nchunks = 1,
                                  .send_steps = 1,
                                  .recv_steps = 1,
                                  .dep_lag = first ? 1 : 0, /* the first sends at once, the others forward */
                                  .max_chunk = bytes,
                                  .send_span = trip_send_span,
                                  .recv_span = trip_recv_span,
                                  .ctx = &t};
  return tally_pipeline_run(c, ring, &t.plan);
}

/* The size of the large trips on a ring of `members`; every member works it out alike. */
static size_t large_bytes(int members) {
  size_t bytes = TRIP_BYTES / (size_t)members;
  return bytes > MAX_LARGE_BYTES ? MAX_LARGE_BYTES : bytes < MIN_LARGE_BYTES ? MIN_LARGE_BYTES : bytes;
}

/* Rank 0: one trip that tells the members `next`, and how long it took in microseconds. */
static tally_result_t timed_trip(struct tally_comm *c, const struct tally_ring *ring, char *buf, size_t bytes, int next,
                                 double *us) {
  buf[0] = (char)next;
  uint64_t start = tally_now_ns();
  TALLY_CHECK(trip(c, ring, buf, buf + 2 * MAX_LARGE_BYTES, bytes));
  *us = (double)(tally_now_ns() - start) / 1e3;
  return TALLY_SUCCESS;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, compare_doubles);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Rank 0: alpha and beta of the class whose ring is `ring`, from the median trips of each size;
 * `rounds` says how many were timed. `buf` holds 4 * MAX_LARGE_BYTES. */
static tally_result_t time_ring(struct tally_comm *c, const struct tally_ring *ring, char *buf,
                                struct tally_cost_params *out, int *rounds) {
  double small[MAX_ROUNDS], large[MAX_ROUNDS], larger[MAX_ROUNDS], small_us, large_us, larger_us;
  size_t large_size = large_bytes(ring->size);
  uint64_t start = tally_now_ns();
  for (int round = 0;; round++) {                                              /* round 0 warms up */
    TALLY_CHECK(timed_trip(c, ring, buf, SMALL_BYTES, NEXT_SMALL, &small_us)); /* wakes the members */
    TALLY_CHECK(timed_trip(c, ring, buf, SMALL_BYTES, NEXT_LARGE, &small_us));
    TALLY_CHECK(timed_trip(c, ring, buf, large_size, NEXT_LARGER, &large_us));
    int more = round < MAX_ROUNDS && (round < MIN_ROUNDS || tally_now_ns() - start < CLASS_BUDGET_NS);
    TALLY_CHECK(timed_trip(c, ring, buf, 2 * large_size, more ? NEXT_SMALL : NEXT_NONE, &larger_us));
    if (round > 0) small[round - 1] = small_us, large[round - 1] = large_us, larger[round - 1] = larger_us;
    if (!more) {
      *rounds = round;
      break;
    }
  }
  double small_hop = median(small, *rounds) / ring->size, large_hop = median(large, *rounds) / ring->size;
  double larger_hop = median(larger, *rounds) / ring->size;
  TLOG_TRACE(TALLY_SUBSYS_TUNE,
             "%d rounds of trips around %d ranks in %.1f ms: hops of %d B %.2f us, of %zu B %.2f us, of %zu B %.2f us",
             *rounds, ring->size, (double)(tally_now_ns() - start) / 1e6, SMALL_BYTES, small_hop, large_size, large_hop,
             2 * large_size, larger_hop);
  double beta = (larger_hop - large_hop) / (double)large_size;
  out->beta_us_per_byte = beta > BETA_FLOOR_US_PER_BYTE ? beta : BETA_FLOOR_US_PER_BYTE;
  double alpha = small_hop - SMALL_BYTES * out->beta_us_per_byte;
  out->alpha_us = alpha > 0 ? alpha : 0;
  return TALLY_SUCCESS;
}

/* A member other than rank 0: passes trips on until rank 0 says none follows. */
static tally_result_t forward_trips(struct tally_comm *c, const struct tally_ring *ring, char *buf) {
  size_t bytes = SMALL_BYTES, large_size = large_bytes(ring->size);
  const size_t sizes[] = {[NEXT_SMALL] = SMALL_BYTES, [NEXT_LARGE] = large_size, [NEXT_LARGER] = 2 * large_size};
  for (int n = 0; n < TRIPS_PER_ROUND * (MAX_ROUNDS + 1); n++) {
    TALLY_CHECK(trip(c, ring, buf, NULL, bytes));
    if (buf[0] == NEXT_NONE) return TALLY_SUCCESS;
    if (buf[0] != NEXT_SMALL && buf[0] != NEXT_LARGE && buf[0] != NEXT_LARGER) break;
    bytes = sizes[(int)buf[0]];
  }
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "the link measurement at init went wrong: rank 0 asked for more trips, or other ones, than this "
                     "rank knows (do all ranks run the same version of Tally?)");
}

/* Rank 0: the time to reduce one byte, from a float sum of GAMMA_BYTES; 0 when there is no memory
 * to time it in. */
static double time_reduction(void) {
  size_t n = GAMMA_BYTES / sizeof(float);
  float *a = malloc(GAMMA_BYTES), *b = malloc(GAMMA_BYTES);
  double us[GAMMA_ROUNDS], gamma = 0;
  if (a && b) {
    for (size_t i = 0; i < n; i++) a[i] = 1, b[i] = 0.5f; /* and the pages are in */
    tally_reduce_apply(a, a, b, n, TALLY_FLOAT32, TALLY_SUM);
    for (int i = 0; i < GAMMA_ROUNDS; i++) {
      uint64_t start = tally_now_ns();
      tally_reduce_apply(a, a, b, n, TALLY_FLOAT32, TALLY_SUM);
      us[i] = (double)(tally_now_ns() - start) / 1e3;
    }
    gamma = median(us, GAMMA_ROUNDS) / GAMMA_BYTES;
    TLOG_TRACE(TALLY_SUBSYS_TUNE, "a float sum of %d bytes in %.1f us (median of %d)", GAMMA_BYTES, gamma * GAMMA_BYTES,
               GAMMA_ROUNDS);
  }
  free(a);
  free(b);
  return gamma;
}

/* What rank 0 knows beyond the values, for the log and the cache. */
enum { FROM_FILE, FROM_CACHE, MEASURED };
struct provenance {
  int source;
  char cache[PATH_MAX]; /* the cache file; "" when the cache is off or has no place */
  char how[TALLY_NUM_LINK_CLASSES][128];
  int gamma_measured;
  double ms; /* measured: how long it took, from the plan's broadcast to the costs' */
};

/* Every rank, after a plan: rank 0 times each class's ring and the reduction into rec->costs (over
 * the defaults, which unmeasured classes keep); the other members of each ring pass its trips on. */
static tally_result_t measure(struct tally_comm *c, struct record *rec, struct provenance *prov) {
  char *buf = calloc(4, MAX_LARGE_BYTES);
  if (!buf) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the link measurement at init");
  tally_result_t r = TALLY_SUCCESS;
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES && r == TALLY_SUCCESS; k++) {
    struct tally_ring pair;
    const struct tally_ring *ring = route_ring(c, rec->routes[k], &pair);
    c->seq = CALIBRATION_SEQ + 1 + (uint32_t)k;
    int rounds = 0;
    if (ring && c->rank == 0) r = time_ring(c, ring, buf, &rec->costs[k], &rounds);
    if (ring && c->rank != 0) r = forward_trips(c, ring, buf);
    if (c->rank == 0 && rounds > 0) {
      size_t used = strlen(prov->how[k]);
      snprintf(prov->how[k] + used, sizeof prov->how[k] - used,
               ", messages of %d, %zu and %zu bytes (beta from the slope between the last two), median of %d",
               SMALL_BYTES, large_bytes(ring->size), 2 * large_bytes(ring->size), rounds);
    }
  }
  free(buf);
  if (r != TALLY_SUCCESS || c->rank != 0) return r;
  double gamma = time_reduction();
  prov->gamma_measured = gamma > 0;
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES && gamma > 0; k++) rec->costs[k].gamma_us_per_byte = gamma;
  if (!prov->gamma_measured)
    TLOG_WARN(TALLY_SUBSYS_TUNE, "no memory to time the reduction at init: its cost is the built-in default");
  rec->kind = RECORD_COSTS;
  return TALLY_SUCCESS;
}

/* --- the cache ------------------------------------------------------------------------------- */

/* The cache file of rank 0's host, of the number of ranks on it (hops are slower when ranks
 * outnumber cores) and of the transports of each class ("none" for a class not measured):
 * links-HOST-Rranks-shm-T-net-T.tune. The host is its name: stable across boots, distinct on the
 * nodes of a cluster that share a home directory, and the same for the fake hosts (TALLY_HOSTID) of
 * one machine, which share its hardware. 0 when there is no place for the file. */
static int cache_path(const struct tally_comm *c, const struct route routes[TALLY_NUM_LINK_CLASSES], char *buf,
                      size_t len) {
  char dir[PATH_MAX], host[TALLY_TOPO_HOSTNAME_BYTES];
  if (!tally_tuning_cache_dir(dir, sizeof dir)) {
    TLOG_INFO(TALLY_SUBSYS_TUNE,
              "no place for the link-cost cache: neither XDG_CACHE_HOME nor HOME is an absolute "
              "path; the links are measured at each init");
    return 0;
  }
  const struct tally_topo *me = &c->peers[0].topo;
  size_t i = 0;
  for (; me->hostname[i] && i + 1 < sizeof host; i++) { /* only characters that are safe in a file name */
    char ch = me->hostname[i];
    host[i] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'
                  ? ch
                  : '_';
  }
  host[i] = '\0';
  int n = snprintf(buf, len, "%s/links-%s-%dranks-shm-%s-net-%s.tune", dir, i ? host : "unknown", c->topo.local_size[0],
                   route_transport(c, routes[TALLY_LINK_SHM]), route_transport(c, routes[TALLY_LINK_NET]));
  return n > 0 && (size_t)n < len;
}

/* What the cache file says: the comm, its provenance and its record. */
struct cache_text {
  const struct tally_comm *c;
  const struct provenance *prov;
  const struct record *rec;
};

static void write_cache_text(FILE *f, const void *ctx) {
  const struct cache_text *t = ctx;
  const struct tally_comm *c = t->c;
  const struct provenance *prov = t->prov;
  const struct record *rec = t->rec;
  char when[64];
  time_t now = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&now, &tm));
  fprintf(f, "# Tally's link costs for host %s, measured %s in %.1f ms by rank 0 of %d ranks on %d host(s).\n",
          c->peers[0].topo.hostname, when, prov->ms, c->nranks, c->topo.nhosts);
  fprintf(f, "# One hop = the time of a trip around a ring / the ring's size; the classes' rings:\n");
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) fprintf(f, "#   %s: %s\n", class_names[k], prov->how[k]);
  fprintf(f, "# gamma: %s.\n", prov->gamma_measured ? "a float sum of 1 MiB, median of 5" : "built-in default");
  fprintf(f, "# TALLY_TUNING_FILE's format (a copy may serve as one). Delete this file to measure again.\n");
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++)
    if (rec->routes[k].kind != ROUTE_NONE)
      fprintf(f, "%s.alpha_us = %.9g\n%s.beta_us_per_byte = %.9g\n", class_names[k], rec->costs[k].alpha_us,
              class_names[k], rec->costs[k].beta_us_per_byte);
  if (prov->gamma_measured) fprintf(f, "gamma_us_per_byte = %.9g\n", rec->costs[0].gamma_us_per_byte);
}

/* The cache, or an INFO line saying why not: a cache that cannot be written is no error. */
static void write_cache(const struct tally_comm *c, const struct provenance *prov, const struct record *rec) {
  struct cache_text text = {c, prov, rec};
  if (tally_tuning_write_atomically(prov->cache, write_cache_text, &text))
    TLOG_INFO(TALLY_SUBSYS_TUNE, "cannot write the link-cost cache %s (%s): later jobs will measure the links again",
              prov->cache, strerror(errno));
  else
    TLOG_INFO(TALLY_SUBSYS_TUNE, "link costs saved in %s for later jobs (TALLY_TUNING_CACHE=0 turns this off)",
              prov->cache);
}

/* --- deciding, logging, and the whole -------------------------------------------------------- */

/* Rank 0: the costs from TALLY_TUNING_FILE or the cache, an error, or a plan to measure them. */
static void decide(struct tally_comm *c, struct provenance *prov, struct record *rec) {
  tally_calibrate_defaults(rec->costs);
  if (c->cfg.tuning_file[0]) {
    tally_result_t r = costs_from_tuning_file(c->cfg.tuning_file, rec->costs);
    rec->kind = r == TALLY_SUCCESS ? RECORD_COSTS : RECORD_FAILED;
    rec->code = r;
    snprintf(rec->message, sizeof rec->message, "%s", r == TALLY_SUCCESS ? "" : tally_error_message());
    prov->source = FROM_FILE;
    return;
  }
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) {
    rec->routes[k] = choose_route(c, k);
    describe_route(c, k, rec->routes[k], prov->how[k], sizeof prov->how[k]);
  }
  if (c->cfg.tuning_cache && cache_path(c, rec->routes, prov->cache, sizeof prov->cache) &&
      costs_from_cache(prov->cache, rec->costs)) {
    rec->kind = RECORD_COSTS;
    prov->source = FROM_CACHE;
    return;
  }
  rec->kind = RECORD_PLAN;
  prov->source = MEASURED;
}

/* "alpha 3.1 us, 6.20 GB/s, reduces at 12.5 GB/s" */
static const char *describe_costs(const struct tally_cost_params *p, char *buf, size_t len) {
  char reduction[48] = "reduces for free";
  if (p->gamma_us_per_byte > 0)
    snprintf(reduction, sizeof reduction, "reduces at %.2f GB/s", 1e-3 / p->gamma_us_per_byte);
  snprintf(buf, len, "alpha %.1f us, %.2f GB/s, %s", p->alpha_us, 1e-3 / p->beta_us_per_byte, reduction);
  return buf;
}

static void log_costs(const struct tally_comm *c, const char *file, const struct provenance *prov) {
  char source[PATH_MAX + 64], text[TALLY_NUM_LINK_CLASSES][128];
  if (prov->source == FROM_FILE)
    snprintf(source, sizeof source, "from TALLY_TUNING_FILE=%s (built-in defaults for what it does not give)", file);
  else if (prov->source == FROM_CACHE)
    snprintf(source, sizeof source, "from the cache %s", prov->cache);
  else
    snprintf(source, sizeof source, "measured in %.1f ms", prov->ms);
  int measured = prov->source == MEASURED;
  TLOG_INFO(TALLY_SUBSYS_TUNE, "link costs %s: shm %s%s%s%s; net %s%s%s%s", source,
            describe_costs(&c->link_cost[TALLY_LINK_SHM], text[0], sizeof text[0]), measured ? " (" : "",
            measured ? prov->how[TALLY_LINK_SHM] : "", measured ? ")" : "",
            describe_costs(&c->link_cost[TALLY_LINK_NET], text[1], sizeof text[1]), measured ? " (" : "",
            measured ? prov->how[TALLY_LINK_NET] : "", measured ? ")" : "");
}

/* One rank: nothing to measure, no cache; TALLY_TUNING_FILE is still read, so a bad one is refused. */
static tally_result_t calibrate_alone(struct tally_comm *c) {
  tally_calibrate_defaults(c->link_cost);
  if (!c->cfg.tuning_file[0]) return TALLY_SUCCESS;
  TALLY_CHECK(costs_from_tuning_file(c->cfg.tuning_file, c->link_cost));
  struct provenance prov = {.source = FROM_FILE};
  log_costs(c, c->cfg.tuning_file, &prov);
  return TALLY_SUCCESS;
}

/* The decision, and the measurement when there is one, under calibration's sequence numbers. */
static tally_result_t agree(struct tally_comm *c, struct record *rec, struct provenance *prov) {
  c->seq = CALIBRATION_SEQ;
  TALLY_CHECK(share(c, rec));
  if (rec->kind != RECORD_PLAN) return TALLY_SUCCESS;
  uint64_t start = tally_now_ns();
  TALLY_CHECK(measure(c, rec, prov));
  c->seq = CALIBRATION_SEQ + 1 + TALLY_NUM_LINK_CLASSES;
  TALLY_CHECK(share(c, rec));
  prov->ms = (double)(tally_now_ns() - start) / 1e6;
  return TALLY_SUCCESS;
}

tally_result_t tally_calibrate(struct tally_comm *c) {
  if (c->nranks == 1) return calibrate_alone(c);
  struct record rec;
  struct provenance prov;
  memset(&rec, 0, sizeof rec);
  memset(&prov, 0, sizeof prov);
  if (c->rank == 0) decide(c, &prov, &rec);
  uint32_t seq = c->seq;
  tally_result_t r = agree(c, &rec, &prov);
  c->seq = seq;
  if (r != TALLY_SUCCESS) return TALLY_ERROR(r, "measuring the links for the tuner at init: %s", tally_error_message());
  if (rec.kind == RECORD_FAILED)
    return TALLY_ERROR(rec.code, "%s%s", rec.message, c->rank == 0 ? "" : " (as rank 0 reports: it decides for all)");
  memcpy(c->link_cost, rec.costs, sizeof c->link_cost);
  if (c->rank != 0) return TALLY_SUCCESS;
  log_costs(c, c->cfg.tuning_file, &prov);
  if (prov.source == MEASURED && prov.cache[0]) write_cache(c, &prov, &rec);
  return TALLY_SUCCESS;
}
