/* Double binary tree allreduce, broadcast and reduce (Sanders, Speck and Träff 2009; NCCL's tree):
 * the two complementary trees of dbtree.h each carry half of the vector, cut into chunks that
 * stream through the tree, so latency grows with the depth (about log2 p) rather than with p, and
 * since every rank is an inner node of at most one tree, each link carries about S per phase.
 *
 *   allreduce  up each tree:   a rank reduces its children's chunk j into its own (first child,
 *                              then second, so the bits never depend on timing) and sends the
 *                              partial to its parent; the root's chunk is then final (divided by p
 *                              for AVG)
 *              down each tree: the final chunk j flows from the root back to every rank
 *   reduce     the up phase; each tree's root then sends its half of the result to the root R of
 *              the call (unless it is R)
 *   broadcast  R sends half t to the root of tree t (unless it is that root), which sends it down
 *              tree t; R's own parent skips it
 *
 *        tree 0 (half 0)              tree 1 (half 1)           p = 8, allreduce: chunk j goes up
 *          3-------7                  0-------4                 both trees and back down; chunk
 *        /   \                              /   \               j+1 follows one step behind
 *      1       5                          2       6
 *     / \     / \                        / \     / \
 *    0   2   4   6                      1   3   5   7
 *
 * Several flows may share one connection (a rank can be a child in one tree and the parent in the
 * other of the same peer). Both ends order the messages of a connection the same way: message
 * (chunk j, stage, tree) goes at slot j for the stages that go up or out of a root (root hop, up),
 * at slot j + LAG for those coming back (down, result hop), and within a slot by stage, then tree.
 * Every message depends only on messages earlier in that order (or on the same one further along
 * the tree), so posting each connection's messages in order cannot deadlock; the lag keeps LAG
 * chunks moving up a connection while earlier ones come back down it, and the two trees' first
 * chunks never wait for each other. Rooted calls need a connection between every rank and the two
 * tree roots; the communicator makes them at init when it has at most TALLY_TREE_ROOTED_MAX_RANKS
 * ranks (see src/comm/links.c).
 *
 * Compressed calls (desc->wire, TALLY_COMPRESS): on a connection to or from another host every
 * chunk travels as 16-bit values: a send is packed into one of its lane's slots, a child's partial
 * lands in its staging slot and is widened as it is added, and any other receive lands in one of
 * its lane's slots and is widened into place. Each tree's root rounds its final chunks once before
 * they go down, so every rank ends with the same bits. */
#include <stdio.h>
#include <string.h>

#include "algorithm.h"
#include "core/error.h"
#include "core/reduce.h"
#include "core/wire.h"
#include "dbtree.h"

enum { WINDOW = 64, STAGING_SLOTS = 4, MAX_LINKS = 8, MAX_FLOWS = 4, LAG = 8 };

/* Stages in per-connection order. */
enum stage { STAGE_ROOT_HOP, STAGE_UP, STAGE_DOWN, STAGE_RESULT_HOP };

/* One direction of one tree's traffic with one peer: a message per chunk. */
struct flow {
  int tree, stage, child; /* child: which of this rank's children (receives from children only) */
};

/* A message of a lane: flow index and chunk. */
struct message {
  int flow, chunk;
};

/* A connection direction to one peer and the flows it carries, sorted by stage, then tree. */
struct lane {
  int peer;
  struct tally_link link;
  int nflows;
  struct flow flows[MAX_FLOWS];
  size_t posted, done, total;
  int slot, next_flow; /* the next message to post, in the order of the header comment */
  enum tally_wire_format wire; /* the call's format when the peer is on another host, else exact */
  char *wire_slots;            /* compressed lanes: STAGING_SLOTS packed chunks (sends, and receives
                                  other than a child's partial) */
  struct message sent[WINDOW];
  struct tally_request req[WINDOW];
};

/* This rank's part in one tree. */
struct node {
  struct tally_dbtree_node shape;
  int root;        /* the tree's root */
  size_t off, len; /* the half this tree carries, in elements */
  int arrived[2];  /* up: chunks landed in staging, per child */
  int reduced[2];  /* up: chunks reduced into the partial, per child */
  int final;       /* chunks holding their final value at this rank */
  int received;    /* chunks received from the parent or over a root hop */
};

