/* The emulated device (emulated_device.h): memory tables, stream threads, capture, gates, the IPC
 * arena and the reduction "kernels". */
#define _GNU_SOURCE
#include "emulated_device.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/reduce.h"

/* --- memory -------------------------------------------------------------------------------------- */

enum { MAX_ALLOCATIONS = 4096 };
static struct allocation {
  char *base;
  size_t bytes;
  enum tally_mem_kind kind;
} allocations[MAX_ALLOCATIONS];
static pthread_mutex_t allocations_lock = PTHREAD_MUTEX_INITIALIZER;

static void *track(size_t bytes, enum tally_mem_kind kind) {
  char *p = malloc(bytes ? bytes : 1);
  if (!p) return NULL;
  memset(p, 0xa5, bytes); /* device memory starts as garbage, not zeros */
  pthread_mutex_lock(&allocations_lock);
  for (int i = 0; i < MAX_ALLOCATIONS; i++)
    if (!allocations[i].base) {
      allocations[i] = (struct allocation){p, bytes, kind};
      pthread_mutex_unlock(&allocations_lock);
      return p;
    }
  pthread_mutex_unlock(&allocations_lock);
  fprintf(stderr, "emulated device: more than %d allocations\n", MAX_ALLOCATIONS);
  abort();
}

void *emu_malloc(size_t bytes) { return track(bytes, TALLY_MEM_DEVICE); }
void *emu_malloc_managed(size_t bytes) { return track(bytes, TALLY_MEM_MANAGED); }
void *emu_malloc_pinned(size_t bytes) { return track(bytes, TALLY_MEM_PINNED); }

void emu_free(void *p) {
  if (!p) return;
  pthread_mutex_lock(&allocations_lock);
  for (int i = 0; i < MAX_ALLOCATIONS; i++)
    if (allocations[i].base == p) allocations[i].base = NULL;
  pthread_mutex_unlock(&allocations_lock);
  free(p);
}

static enum tally_mem_kind emu_mem_kind(const void *p) {
  enum tally_mem_kind kind = TALLY_MEM_HOST;
  pthread_mutex_lock(&allocations_lock);
  for (int i = 0; i < MAX_ALLOCATIONS; i++) {
    const struct allocation *a = &allocations[i];
    if (a->base && (const char *)p >= a->base && (const char *)p < a->base + (a->bytes ? a->bytes : 1)) {
      kind = a->kind;
      break;
    }
  }
  pthread_mutex_unlock(&allocations_lock);
  return kind;
}

/* --- streams --------------------------------------------------------------------------------------- */

enum item_kind { ITEM_COPY, ITEM_CALL, ITEM_WAIT_FLAG };
struct item {
  enum item_kind kind;
  void *dst;
  const void *src;
  size_t bytes;
  void (*fn)(void *);
  void *arg;
  volatile uint32_t *flag;
  void *poison;
  size_t poison_bytes;
  struct item *next;
};

struct emu_graph {
  struct item *head, *tail;
};

struct emu_stream {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  pthread_t thread;
  struct item *head, *tail;
  int running; /* an item is being run */
  int stopping;
  int capturing;
  struct emu_graph graph; /* what capture recorded */
  unsigned seed;
};

static void append(struct item **head, struct item **tail, struct item *it) {
  it->next = NULL;
  if (*tail)
    (*tail)->next = it;
  else
    *head = it;
  *tail = it;
}

static void pause_briefly(unsigned *seed) {
  struct timespec ts = {0, (long)(rand_r(seed) % 300) * 1000};
  nanosleep(&ts, NULL);
}

