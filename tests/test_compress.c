/* Compressed collectives (TALLY_COMPRESS) on fake hosts: ranks on one host talk over shared memory,
 * across hosts over TCP. For ring, halving-doubling and hierarchical allreduce and reduce-scatter
 * and the double binary tree's allreduce, in place and not, odd counts, SUM and AVG, random,
 * cancelling and wide-ranging inputs: every element within the error bound of reduce.h against the
 * exact sum (computed in double from every rank's input, which each rank regenerates), and every
 * rank's result bit-identical. Allgather and broadcast (ring, rhd, hier, tree) give exactly the
 * 16-bit rounding of the input. NaN and infinity pass through; fp16 saturates. The counters show
 * half the bytes to ranks on other hosts and unchanged bytes within a host, for integers and for
 * calls below TALLY_COMPRESS_MIN_BYTES; the tuner prices the halved bytes; ranks that compress
 * differently get a mismatch. The worst measured error of each case is printed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "algorithms/dbtree.h"
#include "core/reduce.h"
#include "harness.h"
#include "tuning/cost_model.h"

enum { MAXR = 8, ODD_COUNT = 70001 };
enum input_kind { RANDOM, CANCELLING, WIDE_RANGE, NKINDS };
static const char *const kind_names[NKINDS] = {"random", "cancelling", "wide-range"};

struct compress_case {
  const char *algo; /* ring, rhd, hier, tree */
  int nranks, per_host;
  enum tally_wire_format format;
  int coll; /* 0 allreduce, 1 reduce-scatter */
  tally_op_t op;
  int in_place;
  enum input_kind kind;
  size_t count; /* 0: ODD_COUNT */
};