struct tree_run {
  struct tally_comm *comm;
  const struct tally_coll_desc *d;
  struct tally_msg_header proto;
  size_t esize;
  int nchunks;
  size_t chunk_elems; /* of the longer half */
  const char *own;    /* this rank's contribution */
  char *acc;          /* partial and final results */
  char *staging;      /* [tree][child][slot], each chunk_elems */
  struct node node[2];
  struct lane sends[MAX_LINKS], recvs[MAX_LINKS];
  int nsends, nrecvs;
};

static int up_phase(const struct tally_coll_desc *d) { return d->coll != TALLY_COLL_BROADCAST; }
static int down_phase(const struct tally_coll_desc *d) { return d->coll != TALLY_COLL_REDUCE; }

/* Chunk j of tree t: element offset (in the whole vector) and length. */
static void chunk_of(const struct tree_run *run, int t, int j, size_t *off, size_t *len) {
  size_t o;
  tally_ring_block(run->nchunks, j, run->node[t].len, &o, len);
  *off = run->node[t].off + o;
}

static tally_result_t add_flow(struct tree_run *run, int sending, int peer, struct flow f) {
  struct lane *lanes = sending ? run->sends : run->recvs;
  int *n = sending ? &run->nsends : &run->nrecvs;
  int i = 0;
  while (i < *n && lanes[i].peer != peer) i++;
  if (i == *n && *n == MAX_LINKS)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "tree: rank %d needs more than %d connections", run->comm->rank, MAX_LINKS);
  if (i == *n) {
    struct tally_link link = sending ? run->comm->to[peer] : run->comm->from[peer];
    if (!link.ops)
      return TALLY_ERROR(TALLY_ERR_INTERNAL, "tree: rank %d has no connection %s rank %d", run->comm->rank,
                         sending ? "to" : "from", peer);
    struct lane *fresh = &lanes[(*n)++]; /* its requests are set up when posted: no need to clear them */
    fresh->peer = peer, fresh->link = link, fresh->nflows = 0;
    fresh->posted = fresh->done = 0, fresh->slot = fresh->next_flow = 0;
  }
  struct lane *lane = &lanes[i];
  if (lane->nflows == MAX_FLOWS)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "tree: rank %d has more than %d flows with rank %d", run->comm->rank,
                       MAX_FLOWS, peer);
  int at = lane->nflows++; /* keep (stage, tree) order */
  while (at > 0 && (lane->flows[at - 1].stage > f.stage ||
                    (lane->flows[at - 1].stage == f.stage && lane->flows[at - 1].tree > f.tree))) {
    lane->flows[at] = lane->flows[at - 1];
    at--;
  }
  lane->flows[at] = f;
  lane->total = (size_t)lane->nflows * (size_t)run->nchunks;
  return TALLY_SUCCESS;
}

static int lag(const struct flow *f) { return f->stage >= STAGE_DOWN ? LAG : 0; }

/* The lane's next message to post (lane->posted < lane->total). */
static struct message next_message(const struct tree_run *run, const struct lane *lane) {
  int slot = lane->slot, i = lane->next_flow;
  for (;;) {
    int j = slot - lag(&lane->flows[i]);
    if (j >= 0 && j < run->nchunks) return (struct message){i, j};
    if (++i == lane->nflows) i = 0, slot++;
  }
}

/* Records that `m`, the lane's next message, was posted with `req`. */
static tally_result_t post(struct tree_run *run, struct lane *lane, struct message m, int sending) {
  struct tally_request *req = &lane->req[lane->posted % WINDOW];
  TALLY_CHECK(sending ? tally_link_isend(run->comm, &lane->link, req) : tally_link_irecv(run->comm, &lane->link, req));
  lane->sent[lane->posted % WINDOW] = m;
  lane->posted++;
  lane->slot = m.chunk + lag(&lane->flows[m.flow]);
  lane->next_flow = m.flow + 1;
  if (lane->next_flow == lane->nflows) lane->next_flow = 0, lane->slot++;
  return TALLY_SUCCESS;
}

