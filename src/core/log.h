/* Logging controlled by TALLY_DEBUG (WARN, INFO, TRACE) and TALLY_DEBUG_SUBSYS (INIT, BOOT, NET,
 * COLL, TOPO, TUNE, ALL; a leading ^ excludes), written to stderr with host, pid and rank. */
#ifndef TALLY_LOG_H
#define TALLY_LOG_H

#include <stddef.h>

enum { TALLY_LOG_NONE = 0, TALLY_LOG_WARN = 1, TALLY_LOG_INFO = 2, TALLY_LOG_TRACE = 3 };
enum {
  TALLY_SUBSYS_INIT = 1u << 0,
  TALLY_SUBSYS_BOOT = 1u << 1,
  TALLY_SUBSYS_NET = 1u << 2,
  TALLY_SUBSYS_COLL = 1u << 3,
  TALLY_SUBSYS_TOPO = 1u << 4,
  TALLY_SUBSYS_TUNE = 1u << 5,
  TALLY_SUBSYS_ALL = ~0u
};

void tally_log(int level, unsigned subsys, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Validates and applies the logging variables; on a malformed value returns -1 and describes it in
 * err. Called from config loading; before that, logging runs at WARN for all subsystems. */
int tally_log_configure(const char *level, const char *subsys, char *err, size_t errlen);
void tally_log_set_rank(int rank);
/* Whether a message at `level` for `subsys` would be written (to skip building costly ones). */
int tally_log_enabled(int level, unsigned subsys);

/* INFO and TRACE look at the level before the call: a variadic function's entry alone costs more
 * than the check, and TRACE lines sit on every collective's path. */
#define TLOG_AT_LEVEL(level, sub, ...)                                                                                 \
  do {                                                                                                                 \
    if (tally_log_enabled((level), (sub))) tally_log((level), (sub), __FILE__, __LINE__, __VA_ARGS__);                 \
  } while (0)
#define TLOG_WARN(sub, ...) tally_log(TALLY_LOG_WARN, (sub), __FILE__, __LINE__, __VA_ARGS__)
#define TLOG_INFO(sub, ...) TLOG_AT_LEVEL(TALLY_LOG_INFO, sub, __VA_ARGS__)
#define TLOG_TRACE(sub, ...) TLOG_AT_LEVEL(TALLY_LOG_TRACE, sub, __VA_ARGS__)

#endif