static uint64_t mix(uint64_t x) { /* splitmix64 */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* A uniform number in [-1, 1) from (a, b, c). */
static double uniform(uint64_t a, uint64_t b, uint64_t c) {
  return (double)(mix(a * 1000003u ^ mix(b * 7919u ^ mix(c))) >> 11) * 0x1p-52 - 1.0;
}

/* Rank r's element i. Magnitudes stay in fp16's normal range with room for sums of 8. */
static float input(enum input_kind kind, int r, size_t i) {
  double u = uniform((uint64_t)kind, (uint64_t)r, i);
  switch (kind) {
    case RANDOM: return (float)(u * ldexp(1, (int)(uniform(9, (uint64_t)r, i) * 6)));
    case CANCELLING: { /* +-B on alternate ranks, plus a little: the exact sum is far below sum |x| */
      double big = 1000 * uniform(5, 0, i);
      return (float)((r % 2 ? -big : big) + 1e-3 * u);
    }
    default: return (float)(u * ldexp(1, (int)(uniform(7, (uint64_t)r, i) * 11))); /* 2^-11 .. 2^11 */
  }
}

/* reduce.h's bound for the case: e / (1 - e) with e = r u + a u32, plus fp16's subnormal step per rounding. */
static double bound(const struct compress_case *c, double *absolute) {
  int n = c->nranks, m = n / c->per_host, logp = 0;
  while ((2 << logp) <= n) logp++;
  double u = c->format == TALLY_WIRE_BF16 ? 0x1p-8 : c->format == TALLY_WIRE_FP16 ? 0x1p-11 : 0;
  int r, a = n - 1;
  if (!strcmp(c->algo, "rhd"))
    r = logp + 2, a = logp + 1;
  else if (!strcmp(c->algo, "hier"))
    r = m;
  else if (!strcmp(c->algo, "tree"))
    r = tally_dbtree_depth(n); /* a hop up each of its levels - 1 edges, then the root's rounding */
  else
    r = c->coll ? n - 1 : n;
  if (c->op == TALLY_AVG) a++;
  double e = r * u + a * 0x1p-24;
  *absolute = c->format == TALLY_WIRE_FP16 ? r * 0x1p-25 : 0;
  return e / (1 - e);
}

/* FNV-1a of `bytes` bytes. */
static uint64_t digest(const void *p, size_t bytes) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Whether every rank's `mine` is the same (exchanged uncompressed, as bytes). */
static int same_everywhere(tally_comm_t comm, int rank, int n, uint64_t mine) {
  uint64_t all[MAXR];
  if (tally_allgather(&mine, all, sizeof mine, TALLY_UINT8, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "allgather of digests: %s", tally_comm_last_error(comm));
  for (int r = 0; r < n; r++)
    if (all[r] != mine) return harness_fail(rank, "rank %d's result differs from this rank's", r);
  return 0;
}

static int reduce_body(tally_comm_t comm, int rank, int n, void *arg) {
  const struct compress_case *c = arg;
  size_t count = c->count ? c->count : ODD_COUNT, total = c->coll ? count * (size_t)n : count,
         mine = c->coll ? (size_t)rank * count : 0;
  float *send = malloc(total * sizeof *send), *recv = malloc(total * sizeof *recv);
  for (size_t i = 0; i < total; i++) send[i] = input(c->kind, rank, i);
  float *out = c->in_place ? send : recv;
  tally_result_t r = c->coll ? tally_reduce_scatter(send, out, count, TALLY_FLOAT32, c->op, comm, NULL)
                             : tally_allreduce(send, out, count, TALLY_FLOAT32, c->op, comm, NULL);
  int bad = r == TALLY_SUCCESS ? 0 : harness_fail(rank, "%s: %s", c->algo, tally_comm_last_error(comm));
  double absolute, rel = bound(c, &absolute), worst = 0;
  for (size_t i = 0; i < count && !bad; i++) {
    double exact = 0, magnitude = 0;
    for (int q = 0; q < n; q++) {
      double x = input(c->kind, q, mine + i);
      exact += x, magnitude += fabs(x);
    }
    if (c->op == TALLY_AVG) exact /= n, magnitude /= n;
    double err = fabs((double)out[i] - exact), allowed = rel * magnitude + absolute;
    if (magnitude > 0 && err / magnitude > worst) worst = err / magnitude;
    if (!(err <= allowed))
      bad = harness_fail(rank, "%s %s %s: element %zu is %.9g, exact %.9g: error %.3g > bound %.3g (sum |x| %.6g)",
                         c->algo, tally_wire_format_name(c->format), kind_names[c->kind], mine + i, (double)out[i],
                         exact, err, allowed, magnitude);
  }
  if (!bad && !c->coll) bad = same_everywhere(comm, rank, n, digest(out, count * sizeof *out));
  if (rank == 0 && !bad)
    fprintf(stderr, "%s %s on %d ranks (%d per host), %s %s inputs: worst error %.3g x sum|x|, bound %.3g\n", c->algo,
            c->coll ? "reduce_scatter" : "allreduce", n, c->per_host, tally_wire_format_name(c->format),
            kind_names[c->kind], worst, rel);
  free(send), free(recv);
  return bad;
}

static void set_compress(enum tally_wire_format format, const char *algo) {
  char spec[128];
  int tree = !strcmp(algo, "tree"); /* the tree runs allreduce and broadcast, not the others */
  snprintf(spec, sizeof spec, "allreduce:%s;reducescatter:%s;allgather:%s;broadcast:%s;ring", algo,
           tree ? "ring" : algo, tree ? "ring" : algo, tree ? "tree" : "ring");
  setenv("TALLY_ALGO", spec, 1);
  setenv("TALLY_COMPRESS", tally_wire_format_name((int)format), 1);
  setenv("TALLY_COMPRESS_MIN_BYTES", "0", 1);
}

static void unset_compress(void) {
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_COMPRESS");
  unsetenv("TALLY_COMPRESS_MIN_BYTES");
}

static void run_case(struct compress_case c) {
  set_compress(c.format, c.algo);
  int failed = harness_run_on_hosts(c.nranks, c.per_host, 120, reduce_body, &c);
  unset_compress();
  cr_assert_eq(failed, 0, "%s on %d ranks, %d per host, %s", c.algo, c.nranks, c.per_host,
               tally_wire_format_name(c.format));
}

TestSuite(compress, .init = unset_compress);

Test(compress, ring_allreduce_within_bound_and_identical) {
  run_case((struct compress_case){"ring", 4, 2, TALLY_WIRE_BF16, 0, TALLY_SUM, 0, RANDOM, 0});
  run_case((struct compress_case){"ring", 4, 2, TALLY_WIRE_FP16, 0, TALLY_SUM, 1, CANCELLING, 0});
  run_case((struct compress_case){"ring", 3, 1, TALLY_WIRE_BF16, 0, TALLY_AVG, 0, WIDE_RANGE, 0});
  run_case((struct compress_case){"ring", 5, 1, TALLY_WIRE_FP16, 0, TALLY_SUM, 0, CANCELLING, 0});
  /* 4 x 101 floats: the small form that gathers every input and reduces locally */
  run_case((struct compress_case){"ring", 4, 2, TALLY_WIRE_BF16, 0, TALLY_AVG, 0, RANDOM, 101});
  setenv("TALLY_RING_CHANNELS", "2", 1); /* half the vector on the reverse ring at the same time */
  run_case((struct compress_case){"ring", 4, 2, TALLY_WIRE_FP16, 0, TALLY_SUM, 1, WIDE_RANGE, 0});
  unsetenv("TALLY_RING_CHANNELS");
}

Test(compress, rhd_allreduce_within_bound_and_identical) {
  run_case((struct compress_case){"rhd", 4, 2, TALLY_WIRE_BF16, 0, TALLY_SUM, 1, CANCELLING, 0});
  run_case((struct compress_case){"rhd", 3, 1, TALLY_WIRE_FP16, 0, TALLY_AVG, 0, RANDOM, 0}); /* an extra rank folds */
  run_case((struct compress_case){"rhd", 6, 2, TALLY_WIRE_BF16, 0, TALLY_SUM, 0, WIDE_RANGE, 0});
}

Test(compress, hier_allreduce_within_bound_and_identical) {
  run_case((struct compress_case){"hier", 4, 2, TALLY_WIRE_BF16, 0, TALLY_SUM, 0, CANCELLING, 0});
  run_case((struct compress_case){"hier", 6, 3, TALLY_WIRE_FP16, 0, TALLY_AVG, 1, WIDE_RANGE, 0});
}

Test(compress, reduce_scatter_within_bound) {
  run_case((struct compress_case){"ring", 4, 2, TALLY_WIRE_FP16, 1, TALLY_SUM, 0, RANDOM, 0});
  run_case((struct compress_case){"rhd", 3, 1, TALLY_WIRE_BF16, 1, TALLY_SUM, 1, CANCELLING, 0});
  run_case((struct compress_case){"hier", 4, 2, TALLY_WIRE_BF16, 1, TALLY_AVG, 0, WIDE_RANGE, 0});
}

Test(compress, tree_allreduce_within_bound_and_identical) {
  run_case((struct compress_case){"tree", 4, 2, TALLY_WIRE_BF16, 0, TALLY_SUM, 0, CANCELLING, 0});
  run_case((struct compress_case){"tree", 6, 2, TALLY_WIRE_FP16, 0, TALLY_AVG, 1, RANDOM, 0});
  run_case((struct compress_case){"tree", 5, 1, TALLY_WIRE_BF16, 0, TALLY_SUM, 0, WIDE_RANGE, 0});
}

/* Allgather and broadcast: every rank gets exactly the 16-bit rounding of the data, its owner too. */
static int spread_body(tally_comm_t comm, int rank, int n, void *arg) {
  const struct compress_case *c = arg;
  size_t count = ODD_COUNT;
  float *send = malloc(count * sizeof *send), *all = malloc(count * (size_t)n * sizeof *all);
  float *want = malloc(count * sizeof *want);
  int bad = 0;
  for (size_t i = 0; i < count; i++) send[i] = input(WIDE_RANGE, rank, i);
  float *in = c->in_place ? all + (size_t)rank * count : send;
  if (c->in_place) memcpy(in, send, count * sizeof *send);
  if (tally_allgather(in, all, count, TALLY_FLOAT32, comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "allgather: %s", tally_comm_last_error(comm));
  for (int q = 0; q < n && !bad; q++) {
    for (size_t i = 0; i < count; i++) want[i] = input(WIDE_RANGE, q, i);
    tally_wire_round(want, count, c->format);
    if (memcmp(want, all + (size_t)q * count, count * sizeof *want))
      bad =
          harness_fail(rank, "allgather: rank %d's block is not its %s rounding", q, tally_wire_format_name(c->format));
  }
  int root = n - 1;
  for (size_t i = 0; i < count; i++) send[i] = rank == root ? input(RANDOM, root, i) : 0;
  if (!bad && tally_broadcast(send, all, count, TALLY_FLOAT32, root, comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "broadcast: %s", tally_comm_last_error(comm));
  for (size_t i = 0; i < count; i++) want[i] = input(RANDOM, root, i);
  tally_wire_round(want, count, c->format);
  if (!bad && memcmp(want, all, count * sizeof *want))
    bad = harness_fail(rank, "broadcast: not the %s rounding of the root's data", tally_wire_format_name(c->format));
  free(send), free(all), free(want);
  return bad;
}

Test(compress, allgather_and_broadcast_give_the_rounded_data_everywhere) {
  struct compress_case c = {"ring", 4, 2, TALLY_WIRE_FP16, 0, TALLY_SUM, 0, WIDE_RANGE, 0};
  set_compress(c.format, "ring");
  cr_assert_eq(harness_run_on_hosts(4, 2, 120, spread_body, &c), 0);
  c.in_place = 1, c.format = TALLY_WIRE_BF16;
  set_compress(c.format, "rhd");
  cr_assert_eq(harness_run_on_hosts(3, 1, 120, spread_body, &c), 0);
  set_compress(c.format, "hier");
  cr_assert_eq(harness_run_on_hosts(4, 2, 120, spread_body, &c), 0);
  set_compress(TALLY_WIRE_FP16, "tree"); /* the broadcast on the tree */
  c.format = TALLY_WIRE_FP16;
  cr_assert_eq(harness_run_on_hosts(6, 2, 120, spread_body, &c), 0);
  unset_compress();
}

/* NaN and infinity pass through; fp16 sums past 65504 saturate there instead of becoming infinity. */
static int special_values_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  enum { COUNT = 4099 };
  float *x = malloc(COUNT * sizeof *x);
  for (int i = 0; i < COUNT; i++) x[i] = 40000.0f; /* n x 40000 > 65504 */
  x[7] = rank == 1 ? NAN : 1.0f;
  x[8] = rank == 2 ? INFINITY : 1.0f;
  x[9] = -INFINITY;
  int bad = 0;
  if (tally_allreduce(x, x, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "allreduce: %s", tally_comm_last_error(comm));
  if (!bad && !isnan(x[7])) bad = harness_fail(rank, "a NaN input gave %g", (double)x[7]);
  if (!bad && x[8] != INFINITY) bad = harness_fail(rank, "infinity plus finite values gave %g", (double)x[8]);
  if (!bad && x[9] != -INFINITY) bad = harness_fail(rank, "n x -infinity gave %g", (double)x[9]);
  for (int i = 10; i < COUNT && !bad; i++)
    if (x[i] != 65504.0f) bad = harness_fail(rank, "%d x 40000 in fp16 gave %g, not 65504", n, (double)x[i]);
  free(x);
  return bad;
}

Test(compress, nan_infinity_and_fp16_saturation) {
  set_compress(TALLY_WIRE_FP16, "ring");
  cr_assert_eq(harness_run_on_hosts(4, 2, 120, special_values_body, NULL), 0);
  unset_compress();
}

/* The bytes this rank sent to each rank in one allreduce of FLOATS elements of `dt`. */
enum { FLOATS = 3 << 14 };
static int traffic(tally_comm_t comm, int rank, int n, tally_datatype_t dt, uint64_t *sent) {
  tally_stats_t s = {.size = sizeof s};
  uint64_t before[MAXR], after[MAXR];
  void *buf = calloc(FLOATS, 4);
  int bad = 0;
  if (tally_comm_stats(comm, &s, before, NULL, NULL) != TALLY_SUCCESS ||
      tally_allreduce(buf, buf, FLOATS, dt, TALLY_SUM, comm, NULL) != TALLY_SUCCESS ||
      tally_comm_stats(comm, &s, after, NULL, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "allreduce or stats: %s", tally_comm_last_error(comm));
  for (int r = 0; r < n; r++) sent[r] = after[r] - before[r];
  free(buf);
  return bad;
}

/* Ring allreduce: 2(n-1)/n x S to the next rank, half of it when that rank is on another host and
 * the call compresses (FLOAT32 at or above TALLY_COMPRESS_MIN_BYTES); integers as they are. */
static int traffic_body(tally_comm_t comm, int rank, int n, void *arg) {
  int per_host = *(int *)arg, next = (rank + 1) % n;
  int across = rank / per_host != next / per_host;
  uint64_t full = 2 * (uint64_t)(n - 1) * FLOATS * 4 / (uint64_t)n, sent[MAXR];
  struct {
    tally_datatype_t dt;
    uint64_t want;
    const char *what;
  } cases[] = {{TALLY_FLOAT32, across ? full / 2 : full, "float32"}, {TALLY_INT32, full, "int32"}};
  int bad = 0;
  for (int k = 0; k < 2 && !bad; k++) {
    bad = traffic(comm, rank, n, cases[k].dt, sent);
    if (!bad && sent[next] != cases[k].want)
      bad = harness_fail(rank, "%s allreduce: sent %llu bytes to rank %d (%s host), expected %llu", cases[k].what,
                         (unsigned long long)sent[next], next, across ? "another" : "the same",
                         (unsigned long long)cases[k].want);
  }
  return bad;
}

Test(compress, half_the_bytes_across_hosts_only) {
  set_compress(TALLY_WIRE_BF16, "ring");
  int per_host = 2;
  cr_assert_eq(harness_run_on_hosts(4, per_host, 120, traffic_body, &per_host), 0, "2 hosts of 2 ranks");
  per_host = 4; /* one host: shared memory only, nothing compresses */
  cr_assert_eq(harness_run_on_hosts(4, per_host, 120, traffic_body, &per_host), 0, "1 host of 4 ranks");
  unset_compress();
}

/* Below TALLY_COMPRESS_MIN_BYTES the call crosses hosts as it is. */
static int small_call_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  uint64_t sent[MAXR];
  int next = (rank + 1) % n;
  int bad = traffic(comm, rank, n, TALLY_FLOAT32, sent);
  uint64_t full = 2 * (uint64_t)(n - 1) * FLOATS * 4 / (uint64_t)n;
  if (!bad && sent[next] != full)
    bad = harness_fail(rank, "a call below TALLY_COMPRESS_MIN_BYTES sent %llu bytes, not %llu",
                       (unsigned long long)sent[next], (unsigned long long)full);
  return bad;
}

Test(compress, calls_below_the_minimum_stay_exact) {
  set_compress(TALLY_WIRE_FP16, "ring");
  setenv("TALLY_COMPRESS_MIN_BYTES", "1000000", 1); /* FLOATS x 4 = 196608 bytes */
  cr_assert_eq(harness_run_on_hosts(4, 1, 120, small_call_body, NULL), 0);
  unset_compress();
}

/* Ranks that compress differently (tally_config_t.compress here) fail, not compute wrong data; a rank
 * that received from the odd one out says why (which one does depends on how the failure spreads). */
static int mismatched_body(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  atomic_int *named = arg;
  char host[32];
  snprintf(host, sizeof host, "compress-host-%d", rank);
  setenv("TALLY_HOSTID", host, 1);
  tally_config_t config = TALLY_CONFIG_INITIALIZER;
  config.compress = rank == 0 ? TALLY_COMPRESS_BF16 : TALLY_COMPRESS_NONE;
  config.compress_min_bytes = 0;
  config.timeout_s = 30;
  tally_comm_t comm;
  if (tally_comm_init_rank_config(&comm, nranks, *id, rank, &config) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  float x[1024] = {0};
  tally_result_t r = tally_allreduce(x, x, 1024, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  int bad = 0;
  if (r == TALLY_SUCCESS) bad = harness_fail(rank, "mismatched compression succeeded");
  if (strstr(tally_comm_last_error(comm), "set TALLY_COMPRESS and TALLY_COMPRESS_MIN_BYTES the same on every rank"))
    atomic_fetch_add(named, 1);
  tally_comm_destroy(comm);
  return bad;
}

Test(compress, ranks_that_compress_differently_get_a_mismatch) {
  atomic_int *named = mmap(NULL, sizeof *named, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(named, MAP_FAILED);
  atomic_init(named, 0);
  setenv("TALLY_ALGO", "ring", 1);
  cr_assert_eq(harness_run_raw(3, 90, mismatched_body, named), 0);
  unsetenv("TALLY_ALGO");
  cr_assert_gt(atomic_load(named), 0, "no rank's error says to set TALLY_COMPRESS the same everywhere");
  munmap(named, sizeof *named);
}

/* An old caller's tally_config_t (struct_size and timeout_s only) still works. */
static int old_config_body(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  struct {
    size_t struct_size;
    double timeout_s;
  } old = {TALLY_CONFIG_V1_SIZE, 30};
  tally_comm_t comm;
  if (tally_comm_init_rank_config(&comm, nranks, *id, rank, (const tally_config_t *)(const void *)&old) !=
      TALLY_SUCCESS)
    return harness_fail(rank, "init with a version 1 config: %s", tally_comm_last_error(NULL));
  tally_comm_destroy(comm);
  return 0;
}

Test(compress, first_version_of_the_config_struct_accepted) {
  cr_assert_eq(harness_run_raw(2, 60, old_config_body, NULL), 0);
}

/* The tuner prices a compressed network byte at half plus one conversion pass: with the network at
 * 10 us and 1 GB/s and shared memory converting at gamma (TALLY_TUNING_FILE), the ring's allreduce of
 * 16 MiB floats on 2 hosts of 2 ranks is the model's ring with beta / 2 + gamma; integers keep the
 * full price, and the tree's compressed price is lower too. */
static int pricing_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  size_t count = 4 << 20, bytes = count * 4;
  double ring_float, ring_int, tree_float, tree_int;
  if (tally_comm_predict(comm, "allreduce", "ring", count, TALLY_FLOAT32, &ring_float) != TALLY_SUCCESS ||
      tally_comm_predict(comm, "allreduce", "ring", count, TALLY_INT32, &ring_int) != TALLY_SUCCESS ||
      tally_comm_predict(comm, "allreduce", "tree", count, TALLY_FLOAT32, &tree_float) != TALLY_SUCCESS ||
      tally_comm_predict(comm, "allreduce", "tree", count, TALLY_INT32, &tree_int) != TALLY_SUCCESS)
    return harness_fail(rank, "tally_comm_predict: %s", tally_comm_last_error(comm));
  struct tally_cost_params full = {10, 1e-3, 0}, compressed = {10, 1e-3 / 2 + 2e-4, 0};
  double want_full = tally_cost_ring_allreduce(&full, n, bytes),
         want = tally_cost_ring_allreduce(&compressed, n, bytes);
  if (fabs(ring_float - want) > 1e-6 * want || fabs(ring_int - want_full) > 1e-6 * want_full)
    return harness_fail(rank,
                        "ring allreduce of %zu bytes: predicted %.1f us (float), %.1f (int32); want %.1f and %.1f",
                        bytes, ring_float, ring_int, want, want_full);
  if (!(tree_float < tree_int))
    return harness_fail(rank, "the tree's compressed price %.1f is not below its exact one %.1f", tree_float, tree_int);
  return 0;
}

Test(compress, the_tuner_prices_half_the_network_bytes) {
  char path[] = "/tmp/tally-test-compress-XXXXXX";
  int fd = mkstemp(path);
  const char text[] =
      "net.alpha_us = 10\nnet.bandwidth_GBps = 1\nnet.gamma_us_per_byte = 0\nshm.alpha_us = 1\n"
      "shm.bandwidth_GBps = 10\nshm.gamma_us_per_byte = 2e-4\n";
  cr_assert(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
  close(fd);
  setenv("TALLY_TUNING_FILE", path, 1);
  set_compress(TALLY_WIRE_BF16, "auto");
  cr_assert_eq(harness_run_on_hosts(4, 2, 60, pricing_body, NULL), 0);
  unset_compress();
  unsetenv("TALLY_TUNING_FILE");
  unlink(path);
}

/* Out-of-range compression settings in tally_config_t are refused before anything starts. */
Test(compress, bad_config_values_refused) {
  tally_unique_id_t id;
  memset(&id, 0, sizeof id);
  tally_comm_t comm;
  tally_config_t config = TALLY_CONFIG_INITIALIZER;
  config.compress = (tally_compress_t)7;
  cr_assert_eq(tally_comm_init_rank_config(&comm, 2, id, 0, &config), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "compress is 7"), "%s", tally_comm_last_error(NULL));
  config = (tally_config_t)TALLY_CONFIG_INITIALIZER;
  config.compress_min_bytes = -2;
  cr_assert_eq(tally_comm_init_rank_config(&comm, 2, id, 0, &config), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "compress_min_bytes is -2"), "%s", tally_comm_last_error(NULL));
  config = (tally_config_t)TALLY_CONFIG_INITIALIZER;
  config.struct_size = TALLY_CONFIG_V1_SIZE + 4; /* neither version's size */
  cr_assert_eq(tally_comm_init_rank_config(&comm, 2, id, 0, &config), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "struct_size"), "%s", tally_comm_last_error(NULL));
}
