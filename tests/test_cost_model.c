/* Unit tests of algorithm selection's pure parts: the TALLY_ALGO parser (algo_spec.h), the
 * alpha-beta-gamma formulas and choice (cost_model.h), and the TALLY_TUNING_FILE parser
 * (tuning_file.h). Expected times are worked out by hand in the comments, not by the code under test. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/algo_spec.h"
#include "core/error.h"
#include "tuning/cost_model.h"
#include "tuning/tuning_file.h"

#define RING TALLY_ALGO_BIT(TALLY_ALGO_RING)
#define TREE TALLY_ALGO_BIT(TALLY_ALGO_TREE)
#define RHD TALLY_ALGO_BIT(TALLY_ALGO_RHD)
#define HIER TALLY_ALGO_BIT(TALLY_ALGO_HIER)
#define BOARD TALLY_ALGO_BIT(TALLY_ALGO_BOARD)
#define PAIRWISE TALLY_ALGO_BIT(TALLY_ALGO_PAIRWISE)
#define BRUCK TALLY_ALGO_BIT(TALLY_ALGO_BRUCK)
#define DIRECT TALLY_ALGO_BIT(TALLY_ALGO_DIRECT)
#define BINOMIAL TALLY_ALGO_BIT(TALLY_ALGO_BINOMIAL)
#define SHARED TALLY_ALGO_BIT(TALLY_ALGO_SHARED)
#define MiB (1024 * 1024)

/* Every word of the NULL-terminated list appears in the last error message. */
static void expect_message_words(const char *what, const char *const *words) {
  const char *msg = tally_error_message();
  for (; *words; words++) cr_assert(strstr(msg, *words), "%s: message lacks '%s': %s", what, *words, msg);
}
#define WORDS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- TALLY_ALGO ----------------------------------------------------------------------------- */

static struct tally_algo_spec parse_algo(const char *text) {
  struct tally_algo_spec spec;
  cr_assert_eq(tally_algo_spec_parse(text, &spec), TALLY_SUCCESS, "TALLY_ALGO=%s refused: %s", text,
               tally_error_message());
  return spec;
}

static void expect_everywhere(const char *text, unsigned allowed) {
  struct tally_algo_spec spec = parse_algo(text);
  for (int c = 0; c < TALLY_NUM_COLLS; c++)
    cr_assert_eq(spec.allowed[c], allowed, "TALLY_ALGO=%s, collective %d: 0x%x, expected 0x%x", text ? text : "(null)",
                 c, spec.allowed[c], allowed);
}

Test(algo_spec, everything_allowed_by_default_auto_and_the_old_hier) {
  expect_everywhere(NULL, TALLY_ALGO_ALL);
  expect_everywhere("", TALLY_ALGO_ALL);
  expect_everywhere("  ", TALLY_ALGO_ALL);
  expect_everywhere("auto", TALLY_ALGO_ALL);
  expect_everywhere("AUTO", TALLY_ALGO_ALL);
  expect_everywhere("hier", TALLY_ALGO_ALL);
  expect_everywhere(" Hier ", TALLY_ALGO_ALL);
  cr_assert_eq(TALLY_ALGO_ALL, RING | TREE | RHD | HIER | BOARD | PAIRWISE | BRUCK | DIRECT | BINOMIAL | SHARED);
}

Test(algo_spec, one_list_applies_to_every_collective) {
  expect_everywhere("ring", RING); /* the old value: the ring alone, barrier included (no board) */
  expect_everywhere("Ring,Tree", RING | TREE);
  expect_everywhere("rhd, board", RHD | BOARD);
  expect_everywhere("^board", TALLY_ALGO_ALL & ~BOARD);
  expect_everywhere("^ tree , rhd", TALLY_ALGO_ALL & ~(TREE | RHD));
  expect_everywhere("ring,auto", TALLY_ALGO_ALL);
}

Test(algo_spec, per_collective_parts) {
  struct tally_algo_spec spec = parse_algo("allreduce:rhd,ring;broadcast:tree");
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLREDUCE], RHD | RING);
  cr_assert_eq(spec.allowed[TALLY_COLL_BROADCAST], TREE);
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLGATHER], TALLY_ALGO_ALL); /* not named, no default part */
  cr_assert_eq(spec.allowed[TALLY_COLL_REDUCE_SCATTER], TALLY_ALGO_ALL);
  cr_assert_eq(spec.allowed[TALLY_COLL_REDUCE], TALLY_ALGO_ALL);
  cr_assert_eq(spec.allowed[TALLY_COLL_BARRIER], TALLY_ALGO_ALL);

  spec = parse_algo("allreduce:^tree;ring"); /* the part without a collective covers the rest */
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLREDUCE], TALLY_ALGO_ALL & ~TREE);
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLGATHER], RING);
  cr_assert_eq(spec.allowed[TALLY_COLL_BARRIER], RING);

  spec = parse_algo(" ring ; ReduceScatter : rhd ; reduce:auto;allgather:hier");
  cr_assert_eq(spec.allowed[TALLY_COLL_REDUCE_SCATTER], RHD);
  cr_assert_eq(spec.allowed[TALLY_COLL_REDUCE], TALLY_ALGO_ALL);
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLGATHER], HIER); /* hier in a list is hier alone */
  cr_assert_eq(spec.allowed[TALLY_COLL_BROADCAST], RING);
  cr_assert(tally_algo_spec_allows(&spec, TALLY_COLL_REDUCE_SCATTER, TALLY_ALGO_RHD));
  cr_assert(!tally_algo_spec_allows(&spec, TALLY_COLL_REDUCE_SCATTER, TALLY_ALGO_RING));
  cr_assert(!tally_algo_spec_allows(&spec, TALLY_NUM_COLLS, TALLY_ALGO_RING));
  cr_assert(!tally_algo_spec_allows(&spec, TALLY_COLL_REDUCE, TALLY_NUM_ALGOS));
  cr_assert_eq(spec.named, (1u << TALLY_COLL_REDUCE_SCATTER) | (1u << TALLY_COLL_REDUCE) | (1u << TALLY_COLL_ALLGATHER));
}

