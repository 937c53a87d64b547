/* Nothing outlives a communicator: 200 create/use/destroy cycles leave the number of open file
 * descriptors and the resident set size where they were after the first few. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include "harness.h"

static int open_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static long rss_kib(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Each rank makes its own communicators from ids that rank 0 makes and sends over a pipe. */
struct cycle_arg {
  int pipes[2][2]; /* rank 0 -> rank 1 */
};

static int many_comms(int rank, int nranks, const tally_unique_id_t *first, void *arg) {
  struct cycle_arg *a = arg;
  (void)first;
  int fds_after_warmup = 0;
  long rss_after_warmup = 0;
  for (int i = 0; i < 200; i++) {
    tally_unique_id_t id;
    if (rank == 0) {
      if (tally_get_unique_id(&id) != TALLY_SUCCESS) return harness_fail(rank, "get_unique_id #%d", i);
      if (write(a->pipes[0][1], &id, sizeof id) != sizeof id) return harness_fail(rank, "pipe");
    } else if (read(a->pipes[0][0], &id, sizeof id) != sizeof id) {
      return harness_fail(rank, "pipe");
    }
    tally_comm_t comm;
    if (tally_comm_init_rank(&comm, nranks, id, rank) != TALLY_SUCCESS)
      return harness_fail(rank, "init #%d: %s", i, tally_comm_last_error(NULL));
    float x[4096] = {0};
    tally_result_t r = tally_allreduce(x, x, 4096, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_barrier(comm, NULL);
    if (r != TALLY_SUCCESS) return harness_fail(rank, "collective #%d: %s", i, tally_comm_last_error(comm));
    if (tally_comm_destroy(comm) != TALLY_SUCCESS) return harness_fail(rank, "destroy #%d", i);
    if (i == 9) {
      usleep(100 * 1000); /* the root thread of the last id exits once its job has started */
      fds_after_warmup = open_fds();
      rss_after_warmup = rss_kib();
    }
  }
  usleep(100 * 1000);
  int fds = open_fds();
  long rss = rss_kib();
  if (fds != fds_after_warmup) return harness_fail(rank, "open fds went from %d to %d", fds_after_warmup, fds);
#ifdef __SANITIZE_ADDRESS__
  /* AddressSanitizer holds freed memory in quarantine, so RSS grows by design; LeakSanitizer
   * checks the heap instead (see harness.c). */
  rss = rss_after_warmup;
#endif
  if (rss > rss_after_warmup + 2048)
    return harness_fail(rank, "RSS grew from %ld KiB to %ld KiB over 190 communicators", rss_after_warmup, rss);
  return 0;
}

Test(resources, two_hundred_communicators) {
  struct cycle_arg a;
  cr_assert_eq(pipe(a.pipes[0]), 0);
  cr_assert_eq(harness_run_raw(2, 240, many_comms, &a), 0);
}
