/* Big-endian encoding of integers into byte buffers, for everything Tally puts on the wire. */
#ifndef TALLY_BYTES_H
#define TALLY_BYTES_H

#include <stdint.h>
#include <string.h>

/* One unaligned load or store and a byte swap each: headers are encoded and checked on every
 * message, where a loop over the bytes costs hundreds of instructions. The swaps are the compiler's
 * (GCC and Clang), and undo themselves, so each converts both ways. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define TALLY_BIG_ENDIAN(bits, v) __builtin_bswap##bits(v)
#else
#define TALLY_BIG_ENDIAN(bits, v) (v)
#endif

static inline void tally_put_u16(unsigned char *p, uint16_t v) {
  v = TALLY_BIG_ENDIAN(16, v);
  memcpy(p, &v, sizeof v);
}
static inline void tally_put_u32(unsigned char *p, uint32_t v) {
  v = TALLY_BIG_ENDIAN(32, v);
  memcpy(p, &v, sizeof v);
}
static inline void tally_put_u64(unsigned char *p, uint64_t v) {
  v = TALLY_BIG_ENDIAN(64, v);
  memcpy(p, &v, sizeof v);
}
static inline uint16_t tally_get_u16(const unsigned char *p) {
  uint16_t v;
  memcpy(&v, p, sizeof v);
  return TALLY_BIG_ENDIAN(16, v);
}
static inline uint32_t tally_get_u32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return TALLY_BIG_ENDIAN(32, v);
}
static inline uint64_t tally_get_u64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return TALLY_BIG_ENDIAN(64, v);
}

#endif
