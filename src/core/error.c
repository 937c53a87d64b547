/* Thread-local error messages and the names of result codes. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static _Thread_local char error_message[1024];
static _Thread_local int blamed_rank = -1;

tally_result_t tally_error_set(const char *file, int line, tally_result_t code, const char *fmt, ...) {
  char text[sizeof error_message];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap); /* formatted apart: fmt's arguments may be error_message */
  va_end(ap);
  memcpy(error_message, text, sizeof text);
  tally_log(TALLY_LOG_INFO, TALLY_SUBSYS_ALL, file, line, "%s: %s", tally_result_string(code), text);
  return code;
}

const char *tally_error_message(void) { return error_message; }

void tally_error_clear(void) {
  error_message[0] = '\0';
  blamed_rank = -1;
}

void tally_error_blame(int rank) { blamed_rank = rank; }

int tally_error_blamed(void) { return blamed_rank; }

void tally_log_trail(const char *file, int line, tally_result_t code) {
  tally_log(TALLY_LOG_INFO, TALLY_SUBSYS_ALL, file, line, "returned %s", tally_result_string(code));
}

const char *tally_result_string(tally_result_t r) {
  switch (r) {
    case TALLY_SUCCESS: return "success";
    case TALLY_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TALLY_ERR_INVALID_USAGE: return "invalid usage";
    case TALLY_ERR_SYSTEM: return "system error";
    case TALLY_ERR_REMOTE: return "remote error";
    case TALLY_ERR_TIMEOUT: return "timeout";
    case TALLY_ERR_MISMATCH: return "collective mismatch";
    case TALLY_ERR_UNSUPPORTED: return "unsupported";
    case TALLY_ERR_ABORTED: return "aborted";
    case TALLY_ERR_AUTH: return "authentication failure";
    case TALLY_ERR_INTERNAL: return "internal error";
  }
  return "unknown result code";
}

tally_result_t tally_get_version(int *version) {
  if (!version) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_get_version: version is NULL");
  *version = TALLY_VERSION_CODE;
  return TALLY_SUCCESS;
}
