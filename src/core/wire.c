/* Encoding and checking of data message headers (see wire.h). Layout, big-endian:
 *   0 magic "TLYM"  4 seq  8 coll  9 datatype  10 op  11 wire format  12 root  16 count  24 index  32 bytes
 * Error frames:
 *   0 magic "TLYE"  4 seq  8 code  9..11 zero  12 sender  16 culprit (-1: unknown)  20..39 zero
 * Waiting notices:
 *   0 magic "TLYW"  4 seq  8..11 zero  12 sender  16..39 zero */
#include "wire.h"

#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "reduce.h"

enum {
  WIRE_MAGIC = 0x544c594d,   /* "TLYM" */
  ERROR_MAGIC = 0x544c5945,  /* "TLYE" */
  NOTICE_MAGIC = 0x544c5957, /* "TLYW" */
};

const char *tally_coll_name(int coll) {
  static const char *names[] = {"allreduce", "allgather", "reduce_scatter", "broadcast", "reduce",
                                "barrier",   "alltoall",  "gather",         "scatter"};
  static const char *msg_names[] = {"send", "alltoallv"};
  if (coll >= 0 && coll < TALLY_NUM_COLLS) return names[coll];
  if (coll >= TALLY_MSG_SEND && coll < TALLY_MSG_KIND_END) return msg_names[coll - TALLY_MSG_SEND];
  return "unknown";
}

void tally_header_fill(struct tally_msg_header *h, const struct tally_coll_desc *d, uint32_t seq) {
  memset(h, 0, sizeof *h);
  h->seq = seq;
  h->coll = (uint8_t)d->coll;
  h->datatype = (uint8_t)d->datatype;
  h->op = (uint8_t)d->op;
  h->wire = (uint8_t)d->wire;
  h->root = d->root;
  h->count = d->count;
}

void tally_header_encode(const struct tally_msg_header *h, unsigned char out[TALLY_WIRE_HEADER_BYTES]) {
  tally_put_u32(out, WIRE_MAGIC);
  tally_put_u32(out + 4, h->seq);
  out[8] = h->coll;
  out[9] = h->datatype;
  out[10] = h->op;
  out[11] = h->wire;
  tally_put_u32(out + 12, (uint32_t)h->root);
  tally_put_u64(out + 16, h->count);
  tally_put_u64(out + 24, h->index);
  tally_put_u64(out + 32, h->bytes);
}

void tally_error_frame_encode(unsigned char out[TALLY_WIRE_HEADER_BYTES], uint32_t seq, int sender, int culprit,
                              tally_result_t code) {
  memset(out, 0, TALLY_WIRE_HEADER_BYTES);
  tally_put_u32(out, ERROR_MAGIC);
  tally_put_u32(out + 4, seq);
  out[8] = (unsigned char)code;
  tally_put_u32(out + 12, (uint32_t)sender);
  tally_put_u32(out + 16, (uint32_t)culprit);
}

tally_result_t tally_error_frame_decode(const unsigned char got[TALLY_WIRE_HEADER_BYTES], int peer) {
  if (tally_get_u32(got) != ERROR_MAGIC) return TALLY_SUCCESS;
  tally_result_t code = (tally_result_t)got[8];
  int sender = (int)tally_get_u32(got + 12), culprit = (int)tally_get_u32(got + 16);
  if (sender != peer || culprit < -1 ||
      (code != TALLY_ERR_REMOTE && code != TALLY_ERR_MISMATCH && code != TALLY_ERR_TIMEOUT))
    return TALLY_ERROR(TALLY_ERR_REMOTE, "rank %d sent a malformed error report", peer);
  tally_error_blame(culprit);
  if (culprit < 0)
    return TALLY_ERROR(code, "rank %d reports that collective #%u failed there (%s); see that rank's error", peer,
                       tally_get_u32(got + 4), tally_result_string(code));
  if (code == TALLY_ERR_MISMATCH)
    return TALLY_ERROR(code,
                       "collective #%u: rank %d and a neighbour called different collectives (%s), as reported by "
                       "rank %d; the errors of rank %d's neighbours say who called what",
                       tally_get_u32(got + 4), culprit, tally_result_string(code), peer, culprit);
  return TALLY_ERROR(code, "collective #%u failed because of rank %d (%s), as reported by rank %d",
                     tally_get_u32(got + 4), culprit, tally_result_string(code), peer);
}

