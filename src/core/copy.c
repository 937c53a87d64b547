/* Streaming copies (copy.h). */
#include "copy.h"

#include <stdint.h>

#if defined(__x86_64__)
#include <emmintrin.h>

void tally_copy_streaming(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  size_t head = (64 - ((uintptr_t)d & 63)) & 63;
  if (n < head + 64) {
    memcpy(d, s, n);
    return;
  }
  memcpy(d, s, head);
  d += head;
  s += head;
  n -= head;
  for (; n >= 64; n -= 64, d += 64, s += 64) { /* SSE2: every x86-64 has it */
    __m128i a = _mm_loadu_si128((const __m128i *)s), b = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + 32)), e = _mm_loadu_si128((const __m128i *)(s + 48));
    _mm_stream_si128((__m128i *)d, a);
    _mm_stream_si128((__m128i *)(d + 16), b);
    _mm_stream_si128((__m128i *)(d + 32), c);
    _mm_stream_si128((__m128i *)(d + 48), e);
  }
  memcpy(d, s, n);
  _mm_sfence(); /* streaming stores are weakly ordered: done before whatever the caller publishes next */
}

#else

void tally_copy_streaming(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

#endif
