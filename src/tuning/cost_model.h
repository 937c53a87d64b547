/* The alpha-beta-gamma cost model: the predicted time of each algorithm for a collective of S bytes
 * on p ranks, and the choice of the cheapest allowed one. Pure arithmetic; the tuner supplies the
 * link parameters (defaults, or TALLY_TUNING_FILE via tuning_file.h) and the TALLY_ALGO mask.
 *
 * Notation: p ranks; S bytes, the whole buffer (allreduce, broadcast, reduce: the vector;
 * allgather: the output, p blocks of S/p; reduce-scatter: the input, p blocks of S/p); C the
 * pipelining chunk. One message of m bytes that its receiver reduces into its own data costs
 *     step(m) = alpha + m (beta + gamma)        and alpha + m beta when nothing is reduced.
 * Messages that different ranks send at the same time overlap (they count as one step); each rank
 * has one full-duplex link.
 *
 * Ring, p-1 steps per phase, each moving one block of S/p to the next rank:
 *   reduce-scatter  (p-1) (alpha + S/p (beta + gamma))
 *   allgather       (p-1) (alpha + S/p beta)
 *   allreduce       reduce-scatter + allgather = 2(p-1) alpha + 2(p-1)/p S beta + (p-1)/p S gamma
 * Chain along the ring (broadcast, reduce), pipelined in k = ceil(S/C) chunks of c = S/k (c = C
 * when C divides S; k = 1 when S <= C); the first chunk needs p-1 steps, each later one step more:
 *   broadcast       (p-1 + k-1) (alpha + c beta)
 *   reduce          (p-1 + k-1) (alpha + c (beta + gamma))
 * Recursive halving-doubling on p' = the largest power of two <= p, L = log2 p'. Halving exchanges
 * S/2, S/4, ..., S/p' with partners p'/2, p'/4, ..., 1 away: L steps carrying (p'-1)/p' S in all;
 * doubling sends the same sizes in the opposite order:
 *   reduce-scatter  L alpha + (p'-1)/p' S (beta + gamma)                    (recursive halving)
 *   allgather       L alpha + (p'-1)/p' S beta                              (recursive doubling)
 *   allreduce       2L alpha + 2(p'-1)/p' S beta + (p'-1)/p' S gamma        (Rabenseifner)
 * When p > p', each of the p-p' extra ranks first folds into a partner and is served last (all
 * pairs at once, so one step each way), which adds:
 *   allreduce       (alpha + S (beta + gamma)) + (alpha + S beta)
 *   reduce-scatter  (alpha + S (beta + gamma)) + (alpha + S/p beta)
 *   allgather       (alpha + S/p beta) + (alpha + S beta)
 * Small allreduces skip the halving: recursive doubling of the whole vector, L steps each exchanging
 * and reducing S (plus the same fold and unfold), which beats Rabenseifner when alpha dominates:
 *   allreduce (doubling)  L (alpha + S (beta + gamma))
 * and rhd's prediction for allreduce is the cheaper of the two, the one algorithms/rhd.c runs.
 * Double binary tree: two trees, each carrying S/2 in k = ceil(S/(2C)) chunks of c = S/(2k); a chunk
 * crosses d = ceil(log2(p+1)) levels (those of a balanced binary tree of p ranks: its height plus
 * one, the hop between a rooted collective's root and the tops of the trees):
 *   broadcast       (d + k-1) (alpha + 2c beta)
 *   reduce          (d + k-1) (alpha + 2c (beta + gamma))
 *   allreduce       reduce + broadcast
 * How the two trees overlap: they run at the same time and in step, so a step pays one alpha (both
 * trees' messages are posted together); but every rank is an inner node of one tree (two children,
 * one parent) and a leaf of the other, so in each step its link carries two chunks in and two out,
 * 2c bytes, and an inner node reduces its two children's chunks, 2c bytes. The pair thus moves S
 * through each link per phase, where the ring moves (p-1)/p S. In allreduce the broadcast is taken
 * to start when the reduce ends; sending chunk j down while chunk j+1 still goes up saves at most
 * d-1 steps of alpha and moves the same bytes, so the model ignores it.
 *
 * Alltoall, gather and scatter: S is the whole sendbuf (alltoall; p blocks of S/p) or the root's
 * buffer (gather, scatter). n messages that one rank posts together overlap: the first pays alpha,
 * each further one only its posting cost, o = TALLY_COST_POSTING_SHARE x alpha (the software work
 * of a message without the wait for the peer), and their bytes share the link. A local copy of the
 * whole costs S beta:
 *   pairwise alltoall   alpha + (p-2) o + (p-1) S/p beta             every block direct, at once
 *   Bruck alltoall      sum over k = 1, 2, 4, ... < p of (alpha + n_k S/p beta) + 2 S beta
 *                       (n_k blocks have bit k, about p/2; two rotations of the whole)
 *   direct gather       alpha + (p-2) o + (p-1) S/p beta             the root's messages, at once
 *   binomial gather     sum over k = 1, 2, 4, ... < p of (alpha + min(k, p-k) S/p beta) + S beta
 *                       (the root's path: one message per level, then its copy into rank order)
 * scatter as gather. Bruck and binomial pay alpha log2 p times in sequence where the direct forms
 * pay it once and o p-2 times: they win on small blocks once p is large enough (with o = alpha/4,
 * from p = 16 for Bruck), the direct forms on large blocks (every byte moves once).
 *
 * Shared (one host, algorithms/shared.h): rounds of at most A bytes per rank (the board's area),
 * each round two meets, each costing a = TALLY_COST_MEET_SHARE x alpha, and the copies between a rank's buffers and the shared
 * areas. A message on the local link is copied twice (into the FIFO by its sender, out by its
 * receiver) and pays the FIFO's handshakes, so one copy of a byte is priced at less than half of
 * beta (TALLY_COST_SHARED_COPY_SHARE x beta):
 *   allreduce       2 R a + (2 - 1/p) S c + (p-1)/p S gamma    R = ceil(S / A); the others' slices in,
 *                                                              reduce, out
 *   reduce-scatter  2 R a + (p-1)/p S c + (p-1)/p S gamma      R = ceil(S / A); the others' blocks in
 *   allgather       2 R a + (S/p + S) c                        R = ceil(S/p / A)
 *   broadcast       (R + 1) a + S c + min(S, A) c              R = ceil(S / A); the root copies a round in
 *                                                              while the others copy the last one out
 *   alltoall        R a + 2 S c                                R = ceil(S / (A/2)); S is the sendbuf, a
 *                                                              round fills half an area
 * with c = TALLY_COST_SHARED_COPY_SHARE x beta. Its single-copy forms, where the ranks may read
 * each other's memory (alltoall: blocks of at least TALLY_SHARED_ALLTOALL_SINGLE_COPY_BYTES on
 * ranks that share cores; allgather: on ranks with cores of their own, while the outputs stay in
 * cache; shared.c), each rank reading p-1 blocks of S/p (its own it copies, not priced):
 *   alltoall, allgather  2 a + (p-1) r + (p-1)/p S x          r = TALLY_COST_SINGLE_COPY_READ_SHARE x alpha,
 *                                                              x = TALLY_COST_SINGLE_COPY_SHARE x beta
 *
 * Not modelled by tally_cost_predict: hier, board and shared (their cost depends on the hosts and
 * their ranks, or the board's areas, which the tuner knows; it prices hier and shared itself),
 * barrier, rhd broadcast and reduce, tree allgather and reduce-scatter.
 */
