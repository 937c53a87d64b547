/* perf_report.c: tally-perf's output: the header, the rank list, the nccl-tests style table
 * and its summary lines (Out of bounds values, Avg bus bandwidth), and the JSON file; for
 * --soak, its header, summary and JSON file. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf.h"

/* A time in us, 7 characters wide, with fewer decimals as it grows. */
void format_time(char *buf, size_t len, double us) {
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
  printf("\n");
  if (o->coll == COLL_SENDRECV)
    printf("# sendrecv: ranks 0 and 1 ping-pong, the others wait; the time is one way (half the round trip)\n");
  printf("#\n");
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

/* The line for a size set_buffer_size refused: no whole element (in each rank's block). */
void print_skipped(const struct bench *b, size_t bytes) {
  printf("# %zu B skipped: less than one %s element%s\n", bytes, tally_datatype_name(b->o->type),
         bytes >= b->tsize ? " per rank" : "");
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

/* The line with the total of wrong elements. */
void print_wrong(const struct options *o, uint64_t wrong) {
  if (o->check)
    printf("# Out of bounds values : %llu %s\n", (unsigned long long)wrong, wrong ? "FAILED" : "OK");
  else
    printf("# Out of bounds values : N/A (run with -c 1 to check)\n");
}

/* The lines after the table: the total of wrong elements and the average bus bandwidth. */
void print_summary(const struct options *o, uint64_t wrong, double avg_busbw) {
  print_wrong(o, wrong);
  printf("# Avg bus bandwidth    : %g \n#\n", avg_busbw);
  fflush(stdout);
}

void print_soak_header(const struct bench *b, size_t max_bytes, int soak_split_every, int soak_split_ops) {
  int version = 0;
  tally_get_version(&version);
  printf("# Tally tally-perf soak: %d rank%s, %g s, seed %llu: random collectives, datatypes, ops and roots,\n",
         b->nranks, b->nranks == 1 ? "" : "s", b->o->soak_seconds, b->o->seed);
  printf("# 1 element to %zu KiB, in place and out of place, every result checked exactly; a random\n",
         max_bytes >> 10);
  printf("# split of the communicator every %d operations, %d of them on each child\n", soak_split_every,
         soak_split_ops);
  printf("# Tally version %d.%d.%d\n#\n", version / 10000, version / 100 % 100, version % 100);
}

static void print_rss(const char *label, long long kb, const char *note) {
  if (kb < 0)
    printf("#   %-18s unknown (no VmRSS in /proc/self/status)\n", label);
  else
    printf("#   %-18s %lld kB (%s)\n", label, kb, note);
}

void print_soak_summary(const struct soak_summary *s) {
  printf("# Soak summary: seed %llu, %d rank%s, %.1f s\n", s->seed, s->nranks, s->nranks == 1 ? "" : "s", s->elapsed);
  if (!s->ranks_combined)
    printf("# (a call failed, so the ranks could not combine their counts: these are rank 0's)\n");
  printf("#   %-18s %llu (%.0f per second)\n", "operations", (unsigned long long)s->operations,
         s->elapsed > 0 ? (double)s->operations / s->elapsed : 0.0);
  for (int c = 0; c < NUM_TUNED_COLLS; c++)
    printf("#     %-16s %llu\n", coll_name((coll_t)c), (unsigned long long)s->per_coll[c]);
  printf("#     %-16s %llu\n", "in place", (unsigned long long)s->in_place);
  printf("#   %-18s %llu (split off and destroyed; %llu of rank 0's operations ran on them)\n", "splits",
         (unsigned long long)s->splits, (unsigned long long)s->split_operations);
  printf("#   %-18s %llu (%.2f GiB: the sum of the operations' buffer sizes)\n", "bytes moved",
         (unsigned long long)s->bytes, (double)s->bytes / (1024.0 * 1024 * 1024));
  printf("#   %-18s %llu%s\n", "wrong results", (unsigned long long)s->wrong_elements,
         s->wrong_elements ? " elements (each rank lists its first wrong operations on stderr)" : "");
  printf("#   %-18s %llu\n", "errors", (unsigned long long)s->errors);
  char note[64];
  snprintf(note, sizeof note, "max over ranks, after %llu operations", (unsigned long long)s->rss_start_after);
  print_rss("RSS at start", s->rss_start_kb, s->ranks_combined ? note : "rank 0");
  print_rss("RSS at end", s->rss_end_kb, s->ranks_combined ? "max over ranks" : "rank 0");
  print_rss("RSS growth", s->rss_growth_kb, s->ranks_combined ? "max over ranks" : "rank 0");
  printf("#   %-18s %lld kB (malloc's bytes in use, between the RSS samples; %s)\n", "heap growth", s->heap_growth_kb,
         s->ranks_combined ? "max over ranks" : "rank 0");
  printf("# Soak %s\n#\n", s->wrong_elements == 0 && s->errors == 0 ? "OK" : "FAILED");
  fflush(stdout);
}

static void json_kb(FILE *f, const char *name, long long kb) {
  if (kb < 0)
    fprintf(f, "\"%s\": null", name);
  else
    fprintf(f, "\"%s\": %lld", name, kb);
}

void write_soak_json(FILE *f, const struct soak_summary *s) {
  fprintf(f, "{\n  \"tool\": \"tally-perf\",\n  \"mode\": \"soak\",\n  \"nranks\": %d,\n  \"seed\": %llu,\n", s->nranks,
          s->seed);
  fprintf(f, "  \"seconds\": %g,\n  \"elapsed_s\": %.3f,\n  \"operations\": %llu,\n  \"per_collective\": {", s->seconds,
          s->elapsed, (unsigned long long)s->operations);
  for (int c = 0; c < NUM_TUNED_COLLS; c++)
    fprintf(f, "%s\"%s\": %llu", c ? ", " : "", coll_name((coll_t)c), (unsigned long long)s->per_coll[c]);
  fprintf(f, "},\n  \"in_place\": %llu,\n  \"bytes\": %llu,\n  \"wrong\": %llu,\n  \"errors\": %llu,\n",
          (unsigned long long)s->in_place, (unsigned long long)s->bytes, (unsigned long long)s->wrong_elements,
          (unsigned long long)s->errors);
  fprintf(f, "  \"splits\": %llu,\n  \"split_operations\": %llu,\n", (unsigned long long)s->splits,
          (unsigned long long)s->split_operations);
  fprintf(f, "  \"ranks_combined\": %s,\n  \"rss_kb\": {", s->ranks_combined ? "true" : "false");
  json_kb(f, "start", s->rss_start_kb);
  fprintf(f, ", ");
  json_kb(f, "end", s->rss_end_kb);
  fprintf(f, ", ");
  json_kb(f, "growth", s->rss_growth_kb);
  fprintf(f, ", \"heap_growth\": %lld", s->heap_growth_kb);
  fprintf(f, ", \"start_after_operations\": %llu}\n}\n", (unsigned long long)s->rss_start_after);
}
