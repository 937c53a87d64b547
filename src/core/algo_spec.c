/* Parses TALLY_ALGO (NCCL_ALGO's syntax, see algo_spec.h) into one bitmask of allowed algorithms
 * per collective, and owns the algorithms' names. */
#include "algo_spec.h"

#include "text_span.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "error.h"

#define ALGO_SYNTAX                                                                              \
  "expected parts separated by ';', each [collective:][^]algorithm[,algorithm...], for example " \
  "allreduce:rhd,ring;broadcast:tree"

static const char *const algo_names[TALLY_NUM_ALGOS] = {"ring",     "tree",  "rhd",    "hier",     "board",
                                                        "pairwise", "bruck", "direct", "binomial", "shared"};

/* The collectives TALLY_ALGO can name, spelt as in NCCL_ALGO; barrier (NULL) is not among them. */
static const char *const coll_names[TALLY_NUM_COLLS] = {[TALLY_COLL_ALLREDUCE] = "allreduce",
                                                        [TALLY_COLL_ALLGATHER] = "allgather",
                                                        [TALLY_COLL_REDUCE_SCATTER] = "reducescatter",
                                                        [TALLY_COLL_BROADCAST] = "broadcast",
                                                        [TALLY_COLL_REDUCE] = "reduce",
                                                        [TALLY_COLL_ALLTOALL] = "alltoall",
                                                        [TALLY_COLL_GATHER] = "gather",
                                                        [TALLY_COLL_SCATTER] = "scatter"};


/* The index of `name` among names[0..n) (NULL entries never match), or -1. */
static int find_name(const char *const *names, int n, struct span name) {
  for (int i = 0; i < n; i++)
    if (names[i] && span_is_nocase(name, names[i])) return i;
  return -1;
}

/* names[0..n), comma-separated, for messages. */
static const char *join_names(const char *const *names, int n, char *buf, size_t len) {
  buf[0] = '\0';
  for (int i = 0; i < n; i++)
    if (names[i]) snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "", names[i]);
  return buf;
}

/* One algorithm name ("auto" meaning all of them) into its bits. */
static tally_result_t parse_algorithm(const char *text, struct span name, unsigned *bits) {
  if (name.len == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_ALGO='%s' has an empty entry in a list of algorithms; %s",
                       text, ALGO_SYNTAX);
  if (span_is_nocase(name, "auto")) {
    *bits = TALLY_ALGO_ALL;
    return TALLY_SUCCESS;
  }
  int a = find_name(algo_names, TALLY_NUM_ALGOS, name);
  if (a >= 0) {
    *bits = TALLY_ALGO_BIT(a);
    return TALLY_SUCCESS;
  }
  char valid[128];
  return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                     "TALLY_ALGO='%s': unknown algorithm '%.*s'; valid algorithms: %s (or auto for all of them; a "
                     "leading '^' excludes the ones listed)",
                     text, (int)name.len, name.p, join_names(algo_names, TALLY_NUM_ALGOS, valid, sizeof valid));
}

/* "[^]algorithm[,algorithm...]" into the bits it allows. */
static tally_result_t parse_list(const char *text, struct span list, unsigned *allowed) {
  int exclude = list.len && list.p[0] == '^';
  if (exclude) list = span_trim(list.p + 1, list.len - 1);
  if (list.len == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_ALGO='%s' has an empty list of algorithms; %s", text,
                       ALGO_SYNTAX);
  unsigned listed = 0;
  const char *p = list.p, *end = list.p + list.len;
  for (;;) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *stop = comma ? comma : end;
    unsigned bits = 0;
    TALLY_CHECK(parse_algorithm(text, span_trim(p, (size_t)(stop - p)), &bits));
    listed |= bits;
    if (!comma) break;
    p = comma + 1;
  }
  *allowed = exclude ? TALLY_ALGO_ALL & ~listed : listed;
  return TALLY_SUCCESS;
}

static tally_result_t find_collective(const char *text, struct span name, enum tally_coll *coll) {
  int c = find_name(coll_names, TALLY_NUM_COLLS, name);
  if (c >= 0) {
    *coll = (enum tally_coll)c;
    return TALLY_SUCCESS;
  }
  char valid[128];
  return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_ALGO='%s': unknown collective '%.*s'; valid collectives: %s",
                     text, (int)name.len, name.p, join_names(coll_names, TALLY_NUM_COLLS, valid, sizeof valid));
}

/* The choices made so far: per collective named in a part (0: not named), and for the others. */
struct parts {
  unsigned named[TALLY_NUM_COLLS];
  unsigned rest; /* 0: no part without a collective yet */
};

/* One part, "collective:list" or "list", into `parts`. */
static tally_result_t parse_part(const char *text, struct span part, struct parts *parts) {
  if (part.len == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_ALGO='%s' has an empty part (two ';' in a row, or one at an end); %s", text, ALGO_SYNTAX);
  const char *colon = memchr(part.p, ':', part.len);
  const char *whom = "the collectives it applies to";
  unsigned *slot = &parts->rest;
  if (colon) {
    enum tally_coll coll = TALLY_COLL_ALLREDUCE;
    TALLY_CHECK(find_collective(text, span_trim(part.p, (size_t)(colon - part.p)), &coll));
    whom = coll_names[coll];
    slot = &parts->named[coll];
    if (*slot)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_ALGO='%s' names %s in more than one part; give each collective one list", text, whom);
  } else if (*slot) {
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_ALGO='%s' has more than one part without a collective name; join their algorithms "
                       "into one list",
                       text);
  }
  unsigned allowed = 0;
  TALLY_CHECK(parse_list(text, colon ? span_trim(colon + 1, part.len - (size_t)(colon + 1 - part.p)) : part, &allowed));
  if (!allowed)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_ALGO='%s': part '%.*s' leaves %s no algorithm to use", text,
                       (int)part.len, part.p, whom);
  *slot = allowed;
  return TALLY_SUCCESS;
}

/* Whether the whole value means "everything": empty, auto, or the old value hier. */
static int allows_everything(const char *text) {
  struct span all = span_trim(text, strlen(text));
  return all.len == 0 || span_is_nocase(all, "auto") || span_is_nocase(all, "hier");
}

tally_result_t tally_algo_spec_parse(const char *text, struct tally_algo_spec *spec) {
  struct parts parts = {{0}, 0};
  if (text && !allows_everything(text)) {
    for (const char *p = text;; p++) {
      size_t len = strcspn(p, ";");
      TALLY_CHECK(parse_part(text, span_trim(p, len), &parts));
      p += len;
      if (!*p) break;
    }
  }
  unsigned rest = parts.rest ? parts.rest : TALLY_ALGO_ALL;
  spec->named = 0;
  for (int c = 0; c < TALLY_NUM_COLLS; c++) {
    spec->allowed[c] = parts.named[c] ? parts.named[c] : rest;
    if (parts.named[c]) spec->named |= 1u << c;
  }
  return TALLY_SUCCESS;
}

int tally_algo_spec_allows(const struct tally_algo_spec *spec, enum tally_coll coll, enum tally_algo_id algo) {
  return (unsigned)coll < TALLY_NUM_COLLS && (unsigned)algo < TALLY_NUM_ALGOS &&
         (spec->allowed[coll] & TALLY_ALGO_BIT(algo)) != 0;
}

const char *tally_algo_name(enum tally_algo_id algo) {
  return (unsigned)algo < TALLY_NUM_ALGOS ? algo_names[algo] : "unknown";
}
