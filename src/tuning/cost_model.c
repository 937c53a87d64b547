/* The alpha-beta-gamma formulas of cost_model.h and the choice of the cheapest allowed algorithm.
 * Every formula is built from step(): one message, optionally reduced by its receiver. */
#include "cost_model.h"

/* One message of `bytes` (reduced by the receiver when `reduce`), as in the header's step(m). */
static double step(const struct tally_cost_params *m, double bytes, int reduce) {
  return m->alpha_us + bytes * m->beta_us_per_byte + (reduce ? bytes * m->gamma_us_per_byte : 0.0);
}

/* The largest power of two <= p (p >= 1). */
static int power_of_two_below(int p) {
  int p2 = 1;
  while (p2 <= p / 2) p2 *= 2;
  return p2;
}

/* ceil(log2(p+1)): the levels of a balanced binary tree of p ranks. */
static int tree_levels(int p) {
  int d = 0;
  for (long reach = 1; reach <= p; reach *= 2) d++;
  return d;
}

/* `bytes` sent in max(1, ceil(bytes/chunk)) equal chunks down a pipeline of `hops` hops: the first
 * chunk arrives after `hops` steps, each later one a step after it. */
static double pipeline(const struct tally_cost_params *m, int hops, size_t bytes, size_t chunk_bytes, int reduce) {
  size_t k = chunk_bytes && bytes > chunk_bytes ? 1 + (bytes - 1) / chunk_bytes : 1;
  return (double)((size_t)hops + k - 1) * step(m, (double)bytes / (double)k, reduce);
}

/* Every rank on one link class: the flat layout. */
static struct tally_cost_layout flat(const struct tally_cost_params *m) { return (struct tally_cost_layout){m, m, 1}; }

/* The link a round between ranks `distance` apart takes (struct tally_cost_layout). */
static struct tally_cost_params round_link(const struct tally_cost_layout *h, int distance) {
  if (distance < h->per_host) return *h->local;
  struct tally_cost_params shared = *h->net;
  shared.beta_us_per_byte *= h->per_host;
  return shared;
}

/* One round between ranks `distance` apart: step() on its link. */
static double round_step(const struct tally_cost_layout *h, int distance, double bytes, int reduce) {
  struct tally_cost_params m = round_link(h, distance);
  return step(&m, bytes, reduce);
}

/* The rounds of recursive halving among p2 ranks (a power of two): messages of bytes/2, bytes/4,
 * ..., bytes/p2 between ranks p2/2, p2/4, ..., 1 apart. Recursive doubling sends the same sizes
 * between the same ranks in the opposite order. */
static double halving_rounds(const struct tally_cost_layout *h, int p2, size_t bytes, int reduce) {
  double t = 0, size = (double)bytes;
  for (int distance = p2 / 2; distance >= 1; distance /= 2) {
    size /= 2;
    t += round_step(h, distance, size, reduce);
  }
  return t;
}

/* For p not a power of two: the step that folds the extra ranks into their partners (`in` bytes,
 * reduced when `reduce_in`) and the one that serves them at the end (`out` bytes); 0 otherwise. */
static double fold_extra_ranks(const struct tally_cost_layout *h, int p, int p2, double in, int reduce_in,
                               double out) {
  return p == p2 ? 0.0 : round_step(h, 1, in, reduce_in) + round_step(h, 1, out, 0);
}

double tally_cost_ring_reduce_scatter(const struct tally_cost_params *m, int p, size_t bytes) {
  return (p - 1) * step(m, (double)bytes / p, 1);
}

double tally_cost_ring_allgather(const struct tally_cost_params *m, int p, size_t bytes) {
  return (p - 1) * step(m, (double)bytes / p, 0);
}

double tally_cost_ring_allreduce(const struct tally_cost_params *m, int p, size_t bytes) {
  return tally_cost_ring_reduce_scatter(m, p, bytes) + tally_cost_ring_allgather(m, p, bytes);
}

double tally_cost_chain_broadcast(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes) {
  return pipeline(m, p - 1, bytes, chunk_bytes, 0);
}