uint32_t tally_header_seq(const unsigned char got[TALLY_WIRE_HEADER_BYTES]) { return tally_get_u32(got + 4); }

void tally_notice_encode(unsigned char out[TALLY_WIRE_HEADER_BYTES], uint32_t seq, int sender) {
  memset(out, 0, TALLY_WIRE_HEADER_BYTES);
  tally_put_u32(out, NOTICE_MAGIC);
  tally_put_u32(out + 4, seq);
  tally_put_u32(out + 12, (uint32_t)sender);
}

int tally_notice_decode(const unsigned char got[TALLY_WIRE_HEADER_BYTES], int peer, uint32_t *seq) {
  if (tally_get_u32(got) != NOTICE_MAGIC || (int)tally_get_u32(got + 12) != peer) return 0;
  for (int i = 16; i < TALLY_WIRE_HEADER_BYTES; i++)
    if (got[i] != 0) return 0;
  *seq = tally_get_u32(got + 4);
  return 1;
}

/* "allreduce(count=10, float, sum)" for a header from the wire or from this rank. */
static void describe(const struct tally_msg_header *h, char *buf, size_t len) {
  const char *type = tally_datatype_name((tally_datatype_t)h->datatype);
  const char *op = tally_op_name((tally_op_t)h->op);
  int n = h->coll == TALLY_MSG_ALLTOALLV
              ? snprintf(buf, len, "alltoallv(sending %llu and expecting %llu elements to and from the other, %s",
                         (unsigned long long)h->count, (unsigned long long)h->index, type ? type : "bad datatype")
              : snprintf(buf, len, "%s(count=%llu, %s", tally_coll_name(h->coll), (unsigned long long)h->count,
                         type ? type : "bad datatype");
  if (h->coll == TALLY_COLL_ALLREDUCE || h->coll == TALLY_COLL_REDUCE_SCATTER || h->coll == TALLY_COLL_REDUCE)
    n += snprintf(buf + n, len - (size_t)n, ", %s", op ? op : "bad op");
  if (h->coll == TALLY_COLL_BROADCAST || h->coll == TALLY_COLL_REDUCE || h->coll == TALLY_COLL_GATHER ||
      h->coll == TALLY_COLL_SCATTER)
    n += snprintf(buf + n, len - (size_t)n, ", root=%d", h->root);
  snprintf(buf + n, len - (size_t)n, ")");
}