/* The flows of tree t at this rank, for a call rooted at R (allreduce: the tree's own root). */
static tally_result_t plan_tree(struct tree_run *run, int t) {
  const struct tally_coll_desc *d = run->d;
  struct node *nd = &run->node[t];
  int me = run->comm->rank, R = d->coll == TALLY_COLL_ALLREDUCE ? nd->root : d->root;
  const struct tally_dbtree_node *s = &nd->shape;
  if (up_phase(d)) {
    for (int c = 0; c < s->nchildren; c++) TALLY_CHECK(add_flow(run, 0, s->child[c], (struct flow){t, STAGE_UP, c}));
    if (s->parent >= 0) TALLY_CHECK(add_flow(run, 1, s->parent, (struct flow){t, STAGE_UP, 0}));
    if (R != nd->root && me == nd->root) TALLY_CHECK(add_flow(run, 1, R, (struct flow){t, STAGE_RESULT_HOP, 0}));
    if (R != nd->root && me == R) TALLY_CHECK(add_flow(run, 0, nd->root, (struct flow){t, STAGE_RESULT_HOP, 0}));
  }
  if (down_phase(d)) {
    for (int c = 0; c < s->nchildren; c++)
      if (s->child[c] != R || d->coll == TALLY_COLL_ALLREDUCE)
        TALLY_CHECK(add_flow(run, 1, s->child[c], (struct flow){t, STAGE_DOWN, c}));
    if (s->parent >= 0 && (me != R || d->coll == TALLY_COLL_ALLREDUCE))
      TALLY_CHECK(add_flow(run, 0, s->parent, (struct flow){t, STAGE_DOWN, 0}));
    if (d->coll == TALLY_COLL_BROADCAST && R != nd->root && me == R)
      TALLY_CHECK(add_flow(run, 1, nd->root, (struct flow){t, STAGE_ROOT_HOP, 0}));
    if (d->coll == TALLY_COLL_BROADCAST && R != nd->root && me == nd->root)
      TALLY_CHECK(add_flow(run, 0, R, (struct flow){t, STAGE_ROOT_HOP, 0}));
  }
  /* What is final from the start: the broadcast's data at its root. */
  if (d->coll == TALLY_COLL_BROADCAST && me == R) nd->final = run->nchunks;
  return TALLY_SUCCESS;
}

/* How many chunks of tree t the partial of this rank is complete for (its children reduced in). */
static int partial_ready(const struct tree_run *run, int t) {
  const struct node *nd = &run->node[t];
  if (nd->shape.nchildren == 0) return run->nchunks;
  return nd->reduced[nd->shape.nchildren - 1];
}

/* How many chunks of `f` may be sent. */
static int sendable(const struct tree_run *run, const struct flow *f) {
  const struct node *nd = &run->node[f->tree];
  switch (f->stage) {
    case STAGE_UP: return partial_ready(run, f->tree);
    case STAGE_ROOT_HOP: return run->nchunks;
    default: return nd->final; /* down, result hop */
  }
}

static void *at(const struct tree_run *run, const void *base, size_t off) { return (char *)base + off * run->esize; }

static char *staging_slot(const struct tree_run *run, int t, int child, int j) {
  size_t slot = ((size_t)t * 2 + (size_t)child) * STAGING_SLOTS + (size_t)(j % STAGING_SLOTS);
  return run->staging + slot * run->chunk_elems * run->esize;
}

static void fill_request(const struct tree_run *run, struct lane *lane, void *buf, size_t len) {
  struct tally_request *req = &lane->req[lane->posted % WINDOW];
  req->buf = buf;
  req->len = len;
  req->hdr = run->proto;
  req->hdr.index = lane->posted;
}

/* How many messages a lane may have in flight: a compressed one, as many as it has slots. */
static size_t lane_window(const struct lane *lane) { return lane->wire ? STAGING_SLOTS : WINDOW; }

/* The slot of a compressed lane's message number `index`. */
static char *wire_slot(const struct tree_run *run, const struct lane *lane, size_t index) {
  return lane->wire_slots + (index % STAGING_SLOTS) * run->chunk_elems * 2;
}

