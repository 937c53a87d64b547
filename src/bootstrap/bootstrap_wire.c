/* Encoding and decoding of bootstrap messages (see bootstrap_wire.h). Layouts, big-endian:
 *   join payload   0 rank  4 nranks  8 entry  192 shrink rank + 1 (low 25 bits) and attempt mod 128 (high 7)
 *                  196 shrink root + 1 (192..199 zero outside a shrink)
 *   entry          0 packed network address (net.h, 19 bytes)  19 packed RDMA address (all zero: none)
 *                  38 topology record (topo.h, 136 bytes)  174 recovery port (0: none)
 *                  176 shrink digest (0 outside a shrink)
 *   reply header   0 magic "TLYB"  4 status  8 nranks  12 comm id */
#include "bootstrap_wire.h"

#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "core/error.h"

enum {
  REPLY_MAGIC = 0x544c5942 /* "TLYB" */,
  JOIN_ENTRY = 8,
  JOIN_SHRINK_RANK = JOIN_ENTRY + TALLY_BOOTSTRAP_ENTRY_BYTES,
  JOIN_SHRINK_ROOT = JOIN_SHRINK_RANK + 4
};
_Static_assert(JOIN_SHRINK_ROOT + 4 <= TALLY_AUTH_PAYLOAD_BYTES, "the join must fit the proof");

enum {
  ENTRY_RDMA = TALLY_PACKED_ADDR_BYTES,
  ENTRY_TOPO = 2 * TALLY_PACKED_ADDR_BYTES,
  ENTRY_RECOVERY = ENTRY_TOPO + TALLY_TOPO_WIRE_BYTES,
  ENTRY_DIGEST = ENTRY_RECOVERY + 2
};

void tally_bootstrap_encode_entry(const struct tally_peer_info *info, unsigned char entry[TALLY_BOOTSTRAP_ENTRY_BYTES]) {
  tally_net_pack(&info->addr, entry);
  memset(entry + ENTRY_RDMA, 0, TALLY_PACKED_ADDR_BYTES);
  if (info->has_rdma) tally_net_pack(&info->rdma_addr, entry + ENTRY_RDMA);
  tally_topo_encode(&info->topo, entry + ENTRY_TOPO);
  tally_put_u16(entry + ENTRY_RECOVERY, (uint16_t)info->recovery_port);
  tally_put_u64(entry + ENTRY_DIGEST, info->shrink_digest);
}

int tally_bootstrap_parse_entry(const unsigned char entry[TALLY_BOOTSTRAP_ENTRY_BYTES], struct tally_peer_info *info) {
  if (tally_net_unpack(entry, &info->addr) != 0) return -1;
  int rdma_bytes = 0;
  for (int i = 0; i < TALLY_PACKED_ADDR_BYTES; i++) rdma_bytes |= entry[ENTRY_RDMA + i];
  info->has_rdma = rdma_bytes != 0;
  if (info->has_rdma && tally_net_unpack(entry + ENTRY_RDMA, &info->rdma_addr) != 0) return -1;
  info->recovery_port = tally_get_u16(entry + ENTRY_RECOVERY);
  info->shrink_digest = tally_get_u64(entry + ENTRY_DIGEST);
  info->shrink_rank = info->shrink_root = -1; /* the join payload's, when it has them */
  info->shrink_attempt = 0;
  return tally_topo_decode(entry + ENTRY_TOPO, TALLY_TOPO_WIRE_BYTES, &info->topo);
}

void tally_bootstrap_encode_join(int rank, int nranks, const struct tally_peer_info *info,
                                 unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES]) {
  memset(payload, 0, TALLY_AUTH_PAYLOAD_BYTES);
  tally_put_u32(payload, (uint32_t)rank);
  tally_put_u32(payload + 4, (uint32_t)nranks);
  tally_bootstrap_encode_entry(info, payload + JOIN_ENTRY);
  if (info->shrink_digest && info->shrink_rank >= 0 && info->shrink_root >= 0) {
    tally_put_u32(payload + JOIN_SHRINK_RANK,
                  ((uint32_t)info->shrink_rank + 1) | (uint32_t)(info->shrink_attempt & TALLY_SHRINK_ATTEMPT_MASK) << 25);
    tally_put_u32(payload + JOIN_SHRINK_ROOT, (uint32_t)info->shrink_root + 1);
  }
}

