/* perf_report.c: tally-perf's output: the header, the rank list, the nccl-tests style table
 * and its summary lines (Out of bounds values, Avg bus bandwidth), and the JSON file. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf.h"

static void format_time(char *buf, size_t len, double us) {
  if (us >= 10000.0)
    snprintf(buf, len, "%7.0f", us);
  else if (us >= 100.0)
    snprintf(buf, len, "%7.1f", us);
  else
    snprintf(buf, len, "%7.2f", us);
}

void print_header(const struct bench *b) {
  const struct options *o = b->o;
  int version = 0;
  tally_get_version(&version);
  printf("# Tally tally-perf: %s, %d rank%s, minBytes %zu maxBytes %zu step: ", coll_name(o->coll), b->nranks,
         b->nranks == 1 ? "" : "s", o->minbytes, o->maxbytes);
  if (o->stepbytes)
    printf("%zu(bytes)", o->stepbytes);
  else
    printf("%zu(factor)", o->factor);
  printf(" warmup iters: %d iters: %d validation: %d\n", o->warmup, o->iters, o->check);
  printf("# Tally version %d.%d.%d, datatype %s, op %s", version / 10000, version / 100 % 100, version % 100,
         tally_datatype_name(o->type), coll_reduces(o->coll) ? tally_op_name(o->op) : "none");
  if (coll_rooted(o->coll)) printf(", root %d", o->root);
  printf("\n#\n");
}

void print_ranks(const struct bench *b) {
  enum { REC = 96 };
  char mine[REC];
  char host[64] = "?";
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  memset(mine, 0, sizeof mine);
  snprintf(mine, sizeof mine, "%ld %s", (long)getpid(), host);
  char *all = malloc((size_t)b->nranks * REC);
  if (all == NULL) {
    fprintf(stderr, "tally-perf: rank %d: out of memory\n", b->rank);
    exit(1);
  }
  TRY(b, tally_allgather(mine, all, REC, TALLY_UINT8, b->comm, NULL));
  if (b->rank == 0) {
    printf("# Using ranks\n");
    for (int r = 0; r < b->nranks; r++) {
      char *rec = all + (size_t)r * REC;
      rec[REC - 1] = '\0';
      char *sp = strchr(rec, ' ');
      printf("#  Rank %2d Pid %7.*s on %s\n", r, sp ? (int)(sp - rec) : 0, rec, sp ? sp + 1 : rec);
    }
    printf("#\n");
  }
  free(all);
}

void print_table_header(void) {
  static const char *const place[2] = {"     time   algbw   busbw #wrong", "     (us)  (GB/s)  (GB/s)       "};
  printf("#%61s%s%22s%s\n", "", "out-of-place", "", "in-place");
  printf("#%11s  %12s  %8s  %6s  %6s%s%s\n", "size", "count", "type", "redop", "root", place[0], place[0]);
  printf("#%11s  %12s  %8s  %6s  %6s%s%s\n", "(B)", "(elements)", "", "", "", place[1], place[1]);
}

void print_row(const struct bench *b, const struct row *row) {
  const struct options *o = b->o;
  printf("%12zu  %12zu  %8s  %6s  %6d", row->bytes, row->count, tally_datatype_name(o->type),
         coll_reduces(o->coll) ? tally_op_name(o->op) : "none", coll_rooted(o->coll) ? o->root : -1);
  for (int p = 0; p < 2; p++) {
    char t[32], w[32];
    format_time(t, sizeof t, row->place[p].time_us);
    if (o->check)
      snprintf(w, sizeof w, "%llu", (unsigned long long)row->place[p].wrong);
    else
      snprintf(w, sizeof w, "N/A");
    printf("  %7s  %6.2f  %6.2f  %5s", t, row->place[p].algbw, row->place[p].busbw, w);
  }
  printf("\n");
  fflush(stdout);
}

void write_json(FILE *f, const struct bench *b, const struct row *rows, size_t nrows, uint64_t wrong,
                       double avg_busbw) {
  const struct options *o = b->o;
  fprintf(f, "{\n  \"tool\": \"tally-perf\",\n  \"collective\": \"%s\",\n  \"nranks\": %d,\n", coll_name(o->coll),
          b->nranks);
  fprintf(f, "  \"datatype\": \"%s\",\n  \"op\": \"%s\",\n  \"root\": %d,\n", tally_datatype_name(o->type),
          coll_reduces(o->coll) ? tally_op_name(o->op) : "none", coll_rooted(o->coll) ? o->root : -1);
  fprintf(f, "  \"iters\": %d,\n  \"warmup_iters\": %d,\n  \"check\": %s,\n  \"rows\": [", o->iters, o->warmup,
          o->check ? "true" : "false");
  for (size_t i = 0; i < nrows; i++) {
    fprintf(f, "%s\n    {\"bytes\": %zu, \"count\": %zu", i ? "," : "", rows[i].bytes, rows[i].count);
    for (int p = 0; p < 2; p++) {
      const struct place_result *r = &rows[i].place[p];
      fprintf(f, ", \"%s\": {\"time_us\": %.3f, \"algbw\": %.6f, \"busbw\": %.6f, \"wrong\": ",
              p ? "in_place" : "out_of_place", r->time_us, r->algbw, r->busbw);
      if (o->check)
        fprintf(f, "%llu}", (unsigned long long)r->wrong);
      else
        fprintf(f, "null}");
    }
    fprintf(f, "}");
  }
  fprintf(f, "\n  ],\n  \"wrong\": ");
  if (o->check)
    fprintf(f, "%llu", (unsigned long long)wrong);
  else
    fprintf(f, "null");
  fprintf(f, ",\n  \"avg_busbw\": %.6f\n}\n", avg_busbw);
}

/* The lines after the table: the total of wrong elements and the average bus bandwidth. */
void print_summary(const struct options *o, uint64_t wrong, double avg_busbw) {
  if (o->check)
    printf("# Out of bounds values : %llu %s\n", (unsigned long long)wrong, wrong ? "FAILED" : "OK");
  else
    printf("# Out of bounds values : N/A (run with -c 1 to check)\n");
  printf("# Avg bus bandwidth    : %g \n#\n", avg_busbw);
  fflush(stdout);
}
