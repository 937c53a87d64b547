/* What every fuzz target shares: a cursor that hands out the input's bytes in order (zeros once
 * the input runs out, so that inputs of any length make whole messages), an invariant check that
 * crashes so libFuzzer keeps the input, and the switch that keeps the library's logging quiet. */
#ifndef TALLY_FUZZ_INPUT_H
#define TALLY_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The job secret fuzz_auth.c uses, shared with make_seeds.c so that seeded exchanges are genuine. */
#define FUZZ_AUTH_KEY \
  { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }

struct fuzz_input {
  const uint8_t *data;
  size_t size;
};

/* Copies the next `len` bytes into `out`, zero-filling what the input lacks. */
static inline void fuzz_take(struct fuzz_input *in, void *out, size_t len) {
  size_t have = in->size < len ? in->size : len;
  memcpy(out, in->data, have);
  memset((unsigned char *)out + have, 0, len - have);
  in->data += have;
  in->size -= have;
}

static inline uint8_t fuzz_u8(struct fuzz_input *in) {
  uint8_t v;
  fuzz_take(in, &v, 1);
  return v;
}

static inline uint32_t fuzz_u32(struct fuzz_input *in) {
  unsigned char b[4];
  fuzz_take(in, b, sizeof b);
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t fuzz_u64(struct fuzz_input *in) {
  uint64_t high = fuzz_u32(in);
  return high << 32 | fuzz_u32(in);
}

/* A property of the parsers that must hold for every input; breaking it is a bug to fix. */
#define FUZZ_REQUIRE(cond)                                                                                           \
  do {                                                                                                               \
    if (!(cond)) {                                                                                                   \
      fprintf(stderr, "%s:%d: fuzz invariant broken: %s; the input that broke it is saved by libFuzzer\n", __FILE__, \
              __LINE__, #cond);                                                                                      \
      abort();                                                                                                       \
    }                                                                                                                \
  } while (0)

/* The parsers log refusals at INFO, which the default level hides; NONE makes sure nothing prints. */
static inline void fuzz_quiet(void) {
  static int quiet;
  if (quiet) return;
  char err[160];
  tally_log_configure("NONE", NULL, err, sizeof err);
  quiet = 1;
}

#endif