int tally_bootstrap_parse_join(const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], uint32_t *rank, uint32_t *nranks,
                               struct tally_peer_info *info, char *why, size_t whylen) {
  *rank = tally_get_u32(payload);
  *nranks = tally_get_u32(payload + 4);
  int padded = 1;
  for (size_t i = JOIN_SHRINK_ROOT + 4; i < TALLY_AUTH_PAYLOAD_BYTES; i++) padded &= payload[i] == 0;
  uint32_t shrink_word = tally_get_u32(payload + JOIN_SHRINK_RANK), shrink_root = tally_get_u32(payload + JOIN_SHRINK_ROOT);
  uint32_t shrink_rank = shrink_word & 0x1ffffff, shrink_attempt = shrink_word >> 25;
  int shrink_ok = (shrink_rank == 0) == (shrink_root == 0) && (shrink_rank || !shrink_attempt) &&
                  shrink_rank <= TALLY_BOOTSTRAP_MAX_RANKS &&
                  shrink_root <= TALLY_BOOTSTRAP_MAX_RANKS;
  if (*nranks == 0 || *nranks > TALLY_BOOTSTRAP_MAX_RANKS || *rank >= *nranks || !padded || !shrink_ok ||
      tally_bootstrap_parse_entry(payload + JOIN_ENTRY, info) != 0 || (shrink_rank && !info->shrink_digest)) {
    snprintf(why, whylen, "its join message is malformed (rank %u of %u; a different Tally version?)", *rank,
             *nranks);
    return -1;
  }
  info->shrink_rank = (int)shrink_rank - 1;
  info->shrink_root = (int)shrink_root - 1;
  info->shrink_attempt = (int)shrink_attempt;
  return 0;
}

size_t tally_bootstrap_reply_bytes(int nranks, int failure) {
  return TALLY_BOOTSTRAP_REPLY_HEADER_BYTES +
         (failure ? TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES : (size_t)nranks * TALLY_BOOTSTRAP_ENTRY_BYTES);
}

void tally_bootstrap_encode_reply(unsigned char *msg, int nranks, uint64_t comm_id, const unsigned char *table,
                                  const char *failure) {
  tally_put_u32(msg, REPLY_MAGIC);
  tally_put_u32(msg + 4, failure ? TALLY_BOOTSTRAP_FAILED : TALLY_BOOTSTRAP_OK);
  tally_put_u32(msg + 8, (uint32_t)nranks);
  tally_put_u64(msg + 12, comm_id);
  unsigned char *body = msg + TALLY_BOOTSTRAP_REPLY_HEADER_BYTES;
  if (failure) {
    memset(body, 0, TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES);
    snprintf((char *)body, TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES, "%s", failure);
  } else {
    memcpy(body, table, (size_t)nranks * TALLY_BOOTSTRAP_ENTRY_BYTES);
  }
}

int tally_bootstrap_parse_reply_header(const unsigned char header[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES], int nranks,
                                       enum tally_bootstrap_status *status, uint64_t *comm_id) {
  uint32_t wire_status = tally_get_u32(header + 4);
  if (tally_get_u32(header) != REPLY_MAGIC || wire_status > TALLY_BOOTSTRAP_FAILED ||
      tally_get_u32(header + 8) != (uint32_t)nranks)
    return -1;
  *status = (enum tally_bootstrap_status)wire_status;
  *comm_id = tally_get_u64(header + 12);
  return 0;
}

tally_result_t tally_bootstrap_parse_table(const unsigned char *table, int nranks, struct tally_peer_info *peers) {
  for (int i = 0; i < nranks; i++)
    if (tally_bootstrap_parse_entry(table + (size_t)i * TALLY_BOOTSTRAP_ENTRY_BYTES, &peers[i]) != 0)
      return TALLY_ERROR(TALLY_ERR_REMOTE, "the bootstrap root sent an invalid address or topology for rank %d", i);
  return TALLY_SUCCESS;
}

const char *tally_bootstrap_parse_failure(char text[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES]) {
  text[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES - 1] = '\0';
  return text;
}