static tally_result_t post_sends(struct tree_run *run, int *moved) {
  for (int i = 0; i < run->nsends; i++) {
    struct lane *lane = &run->sends[i];
    while (lane->done < lane->posted && lane->req[lane->done % WINDOW].done) {
      tally_link_done(run->comm, &lane->link, &lane->req[lane->done % WINDOW], 1);
      lane->done++, *moved = 1;
    }
    while (lane->posted < lane->total && lane->posted < lane->done + lane_window(lane)) {
      struct message m = next_message(run, lane);
      const struct flow *f = &lane->flows[m.flow];
      if (m.chunk >= sendable(run, f)) break;
      size_t off, len;
      chunk_of(run, f->tree, m.chunk, &off, &len);
      int from_own = f->stage == STAGE_UP && run->node[f->tree].shape.nchildren == 0;
      const float *data = at(run, from_own ? run->own : run->acc, off);
      if (lane->wire) {
        char *packed = wire_slot(run, lane, lane->posted);
        tally_wire_pack(packed, data, len, lane->wire);
        fill_request(run, lane, packed, len * 2);
      } else {
        fill_request(run, lane, (void *)data, len * run->esize);
      }
      TALLY_CHECK(post(run, lane, m, 1));
      *moved = 1;
    }
  }
  return TALLY_SUCCESS;
}

static tally_result_t post_recvs(struct tree_run *run, int *moved) {
  for (int i = 0; i < run->nrecvs; i++) {
    struct lane *lane = &run->recvs[i];
    while (lane->posted < lane->total && lane->posted < lane->done + lane_window(lane)) {
      struct message m = next_message(run, lane);
      const struct flow *f = &lane->flows[m.flow];
      const struct node *nd = &run->node[f->tree];
      if (f->stage == STAGE_UP && m.chunk >= nd->reduced[f->child] + STAGING_SLOTS) break; /* no free slot */
      size_t off, len;
      chunk_of(run, f->tree, m.chunk, &off, &len);
      void *dst = f->stage == STAGE_UP ? staging_slot(run, f->tree, f->child, m.chunk)
                  : lane->wire         ? wire_slot(run, lane, lane->posted)
                                       : at(run, run->acc, off);
      fill_request(run, lane, dst, len * (lane->wire ? 2 : run->esize));
      TALLY_CHECK(post(run, lane, m, 0));
      *moved = 1;
    }
  }
  return TALLY_SUCCESS;
}

/* Counts the receives that completed, in each connection's order. */
static void finish_recvs(struct tree_run *run, int *moved) {
  for (int i = 0; i < run->nrecvs; i++) {
    struct lane *lane = &run->recvs[i];
    while (lane->done < lane->posted && lane->req[lane->done % WINDOW].done) {
      struct message m = lane->sent[lane->done % WINDOW];
      const struct flow *f = &lane->flows[m.flow];
      struct node *nd = &run->node[f->tree];
      if (lane->wire && f->stage != STAGE_UP) { /* widened into place; a child's partial as it is added */
        size_t off, len;
        chunk_of(run, f->tree, m.chunk, &off, &len);
        tally_wire_unpack(at(run, run->acc, off), wire_slot(run, lane, lane->done), len, lane->wire);
      }
      if (f->stage == STAGE_UP)
        nd->arrived[f->child]++;
      else
        nd->received++;
      tally_link_done(run->comm, &lane->link, &lane->req[lane->done % WINDOW], 0);
      lane->done++;
      *moved = 1;
    }
  }
}

/* Reduces what arrived from the children, in child order, and marks chunks final: at a tree's
 * root once reduced (divided by p for AVG), elsewhere once received from the parent or hop. */
