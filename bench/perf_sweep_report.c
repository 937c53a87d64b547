/* perf_sweep_report.c: what tally-perf --sweep prints and writes. Its header lines; a table with
 * a row per size (each forced algorithm's time, the fastest, the tuner's choice, its predicted
 * and measured time and its time over the fastest's); a table of the cost model's predicted
 * over measured times; the summary (the size where the tuner's choice did worst, and at the
 * smallest and largest sizes how the latency algorithms and the ring compare); and the JSON file.
 * Rank 0 calls these. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "perf.h"

#define ALL_ALGOS ((1u << SWEEP_ALGOS) - 1) /* the rows leave the others unmeasured */
#define BIT(a) (1u << (a))

/* a / b where both were measured (or predicted); SWEEP_NONE otherwise. */
static double ratio(double a, double b) { return a >= 0 && b > 0 ? a / b : SWEEP_NONE; }

/* The algorithm of `mask` with the shortest measured time at this size; -1 if none ran. */
static int best_of(const struct sweep_row *row, unsigned mask) {
  int best = -1;
  for (int a = 0; a < SWEEP_ALGOS; a++) {
    if (!(mask & BIT(a)) || row->measured_us[a] < 0) continue;
    if (best < 0 || row->measured_us[a] < row->measured_us[best]) best = a;
  }
  return best;
}

static double time_of(const struct sweep_row *row, int a) { return a < 0 ? SWEEP_NONE : row->measured_us[a]; }

static double choice_over_best(const struct sweep_row *row) {
  return ratio(row->choice_us, time_of(row, best_of(row, ALL_ALGOS)));
}

/* One comparison of the summary: the time of algorithm `top` over that of `bottom` at a size. */
struct comparison {
  const struct sweep_row *row;
  int top, bottom;                      /* -1: none ran */
  const char *top_label, *bottom_label; /* why there is no ratio when one is missing ("the ring did not run") */
  double ratio;                         /* SWEEP_NONE: one of them did not run */
};

static struct comparison compare(const struct sweep_row *row, int top, const char *top_label, int bottom,
                                 const char *bottom_label) {
  struct comparison c = {row, top, bottom, top_label, bottom_label, ratio(time_of(row, top), time_of(row, bottom))};
  return c;
}

/* What the summary says, for the text and the JSON alike. */
struct findings {
  const struct sweep_row *worst; /* the size where the tuner's choice over the best is largest; NULL: none */
  double worst_ratio;
  struct comparison smallest; /* the better latency algorithm over the bandwidth one, at the smallest size */
  struct comparison largest;  /* the bandwidth algorithm over the best of the others, at the largest size */
};

/* "the better of tree and rhd", "bruck": the latency algorithms, as the summary names them. */
static const char *latency_label(const struct sweep_algos *al, char *buf, size_t len) {
  int n = 0;
  for (int a = 0; a < al->n; a++)
    if (al->latency & BIT(a)) n++;
  size_t used = 0;
  buf[0] = '\0';
  if (n > 1) used = (size_t)snprintf(buf, len, "the better of ");
  for (int a = 0, k = 0; a < al->n && used < len; a++) {
    if (!(al->latency & BIT(a))) continue;
    used += (size_t)snprintf(buf + used, len - used, "%s%s", k == 0 ? "" : k == n - 1 ? " and " : ", ", al->names[a]);
    k++;
  }
  return buf;
}

/* "the ring", "pairwise" */
static const char *bandwidth_label(const struct sweep_algos *al) {
  return strcmp(al->names[al->bandwidth], "ring") == 0 ? "the ring" : al->names[al->bandwidth];
}

