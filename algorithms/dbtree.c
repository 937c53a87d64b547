/* The shape of the double binary tree: parents and children in the two trees (see dbtree.h for
 * the construction and a sketch). Everything here is arithmetic on x = rank + 1 in tree 0; tree 1
 * renames tree 0's ranks. No call scans the ranks: each walks at most log2 p levels. */
#include "dbtree.h"

static int in_range(int nranks, int rank, int tree) {
  return nranks >= 1 && nranks <= TALLY_DBTREE_MAX_RANKS && rank >= 0 && rank < nranks && (tree == 0 || tree == 1);
}

static unsigned lowest_bit(unsigned x) { return x & (~x + 1u); }

/* The largest power of two <= p: tree 0's root, in x. */
static unsigned top_of(unsigned p) {
  unsigned top = 1;
  while (top <= p / 2) top *= 2;
  return top;
}

/* The parent of x in tree 0 over 1 .. p, in x; 0 for the root. The parent in the unbounded in-order
 * tree keeps x's bits above its lowest set bit b, clears b and sets 2b; one beyond p is replaced by
 * its own parent. x != top is below top, which is <= p, so the climb stops at top at the latest. */
static unsigned base_parent(unsigned p, unsigned x) {
  if (x == top_of(p)) return 0;
  unsigned up = x;
  do {
    unsigned b = lowest_bit(up);
    up = (up ^ b) | (b << 1);
  } while (up > p);
  return up;
}

/* The children of x in tree 0 over 1 .. p, in x, 0 for none; *left < x < *right. The left child
 * x - b/2 is always in range. The right child x + b/2 beyond p is replaced by its own left child
 * until it is in range: x + 1 <= p lies in the left spine below it, so that ends. */
static void base_children(unsigned p, unsigned x, unsigned *left, unsigned *right) {
  unsigned half = lowest_bit(x) / 2;
  *left = *right = 0;
  if (half == 0) return;
  *left = x - half;
  if (x == p) return;
  unsigned c = x + half;
  while (c > p) c -= lowest_bit(c) / 2;
  *right = c;
}

/* Rank r of tree 1 plays the part of rank base_rank(p, r) of tree 0, and rank s of tree 0 is rank
 * tree1_rank(p, s) of tree 1: mirrored for even p, shifted by one for odd p (NCCL's choice). */
static unsigned base_rank(unsigned p, unsigned r) { return p % 2 == 0 ? p - 1 - r : (r + p - 1) % p; }
static unsigned tree1_rank(unsigned p, unsigned s) { return p % 2 == 0 ? p - 1 - s : (s + 1) % p; }

/* x (1-based, 0 = none) of tree 0 as a rank of `tree` (-1 = none). */
static int rank_of(unsigned p, int tree, unsigned x) {
  if (x == 0) return -1;
  return (int)(tree == 0 ? x - 1 : tree1_rank(p, x - 1));
}

int tally_dbtree_node(int nranks, int rank, int tree, struct tally_dbtree_node *out) {
  out->parent = out->child[0] = out->child[1] = -1;
  out->nchildren = 0;
  if (!in_range(nranks, rank, tree)) return -1;

  unsigned p = (unsigned)nranks;
  unsigned x = (tree == 0 ? (unsigned)rank : base_rank(p, (unsigned)rank)) + 1;
  unsigned left, right;
  base_children(p, x, &left, &right);
  out->parent = rank_of(p, tree, base_parent(p, x));

  int a = rank_of(p, tree, left), b = rank_of(p, tree, right);
  if (a < 0) a = b, b = -1; /* in tree 0 a missing left child means no children at all */
  if (b >= 0 && b < a) {    /* the renaming of tree 1 may reverse or wrap the order */
    int t = a;
    a = b, b = t;
  }
  out->child[0] = a;
  out->child[1] = b;
  out->nchildren = (a >= 0) + (b >= 0);
  return 0;
}

int tally_dbtree_root(int nranks, int tree) {
  if (!in_range(nranks, 0, tree)) return -1;
  return rank_of((unsigned)nranks, tree, top_of((unsigned)nranks));
}

int tally_dbtree_depth(int nranks) {
  if (!in_range(nranks, 0, 0)) return -1;
  int levels = 0;
  for (unsigned p = (unsigned)nranks; p; p >>= 1) levels++;
  return levels;
}
