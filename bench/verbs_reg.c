/* verbs-reg-bench: what the registration cache's choices cost, by buffer size, on the first RDMA
 * device: registering and deregistering a buffer for every transfer (ibv_reg_mr + ibv_dereg_mr),
 * against checking that a cached registration still covers the same pages (reading the range's
 * page frames from /proc/self/pagemap, as transports/verbs/mr_cache.c does on every hit).
 *   verbs-reg-bench [RUNS]      (needs an RDMA device: tests/rdma-vm/run.sh ./verbs-reg-bench) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 11;
  if (runs < 1 || runs > 1000) runs = 11;
  int n = 0;
  struct ibv_device **devices = ibv_get_device_list(&n);
  if (!devices || n == 0) {
    fprintf(stderr, "verbs-reg-bench: no RDMA device\n");
    return 77;
  }
  struct ibv_context *ctx = ibv_open_device(devices[0]);
  struct ibv_pd *pd = ctx ? ibv_alloc_pd(ctx) : NULL;
  int pagemap = open("/proc/self/pagemap", O_RDONLY);
  if (!pd || pagemap < 0) {
    fprintf(stderr, "verbs-reg-bench: cannot open %s or /proc/self/pagemap\n", ibv_get_device_name(devices[0]));
    return 1;
  }
  printf("# %s, medians of %d runs\n# %10s %16s %16s %8s\n", ibv_get_device_name(devices[0]), runs, "bytes",
         "reg+dereg_us", "page_check_us", "ratio");
  double reg[1000], check[1000];
  for (size_t bytes = 4096; bytes <= ((size_t)64 << 20); bytes *= 4) {
    char *buf = aligned_alloc(4096, bytes);
    memset(buf, 1, bytes);
    uint64_t *frames = malloc(bytes / 4096 * sizeof *frames);
    for (int r = 0; r < runs; r++) {
      double t0 = now_us();
      struct ibv_mr *mr = ibv_reg_mr(pd, buf, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
      if (!mr) {
        perror("ibv_reg_mr");
        return 1;
      }
      ibv_dereg_mr(mr);
      double t1 = now_us();
      ssize_t got = pread(pagemap, frames, bytes / 4096 * sizeof *frames, (off_t)((uintptr_t)buf / 4096 * 8));
      if (got <= 0) return 1;
      double t2 = now_us();
      reg[r] = t1 - t0;
      check[r] = t2 - t1;
    }
    qsort(reg, (size_t)runs, sizeof reg[0], by_value);
    qsort(check, (size_t)runs, sizeof check[0], by_value);
    printf("  %10zu %16.1f %16.1f %8.1f\n", bytes, reg[runs / 2], check[runs / 2], reg[runs / 2] / check[runs / 2]);
    free(frames);
    free(buf);
  }
  ibv_dealloc_pd(pd);
  ibv_close_device(ctx);
  ibv_free_device_list(devices);
  return 0;
}