static void run_item(const struct item *it) {
  switch (it->kind) {
    case ITEM_COPY: memcpy(it->dst, it->src, it->bytes); break;
    case ITEM_CALL: it->fn(it->arg); break;
    case ITEM_WAIT_FLAG:
      for (long waited_us = 0;; waited_us += 20) {
        uint32_t v = atomic_load((_Atomic uint32_t *)it->flag);
        if (v == 2 && it->poison) memset(it->poison, 0xff, it->poison_bytes);
        if (v == 1 || v == 2) break;
        if (waited_us > 120 * 1000000L) {
          fprintf(stderr, "emulated device: a stream waited 120 s on a flag that never came\n");
          abort();
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
      }
      break;
  }
}

static void *stream_thread(void *arg) {
  struct emu_stream *s = arg;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!s->head && !s->stopping) pthread_cond_wait(&s->changed, &s->lock);
    struct item *it = s->head;
    if (!it) break;
    s->head = it->next;
    if (!s->head) s->tail = NULL;
    s->running = 1;
    pthread_mutex_unlock(&s->lock);
    pause_briefly(&s->seed);
    run_item(it);
    free(it);
    pthread_mutex_lock(&s->lock);
    s->running = 0;
    pthread_cond_broadcast(&s->changed);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

struct emu_stream *emu_stream_create(void) {
  struct emu_stream *s = calloc(1, sizeof *s);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->changed, NULL);
  s->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)s;
  pthread_create(&s->thread, NULL, stream_thread, s);
  return s;
}

static void free_items(struct item *it) {
  while (it) {
    struct item *next = it->next;
    free(it);
    it = next;
  }
}

void emu_stream_destroy(struct emu_stream *s) {
  emu_stream_synchronize(s);
  pthread_mutex_lock(&s->lock);
  s->stopping = 1;
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->thread, NULL);
  free_items(s->graph.head);
  pthread_cond_destroy(&s->changed);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

static unsigned slow_enqueue_us;

void emu_slow_enqueues(unsigned us) { slow_enqueue_us = us; }

static void enqueue(struct emu_stream *s, struct item model) {
  struct item *it = malloc(sizeof *it);
  *it = model;
  pthread_mutex_lock(&s->lock);
  if (s->capturing)
    append(&s->graph.head, &s->graph.tail, it);
  else
    append(&s->head, &s->tail, it);
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
  if (slow_enqueue_us) usleep(slow_enqueue_us);
}

void emu_launch(struct emu_stream *s, void (*fn)(void *), void *arg) {
  enqueue(s, (struct item){.kind = ITEM_CALL, .fn = fn, .arg = arg});
}

void emu_stream_synchronize(struct emu_stream *s) {
  pthread_mutex_lock(&s->lock);
  while (s->head || s->running) pthread_cond_wait(&s->changed, &s->lock);
  pthread_mutex_unlock(&s->lock);
}

void emu_capture_begin(struct emu_stream *s) {
  pthread_mutex_lock(&s->lock);
  s->capturing = 1;
  pthread_mutex_unlock(&s->lock);
}

struct emu_graph *emu_capture_end(struct emu_stream *s) {
  struct emu_graph *g = malloc(sizeof *g);
  pthread_mutex_lock(&s->lock);
  s->capturing = 0;
  *g = s->graph;
  s->graph = (struct emu_graph){NULL, NULL};
  pthread_mutex_unlock(&s->lock);
  return g;
}

void emu_graph_launch(struct emu_graph *g, struct emu_stream *s) {
  for (const struct item *it = g->head; it; it = it->next) enqueue(s, *it);
}

void emu_graph_destroy(struct emu_graph *g) {
  free_items(g->head);
  free(g);
}

/* --- gates ----------------------------------------------------------------------------------------- */

struct emu_gate {
  pthread_mutex_t lock;
  pthread_cond_t opened_cond;
  int opened;
};

struct emu_gate *emu_gate_create(void) {
  struct emu_gate *g = calloc(1, sizeof *g);
  pthread_mutex_init(&g->lock, NULL);
  pthread_cond_init(&g->opened_cond, NULL);
  return g;
}

static void gate_wait(void *arg) {
  struct emu_gate *g = arg;
  pthread_mutex_lock(&g->lock);
  while (!g->opened) pthread_cond_wait(&g->opened_cond, &g->lock);
  pthread_mutex_unlock(&g->lock);
}