/* What is wrong with a header that is not the expected one's bytes (tally_header_check). */
static __attribute__((noinline)) tally_result_t header_differs(const unsigned char got[TALLY_WIRE_HEADER_BYTES],
                                                               const struct tally_msg_header *expected, int peer) {
  if (tally_get_u32(got) == ERROR_MAGIC) return tally_error_frame_decode(got, peer);
  tally_error_blame(peer); /* the peer is at fault for whatever is wrong below */
  if (tally_get_u32(got) != WIRE_MAGIC || got[11] >= TALLY_NUM_WIRE_FORMATS)
    return TALLY_ERROR(TALLY_ERR_REMOTE, "rank %d sent bytes that are not a Tally message header", peer);
  struct tally_msg_header h = {.seq = tally_get_u32(got + 4),
                               .coll = got[8],
                               .datatype = got[9],
                               .op = got[10],
                               .wire = got[11],
                               .root = (int32_t)tally_get_u32(got + 12),
                               .count = tally_get_u64(got + 16),
                               .index = tally_get_u64(got + 24),
                               .bytes = tally_get_u64(got + 32)};
  char theirs[128], mine[128];
  if (h.coll == TALLY_MSG_SEND && expected->coll == TALLY_MSG_SEND &&
      (h.count != expected->count || h.datatype != expected->datatype)) {
    const char *their_type = tally_datatype_name((tally_datatype_t)h.datatype);
    return TALLY_ERROR(TALLY_ERR_MISMATCH,
                       "rank %d's send #%u to this rank carries %llu %s elements, but the matching tally_recv on this "
                       "rank takes %llu %s: a send and its recv must have the same count and datatype",
                       peer, h.seq, (unsigned long long)h.count, their_type ? their_type : "(bad datatype)",
                       (unsigned long long)expected->count, tally_datatype_name((tally_datatype_t)expected->datatype));
  }
  if ((h.coll == TALLY_MSG_SEND) != (expected->coll == TALLY_MSG_SEND)) {
    describe(&h, theirs, sizeof theirs);
    describe(expected, mine, sizeof mine);
    return TALLY_ERROR(TALLY_ERR_MISMATCH,
                       "rank %d sent a message of %s where this rank expected one of %s: point-to-point messages and "
                       "collectives between two ranks must come in the same order on both",
                       peer, theirs, mine);
  }
  if (h.seq != expected->seq)
    return TALLY_ERROR(TALLY_ERR_MISMATCH,
                       "rank %d is at collective #%u but this rank is at #%u: the ranks called a different number of "
                       "collectives on this communicator",
                       peer, h.seq, expected->seq);
  /* alltoallv: count is what the sender sends, index what it expects back; both must match */
  int counts_differ = h.count != expected->count || (h.coll == TALLY_MSG_ALLTOALLV && h.index != expected->index);
  if (h.coll != expected->coll || h.datatype != expected->datatype || h.op != expected->op ||
      h.root != expected->root || counts_differ) {
    describe(&h, theirs, sizeof theirs);
    describe(expected, mine, sizeof mine);
    return TALLY_ERROR(TALLY_ERR_MISMATCH,
                       "collective #%u: rank %d called %s but this rank called %s; every rank must make the same "
                       "calls in the same order",
                       h.seq, peer, theirs, mine);
  }
  if (h.wire != expected->wire)
    return TALLY_ERROR(TALLY_ERR_MISMATCH,
                       "collective #%u: rank %d sends its data across hosts as %s but this rank as %s: set "
                       "TALLY_COMPRESS and TALLY_COMPRESS_MIN_BYTES the same on every rank",
                       h.seq, peer, tally_wire_format_name(h.wire), tally_wire_format_name(expected->wire));
  if (h.index != expected->index || h.bytes != expected->bytes)
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "rank %d sent message %llu of %llu bytes where message %llu of %llu bytes was due: protocol "
                       "error (different Tally versions or settings such as TALLY_CHUNK_BYTES?)",
                       peer, (unsigned long long)h.index, (unsigned long long)h.bytes,
                       (unsigned long long)expected->index, (unsigned long long)expected->bytes);
  tally_error_blame(-1); /* nothing was wrong */
  return TALLY_SUCCESS;
}

/* Every field must equal the expected one, so a right header is the expected header's own bytes:
 * one comparison instead of decoding each field. */
int tally_header_is(const unsigned char got[TALLY_WIRE_HEADER_BYTES], const struct tally_msg_header *expected) {
  unsigned char want[TALLY_WIRE_HEADER_BYTES];
  tally_header_encode(expected, want);
  return memcmp(got, want, sizeof want) == 0;
}

tally_result_t tally_header_check(const unsigned char got[TALLY_WIRE_HEADER_BYTES],
                                  const struct tally_msg_header *expected, int peer) {
  if (!tally_header_is(got, expected)) return header_differs(got, expected, peer);
  tally_error_blame(-1); /* nothing was wrong */
  return TALLY_SUCCESS;
}
