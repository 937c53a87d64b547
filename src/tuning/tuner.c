/* Algorithm selection. For each call the tuner lists the algorithms that TALLY_ALGO allows, that
 * are implemented for the collective and that can run on this communicator (their connections
 * exist, the rank count suits them), asks the cost model (cost_model.h) for each one's time with
 * the communicator's measured link parameters (comm->link_cost, calibrate.h), and runs the fastest.
 *   - board: small allreduces, allgathers, reduce-scatters, broadcasts, alltoalls and barriers on a single
 *            host run on the shared-memory board first whenever it suits them (one round; the
 *            model does not cover it);
 *   - shared: on a single host with a board, priced with the area's size as its round
 *            (cost_model.h) against the local link's ring, tree and halving-doubling (alltoall:
 *            against pairwise and Bruck, in the form shared.c will run, areas or single copy);
 *   - two ranks on one host, each on a core of its own: where the FIFO algorithms were measured
 *            ahead of the shared areas, which the model cannot see, the one measured fastest
 *            (measured_for_two_ranks);
 *   - flat algorithms (ring, tree) are costed on the slowest link they cross: the network's
 *     parameters when the job spans several hosts, else the local ones;
 *   - rhd round by round where hosts of equal power-of-two size run consecutive ranks: the near
 *     rounds on the local link, the far ones on the network shared by the host's ranks;
 *   - hier is costed as its phases: within hosts on the local parameters, across them on the
 *     network's, each cross-host ring carrying 1/L of the data over the host's one link.
 *   - compressed calls (TALLY_COMPRESS, FLOAT32 sums and averages, allgathers and broadcasts of at
 *            least TALLY_COMPRESS_MIN_BYTES on a job across hosts): the algorithms that compress
 *            (ring, rhd, hier, tree; the board runs on one host only) are priced with a network
 *            byte at half its cost plus one pass of conversion (compressed_costs).
 * Every input is the same on every rank, so every rank picks the same algorithm. */
#include <stdio.h>
#include <string.h>

#include "tuner.h"

#include "algorithms/board.h"
#include "algorithms/shared.h"
#include "core/error.h"
#include "core/log.h"
#include "core/reduce.h"

static const struct tally_algorithm *const algorithms[TALLY_NUM_ALGOS] = {
    [TALLY_ALGO_RING] = &tally_ring_algorithm, [TALLY_ALGO_TREE] = &tally_tree_algorithm,
    [TALLY_ALGO_RHD] = &tally_rhd_algorithm,   [TALLY_ALGO_HIER] = &tally_hier_algorithm,
    [TALLY_ALGO_BOARD] = &tally_board_algorithm, [TALLY_ALGO_PAIRWISE] = &tally_pairwise_algorithm,
    [TALLY_ALGO_BRUCK] = &tally_bruck_algorithm,   [TALLY_ALGO_DIRECT] = &tally_direct_algorithm,
    [TALLY_ALGO_BINOMIAL] = &tally_binomial_algorithm, [TALLY_ALGO_SHARED] = &tally_shared_algorithm};

/* The algorithms implemented for each collective (the ring runs all but alltoall, gather and scatter,
 * which have their own). */
static unsigned implemented(enum tally_coll coll) {
  unsigned ring = TALLY_ALGO_BIT(TALLY_ALGO_RING), hier = TALLY_ALGO_BIT(TALLY_ALGO_HIER);
  unsigned tree = TALLY_ALGO_BIT(TALLY_ALGO_TREE), rhd = TALLY_ALGO_BIT(TALLY_ALGO_RHD);
  unsigned shared = TALLY_ALGO_BIT(TALLY_ALGO_SHARED), board = TALLY_ALGO_BIT(TALLY_ALGO_BOARD);
  switch (coll) {
    case TALLY_COLL_ALLREDUCE: return ring | tree | rhd | hier | board | shared;
    case TALLY_COLL_ALLGATHER:
    case TALLY_COLL_REDUCE_SCATTER: return ring | hier | rhd | board | shared;
    case TALLY_COLL_BROADCAST: return ring | tree | board | shared;
    case TALLY_COLL_REDUCE: return ring | tree;
    case TALLY_COLL_BARRIER: return ring | board;
    case TALLY_COLL_ALLTOALL:
      return TALLY_ALGO_BIT(TALLY_ALGO_PAIRWISE) | TALLY_ALGO_BIT(TALLY_ALGO_BRUCK) | hier | board | shared;
    case TALLY_COLL_GATHER:
    case TALLY_COLL_SCATTER: return TALLY_ALGO_BIT(TALLY_ALGO_DIRECT) | TALLY_ALGO_BIT(TALLY_ALGO_BINOMIAL);
    default: return ring;
  }
}

