/* Link calibration at init (src/tuning/calibrate.h): measured costs identical on every rank and cached per
 * host, the cache read back by later jobs, TALLY_TUNING_FILE over everything, and the failures: a
 * missing or malformed TALLY_TUNING_FILE fails init on every rank, a broken or unwritable cache
 * does not. Each test gets a fresh XDG_CACHE_HOME. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/error.h"
#include "harness.h"
#include "tuning/calibrate.h"
#include "tuning/tuning_file.h"

#define NCOSTS (3 * TALLY_NUM_LINK_CLASSES)

static char cache_home[64]; /* XDG_CACHE_HOME of this test */

static void fresh_cache_home(void) {
  unsetenv("TALLY_TUNING_FILE");
  unsetenv("TALLY_TUNING_CACHE");
  unsetenv("TALLY_HOSTID");
  unsetenv("TALLY_ALGO");
  snprintf(cache_home, sizeof cache_home, "/tmp/tally-calibrate-XXXXXX");
  cr_assert_not_null(mkdtemp(cache_home));
  setenv("XDG_CACHE_HOME", cache_home, 1);
}

static void remove_cache_home(void) {
  char command[128];
  snprintf(command, sizeof command, "rm -rf '%s'", cache_home);
  cr_expect_eq(system(command), 0);
}

TestSuite(calibrate, .init = fresh_cache_home, .fini = remove_cache_home);

/* --- helpers ---------------------------------------------------------------------------------- */

static void costs_as_array(const struct tally_comm *comm, double out[NCOSTS]) {
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) {
    out[3 * k] = comm->link_cost[k].alpha_us;
    out[3 * k + 1] = comm->link_cost[k].beta_us_per_byte;
    out[3 * k + 2] = comm->link_cost[k].gamma_us_per_byte;
  }
}

/* Every rank holds the same bits as this one (gathered with an allgather, which also shows that the
 * first collective after calibration runs). */
static int same_on_every_rank(tally_comm_t comm, int rank, int nranks) {
  double mine[NCOSTS], *all = malloc(sizeof mine * (size_t)nranks);
  costs_as_array(comm, mine);
  int bad = tally_allgather(mine, all, NCOSTS, TALLY_FLOAT64, comm, NULL) != TALLY_SUCCESS;
  if (bad) bad = harness_fail(rank, "allgather: %s", tally_comm_last_error(comm));
  for (int r = 0; r < nranks && !bad; r++)
    if (memcmp(all + r * NCOSTS, mine, sizeof mine))
      bad = harness_fail(rank, "rank %d holds other link costs than this rank", r);
  free(all);
  return bad;
}

/* What a body checks: every rank alike, and either plausible measured values or exact ones. */
struct expectation {
  int exact;
  struct tally_cost_params want[TALLY_NUM_LINK_CLASSES];
  double not_shm_alpha; /* measured: a value shm alpha must not have (a marker that must not be read) */
};

static int costs_as_expected(tally_comm_t comm, int rank, int nranks, void *arg) {
  const struct expectation *e = arg;
  /* calibration's messages carry sequence numbers of their own; collectives still start at 0 */
  int bad = comm->seq == 0 ? 0 : harness_fail(rank, "the first collective would be #%u, not #0", comm->seq);
  bad += same_on_every_rank(comm, rank, nranks);
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) {
    const struct tally_cost_params *got = &comm->link_cost[k], *want = &e->want[k];
    if (e->exact && (got->alpha_us != want->alpha_us || got->beta_us_per_byte != want->beta_us_per_byte ||
                     got->gamma_us_per_byte != want->gamma_us_per_byte))
      bad += harness_fail(rank, "class %d: alpha %g beta %g gamma %g, expected %g %g %g", k, got->alpha_us,
                          got->beta_us_per_byte, got->gamma_us_per_byte, want->alpha_us, want->beta_us_per_byte,
                          want->gamma_us_per_byte);
    if (!e->exact && !(isfinite(got->alpha_us) && got->alpha_us >= 0 && isfinite(got->beta_us_per_byte) &&
                       got->beta_us_per_byte > 0 && isfinite(got->gamma_us_per_byte) && got->gamma_us_per_byte > 0))
      bad += harness_fail(rank, "class %d: implausible alpha %g beta %g gamma %g", k, got->alpha_us,
                          got->beta_us_per_byte, got->gamma_us_per_byte);
  }
  if (e->not_shm_alpha && comm->link_cost[TALLY_LINK_SHM].alpha_us == e->not_shm_alpha)
    bad += harness_fail(rank, "shm alpha is %g, the marker that should not have been read", e->not_shm_alpha);
  return bad;
}