double tally_cost_chain_reduce(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes) {
  return pipeline(m, p - 1, bytes, chunk_bytes, 1);
}

double tally_cost_rhd_reduce_scatter(const struct tally_cost_params *m, int p, size_t bytes) {
  int p2 = power_of_two_below(p);
  double s = (double)bytes;
  struct tally_cost_layout h = flat(m);
  return fold_extra_ranks(&h, p, p2, s, 1, s / p) + halving_rounds(&h, p2, bytes, 1);
}

double tally_cost_rhd_allgather(const struct tally_cost_params *m, int p, size_t bytes) {
  int p2 = power_of_two_below(p);
  double s = (double)bytes;
  struct tally_cost_layout h = flat(m);
  return fold_extra_ranks(&h, p, p2, s / p, 0, s) + halving_rounds(&h, p2, bytes, 0);
}

double tally_cost_rhd_allreduce_on(const struct tally_cost_layout *h, int p, size_t bytes) {
  int p2 = power_of_two_below(p);
  double s = (double)bytes;
  return fold_extra_ranks(h, p, p2, s, 1, s) + halving_rounds(h, p2, bytes, 1) + halving_rounds(h, p2, bytes, 0);
}

double tally_cost_rd_allreduce_on(const struct tally_cost_layout *h, int p, size_t bytes) {
  int p2 = power_of_two_below(p);
  double s = (double)bytes, t = fold_extra_ranks(h, p, p2, s, 1, s);
  for (int distance = 1; distance < p2; distance *= 2) t += round_step(h, distance, s, 1);
  return t;
}

double tally_cost_rhd_allreduce(const struct tally_cost_params *m, int p, size_t bytes) {
  struct tally_cost_layout h = flat(m);
  return tally_cost_rhd_allreduce_on(&h, p, bytes);
}

double tally_cost_rd_allreduce(const struct tally_cost_params *m, int p, size_t bytes) {
  struct tally_cost_layout h = flat(m);
  return tally_cost_rd_allreduce_on(&h, p, bytes);
}

int tally_cost_rd_beats_rhd_on(const struct tally_cost_layout *h, int p, size_t bytes) {
  return tally_cost_rd_allreduce_on(h, p, bytes) < tally_cost_rhd_allreduce_on(h, p, bytes);
}

double tally_cost_rhd_allreduce_as_run_on(const struct tally_cost_layout *h, int p, size_t bytes) {
  return tally_cost_rd_beats_rhd_on(h, p, bytes) ? tally_cost_rd_allreduce_on(h, p, bytes)
                                                 : tally_cost_rhd_allreduce_on(h, p, bytes);
}

int tally_cost_rd_beats_rhd(const struct tally_cost_params *m, int p, size_t bytes) {
  struct tally_cost_layout h = flat(m);
  return tally_cost_rd_beats_rhd_on(&h, p, bytes);
}

/* Both trees at once (see the header): k = ceil((S/2)/C) chunks per tree, a rank's link carries one
 * chunk of each per step, 2c = S/k bytes: the same as one pipeline of S in chunks of 2C. */
static double double_tree(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes, int reduce) {
  return pipeline(m, tree_levels(p), bytes, 2 * chunk_bytes, reduce);
}

double tally_cost_tree_broadcast(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes) {
  return double_tree(m, p, bytes, chunk_bytes, 0);
}

double tally_cost_tree_reduce(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes) {
  return double_tree(m, p, bytes, chunk_bytes, 1);
}

double tally_cost_tree_allreduce(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes) {
  return tally_cost_tree_reduce(m, p, bytes, chunk_bytes) + tally_cost_tree_broadcast(m, p, bytes, chunk_bytes);
}

/* `n` messages of `bytes` each posted together by one rank: the first pays alpha, each further one
 * its posting cost; the bytes share the rank's link. */
static double posted_together(const struct tally_cost_params *m, int n, double bytes) {
  return m->alpha_us + (n - 1) * m->alpha_us * TALLY_COST_POSTING_SHARE + n * bytes * m->beta_us_per_byte;
}