static void advance(struct tree_run *run, int *moved) {
  const struct tally_coll_desc *d = run->d;
  for (int t = 0; t < 2; t++) {
    struct node *nd = &run->node[t];
    for (int c = 0; c < nd->shape.nchildren; c++)
      while (nd->reduced[c] < nd->arrived[c] && (c == 0 || nd->reduced[c] < nd->reduced[c - 1])) {
        int j = nd->reduced[c];
        size_t off, len;
        chunk_of(run, t, j, &off, &len);
        const void *mine = c == 0 ? at(run, run->own, off) : at(run, run->acc, off);
        if (d->wire && tally_comm_across_hosts(run->comm, nd->shape.child[c]))
          tally_wire_unpack_add(at(run, run->acc, off), mine, staging_slot(run, t, c, j), len, d->wire);
        else
          tally_reduce_apply(at(run, run->acc, off), staging_slot(run, t, c, j), mine, len, d->datatype, d->op);
        nd->reduced[c]++;
        *moved = 1;
      }
    int is_root = nd->shape.parent < 0;
    if (d->coll == TALLY_COLL_BROADCAST) {
      if (nd->received > nd->final) nd->final = nd->received;
    } else if (is_root) {
      while (nd->final < partial_ready(run, t)) {
        size_t off, len;
        chunk_of(run, t, nd->final, &off, &len);
        if (d->op == TALLY_AVG) tally_reduce_finish_avg(at(run, run->acc, off), len, d->datatype, run->comm->nranks);
        if (d->wire) /* what goes down is exact in 16 bits: every rank gets these bits */
          tally_wire_round(at(run, run->acc, off), len, d->wire);
        nd->final++;
        *moved = 1;
      }
    } else if (d->coll == TALLY_COLL_ALLREDUCE) {
      nd->final = nd->received;
    }
  }
}

static int finished(const struct tree_run *run) {
  for (int i = 0; i < run->nsends; i++)
    if (run->sends[i].done < run->sends[i].total) return 0;
  for (int i = 0; i < run->nrecvs; i++)
    if (run->recvs[i].done < run->recvs[i].total) return 0;
  for (int t = 0; t < 2 && up_phase(run->d); t++)
    if (partial_ready(run, t) < run->nchunks) return 0;
  return 1;
}

/* The receive this rank has waited on longest: the peer to name when it times out. */
static const struct lane *oldest_recv(const struct tree_run *run) {
  for (int i = 0; i < run->nrecvs; i++)
    if (run->recvs[i].done < run->recvs[i].total) return &run->recvs[i];
  return NULL;
}

static tally_result_t failed(struct tree_run *run, const struct tally_waiter *w, tally_result_t r) {
  struct tally_comm *comm = run->comm;
  const struct lane *lane = oldest_recv(run);
  char peer[96] = "no rank", where[256];
  if (lane) tally_comm_rank_text(comm, lane->peer, peer, sizeof peer);
  snprintf(where, sizeof where, "rank %d, %s #%u (tree): %s", comm->rank, tally_coll_name(run->d->coll), comm->seq,
           tally_error_message());
  if (!w->timed_out) return TALLY_ERROR(r, "%s (waiting for %s)", where, peer);
  int blame = lane && !lane->req[lane->done % WINDOW].peer_waiting;
  tally_error_blame(blame ? lane->peer : -1);
  return TALLY_ERROR(TALLY_ERR_TIMEOUT, "%s; it heard nothing from %s (received %zu of %zu messages from it)%s", where,
                     peer, lane ? lane->done : 0, lane ? lane->total : 0,
                     blame ? ": that rank is stuck, dead, or has not made this call" : ", which was waiting itself");
}