void emu_gate_wait_on(struct emu_stream *s, struct emu_gate *g) { emu_launch(s, gate_wait, g); }

void emu_gate_open(struct emu_gate *g) {
  pthread_mutex_lock(&g->lock);
  g->opened = 1;
  pthread_cond_broadcast(&g->opened_cond);
  pthread_mutex_unlock(&g->lock);
}

void emu_gate_destroy(struct emu_gate *g) {
  pthread_cond_destroy(&g->opened_cond);
  pthread_mutex_destroy(&g->lock);
  free(g);
}

/* --- IPC: device memory every rank process maps at the same address ------------------------------- */

struct ipc_arena {
  _Atomic size_t used; /* bytes handed out, after this header's page */
  size_t bytes;
};
static struct ipc_arena *arena;
enum { ARENA_HEADER = 4096 };

int emu_ipc_arena_create(size_t bytes) {
  void *p = mmap(NULL, bytes + ARENA_HEADER, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  arena = p;
  arena->bytes = bytes;
  atomic_store(&arena->used, 0);
  return 0;
}

static int failing_device_allocations;

void emu_fail_device_allocations(int fail) { failing_device_allocations = fail; }

static tally_result_t emu_alloc_device(void **p, size_t bytes) {
  if (failing_device_allocations)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "emulated device: out of device memory (as the test asked)");
  if (!arena) return TALLY_ERROR(TALLY_ERR_UNSUPPORTED, "emulated device: no IPC arena (emu_ipc_arena_create)");
  size_t rounded = (bytes + 255) / 256 * 256, at = atomic_fetch_add(&arena->used, rounded);
  if (at + rounded > arena->bytes) return TALLY_ERROR(TALLY_ERR_SYSTEM, "emulated device: the IPC arena is full");
  char *mem = (char *)arena + ARENA_HEADER + at;
  memset(mem, 0xa5, bytes);
  pthread_mutex_lock(&allocations_lock);
  for (int i = 0; i < MAX_ALLOCATIONS; i++)
    if (!allocations[i].base) {
      allocations[i] = (struct allocation){mem, bytes, TALLY_MEM_DEVICE};
      break;
    }
  pthread_mutex_unlock(&allocations_lock);
  *p = mem;
  return TALLY_SUCCESS;
}

static void emu_free_device(void *p) { /* the arena is never reused: forget the allocation only */
  pthread_mutex_lock(&allocations_lock);
  for (int i = 0; i < MAX_ALLOCATIONS; i++)
    if (allocations[i].base == p) allocations[i].base = NULL;
  pthread_mutex_unlock(&allocations_lock);
}

static tally_result_t emu_ipc_export(void *p, void *handle) {
  uint64_t offset = (uint64_t)((char *)p - (char *)arena);
  memcpy(handle, &offset, sizeof offset);
  return TALLY_SUCCESS;
}

static tally_result_t emu_ipc_import(const void *handle, void **p) {
  uint64_t offset;
  memcpy(&offset, handle, sizeof offset);
  *p = (char *)arena + offset;
  return TALLY_SUCCESS;
}

static void emu_ipc_close(void *p) { (void)p; }

/* The reduction "kernels": reduce.h's functions on the stream's thread. */
struct reduce_job {
  void *out;
  const void *a, *b;
  size_t count;
  tally_datatype_t dt;
  tally_op_t op;
  int avg_n; /* > 0: the AVG division instead */
};

static void run_reduce_job(void *arg) {
  struct reduce_job *job = arg;
  if (job->avg_n > 0)
    tally_reduce_finish_avg(job->out, job->count, job->dt, job->avg_n);
  else
    tally_reduce_apply(job->out, job->a, job->b, job->count, job->dt, job->op);
  free(job);
}