/* What TALLY_ALGO lets `coll` use of what is implemented for it. Alltoall, gather and scatter have
 * algorithms of their own: a part that does not name them and leaves them none of theirs (such as
 * TALLY_ALGO=ring) leaves them on auto. */
static unsigned allowed(const struct tally_algo_spec *spec, enum tally_coll coll) {
  if ((unsigned)coll >= TALLY_NUM_COLLS) return 0;
  unsigned mine = implemented(coll), ok = spec->allowed[coll] & mine;
  int own_algorithms = coll == TALLY_COLL_ALLTOALL || coll == TALLY_COLL_GATHER || coll == TALLY_COLL_SCATTER;
  return !ok && own_algorithms && !(spec->named & (1u << coll)) ? mine : ok;
}

int tally_tuner_may_use(const struct tally_config *cfg, enum tally_algo_id algo) {
  for (int c = 0; c < TALLY_NUM_COLLS; c++)
    if (allowed(&cfg->algo, (enum tally_coll)c) & TALLY_ALGO_BIT(algo)) return 1;
  return 0;
}

int tally_tuner_plan_partners(struct tally_comm *comm, int *partners) {
  int npartners = 0;
  comm->rhd_ready = tally_tuner_may_use(&comm->cfg, TALLY_ALGO_RHD);
  if (comm->rhd_ready) npartners = tally_rhd_partners(comm->rank, comm->nranks, partners);
  comm->tree_ready = tally_tuner_may_use(&comm->cfg, TALLY_ALGO_TREE);
  comm->tree_rooted_ready = comm->tree_ready && comm->nranks <= TALLY_TREE_ROOTED_MAX_RANKS;
  if (comm->tree_ready)
    npartners += tally_tree_partners(comm->rank, comm->nranks, comm->tree_rooted_ready, partners + npartners);
  return npartners;
}

/* The algorithms that send compressed data (the pipeline's, pipeline.h, and the tree's own). */
static int compresses(enum tally_algo_id algo) {
  return algo == TALLY_ALGO_RING || algo == TALLY_ALGO_RHD || algo == TALLY_ALGO_HIER || algo == TALLY_ALGO_TREE;
}

/* Whether `algo` can run `d` on this communicator. */
static int can_run(const struct tally_comm *comm, const struct tally_coll_desc *d, enum tally_algo_id algo) {
  switch (algo) {
    case TALLY_ALGO_RING: return 1;
    case TALLY_ALGO_TREE: return tally_tree_suits(comm, d);
    case TALLY_ALGO_RHD: return comm->rhd_ready && tally_rhd_suits(comm, d);
    case TALLY_ALGO_BOARD: return tally_board_suits(comm, d);
    case TALLY_ALGO_SHARED: return tally_shared_suits(comm, d);
    case TALLY_ALGO_HIER:
      if (comm->local.size == 0) return 0;
      if (d->coll == TALLY_COLL_ALLTOALL) return comm->hosts_in_rank_order && comm->topo.nhosts > 1;
      return d->coll == TALLY_COLL_ALLREDUCE ||
             ((d->coll == TALLY_COLL_ALLGATHER || d->coll == TALLY_COLL_REDUCE_SCATTER) && comm->hosts_in_rank_order);
    case TALLY_ALGO_PAIRWISE:
    case TALLY_ALGO_BRUCK:
    case TALLY_ALGO_DIRECT:
    case TALLY_ALGO_BINOMIAL: return 1; /* implemented() says for which collectives */
    default: return 0;
  }
}

/* S in the cost model's sense: the vector, or the whole of allgather's output / reduce-scatter's input,
 * alltoall's sendbuf, gather's and scatter's buffer at the root. */
