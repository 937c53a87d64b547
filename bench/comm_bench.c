/* comm-bench: what communicators made from communicators cost (issue 17's figures), on 8 local ranks.
 *   split   time per tally_comm_split of the 8 ranks into 2 x 4 and into 8 x 1, and per
 *           tally_comm_dup, against creating a communicator from a unique id
 *           (tally_get_unique_id on rank 0, the id broadcast on the parent, tally_comm_init_rank):
 *           each the slowest rank's time, median of RUNS calls (default 20) after one untimed.
 *   loop    RUNS (default 1000) splits into 2 x 4, each with a 1-element allreduce on the child,
 *           then destroyed: open file descriptors (/proc/self/fd) and VmRSS before the loop, after
 *           its first tenth and at its end, and malloc's bytes in use (mallinfo2: a leak grows it,
 *           freed memory malloc keeps does not), the largest over the ranks; the time per iteration.
 *   shrink  RUNS jobs (default 5) of 8 ranks streaming 1 MiB float allreduces; one rank (a
 *           different one each run) records the time and kills itself with SIGKILL; the
 *           survivors, on the failed allreduce, call tally_comm_failed_ranks and tally_comm_shrink
 *           (again while it says TALLY_ERR_TIMEOUT, as the README's pattern) and run a 1 MiB
 *           allreduce on the 7-rank communicator, checked. Time from the kill to the last
 *           survivor's successful allreduce, and to the last survivor's failed one; median.
 *   grow    time per tally_comm_grow of 7 ranks by 1 and of 4 by 4 (the newcomers, the other ranks
 *           of the 8, call tally_comm_join with the id rank 0 got from tally_comm_grow_id, passed
 *           through shared memory as a launcher would pass it): the slowest rank's time from a
 *           common start to its grown communicator, median of RUNS grows (default 20).
 * CLOCK_MONOTONIC is shared by the machine's processes, so times of different ranks compare.
 * usage: comm-bench [split|loop|shrink|grow|all] [RUNS]   (default: all with the default RUNS) */
#define _GNU_SOURCE
#include <dirent.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

enum { NRANKS = 8, COUNT = 256 * 1024 /* 1 MiB of floats */, MAX_RUNS = 100000, MAX_SHRINK_RUNS = 100 };

/* What the ranks write for the parent to print (shared memory). */
struct shared {
  int runs;
  double split4_us[MAX_SHRINK_RUNS * 10], split1_us[MAX_SHRINK_RUNS * 10], dup_us[MAX_SHRINK_RUNS * 10],
      init_us[MAX_SHRINK_RUNS * 10];
  long long fds_before, fds_warm, fds_after, rss_before_kb, rss_warm_kb, rss_after_kb; /* warm: after runs / 10 */
  long long heap_before_kb, heap_warm_kb, heap_after_kb;    /* malloc's bytes in use (mallinfo2) */
  long long maps_before, maps_warm, maps_after;             /* lines of /proc/self/maps */
  long long rss_trimmed_kb;                                 /* VmRSS at the end after malloc_trim(0) */
  long long shmem_before_kb, shmem_warm_kb, shmem_after_kb; /* RssShmem: shared memory of it */
  double loop_s;
  double killed, failed[NRANKS], recovered[NRANKS];
  int victim;
  double grow7_us[MAX_SHRINK_RUNS * 10], grow4_us[MAX_SHRINK_RUNS * 10];
  tally_unique_id_t grow_id; /* rank 0's tally_comm_grow_id, for the newcomers */
};
static struct shared *sh;

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, by_value);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static long long count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  long long n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n - 1; /* the directory's own descriptor */
}

/* The bytes malloc has handed out and not had back, in kB: what a leak grows, where RSS also grows
 * with freed memory malloc keeps. */
static long long heap_kb(void) { return (long long)(mallinfo2().uordblks + mallinfo2().hblkhd) / 1024; }

static long long count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return -1;
  long long n = 0;
  for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
  fclose(f);
  return n;
}

/* A "Name:  N kB" line of /proc/self/status (VmRSS, RssShmem); -1 where there is none. */
static long long status_kb(const char *name) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  char line[256];
  long long kb = -1;
  size_t len = strlen(name);
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, name, len) == 0 && line[len] == ':' && sscanf(line + len + 1, "%lld", &kb) == 1) break;
  fclose(f);
  return kb;
}

