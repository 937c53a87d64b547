/* A piece of a text being parsed (not NUL-terminated), for the parsers of settings (algo_spec.c,
 * tuning_file.c). */
#ifndef TALLY_TEXT_SPAN_H
#define TALLY_TEXT_SPAN_H

#include <ctype.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct span {
  const char *p;
  size_t len;
};

/* `len` bytes at `p` without the blanks around them. */
static inline struct span span_trim(const char *p, size_t len) {
  while (len && isspace((unsigned char)*p)) p++, len--;
  while (len && isspace((unsigned char)p[len - 1])) len--;
  return (struct span){p, len};
}

/* Whether `s` is `word`, exactly or ignoring case. */
static inline int span_is(struct span s, const char *word) {
  return s.len == strlen(word) && !memcmp(s.p, word, s.len);
}
static inline int span_is_nocase(struct span s, const char *word) {
  return s.len == strlen(word) && !strncasecmp(s.p, word, s.len);
}

#endif