static struct findings find(const struct sweep *s) {
  struct findings f = {.worst = NULL, .worst_ratio = SWEEP_NONE};
  for (size_t i = 0; i < s->nrows; i++) {
    double r = choice_over_best(&s->rows[i]);
    if (r >= 0 && r > f.worst_ratio) {
      f.worst = &s->rows[i];
      f.worst_ratio = r;
    }
  }
  if (s->nrows == 0) return f;
  const struct sweep_row *first = &s->rows[0], *last = &s->rows[s->nrows - 1];
  const struct sweep_algos *al = s->algos;
  int bw = al->bandwidth;
  static char bw_missing[64], latency_missing[96]; /* "the ring did not run", "neither tree nor rhd ran" */
  snprintf(bw_missing, sizeof bw_missing, "%s did not run", bandwidth_label(al));
  int nlat = 0;
  for (int a = 0; a < al->n; a++)
    if (al->latency & BIT(a)) nlat++;
  int used = snprintf(latency_missing, sizeof latency_missing, "%s", nlat > 1 ? "neither " : "");
  for (int a = 0, k = 0; a < al->n; a++)
    if (al->latency & BIT(a))
      used += snprintf(latency_missing + used, sizeof latency_missing - (size_t)used, "%s%s", k++ ? " nor " : "",
                       al->names[a]);
  snprintf(latency_missing + used, sizeof latency_missing - (size_t)used, nlat > 1 ? " ran" : " did not run");
  f.smallest = compare(first, best_of(first, al->latency), latency_missing, bw, bw_missing);
  f.largest = compare(last, bw, bw_missing, best_of(last, ALL_ALGOS & ~BIT(bw)), "no other algorithm ran");
  return f;
}

/* The algorithms' names while rank 0 reports (the collective's, set by print_sweep_header). */
static const struct sweep_algos *names_of = NULL;

static const char *name_of(int a) { return a < 0 || names_of == NULL ? "-" : names_of->names[a]; }

/* A time as the tables show it, without the padding: "-" where it was not measured or predicted. */
static const char *show_us(char *buf, size_t len, double us) {
  if (us < 0) return "-";
  format_time(buf, len, us);
  while (*buf == ' ') buf++;
  return buf;
}

static const char *show_ratio(char *buf, size_t len, double r) {
  if (r < 0) return "-";
  snprintf(buf, len, "%.2f", r);
  return buf;
}

/* The algorithms the library refused to force, those with the same reason on one line. */
static void print_refused(const struct sweep *s) {
  bool done[SWEEP_ALGOS] = {false};
  for (int a = 0; a < s->algos->n; a++) {
    if (s->refused[a] == NULL || done[a]) continue;
    printf("# Not run:");
    for (int b = a; b < s->algos->n; b++)
      if (s->refused[b] != NULL && strcmp(s->refused[b], s->refused[a]) == 0) {
        printf("%s %s", b == a ? "" : ",", s->algos->names[b]);
        done[b] = true;
      }
    printf(": %s\n", s->refused[a]);
  }
}

void print_sweep_header(const struct bench *b, const struct sweep *s) {
  const struct options *o = b->o;
  names_of = s->algos;
  printf("# Sweep: %s with each algorithm forced by TALLY_ALGO, then as the tuner chooses with nothing forced.\n",
         coll_name(o->coll));
  printf("# Out-of-place; each time (us) is the median of %d timed loop%s of %d iterations (the slowest rank's\n",
         o->repeat, o->repeat == 1 ? "" : "s", o->iters);
  printf(
      "# average), the algorithms taking turns. '-': the algorithm cannot run that size here (the library\n"
      "# would run %s instead). choice/best: the tuner's measured time over the fastest algorithm's.\n",
      bandwidth_label(s->algos));
  if (o->ignored_algo != NULL) printf("# TALLY_ALGO=%s from the environment is not used.\n", o->ignored_algo);
  print_refused(s);
  printf("#\n#%11s", "size (B)");
  for (int a = 0; a < s->algos->n; a++)
    if (s->refused[a] == NULL) printf("  %8s", s->algos->names[a]);
  printf("  %7s  %7s  %9s  %9s  %11s\n", "best", "choice", "predicted", "measured", "choice/best");
  fflush(stdout);
}

void print_sweep_row(const struct sweep *s, const struct sweep_row *row) {
  char t[32];
  printf("%12zu", row->bytes);
  for (int a = 0; a < s->algos->n; a++)
    if (s->refused[a] == NULL) printf("  %8s", show_us(t, sizeof t, row->measured_us[a]));
  printf("  %7s  %7s", name_of(best_of(row, ALL_ALGOS)), row->choice);
  printf("  %9s", show_us(t, sizeof t, row->choice_predicted_us));
  printf("  %9s", show_us(t, sizeof t, row->choice_us));
  printf("  %11s\n", show_ratio(t, sizeof t, choice_over_best(row)));
  fflush(stdout);
}