static size_t model_bytes(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t bytes = d->count * tally_datatype_size(d->datatype);
  int blocked = d->coll != TALLY_COLL_ALLREDUCE && d->coll != TALLY_COLL_BROADCAST && d->coll != TALLY_COLL_REDUCE &&
                d->coll != TALLY_COLL_BARRIER;
  return blocked ? bytes * (size_t)comm->nranks : bytes;
}

/* Two ranks on one host, each on a core of its own: where the FIFO algorithms were measured ahead of
 * the shared areas, which the model cannot tell apart (its alpha, beta and gamma know nothing of
 * caches). At 2 ranks the areas save no copies: an allgather or a broadcast copies as many bytes
 * through them as through a FIFO; and a FIFO's few slots stay in cache where the areas, 256 KiB a
 * rank and one for the results, may not. So where the FIFO wins depends on the host's last-level
 * cache C (comm->cache_bytes) and on how far apart the two cores are (comm->board->cores_apart,
 * timed when the board opens, or TALLY_CORES_APART). `tally-perf COLL --sweep -N 2`, the time of
 * the algorithm named over the areas', on this 2-core VM on three hosts:
 *   C = 32 MiB (2 to 5 sweeps each, 2026-12-05, the cores' distance not known): allreduce, tree
 *     0.69-1.01 from 256 KiB to 2 MiB (1.03-1.11 at 128 KiB, 0.97-1.07 at 4 MiB); allgather,
 *     halving-doubling 0.73-1.02 from 64 KiB to 4 MiB (about even at 8 MiB); broadcast, tree
 *     0.47-1.04 from 32 KiB to 16 MiB;
 *   C = 8 MiB (2 sweeps each, 64 KiB to 64 MiB, a later session): allgather, halving-doubling
 *     1.08-1.23 from 64 to 256 KiB, 0.91-1.00 at 512 KiB, 1.22-2.0 from 1 to 4 MiB; broadcast,
 *     tree 0.70-0.95 up to 1 MiB, 1.64-2.07 at 2 and 4 MiB;
 *   C = 8 MiB, 1 MiB of L2 a core (2026-12-06, areas that reduce each rank's own slice from its
 *     sendbuf; 8 sweeps, 64 KiB to 2 MiB, core-pingpong before each): allreduce, where the vCPUs
 *     were far apart (a round trip of 486-507 ns, 7 sweeps), the ring 0.75-0.96 up to 512 KiB
 *     (the best of ring, halving-doubling and tree 0.69-0.95), 0.97-1.02 at 1 MiB, 1.16-1.32 at
 *     2 MiB; where they were near (182 ns, 1 sweep), the ring 1.42-2.16 and the tree 1.53-1.88 from
 *     64 KiB to 2 MiB. Four later sweeps far apart (462-486 ns) had the ring even with the areas
 *     up to 512 KiB (0.77-1.21, median 1.00): the cores' distance is not all the host varies.
 * Hence the ring for allreduces up to C/16 where the cores are far apart (and the areas where they
 * are near), halving-doubling for allgathers up to C/16 (on the larger cache that gives 2 to 4 MiB
 * to the areas, about even there; on the smaller one the areas are ahead below 512 KiB too, which
 * no threshold on C fits to both; but where the areas read the blocks in one copy,
 * tally_shared_allgather_single_copy, they beat both), and the tree for broadcasts below where the
 * areas stream (tally_shared_streams, C/2 for both ranks' outputs: then they broadcast 1.41-1.54x
 * as fast as the tree, 8 to 64 MiB on the larger cache).
 * TALLY_NUM_ALGOS: the model chooses. */
static enum tally_algo_id measured_for_two_ranks(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (comm->nranks != 2 || !comm->board || comm->cores_shared) return TALLY_NUM_ALGOS;
  size_t S = model_bytes(comm, d), fits = comm->cache_bytes / 16;
  switch (d->coll) {
    case TALLY_COLL_ALLREDUCE:
      return comm->board->cores_apart && S <= fits ? TALLY_ALGO_RING : TALLY_NUM_ALGOS;
    case TALLY_COLL_ALLGATHER:
      return tally_shared_allgather_single_copy(comm, d) ? TALLY_ALGO_SHARED : S <= fits ? TALLY_ALGO_RHD
                                                                                          : TALLY_NUM_ALGOS;
    case TALLY_COLL_BROADCAST: return tally_shared_streams(comm, S) ? TALLY_NUM_ALGOS : TALLY_ALGO_TREE;
    default: return TALLY_NUM_ALGOS;
  }
}