static tally_result_t emu_reduce_async(void *out, const void *a, const void *b, size_t count, tally_datatype_t dt,
                                       tally_op_t op, void *stream) {
  struct reduce_job *job = malloc(sizeof *job);
  *job = (struct reduce_job){out, a, b, count, dt, op, 0};
  emu_launch(stream, run_reduce_job, job);
  return TALLY_SUCCESS;
}

static tally_result_t emu_finish_avg_async(void *buf, size_t count, tally_datatype_t dt, int n, void *stream) {
  struct reduce_job *job = malloc(sizeof *job);
  *job = (struct reduce_job){buf, NULL, NULL, count, dt, TALLY_SUM, n};
  emu_launch(stream, run_reduce_job, job);
  return TALLY_SUCCESS;
}

/* Every emulated rank drives "GPU" 0000:01:00.0 (hwloc knows no such device, so no NUMA node). */
static tally_result_t emu_pci_bus_id(char *buf, size_t len) {
  snprintf(buf, len, "0000:01:00.0");
  return TALLY_SUCCESS;
}

/* --- the vtable ------------------------------------------------------------------------------------ */

static struct emu_stream *default_stream;
static pthread_mutex_t default_stream_lock = PTHREAD_MUTEX_INITIALIZER;

static void *emu_default_stream(void) {
  pthread_mutex_lock(&default_stream_lock);
  if (!default_stream) default_stream = emu_stream_create();
  pthread_mutex_unlock(&default_stream_lock);
  return default_stream;
}

static tally_result_t emu_copy_async(void *dst, const void *src, size_t bytes, void *stream) {
  enqueue(stream, (struct item){.kind = ITEM_COPY, .dst = dst, .src = src, .bytes = bytes});
  return TALLY_SUCCESS;
}

static tally_result_t emu_host_call_async(void *stream, void (*fn)(void *), void *arg) {
  emu_launch(stream, fn, arg);
  return TALLY_SUCCESS;
}

static tally_result_t emu_wait_flag_async(void *stream, volatile uint32_t *flag, void *poison, size_t poison_bytes) {
  if (emu_mem_kind((const void *)flag) != TALLY_MEM_PINNED)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "emulated device: the wait flag is not in pinned memory");
  enqueue(stream, (struct item){.kind = ITEM_WAIT_FLAG, .flag = flag, .poison = poison, .poison_bytes = poison_bytes});
  return TALLY_SUCCESS;
}

static tally_result_t emu_stream_sync(void *stream) {
  emu_stream_synchronize(stream);
  return TALLY_SUCCESS;
}

static tally_result_t emu_is_capturing(void *stream, int *capturing) {
  struct emu_stream *s = stream;
  pthread_mutex_lock(&s->lock);
  *capturing = s->capturing;
  pthread_mutex_unlock(&s->lock);
  return TALLY_SUCCESS;
}

static tally_result_t emu_alloc_pinned(void **p, size_t bytes) {
  *p = emu_malloc_pinned(bytes);
  return *p ? TALLY_SUCCESS : TALLY_ERROR(TALLY_ERR_SYSTEM, "emulated device: out of pinned memory");
}

static const struct tally_device_ops emu_ops = {
    .name = "emulated",
    .mem_kind = emu_mem_kind,
    .default_stream = emu_default_stream,
    .copy_async = emu_copy_async,
    .host_call_async = emu_host_call_async,
    .wait_flag_async = emu_wait_flag_async,
    .stream_sync = emu_stream_sync,
    .is_capturing = emu_is_capturing,
    .alloc_pinned = emu_alloc_pinned,
    .free_pinned = emu_free,
    .ipc_handle_bytes = sizeof(uint64_t),
    .alloc_device = emu_alloc_device,
    .free_device = emu_free_device,
    .ipc_export = emu_ipc_export,
    .ipc_import = emu_ipc_import,
    .ipc_close = emu_ipc_close,
    .reduce_async = emu_reduce_async,
    .finish_avg_async = emu_finish_avg_async,
    .pci_bus_id = emu_pci_bus_id,
};

const struct tally_device_ops *emu_device(void) { return &emu_ops; }