static struct expectation measured(void) { return (struct expectation){0}; }

/* The path of the one cache file in the cache directory ("" when there is none; two fail). */
static void cache_file(char *path, size_t len) {
  char dir[128];
  snprintf(dir, sizeof dir, "%s/tally", cache_home);
  path[0] = '\0';
  DIR *d = opendir(dir);
  if (!d) return;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') {
      snprintf(path, len, "%s/%s", dir, e->d_name);
      n++;
    }
  closedir(d);
  cr_assert_leq(n, 1, "%d files in %s, expected one cache file", n, dir);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "cannot open %s", path);
  static char text[8192];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  return text;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "cannot create %s", path);
  fputs(text, f);
  cr_assert_eq(fclose(f), 0);
}

/* The cache file is a tuning file with the measured classes and a comment saying how. */
static void expect_valid_cache(const char *path, const char *name_part) {
  const char *text = slurp(path);
  struct tally_tuning t;
  cr_assert_eq(tally_tuning_parse(text, path, &t), TALLY_SUCCESS, "%s: %s", path, tally_error_message());
  cr_expect(strstr(text, "# Tally's link costs for host"), "%s has no header:\n%s", path, text);
  cr_expect(strstr(path, name_part), "cache file %s lacks '%s'", path, name_part);
  cr_expect(t.given[TALLY_LINK_SHM] & TALLY_TUNING_GAMMA, "%s", text);
}

/* Values a file of `text` gives, over the defaults. */
static struct expectation exactly(const char *text) {
  struct expectation e = {.exact = 1};
  struct tally_tuning t;
  cr_assert_eq(tally_tuning_parse(text, "test", &t), TALLY_SUCCESS, "%s", tally_error_message());
  tally_calibrate_defaults(e.want);
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) tally_tuning_apply(&t, (enum tally_link_class)k, &e.want[k]);
  return e;
}

#define MARKER "shm.alpha_us = 123.25\nshm.bandwidth_GBps = 7\ngamma_us_per_byte = 0.5\n"

/* Runs `nranks` ranks expecting `e`, on one host (per_host 0) or on hosts of `per_host` ranks, and
 * returns in `path` the cache file they wrote. */
static void measure_and_find_cache(int nranks, int per_host, struct expectation *e, char *path, size_t len) {
  if (per_host)
    cr_assert_eq(harness_run_on_hosts(nranks, per_host, 60, costs_as_expected, e), 0);
  else
    cr_assert_eq(harness_run(nranks, 60, costs_as_expected, e), 0);
  cache_file(path, len);
  cr_assert(path[0], "no cache file written under %s", cache_home);
}

/* --- measured, cached, read back -------------------------------------------------------------- */

/* Three ranks of one host: shm is timed around the world ring (all of the host's ranks, as the
 * collectives' hops run); the net class keeps its defaults and is not cached. */
Test(calibrate, first_init_measures_and_writes_the_cache) {
  struct expectation e = measured();
  char path[512];
  measure_and_find_cache(3, 0, &e, path, sizeof path);
  expect_valid_cache(path, "-shm-shm-net-none.tune");
  cr_expect(strstr(slurp(path), "shm: trips around all 3 ranks over shm"), "%s", slurp(path));
  cr_expect(strstr(path, "-3ranks-"), "the cache file is not keyed by the ranks on the host: %s", path);
  cr_expect(!strstr(slurp(path), "net.alpha_us"), "an unmeasured class was cached:\n%s", slurp(path));
}

/* Eight ranks of one host, as most tests here run. */
Test(calibrate, eight_ranks_of_one_host) {
  struct expectation e = measured();
  cr_assert_eq(harness_run(8, 60, costs_as_expected, &e), 0);
}

/* Each class is timed around a ring all of whose hops are of it: the hierarchical rings, or the
 * world ring on one host (shm) or with one rank per host (net). */
struct ring_case {
  int nranks, ranks_per_host;
  const char *file_part, *shm_how, *net_how;
};

