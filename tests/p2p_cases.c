/* The point-to-point test bodies the transports' suites share (p2p_cases.h): byte patterns that
 * name their sender, receiver and message, and the exchange, alltoall and rooted cases. */
#define _GNU_SOURCE
#include "p2p_cases.h"

#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Byte i of message `msg` from rank `src` to rank `dst`. */
static unsigned char pattern(int src, int dst, int msg, size_t i) {
  return (unsigned char)(src * 31 + dst * 17 + msg * 7 + (int)(i * 13 % 251));
}

void p2p_fill(void *buf, size_t bytes, int src, int dst, int msg) {
  for (size_t i = 0; i < bytes; i++) ((unsigned char *)buf)[i] = pattern(src, dst, msg, i);
}

/* 0, or 1 after saying where `buf` differs from the pattern. */
int p2p_check(int rank, const char *what, const void *buf, size_t bytes, int src, int dst, int msg) {
  for (size_t i = 0; i < bytes; i++)
    if (((const unsigned char *)buf)[i] != pattern(src, dst, msg, i))
      return harness_fail(rank, "%s: byte %zu of message %d from rank %d to %d is %u, not %u", what, i, msg, src, dst,
                          ((const unsigned char *)buf)[i], pattern(src, dst, msg, i));
  return 0;
}

static const tally_datatype_t all_types[] = {TALLY_INT8,   TALLY_UINT8,   TALLY_INT32,    TALLY_UINT32,  TALLY_INT64,
                                             TALLY_UINT64, TALLY_FLOAT16, TALLY_BFLOAT16, TALLY_FLOAT32, TALLY_FLOAT64};
#define NTYPES (sizeof all_types / sizeof all_types[0])
static const size_t counts[] = {0, 1, 7, 1021, 65537};
#define NCOUNTS (sizeof counts / sizeof counts[0])

/* Each rank sends to the next and receives from the previous, in a group (every rank sends first),
 * for every datatype and count; then outside a group, even ranks sending first. */
int p2p_ring_exchange(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int next = (rank + 1) % n, prev = (rank + n - 1) % n, bad = 0, msg = 0;
  for (size_t t = 0; t < NTYPES && !bad; t++)
    for (size_t c = 0; c < NCOUNTS && !bad; c++, msg++) {
      size_t bytes = counts[c] * tally_datatype_size(all_types[t]);
      unsigned char *out = malloc(bytes + 1), *in = malloc(bytes + 1);
      p2p_fill(out, bytes, rank, next, msg);
      memset(in, 0xee, bytes + 1);
      tally_result_t r = tally_group_start();
      if (r == TALLY_SUCCESS) r = tally_send(out, counts[c], all_types[t], next, comm, NULL);
      if (r == TALLY_SUCCESS) r = tally_recv(in, counts[c], all_types[t], prev, comm, NULL);
      tally_result_t end = tally_group_end();
      if (r != TALLY_SUCCESS || end != TALLY_SUCCESS)
        bad = harness_fail(rank, "group %d: %s", msg, tally_comm_last_error(comm));
      bad = bad || p2p_check(rank, "group", in, bytes, prev, rank, msg);
      if (!bad && in[bytes] != 0xee) bad = harness_fail(rank, "recv wrote past its %zu bytes", bytes);
      free(out);
      free(in);
    }
  for (int round = 0; round < 3 && !bad && n > 1; round++, msg++) { /* blocking, 4 MiB: more than a socket holds */
    size_t bytes = (size_t)4 << 20;
    unsigned char *out = malloc(bytes), *in = malloc(bytes);
    p2p_fill(out, bytes, rank, next, msg);
    tally_result_t r1, r2;
    if (rank % 2 == 0 || n % 2 == 1) {
      /* odd ring sizes: rank n-1 and rank 0 are both even-first; rank 0 receives first there */
      if (rank == 0 && n % 2 == 1) {
        r1 = tally_recv(in, bytes, TALLY_UINT8, prev, comm, NULL);
        r2 = tally_send(out, bytes, TALLY_UINT8, next, comm, NULL);
      } else {
        r1 = tally_send(out, bytes, TALLY_UINT8, next, comm, NULL);
        r2 = tally_recv(in, bytes, TALLY_UINT8, prev, comm, NULL);
      }
    } else {
      r1 = tally_recv(in, bytes, TALLY_UINT8, prev, comm, NULL);
      r2 = tally_send(out, bytes, TALLY_UINT8, next, comm, NULL);
    }
    if (r1 != TALLY_SUCCESS || r2 != TALLY_SUCCESS)
      bad = harness_fail(rank, "blocking round %d: %s", round, tally_comm_last_error(comm));
    bad = bad || p2p_check(rank, "blocking", in, bytes, prev, rank, msg);
    free(out);
    free(in);
  }
  float x = 1; /* the collectives still line up afterwards */
  if (!bad && tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "allreduce after point-to-point: %s", tally_comm_last_error(comm));
  if (!bad && x != (float)n) bad = harness_fail(rank, "allreduce after point-to-point gave %g", x);
  return bad;
}

/* alltoall of every datatype for each of `ncounts` counts, in and out of place: block j of rank i's
 * input is message c from i to j (c the count's index plus `first_msg`). */