int tally_tuner_wire_format(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  int reduces = (d->coll == TALLY_COLL_ALLREDUCE || d->coll == TALLY_COLL_REDUCE_SCATTER) &&
                (d->op == TALLY_SUM || d->op == TALLY_AVG);
  int spreads = d->coll == TALLY_COLL_ALLGATHER || d->coll == TALLY_COLL_BROADCAST;
  if (comm->cfg.compress == TALLY_WIRE_EXACT || comm->topo.nhosts < 2 || d->datatype != TALLY_FLOAT32 ||
      !(reduces || spreads) || model_bytes(comm, d) < comm->cfg.compress_min_bytes)
    return TALLY_WIRE_EXACT;
  return comm->cfg.compress;
}

/* The link costs a compressed call pays: on the network half the bytes, each converted once at
 * each end (packing costs about one pass over the data, like a reduction; the receiver's widening
 * is folded into the reduction it does anyway). Shared memory carries fp32 as it is. */
static void compressed_costs(const struct tally_comm *comm, struct tally_cost_params out[TALLY_NUM_LINK_CLASSES]) {
  memcpy(out, comm->link_cost, sizeof comm->link_cost);
  struct tally_cost_params *net = &out[TALLY_LINK_NET];
  net->beta_us_per_byte = net->beta_us_per_byte / 2 + comm->link_cost[TALLY_LINK_SHM].gamma_us_per_byte;
}

/* The hierarchical schedule's phases (hier.c): within the host on L ranks, across the m hosts on
 * L rings that share the host's link. */
static double predict_hier(const struct tally_comm *comm, const struct tally_cost_params *costs, enum tally_coll coll,
                           size_t S) {
  const struct tally_cost_params *local = &costs[TALLY_LINK_SHM], *net = &costs[TALLY_LINK_NET];
  int L = comm->local.size, m = comm->cross.size;
  struct tally_cost_params shared = *net; /* one of L rings on the host's link */
  shared.beta_us_per_byte *= L;
  size_t piece = S / (size_t)L;
  switch (coll) {
    case TALLY_COLL_ALLREDUCE:
      return tally_cost_ring_reduce_scatter(local, L, S) + tally_cost_ring_allreduce(&shared, m, piece) +
             tally_cost_ring_allgather(local, L, S);
    case TALLY_COLL_ALLGATHER:
      return tally_cost_ring_allgather(local, L, S / (size_t)m) + tally_cost_ring_allgather(&shared, m, piece) +
             tally_cost_ring_allgather(local, L, S - S / (size_t)m);
    case TALLY_COLL_REDUCE_SCATTER:
      return tally_cost_ring_reduce_scatter(local, L, S - S / (size_t)m) +
             tally_cost_ring_reduce_scatter(&shared, m, piece) + tally_cost_ring_reduce_scatter(local, L, S / (size_t)m);
    case TALLY_COLL_ALLTOALL: /* L-1 local messages of m blocks, copied in and out; m-1 of L blocks on the network */
      return tally_cost_pairwise_alltoall(local, L, S) + 2 * (double)S * local->beta_us_per_byte +
             tally_cost_pairwise_alltoall(&shared, m, S);
    default: return TALLY_COST_NOT_MODELLED;
  }
}

/* The parameters flat algorithms are costed with: the network's when the job spans several hosts
 * (every step waits for its slowest hop), else the local ones. */
static const struct tally_cost_params *flat_link(const struct tally_comm *comm, const struct tally_cost_params *costs) {
  return &costs[comm->topo.nhosts > 1 ? TALLY_LINK_NET : TALLY_LINK_SHM];
}

static int power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

/* What halving-doubling's rounds cross (cost_model.h): hosts of L consecutive ranks when the job
 * spans hosts that each run L ranks in rank order, L and p powers of two (then its rounds between
 * near ranks stay on a host, and the far ones share each host's link L ways); else the flat link. */
static struct tally_cost_layout rhd_layout(const struct tally_comm *comm, const struct tally_cost_params *costs) {
  int L = comm->local.size;
  if (L > 1 && power_of_two(L) && power_of_two(comm->nranks) && comm->hosts_in_rank_order)
    return (struct tally_cost_layout){&costs[TALLY_LINK_SHM], &costs[TALLY_LINK_NET], L};
  return (struct tally_cost_layout){flat_link(comm, costs), flat_link(comm, costs), 1};
}