double tally_cost_pairwise_alltoall(const struct tally_cost_params *m, int p, size_t bytes) {
  return posted_together(m, p - 1, (double)bytes / p);
}

double tally_cost_bruck_alltoall(const struct tally_cost_params *m, int p, size_t bytes) {
  double block = (double)bytes / p, t = 2 * (double)bytes * m->beta_us_per_byte; /* the two rotations */
  for (int k = 1; k < p; k *= 2) {
    int blocks = 0;
    for (int i = k; i < p; i++) blocks += (i & k) != 0;
    t += step(m, blocks * block, 0);
  }
  return t;
}

double tally_cost_direct_gather(const struct tally_cost_params *m, int p, size_t bytes) {
  return posted_together(m, p - 1, (double)bytes / p);
}

double tally_cost_binomial_gather(const struct tally_cost_params *m, int p, size_t bytes) {
  double block = (double)bytes / p, t = (double)bytes * m->beta_us_per_byte; /* the root's copy in tree order */
  for (int k = 1; k < p; k *= 2) t += step(m, (k < p - k ? k : p - k) * block, 0);
  return t;
}

double tally_cost_shared(const struct tally_cost_params *m, enum tally_coll coll, int p, size_t bytes,
                         size_t area_bytes) {
  double S = (double)bytes, copy = TALLY_COST_SHARED_COPY_SHARE * m->beta_us_per_byte;
  double reduce = (double)(p - 1) / p * S * m->gamma_us_per_byte;
  size_t per_round = coll == TALLY_COLL_ALLGATHER ? bytes / (size_t)p : bytes;
  double meet = TALLY_COST_MEET_SHARE * m->alpha_us;
  double meets = 2.0 * (double)((per_round + area_bytes - 1) / area_bytes) * meet;
  switch (coll) {
    case TALLY_COLL_ALLREDUCE: return meets + (2 * S - S / p) * copy + reduce;
    case TALLY_COLL_REDUCE_SCATTER: return meets + (S - S / p) * copy + reduce;
    case TALLY_COLL_ALLGATHER: return meets + (S / p + S) * copy;
    case TALLY_COLL_BROADCAST: return meets / 2 + meet + (S + (double)(bytes < area_bytes ? bytes : area_bytes)) * copy;
    case TALLY_COLL_ALLTOALL: { /* rounds of half an area, one meet each */
      size_t half = area_bytes / 2;
      return (double)((bytes + half - 1) / half) * meet + 2 * S * copy;
    }
    default: return TALLY_COST_NOT_MODELLED;
  }
}

double tally_cost_shared_single_copy(const struct tally_cost_params *m, int p, size_t bytes) {
  double meets = 2 * TALLY_COST_MEET_SHARE * m->alpha_us;
  double reads = (p - 1) * TALLY_COST_SINGLE_COPY_READ_SHARE * m->alpha_us;
  return meets + reads + (double)(p - 1) / p * (double)bytes * TALLY_COST_SINGLE_COPY_SHARE * m->beta_us_per_byte;
}

static double predict_ring(enum tally_coll coll, int p, size_t bytes, const struct tally_cost_params *m, size_t c) {
  switch (coll) {
    case TALLY_COLL_ALLREDUCE: return tally_cost_ring_allreduce(m, p, bytes);
    case TALLY_COLL_ALLGATHER: return tally_cost_ring_allgather(m, p, bytes);
    case TALLY_COLL_REDUCE_SCATTER: return tally_cost_ring_reduce_scatter(m, p, bytes);
    case TALLY_COLL_BROADCAST: return tally_cost_chain_broadcast(m, p, bytes, c);
    case TALLY_COLL_REDUCE: return tally_cost_chain_reduce(m, p, bytes, c);
    default: return TALLY_COST_NOT_MODELLED;
  }
}

