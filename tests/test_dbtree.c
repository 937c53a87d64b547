/* Unit tests of the double binary tree's shape (algorithms/dbtree.h): for every p from 1 to 300
 * and some large ones, each tree spans all ranks from one root, parents and children agree both
 * ways, nobody has more than two children, the depth is floor(log2 p) + 1 (within NCCL's
 * ceil(log2 p) + 1), and no rank has children in both trees. Tree 0 is also compared with an
 * independent recursive construction, and tree 1 with the renaming NCCL uses; small cases are
 * worked out by hand from the sketch in dbtree.h. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "algorithms/dbtree.h"

static struct tally_dbtree_node node_of(int p, int r, int tree) {
  struct tally_dbtree_node n;
  cr_assert_eq(tally_dbtree_node(p, r, tree, &n), 0, "p=%d rank %d tree %d refused", p, r, tree);
  return n;
}

static int floor_log2(int p) {
  int k = 0;
  while ((p >> k) > 1) k++;
  return k;
}

static int ceil_log2(int p) {
  int k = 0;
  while ((1L << k) < p) k++;
  return k;
}

/* ---- Local checks, one rank at a time (the large p sample ranks with these) ---------------- */

/* The node is well formed: parent and children in range and not itself, children sorted and
 * distinct with -1 after them, each child names r as its parent and r's parent lists r. */
static void check_links(int p, int r, int tree, const struct tally_dbtree_node *n) {
  cr_assert(n->parent >= -1 && n->parent < p && n->parent != r, "p=%d tree %d rank %d: parent %d", p, tree, r,
            n->parent);
  cr_assert(n->nchildren >= 0 && n->nchildren <= 2, "p=%d tree %d rank %d: %d children", p, tree, r, n->nchildren);
  for (int i = 0; i < 2; i++) {
    int c = n->child[i];
    if (i >= n->nchildren) {
      cr_assert_eq(c, -1, "p=%d tree %d rank %d: child[%d] = %d past nchildren %d", p, tree, r, i, c, n->nchildren);
      continue;
    }
    cr_assert(c >= 0 && c < p && c != r, "p=%d tree %d rank %d: child %d", p, tree, r, c);
    cr_assert_eq(node_of(p, c, tree).parent, r, "p=%d tree %d: child %d of %d names another parent", p, tree, c, r);
  }
  if (n->nchildren == 2)
    cr_assert_lt(n->child[0], n->child[1], "p=%d tree %d rank %d: children %d, %d out of order", p, tree, r,
                 n->child[0], n->child[1]);
  if (n->parent >= 0) {
    struct tally_dbtree_node up = node_of(p, n->parent, tree);
    int listed = 0;
    for (int i = 0; i < up.nchildren; i++) listed += up.child[i] == r;
    cr_assert_eq(listed, 1, "p=%d tree %d: parent %d of %d does not list it once", p, tree, n->parent, r);
  }
}

/* The levels from r up to the root, counting both; fails past `bound` levels (a cycle, or too
 * deep) or at a root other than tally_dbtree_root. */
static int levels_to_root(int p, int r, int tree, int bound) {
  int levels = 1;
  for (int at = r;;) {
    int up = node_of(p, at, tree).parent;
    if (up < 0) {
      cr_assert_eq(at, tally_dbtree_root(p, tree), "p=%d tree %d: rank %d climbs to %d, not the root", p, tree, r, at);
      return levels;
    }
    at = up;
    levels++;
    cr_assert_leq(levels, bound, "p=%d tree %d: rank %d is more than %d levels deep (or on a cycle)", p, tree, r,
                  bound);
  }
}

/* Whether r has children in each tree: never in both; for even p >= 2 in exactly one; for odd p
 * in exactly one except rank 0, a leaf in both. */
static void check_interior_once(int p, int r) {
  int interior = (node_of(p, r, 0).nchildren > 0) + (node_of(p, r, 1).nchildren > 0);
  int expected = p == 1 || (p % 2 == 1 && r == 0) ? 0 : 1;
  cr_assert_eq(interior, expected, "p=%d rank %d: interior in %d trees, expected %d", p, r, interior, expected);
}