int tally_tuner_rd_beats_rhd(const struct tally_comm *comm, size_t bytes) {
  struct tally_cost_layout h = rhd_layout(comm, comm->link_cost);
  return tally_cost_rd_beats_rhd_on(&h, comm->nranks, bytes);
}

/* Whether the model prices `algo`'s pipelining chunk for `coll`: the tree, and the ring's chains. */
static int pipelined(enum tally_algo_id algo, enum tally_coll coll) {
  return algo == TALLY_ALGO_TREE ||
         (algo == TALLY_ALGO_RING && (coll == TALLY_COLL_BROADCAST || coll == TALLY_COLL_REDUCE));
}

/* The smallest chunk the tuner picks: below it a chunk's message costs more than it overlaps. */
#define MIN_CHUNK_BYTES (16 * 1024)

/* The model's time for `algo`, and in *chunk the chunk it assumed: for pipelined algorithms the
 * fastest of the powers of two from MIN_CHUNK_BYTES up to TALLY_CHUNK_BYTES (deep pipelines want
 * small chunks when messages are cheap, few messages when they are not), else TALLY_CHUNK_BYTES.
 * A call compressed with `algo` is priced on compressed_costs. */
static double predict(const struct tally_comm *comm, const struct tally_coll_desc *d, enum tally_algo_id algo,
                      size_t *chunk) {
  size_t S = model_bytes(comm, d), largest = comm->cfg.chunk_bytes;
  int p = comm->nranks;
  struct tally_cost_params compressed[TALLY_NUM_LINK_CLASSES];
  const struct tally_cost_params *costs = comm->link_cost;
  if (compresses(algo) && tally_tuner_wire_format(comm, d) != TALLY_WIRE_EXACT) {
    compressed_costs(comm, compressed);
    costs = compressed;
  }
  const struct tally_cost_params *m = flat_link(comm, costs);
  *chunk = largest;
  if (algo == TALLY_ALGO_HIER) return comm->local.size ? predict_hier(comm, costs, d->coll, S) : TALLY_COST_NOT_MODELLED;
  if (algo == TALLY_ALGO_SHARED) {
    *chunk = 0;
    if (!comm->board) return TALLY_COST_NOT_MODELLED; /* tally_comm_predict asks without can_run */
    if (p < 2 || S == 0) return 0.0;
    if ((d->coll == TALLY_COLL_ALLTOALL && tally_shared_alltoall_single_copy(comm, d)) ||
        (d->coll == TALLY_COLL_ALLGATHER && tally_shared_allgather_single_copy(comm, d)))
      return tally_cost_shared_single_copy(m, p, S);
    return tally_cost_shared(m, d->coll, p, S, comm->board->page->big_bytes);
  }
  if (algo == TALLY_ALGO_RING && d->coll == TALLY_COLL_ALLREDUCE && S * (size_t)p <= TALLY_SMALL_ALLREDUCE_BYTES)
    /* the ring gathers small inputs and reduces locally (ring.c): p-1 steps of S, p-1 reductions */
    return tally_cost_ring_allgather(m, p, S * (size_t)p) + (p - 1) * (double)S * m->gamma_us_per_byte;
  if (algo == TALLY_ALGO_RHD && d->coll == TALLY_COLL_ALLREDUCE) { /* the variant rhd.c will run */
    struct tally_cost_layout h = rhd_layout(comm, costs);
    return tally_cost_rhd_allreduce_as_run_on(&h, p, S);
  }
  if (d->coll == TALLY_COLL_ALLTOALL && comm->topo.nhosts > 1 && comm->local.size > 1) {
    struct tally_cost_params shared = *m; /* every rank of a host sends off the host at once */
    shared.beta_us_per_byte *= comm->local.size;
    return tally_cost_predict(algo, d->coll, p, S, &shared, largest);
  }
  double best = tally_cost_predict(algo, d->coll, p, S, m, largest);
  if (!pipelined(algo, d->coll)) return best;
  for (size_t c = MIN_CHUNK_BYTES; c < largest; c *= 2) {
    double t = tally_cost_predict(algo, d->coll, p, S, m, c);
    if (t < best) best = t, *chunk = c;
  }
  return best;
}