static double predict_rhd(enum tally_coll coll, int p, size_t bytes, const struct tally_cost_params *m) {
  switch (coll) {
    case TALLY_COLL_ALLREDUCE: { /* rhd.c runs whichever variant is cheaper */
      struct tally_cost_layout h = flat(m);
      return tally_cost_rhd_allreduce_as_run_on(&h, p, bytes);
    }
    case TALLY_COLL_ALLGATHER: return tally_cost_rhd_allgather(m, p, bytes);
    case TALLY_COLL_REDUCE_SCATTER: return tally_cost_rhd_reduce_scatter(m, p, bytes);
    default: return TALLY_COST_NOT_MODELLED;
  }
}

static double predict_tree(enum tally_coll coll, int p, size_t bytes, const struct tally_cost_params *m, size_t c) {
  switch (coll) {
    case TALLY_COLL_ALLREDUCE: return tally_cost_tree_allreduce(m, p, bytes, c);
    case TALLY_COLL_BROADCAST: return tally_cost_tree_broadcast(m, p, bytes, c);
    case TALLY_COLL_REDUCE: return tally_cost_tree_reduce(m, p, bytes, c);
    default: return TALLY_COST_NOT_MODELLED;
  }
}

/* The formula for `algo` running `coll`, or TALLY_COST_NOT_MODELLED. */
static double predict_nontrivial(enum tally_algo_id algo, enum tally_coll coll, int p, size_t bytes,
                                 const struct tally_cost_params *m, size_t chunk_bytes) {
  switch (algo) {
    case TALLY_ALGO_RING: return predict_ring(coll, p, bytes, m, chunk_bytes);
    case TALLY_ALGO_RHD: return predict_rhd(coll, p, bytes, m);
    case TALLY_ALGO_TREE: return predict_tree(coll, p, bytes, m, chunk_bytes);
    case TALLY_ALGO_PAIRWISE:
      return coll == TALLY_COLL_ALLTOALL ? tally_cost_pairwise_alltoall(m, p, bytes) : TALLY_COST_NOT_MODELLED;
    case TALLY_ALGO_BRUCK:
      return coll == TALLY_COLL_ALLTOALL ? tally_cost_bruck_alltoall(m, p, bytes) : TALLY_COST_NOT_MODELLED;
    case TALLY_ALGO_DIRECT:
      return coll == TALLY_COLL_GATHER || coll == TALLY_COLL_SCATTER ? tally_cost_direct_gather(m, p, bytes)
                                                                    : TALLY_COST_NOT_MODELLED;
    case TALLY_ALGO_BINOMIAL:
      return coll == TALLY_COLL_GATHER || coll == TALLY_COLL_SCATTER ? tally_cost_binomial_gather(m, p, bytes)
                                                                    : TALLY_COST_NOT_MODELLED;
    default: return TALLY_COST_NOT_MODELLED;
  }
}

double tally_cost_predict(enum tally_algo_id algo, enum tally_coll coll, int p, size_t bytes,
                          const struct tally_cost_params *m, size_t chunk_bytes) {
  int trivial = p <= 1 || bytes == 0;
  /* A trivial call still asks the formula (with p = 2, which every formula accepts) whether it exists. */
  double t = predict_nontrivial(algo, coll, trivial ? 2 : p, bytes, m, chunk_bytes);
  return trivial && t != TALLY_COST_NOT_MODELLED ? 0.0 : t;
}

enum tally_algo_id tally_cost_choose(enum tally_coll coll, unsigned allowed, int p, size_t bytes,
                                     const struct tally_cost_params *m, size_t chunk_bytes,
                                     double predicted_us[TALLY_NUM_ALGOS]) {
  double ignored[TALLY_NUM_ALGOS];
  if (!predicted_us) predicted_us = ignored;
  enum tally_algo_id best = TALLY_NUM_ALGOS;
  for (int a = 0; a < TALLY_NUM_ALGOS; a++) {
    predicted_us[a] = (allowed & TALLY_ALGO_BIT(a))
                          ? tally_cost_predict((enum tally_algo_id)a, coll, p, bytes, m, chunk_bytes)
                          : TALLY_COST_NOT_MODELLED;
    if (predicted_us[a] != TALLY_COST_NOT_MODELLED && (best == TALLY_NUM_ALGOS || predicted_us[a] < predicted_us[best]))
      best = (enum tally_algo_id)a;
  }
  return best;
}