Test(calibrate, rings_of_each_class) {
  static const struct ring_case cases[] = {
      {3, 3, "-shm-shm-net-none.tune", "shm: trips around all 3 ranks over shm", "net: built-in default: the job runs"},
      {6, 3, "-shm-shm-net-tcp.tune", "shm: trips around the 3 ranks of rank 0's host over shm",
       "net: trips around 2 hosts over tcp"},
      {6, 2, "-shm-shm-net-tcp.tune", "shm: trips around the 2 ranks of rank 0's host over shm",
       "net: trips around 3 hosts over tcp"},
      {3, 1, "-shm-none-net-tcp.tune", "shm: built-in default: no other rank on rank 0's host",
       "net: trips around all 3 ranks over tcp"},
  };
  setenv("TALLY_ALGO", "ring", 1);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct ring_case *k = &cases[i];
    struct expectation e = measured();
    cr_assert_eq(harness_run_on_hosts(k->nranks, k->ranks_per_host, 60, costs_as_expected, &e), 0, "case %zu", i);
    char path[512];
    cache_file(path, sizeof path);
    cr_assert(path[0], "case %zu: no cache file written under %s", i, cache_home);
    expect_valid_cache(path, k->file_part);
    const char *text = slurp(path);
    cr_expect(strstr(text, k->shm_how) && strstr(text, k->net_how), "case %zu: lacks '%s' or '%s':\n%s", i, k->shm_how,
              k->net_how, text);
    cr_assert_eq(unlink(path), 0);
  }
}

/* Hosts of different sizes (2, 2 and 1 ranks) have no hierarchical rings and a world ring that
 * mixes classes: shm is timed by a ping-pong with rank 0's halving-doubling partner on its host. */
Test(calibrate, uneven_hosts_ping_pong) {
  struct expectation e = measured();
  char path[512];
  measure_and_find_cache(5, 2, &e, path, sizeof path);
  cr_expect(strstr(slurp(path), "shm: ping-pong with rank 1 over shm"), "%s", slurp(path));
}

/* Two fake hosts of two ranks each: both classes measured, the net one over TCP. */
Test(calibrate, two_hosts_measure_both_classes) {
  struct expectation e = measured();
  char path[512];
  measure_and_find_cache(4, 2, &e, path, sizeof path);
  expect_valid_cache(path, "-shm-shm-net-tcp.tune");
  cr_expect(strstr(slurp(path), "net.alpha_us"), "%s", slurp(path));
}

/* A second init reads the cache: a marker put into it shows up on every rank. */
Test(calibrate, second_init_reads_the_cache) {
  struct expectation e = measured();
  char path[512];
  measure_and_find_cache(2, 0, &e, path, sizeof path);
  write_file(path, MARKER);
  e = exactly(MARKER);
  cr_assert_eq(harness_run(2, 60, costs_as_expected, &e), 0);
}

/* A cache file that is not a tuning file is measured again and rewritten. */
Test(calibrate, malformed_cache_is_measured_again) {
  struct expectation e = measured();
  char path[512];
  measure_and_find_cache(2, 0, &e, path, sizeof path);
  write_file(path, "shm.alpha_us = fast\n");
  cr_assert_eq(harness_run(2, 60, costs_as_expected, &e), 0);
  expect_valid_cache(path, ".tune");
}

/* TALLY_TUNING_CACHE=0: the cache is neither read (its marker is not used) nor written. */
Test(calibrate, cache_turned_off) {
  struct expectation e = measured();
  char path[512];
  measure_and_find_cache(2, 0, &e, path, sizeof path);
  write_file(path, MARKER);
  setenv("TALLY_TUNING_CACHE", "0", 1);
  e.not_shm_alpha = exactly(MARKER).want[TALLY_LINK_SHM].alpha_us;
  cr_assert_eq(harness_run(2, 60, costs_as_expected, &e), 0);
  cr_expect_str_eq(slurp(path), MARKER, "the cache was rewritten with TALLY_TUNING_CACHE=0");
}

/* A cache directory that cannot be made (XDG_CACHE_HOME is a file) does not stop init. */
Test(calibrate, unwritable_cache_dir_still_initialises) {
  char file[128];
  snprintf(file, sizeof file, "%s/not-a-directory", cache_home);
  write_file(file, "");
  setenv("XDG_CACHE_HOME", file, 1);
  struct expectation e = measured();
  cr_assert_eq(harness_run(2, 60, costs_as_expected, &e), 0);
}