/* The cost model's table: a line per size and algorithm measured there. */
static void print_model_table(const struct sweep *s) {
  char p[32], m[32], e[32];
  printf("#\n# The cost model: predicted and measured times (us); error = predicted / measured\n");
  printf("#%11s  %9s  %9s  %9s  %7s\n", "size (B)", "algorithm", "predicted", "measured", "error");
  for (size_t i = 0; i < s->nrows; i++) {
    const struct sweep_row *row = &s->rows[i];
    for (int a = 0; a < s->algos->n; a++) {
      if (row->measured_us[a] < 0) continue;
      printf("%12zu  %9s  %9s  %9s  %7s\n", row->bytes, s->algos->names[a], show_us(p, sizeof p, row->predicted_us[a]),
             show_us(m, sizeof m, row->measured_us[a]),
             show_ratio(e, sizeof e, ratio(row->predicted_us[a], row->measured_us[a])));
    }
  }
}

/* One comparison line of the summary: "WHICH size (S B), WHAT: top T us / bottom B us = R". */
static void print_comparison(const char *which, const char *what, const struct comparison *c) {
  char t[32], b[32];
  printf("# %s size (%zu B), %s: ", which, c->row->bytes, what);
  if (c->ratio < 0) {
    printf("n/a: %s at this size\n", time_of(c->row, c->top) < 0 ? c->top_label : c->bottom_label);
    return;
  }
  printf("%s %s us / %s %s us = %.2f\n", name_of(c->top), show_us(t, sizeof t, time_of(c->row, c->top)),
         name_of(c->bottom), show_us(b, sizeof b, time_of(c->row, c->bottom)), c->ratio);
}

void print_sweep_end(const struct options *o, const struct sweep *s) {
  print_model_table(s);
  struct findings f = find(s);
  printf("#\n");
  if (f.worst != NULL) {
    char c[32], b[32];
    int best = best_of(f.worst, ALL_ALGOS);
    printf("# Tuner's worst size (%zu B), its choice over the best: choice %s %s us / best %s %s us = %.2f\n",
           f.worst->bytes, f.worst->choice, show_us(c, sizeof c, f.worst->choice_us), name_of(best),
           show_us(b, sizeof b, time_of(f.worst, best)), f.worst_ratio);
  }
  if (s->nrows > 0) {
    char lat[96], what[160];
    snprintf(what, sizeof what, "%s over %s", latency_label(s->algos, lat, sizeof lat), bandwidth_label(s->algos));
    print_comparison("Smallest", what, &f.smallest);
    snprintf(what, sizeof what, "%s over the best other", bandwidth_label(s->algos));
    print_comparison("Largest", what, &f.largest);
  }
  print_wrong(o, s->wrong);
  printf("#\n");
  fflush(stdout);
}

/* JSON output. */

/* `text` as a JSON string. */
static void json_string(FILE *f, const char *text) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

/* A time or ratio, null where there is none. */
static void json_number(FILE *f, double v) {
  if (v < 0)
    fprintf(f, "null");
  else
    fprintf(f, "%.3f", v);
}

static void json_name(FILE *f, int a) {
  if (a < 0)
    fprintf(f, "null");
  else
    json_string(f, name_of(a));
}

/* {"ring": T, "tree": T, ...} of one row's measured or predicted times. */
static void json_per_algo(FILE *f, const double *us) {
  fputc('{', f);
  for (int a = 0; a < names_of->n; a++) {
    fprintf(f, "%s\"%s\": ", a ? ", " : "", names_of->names[a]);
    json_number(f, us[a]);
  }
  fputc('}', f);
}

