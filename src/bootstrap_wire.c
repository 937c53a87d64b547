/* Encoding and decoding of bootstrap messages (see bootstrap_wire.h). Layouts, big-endian:
 *   join payload   0 rank  4 nranks  8 packed address (net.h)  27..191 zero
 *   reply header   0 magic "TLYB"  4 status  8 nranks  12 comm id */
#include "bootstrap_wire.h"

#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "error.h"

enum { REPLY_MAGIC = 0x544c5942 /* "TLYB" */, JOIN_ADDR = 8 };

void tally_bootstrap_encode_join(int rank, int nranks, const struct tally_sockaddr *addr,
                                 unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES]) {
  memset(payload, 0, TALLY_AUTH_PAYLOAD_BYTES);
  tally_put_u32(payload, (uint32_t)rank);
  tally_put_u32(payload + 4, (uint32_t)nranks);
  tally_net_pack(addr, payload + JOIN_ADDR);
}

int tally_bootstrap_parse_join(const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], uint32_t *rank, uint32_t *nranks,
                               struct tally_sockaddr *addr, char *why, size_t whylen) {
  *rank = tally_get_u32(payload);
  *nranks = tally_get_u32(payload + 4);
  if (*nranks == 0 || *nranks > TALLY_BOOTSTRAP_MAX_RANKS || *rank >= *nranks ||
      tally_net_unpack(payload + JOIN_ADDR, addr) != 0) {
    snprintf(why, whylen, "its join message is malformed (rank %u of %u)", *rank, *nranks);
    return -1;
  }
  return 0;
}

size_t tally_bootstrap_reply_bytes(int nranks, int failure) {
  return TALLY_BOOTSTRAP_REPLY_HEADER_BYTES +
         (failure ? TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES : (size_t)nranks * TALLY_PACKED_ADDR_BYTES);
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
    memcpy(body, table, (size_t)nranks * TALLY_PACKED_ADDR_BYTES);
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

tally_result_t tally_bootstrap_parse_table(const unsigned char *table, int nranks, struct tally_sockaddr *peers) {
  for (int i = 0; i < nranks; i++)
    if (tally_net_unpack(table + (size_t)i * TALLY_PACKED_ADDR_BYTES, &peers[i]) != 0)
      return TALLY_ERROR(TALLY_ERR_REMOTE, "the bootstrap root sent an invalid address for rank %d", i);
  return TALLY_SUCCESS;
}

const char *tally_bootstrap_parse_failure(char text[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES]) {
  text[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES - 1] = '\0';
  return text;
}