double tally_tuner_predict(const struct tally_comm *comm, const struct tally_coll_desc *d, enum tally_algo_id algo) {
  size_t chunk;
  return predict(comm, d, algo, &chunk);
}

void tally_tuner_decide(const struct tally_comm *comm, const struct tally_coll_desc *desc,
                        struct tally_tuner_decision *out) {
  unsigned candidates = 0;
  size_t chunk[TALLY_NUM_ALGOS] = {0};
  for (int a = 0; a < TALLY_NUM_ALGOS; a++) {
    out->predicted_us[a] = TALLY_COST_NOT_MODELLED;
    if ((allowed(&comm->cfg.algo, desc->coll) & TALLY_ALGO_BIT(a)) && can_run(comm, desc, (enum tally_algo_id)a))
      candidates |= TALLY_ALGO_BIT(a);
  }
  /* The board, where it can run, is taken whatever the others cost: only its time is predicted (the
   * small calls it takes are those where pricing the others would cost a tenth of the call). */
  unsigned priced = candidates & TALLY_ALGO_BIT(TALLY_ALGO_BOARD) ? TALLY_ALGO_BIT(TALLY_ALGO_BOARD) : candidates;
  for (int a = 0; a < TALLY_NUM_ALGOS; a++)
    if (priced & TALLY_ALGO_BIT(a)) out->predicted_us[a] = predict(comm, desc, (enum tally_algo_id)a, &chunk[a]);
  /* where nothing TALLY_ALGO allows can run: the first implemented one that can (the ring, or for
   * alltoall, gather and scatter their direct form; never the board's, which only some sizes suit) */
  out->algo = TALLY_ALGO_RING;
  unsigned fallbacks =
      implemented(desc->coll) & ~(TALLY_ALGO_BIT(TALLY_ALGO_BOARD) | TALLY_ALGO_BIT(TALLY_ALGO_SHARED));
  for (int a = TALLY_NUM_ALGOS - 1; a >= 0; a--)
    if ((fallbacks & TALLY_ALGO_BIT(a)) && can_run(comm, desc, (enum tally_algo_id)a))
      out->algo = (enum tally_algo_id)a;
  out->why = "the only one that can run it here";
  out->chunk_bytes = 0;
  if (candidates & TALLY_ALGO_BIT(TALLY_ALGO_BOARD)) {
    out->algo = TALLY_ALGO_BOARD;
    out->why = "small, every rank on this host";
    return;
  }
  double best = -1;
  for (int a = 0; a < TALLY_NUM_ALGOS; a++) {
    double t = out->predicted_us[a];
    if (!(candidates & TALLY_ALGO_BIT(a)) || t < 0 || (best >= 0 && t >= best)) continue;
    best = t;
    out->algo = (enum tally_algo_id)a;
    out->why = "fastest predicted";
  }
  enum tally_algo_id measured = measured_for_two_ranks(comm, desc);
  if (measured != TALLY_NUM_ALGOS && (candidates & TALLY_ALGO_BIT(measured)) && out->algo != measured) {
    out->algo = measured;
    out->why = "measured ahead of the model's choice with two ranks on cores of their own";
  }
  if (!(candidates & TALLY_ALGO_BIT(out->algo))) { /* TALLY_ALGO left only unmodelled or no ring */
    for (int a = 0; a < TALLY_NUM_ALGOS; a++)
      if (candidates & TALLY_ALGO_BIT(a)) {
        out->algo = (enum tally_algo_id)a;
        break;
      }
  }
  if ((candidates & (candidates - 1)) == 0 && comm->cfg.algo.allowed[desc->coll] != TALLY_ALGO_ALL)
    out->why = "TALLY_ALGO";
  out->chunk_bytes = pipelined(out->algo, desc->coll) ? chunk[out->algo] : 0;
}

/* Where a call of desc's shape keeps its choice (comm.h): a hash of count, collective and datatype. */
static struct tally_tuner_choice *choice_for(struct tally_comm *comm, const struct tally_coll_desc *desc) {
  size_t h = desc->count ^ desc->count >> 11 ^ (size_t)desc->coll << 4 ^ (size_t)desc->datatype << 8;
  return &comm->tuner_choices[(h ^ h >> 4) % TALLY_TUNER_CHOICES];
}

