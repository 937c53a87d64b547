/* The trace writer (trace.h): a ring of fixed-size records per traced communicator, filled by the
 * thread running its calls without locks (one producer at a time: the communicator's calls never
 * overlap), drained by a writer thread that formats them as trace-event JSON lines. */
#define _GNU_SOURCE
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "core/algo_spec.h"
#include "core/clock.h"
#include "core/log.h"

#define TRACE_RING_RECORDS (1u << 15) /* a power of two: about 2.5 MiB per traced communicator */
#define TRACE_FLUSH_MS 20             /* the most a crash can lose, when the ring did not fill first */

enum record_type { RECORD_CALL, RECORD_SEND, RECORD_RECV };

struct record {
  uint8_t type; /* enum record_type */
  uint8_t kind; /* calls: enum tally_coll, or TALLY_NUM_COLLS for a point-to-point batch */
  uint8_t algo; /* calls: enum tally_algo_id, or TALLY_NUM_ALGOS for none */
  uint8_t datatype;
  uint8_t slot; /* messages: the transport slot (comm.h) */
  uint8_t failed;
  int32_t peer; /* messages */
  uint32_t seq;
  uint64_t count, bytes, chunk;
  uint64_t start_ns, end_ns, posted_ns; /* this process's monotonic clock */
  double predicted_us;
};

struct tally_trace {
  struct record *ring;
  _Atomic uint64_t head, tail; /* records [tail, head) wait for the writer */
  _Atomic uint64_t dropped;    /* records lost to a full ring */
  uint64_t *track_end;         /* [2 * nranks], the producer's: when the last message on each track ended */
  unsigned char *track_named;  /* [2 * nranks], the writer's: the track's name was written */
  FILE *file;
  int rank, nranks;
  int64_t offset_ns;
  const char *slot_names[TALLY_NUM_SLOTS];
  uint64_t written;
  pthread_t writer;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  int stop; /* under lock */
};

/* A message's track: one per peer and direction, so that its spans never overlap. */
static int track_of(int peer, int is_send) { return 2 * peer + (is_send ? 0 : 1); }
static int track_tid(int track) { return 1 + track; }

/* One event's line, built without stdio's formatting (the writer's cost per record is mostly this):
 * the fields are integers and names, times integer nanoseconds written as microseconds. */
struct line {
  char text[640];
  size_t len;
};

static void put(struct line *l, const char *s) {
  size_t n = strlen(s);
  if (n > sizeof l->text - l->len) n = sizeof l->text - l->len;
  memcpy(l->text + l->len, s, n);
  l->len += n;
}

static void put_u64(struct line *l, uint64_t v) {
  char digits[24];
  int n = 0;
  do digits[n++] = (char)('0' + v % 10);
  while ((v /= 10) && n < (int)sizeof digits);
  while (n > 0 && l->len < sizeof l->text) l->text[l->len++] = digits[--n];
}

