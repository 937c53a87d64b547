/* Logging: level and subsystem filters, one line per message on stderr. */
#define _GNU_SOURCE
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static atomic_int log_level = TALLY_LOG_WARN;
static atomic_uint log_subsys = TALLY_SUBSYS_ALL;
static atomic_int log_rank = -1;

static const struct {
  const char *name;
  unsigned bit;
} subsys_names[] = {{"INIT", TALLY_SUBSYS_INIT}, {"BOOT", TALLY_SUBSYS_BOOT}, {"NET", TALLY_SUBSYS_NET},
                    {"COLL", TALLY_SUBSYS_COLL}, {"TOPO", TALLY_SUBSYS_TOPO}, {"TUNE", TALLY_SUBSYS_TUNE},
                    {"ALL", TALLY_SUBSYS_ALL}};

static int parse_level(const char *s) {
  if (!strcasecmp(s, "NONE")) return TALLY_LOG_NONE;
  if (!strcasecmp(s, "WARN")) return TALLY_LOG_WARN;
  if (!strcasecmp(s, "INFO")) return TALLY_LOG_INFO;
  if (!strcasecmp(s, "TRACE")) return TALLY_LOG_TRACE;
  return -1;
}

static int parse_subsys(const char *s, unsigned *out, char *err, size_t errlen) {
  int exclude = s[0] == '^';
  if (exclude) s++;
  unsigned mask = 0;
  char copy[256];
  snprintf(copy, sizeof copy, "%s", s);
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    size_t i;
    for (i = 0; i < sizeof subsys_names / sizeof subsys_names[0]; i++)
      if (!strcasecmp(tok, subsys_names[i].name)) break;
    if (i == sizeof subsys_names / sizeof subsys_names[0]) {
      snprintf(err, errlen, "TALLY_DEBUG_SUBSYS: unknown subsystem '%s'; valid: INIT, BOOT, NET, COLL, TOPO, TUNE, ALL", tok);
      return -1;
    }
    mask |= subsys_names[i].bit;
  }
  *out = exclude ? ~mask : mask;
  return 0;
}

int tally_log_configure(const char *level, const char *subsys, char *err, size_t errlen) {
  int lvl = TALLY_LOG_WARN;
  unsigned mask = TALLY_SUBSYS_ALL;
  if (level && *level && (lvl = parse_level(level)) < 0) {
    snprintf(err, errlen, "TALLY_DEBUG='%s' is not a log level; use NONE, WARN, INFO or TRACE", level);
    return -1;
  }
  if (subsys && *subsys && parse_subsys(subsys, &mask, err, errlen) != 0) return -1;
  atomic_store(&log_level, lvl);
  atomic_store(&log_subsys, mask);
  return 0;
}

void tally_log_set_rank(int rank) { atomic_store(&log_rank, rank); }

int tally_log_enabled(int level, unsigned subsys) {
  return level <= atomic_load(&log_level) && (subsys & atomic_load(&log_subsys));
}

void tally_log(int level, unsigned subsys, const char *file, int line, const char *fmt, ...) {
  if (!tally_log_enabled(level, subsys)) return;
  static const char *names[] = {"NONE", "WARN", "INFO", "TRACE"};
  char host[64] = "?";
  gethostname(host, sizeof host - 1);
  char text[1200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  const char *base = strrchr(file, '/');
  fprintf(stderr, "%s:%d:%d [tally %s] %s:%d %s\n", host, (int)getpid(), atomic_load(&log_rank), names[level],
          base ? base + 1 : file, line, text);
}