static int same_shape(const struct tally_tuner_choice *c, const struct tally_coll_desc *desc) {
  return c->valid && c->count == desc->count && c->coll == (uint8_t)desc->coll &&
         c->datatype == (uint8_t)desc->datatype && c->op == (uint8_t)desc->op;
}

const struct tally_algorithm *tally_tuner_select(struct tally_comm *comm, struct tally_coll_desc *desc) {
  /* pricing every algorithm costs several hundred instructions, a third of a small call's: a
   * shape seen before runs as it did (unless each choice is to be logged) */
  struct tally_tuner_choice *known = choice_for(comm, desc);
  int logged = tally_log_enabled(TALLY_LOG_INFO, TALLY_SUBSYS_TUNE);
  if (same_shape(known, desc) && !logged) {
    desc->chunk_bytes = known->chunk_bytes;
    desc->predicted_us = known->predicted_us;
    desc->wire = known->wire;
    desc->rhd_whole_vector = known->rhd_whole_vector;
    return algorithms[known->algo];
  }
  struct tally_tuner_decision dec;
  tally_tuner_decide(comm, desc, &dec);
  desc->chunk_bytes = dec.chunk_bytes;
  desc->predicted_us = dec.predicted_us[dec.algo];
  desc->wire = compresses(dec.algo) ? tally_tuner_wire_format(comm, desc) : TALLY_WIRE_EXACT;
  desc->rhd_whole_vector = dec.algo == TALLY_ALGO_RHD && desc->coll == TALLY_COLL_ALLREDUCE &&
                           tally_tuner_rd_beats_rhd(comm, desc->count * tally_datatype_size(desc->datatype));
  *known = (struct tally_tuner_choice){.count = desc->count,
                                       .valid = 1,
                                       .coll = (uint8_t)desc->coll,
                                       .datatype = (uint8_t)desc->datatype,
                                       .op = (uint8_t)desc->op,
                                       .algo = (uint8_t)dec.algo,
                                       .wire = (uint8_t)desc->wire,
                                       .rhd_whole_vector = (uint8_t)desc->rhd_whole_vector,
                                       .chunk_bytes = desc->chunk_bytes,
                                       .predicted_us = desc->predicted_us};
  if (logged) {
    char predicted[160] = "";
    for (int a = 0; a < TALLY_NUM_ALGOS; a++)
      if (dec.predicted_us[a] >= 0)
        snprintf(predicted + strlen(predicted), sizeof predicted - strlen(predicted), "%s%s %.1f us",
                 predicted[0] ? ", " : "", tally_algo_name((enum tally_algo_id)a), dec.predicted_us[a]);
    char chunk[96] = "";
    if (dec.chunk_bytes) snprintf(chunk, sizeof chunk, ", chunks of %zu KiB", dec.chunk_bytes / 1024);
    if (desc->wire)
      snprintf(chunk + strlen(chunk), sizeof chunk - strlen(chunk), ", %s across hosts",
               tally_wire_format_name(desc->wire));
    TLOG_INFO(TALLY_SUBSYS_TUNE, "%s #%u, %zu bytes per rank on %d ranks: %s (%s%s; predicted: %s)",
              tally_coll_name(desc->coll), comm->seq, desc->count * tally_datatype_size(desc->datatype),
              comm->nranks, algorithms[dec.algo]->name, dec.why, chunk, predicted[0] ? predicted : "none");
  }
  return algorithms[dec.algo];
}

tally_result_t tally_tuner_check(const struct tally_algo_spec *spec) {
  for (int c = 0; c < TALLY_NUM_COLLS; c++) {
    if (allowed(spec, (enum tally_coll)c)) continue;
    char have[64] = "";
    for (int a = 0; a < TALLY_NUM_ALGOS; a++)
      if (implemented((enum tally_coll)c) & TALLY_ALGO_BIT(a))
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", have[0] ? ", " : "",
                 tally_algo_name((enum tally_algo_id)a));
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_ALGO leaves %s only algorithms this version of Tally does not implement for it; "
                       "implemented for %s: %s",
                       tally_coll_name((enum tally_coll)c), tally_coll_name((enum tally_coll)c), have);
  }
  return TALLY_SUCCESS;
}