static long long rss_kb(void) { return status_kb("VmRSS"); }

/* The slowest rank's value of `mine` (collective over comm); -1 on failure. */
static double slowest(tally_comm_t comm, double mine) {
  double all = -1;
  return tally_allreduce(&mine, &all, 1, TALLY_FLOAT64, TALLY_MAX, comm, NULL) == TALLY_SUCCESS ? all : -1;
}

/* How the timed calls make a communicator from `comm`. */
enum maker { SPLIT_2X4, SPLIT_8X1, DUP, FROM_ID };

static tally_result_t make(enum maker m, tally_comm_t comm, int rank, int n, tally_comm_t *out) {
  switch (m) {
    case SPLIT_2X4: return tally_comm_split(comm, rank / 4, rank, out);
    case SPLIT_8X1: return tally_comm_split(comm, rank, 0, out);
    case DUP: return tally_comm_dup(comm, out);
    case FROM_ID: {
      tally_unique_id_t id;
      memset(&id, 0, sizeof id);
      if (rank == 0) {
        tally_result_t r = tally_get_unique_id(&id);
        if (r != TALLY_SUCCESS) return r;
      }
      tally_result_t r = tally_broadcast(&id, &id, sizeof id, TALLY_UINT8, 0, comm, NULL);
      return r != TALLY_SUCCESS ? r : tally_comm_init_rank(out, n, id, rank);
    }
  }
  return TALLY_ERR_INTERNAL;
}

/* One untimed call, then sh->runs timed ones; times[i] the slowest rank's, in us. */
static int time_maker(enum maker m, tally_comm_t comm, int rank, int n, double *times) {
  for (int i = -1; i < sh->runs; i++) {
    tally_comm_t child = NULL;
    if (tally_barrier(comm, NULL) != TALLY_SUCCESS)
      return harness_fail(rank, "barrier: %s", tally_comm_last_error(comm));
    double t0 = harness_now_s();
    tally_result_t r = make(m, comm, rank, n, &child);
    double us = (harness_now_s() - t0) * 1e6;
    if (r != TALLY_SUCCESS)
      return harness_fail(rank, "making communicator %d: %s: %s", m, tally_result_string(r),
                          tally_comm_last_error(m == FROM_ID ? NULL : comm));
    double worst = slowest(comm, us);
    if (worst < 0) return harness_fail(rank, "allreduce: %s", tally_comm_last_error(comm));
    if (i >= 0 && rank == 0) times[i] = worst;
    if (tally_barrier(child, NULL) != TALLY_SUCCESS || tally_comm_destroy(child) != TALLY_SUCCESS)
      return harness_fail(rank, "closing the child: %s", tally_comm_last_error(child));
  }
  return 0;
}

static int split_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  /* interleaved would be fairer on a noisy machine, but each kind's first call differs; one kind at a time */
  if (time_maker(FROM_ID, comm, rank, n, sh->init_us)) return 1;
  if (time_maker(SPLIT_2X4, comm, rank, n, sh->split4_us)) return 1;
  if (time_maker(SPLIT_8X1, comm, rank, n, sh->split1_us)) return 1;
  if (time_maker(DUP, comm, rank, n, sh->dup_us)) return 1;
  return 0;
}

