/* The shared-memory transport's settings, read from the environment when an endpoint is created:
 *
 *   TALLY_SHM_SLOTS       slots in each connection's ring (default 8, from 2 to 4096)
 *   TALLY_SHM_SLOT_BYTES  bytes per slot (default 262144, from 4096 to 67108864): the sender publishes
 *                         and the receiver frees the ring a slot at a time, so copies overlap
 *   TALLY_SHM_CMA_BYTES   messages of at least this many bytes are read by the receiver straight from
 *                         the sender's buffer with process_vm_readv: one copy instead of two (0: off).
 *                         Default: off where every rank of the host has a hardware thread of its own
 *                         (there the ring's second copy, which stays in cache, beat process_vm_readv at
 *                         every size: build/shm-copy-bench); 64 KiB where ranks share cores, since
 *                         then every copy takes a core from another rank (8 ranks on 2 cores: alltoall
 *                         of 1 MiB 0.37 -> 1.09 GB/s busbw, allreduce of 16 MiB 0.69 -> 0.77)
 *
 * A ring (slots x slot bytes) holds at most 1 GiB. The sending rank's values shape a connection; the
 * receiving rank follows them. Malformed values are refused with the valid range. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "shm.h"

enum { SHM_DEFAULT_SLOTS = 8, SHM_DEFAULT_SLOT_BYTES = 256 * 1024 };
/* Off where ranks have cores of their own: on the machines measured (bench/shm_copy.c) the ring beat
 * process_vm_readv at every size, since its second copy stays in cache while process_vm_readv pins
 * pages one by one. Where ranks share cores, one copy less is a core's time saved. */
#define SHM_DEFAULT_CMA_BYTES 0ull
#define SHM_SHARED_CORES_CMA_BYTES (64ull << 10)
#define SHM_MAX_RING_BYTES (1ull << 30)

/* Reads the whole decimal number in `name` into *out when the variable is set; refuses values
 * outside [lo, hi] with a message that gives the range and what the setting does. */
static tally_result_t read_number(const char *name, uint64_t lo, uint64_t hi, const char *meaning, uint64_t *out) {
  const char *text = getenv(name);
  if (!text || !*text) return TALLY_SUCCESS;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text || *end || text[0] == '-' || v < lo || v > hi)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s='%s' is not a whole number from %llu to %llu (%s)", name, text,
                       (unsigned long long)lo, (unsigned long long)hi, meaning);
  *out = v;
  return TALLY_SUCCESS;
}

tally_result_t shm_settings_load(struct shm_settings *s, int cores_shared) {
  uint64_t slots = SHM_DEFAULT_SLOTS, slot_bytes = SHM_DEFAULT_SLOT_BYTES;
  uint64_t cma = cores_shared ? SHM_SHARED_CORES_CMA_BYTES : SHM_DEFAULT_CMA_BYTES;
  TALLY_CHECK(read_number("TALLY_SHM_SLOTS", 2, 4096, "slots in each shared-memory ring", &slots));
  TALLY_CHECK(read_number("TALLY_SHM_SLOT_BYTES", 4096, 64ull << 20, "bytes per shared-memory slot", &slot_bytes));
  TALLY_CHECK(read_number("TALLY_SHM_CMA_BYTES", 0, UINT64_MAX >> 1,
                          "smallest message read with one copy by process_vm_readv; 0 turns that off", &cma));
  if (slots * slot_bytes > SHM_MAX_RING_BYTES)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_SHM_SLOTS x TALLY_SHM_SLOT_BYTES is %llu bytes: a shared-memory ring holds at most %llu "
                       "bytes; lower one of them",
                       (unsigned long long)(slots * slot_bytes), SHM_MAX_RING_BYTES);
  s->slots = (uint32_t)slots;
  s->slot_bytes = (uint32_t)slot_bytes;
  s->cma_min_bytes = cma;
  return TALLY_SUCCESS;
}

int shm_settings_valid(uint64_t slots, uint64_t slot_bytes) {
  return slots >= 2 && slots <= 4096 && slot_bytes >= 4096 && slot_bytes <= (64ull << 20) &&
         slots * slot_bytes <= SHM_MAX_RING_BYTES;
}
