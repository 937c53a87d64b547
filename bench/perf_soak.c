/* perf_soak.c: tally-perf --soak SECONDS. Runs random collectives (allreduce, allgather,
 * reduce-scatter, broadcast, reduce) with random sizes, datatypes, ops and roots, in place and out
 * of place, back to back for SECONDS; checks every result exactly against perf_check.c's data
 * (and that out-of-place calls left their inputs alone), and samples the resident memory (VmRSS)
 * after the first operations and at the end. Every rank draws the same sequence from --seed;
 * rank 0's clock decides when to stop, and the decision rides on an allreduce every few
 * operations, so all ranks stop after the same operation.
 *
 * Every SPLIT_EVERY operations after the warm-up all ranks split the soak's communicator with
 * tally_comm_split: colors (some ranks TALLY_SPLIT_NOCOLOR) and keys (in order, reversed, or
 * random with ties) drawn from a second sequence of the seed, the same on every rank; each child
 * checks its rank and size against what the colors and keys say, runs SPLIT_OPS random
 * collectives checked like the others, and is destroyed. The collectives on the soak's own
 * communicator are the same sequence with or without the splits. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

enum {
  SOAK_MAX_BYTES = 4 << 20, /* the largest buffer an operation uses */
  STOP_VOTE_EVERY = 8,      /* operations between two votes on whether to stop */
  WARMUP_ROOTS = 3,         /* roots 0, 1, 2: every rank is root, first link and inner link of a chain */
  WRONG_OPS_DESCRIBED = 10, /* wrong operations each rank describes on stderr */
  DESCRIPTION_LEN = 160,
  SPLIT_EVERY = 32, /* operations on the soak's communicator between two splits */
  SPLIT_OPS = 4,    /* checked collectives on each child */
  SPLIT_MAX_COLORS = 4,
};
/* The splits' own random sequence: the seed mixed with this, so that adding them left the soak's
 * sequence of collectives as it was. */
#define SPLIT_SEED_MIX 0x5EEDC0105F17ull
/* The warm-up runs each collective at SOAK_MAX_BYTES with each root, in place and out of place;
 * the first RSS sample comes a few operations after it. */
enum { WARMUP_OPS = NUM_TUNED_COLLS * WARMUP_ROOTS * 2, RSS_START_AFTER = WARMUP_OPS + 10 };
#define PROGRESS_EVERY_S 60.0 /* rank 0 prints a progress line this often */

/* One drawn operation. */
struct soak_op {
  coll_t coll;
  tally_datatype_t type;
  tally_op_t op; /* reducing collectives only */
  int root;      /* broadcast and reduce only */
  bool inplace;
  size_t bytes; /* the whole-buffer size, as set_buffer_size takes it */
};

/* splitmix64: a counter stepped by a large odd constant, then mixed. Integer arithmetic only,
 * so that every rank, on any machine, draws the same sequence from the same seed. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15u);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
  return z ^ (z >> 31);
}

static uint64_t random_below(uint64_t *state, uint64_t n) { return next_random(state) % n; }

/* A number from lo to hi (1 <= lo <= hi), log-uniform: a random power-of-two range, then a
 * uniform number within it; draws again when that falls outside lo..hi. */
static size_t random_log_uniform(uint64_t *state, size_t lo, size_t hi) {
  unsigned top = 0;
  while ((hi >> top) > 1) top++; /* 2^top <= hi < 2^(top+1) */
  for (;;) {
    size_t base = (size_t)1 << random_below(state, top + 1);
    size_t v = base + (size_t)random_below(state, base);
    if (v >= lo && v <= hi) return v;
  }
}

/* Operation `index` of the sequence. The warm-up runs every collective at the largest size in
 * every role a rank can have (in place and out of place; for broadcast and reduce the root, the
 * rank after it and any other), so that the buffers the library keeps have grown to their largest
 * before the first RSS sample; after it everything is random. Datatype and op are drawn again
 * until the check data is exact for them on this many ranks (min and max always are). */