static int loop_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  (void)n;
  long long fds0 = count_fds(), rss0 = rss_kb(), heap0 = heap_kb(), maps0 = count_maps(), shm0 = status_kb("RssShmem");
  if (tally_barrier(comm, NULL) != TALLY_SUCCESS) return harness_fail(rank, "barrier");
  double t0 = harness_now_s();
  long long fds_warm = fds0, rss_warm = rss0, heap_warm = heap0, maps_warm = maps0, shm_warm = shm0;
  for (int i = 0; i < sh->runs; i++) {
    if (i == sh->runs / 10) {
      fds_warm = count_fds();
      rss_warm = rss_kb();
      heap_warm = heap_kb();
      maps_warm = count_maps();
      shm_warm = status_kb("RssShmem");
    }
    tally_comm_t child;
    tally_result_t r = tally_comm_split(comm, rank / 4, rank, &child);
    if (r != TALLY_SUCCESS) return harness_fail(rank, "split %d: %s", i, tally_comm_last_error(comm));
    float x = 1, sum = 0;
    r = tally_allreduce(&x, &sum, 1, TALLY_FLOAT32, TALLY_SUM, child, NULL);
    if (r != TALLY_SUCCESS || sum != 4)
      return harness_fail(rank, "allreduce on child %d: %s (%g)", i, tally_comm_last_error(child), sum);
    if (tally_comm_destroy(child) != TALLY_SUCCESS) return harness_fail(rank, "destroy %d", i);
  }
  if (tally_barrier(comm, NULL) != TALLY_SUCCESS) return harness_fail(rank, "barrier");
  double took = harness_now_s() - t0;
  long long fds1 = count_fds(), rss1 = rss_kb(), heap1 = heap_kb(), maps1 = count_maps();
  malloc_trim(0);
  long long trimmed = rss_kb(), shm1 = status_kb("RssShmem");

  int64_t mine[17] = {fds0,  fds_warm,  fds1,  rss0,  rss_warm,  rss1,  (int64_t)(took * 1e6),
                      heap0, heap_warm, heap1, maps0, maps_warm, maps1, trimmed,
                      shm0,  shm_warm,  shm1},
          all[17];
  if (tally_allreduce(mine, all, 17, TALLY_INT64, TALLY_MAX, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "allreduce");
  if (rank == 0) {
    sh->fds_before = all[0];
    sh->fds_warm = all[1];
    sh->fds_after = all[2];
    sh->rss_before_kb = all[3];
    sh->rss_warm_kb = all[4];
    sh->rss_after_kb = all[5];
    sh->loop_s = (double)all[6] * 1e-6;
    sh->heap_before_kb = all[7];
    sh->heap_warm_kb = all[8];
    sh->heap_after_kb = all[9];
    sh->maps_before = all[10];
    sh->maps_warm = all[11];
    sh->maps_after = all[12];
    sh->rss_trimmed_kb = all[13];
    sh->shmem_before_kb = all[14];
    sh->shmem_warm_kb = all[15];
    sh->shmem_after_kb = all[16];
  }
  return 0;
}

static int shrink_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  (void)n;
  static float buf[COUNT];
  for (int i = 0;; i++) {
    if (rank == sh->victim && i == 7) {
      sh->killed = harness_now_s();
      raise(SIGKILL);
    }
    if (tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS) break;
  }
  sh->failed[rank] = harness_now_s();
  int failed[NRANKS], nfailed = 0;
  tally_comm_t smaller = NULL;
  tally_result_t r;
  do {
    tally_comm_failed_ranks(comm, failed, NRANKS, &nfailed);
    r = tally_comm_shrink(comm, failed, nfailed, &smaller);
  } while (r == TALLY_ERR_TIMEOUT);
  if (r != TALLY_SUCCESS)
    return harness_fail(rank, "shrink: %s: %s", tally_result_string(r), tally_comm_last_error(comm));
  for (int j = 0; j < COUNT; j++) buf[j] = 1;
  r = tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, smaller, NULL);
  sh->recovered[rank] = harness_now_s();
  if (r != TALLY_SUCCESS) return harness_fail(rank, "allreduce after shrink: %s", tally_comm_last_error(smaller));
  if (buf[0] != NRANKS - 1 || buf[COUNT - 1] != NRANKS - 1)
    return harness_fail(rank, "allreduce after shrink: %g, expected %d", buf[0], NRANKS - 1);
  if (nfailed != 1 || failed[0] != sh->victim)
    return harness_fail(rank, "tally_comm_failed_ranks: %d ranks, the first %d; expected rank %d", nfailed,
                        nfailed ? failed[0] : -1, sh->victim);
  tally_barrier(smaller, NULL);
  tally_comm_destroy(smaller);
  return 0; /* the harness destroys `comm` */
}

/* One grown communicator from `old` (the first `existing` ranks; the others join): times the slowest
 * rank's grow or join into *us, checks it with an allreduce, destroys it. */
