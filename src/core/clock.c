/* The tick's length (clock.h): the time-stamp counter measured once against the monotonic clock. */
#define _GNU_SOURCE
#include "clock.h"

#include <pthread.h>

static double tick_ns = 1.0;
static pthread_once_t measured = PTHREAD_ONCE_INIT;

static void measure(void) {
#if defined(__x86_64__) || defined(__i386__)
  uint64_t t0 = tally_now_ns(), c0 = tally_ticks(), t1, c1;
  do { /* 2 ms of both clocks: the ratio to about one part in 10^5 */
    t1 = tally_now_ns();
    c1 = tally_ticks();
  } while (t1 - t0 < 2000000);
  if (c1 > c0) tick_ns = (double)(t1 - t0) / (double)(c1 - c0);
#endif
}

double tally_tick_ns(void) {
  pthread_once(&measured, measure);
  return tick_ns;
}