static struct soak_op draw_op(uint64_t *state, uint64_t index, int nranks) {
  struct soak_op p;
  bool warmup = index < WARMUP_OPS;
  p.coll = warmup ? (coll_t)(index / (2 * WARMUP_ROOTS)) : (coll_t)random_below(state, NUM_TUNED_COLLS);
  p.inplace = warmup ? index % 2 == 1 : random_below(state, 2) == 1;
  do {
    p.type = (tally_datatype_t)random_below(state, TALLY_NUM_DATATYPES);
    p.op = coll_reduces(p.coll) ? (tally_op_t)random_below(state, TALLY_NUM_OPS) : TALLY_SUM;
  } while (!check_data_exact(p.coll, p.type, p.op, nranks));
  p.root = coll_rooted(p.coll) ? (int)random_below(state, (uint64_t)nranks) : 0;
  if (warmup && coll_rooted(p.coll)) p.root = (int)(index / 2 % WARMUP_ROOTS) % nranks;
  size_t tsize = tally_datatype_size(p.type);
  /* allgather and reduce-scatter split the buffer into one block per rank: at least 1 element each */
  bool blocked = p.coll == COLL_ALLGATHER || p.coll == COLL_REDUCESCATTER;
  size_t min_elems = blocked ? (size_t)nranks : 1, max_elems = SOAK_MAX_BYTES / tsize;
  p.bytes = (warmup ? max_elems : random_log_uniform(state, min_elems, max_elems)) * tsize;
  return p;
}

/* Makes `b` (whose options are `current`) describe operation p. */
static void set_operation(struct bench *b, struct options *current, const struct soak_op *p) {
  current->coll = p->coll;
  current->type = p->type;
  current->op = p->op;
  current->root = p->root;
  b->tsize = tally_datatype_size(p->type);
  set_buffer_size(b, p->bytes);
}

/* "allreduce count 77 int8 sum in place": what a rerun needs to find the operation. */
static void describe_op(char *buf, size_t len, const struct bench *b, bool inplace) {
  const struct options *c = b->o;
  char op[32] = "", root[32] = "";
  if (coll_reduces(c->coll)) snprintf(op, sizeof op, " %s", tally_op_name(c->op));
  if (coll_rooted(c->coll)) snprintf(root, sizeof root, " root %d", c->root);
  snprintf(buf, len, "%s count %zu %s%s%s %s", coll_name(c->coll), b->count, tally_datatype_name(c->type), op, root,
           inplace ? "in place" : "out of place");
}

/* One line on stderr about operation `index`: what it was, what happened (printf-style), and
 * what repeats it. */
static void report_op(const struct bench *b, uint64_t index, bool inplace, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report_op(const struct bench *b, uint64_t index, bool inplace, const char *fmt, ...) {
  char desc[DESCRIPTION_LEN];
  describe_op(desc, sizeof desc, b, inplace);
  fprintf(stderr, "tally-perf: rank %d: soak operation #%llu (%s): ", b->rank, (unsigned long long)index, desc);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "; --seed %llu on %d ranks repeats the sequence\n", b->o->seed, b->nranks);
  fflush(stderr);
}

/* This process's resident set size in kB (VmRSS in /proc/self/status); -1 where there is none. */
/* malloc's bytes in use in kB: what a leak grows. */
static long long heap_kb(void) {
  struct mallinfo2 m = mallinfo2();
  return (long long)((m.uordblks + m.hblkhd) / 1024);
}