Test(algo_spec, alltoall_gather_and_scatter_by_name) {
  struct tally_algo_spec spec = parse_algo("alltoall:bruck;gather:binomial;scatter:^binomial;ring");
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLTOALL], BRUCK);
  cr_assert_eq(spec.allowed[TALLY_COLL_GATHER], BINOMIAL);
  cr_assert_eq(spec.allowed[TALLY_COLL_SCATTER], TALLY_ALGO_ALL & ~BINOMIAL);
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLREDUCE], RING);
  cr_assert_eq(spec.named, (1u << TALLY_COLL_ALLTOALL) | (1u << TALLY_COLL_GATHER) | (1u << TALLY_COLL_SCATTER));
  spec = parse_algo("ring"); /* not named: the tuner leaves them on auto (test_p2p runs that) */
  cr_assert_eq(spec.allowed[TALLY_COLL_ALLTOALL], RING);
  cr_assert_eq(spec.named, 0);
}

Test(algo_spec, names) {
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_RING), "ring");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_TREE), "tree");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_RHD), "rhd");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_HIER), "hier");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_BOARD), "board");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_PAIRWISE), "pairwise");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_BRUCK), "bruck");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_DIRECT), "direct");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_BINOMIAL), "binomial");
  cr_assert_str_eq(tally_algo_name(TALLY_ALGO_SHARED), "shared");
  cr_assert_str_eq(tally_algo_name(TALLY_NUM_ALGOS), "unknown");
}

/* `text` is refused, its message names TALLY_ALGO and every word, and the spec is left alone. */
static void expect_algo_refused(const char *text, const char *const *words) {
  struct tally_algo_spec spec, before;
  memset(&spec, 0x5a, sizeof spec);
  before = spec;
  cr_assert_eq(tally_algo_spec_parse(text, &spec), TALLY_ERR_INVALID_ARGUMENT, "TALLY_ALGO=%s accepted", text);
  cr_assert(!memcmp(&spec, &before, sizeof spec), "TALLY_ALGO=%s: spec changed on error", text);
  expect_message_words(text, WORDS("TALLY_ALGO"));
  expect_message_words(text, words);
}

Test(algo_spec, unknown_algorithm_lists_the_valid_ones) {
  const char *const *valid = WORDS("ring, tree, rhd, hier, board, pairwise, bruck, direct, binomial, shared", "auto");
  expect_algo_refused("ringg", valid);
  expect_message_words("ringg", WORDS("unknown algorithm 'ringg'"));
  expect_algo_refused("allreduce:ring,nccl", valid);
  expect_message_words("nccl", WORDS("'nccl'"));
  expect_algo_refused("ring,^tree", WORDS("unknown algorithm '^tree'")); /* '^' only starts a list */
  expect_algo_refused("allreduce:ring:tree", WORDS("unknown algorithm 'ring:tree'"));
}

Test(algo_spec, unknown_collective_lists_the_valid_ones) {
  const char *const *valid = WORDS("allreduce, allgather, reducescatter, broadcast, reduce, alltoall, gather, scatter");
  expect_algo_refused("allreduc:ring", valid);
  expect_message_words("allreduc", WORDS("unknown collective 'allreduc'"));
  expect_algo_refused("reduce_scatter:ring", WORDS("unknown collective 'reduce_scatter'"));
  expect_algo_refused("barrier:ring", WORDS("unknown collective 'barrier'"));
  expect_algo_refused(":ring", WORDS("unknown collective ''"));
}

Test(algo_spec, empty_lists_entries_and_parts) {
  expect_algo_refused("allreduce:", WORDS("empty list"));
  expect_algo_refused("^", WORDS("empty list"));
  expect_algo_refused("broadcast: ^ ", WORDS("empty list"));
  expect_algo_refused("ring,,tree", WORDS("empty entry"));
  expect_algo_refused("ring,", WORDS("empty entry"));
  expect_algo_refused(",ring", WORDS("empty entry"));
  expect_algo_refused("ring;", WORDS("empty part"));
  expect_algo_refused(";ring", WORDS("empty part"));
  expect_algo_refused("allreduce:ring;;broadcast:tree", WORDS("empty part"));
  expect_algo_refused(";", WORDS("empty part"));
}

Test(algo_spec, a_collective_named_twice) {
  expect_algo_refused("allreduce:ring;allreduce:tree", WORDS("allreduce", "more than one part"));
  expect_algo_refused("broadcast:ring;BROADCAST:tree", WORDS("broadcast", "more than one part"));
  expect_algo_refused("ring;allreduce:rhd;tree", WORDS("more than one part without a collective"));
}

Test(algo_spec, a_part_that_allows_nothing) {
  expect_algo_refused("^ring,tree,rhd,hier,board,pairwise,bruck,direct,binomial,shared",
                      WORDS("no algorithm", "the collectives it applies to"));
  expect_algo_refused("allreduce:^auto", WORDS("no algorithm", "allreduce", "'allreduce:^auto'"));
  expect_algo_refused("ring;reduce:^ring,tree,rhd,hier,board,pairwise,bruck,direct,binomial,shared", WORDS("no algorithm", "reduce"));
}

/* ---- the cost model ------------------------------------------------------------------------- */

