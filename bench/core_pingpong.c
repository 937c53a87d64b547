/* core-pingpong: how far apart two CPUs are, as the round trip of one cache line between a thread
 * on each (median of several runs). Collectives on one host move every byte from one core's
 * caches to another's, so their speed follows this; on a VM the host may move the virtual CPUs
 * closer together or further apart between runs (this project's 2-core VM measured 75 to 142 ns
 * in some minutes and 475 to 512 ns in others), and onehost_figures.sh prints it beside its tables.
 *
 *   core-pingpong [CPU_A CPU_B]   (default 0 1) */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TRIPS = 100000, RUNS = 5 };

static _Alignas(64) _Atomic long ball;
static _Atomic int answering; /* 1: the second thread runs on its CPU; -1: it cannot */

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* The answering side: waits for each odd number and answers with the next even one. */
static void *answer(void *cpu) {
  int pinned = pin(*(int *)cpu) == 0;
  atomic_store(&answering, pinned ? 1 : -1);
  if (!pinned) return NULL;
  for (long i = 1; i <= (long)TRIPS * RUNS; i++) {
    while (atomic_load_explicit(&ball, memory_order_acquire) != 2 * i - 1) {
    }
    atomic_store_explicit(&ball, 2 * i, memory_order_release);
  }
  return NULL;
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int cpus[2] = {0, 1};
  if (argc == 3) {
    cpus[0] = atoi(argv[1]);
    cpus[1] = atoi(argv[2]);
  }
  if ((argc != 1 && argc != 3) || cpus[0] < 0 || cpus[0] >= CPU_SETSIZE || cpus[1] < 0 || cpus[1] >= CPU_SETSIZE ||
      cpus[0] == cpus[1]) {
    fprintf(stderr, "usage: core-pingpong [CPU_A CPU_B]: two different CPU numbers from 0 to %d (default 0 1)\n",
            CPU_SETSIZE - 1);
    return 2;
  }
  int err = pin(cpus[0]);
  if (err != 0) {
    fprintf(stderr, "core-pingpong: cannot run on CPU %d (%s)\n", cpus[0], strerror(err));
    return 1;
  }
  pthread_t other;
  if (pthread_create(&other, NULL, answer, &cpus[1]) != 0) {
    fprintf(stderr, "core-pingpong: cannot start the second thread\n");
    return 1;
  }
  while (!atomic_load(&answering)) {
  }
  if (atomic_load(&answering) < 0) {
    pthread_join(other, NULL);
    fprintf(stderr, "core-pingpong: cannot run on CPU %d\n", cpus[1]);
    return 1;
  }
  double trip_ns[RUNS];
  long served = 0;
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < TRIPS; i++) {
      served++;
      atomic_store_explicit(&ball, 2 * served - 1, memory_order_release);
      while (atomic_load_explicit(&ball, memory_order_acquire) != 2 * served) {
      }
    }
    trip_ns[r] = (now_ns() - start) / TRIPS;
  }
  pthread_join(other, NULL);
  qsort(trip_ns, RUNS, sizeof trip_ns[0], by_value);
  printf("CPU %d <-> CPU %d: %.0f ns a round trip (median of %d runs of %d)\n", cpus[0], cpus[1], trip_ns[RUNS / 2],
         RUNS, TRIPS);
  return 0;
}