static int grow_once(tally_comm_t world, tally_comm_t old, int rank, int n, int existing, double *us) {
  int nnew = n - existing;
  tally_result_t r = rank == 0 ? tally_comm_grow_id(old, nnew, &sh->grow_id) : TALLY_SUCCESS;
  if (r != TALLY_SUCCESS) return harness_fail(rank, "grow_id: %s", tally_comm_last_error(old));
  if (tally_barrier(world, NULL) != TALLY_SUCCESS) return harness_fail(rank, "barrier");
  tally_comm_t grown = NULL;
  double t0 = harness_now_s();
  r = rank < existing ? tally_comm_grow(old, nnew, rank == 0 ? &sh->grow_id : NULL, &grown)
                      : tally_comm_join(&sh->grow_id, rank - existing, &grown);
  double mine = (harness_now_s() - t0) * 1e6;
  if (r != TALLY_SUCCESS)
    return harness_fail(rank, "%s: %s", rank < existing ? "grow" : "join",
                        tally_comm_last_error(rank < existing ? old : NULL));
  int failed = 0;
  *us = slowest(world, mine);
  if (*us < 0) failed = harness_fail(rank, "allreduce: %s", tally_comm_last_error(world));
  float one = 1, all = 0;
  if (!failed && (tally_allreduce(&one, &all, 1, TALLY_FLOAT32, TALLY_SUM, grown, NULL) != TALLY_SUCCESS || all != n))
    failed = harness_fail(rank, "allreduce on the grown communicator: %s (%g)", tally_comm_last_error(grown), all);
  if (tally_comm_destroy(grown) != TALLY_SUCCESS && !failed) failed = harness_fail(rank, "destroy");
  return failed;
}

/* sh->runs grows of the first `existing` ranks of `world` by the others; times[i] the slowest rank's,
 * in us. Every rank of world takes part: the existing ones through their own communicator, the
 * newcomers through tally_comm_join. */
static int time_grow(tally_comm_t world, int rank, int n, int existing, double *times) {
  tally_comm_t old = NULL;
  if (tally_comm_split(world, rank < existing ? 0 : TALLY_SPLIT_NOCOLOR, rank, &old) != TALLY_SUCCESS)
    return harness_fail(rank, "split: %s", tally_comm_last_error(world));
  int failed = 0;
  for (int i = -1; i < sh->runs && !failed; i++) {
    double us = 0;
    failed = grow_once(world, old, rank, n, existing, &us);
    if (!failed && i >= 0 && rank == 0) times[i] = us;
  }
  if (old) tally_comm_destroy(old);
  return failed;
}

static int grow_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return time_grow(comm, rank, n, n - 1, sh->grow7_us) || time_grow(comm, rank, n, n / 2, sh->grow4_us);
}

static void print_median(const char *what, double *us, int n) {
  double copy[MAX_SHRINK_RUNS * 10];
  memcpy(copy, us, (size_t)n * sizeof *us);
  double med = median(copy, n);
  printf("%-44s %9.3f ms  (min %.3f, max %.3f)\n", what, med / 1e3, copy[0] / 1e3, copy[n - 1] / 1e3);
}

static int run_split(int runs) {
  sh->runs = runs;
  if (harness_run(NRANKS, 600, split_body, NULL) != 0) return 1;
  printf("# %d ranks on one host; each time the slowest rank's, median of %d calls after one untimed\n", NRANKS, runs);
  print_median("communicator from a unique id (init_rank)", sh->init_us, runs);
  print_median("tally_comm_split 8 -> 2 x 4", sh->split4_us, runs);
  print_median("tally_comm_split 8 -> 8 x 1", sh->split1_us, runs);
  print_median("tally_comm_dup", sh->dup_us, runs);
  return 0;
}

static int run_grow(int runs) {
  sh->runs = runs;
  if (harness_run(NRANKS, 600, grow_body, NULL) != 0) return 1;
  printf("# %d ranks on one host; each time the slowest rank's, median of %d grows after one untimed\n", NRANKS, runs);
  print_median("tally_comm_grow 7 + 1 (tally_comm_join)", sh->grow7_us, runs);
  print_median("tally_comm_grow 4 + 4 (tally_comm_join)", sh->grow4_us, runs);
  return 0;
}

