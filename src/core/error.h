/* Error reporting: each layer records a sentence about what failed in a thread-local buffer and
 * returns a tally_result_t; the API layer copies the sentence into the communicator so that
 * tally_comm_last_error() can return it. */
#ifndef TALLY_ERROR_H
#define TALLY_ERROR_H

#include "tally.h"

/* Records a formatted message for this thread, logs it at INFO with file:line, returns code. */
#define TALLY_ERROR(code, ...) tally_error_set(__FILE__, __LINE__, (code), __VA_ARGS__)
tally_result_t tally_error_set(const char *file, int line, tally_result_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The last message recorded by this thread ("" when none). */
const char *tally_error_message(void);
void tally_error_clear(void);

/* The rank this thread's last failure points at (a peer that closed its connection, sent a
 * mismatched header, or reported its own failure), or -1 when none is known. Forwarded to the
 * other ranks so that every survivor names the same culprit. */
void tally_error_blame(int rank);
int tally_error_blamed(void);

/* Calls a function returning tally_result_t; on failure logs the call site and returns the code,
 * which leaves a readable trail under TALLY_DEBUG=INFO. */
#define TALLY_CHECK(call)                                                                         \
  do {                                                                                            \
    tally_result_t check_result_ = (call);                                                        \
    if (check_result_ != TALLY_SUCCESS) {                                                         \
      tally_log_trail(__FILE__, __LINE__, check_result_);                                         \
      return check_result_;                                                                       \
    }                                                                                             \
  } while (0)
void tally_log_trail(const char *file, int line, tally_result_t code);

#endif