/* alpha = 10 us, beta = 1e-4 us/B (10 GB/s), gamma = 1e-4 us/B: the example link. */
static const struct tally_cost_params example_link = {10.0, 1e-4, 1e-4};

static void expect_time(double got, double expected, const char *what) {
  cr_assert(fabs(got - expected) <= 1e-9 * fmax(1.0, fabs(expected)), "%s: %.9f us, expected %.9f us", what, got,
            expected);
}

/* p = 8 and S = 8e6 bytes, so a block S/p is 1e6 bytes and costs 100 us of beta (and 100 of gamma). */
Test(cost_model, ring) {
  /* 2(p-1) = 14 steps of alpha + 1e6 beta = 110, and (p-1) = 7 reductions of a block (100 each). */
  expect_time(tally_cost_ring_allreduce(&example_link, 8, 8000000), 14 * 110.0 + 7 * 100.0, "ring allreduce");
  /* 7 steps of 10 + 100. */
  expect_time(tally_cost_ring_allgather(&example_link, 8, 8000000), 7 * 110.0, "ring allgather");
  /* 7 steps of 10 + 100 + 100. */
  expect_time(tally_cost_ring_reduce_scatter(&example_link, 8, 8000000), 7 * 210.0, "ring reduce-scatter");
  /* p = 2, S = 1000: 2 steps of 10 + 500e-4, one reduction of 500 bytes. */
  expect_time(tally_cost_ring_allreduce(&example_link, 2, 1000), 2 * 10.05 + 0.05, "ring allreduce, p = 2");
}

Test(cost_model, chain) {
  /* C = 1e6: k = 8 chunks of 1e6, (p-1) + (k-1) = 14 steps of 10 + 100. */
  expect_time(tally_cost_chain_broadcast(&example_link, 8, 8000000, 1000000), 14 * 110.0, "chain broadcast");
  /* The same steps, each also reducing its 1e6 bytes: 10 + 100 + 100. */
  expect_time(tally_cost_chain_reduce(&example_link, 8, 8000000, 1000000), 14 * 210.0, "chain reduce");
  /* S = 2.5e6, C = 1e6: k = 3 equal chunks of 833333.3 bytes (83.333 us): 9 steps of 93.333 = 840. */
  expect_time(tally_cost_chain_broadcast(&example_link, 8, 2500000, 1000000), 840.0, "chain broadcast, uneven chunks");
  /* S = 1000 <= C: one chunk, 7 steps of 10 + 0.1. */
  expect_time(tally_cost_chain_broadcast(&example_link, 8, 1000, 1000000), 7 * 10.1, "chain broadcast, one chunk");
  /* C = 0: no pipelining, 7 steps of the whole 8e6 bytes, 10 + 800. */
  expect_time(tally_cost_chain_broadcast(&example_link, 8, 8000000, 0), 7 * 810.0, "chain broadcast, chunk 0");
}

Test(cost_model, recursive_halving_doubling_power_of_two) {
  /* p = p' = 8, log2 = 3 rounds of 4e6, 2e6, 1e6 bytes: 400 + 200 + 100 = 700 us of beta each way. */
  /* Rabenseifner: 6 alpha + 2 * 700 beta + 700 gamma. */
  expect_time(tally_cost_rhd_allreduce(&example_link, 8, 8000000), 60.0 + 1400.0 + 700.0, "rhd allreduce, p = 8");
  /* Recursive halving: 3 alpha + 700 beta + 700 gamma. */
  expect_time(tally_cost_rhd_reduce_scatter(&example_link, 8, 8000000), 30.0 + 1400.0, "rhd reduce-scatter, p = 8");
  /* Recursive doubling: 3 alpha + 700 beta. */
  expect_time(tally_cost_rhd_allgather(&example_link, 8, 8000000), 30.0 + 700.0, "rhd allgather, p = 8");
}

Test(cost_model, small_allreduces_double_the_whole_vector) {
  /* p = 8, S = 8000: 3 rounds of the whole vector, 3 (10 + 0.8 + 0.8) = 34.8, against Rabenseifner's
   * 60 + 2 * 0.7 + 0.7 = 62.1; rhd's prediction is the cheaper one. */
  expect_time(tally_cost_rd_allreduce(&example_link, 8, 8000), 34.8, "doubling allreduce, p = 8");
  cr_assert(tally_cost_rd_beats_rhd(&example_link, 8, 8000));
  expect_time(tally_cost_predict(TALLY_ALGO_RHD, TALLY_COLL_ALLREDUCE, 8, 8000, &example_link, 0), 34.8, "rhd, 8000 B");
  /* The crossover: 30 + 6e-4 S = 60 + 2.625e-4 S at S = 88889 bytes. */
  cr_assert(tally_cost_rd_beats_rhd(&example_link, 8, 88000));
  cr_assert(!tally_cost_rd_beats_rhd(&example_link, 8, 90000));
  expect_time(tally_cost_predict(TALLY_ALGO_RHD, TALLY_COLL_ALLREDUCE, 8, 8000000, &example_link, 0), 2160.0,
              "rhd, 8 MB");
  /* p = 6, S = 6000: fold (10 + 0.6 + 0.6), 2 rounds of (10 + 1.2), unfold (10 + 0.6). */
  expect_time(tally_cost_rd_allreduce(&example_link, 6, 6000), 11.2 + 22.4 + 10.6, "doubling allreduce, p = 6");
}

