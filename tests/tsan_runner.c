/* Runs the multi-threaded test bodies (threaded.h) without Criterion, for the ThreadSanitizer build:
 * Criterion 2.4 crashes at start under -fsanitize=thread. With TSAN_OPTIONS=halt_on_error=1 (set
 * by ctest) the first data race aborts its rank, and the run fails. Exit status 0 when every body
 * passed on every rank. */
#include <stdio.h>

#include "harness.h"
#include "threaded.h"

int main(void) {
  static const struct {
    const char *name;
    harness_body_fn body;
  } cases[] = {
      {"abort from a watchdog thread", threaded_abort_from_watchdog},
      {"one communicator, two threads", threaded_one_comm_two_threads},
      {"communicators in threads", threaded_comms_in_threads},
  };
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = harness_run(2, 300, cases[i].body, NULL);
    printf("%s %s\n", rc ? "FAIL" : "ok  ", cases[i].name);
    fflush(stdout);
    failed += rc != 0;
  }
  return failed != 0;
}