static long long read_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  char line[256];
  long long kb = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0 && sscanf(line + 6, "%lld", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* What a split drew: each rank's color (TALLY_SPLIT_NOCOLOR or 0..) and key. */
struct split_plan {
  int *color, *key;
};

/* This rank's expected place in its child: the rank and size the colors and keys give. */
static void expected_place(const struct split_plan *plan, int nranks, int rank, int *child_rank, int *child_size) {
  *child_rank = 0;
  *child_size = 0;
  for (int r = 0; r < nranks; r++) {
    if (plan->color[r] != plan->color[rank]) continue;
    (*child_size)++;
    if (plan->key[r] < plan->key[rank] || (plan->key[r] == plan->key[rank] && r < rank)) (*child_rank)++;
  }
}

/* Draws the next split's colors and keys for all ranks, and the random state of each child's
 * operations (the same on the ranks of one color). */
static uint64_t draw_split(uint64_t *state, int nranks, struct split_plan *plan) {
  int ncolors = 1 + (int)random_below(state, (uint64_t)(nranks < SPLIT_MAX_COLORS ? nranks : SPLIT_MAX_COLORS));
  int key_order = (int)random_below(state, 3); /* 0: rank order, 1: reversed, 2: random keys with ties */
  for (int r = 0; r < nranks; r++) {
    plan->color[r] = random_below(state, 8) == 0 ? TALLY_SPLIT_NOCOLOR : (int)random_below(state, (uint64_t)ncolors);
    plan->key[r] = key_order == 0 ? r : key_order == 1 ? nranks - r : (int)random_below(state, (uint64_t)nranks);
  }
  return next_random(state);
}

/* One split of the soak's communicator: collective over b->comm. Adds the child's operations to
 * `s` (and its wrong elements, a wrong rank or size counting as one); returns a failed call's
 * result, with a message on stderr. */
static tally_result_t soak_split(const struct bench *b, struct options *current, uint64_t *split_state,
                                 struct split_plan *plan, uint64_t index, struct soak_summary *s, uint64_t *wrong_ops) {
  uint64_t ops_state = draw_split(split_state, b->nranks, plan);
  int color = plan->color[b->rank];
  tally_comm_t child = NULL;
  tally_result_t r = tally_comm_split(b->comm, color, plan->key[b->rank], &child);
  if (r != TALLY_SUCCESS) {
    fprintf(stderr, "tally-perf: rank %d: soak split #%llu before operation #%llu (color %d, key %d): %s: %s\n",
            b->rank, (unsigned long long)s->splits, (unsigned long long)index, color, plan->key[b->rank],
            tally_result_string(r), tally_comm_last_error(b->comm));
    return r;
  }
  s->splits++;
  if (color == TALLY_SPLIT_NOCOLOR) {
    if (child != NULL) {
      fprintf(stderr, "tally-perf: rank %d: soak split #%llu: TALLY_SPLIT_NOCOLOR gave a communicator\n", b->rank,
              (unsigned long long)s->splits - 1);
      s->wrong_elements++;
      tally_comm_destroy(child);
    }
    return TALLY_SUCCESS;
  }
  struct bench cb = *b;
  cb.comm = child;
  int want_rank, want_size;
  expected_place(plan, b->nranks, b->rank, &want_rank, &want_size);
  if ((r = tally_comm_rank(child, &cb.rank)) != TALLY_SUCCESS ||
      (r = tally_comm_size(child, &cb.nranks)) != TALLY_SUCCESS) {
    fprintf(stderr, "tally-perf: rank %d: soak split #%llu: %s\n", b->rank, (unsigned long long)s->splits - 1,
            tally_result_string(r));
    tally_comm_destroy(child);
    return r;
  }
  if (cb.rank != want_rank || cb.nranks != want_size) {
    fprintf(stderr,
            "tally-perf: rank %d: soak split #%llu (color %d, key %d): rank %d of %d in the child, expected %d of %d; "
            "--seed %llu on %d ranks repeats it\n",
            b->rank, (unsigned long long)s->splits - 1, color, plan->key[b->rank], cb.rank, cb.nranks, want_rank,
            want_size, b->o->seed, b->nranks);
    s->wrong_elements++;
    tally_comm_destroy(child);
    return TALLY_ERR_INTERNAL;
  }
  ops_state += (uint64_t)color * 0x9E3779B97F4A7C15u; /* the ranks of one color draw the same operations */
  for (int k = 0; k < SPLIT_OPS; k++) {
    struct soak_op p = draw_op(&ops_state, UINT64_MAX, cb.nranks); /* past the warm-up: random */
    set_operation(&cb, current, &p);
    char *send, *recv;
    place_buffers(&cb, p.inplace, &send, &recv);
    fill_check_inputs(&cb, send, recv);
    r = run_once(&cb, send, recv);
    if (r != TALLY_SUCCESS) {
      report_op(&cb, index, p.inplace, "on the child of split #%llu (rank %d of %d): %s: %s",
                (unsigned long long)s->splits - 1, cb.rank, cb.nranks, tally_result_string(r),
                tally_comm_last_error(child));
      tally_comm_destroy(child);
      return r;
    }
    uint64_t wrong = count_wrong_results(&cb, recv, p.inplace, true);
    uint64_t changed = p.inplace ? 0 : count_changed_inputs(&cb, send);
    s->split_operations++;
    s->operations++;
    s->per_coll[p.coll]++;
    s->in_place += p.inplace;
    s->bytes += cb.bytes;
    if (wrong + changed != 0) {
      if ((*wrong_ops)++ < WRONG_OPS_DESCRIBED)
        report_op(&cb, index, p.inplace,
                  "on the child of split #%llu: %llu wrong result elements, %llu changed input elements",
                  (unsigned long long)s->splits - 1, (unsigned long long)wrong, (unsigned long long)changed);
      s->wrong_elements += wrong + changed;
    }
  }
  if ((r = tally_barrier(child, NULL)) != TALLY_SUCCESS || (r = tally_comm_destroy(child)) != TALLY_SUCCESS) {
    fprintf(stderr, "tally-perf: rank %d: soak split #%llu: closing the child: %s: %s\n", b->rank,
            (unsigned long long)s->splits - 1, tally_result_string(r), tally_comm_last_error(child));
    return r;
  }
  return TALLY_SUCCESS;
}

int run_soak(tally_comm_t comm, const struct options *o) {
  struct options current = *o; /* the collective, datatype, op and root of the operation in flight */
  struct bench b;
  memset(&b, 0, sizeof b);
  b.o = &current;
  b.comm = comm;
  b.rank = -1;
  TRY(&b, tally_comm_rank(comm, &b.rank));
  TRY(&b, tally_comm_size(comm, &b.nranks));

  bool json_bad = false;
  FILE *json = open_json(&b, &json_bad);
  if (json_bad) {
    tally_comm_destroy(comm);
    return 1;
  }
  /* Every operation fits: allgather and reduce-scatter use count * nranks <= the drawn elements. */
  b.sbuf = alloc_buffer(&b, SOAK_MAX_BYTES);
  b.rbuf = alloc_buffer(&b, SOAK_MAX_BYTES);
  if (b.rank == 0) print_soak_header(&b, SOAK_MAX_BYTES, SPLIT_EVERY, SPLIT_OPS);
  print_ranks(&b);

  struct soak_summary s;
  memset(&s, 0, sizeof s);
  s.nranks = b.nranks;
  s.seconds = o->soak_seconds;
  s.seed = o->seed;
  s.ranks_combined = true;
  long long rss_start = -1, heap_start = -1;
  uint64_t random_state = o->seed, index = 0, wrong_ops = 0, split_state = o->seed ^ SPLIT_SEED_MIX;
  struct split_plan plan = {calloc((size_t)b.nranks, sizeof(int)), calloc((size_t)b.nranks, sizeof(int))};
  if (plan.color == NULL || plan.key == NULL) {
    fprintf(stderr, "tally-perf: rank %d: out of memory\n", b.rank);
    exit(1);
  }
  tally_result_t failure = TALLY_SUCCESS;
  TRY(&b, tally_barrier(comm, NULL));
  double start = now_seconds(), next_progress = start + PROGRESS_EVERY_S;

  for (;; index++) {
    if (index % STOP_VOTE_EVERY == 0) {
      /* Only rank 0 votes to stop; the sum also tells it the wrong elements so far. */
      uint64_t mine[2] = {b.rank == 0 && now_seconds() - start >= o->soak_seconds, s.wrong_elements}, all[2];
      failure = tally_allreduce(mine, all, 2, TALLY_UINT64, TALLY_SUM, comm, NULL);
      if (failure != TALLY_SUCCESS) {
        fprintf(stderr, "tally-perf: rank %d: the soak's stop vote before operation #%llu failed: %s: %s\n", b.rank,
                (unsigned long long)index, tally_result_string(failure), tally_comm_last_error(comm));
        break;
      }
      if (all[0] != 0) break;
      if (b.rank == 0 && now_seconds() >= next_progress) {
        printf("# %6.0f s: %llu operations, %llu wrong elements, RSS %lld kB on rank 0\n", now_seconds() - start,
               (unsigned long long)s.operations, (unsigned long long)all[1], read_rss_kb());
        next_progress += PROGRESS_EVERY_S;
      }
    }

    if (index >= WARMUP_OPS && (index - WARMUP_OPS) % SPLIT_EVERY == 0) {
      failure = soak_split(&b, &current, &split_state, &plan, index, &s, &wrong_ops);
      if (failure != TALLY_SUCCESS) break;
    }

    struct soak_op p = draw_op(&random_state, index, b.nranks);
    set_operation(&b, &current, &p);
    char *send, *recv;
    place_buffers(&b, p.inplace, &send, &recv);
    fill_check_inputs(&b, send, recv);
    failure = run_once(&b, send, recv);
    if (failure != TALLY_SUCCESS) {
      report_op(&b, index, p.inplace, "%s: %s", tally_result_string(failure), tally_comm_last_error(comm));
      break;
    }
    uint64_t wrong = count_wrong_results(&b, recv, p.inplace, true);
    uint64_t changed = p.inplace ? 0 : count_changed_inputs(&b, send);
    s.operations++;
    s.per_coll[p.coll]++;
    s.in_place += p.inplace;
    s.bytes += b.bytes;
    if (wrong + changed != 0) {
      if (wrong_ops++ < WRONG_OPS_DESCRIBED)
        report_op(&b, index, p.inplace, "%llu wrong result elements, %llu changed input elements",
                  (unsigned long long)wrong, (unsigned long long)changed);
      s.wrong_elements += wrong + changed;
    }
    if (rss_start < 0 && s.operations >= RSS_START_AFTER) {
      rss_start = read_rss_kb();
      heap_start = heap_kb();
      s.rss_start_after = s.operations;
    }
  }
  s.elapsed = now_seconds() - start;
  free(plan.color);
  free(plan.key);

  long long rss_end = read_rss_kb(), heap_end = heap_kb();
  if (heap_start < 0) heap_start = heap_end;
  s.heap_growth_kb = heap_end - heap_start;
  if (rss_start < 0) s.rss_start_after = s.operations;
  if (rss_start < 0) rss_start = rss_end; /* a soak too short for the first sample */
  s.rss_start_kb = rss_start;
  s.rss_end_kb = rss_end;
  s.rss_growth_kb = rss_start >= 0 && rss_end >= 0 ? rss_end - rss_start : -1;

  if (failure != TALLY_SUCCESS) {
    /* The communicator refuses further collectives: rank 0 reports what it saw on its own. */
    s.errors = 1;
    s.ranks_combined = false;
  } else {
    uint64_t wrong_total = 0;
    TRY(&b, tally_allreduce(&s.wrong_elements, &wrong_total, 1, TALLY_UINT64, TALLY_SUM, comm, NULL));
    s.wrong_elements = wrong_total;
    int64_t rss_mine[4] = {s.rss_start_kb, s.rss_end_kb, s.rss_growth_kb, s.heap_growth_kb}, rss_max[4];
    TRY(&b, tally_allreduce(rss_mine, rss_max, 4, TALLY_INT64, TALLY_MAX, comm, NULL));
    s.rss_start_kb = rss_max[0];
    s.rss_end_kb = rss_max[1];
    s.rss_growth_kb = rss_max[2];
    s.heap_growth_kb = rss_max[3];
  }

  if (b.rank == 0) {
    print_soak_summary(&s);
    if (json != NULL) {
      write_soak_json(json, &s);
      json_bad = !close_json(json, o);
    }
  }
  if (failure == TALLY_SUCCESS) {
    TRY(&b, tally_barrier(comm, NULL)); /* nobody exits before rank 0 has printed */
    TRY(&b, tally_comm_destroy(comm));
  } else {
    tally_comm_destroy(comm);
  }
  free(b.sbuf);
  free(b.rbuf);
  if (failure != TALLY_SUCCESS || json_bad) return 1;
  return s.wrong_elements != 0 ? STATUS_WRONG : 0;
}