Test(cost_model, halving_doubling_across_hosts) {
  /* Hosts of 2 ranks, p = 8, S = 8000, no reduction cost. Within a host 1 us and 1e-4 us/B; across,
   * 10 us and 1e-3 us/B shared by the host's 2 ranks, so 2e-3. Rabenseifner's halving: 4000 B to
   * the rank 4 away (10 + 8 = 18), 2000 B 2 away (10 + 4 = 14), 1000 B to the neighbour on the host
   * (1 + 0.1 = 1.1); the doubling the same again: 66.2. Whole-vector doubling: 8000 B to the
   * neighbour (1 + 0.8), then twice across (10 + 16 each): 53.8. */
  const struct tally_cost_params local = {1.0, 1e-4, 0.0}, net = {10.0, 1e-3, 0.0};
  const struct tally_cost_layout hosts = {&local, &net, 2};
  expect_time(tally_cost_rhd_allreduce_on(&hosts, 8, 8000), 66.2, "Rabenseifner across hosts of 2");
  expect_time(tally_cost_rd_allreduce_on(&hosts, 8, 8000), 53.8, "whole-vector doubling across hosts of 2");
  cr_assert(tally_cost_rd_beats_rhd_on(&hosts, 8, 8000));
  /* One class everywhere and hosts of 1 is the flat model. */
  const struct tally_cost_layout flat = {&example_link, &example_link, 1};
  expect_time(tally_cost_rhd_allreduce_on(&flat, 8, 8000000), tally_cost_rhd_allreduce(&example_link, 8, 8000000),
              "flat layout");
}

Test(cost_model, recursive_halving_doubling_with_extra_ranks) {
  /* p = 6, S = 6e6: p' = 4, 2 rounds of 3e6 and 1.5e6 bytes (300 + 150 = 450 us of beta); 2 extra
   * ranks fold in with the whole vector (10 + 600 + 600) and get it back at the end (10 + 600). */
  expect_time(tally_cost_rhd_allreduce(&example_link, 6, 6000000), (40.0 + 900.0 + 450.0) + 1210.0 + 610.0,
              "rhd allreduce, p = 6");
  /* Reduce-scatter: fold in the vector (1210), 2 halving rounds (20 + 450 + 450), return a block of
   * S/p = 1e6 bytes (10 + 100). */
  expect_time(tally_cost_rhd_reduce_scatter(&example_link, 6, 6000000), 1210.0 + 920.0 + 110.0,
              "rhd reduce-scatter, p = 6");
  /* Allgather: fold in a block (10 + 100), 2 doubling rounds (20 + 450), send the whole (10 + 600). */
  expect_time(tally_cost_rhd_allgather(&example_link, 6, 6000000), 110.0 + 470.0 + 610.0, "rhd allgather, p = 6");
  /* p = 3: p' = 2, one round of S/2; S = 2000: 10 + 0.1 + 0.1, fold 10 + 0.2 + 0.2 and 10 + 0.2. */
  expect_time(tally_cost_rhd_allreduce(&example_link, 3, 2000), (20.0 + 0.2 + 0.1) + 10.4 + 10.2,
              "rhd allreduce, p = 3");
}

Test(cost_model, double_binary_tree) {
  /* p = 8: d = ceil(log2 9) = 4 levels. S = 8e6, C = 1e6: each tree carries 4e6 in k = 4 chunks of
   * c = 1e6; d + k - 1 = 7 steps, each moving 2c = 2e6 bytes through a rank's example_link (200 us). */
  expect_time(tally_cost_tree_broadcast(&example_link, 8, 8000000, 1000000), 7 * (10.0 + 200.0), "tree broadcast");
  /* The same steps, each reducing 2c bytes too (another 200 us). */
  expect_time(tally_cost_tree_reduce(&example_link, 8, 8000000, 1000000), 7 * (10.0 + 400.0), "tree reduce");
  expect_time(tally_cost_tree_allreduce(&example_link, 8, 8000000, 1000000), 7 * 210.0 + 7 * 410.0, "tree allreduce");
  /* p = 7: d = ceil(log2 8) = 3, so 6 steps. */
  expect_time(tally_cost_tree_broadcast(&example_link, 7, 8000000, 1000000), 6 * 210.0, "tree broadcast, p = 7");
  /* p = 2: d = ceil(log2 3) = 2. S = 8 bytes: k = 1, 2 steps of 10 + 8e-4. */
  expect_time(tally_cost_tree_broadcast(&example_link, 2, 8, 1000000), 2 * 10.0008, "tree broadcast, p = 2");
  /* S = 3e6, C = 1e6: k = ceil(1.5e6 / 1e6) = 2 chunks of 750000 a tree; 4 + 1 = 5 steps of 10 + 150. */
  expect_time(tally_cost_tree_broadcast(&example_link, 8, 3000000, 1000000), 5 * 160.0,
              "tree broadcast, uneven chunks");
}

