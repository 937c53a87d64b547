/* Parses the text of a TALLY_TUNING_FILE (format in tuning_file.h) into per-link-class cost model
 * parameters, refusing any line it does not understand with its line number. */
#include "tuning_file.h"

#include "core/text_span.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define VALID_KEYS                                                                                        \
  "alpha_us, beta_us_per_byte, bandwidth_GBps or gamma_us_per_byte, optionally prefixed by shm. or net. " \
  "(for example net.alpha_us)"

static const char *const class_prefixes[TALLY_NUM_LINK_CLASSES] = {"shm.", "net."};
static const char *const class_names[TALLY_NUM_LINK_CLASSES] = {"shm", "net"};

/* The parameters, numbered as the bits of struct tally_tuning.given (1u << number). */
enum { ALPHA, BETA, GAMMA, NUM_PARAMS };
static const char *const param_names[NUM_PARAMS] = {"alpha", "beta", "gamma"};
_Static_assert(TALLY_TUNING_ALPHA == 1u << ALPHA && TALLY_TUNING_BETA == 1u << BETA &&
                   TALLY_TUNING_GAMMA == 1u << GAMMA,
               "tuning_file.h's bits follow the parameters' numbers");

/* The keys, and how each value becomes a parameter. */
static const struct key {
  const char *name;
  int param;           /* ALPHA, BETA or GAMMA */
  int zero_allowed;    /* 0 is a valid value (else it must be positive) */
  int is_bandwidth;    /* the value is GB/s: beta = 1e-3 / value */
  const char *meaning; /* for messages */
} keys[] = {
    {"alpha_us", ALPHA, 1, 0, "latency of one message in microseconds"},
    {"beta_us_per_byte", BETA, 0, 0, "transfer time of one byte in microseconds"},
    {"bandwidth_GBps", BETA, 0, 1, "bandwidth in gigabytes per second"},
    {"gamma_us_per_byte", GAMMA, 1, 0, "reduction time of one byte in microseconds"},
};
#define NUM_KEYS (sizeof keys / sizeof keys[0])


/* Where each parameter of each class was set: its line (0: not yet) and key, for duplicates. */
struct parse_state {
  const char *path;
  int line;
  struct tally_tuning tuning;
  int set_on_line[TALLY_NUM_LINK_CLASSES][NUM_PARAMS];
  struct span set_by[TALLY_NUM_LINK_CLASSES][NUM_PARAMS];
};

#define LINE_ERROR(st, fmt, ...) \
  TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_TUNING_FILE=%s, line %d: " fmt, (st)->path, (st)->line, __VA_ARGS__)

/* "[shm.|net.]name" into the classes it sets (a bit per class) and its entry in keys[]. */
static tally_result_t parse_key(const struct parse_state *st, struct span key, unsigned *classes,
                                const struct key **found) {
  struct span name = key;
  *classes = (1u << TALLY_NUM_LINK_CLASSES) - 1;
  for (int c = 0; c < TALLY_NUM_LINK_CLASSES; c++) {
    size_t n = strlen(class_prefixes[c]);
    if (key.len > n && !memcmp(key.p, class_prefixes[c], n)) {
      *classes = 1u << c;
      name = (struct span){key.p + n, key.len - n};
    }
  }
  for (size_t i = 0; i < NUM_KEYS; i++)
    if (span_is(name, keys[i].name)) {
      *found = &keys[i];
      return TALLY_SUCCESS;
    }
  return LINE_ERROR(st, "unknown key '%.*s'; valid keys: %s", (int)key.len, key.p, VALID_KEYS);
}

