/* Copies into buffers larger than the caches: streaming (non-temporal) stores that write whole
 * cache lines to memory without reading them first. A plain copy reads each destination line
 * before it overwrites it (its read-for-ownership), so a copy between two buffers that live in
 * memory moves three bytes per byte copied; a streaming copy moves two. The copied bytes are not
 * left in the caches, so this pays only where the destination would not stay there anyway (how large that is:
 * TALLY_STREAM_BYTES, core/config.h). */
#ifndef TALLY_COPY_H
#define TALLY_COPY_H

#include <stddef.h>
#include <string.h>

/* memcpy with streaming stores for whole 64-byte lines of dst, plain stores for its ragged ends;
 * the stores are complete (fenced) when it returns. Plain memcpy where the CPU has none. */
void tally_copy_streaming(void *dst, const void *src, size_t n);

/* memcpy, streaming where `stream`. */
static inline void tally_copy(void *dst, const void *src, size_t n, int stream) {
  if (stream)
    tally_copy_streaming(dst, src, n);
  else
    memcpy(dst, src, n);
}

#endif