Test(cost_model, alltoall_gather_and_scatter) {
  /* p = 8, S = 8e6: blocks of 1e6 bytes, 100 us each on example_link. Pairwise: 7 messages posted
   * together, alpha once, 6 posting costs of alpha / 4, 7 blocks through the link. */
  expect_time(tally_cost_pairwise_alltoall(&example_link, 8, 8000000), 10.0 + 6 * 2.5 + 700.0, "pairwise alltoall");
  /* Bruck: k = 1, 2, 4 each send the 4 blocks whose index has bit k (of 1..7), plus two rotations
   * of S (800 us each). */
  expect_time(tally_cost_bruck_alltoall(&example_link, 8, 8000000), 3 * 410.0 + 1600.0, "Bruck alltoall");
  /* p = 5, S = 5e6: k = 1 sends blocks 1, 3; k = 2 blocks 2, 3; k = 4 block 4. */
  expect_time(tally_cost_bruck_alltoall(&example_link, 5, 5000000), 210.0 + 210.0 + 110.0 + 1000.0,
              "Bruck alltoall, p = 5");
  /* Gather: the root's 7 messages at once, or the binomial tree's 1, 2 and 4 blocks plus the root's copy. */
  expect_time(tally_cost_direct_gather(&example_link, 8, 8000000), 10.0 + 6 * 2.5 + 700.0, "direct gather");
  expect_time(tally_cost_binomial_gather(&example_link, 8, 8000000), 110.0 + 210.0 + 410.0 + 800.0, "binomial gather");
  /* p = 6: levels 1, 2, 4 carry min(k, 6 - k) = 1, 2, 2 blocks. */
  expect_time(tally_cost_binomial_gather(&example_link, 6, 6000000), 110.0 + 210.0 + 210.0 + 600.0,
              "binomial gather, p = 6");
  /* Tiny blocks on 64 ranks go to the log2 p forms: pairwise 10 + 62 x 2.5 = 165 us against Bruck's
   * 6 steps of about 10 us; 8 ranks keep the direct forms (25 us against 30), as do large blocks. */
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLTOALL, TALLY_ALGO_ALL, 64, 64 * 8, &example_link, 0, NULL),
               TALLY_ALGO_BRUCK);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLTOALL, TALLY_ALGO_ALL, 8, 64, &example_link, 0, NULL),
               TALLY_ALGO_PAIRWISE);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLTOALL, TALLY_ALGO_ALL, 64, 64 * 1000000, &example_link, 0, NULL),
               TALLY_ALGO_PAIRWISE);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_GATHER, TALLY_ALGO_ALL, 64, 64 * 8, &example_link, 0, NULL),
               TALLY_ALGO_BINOMIAL);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_SCATTER, TALLY_ALGO_ALL, 64, 64 * 1000000, &example_link, 0, NULL),
               TALLY_ALGO_DIRECT);
}

Test(cost_model, shared_allreduce_and_reduce_scatter) {
  /* p = 4, S = 1e6, areas of 262144 bytes: 4 rounds of two meets (alpha / 2 = 5 us each); the
   * others' 3/4 of S copied in and S out (allreduce) or only the 3/4 in (reduce-scatter), at a
   * quarter of beta (S: 25 us); 3/4 of S reduced at gamma (75 us). */
  expect_time(tally_cost_shared(&example_link, TALLY_COLL_ALLREDUCE, 4, 1000000, 262144), 40.0 + 43.75 + 75.0,
              "shared allreduce");
  expect_time(tally_cost_shared(&example_link, TALLY_COLL_REDUCE_SCATTER, 4, 1000000, 262144), 40.0 + 18.75 + 75.0,
              "shared reduce-scatter");
}

Test(cost_model, shared_alltoall) {
  /* Areas of 262144 bytes, rounds of half of one: S = 1e6 takes 8 rounds, a meet (alpha / 2 = 5 us)
   * each, and S is copied in and out at a quarter of beta (2 x 25 us). */
  expect_time(tally_cost_shared(&example_link, TALLY_COLL_ALLTOALL, 8, 1000000, 262144), 8 * 5.0 + 50.0,
              "shared alltoall through the areas");
  /* Single copy, p = 8, S = 8e6: two meets, 7 reads at alpha / 4, 7/8 of S at 0.4 beta. */
  expect_time(tally_cost_shared_single_copy(&example_link, 8, 8000000), 10.0 + 17.5 + 280.0,
              "single-copy shared alltoall or allgather");
}

Test(cost_model, predict_covers_each_modelled_pair_and_only_those) {
  expect_time(tally_cost_predict(TALLY_ALGO_RING, TALLY_COLL_BROADCAST, 8, 8000000, &example_link, 1000000), 14 * 110.0,
              "predict ring broadcast");
  expect_time(tally_cost_predict(TALLY_ALGO_TREE, TALLY_COLL_REDUCE, 8, 8000000, &example_link, 1000000), 7 * 410.0,
              "predict tree reduce");
  expect_time(tally_cost_predict(TALLY_ALGO_RHD, TALLY_COLL_ALLGATHER, 8, 8000000, &example_link, 1000000), 730.0,
              "predict rhd allgather");
  const struct {
    enum tally_algo_id algo;
    enum tally_coll coll;
  } unmodelled[] = {{TALLY_ALGO_TREE, TALLY_COLL_ALLGATHER}, {TALLY_ALGO_TREE, TALLY_COLL_REDUCE_SCATTER},
                    {TALLY_ALGO_RHD, TALLY_COLL_BROADCAST},  {TALLY_ALGO_RHD, TALLY_COLL_REDUCE},
                    {TALLY_ALGO_HIER, TALLY_COLL_ALLREDUCE}, {TALLY_ALGO_BOARD, TALLY_COLL_ALLREDUCE},
                    {TALLY_ALGO_RING, TALLY_COLL_BARRIER},   {TALLY_ALGO_RING, TALLY_COLL_ALLTOALL},
                    {TALLY_ALGO_BRUCK, TALLY_COLL_GATHER},   {TALLY_ALGO_DIRECT, TALLY_COLL_ALLTOALL},
                    {TALLY_ALGO_PAIRWISE, TALLY_COLL_ALLREDUCE}};
  for (size_t i = 0; i < sizeof unmodelled / sizeof unmodelled[0]; i++) {
    cr_assert_eq(tally_cost_predict(unmodelled[i].algo, unmodelled[i].coll, 8, 1000, &example_link, 1000000),
                 TALLY_COST_NOT_MODELLED, "case %zu", i);
    cr_assert_eq(tally_cost_predict(unmodelled[i].algo, unmodelled[i].coll, 1, 1000, &example_link, 1000000),
                 TALLY_COST_NOT_MODELLED, "case %zu, p = 1", i);
  }
}