/* ---- Whole trees ---------------------------------------------------------------------------- */

/* One tree over p ranks spans them all: exactly one root, p-1 parent-child edges agreeing both
 * ways, every rank climbing to the root without a cycle, floor(log2 p) + 1 levels. */
static void check_tree(int p, int tree) {
  int root = tally_dbtree_root(p, tree), roots = 0, edges = 0, deepest = 0;
  int bound = ceil_log2(p) + 1;
  cr_assert(root >= 0 && root < p, "p=%d tree %d: root %d", p, tree, root);
  for (int r = 0; r < p; r++) {
    struct tally_dbtree_node n = node_of(p, r, tree);
    check_links(p, r, tree, &n);
    roots += n.parent < 0;
    edges += n.nchildren;
    if (tree == 0 && n.nchildren > 0) { /* a search tree: left subtree < r < right subtree */
      cr_assert_lt(n.child[0], r, "p=%d tree 0 rank %d: first child %d", p, r, n.child[0]);
      if (n.nchildren == 2) cr_assert_gt(n.child[1], r, "p=%d tree 0 rank %d: second child %d", p, r, n.child[1]);
    }
    int levels = levels_to_root(p, r, tree, bound);
    if (levels > deepest) deepest = levels;
  }
  cr_assert_eq(roots, 1, "p=%d tree %d: %d roots", p, tree, roots);
  cr_assert_eq(edges, p - 1, "p=%d tree %d: %d edges", p, tree, edges);
  cr_assert_eq(deepest, floor_log2(p) + 1, "p=%d tree %d: %d levels", p, tree, deepest);
  cr_assert_leq(deepest, bound);
}

static void check_pair(int p) {
  check_tree(p, 0);
  check_tree(p, 1);
  cr_assert_eq(tally_dbtree_depth(p), floor_log2(p) + 1, "p=%d: depth %d", p, tally_dbtree_depth(p));
  for (int r = 0; r < p; r++) check_interior_once(p, r);
}

Test(dbtree, every_p_up_to_300) {
  for (int p = 1; p <= 300; p++) check_pair(p);
}

Test(dbtree, large_p_whole) {
  static const int sizes[] = {1000, 1023, 1024, 1025, 4095, 4096, 4097, 100000};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) check_pair(sizes[i]);
}

/* One rank of a large p: its links, its depth and its interior-once property. */
static void check_sampled_rank(int p, int r) {
  if (r < 0 || r >= p) return;
  for (int tree = 0; tree < 2; tree++) {
    struct tally_dbtree_node n = node_of(p, r, tree);
    check_links(p, r, tree, &n);
    cr_assert_leq(levels_to_root(p, r, tree, ceil_log2(p) + 1), floor_log2(p) + 1);
  }
  check_interior_once(p, r);
}

/* The largest sizes, by sampled ranks: the ends and the middle, each 2^j - 1 (x a power of two)
 * and its neighbours, and a pseudo-random spread (fixed seed). */
Test(dbtree, large_p_sampled) {
  static const int sizes[] = {100000, 999999, (1 << 20) - 1, 1 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    int p = sizes[i];
    unsigned seed = 12345;
    check_sampled_rank(p, 0);
    check_sampled_rank(p, p / 2);
    check_sampled_rank(p, p - 1);
    for (int j = 0; j <= 20; j++)
      for (int d = -1; d <= 1; d++) check_sampled_rank(p, (1 << j) - 1 + d);
    for (int k = 0; k < 3000; k++) {
      seed = seed * 1103515245u + 12345u;
      check_sampled_rank(p, (int)((seed >> 8) % (unsigned)p));
    }
    cr_assert_eq(tally_dbtree_depth(p), floor_log2(p) + 1);
  }
}

/* ---- Against independent constructions ------------------------------------------------------ */

/* Tree 0 by definition: over x in [lo, hi] (x = rank + 1) the root is the x with the most
 * trailing zero bits, and its subtrees are built over [lo, x-1] and [x+1, hi]. */