static tally_result_t setup(struct tree_run *run) {
  struct tally_comm *comm = run->comm;
  const struct tally_coll_desc *d = run->d;
  size_t bytes = d->count * run->esize;
  size_t half = d->count - d->count / 2;
  size_t chunk_elems = tally_chunk_bytes(comm, d) / run->esize;
  if (chunk_elems == 0) chunk_elems = 1;
  run->nchunks = (int)((half + chunk_elems - 1) / chunk_elems);
  if (run->nchunks == 0) run->nchunks = 1;
  run->chunk_elems = (half + (size_t)run->nchunks - 1) / (size_t)run->nchunks;
  for (int t = 0; t < 2; t++) {
    struct node *nd = &run->node[t];
    tally_dbtree_node(comm->nranks, comm->rank, t, &nd->shape);
    nd->root = tally_dbtree_root(comm->nranks, t);
    tally_ring_block(2, t, d->count, &nd->off, &nd->len);
  }
  run->own = d->sendbuf;
  run->acc = d->recvbuf;
  if (d->coll == TALLY_COLL_REDUCE && comm->rank != d->root) {
    TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, bytes));
    run->acc = comm->scratch;
  }
  if (d->coll == TALLY_COLL_BROADCAST) {
    if (comm->rank == d->root && d->sendbuf != d->recvbuf) memcpy(d->recvbuf, d->sendbuf, bytes);
    run->own = d->recvbuf;
  }
  tally_header_fill(&run->proto, d, comm->seq);
  for (int t = 0; t < 2; t++) TALLY_CHECK(plan_tree(run, t));
  /* [tree][child][slot] for the children's partials, then each compressed lane's slots */
  size_t children = 2 * 2 * STAGING_SLOTS * run->chunk_elems * run->esize;
  size_t lane_slots = STAGING_SLOTS * run->chunk_elems * 2, compressed = 0;
  for (int i = 0; i < run->nsends + run->nrecvs; i++) {
    struct lane *lane = i < run->nsends ? &run->sends[i] : &run->recvs[i - run->nsends];
    lane->wire = d->wire && tally_comm_across_hosts(comm, lane->peer) ? (enum tally_wire_format)d->wire
                                                                      : TALLY_WIRE_EXACT;
    compressed += lane->wire != TALLY_WIRE_EXACT;
  }
  TALLY_CHECK(tally_comm_buffer(&comm->staging, &comm->staging_bytes, children + compressed * lane_slots));
  run->staging = comm->staging;
  char *next_slots = run->staging + children;
  for (int i = 0; i < run->nsends + run->nrecvs; i++) {
    struct lane *lane = i < run->nsends ? &run->sends[i] : &run->recvs[i - run->nsends];
    lane->wire_slots = lane->wire ? next_slots : NULL;
    if (lane->wire) next_slots += lane_slots;
  }
  return TALLY_SUCCESS;
}

int tally_tree_suits(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (!comm->tree_ready) return 0;
  if (d->coll == TALLY_COLL_ALLREDUCE) return 1;
  return (d->coll == TALLY_COLL_BROADCAST || d->coll == TALLY_COLL_REDUCE) && comm->tree_rooted_ready;
}

static tally_result_t tree_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (!tally_tree_suits(comm, d))
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "the double binary tree cannot run %s on this communicator",
                       tally_coll_name(d->coll));
  struct tree_run run; /* fields set one by one: clearing the lanes' request arrays would cost more than a
                         small call's messages */
  run.comm = comm;
  run.d = d;
  run.esize = tally_datatype_size(d->datatype);
  run.nsends = run.nrecvs = 0;
  memset(run.node, 0, sizeof run.node);
  TALLY_CHECK(setup(&run));
  struct tally_waiter waiter;
  tally_waiter_start(comm, &comm->world, &run.proto, &waiter);
  while (!finished(&run)) {
    int moved = 0;
    tally_result_t r = post_recvs(&run, &moved);
    if (r == TALLY_SUCCESS) r = post_sends(&run, &moved);
    const struct lane *lane = oldest_recv(&run);
    waiter.upstream_waiting = lane && lane->done < lane->posted && lane->req[lane->done % WINDOW].peer_waiting;
    if (r == TALLY_SUCCESS) r = tally_comm_progress(comm, &waiter, &moved);
    if (r == TALLY_SUCCESS) {
      finish_recvs(&run, &moved);
      advance(&run, &moved);
    }
    if (r != TALLY_SUCCESS) return failed(&run, &waiter, r);
  }
  return TALLY_SUCCESS;
}

const struct tally_algorithm tally_tree_algorithm = {.name = "tree", .id = TALLY_ALGO_TREE, .run = tree_run};

int tally_tree_partners(int rank, int nranks, int rooted, int *partners) {
  int n = 0;
  for (int t = 0; t < 2; t++) {
    struct tally_dbtree_node s;
    tally_dbtree_node(nranks, rank, t, &s);
    if (s.parent >= 0) partners[n++] = s.parent;
    for (int c = 0; c < s.nchildren; c++) partners[n++] = s.child[c];
  }
  if (!rooted) return n;
  for (int t = 0; t < 2; t++) {
    int root = tally_dbtree_root(nranks, t);
    if (root != rank) {
      partners[n++] = root;
    } else {
      for (int r = 0; r < nranks; r++)
        if (r != rank) partners[n++] = r;
    }
  }
  return n;
}