Test(cost_model, trivial_calls_cost_nothing) {
  double t[TALLY_NUM_ALGOS];
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, TALLY_ALGO_ALL, 1, 64 * MiB, &example_link, 512 * 1024, t),
               TALLY_ALGO_RING);
  cr_assert_eq(t[TALLY_ALGO_RING], 0.0);
  cr_assert_eq(t[TALLY_ALGO_TREE], 0.0);
  cr_assert_eq(t[TALLY_ALGO_RHD], 0.0);
  cr_assert_eq(t[TALLY_ALGO_HIER], TALLY_COST_NOT_MODELLED);
  cr_assert_eq(t[TALLY_ALGO_BOARD], TALLY_COST_NOT_MODELLED);
  /* The first allowed one when the ring is not. */
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, TREE | RHD, 1, 100, &example_link, 512 * 1024, t),
               TALLY_ALGO_TREE);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_BROADCAST, TALLY_ALGO_ALL, 8, 0, &example_link, 512 * 1024, t),
               TALLY_ALGO_RING);
  cr_assert_eq(t[TALLY_ALGO_TREE], 0.0);
  cr_assert_eq(t[TALLY_ALGO_RHD], TALLY_COST_NOT_MODELLED);
}

Test(cost_model, choose_respects_the_mask_and_reports_every_candidate) {
  double t[TALLY_NUM_ALGOS];
  /* p = 8, S = 8e6, C = 1e6: ring 2240, rhd 2160, tree 4340 (from the tests above). */
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, TALLY_ALGO_ALL, 8, 8000000, &example_link, 1000000, t),
               TALLY_ALGO_RHD);
  expect_time(t[TALLY_ALGO_RING], 2240.0, "ring");
  expect_time(t[TALLY_ALGO_RHD], 2160.0, "rhd");
  expect_time(t[TALLY_ALGO_TREE], 4340.0, "tree");
  cr_assert_eq(t[TALLY_ALGO_HIER], TALLY_COST_NOT_MODELLED);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, RING | TREE, 8, 8000000, &example_link, 1000000, t),
               TALLY_ALGO_RING);
  cr_assert_eq(t[TALLY_ALGO_RHD], TALLY_COST_NOT_MODELLED);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, TREE, 8, 8000000, &example_link, 1000000, NULL),
               TALLY_ALGO_TREE);
  /* Nothing the model covers: the tuner decides. */
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, HIER | BOARD, 8, 8000000, &example_link, 1000000, t),
               TALLY_NUM_ALGOS);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLGATHER, TREE, 8, 8000000, &example_link, 1000000, t), TALLY_NUM_ALGOS);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_BARRIER, TALLY_ALGO_ALL, 8, 0, &example_link, 1000000, t), TALLY_NUM_ALGOS);
  cr_assert_eq(tally_cost_choose(TALLY_COLL_ALLREDUCE, 0, 8, 8000000, &example_link, 1000000, t), TALLY_NUM_ALGOS);
}

static enum tally_algo_id choose_allreduce(unsigned allowed, int p, size_t bytes) {
  return tally_cost_choose(TALLY_COLL_ALLREDUCE, allowed, p, bytes, &example_link, 512 * 1024, NULL);
}

/* With every algorithm allowed and p = 8, few messages win small calls; halving-doubling moves the
 * same bytes as the ring in 2 log2 p instead of 2(p-1) messages, so at p a power of two the model
 * prefers it at every size. */
Test(cost_model, small_calls_go_to_few_messages) {
  cr_assert_eq(choose_allreduce(TALLY_ALGO_ALL, 8, 8), TALLY_ALGO_RHD); /* rhd 60, tree 80, ring 140 us */
  cr_assert_eq(tally_cost_choose(TALLY_COLL_BROADCAST, TALLY_ALGO_ALL, 8, 8, &example_link, 512 * 1024, NULL),
               TALLY_ALGO_TREE); /* tree 4 steps, chain 7 */
  for (size_t s = 8; s <= (size_t)1 << 30; s *= 4) cr_assert_eq(choose_allreduce(RING | RHD, 8, s), TALLY_ALGO_RHD);
}

/* Ring against tree allreduce, p = 8, C = 512 KiB. While S/2 <= C each tree sends one chunk, k = 1:
 *   tree = d (alpha + S (beta + gamma)) + d (alpha + S beta) = 2d alpha + S (2d beta + d gamma), d = 4
 *   ring = 2(p-1) alpha + S (2(p-1)/p beta + (p-1)/p gamma)
 * equal at S* = (2(p-1) - 2d) alpha / ((2d - 2(p-1)/p) beta + (d - (p-1)/p) gamma)
 *             = 60 / (6.25e-4 + 3.125e-4) = 64000 bytes (and half of that is below C, so k = 1 holds). */
Test(cost_model, ring_overtakes_tree_at_the_crossover) {
  const double p = 8, d = 4;
  double crossover =
      (2 * (p - 1) - 2 * d) * example_link.alpha_us /
      ((2 * d - 2 * (p - 1) / p) * example_link.beta_us_per_byte + (d - (p - 1) / p) * example_link.gamma_us_per_byte);
  expect_time(crossover, 64000.0, "crossover");
  double t[TALLY_NUM_ALGOS];
  tally_cost_choose(TALLY_COLL_ALLREDUCE, RING | TREE, 8, 64000, &example_link, 512 * 1024, t);
  expect_time(t[TALLY_ALGO_TREE], t[TALLY_ALGO_RING], "the two at the crossover");
  expect_time(t[TALLY_ALGO_RING], 140.0 + 64000 * 2.625e-4, "ring at the crossover");

  cr_assert_eq(choose_allreduce(RING | TREE, 8, 8), TALLY_ALGO_TREE);
  cr_assert_eq(choose_allreduce(RING | TREE, 8, 63900), TALLY_ALGO_TREE);
  cr_assert_eq(choose_allreduce(RING | TREE, 8, 64100), TALLY_ALGO_RING);
  cr_assert_eq(choose_allreduce(RING | TREE, 8, 64 * MiB), TALLY_ALGO_RING);
  for (size_t s = 64100; s <= (size_t)1 << 30; s *= 2)
    cr_assert_eq(choose_allreduce(RING | TREE, 8, s), TALLY_ALGO_RING);
}