static void put_i64(struct line *l, int64_t v) {
  if (v < 0) put(l, "-");
  put_u64(l, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

/* `ns` nanoseconds as microseconds: "12.345". */
static void put_ns_as_us(struct line *l, int64_t ns) {
  uint64_t a = ns < 0 ? 0 - (uint64_t)ns : (uint64_t)ns;
  if (ns < 0) put(l, "-");
  put_u64(l, a / 1000);
  char frac[5] = {'.', (char)('0' + a % 1000 / 100), (char)('0' + a % 100 / 10), (char)('0' + a % 10), 0};
  put(l, frac);
}

/* A time of this process's monotonic clock in rank 0's timebase, in microseconds. */
static void put_time(struct line *l, const struct tally_trace *t, uint64_t ns) {
  put_ns_as_us(l, (int64_t)ns + t->offset_ns);
}

/* `text` as a JSON string's contents (quotes, backslashes and control characters escaped). */
static void put_json_text(FILE *f, const char *text) {
  for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
}

static void name_track(struct tally_trace *t, int track) {
  if (t->track_named[track]) return;
  t->track_named[track] = 1;
  int peer = track / 2, is_send = track % 2 == 0;
  fprintf(t->file,
          "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s rank %d\"}},\n"
          "{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"sort_index\":%d}},\n",
          t->rank, track_tid(track), is_send ? "send to" : "recv from", peer, t->rank, track_tid(track),
          track_tid(track));
}

static void put_call(struct line *l, const struct tally_trace *t, const struct record *r) {
  const char *kind = r->kind == TALLY_NUM_COLLS ? "point-to-point" : tally_coll_name(r->kind);
  const char *algo = r->algo == TALLY_NUM_ALGOS ? "none" : tally_algo_name((enum tally_algo_id)r->algo);
  const char *type = tally_datatype_name((tally_datatype_t)r->datatype);
  put(l, "{\"name\":\"");
  put(l, kind);
  put(l, "\",\"cat\":\"call\",\"ph\":\"X\",\"pid\":");
  put_i64(l, t->rank);
  put(l, ",\"tid\":0,\"ts\":");
  put_time(l, t, r->start_ns);
  put(l, ",\"dur\":");
  put_ns_as_us(l, (int64_t)(r->end_ns - r->start_ns));
  put(l, ",\"args\":{\"seq\":");
  put_u64(l, r->seq);
  put(l, ",\"collective\":\"");
  put(l, kind);
  put(l, "\",\"algorithm\":\"");
  put(l, algo);
  put(l, "\",\"bytes\":");
  put_u64(l, r->bytes);
  put(l, ",\"count\":");
  put_u64(l, r->count);
  put(l, ",\"datatype\":\"");
  put(l, r->kind == TALLY_NUM_COLLS ? "none" : (type ? type : "unknown"));
  put(l, "\",\"chunk\":");
  put_u64(l, r->chunk);
  put(l, ",\"predicted_us\":");
  if (r->predicted_us >= 0)
    put_ns_as_us(l, (int64_t)(r->predicted_us * 1e3 + 0.5));
  else
    put(l, "null");
  put(l, r->failed ? ",\"failed\":1}},\n" : ",\"failed\":0}},\n");
}

static void put_message(struct line *l, const struct tally_trace *t, const struct record *r, int track) {
  int is_send = r->type == RECORD_SEND;
  put(l, is_send ? "{\"name\":\"send\"" : "{\"name\":\"recv\"");
  put(l, ",\"cat\":\"message\",\"ph\":\"X\",\"pid\":");
  put_i64(l, t->rank);
  put(l, ",\"tid\":");
  put_i64(l, track_tid(track));
  put(l, ",\"ts\":");
  put_time(l, t, r->start_ns);
  put(l, ",\"dur\":");
  put_ns_as_us(l, (int64_t)(r->end_ns - r->start_ns));
  put(l, ",\"args\":{\"seq\":");
  put_u64(l, r->seq);
  put(l, ",\"peer\":");
  put_i64(l, r->peer);
  put(l, is_send ? ",\"direction\":\"send\",\"bytes\":" : ",\"direction\":\"recv\",\"bytes\":");
  put_u64(l, r->bytes);
  put(l, ",\"transport\":\"");
  put(l, t->slot_names[r->slot] ? t->slot_names[r->slot] : "unknown");
  put(l, "\",\"posted_us\":");
  put_time(l, t, r->posted_ns);
  put(l, "}},\n");
}

static void write_record(struct tally_trace *t, const struct record *r) {
  struct line l;
  l.len = 0;
  if (r->type == RECORD_CALL) {
    put_call(&l, t, r);
  } else {
    int track = track_of(r->peer, r->type == RECORD_SEND);
    name_track(t, track);
    put_message(&l, t, r, track);
  }
  fwrite(l.text, 1, l.len, t->file);
}

/* Writes out every published record and flushes the file (the writer's, or close's once it stopped). */
static void drain(struct tally_trace *t) {
  uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
  flockfile(t->file);
  for (; tail < head; tail++) write_record(t, &t->ring[tail & (TRACE_RING_RECORDS - 1)]);
  funlockfile(t->file);
  t->written += head - atomic_load_explicit(&t->tail, memory_order_relaxed);
  atomic_store_explicit(&t->tail, head, memory_order_release);
  fflush(t->file);
}

static void *writer_main(void *arg) {
  struct tally_trace *t = arg;
  pthread_mutex_lock(&t->lock);
  while (!t->stop) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += TRACE_FLUSH_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&t->wake, &t->lock, &until);
    pthread_mutex_unlock(&t->lock);
    drain(t);
    pthread_mutex_lock(&t->lock);
  }
  pthread_mutex_unlock(&t->lock);
  return NULL;
}