static int reference_build(int lo, int hi, int parent, int *ref_parent) {
  if (lo > hi) return -1;
  int best = lo;
  for (int x = lo; x <= hi; x++)
    if ((x & -x) > (best & -best)) best = x;
  ref_parent[best - 1] = parent;
  reference_build(lo, best - 1, best - 1, ref_parent);
  reference_build(best + 1, hi, best - 1, ref_parent);
  return best - 1;
}

Test(dbtree, tree0_matches_the_recursive_definition) {
  static int ref_parent[4097];
  for (int p = 1; p <= 4097; p = p < 300 ? p + 1 : p * 2 + 1) {
    int root = reference_build(1, p, -1, ref_parent);
    cr_assert_eq(tally_dbtree_root(p, 0), root, "p=%d", p);
    for (int r = 0; r < p; r++) cr_assert_eq(node_of(p, r, 0).parent, ref_parent[r], "p=%d rank %d", p, r);
  }
}

/* Tree 1 is tree 0 renamed: s -> p-1-s for even p, s -> (s+1) mod p for odd p (NCCL's ncclGetDtree). */
static int renamed(int p, int s) {
  if (s < 0) return -1;
  return p % 2 == 0 ? p - 1 - s : (s + 1) % p;
}

Test(dbtree, tree1_is_tree0_renamed) {
  for (int p = 1; p <= 300; p++)
    for (int s = 0; s < p; s++) {
      struct tally_dbtree_node t0 = node_of(p, s, 0), t1 = node_of(p, renamed(p, s), 1);
      cr_assert_eq(t1.parent, renamed(p, t0.parent), "p=%d rank %d", p, s);
      cr_assert_eq(t1.nchildren, t0.nchildren, "p=%d rank %d", p, s);
      int a = renamed(p, t0.child[0]), b = renamed(p, t0.child[1]);
      if (b >= 0 && b < a) {
        int t = a;
        a = b, b = t;
      }
      cr_assert(t1.child[0] == a && t1.child[1] == b, "p=%d rank %d: tree 1 children %d, %d, expected %d, %d", p, s,
                t1.child[0], t1.child[1], a, b);
    }
  cr_assert_eq(tally_dbtree_root(1, 1), 0);
}

/* ---- By hand (the sketch in dbtree.h) ------------------------------------------------------- */

struct expect {
  int parent, c0, c1;
};

static void expect_tree(int p, int tree, const struct expect *e) {
  for (int r = 0; r < p; r++) {
    struct tally_dbtree_node n = node_of(p, r, tree);
    cr_assert(n.parent == e[r].parent && n.child[0] == e[r].c0 && n.child[1] == e[r].c1,
              "p=%d tree %d rank %d: parent %d children %d %d, expected %d, %d %d", p, tree, r, n.parent, n.child[0],
              n.child[1], e[r].parent, e[r].c0, e[r].c1);
  }
}

Test(dbtree, p8_by_hand) {
  /*   tree 0:   3-------7      tree 1:  0-------4
   *           /   \                             /   \
   *         1       5                         2       6
   *        / \     / \                       / \     / \
   *       0   2   4   6                     1   3   5   7 */
  static const struct expect t0[8] = {{1, -1, -1}, {3, 0, 2}, {1, -1, -1}, {7, 1, 5},
                                      {5, -1, -1}, {3, 4, 6}, {5, -1, -1}, {-1, 3, -1}};
  static const struct expect t1[8] = {{-1, 4, -1}, {2, -1, -1}, {4, 1, 3}, {2, -1, -1},
                                      {0, 2, 6},   {6, -1, -1}, {4, 5, 7}, {6, -1, -1}};
  expect_tree(8, 0, t0);
  expect_tree(8, 1, t1);
  cr_assert_eq(tally_dbtree_root(8, 0), 7);
  cr_assert_eq(tally_dbtree_root(8, 1), 0);
  cr_assert_eq(tally_dbtree_depth(8), 4);
}

