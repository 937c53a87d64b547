/* Monotonic time and deadlines (every wait in Tally is bounded by a deadline in nanoseconds), and
 * the CPU's hint for a polling loop. */
#ifndef TALLY_CLOCK_H
#define TALLY_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t tally_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t tally_deadline_after(double seconds) {
  return tally_now_ns() + (uint64_t)(seconds * 1e9);
}

/* Milliseconds left until `deadline`, rounded up, 0 when passed, capped at `cap_ms`. */
static inline int tally_ms_until(uint64_t deadline, int cap_ms) {
  uint64_t now = tally_now_ns();
  if (now >= deadline) return 0;
  uint64_t ms = (deadline - now + 999999) / 1000000;
  return ms > (uint64_t)cap_ms ? cap_ms : (int)ms;
}

/* A cheap timestamp for the counters and the flight recorder, two per call they time: the CPU's
 * time-stamp counter on x86 (about a third of clock_gettime's cost here; it runs at a constant rate
 * on the CPUs Tally targets), elsewhere the monotonic clock in nanoseconds. tally_tick_ns converts. */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static inline uint64_t tally_ticks(void) { return __rdtsc(); }
#else
static inline uint64_t tally_ticks(void) { return tally_now_ns(); }
#endif
/* Nanoseconds per tick (measured once per process against the monotonic clock, about 2 ms). */
double tally_tick_ns(void);

/* One pause in a polling loop: tells the CPU this is a spin (cheaper for the sibling hardware
 * thread, no memory-order violation on exit); costs no system call. */
static inline void tally_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

#endif