/* The value as a finite number in the key's range. */
static tally_result_t parse_number(const struct parse_state *st, struct span key, const struct key *k,
                                   struct span value, double *out) {
  char text[64];
  double v = 0;
  int ok = value.len > 0 && value.len < sizeof text;
  if (ok) {
    memcpy(text, value.p, value.len);
    text[value.len] = '\0';
    char *end;
    errno = 0;
    v = strtod(text, &end);
    ok = end != text && !*end && !errno && isfinite(v);
  }
  if (!ok)
    return LINE_ERROR(st, "%.*s = '%.*s' is not a number (%.*s is the %s; for example 2.5 or 1e-4)", (int)key.len,
                      key.p, (int)value.len, value.p, (int)key.len, key.p, k->meaning);
  if (v < 0 || (v == 0 && !k->zero_allowed))
    return LINE_ERROR(st, "%.*s = %.*s is out of range: it must be %s (the %s)", (int)key.len, key.p, (int)value.len,
                      value.p, k->zero_allowed ? "0 or more" : "more than 0", k->meaning);
  *out = k->is_bandwidth ? 1e-3 / v : v; /* 1 GB/s = 1e9 bytes/s = 1e3 bytes/us: 1e-3 us per byte */
  return TALLY_SUCCESS;
}

static double *param_slot(struct tally_cost_params *params, int param) {
  return param == ALPHA ? &params->alpha_us : param == BETA ? &params->beta_us_per_byte : &params->gamma_us_per_byte;
}

/* Records `v` for each class in `classes`, refusing one that an earlier line already set. */
static tally_result_t set_param(struct parse_state *st, struct span key, unsigned classes, int param, double v) {
  for (int c = 0; c < TALLY_NUM_LINK_CLASSES; c++) {
    if (!(classes & 1u << c)) continue;
    if (st->set_on_line[c][param]) {
      struct span earlier = st->set_by[c][param];
      return LINE_ERROR(st, "'%.*s' sets the %s links' %s again (line %d set it with '%.*s'); give each value once",
                        (int)key.len, key.p, class_names[c], param_names[param], st->set_on_line[c][param],
                        (int)earlier.len, earlier.p);
    }
    st->set_on_line[c][param] = st->line;
    st->set_by[c][param] = key;
    *param_slot(&st->tuning.params[c], param) = v;
    st->tuning.given[c] |= 1u << param;
  }
  return TALLY_SUCCESS;
}

/* One line (without its newline): blank, a comment or "key = value". */
static tally_result_t parse_line(struct parse_state *st, struct span line) {
  line = span_trim(line.p, line.len);
  if (line.len == 0 || line.p[0] == '#') return TALLY_SUCCESS;
  const char *eq = memchr(line.p, '=', line.len);
  if (!eq)
    return LINE_ERROR(st,
                      "'%.*s' is not a setting; expected key = value (for example net.alpha_us = 12.5) or a # comment",
                      (int)line.len, line.p);
  struct span key = span_trim(line.p, (size_t)(eq - line.p));
  struct span value = span_trim(eq + 1, line.len - (size_t)(eq + 1 - line.p));
  unsigned classes = 0;
  const struct key *k = NULL;
  double v = 0;
  TALLY_CHECK(parse_key(st, key, &classes, &k));
  TALLY_CHECK(parse_number(st, key, k, value, &v));
  return set_param(st, key, classes, k->param, v);
}

tally_result_t tally_tuning_parse(const char *text, const char *path, struct tally_tuning *out) {
  struct parse_state st;
  memset(&st, 0, sizeof st);
  st.path = path;
  for (const char *p = text;; p++) {
    size_t len = strcspn(p, "\n");
    st.line++;
    TALLY_CHECK(parse_line(&st, (struct span){p, len}));
    p += len;
    if (!*p) break;
  }
  *out = st.tuning;
  return TALLY_SUCCESS;
}

void tally_tuning_apply(const struct tally_tuning *t, enum tally_link_class link, struct tally_cost_params *params) {
  struct tally_cost_params given = t->params[link];
  for (int param = 0; param < NUM_PARAMS; param++)
    if (t->given[link] & 1u << param) *param_slot(params, param) = *param_slot(&given, param);
}
