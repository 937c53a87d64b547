/* The shape of the double binary tree (Sanders, Speck and Träff 2009, "Two-tree algorithms for
 * full bandwidth broadcast, reduction and scan"; NCCL's double binary tree): for each rank, its
 * parent and children in two complementary binary trees over ranks 0 .. p-1. Pure functions of
 * (nranks, rank, tree), O(log p) each; the algorithm that moves data along the trees lives
 * elsewhere.
 *
 * Tree 0 is the in-order binary tree over x = rank + 1 = 1 .. p. A node's level is the number of
 * trailing zero bits of x: the leaves are the odd x (even ranks), and the node x with lowest set
 * bit b > 1 has children x - b/2 and x + b/2. The root is the largest power of two <= p. A parent
 * that falls beyond p is replaced by its own parent until it is within range; symmetrically a right
 * child beyond p is replaced by its own left child until it is within range (none when x == p).
 * So every node has its left child, the tree is a search tree (left subtree < rank < right
 * subtree), and it has exactly floor(log2 p) + 1 levels.
 *
 * Tree 1 is tree 0 with its ranks renamed, as in NCCL's ncclGetDtree:
 *   p even: mirrored, rank s of tree 0 becomes p-1-s;
 *   p odd:  shifted, rank s of tree 0 becomes (s+1) mod p (so rank r plays in tree 1 the part of
 *           rank (r-1) mod p in tree 0; the other direction would leave the even ranks leaves in
 *           both trees).
 * The interior (child-having) ranks of tree 0 are those with odd rank; the renaming turns odd ranks
 * into even ranks, so no rank has children in both trees, for every p >= 1. For even p each rank is
 * interior in exactly one tree (p >= 2); for odd p every rank but 0 is, and rank 0 is a leaf in
 * both. With p = 1 the only rank is the root, and a leaf, of both.
 *
 * p = 8 (mirrored)                          p = 7 (shifted)
 *
 *   tree 0             tree 1                 tree 0            tree 1
 *         3-------7    0-------4                    3                 4
 *       /   \                /   \                /   \             /   \
 *     1       5            2       6            1       5         2       6
 *    / \     / \          / \     / \          / \     / \       / \     / \
 *   0   2   4   6        1   3   5   7        0   2   4   6     1   3   0   5
 *
 * (7 and 0 have one child each: 3 and 4. In tree 1 for p = 7, 6's children are 0 and 5.)
 *
 * Depth: both trees have floor(log2 p) + 1 levels (a root alone is one level), within the bound
 * ceil(log2 p) + 1 that NCCL's trees meet (NCCL's tree 0 puts rank 0 above an in-order tree over
 * ranks 1 .. p-1, so it has ceil(log2 p) + 1 levels for p >= 2; ours is one level shallower when p
 * is not a power of two, the same otherwise). */
#ifndef TALLY_DBTREE_H
#define TALLY_DBTREE_H

#define TALLY_DBTREE_MAX_RANKS (1 << 20)

struct tally_dbtree_node {
  int parent;    /* -1: this rank is the root */
  int child[2];  /* the first nchildren hold children, lower rank first; the rest are -1 */
  int nchildren; /* 0, 1 or 2 */
};

/* Fills `out` with `rank`'s place in tree `tree` (0 or 1) over `nranks` ranks. Returns 0, or -1
 * (and `out` all -1, no children) when nranks is not in 1 .. TALLY_DBTREE_MAX_RANKS, rank not in
 * 0 .. nranks-1 or tree not 0 or 1. */
int tally_dbtree_node(int nranks, int rank, int tree, struct tally_dbtree_node *out);

/* The root of tree `tree`, or -1 for arguments out of range as above. */
int tally_dbtree_root(int nranks, int tree);

/* Levels of the deeper tree (both have the same): floor(log2 nranks) + 1, so 1 for one rank; the
 * longest root-to-leaf path has one edge fewer. -1 for nranks out of range. */
int tally_dbtree_depth(int nranks);

#endif