#ifndef TALLY_COST_MODEL_H
#define TALLY_COST_MODEL_H

#include <stddef.h>

#include "core/algo_spec.h"
#include "core/descriptor.h"
#include "topology/link_cost.h"

/* The formulas above, in microseconds, for p >= 2. `chunk_bytes` 0 means one chunk (no pipelining). */
double tally_cost_ring_allreduce(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_ring_allgather(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_ring_reduce_scatter(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_chain_broadcast(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes);
double tally_cost_chain_reduce(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes);
double tally_cost_rhd_allreduce(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_rhd_allgather(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_rhd_reduce_scatter(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_rd_allreduce(const struct tally_cost_params *m, int p, size_t bytes);
/* Whether recursive doubling of the whole vector is cheaper than Rabenseifner's allreduce. */
int tally_cost_rd_beats_rhd(const struct tally_cost_params *m, int p, size_t bytes);

/* Halving-doubling across hosts of `per_host` consecutive ranks (p and per_host powers of two): a
 * round between ranks d apart stays within a host when d < per_host and costs step() on `local`;
 * otherwise every rank of a host sends across the network at once, so each round costs step() on
 * `net` with beta multiplied by per_host. {m, m, 1} is the flat model above. */
struct tally_cost_layout {
  const struct tally_cost_params *local, *net;
  int per_host;
};
double tally_cost_rhd_allreduce_on(const struct tally_cost_layout *h, int p, size_t bytes);
double tally_cost_rd_allreduce_on(const struct tally_cost_layout *h, int p, size_t bytes);
int tally_cost_rd_beats_rhd_on(const struct tally_cost_layout *h, int p, size_t bytes);
/* The variant rhd.c runs (the cheaper of the two above), priced on `h`. */
double tally_cost_rhd_allreduce_as_run_on(const struct tally_cost_layout *h, int p, size_t bytes);
double tally_cost_tree_allreduce(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes);
double tally_cost_tree_broadcast(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes);
double tally_cost_tree_reduce(const struct tally_cost_params *m, int p, size_t bytes, size_t chunk_bytes);
double tally_cost_pairwise_alltoall(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_bruck_alltoall(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_direct_gather(const struct tally_cost_params *m, int p, size_t bytes);
double tally_cost_binomial_gather(const struct tally_cost_params *m, int p, size_t bytes);
/* The shared-buffer algorithm's formulas above; `area_bytes` is A. */
double tally_cost_shared(const struct tally_cost_params *m, enum tally_coll coll, int p, size_t bytes,
                         size_t area_bytes);
/* Their single-copy forms (alltoall, allgather): `bytes` is S, the sendbuf or the whole output. */
double tally_cost_shared_single_copy(const struct tally_cost_params *m, int p, size_t bytes);

/* The share of a local message's beta that one copy of a byte into or out of a shared area costs.
 * A message through the FIFO is two copies plus the FIFO's per-slot handshakes, so less than half.
 * From `tally-perf COLL --sweep -N 2 -b 64K -e 16M -f 4 --repeat 3` here (2026-12-05): 0.5 chose
 * the ring where the shared areas were faster (1 MiB allreduce: ring 377 us, shared 265 us), and
 * 0.25 chooses shared allgather and reduce-scatter from 64 KiB to 16 MiB, within 10% of the
 * fastest but at 256 KiB (1.21) and 1 MiB allgather (0.73: faster than every forced run). Later
 * sweeps the same day, on a quieter VM, had the FIFO algorithms ahead on 2 ranks at many sizes, which
 * no single share fits: two ranks with cores of their own now follow measured choices instead
 * (measured_for_two_ranks, tuner.c). */
#define TALLY_COST_SHARED_COPY_SHARE 0.25

/* The single-copy forms' costs as shares of a local message's: one process_vm_readv of a
 * peer's block (it pins the peer's pages, no handshake: about a posting's cost), and a byte read
 * with it (one copy where a message makes two, but page by page and from another address space,
 * so more than an area's copy). They price the form shared.c runs from
 * TALLY_SHARED_ALLTOALL_SINGLE_COPY_BYTES a block against pairwise and Bruck (not calibrated:
 * estimates that keep the single copy below the areas' two copies, as it measured, shared.h). */
#define TALLY_COST_SINGLE_COPY_READ_SHARE 0.25
#define TALLY_COST_SINGLE_COPY_SHARE 0.4

/* The share of a local message's alpha that a board meet costs: one atomic count and one futex
 * wake for all ranks at once, where a message has its FIFO's handshake and its own wake-up. Here
 * (2026-12-05, 2 ranks, medians of 3) the board's one-meet allgather of 4 KiB took 1.9 us, the
 * ring's one message 6.5 us. */
#define TALLY_COST_MEET_SHARE 0.5

/* o / alpha: the posting cost of a message among several posted together, as a share of a lone
 * message's alpha (not calibrated: an estimate; on the machine where it was chosen, 8 ranks on 2
 * cores, the direct forms beat Bruck and binomial at every size, which any share below 1/3 keeps). */
#define TALLY_COST_POSTING_SHARE 0.25

/* What tally_cost_predict() returns for an algorithm the model does not cover for a collective. */
#define TALLY_COST_NOT_MODELLED (-1.0)

/* The predicted time of `algo` running `coll`: 0 when p <= 1 or bytes == 0, TALLY_COST_NOT_MODELLED
 * when the model has no formula for the pair, else the formula's value. */
double tally_cost_predict(enum tally_algo_id algo, enum tally_coll coll, int p, size_t bytes,
                          const struct tally_cost_params *m, size_t chunk_bytes);

/* Chooses among the algorithms in `allowed` (TALLY_ALGO_BIT()s, as in struct tally_algo_spec) the
 * one with the least predicted time for `coll`; ties go to the lower enum value (ring first), so
 * p <= 1 or bytes == 0 gives the first allowed, modelled algorithm with time 0. Fills
 * `predicted_us[a]` for every algorithm (for logging): its prediction when allowed and modelled,
 * else TALLY_COST_NOT_MODELLED; NULL when not wanted. Returns TALLY_NUM_ALGOS when no allowed
 * algorithm is modelled for `coll` (hier, board, barrier: the tuner decides those itself). */
enum tally_algo_id tally_cost_choose(enum tally_coll coll, unsigned allowed, int p, size_t bytes,
                                     const struct tally_cost_params *m, size_t chunk_bytes,
                                     double predicted_us[TALLY_NUM_ALGOS]);

#endif