/* Without XDG_CACHE_HOME (or with a relative one, which the XDG spec says to ignore), the cache
 * lives under ~/.cache/tally. */
Test(calibrate, cache_under_home_without_xdg) {
  setenv("HOME", cache_home, 1);
  setenv("XDG_CACHE_HOME", "relative/cache", 1);
  struct expectation e = measured();
  cr_assert_eq(harness_run(2, 60, costs_as_expected, &e), 0);
  char path[512];
  snprintf(path, sizeof path, "%s/.cache/tally/links-", cache_home);
  char command[600];
  snprintf(command, sizeof command, "ls %s*-shm-shm-net-none.tune >/dev/null", path);
  cr_expect_eq(system(command), 0, "no cache file %s*-shm-shm-net-none.tune", path);
}

/* --- TALLY_TUNING_FILE ------------------------------------------------------------------------ */

#define TUNING "# pinned\nshm.alpha_us = 1.5\nnet.alpha_us = 42\nbandwidth_GBps = 2\nnet.gamma_us_per_byte = 0.25\n"

/* The file's values, over the defaults, on every rank of two hosts; no cache is written. */
Test(calibrate, tuning_file_overrides) {
  char path[128];
  snprintf(path, sizeof path, "%s/pinned.tune", cache_home);
  write_file(path, TUNING);
  setenv("TALLY_TUNING_FILE", path, 1);
  struct expectation e = exactly(TUNING);
  cr_assert_eq(harness_run_on_hosts(4, 2, 60, costs_as_expected, &e), 0);
  char cache[512];
  cache_file(cache, sizeof cache);
  cr_expect_eq(cache[0], '\0', "a cache was written although TALLY_TUNING_FILE is set: %s", cache);
}

/* One rank: no measurement, but TALLY_TUNING_FILE still applies. */
Test(calibrate, one_rank_reads_the_tuning_file) {
  char path[128];
  snprintf(path, sizeof path, "%s/pinned.tune", cache_home);
  write_file(path, TUNING);
  setenv("TALLY_TUNING_FILE", path, 1);
  struct expectation e = exactly(TUNING);
  cr_assert_eq(harness_run(1, 60, costs_as_expected, &e), 0);
  unsetenv("TALLY_TUNING_FILE");
  e = exactly("");
  cr_assert_eq(harness_run(1, 60, costs_as_expected, &e), 0);
}

/* Every rank's init fails with INVALID_ARGUMENT and a message naming the variable and the path. */
struct refusal {
  const char *path, *words;
};

static int init_refused(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  const struct refusal *want = arg;
  tally_comm_t comm;
  tally_result_t r = tally_comm_init_rank(&comm, nranks, *id, rank);
  if (r == TALLY_SUCCESS) {
    tally_comm_destroy(comm);
    return harness_fail(rank, "init succeeded with TALLY_TUNING_FILE=%s", want->path);
  }
  const char *msg = tally_comm_last_error(NULL);
  if (harness_expect(rank, NULL, r, TALLY_ERR_INVALID_ARGUMENT, "TALLY_TUNING_FILE")) return 1;
  if (!strstr(msg, want->path) || !strstr(msg, want->words))
    return harness_fail(rank, "message lacks '%s' or '%s': %s", want->path, want->words, msg);
  return 0;
}

static void expect_refused_everywhere(int nranks, const char *path, const char *words) {
  setenv("TALLY_TUNING_FILE", path, 1);
  struct refusal want = {path, words};
  cr_assert_eq(harness_run_raw(nranks, 60, init_refused, &want), 0, "TALLY_TUNING_FILE=%s", path);
}

Test(calibrate, missing_tuning_file_fails_every_rank) {
  char path[128];
  snprintf(path, sizeof path, "%s/no-such.tune", cache_home);
  expect_refused_everywhere(3, path, "cannot be read");
  expect_refused_everywhere(1, path, "cannot be read");
  expect_refused_everywhere(2, cache_home, "cannot be read"); /* a directory */
}

Test(calibrate, malformed_tuning_file_fails_every_rank) {
  char path[128];
  snprintf(path, sizeof path, "%s/bad.tune", cache_home);
  write_file(path, "shm.alpha_us = 2\nlatency = 3\n");
  expect_refused_everywhere(3, path, "line 2");
  write_file(path, "net.bandwidth_GBps = -1\n");
  expect_refused_everywhere(2, path, "out of range");
}