Test(dbtree, p7_by_hand) {
  /*   tree 0:       3          tree 1:      4
   *               /   \                   /   \
   *             1       5               2       6
   *            / \     / \             / \     / \
   *           0   2   4   6           1   3   0   5 */
  static const struct expect t0[7] = {{1, -1, -1}, {3, 0, 2}, {1, -1, -1}, {-1, 1, 5},
                                      {5, -1, -1}, {3, 4, 6}, {5, -1, -1}};
  static const struct expect t1[7] = {{6, -1, -1}, {2, -1, -1}, {4, 1, 3}, {2, -1, -1},
                                      {-1, 2, 6},  {6, -1, -1}, {4, 0, 5}};
  expect_tree(7, 0, t0);
  expect_tree(7, 1, t1);
  cr_assert_eq(tally_dbtree_depth(7), 3);
}

Test(dbtree, smallest_by_hand) {
  /* p = 1: rank 0 is root and leaf of both. */
  expect_tree(1, 0, (const struct expect[]){{-1, -1, -1}});
  expect_tree(1, 1, (const struct expect[]){{-1, -1, -1}});
  /* p = 2: tree 0 is 1 -> 0, tree 1 (mirrored) 0 -> 1. */
  expect_tree(2, 0, (const struct expect[]){{1, -1, -1}, {-1, 0, -1}});
  expect_tree(2, 1, (const struct expect[]){{-1, 1, -1}, {0, -1, -1}});
  /* p = 3: tree 0 is 1 over 0 and 2; tree 1 (shifted) 2 over 1 and 0. */
  expect_tree(3, 0, (const struct expect[]){{1, -1, -1}, {-1, 0, 2}, {1, -1, -1}});
  expect_tree(3, 1, (const struct expect[]){{2, -1, -1}, {2, -1, -1}, {-1, 0, 1}});
  /* p = 6: x = 4 is the root over 2 and 6, and x = 6 == p has only its left child 5. */
  expect_tree(6, 0, (const struct expect[]){{1, -1, -1}, {3, 0, 2}, {1, -1, -1}, {-1, 1, 5}, {5, -1, -1}, {3, 4, -1}});
  /* p = 10: x = 8's right child would be 12 > 10, replaced by its left child 10; x = 10's parent
   * would be 12, replaced by 12's parent 8; x = 10 == p has only its left child 9. */
  struct tally_dbtree_node n = node_of(10, 7, 0);
  cr_assert(n.parent == -1 && n.child[0] == 3 && n.child[1] == 9, "p=10 rank 7: %d %d %d", n.parent, n.child[0],
            n.child[1]);
  n = node_of(10, 9, 0);
  cr_assert(n.parent == 7 && n.child[0] == 8 && n.child[1] == -1, "p=10 rank 9: %d %d %d", n.parent, n.child[0],
            n.child[1]);
}

/* ---- Bad arguments ------------------------------------------------------------------------- */

Test(dbtree, bad_arguments) {
  /* {nranks, rank, tree} */
  static const int bad[][3] = {
      {0, 0, 0},  {-1, 0, 0}, {TALLY_DBTREE_MAX_RANKS + 1, 0, 0}, {4, -1, 0}, {4, 4, 0}, {4, 0, 2},
      {4, 0, -1}, {1, 1, 1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct tally_dbtree_node n = {7, {7, 7}, 7};
    cr_assert_eq(tally_dbtree_node(bad[i][0], bad[i][1], bad[i][2], &n), -1, "case %zu accepted", i);
    cr_assert(n.parent == -1 && n.child[0] == -1 && n.child[1] == -1 && n.nchildren == 0, "case %zu", i);
  }
  cr_assert_eq(tally_dbtree_root(0, 0), -1);
  cr_assert_eq(tally_dbtree_root(4, 2), -1);
  cr_assert_eq(tally_dbtree_depth(0), -1);
  cr_assert_eq(tally_dbtree_depth(TALLY_DBTREE_MAX_RANKS + 1), -1);
  cr_assert_eq(tally_dbtree_depth(TALLY_DBTREE_MAX_RANKS), 21);
}