/* Ring against halving-doubling allreduce at p = 6 (p' = 4, two extra ranks):
 *   rhd  = (2 log2 p' + 2) alpha + S ((2(p'-1)/p' + 2) beta + ((p'-1)/p' + 1) gamma)
 *        = 6 alpha + S (3.5 beta + 1.75 gamma)
 *   ring = 10 alpha + S (10/6 beta + 5/6 gamma)
 * equal at S* = 4 alpha / ((3.5 - 10/6) beta + (1.75 - 5/6) gamma) = 40 / 2.75e-4 = 145454.5 bytes. */
Test(cost_model, ring_overtakes_halving_doubling_when_p_is_not_a_power_of_two) {
  double crossover =
      4 * example_link.alpha_us /
      ((3.5 - 10.0 / 6) * example_link.beta_us_per_byte + (1.75 - 5.0 / 6) * example_link.gamma_us_per_byte);
  expect_time(crossover, 40 / 2.75e-4, "crossover");
  cr_assert_eq(choose_allreduce(RING | RHD, 6, 8), TALLY_ALGO_RHD);
  cr_assert_eq(choose_allreduce(RING | RHD, 6, (size_t)floor(crossover) - 100), TALLY_ALGO_RHD);
  cr_assert_eq(choose_allreduce(RING | RHD, 6, (size_t)ceil(crossover) + 100), TALLY_ALGO_RING);
  cr_assert_eq(choose_allreduce(RING | RHD, 6, 64 * MiB), TALLY_ALGO_RING);
  /* With the tree allowed as well: rhd 60.004 against tree 60.007 at 8 bytes, the ring at 64 MiB
   * (ring 16877 us, rhd 35292, tree 22082). */
  cr_assert_eq(choose_allreduce(TALLY_ALGO_ALL, 6, 8), TALLY_ALGO_RHD);
  cr_assert_eq(choose_allreduce(TALLY_ALGO_ALL, 6, 64 * MiB), TALLY_ALGO_RING);
}

/* ---- TALLY_TUNING_FILE ---------------------------------------------------------------------- */

static struct tally_tuning parse_tuning(const char *text) {
  struct tally_tuning t;
  cr_assert_eq(tally_tuning_parse(text, "/etc/tally.tune", &t), TALLY_SUCCESS, "refused: %s", tally_error_message());
  return t;
}

Test(tuning_file, both_classes_comments_and_blank_lines) {
  struct tally_tuning t = parse_tuning(
      "# measured on the cluster\n"
      "\n"
      "   # indented comment\n"
      "net.alpha_us = 12.5\n"
      "net.bandwidth_GBps=10\r\n" /* 10 GB/s = 1e10 B/s = 1e4 B/us: beta 1e-4 us per byte */
      "shm.alpha_us = 0.8\n"
      "shm.beta_us_per_byte = 2.5e-5\n"
      "\tgamma_us_per_byte = 5e-5   \n" /* no class: both */
      "  \n");
  cr_assert_float_eq(t.params[TALLY_LINK_NET].alpha_us, 12.5, 1e-12);
  cr_assert_float_eq(t.params[TALLY_LINK_NET].beta_us_per_byte, 1e-4, 1e-18);
  cr_assert_float_eq(t.params[TALLY_LINK_NET].gamma_us_per_byte, 5e-5, 1e-18);
  cr_assert_float_eq(t.params[TALLY_LINK_SHM].alpha_us, 0.8, 1e-12);
  cr_assert_float_eq(t.params[TALLY_LINK_SHM].beta_us_per_byte, 2.5e-5, 1e-18);
  cr_assert_float_eq(t.params[TALLY_LINK_SHM].gamma_us_per_byte, 5e-5, 1e-18);
  cr_assert_eq(t.given[TALLY_LINK_NET], TALLY_TUNING_ALPHA | TALLY_TUNING_BETA | TALLY_TUNING_GAMMA);
  cr_assert_eq(t.given[TALLY_LINK_SHM], TALLY_TUNING_ALPHA | TALLY_TUNING_BETA | TALLY_TUNING_GAMMA);
}

Test(tuning_file, partial_files_and_apply) {
  struct tally_tuning t = parse_tuning("net.alpha_us = 20\nbandwidth_GBps = 2.5"); /* no final newline */
  cr_assert_eq(t.given[TALLY_LINK_NET], TALLY_TUNING_ALPHA | TALLY_TUNING_BETA);
  cr_assert_eq(t.given[TALLY_LINK_SHM], TALLY_TUNING_BETA);
  /* 2.5 GB/s: 1e-3 / 2.5 = 4e-4 us per byte. */
  cr_assert_float_eq(t.params[TALLY_LINK_SHM].beta_us_per_byte, 4e-4, 1e-18);
  struct tally_cost_params net = {1, 2, 3}, shm = {1, 2, 3};
  tally_tuning_apply(&t, TALLY_LINK_NET, &net);
  tally_tuning_apply(&t, TALLY_LINK_SHM, &shm);
  cr_assert_float_eq(net.alpha_us, 20, 1e-12);
  cr_assert_float_eq(net.beta_us_per_byte, 4e-4, 1e-18);
  cr_assert_float_eq(net.gamma_us_per_byte, 3, 1e-12);
  cr_assert_float_eq(shm.alpha_us, 1, 1e-12);
  cr_assert_float_eq(shm.beta_us_per_byte, 4e-4, 1e-18);

  t = parse_tuning("");
  cr_assert_eq(t.given[TALLY_LINK_NET] | t.given[TALLY_LINK_SHM], 0);
  t = parse_tuning("alpha_us = 0\ngamma_us_per_byte = 0\n"); /* zero latency and free reductions are allowed */
  cr_assert_eq(t.given[TALLY_LINK_NET], TALLY_TUNING_ALPHA | TALLY_TUNING_GAMMA);
}

