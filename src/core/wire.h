/* The header that leads every data message: the collective's fingerprint (sequence number,
 * collective, datatype, op, root, count, wire format) plus the message's index and length. The receiver checks
 * it against what it expects before using a byte of the payload, so ranks that called different
 * collectives get TALLY_ERR_MISMATCH at no extra round trip, and forged or truncated messages are
 * refused. */
#ifndef TALLY_WIRE_H
#define TALLY_WIRE_H

#include <stdint.h>

#include "descriptor.h"

#define TALLY_WIRE_HEADER_BYTES 40

struct tally_msg_header {
  uint32_t seq; /* collective sequence number on this communicator */
  uint8_t coll, datatype, op;
  uint8_t wire; /* the call's enum tally_wire_format: ranks that compress differently disagree here */
  int32_t root;
  uint64_t count;
  uint64_t index; /* message index within the collective */
  uint64_t bytes; /* payload length */
};

void tally_header_fill(struct tally_msg_header *h, const struct tally_coll_desc *d, uint32_t seq);
void tally_header_encode(const struct tally_msg_header *h, unsigned char out[TALLY_WIRE_HEADER_BYTES]);
/* A rank whose collective failed sends this in place of its next header, so that the failure
 * travels around the ring instead of leaving the others to time out. `culprit` is the rank at
 * fault (-1: unknown), `code` what the receivers should return. */
void tally_error_frame_encode(unsigned char out[TALLY_WIRE_HEADER_BYTES], uint32_t seq, int sender, int culprit,
                              tally_result_t code);

/* When `got` is an error frame from `peer`: blames its culprit and returns the code it carries
 * with a message; otherwise TALLY_SUCCESS. Every field is checked before it is believed. */
tally_result_t tally_error_frame_decode(const unsigned char got[TALLY_WIRE_HEADER_BYTES], int peer);

/* A rank that has waited most of TALLY_TIMEOUT for its own previous rank says so to the next one
 * (in place of a header, between messages), so that the next rank, if it times out too, knows the
 * stall lies further upstream and waits for the upstream rank's verdict instead of blaming it. */
void tally_notice_encode(unsigned char out[TALLY_WIRE_HEADER_BYTES], uint32_t seq, int sender);
/* 1 when `got` is a well-formed notice from `peer` (its collective number in *seq), else 0. */
int tally_notice_decode(const unsigned char got[TALLY_WIRE_HEADER_BYTES], int peer, uint32_t *seq);

/* The collective number a header carries (whatever else it holds). */
uint32_t tally_header_seq(const unsigned char got[TALLY_WIRE_HEADER_BYTES]);

/* Compares a received header with the expected one; MISMATCH or REMOTE with a message naming `peer`.
 * An error frame returns the code it carries and blames its culprit (tally_error_blame). */
tally_result_t tally_header_check(const unsigned char got[TALLY_WIRE_HEADER_BYTES],
                                  const struct tally_msg_header *expected, int peer);
/* Whether got is exactly the expected header (what tally_header_check accepts), with no message. */
int tally_header_is(const unsigned char got[TALLY_WIRE_HEADER_BYTES], const struct tally_msg_header *expected);

#endif