static int alltoall_counts(tally_comm_t comm, int rank, int n, const size_t *counts_used, size_t ncounts,
                           int first_msg) {
  int bad = 0;
  for (size_t t = 0; t < NTYPES && !bad; t++)
    for (size_t i = 0; i < ncounts && !bad; i++)
      for (int in_place = 0; in_place < 2 && !bad; in_place++) {
        size_t count = counts_used[i], block = count * tally_datatype_size(all_types[t]);
        int c = first_msg + (int)i;
        unsigned char *send = malloc(block * (size_t)n + 1), *recv = in_place ? send : malloc(block * (size_t)n + 1);
        for (int j = 0; j < n; j++) p2p_fill(send + (size_t)j * block, block, rank, j, c);
        if (!in_place) memset(recv, 0xee, block * (size_t)n + 1);
        tally_result_t r = tally_alltoall(send, recv, count, all_types[t], comm, NULL);
        if (r != TALLY_SUCCESS) bad = harness_fail(rank, "alltoall: %s", tally_comm_last_error(comm));
        for (int j = 0; j < n && !bad; j++)
          bad = p2p_check(rank, "alltoall", recv + (size_t)j * block, block, j, rank, c);
        if (!bad && !in_place && recv[block * (size_t)n] != 0xee) bad = harness_fail(rank, "alltoall overran");
        if (!in_place) free(recv);
        free(send);
      }
  return bad;
}

int p2p_alltoall_large_cases(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  /* blocks of 20 KB to 560 KB: several rounds of the board's areas on 8 ranks, one on 2, and the
   * single-copy form from 128 KiB a block */
  static const size_t large[] = {20001, 70001};
  return alltoall_counts(comm, rank, n, large, sizeof large / sizeof large[0], 50);
}

/* Block j of rank i's input is message i*n+j from i to j. */
int p2p_alltoall_cases(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int bad = alltoall_counts(comm, rank, n, counts, NCOUNTS - 1, 0);
  /* alltoallv: rank i sends (i + 2 j) % 5 elements to rank j (zero counts included), packed in
   * reverse rank order with gaps, so displacements matter */
  for (size_t t = 0; t < NTYPES && !bad; t++) {
    size_t es = tally_datatype_size(all_types[t]);
    size_t *sc = calloc((size_t)n, sizeof *sc), *sd = calloc((size_t)n, sizeof *sd);
    size_t *rc = calloc((size_t)n, sizeof *rc), *rd = calloc((size_t)n, sizeof *rd), stotal = 0, rtotal = 0;
    for (int j = n - 1; j >= 0; j--) {
      sc[j] = (size_t)((rank + 2 * j) % 5), sd[j] = stotal, stotal += sc[j] + 1;
      rc[j] = (size_t)((j + 2 * rank) % 5), rd[j] = rtotal, rtotal += rc[j] + 2;
    }
    unsigned char *send = malloc(stotal * es), *recv = malloc(rtotal * es);
    for (int j = 0; j < n; j++) p2p_fill(send + sd[j] * es, sc[j] * es, rank, j, 100);
    if (tally_alltoallv(send, sc, sd, recv, rc, rd, all_types[t], comm, NULL) != TALLY_SUCCESS)
      bad = harness_fail(rank, "alltoallv: %s", tally_comm_last_error(comm));
    for (int j = 0; j < n && !bad; j++) bad = p2p_check(rank, "alltoallv", recv + rd[j] * es, rc[j] * es, j, rank, 100);
    free(send), free(recv), free(sc), free(sd), free(rc), free(rd);
  }
  return bad;
}

int p2p_rooted_cases(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int bad = 0;
  for (int root = 0; root < n && !bad; root++)
    for (size_t c = 0; c < NCOUNTS && !bad; c++)
      for (int in_place = 0; in_place < 2 && !bad; in_place++) {
        tally_datatype_t t = all_types[(root + c) % NTYPES];
        size_t block = counts[c] * tally_datatype_size(t);
        unsigned char *all = malloc(block * (size_t)n + 1), *mine = malloc(block + 1);
        /* gather: in place at the root, its block already sits at its place in recvbuf */
        p2p_fill(mine, block, rank, root, (int)c);
        if (rank == root && in_place) p2p_fill(all + (size_t)root * block, block, rank, root, (int)c);
        const void *send = rank == root && in_place ? all + (size_t)root * block : mine;
        if (tally_gather(send, rank == root ? all : NULL, counts[c], t, root, comm, NULL) != TALLY_SUCCESS)
          bad = harness_fail(rank, "gather to %d: %s", root, tally_comm_last_error(comm));
        for (int j = 0; j < n && rank == root && !bad; j++)
          bad = p2p_check(rank, "gather", all + (size_t)j * block, block, j, root, (int)c);
        /* scatter: block j of the root's input goes to rank j */
        if (rank == root)
          for (int j = 0; j < n; j++) p2p_fill(all + (size_t)j * block, block, root, j, (int)c + 50);
        void *into = rank == root && in_place ? all + (size_t)root * block : mine;
        if (!bad && tally_scatter(rank == root ? all : NULL, into, counts[c], t, root, comm, NULL) != TALLY_SUCCESS)
          bad = harness_fail(rank, "scatter from %d: %s", root, tally_comm_last_error(comm));
        if (!bad) bad = p2p_check(rank, "scatter", into, block, root, rank, (int)c + 50);
        free(all);
        free(mine);
      }
  return bad;
}