static int run_loop(int runs) {
  sh->runs = runs;
  if (harness_run(NRANKS, 3600, loop_body, NULL) != 0) return 1;
  printf("# %d ranks: %d x (split 8 -> 2 x 4, 1-element allreduce on the child, destroy)\n", NRANKS, runs);
  printf("# (each the largest over the ranks; 'after %d' is after the first tenth of the loop)\n", runs / 10);
  printf("%-44s %lld, after %d: %lld, at the end: %lld\n", "open file descriptors before the loop", sh->fds_before,
         runs / 10, sh->fds_warm, sh->fds_after);
  printf("%-44s %lld kB, after %d: %lld kB, at the end: %lld kB\n", "VmRSS before the loop", sh->rss_before_kb,
         runs / 10, sh->rss_warm_kb, sh->rss_after_kb);
  printf("%-44s %lld kB\n", "VmRSS at the end after malloc_trim(0)", sh->rss_trimmed_kb);
  printf("%-44s %lld kB, after %d: %lld kB, at the end: %lld kB\n", "  of it shared memory (RssShmem) before",
         sh->shmem_before_kb, runs / 10, sh->shmem_warm_kb, sh->shmem_after_kb);
  printf("%-44s %lld kB, after %d: %lld kB, at the end: %lld kB\n", "malloc in use before the loop", sh->heap_before_kb,
         runs / 10, sh->heap_warm_kb, sh->heap_after_kb);
  printf("%-44s %lld, after %d: %lld, at the end: %lld\n", "memory mappings before the loop", sh->maps_before,
         runs / 10, sh->maps_warm, sh->maps_after);
  printf("%-44s %.3f ms (%.1f s in all)\n", "time per iteration", sh->loop_s * 1e3 / runs, sh->loop_s);
  return 0;
}

static int run_shrink(int runs) {
  if (runs > MAX_SHRINK_RUNS) runs = MAX_SHRINK_RUNS;
  double recover_ms[MAX_SHRINK_RUNS], detect_ms[MAX_SHRINK_RUNS];
  printf(
      "# %d ranks, 1 MiB float allreduces; one rank killed with SIGKILL per run; survivors: failed_ranks,\n"
      "# shrink, a 1 MiB allreduce on the 7 ranks (checked)\n",
      NRANKS);
  for (int run = 0; run < runs; run++) {
    memset(sh->failed, 0, sizeof sh->failed);
    memset(sh->recovered, 0, sizeof sh->recovered);
    sh->victim = (run * 3 + 1) % NRANKS;
    if (harness_run_killing(NRANKS, 120, shrink_body, NULL, sh->victim) != 0) {
      fprintf(stderr, "shrink run %d failed (see above)\n", run);
      return 1;
    }
    double failed = 0, recovered = 0;
    for (int r = 0; r < NRANKS; r++) {
      if (r == sh->victim) continue;
      if (sh->failed[r] > failed) failed = sh->failed[r];
      if (sh->recovered[r] > recovered) recovered = sh->recovered[r];
    }
    detect_ms[run] = (failed - sh->killed) * 1e3;
    recover_ms[run] = (recovered - sh->killed) * 1e3;
    printf(
        "run %d: killed rank %d; last failed allreduce %.2f ms later, last allreduce on the shrunk "
        "communicator done %.2f ms later\n",
        run, sh->victim, detect_ms[run], recover_ms[run]);
  }
  printf("%-44s %9.3f ms\n", "kill -> last survivor's error (median)", median(detect_ms, runs));
  printf("%-44s %9.3f ms\n", "kill -> first allreduce after shrink (median)", median(recover_ms, runs));
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  int runs = argc > 2 ? atoi(argv[2]) : 0;
  int all = !strcmp(mode, "all");
  if ((!all && strcmp(mode, "split") && strcmp(mode, "loop") && strcmp(mode, "shrink") && strcmp(mode, "grow")) ||
      argc > 3 ||
      (argc > 2 && (runs < 1 || runs > MAX_RUNS)) || (runs > MAX_SHRINK_RUNS * 10 && strcmp(mode, "loop"))) {
    fprintf(stderr, "usage: comm-bench [split|loop|shrink|grow|all] [RUNS]   (RUNS: 1 to %d; loop up to %d)\n",
            MAX_SHRINK_RUNS * 10, MAX_RUNS);
    return 2;
  }
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) return 1;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if ((all || !strcmp(mode, "split")) && run_split(runs ? runs : 20)) return 1;
  if ((all || !strcmp(mode, "loop")) && run_loop(runs && !all ? runs : 1000)) return 1;
  if ((all || !strcmp(mode, "shrink")) && run_shrink(runs && !all ? runs : 5)) return 1;
  if ((all || !strcmp(mode, "grow")) && run_grow(runs && !all ? runs : 20)) return 1;
  return 0;
}
