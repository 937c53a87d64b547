/* Writes the seed inputs of fuzz/corpus/<target>/ with the library's own encoders: valid messages of
 * every kind, and forged or truncated ones that each hit one refusal. Crash inputs found by the
 * fuzzers are added to the corpus by hand, next to these (named crash-*), and never regenerated.
 * Each seed follows the input layout described at the top of its target's file.
 *
 *   cmake --build build --target tally_static
 *   cc -std=c11 -Isrc -Iinclude fuzz/make_seeds.c build/libtally.a -lcrypto -lpthread $(pkg-config --libs hwloc) \
 *      -o /tmp/make_seeds
 *   /tmp/make_seeds fuzz/corpus */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bootstrap/bootstrap_wire.h"
#include "bootstrap/uid.h"
#include "core/bytes.h"
#include "core/wire.h"
#include "fuzz_input.h"

static const char *corpus_dir;

struct seed {
  unsigned char bytes[2048];
  size_t len;
};

static void add(struct seed *s, const void *p, size_t n) {
  if (s->len + n > sizeof s->bytes) abort();
  memcpy(s->bytes + s->len, p, n);
  s->len += n;
}

static void add_u8(struct seed *s, uint8_t v) { add(s, &v, 1); }

static void add_u32(struct seed *s, uint32_t v) {
  unsigned char b[4];
  tally_put_u32(b, v);
  add(s, b, sizeof b);
}

static void add_u64(struct seed *s, uint64_t v) {
  unsigned char b[8];
  tally_put_u64(b, v);
  add(s, b, sizeof b);
}