/* The next free record, or NULL (counted as dropped) when the writer is behind by a whole ring. */
static struct record *claim(struct tally_trace *t) {
  uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
  uint64_t used = head - atomic_load_explicit(&t->tail, memory_order_acquire);
  if (used >= TRACE_RING_RECORDS) {
    atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
    return NULL;
  }
  if (used == TRACE_RING_RECORDS / 2) pthread_cond_signal(&t->wake); /* half full: write now */
  return &t->ring[head & (TRACE_RING_RECORDS - 1)];
}

static void publish(struct tally_trace *t) {
  atomic_store_explicit(&t->head, atomic_load_explicit(&t->head, memory_order_relaxed) + 1, memory_order_release);
}

void tally_trace_call(struct tally_comm *comm, int kind, int algo, const struct tally_coll_desc *desc, uint64_t count,
                      uint64_t bytes, uint64_t start_ns, uint64_t end_ns, int failed) {
  struct record *r = claim(comm->trace);
  if (!r) return;
  *r = (struct record){.type = RECORD_CALL,
                       .kind = (uint8_t)kind,
                       .algo = (uint8_t)algo,
                       .datatype = desc ? (uint8_t)desc->datatype : 0,
                       .failed = (uint8_t)(failed != 0),
                       .seq = comm->seq,
                       .count = count,
                       .bytes = bytes,
                       .chunk = desc ? desc->chunk_bytes : 0,
                       .start_ns = start_ns,
                       .end_ns = end_ns,
                       .predicted_us = desc ? desc->predicted_us : -1};
  publish(comm->trace);
}

void tally_trace_posted(struct tally_request *req) { req->posted_ns = tally_now_ns(); }

void tally_trace_message(struct tally_comm *comm, const struct tally_link *link, struct tally_request *req,
                         int is_send) {
  struct tally_trace *t = comm->trace;
  uint64_t now = tally_now_ns();
  int track = track_of(link->peer, is_send);
  uint64_t start = req->posted_ns > t->track_end[track] ? req->posted_ns : t->track_end[track];
  t->track_end[track] = now;
  struct record *r = claim(t);
  if (r) {
    *r = (struct record){.type = is_send ? RECORD_SEND : RECORD_RECV,
                         .slot = (uint8_t)link->slot,
                         .peer = link->peer,
                         .seq = comm->seq,
                         .bytes = req->len,
                         .start_ns = start,
                         .end_ns = now,
                         .posted_ns = req->posted_ns};
    publish(t);
  }
  req->posted_ns = 0;
}

/* The first traced communicator of a process writes tally-RANK.json, later ones add their id. */
static atomic_int traced_in_process;

static FILE *open_file(const struct tally_comm *comm, char *path, size_t len) {
  const char *dir = comm->cfg.trace_dir;
  if (atomic_fetch_add(&traced_in_process, 1) == 0)
    snprintf(path, len, "%s/tally-%d.json", dir, comm->rank);
  else
    snprintf(path, len, "%s/tally-%d-%016llx.json", dir, comm->rank, (unsigned long long)comm->comm_id);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f && fd >= 0) close(fd);
  if (f) setvbuf(f, NULL, _IOFBF, 1 << 18);
  return f;
}