static void json_row(FILE *f, const struct options *o, const struct sweep_row *row) {
  int best = best_of(row, ALL_ALGOS);
  fprintf(f, "{\"bytes\": %zu, \"count\": %zu, \"measured_us\": ", row->bytes, row->count);
  json_per_algo(f, row->measured_us);
  fprintf(f, ", \"predicted_us\": ");
  json_per_algo(f, row->predicted_us);
  fprintf(f, ", \"best\": ");
  json_name(f, best);
  fprintf(f, ", \"best_us\": ");
  json_number(f, time_of(row, best));
  fprintf(f, ", \"choice\": ");
  json_string(f, row->choice);
  fprintf(f, ", \"choice_predicted_us\": ");
  json_number(f, row->choice_predicted_us);
  fprintf(f, ", \"choice_us\": ");
  json_number(f, row->choice_us);
  fprintf(f, ", \"choice_over_best\": ");
  json_number(f, choice_over_best(row));
  if (o->check)
    fprintf(f, ", \"wrong\": %llu}", (unsigned long long)row->wrong);
  else
    fprintf(f, ", \"wrong\": null}");
}

static void json_comparison(FILE *f, const char *name, const struct comparison *c) {
  fprintf(f, "  \"%s\": {\"bytes\": %zu, \"top\": ", name, c->row->bytes);
  json_name(f, c->top);
  fprintf(f, ", \"bottom\": ");
  json_name(f, c->bottom);
  fprintf(f, ", \"ratio\": ");
  json_number(f, c->ratio);
  fprintf(f, "},\n");
}

void write_sweep_json(FILE *f, const struct bench *b, const struct sweep *s) {
  const struct options *o = b->o;
  fprintf(f, "{\n  \"tool\": \"tally-perf\",\n  \"mode\": \"sweep\",\n  \"collective\": \"%s\",\n  \"nranks\": %d,\n",
          coll_name(o->coll), s->nranks);
  fprintf(f, "  \"datatype\": \"%s\",\n  \"op\": \"%s\",\n  \"root\": %d,\n", tally_datatype_name(o->type),
          coll_reduces(o->coll) ? tally_op_name(o->op) : "none", coll_rooted(o->coll) ? o->root : -1);
  fprintf(f, "  \"iters\": %d,\n  \"warmup_iters\": %d,\n  \"repeat\": %d,\n  \"check\": %s,\n  \"refused\": {",
          o->iters, o->warmup, o->repeat, o->check ? "true" : "false");
  names_of = s->algos;
  bool first = true;
  for (int a = 0; a < s->algos->n; a++) {
    if (s->refused[a] == NULL) continue;
    fprintf(f, "%s\"%s\": ", first ? "" : ", ", s->algos->names[a]);
    json_string(f, s->refused[a]);
    first = false;
  }
  fprintf(f, "},\n  \"rows\": [");
  for (size_t i = 0; i < s->nrows; i++) {
    fprintf(f, "%s\n    ", i ? "," : "");
    json_row(f, o, &s->rows[i]);
  }
  fprintf(f, "\n  ],\n");
  struct findings fd = find(s);
  fprintf(f, "  \"worst\": ");
  if (fd.worst != NULL)
    fprintf(f, "{\"bytes\": %zu, \"choice_over_best\": %.3f},\n", fd.worst->bytes, fd.worst_ratio);
  else
    fprintf(f, "null,\n");
  if (s->nrows > 0) { /* smallest_tree_rhd_over_ring, largest_ring_over_others; for alltoall bruck, pairwise */
    char key[96];
    int used = snprintf(key, sizeof key, "smallest");
    for (int a = 0; a < s->algos->n; a++)
      if (s->algos->latency & BIT(a))
        used += snprintf(key + used, sizeof key - (size_t)used, "_%s", s->algos->names[a]);
    snprintf(key + used, sizeof key - (size_t)used, "_over_%s", s->algos->names[s->algos->bandwidth]);
    json_comparison(f, key, &fd.smallest);
    snprintf(key, sizeof key, "largest_%s_over_others", s->algos->names[s->algos->bandwidth]);
    json_comparison(f, key, &fd.largest);
  }
  fprintf(f, "  \"wrong\": ");
  if (o->check)
    fprintf(f, "%llu\n}\n", (unsigned long long)s->wrong);
  else
    fprintf(f, "null\n}\n");
}