/* `text` is refused, its message names TALLY_TUNING_FILE, the path, the line and every word, and
 * the result is left alone. */
static void expect_tuning_refused(const char *text, int line, const char *const *words) {
  struct tally_tuning t, before;
  memset(&t, 0x5a, sizeof t);
  before = t;
  cr_assert_eq(tally_tuning_parse(text, "/etc/tally.tune", &t), TALLY_ERR_INVALID_ARGUMENT, "accepted: %s", text);
  cr_assert(!memcmp(&t, &before, sizeof t), "result changed on error: %s", text);
  char where[32];
  snprintf(where, sizeof where, "line %d:", line);
  expect_message_words(text, WORDS("TALLY_TUNING_FILE", "/etc/tally.tune", where));
  expect_message_words(text, words);
}

Test(tuning_file, unknown_keys) {
  const char *const *valid =
      WORDS("alpha_us", "beta_us_per_byte", "bandwidth_GBps", "gamma_us_per_byte", "shm.", "net.");
  expect_tuning_refused("# x\nalfa_us = 1\n", 2, valid);
  expect_message_words("alfa", WORDS("unknown key 'alfa_us'"));
  expect_tuning_refused("alpha_us = 1\nib.alpha_us = 1\n", 2, WORDS("unknown key 'ib.alpha_us'"));
  expect_tuning_refused("net.latency = 1\n", 1, WORDS("unknown key 'net.latency'"));
  expect_tuning_refused("net. = 1\n", 1, WORDS("unknown key 'net.'"));
  expect_tuning_refused("ALPHA_US = 1\n", 1, WORDS("unknown key 'ALPHA_US'"));
  expect_tuning_refused(" = 1\n", 1, WORDS("unknown key ''"));
}

Test(tuning_file, malformed_numbers) {
  expect_tuning_refused("alpha_us = fast\n", 1, WORDS("'fast' is not a number", "alpha_us"));
  expect_tuning_refused("\n\nnet.alpha_us = 12.5us\n", 3, WORDS("'12.5us' is not a number"));
  expect_tuning_refused("alpha_us =\n", 1, WORDS("'' is not a number"));
  expect_tuning_refused("alpha_us = 1 2\n", 1, WORDS("'1 2' is not a number"));
  expect_tuning_refused("alpha_us = nan\n", 1, WORDS("'nan' is not a number"));
  expect_tuning_refused("bandwidth_GBps = inf\n", 1, WORDS("'inf' is not a number"));
  expect_tuning_refused("beta_us_per_byte = 1e999\n", 1, WORDS("'1e999' is not a number"));
  expect_tuning_refused("alpha_us = 5 # inline comment\n", 1, WORDS("is not a number"));
  char long_value[128] = "alpha_us = ";
  memset(long_value + strlen(long_value), '1', 80);
  expect_tuning_refused(long_value, 1, WORDS("is not a number"));
}

Test(tuning_file, values_out_of_range) {
  expect_tuning_refused("alpha_us = -1\n", 1, WORDS("alpha_us = -1 is out of range", "0 or more"));
  expect_tuning_refused("net.beta_us_per_byte = 0\n", 1, WORDS("net.beta_us_per_byte = 0", "more than 0"));
  expect_tuning_refused("shm.bandwidth_GBps = 0\n", 1, WORDS("shm.bandwidth_GBps = 0", "more than 0"));
  expect_tuning_refused("bandwidth_GBps = -10\n", 1, WORDS("out of range", "more than 0"));
  expect_tuning_refused("gamma_us_per_byte = -1e-5\n", 1, WORDS("out of range", "0 or more"));
}

Test(tuning_file, duplicates) {
  expect_tuning_refused("alpha_us = 1\nalpha_us = 2\n", 2, WORDS("again", "line 1", "alpha"));
  expect_tuning_refused("net.alpha_us = 1\n\nalpha_us = 2\n", 3, WORDS("net links' alpha again", "'net.alpha_us'"));
  expect_tuning_refused("gamma_us_per_byte = 0\nshm.gamma_us_per_byte = 1\n", 2, WORDS("shm links' gamma again"));
  expect_tuning_refused("net.beta_us_per_byte = 1e-4\nnet.bandwidth_GBps = 10\n", 2,
                        WORDS("'net.bandwidth_GBps' sets the net links' beta again", "'net.beta_us_per_byte'"));
  /* The two classes are separate. */
  parse_tuning("net.alpha_us = 1\nshm.alpha_us = 2\nnet.bandwidth_GBps = 1\nshm.beta_us_per_byte = 1\n");
}

Test(tuning_file, lines_that_are_not_settings) {
  expect_tuning_refused("alpha_us 12\n", 1, WORDS("'alpha_us 12' is not a setting", "key = value"));
  expect_tuning_refused("alpha_us = 1\n[net]\n", 2, WORDS("'[net]' is not a setting"));
}