/* Writes the first `len` bytes of the seed (all of it when len is 0) to <corpus>/<target>/<name>. */
static void save(const char *target, const char *name, const struct seed *s, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", corpus_dir, target);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "make_seeds: cannot create %s: %s\n", path, strerror(errno));
    exit(1);
  }
  snprintf(path, sizeof path, "%s/%s/%s", corpus_dir, target, name);
  FILE *f = fopen(path, "wb");
  size_t n = len ? len : s->len;
  if (!f || fwrite(s->bytes, 1, n, f) != n || fclose(f) != 0) {
    fprintf(stderr, "make_seeds: cannot write %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

static struct tally_sockaddr ipv4(const char *host, int port) {
  struct tally_sockaddr a = {.len = sizeof(struct sockaddr_in)};
  struct sockaddr_in *in = (struct sockaddr_in *)&a.ss;
  in->sin_family = AF_INET;
  in->sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &in->sin_addr);
  return a;
}

static struct tally_sockaddr ipv6(const char *host, int port) {
  struct tally_sockaddr a = {.len = sizeof(struct sockaddr_in6)};
  struct sockaddr_in6 *in = (struct sockaddr_in6 *)&a.ss;
  in->sin6_family = AF_INET6;
  in->sin6_port = htons((uint16_t)port);
  inet_pton(AF_INET6, host, &in->sin6_addr);
  return a;
}

/* --- wire: peer, 40 received bytes, expected header fields, error code and culprit ------------- */

static void wire_seed(const char *name, int peer, const unsigned char got[TALLY_WIRE_HEADER_BYTES],
                      const struct tally_msg_header *h, tally_result_t code, int culprit, size_t len) {
  struct seed s = {.len = 0};
  add_u8(&s, (uint8_t)peer);
  add(&s, got, TALLY_WIRE_HEADER_BYTES);
  add_u32(&s, h->seq);
  add_u8(&s, h->coll);
  add_u8(&s, h->datatype);
  add_u8(&s, h->op);
  add_u32(&s, (uint32_t)h->root);
  add_u64(&s, h->count);
  add_u64(&s, h->index);
  add_u64(&s, h->bytes);
  add_u8(&s, (uint8_t)code);
  add_u8(&s, (uint8_t)culprit);
  save("wire", name, &s, len);
}

static void wire_seeds(void) {
  struct tally_msg_header h = {.seq = 7,
                               .coll = TALLY_COLL_ALLREDUCE,
                               .datatype = TALLY_FLOAT32,
                               .op = TALLY_SUM,
                               .root = 0,
                               .count = 1000,
                               .index = 2,
                               .bytes = 4000};
  unsigned char got[TALLY_WIRE_HEADER_BYTES] = {0};
  wire_seed("genuine-all", 1, got, &h, TALLY_ERR_REMOTE, -1, 0); /* zero bytes: every genuine message as is */
  tally_header_encode(&h, got);
  wire_seed("header-valid", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  wire_seed("header-truncated", 1, got, &h, TALLY_ERR_REMOTE, -1, 12);
  struct tally_msg_header other = h;
  other.seq = 8;
  tally_header_encode(&other, got);
  wire_seed("header-seq-mismatch", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  other = h;
  other.coll = TALLY_COLL_REDUCE;
  other.root = 3;
  other.op = TALLY_MAX;
  tally_header_encode(&other, got);
  wire_seed("header-call-mismatch", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  other = h;
  other.coll = 200; /* out of every range: describe() must still name it */
  other.datatype = 99;
  other.op = 77;
  other.root = -2147483647 - 1;
  other.count = UINT64_MAX;
  tally_header_encode(&other, got);
  wire_seed("header-out-of-range", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  other = h;
  other.bytes = 1 << 20;
  tally_header_encode(&other, got);
  wire_seed("header-wrong-length", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  tally_header_encode(&h, got);
  got[11] = 1;
  wire_seed("header-nonzero-pad", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  memcpy(got, "GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789ab", sizeof got);
  wire_seed("header-garbage", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);

  tally_error_frame_encode(got, 7, 1, -1, TALLY_ERR_TIMEOUT);
  wire_seed("error-frame-no-culprit", 1, got, &h, TALLY_ERR_TIMEOUT, -1, 0);
  tally_error_frame_encode(got, 7, 1, 3, TALLY_ERR_MISMATCH);
  wire_seed("error-frame-culprit", 1, got, &h, TALLY_ERR_MISMATCH, 3, 0);
  tally_error_frame_encode(got, 7, 2, 3, TALLY_ERR_REMOTE);
  wire_seed("error-frame-wrong-sender", 1, got, &h, TALLY_ERR_REMOTE, 3, 0);
  tally_error_frame_encode(got, 7, 1, -5, TALLY_ERR_REMOTE);
  wire_seed("error-frame-bad-culprit", 1, got, &h, TALLY_ERR_REMOTE, -5, 0);
  tally_error_frame_encode(got, 7, 1, 0, TALLY_ERR_AUTH);
  wire_seed("error-frame-bad-code", 1, got, &h, TALLY_ERR_AUTH, 0, 0);

  tally_notice_encode(got, 7, 1);
  wire_seed("notice-valid", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
  got[39] = 1;
  wire_seed("notice-nonzero-pad", 1, got, &h, TALLY_ERR_REMOTE, -1, 0);
}

/* --- uid: the 128 bytes of a unique id (its first 19 also unpacked as an address) -------------- */

static void uid_seed(const char *name, const tally_unique_id_t *id, size_t len) {
  struct seed s = {.len = 0};
  add(&s, id->internal, sizeof id->internal);
  save("uid", name, &s, len);
}

static void uid_seeds(void) {
  struct tally_job_id job = {.root = ipv4("10.1.2.3", 29500), .authenticated = 1};
  for (int i = 0; i < TALLY_SECRET_BYTES; i++) job.secret[i] = (unsigned char)(0xa0 + i);
  tally_unique_id_t id;
  tally_uid_encode(&job, &id);
  uid_seed("ipv4-authenticated", &id, 0);
  uid_seed("truncated", &id, 20);
  tally_unique_id_t bad = id;
  bad.internal[0] = 'X';
  uid_seed("bad-magic", &bad, 0);
  bad = id;
  bad.internal[5] = 2;
  uid_seed("bad-version", &bad, 0);
  bad = id;
  bad.internal[6] = 3;
  uid_seed("bad-flags", &bad, 0);
  bad = id;
  bad.internal[100] = 1;
  uid_seed("nonzero-padding", &bad, 0);
  bad = id;
  bad.internal[7] = 5;
  uid_seed("bad-family", &bad, 0);
  bad = id;
  bad.internal[8] = bad.internal[9] = 0;
  uid_seed("port-zero", &bad, 0);
  job.root = ipv6("fe80::1:2:3", 1);
  job.authenticated = 0;
  memset(job.secret, 0, sizeof job.secret);
  tally_uid_encode(&job, &id);
  uid_seed("ipv6-unauthenticated", &id, 0);

  struct tally_grow_id grow = {.job = {.root = ipv4("10.1.2.4", 40000), .authenticated = 1},
                               .parent_id = 0x0123456789abcdefull,
                               .old_size = 7,
                               .nnew = 1};
  for (int i = 0; i < TALLY_SECRET_BYTES; i++) grow.job.secret[i] = (unsigned char)(0x30 + i);
  tally_uid_encode_grow(&grow, &id);
  uid_seed("grow-7-by-1", &id, 0);
  bad = id;
  bad.internal[127] = 1; /* past what a grow id uses */
  uid_seed("grow-nonzero-padding", &bad, 0);

  memset(&id, 0, sizeof id); /* bare packed addresses, for tally_net_unpack alone */
  struct tally_sockaddr v4 = ipv4("127.0.0.1", 65535), v6 = ipv6("::1", 443);
  tally_net_pack(&v4, (unsigned char *)id.internal);
  uid_seed("packed-ipv4", &id, TALLY_PACKED_ADDR_BYTES);
  tally_net_pack(&v6, (unsigned char *)id.internal);
  uid_seed("packed-ipv6", &id, TALLY_PACKED_ADDR_BYTES);
}

/* --- bootstrap: join payload, nranks, reply header, reply body ---------------------------------- */

static void bootstrap_seed(const char *name, const unsigned char *payload, int nranks, const unsigned char *reply,
                           size_t reply_len, size_t len) {
  struct seed s = {.len = 0};
  add(&s, payload, TALLY_AUTH_PAYLOAD_BYTES);
  add_u8(&s, (uint8_t)nranks);
  add(&s, reply, reply_len);
  save("bootstrap", name, &s, len);
}

/* A rank's entry as a rank would publish it: an address and a plausible topology record. */
static struct tally_peer_info sample_info(struct tally_sockaddr addr, int host) {
  struct tally_peer_info info;
  memset(&info, 0, sizeof info);
  info.addr = addr;
  info.topo.host_id = 0x1000 + (uint64_t)host;
  snprintf(info.topo.hostname, sizeof info.topo.hostname, "node%d", host);
  info.topo.numa_node = 0;
  info.topo.numa_nodes = 2;
  info.topo.cores = 8;
  info.topo.pus = 16;
  info.topo.first_pu = 0;
  info.topo.last_pu = 15;
  info.topo.n_ifaces = 1;
  snprintf(info.topo.ifaces[0].name, sizeof info.topo.ifaces[0].name, "eth0");
  info.topo.ifaces[0].families = TALLY_TOPO_IPV4;
  info.topo.ifaces[0].numa_node = 1;
  info.topo.ifaces[0].speed_mbps = 100000;
  info.topo.nearest_iface = 0;
  return info;
}

static void bootstrap_seeds(void) {
  enum { NRANKS = 4 };
  struct tally_peer_info me = sample_info(ipv4("192.168.0.9", 40000), 0);
  unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], table[NRANKS * TALLY_BOOTSTRAP_ENTRY_BYTES];
  unsigned char reply[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES + NRANKS * TALLY_BOOTSTRAP_ENTRY_BYTES];
  for (int r = 0; r < NRANKS; r++) {
    struct tally_peer_info peer =
        sample_info(r % 2 ? ipv6("2001:db8::7", 40000 + r) : ipv4("192.168.0.9", 40000 + r), r / 2);
    tally_bootstrap_encode_entry(&peer, table + r * TALLY_BOOTSTRAP_ENTRY_BYTES);
  }
  tally_bootstrap_encode_join(1, NRANKS, &me, payload);
  size_t ok_len = tally_bootstrap_reply_bytes(NRANKS, 0), fail_len = tally_bootstrap_reply_bytes(NRANKS, 1);
  tally_bootstrap_encode_reply(reply, NRANKS, 0x1122334455667788ull, table, NULL);
  bootstrap_seed("valid-table", payload, NRANKS, reply, ok_len, 0);
  bootstrap_seed("truncated-table", payload, NRANKS, reply, ok_len, TALLY_AUTH_PAYLOAD_BYTES + 1 + ok_len - 10);
  bootstrap_seed("nranks-mismatch", payload, NRANKS + 1, reply, ok_len, 0);
  reply[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES + 2 * TALLY_BOOTSTRAP_ENTRY_BYTES] = 9; /* rank 2's address family */
  bootstrap_seed("invalid-address", payload, NRANKS, reply, ok_len, 0);
  tally_bootstrap_encode_reply(reply, NRANKS, 42, table, NULL);
  reply[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES + TALLY_BOOTSTRAP_ENTRY_BYTES + 2 * TALLY_PACKED_ADDR_BYTES] = 'X';
  bootstrap_seed("invalid-topology", payload, NRANKS, reply, ok_len, 0); /* rank 1's record magic */
  tally_bootstrap_encode_reply(reply, NRANKS, 42, table, NULL);
  reply[7] = 2; /* status */
  bootstrap_seed("bad-status", payload, NRANKS, reply, ok_len, 0);
  tally_bootstrap_encode_reply(reply, NRANKS, 42, table, NULL);
  reply[0] = 'X';
  bootstrap_seed("bad-magic", payload, NRANKS, reply, ok_len, 0);
  tally_bootstrap_encode_reply(reply, NRANKS, 42, NULL, "only 3 of 4 ranks joined the bootstrap; missing: 2");
  bootstrap_seed("failure-text", payload, NRANKS, reply, fail_len, 0);
  memset(reply + TALLY_BOOTSTRAP_REPLY_HEADER_BYTES, 'A', TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES); /* no terminator */
  bootstrap_seed("failure-text-unterminated", payload, NRANKS, reply, fail_len, 0);

  memset(reply, 0, sizeof reply);
  bootstrap_seed("join-only-truncated", payload, 0, reply, 0, 30);
  tally_bootstrap_encode_join(NRANKS, NRANKS, &me, payload);
  bootstrap_seed("join-rank-too-big", payload, 0, reply, 0, 0);
  tally_bootstrap_encode_join(0, 0, &me, payload);
  bootstrap_seed("join-no-ranks", payload, 0, reply, 0, 0);
  tally_bootstrap_encode_join(0, TALLY_BOOTSTRAP_MAX_RANKS + 1, &me, payload);
  bootstrap_seed("join-too-many-ranks", payload, 0, reply, 0, 0);
  tally_bootstrap_encode_join(-1, -1, &me, payload);
  bootstrap_seed("join-negative", payload, 0, reply, 0, 0);
  struct tally_peer_info v6 = sample_info(ipv6("::1", 5000), 3);
  tally_bootstrap_encode_join(TALLY_BOOTSTRAP_MAX_RANKS - 1, TALLY_BOOTSTRAP_MAX_RANKS, &v6, payload);
  bootstrap_seed("join-ipv6-last-rank", payload, 0, reply, 0, 0);
  payload[8] = 0; /* address family */
  bootstrap_seed("join-bad-address", payload, 0, reply, 0, 0);
  tally_bootstrap_encode_join(2, NRANKS, &me, payload);
  payload[8 + TALLY_PACKED_ADDR_BYTES + 4] = 9; /* topology record version */
  bootstrap_seed("join-bad-topology", payload, 0, reply, 0, 0);
  tally_bootstrap_encode_join(2, NRANKS, &me, payload);
  payload[TALLY_AUTH_PAYLOAD_BYTES - 1] = 1; /* beyond the entry, where only zeros belong */
  bootstrap_seed("join-junk-after-entry", payload, 0, reply, 0, 0);
}

/* --- auth: purpose, hello, challenge, proof, two bit positions ---------------------------------- */

static void auth_seed(const char *name, uint16_t purpose, const unsigned char *hello, const unsigned char *challenge,
                      const unsigned char *proof, unsigned challenge_bit, unsigned proof_bit, size_t len) {
  struct seed s = {.len = 0};
  unsigned char p[2] = {(unsigned char)(purpose >> 8), (unsigned char)purpose};
  add(&s, p, sizeof p);
  add(&s, hello, TALLY_AUTH_HELLO_BYTES);
  add(&s, challenge, TALLY_AUTH_CHALLENGE_BYTES);
  add(&s, proof, TALLY_AUTH_PROOF_BYTES);
  unsigned char bits[4] = {(unsigned char)(challenge_bit >> 8), (unsigned char)challenge_bit,
                           (unsigned char)(proof_bit >> 8), (unsigned char)proof_bit};
  add(&s, bits, sizeof bits);
  save("auth", name, &s, len);
}

static void auth_seeds(void) {
  const unsigned char key[TALLY_SECRET_BYTES] = FUZZ_AUTH_KEY;
  unsigned char other_key[TALLY_SECRET_BYTES] = FUZZ_AUTH_KEY;
  other_key[15] ^= 0x80;
  unsigned char nonce_c[TALLY_AUTH_NONCE_BYTES], nonce_s[TALLY_AUTH_NONCE_BYTES], payload[TALLY_AUTH_PAYLOAD_BYTES];
  for (int i = 0; i < TALLY_AUTH_NONCE_BYTES; i++) {
    nonce_c[i] = (unsigned char)i;
    nonce_s[i] = (unsigned char)~i;
  }
  struct tally_peer_info joiner = sample_info(ipv4("10.0.0.2", 30000), 1);
  tally_bootstrap_encode_join(1, 2, &joiner, payload);
  unsigned char hello[TALLY_AUTH_HELLO_BYTES], challenge[TALLY_AUTH_CHALLENGE_BYTES], proof[TALLY_AUTH_PROOF_BYTES];
  for (uint16_t purpose = TALLY_PURPOSE_BOOTSTRAP; purpose <= TALLY_PURPOSE_DATA; purpose++) {
    tally_auth_hello_make(purpose, nonce_c, hello);
    tally_auth_challenge_make(key, hello, purpose, nonce_s, challenge);
    tally_auth_proof_make(key, hello, challenge, purpose, payload, proof);
    auth_seed(purpose == TALLY_PURPOSE_DATA ? "exchange-data" : "exchange-bootstrap", purpose, hello, challenge, proof,
              0, 0, 0);
  }
  auth_seed("exchange-flip-mac-bits", TALLY_PURPOSE_DATA, hello, challenge, proof, 8 * 40 + 3, 8 * 31 + 7, 0);
  auth_seed("exchange-flip-payload", TALLY_PURPOSE_DATA, hello, challenge, proof, 8 * 10, 8 * 100, 0);
  auth_seed("wrong-purpose", TALLY_PURPOSE_BOOTSTRAP, hello, challenge, proof, 0, 0, 0);
  auth_seed("truncated-proof", TALLY_PURPOSE_DATA, hello, challenge, proof, 0, 0,
            2 + TALLY_AUTH_HELLO_BYTES + TALLY_AUTH_CHALLENGE_BYTES + 40);
  unsigned char forged[TALLY_AUTH_CHALLENGE_BYTES];
  tally_auth_challenge_make(other_key, hello, TALLY_PURPOSE_DATA, nonce_s, forged);
  auth_seed("challenge-wrong-key", TALLY_PURPOSE_DATA, hello, forged, proof, 0, 0, 0);
  tally_auth_proof_make(other_key, hello, challenge, TALLY_PURPOSE_DATA, payload, proof);
  auth_seed("proof-wrong-key", TALLY_PURPOSE_DATA, hello, challenge, proof, 0, 0, 0);
  hello[5] = 2; /* version */
  auth_seed("hello-other-version", TALLY_PURPOSE_DATA, hello, challenge, proof, 0, 0, 0);
  memcpy(hello, "GET / HTTP/1.0\r\n\r\nxxxxxx", sizeof hello);
  auth_seed("hello-garbage", TALLY_PURPOSE_DATA, hello, challenge, proof, 0, 0, 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIRECTORY (fuzz/corpus)\n", argv[0]);
    return 2;
  }
  corpus_dir = argv[1];
  wire_seeds();
  uid_seeds();
  bootstrap_seeds();
  auth_seeds();
  return 0;
}