/* The process's row: its name and place (grouped by host), and tally's own metadata. */
static void write_header(struct tally_trace *t, const struct tally_comm *comm, uint64_t error_ns) {
  FILE *f = t->file;
  int host = comm->topo.host_index ? comm->topo.host_index[comm->rank] : 0;
  const char *hostname = comm->peers[comm->rank].topo.hostname;
  fprintf(f, "[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"rank %d (host %d: ",
          t->rank, t->rank, host);
  put_json_text(f, hostname);
  fprintf(f,
          ")\"}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"sort_index\":%d}},\n",
          t->rank, host * comm->nranks + t->rank);
  fprintf(f, "{\"name\":\"process_labels\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"labels\":\"host %d\"}},\n",
          t->rank, host);
  fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"calls\"}},\n", t->rank);
  fprintf(
      f,
      "{\"name\":\"tally_trace\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"format\":1,\"rank\":%d,\"nranks\":%d,"
      "\"host_index\":%d,\"nhosts\":%d,\"hostname\":\"",
      t->rank, t->rank, comm->nranks, host, comm->topo.nhosts);
  put_json_text(f, hostname);
  fprintf(f,
          "\",\"comm_id\":\"%016llx\",\"os_pid\":%d,\"clock\":\"CLOCK_MONOTONIC moved to rank 0's\","
          "\"clock_offset_ns\":%lld,\"clock_error_ns\":%llu}},\n",
          (unsigned long long)comm->comm_id, (int)getpid(), (long long)t->offset_ns, (unsigned long long)error_ns);
  fflush(f);
}

static void trace_free(struct tally_trace *t) {
  if (t->file) fclose(t->file);
  free(t->ring);
  free(t->track_end);
  free(t->track_named);
  free(t);
}

void tally_trace_open(struct tally_comm *comm, int64_t offset_ns, uint64_t error_ns) {
  struct tally_trace *t = calloc(1, sizeof *t);
  char path[4200] = "";
  if (t) {
    t->rank = comm->rank;
    t->nranks = comm->nranks;
    t->offset_ns = offset_ns;
    t->ring = malloc(TRACE_RING_RECORDS * sizeof *t->ring);
    t->track_end = calloc(2 * (size_t)comm->nranks, sizeof *t->track_end);
    t->track_named = calloc(2 * (size_t)comm->nranks, 1);
    for (int s = 0; s < TALLY_NUM_SLOTS; s++) t->slot_names[s] = comm->slots[s].ops ? comm->slots[s].ops->name : NULL;
  }
  if (!t || !t->ring || !t->track_end || !t->track_named) {
    TLOG_WARN(TALLY_SUBSYS_INIT, "TALLY_TRACE: out of memory for the trace of rank %d; tracing nothing", comm->rank);
    if (t) trace_free(t);
    return;
  }
  if (!(t->file = open_file(comm, path, sizeof path))) {
    TLOG_WARN(TALLY_SUBSYS_INIT, "TALLY_TRACE: cannot write %s (%s); rank %d traces nothing", path, strerror(errno),
              comm->rank);
    trace_free(t);
    return;
  }
  write_header(t, comm, error_ns);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&t->wake, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&t->lock, NULL);
  int e = pthread_create(&t->writer, NULL, writer_main, t);
  if (e) {
    TLOG_WARN(TALLY_SUBSYS_INIT, "TALLY_TRACE: cannot start the writer thread (%s); rank %d traces nothing",
              strerror(e), comm->rank);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    trace_free(t);
    return;
  }
  TLOG_INFO(TALLY_SUBSYS_INIT, "TALLY_TRACE: rank %d writes %s (clock offset to rank 0 %lld ns, error at most %llu ns)",
            comm->rank, path, (long long)offset_ns, (unsigned long long)error_ns);
  comm->trace = t;
}

void tally_trace_close(struct tally_comm *comm) {
  struct tally_trace *t = comm->trace;
  if (!t) return;
  comm->trace = NULL;
  pthread_mutex_lock(&t->lock);
  t->stop = 1;
  pthread_cond_signal(&t->wake);
  pthread_mutex_unlock(&t->lock);
  pthread_join(t->writer, NULL);
  drain(t);
  uint64_t dropped = atomic_load(&t->dropped);
  if (dropped)
    TLOG_WARN(TALLY_SUBSYS_COLL,
              "TALLY_TRACE: rank %d dropped %llu of %llu trace records (its writer fell behind by %u records)", t->rank,
              (unsigned long long)dropped, (unsigned long long)(dropped + t->written), TRACE_RING_RECORDS);
  fprintf(
      t->file,
      "{\"name\":\"tally_trace_end\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"records\":%llu,\"dropped\":%llu}}"
      "\n]\n",
      t->rank, (unsigned long long)t->written, (unsigned long long)dropped);
  pthread_cond_destroy(&t->wake);
  pthread_mutex_destroy(&t->lock);
  trace_free(t);
}
