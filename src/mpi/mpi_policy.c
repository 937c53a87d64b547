/* Which MPI calls libtally_mpi sends to Tally: TALLY_MPI_COLLS (which collectives, and from what
 * size), the mapping of MPI's predefined datatypes and ops onto Tally's (by size and signedness),
 * and the log line, once per (collective, reason), that says where calls go under TALLY_DEBUG=INFO. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mpi_shim.h"

static const struct {
  const char *mpi_name;
  const char *names[3]; /* what TALLY_MPI_COLLS accepts for it */
} colls[SHIM_NUM_COLLS] = {
    [SHIM_ALLREDUCE] = {"MPI_Allreduce", {"allreduce"}},
    [SHIM_REDUCE] = {"MPI_Reduce", {"reduce"}},
    [SHIM_BCAST] = {"MPI_Bcast", {"bcast", "broadcast"}},
    [SHIM_ALLGATHER] = {"MPI_Allgather", {"allgather"}},
    [SHIM_REDUCE_SCATTER_BLOCK] = {"MPI_Reduce_scatter_block",
                                   {"reduce_scatter_block", "reduce_scatter", "reducescatter"}},
    [SHIM_ALLTOALL] = {"MPI_Alltoall", {"alltoall"}},
    [SHIM_GATHER] = {"MPI_Gather", {"gather"}},
    [SHIM_SCATTER] = {"MPI_Scatter", {"scatter"}},
    [SHIM_BARRIER] = {"MPI_Barrier", {"barrier"}},
};

/* On a communicator whose ranks each have a core of their own, calls smaller than these (bytes of
 * the whole buffer) stay with MPI unless TALLY_MPI_COLLS sets a threshold: there Open MPI's small
 * messages, busy-polled, beat Tally's. Measured 2026-12-05 on 2 ranks on 2 cores
 * (../shared/anchors/run.sh mpi 2 8 16384 3000 ... with and without the shim, every call sent to
 * Tally, medians of 3), after the tuner began remembering its choices and the board polling the
 * peers' slots: allreduce and reduce-scatter are ahead or tied from 8 B (0.30 against 0.39 us and
 * 0.41 against 0.54 at 8 B); allgather behind up to 128 B (0.36 against 0.29), ahead from 256 B
 * (0.37 against 0.42); broadcast behind up to 256 B (0.31 against 0.27: Open MPI's small broadcast
 * returns at the root before the others have the data), ahead from 512 B (0.32 against 0.55).
 * With more ranks than cores the shim was ahead from 8 B up, so there every call goes to Tally.
 * Alltoall, reduce, gather, scatter and barrier: not measured against a threshold, 0. */
static const size_t own_core_min_bytes[SHIM_NUM_COLLS] = {[SHIM_ALLGATHER] = 256, [SHIM_BCAST] = 512};

static struct {
  int selected[SHIM_NUM_COLLS];
  int has_min_bytes[SHIM_NUM_COLLS]; /* TALLY_MPI_COLLS set min_bytes; else the default applies */
  size_t min_bytes[SHIM_NUM_COLLS];
  int log_info;
} policy;
static pthread_once_t policy_once = PTHREAD_ONCE_INIT;
static atomic_int logged[SHIM_NUM_COLLS][SHIM_NUM_REASONS];

const char *shim_coll_name(enum shim_coll coll) { return colls[coll].mpi_name; }

static int coll_by_name(const char *name, size_t len) {
  for (int c = 0; c < SHIM_NUM_COLLS; c++)
    for (int k = 0; k < 3 && colls[c].names[k]; k++)
      if (strlen(colls[c].names[k]) == len && !strncasecmp(colls[c].names[k], name, len)) return c;
  return -1;
}

/* "4096", "4K", "64M", "1G" (binary multiples) into bytes; -1 if malformed. */
static int parse_bytes(const char *text, size_t *out) {
  if (!isdigit((unsigned char)text[0])) return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno) return -1;
  unsigned shift = 0;
  if (*end == 'K' || *end == 'k')
    shift = 10, end++;
  else if (*end == 'M' || *end == 'm')
    shift = 20, end++;
  else if (*end == 'G' || *end == 'g')
    shift = 30, end++;
  if (*end || v > (SIZE_MAX >> shift)) return -1;
  *out = (size_t)(v << shift);
  return 0;
}

static void refuse(const char *value, const char *why, size_t len, const char *item) {
  fprintf(stderr,
          "libtally_mpi: TALLY_MPI_COLLS='%s' is malformed: %s '%.*s'. Use a list of collectives, each with an "
          "optional size threshold (allreduce,bcast>=64K), or ^ and the collectives to leave to MPI (^alltoall); "
          "names: allreduce, reduce, bcast, allgather, reduce_scatter_block, alltoall, gather, scatter, barrier\n",
          value, why, (int)len, item);
  int initialized = 0;
  PMPI_Initialized(&initialized);
  if (initialized) PMPI_Abort(MPI_COMM_WORLD, 1);
  exit(1);
}

/* TALLY_MPI_COLLS: unset, empty or "all": every collective; "a,b>=SIZE": these, each from its
 * threshold (SIZE, else the default); "^a,b": every collective but these. */
static void parse_colls(const char *value) {
  const char *p = value;
  int exclude = *p == '^';
  if (exclude) p++;
  int all = !*p || !strcasecmp(p, "all");
  for (int c = 0; c < SHIM_NUM_COLLS; c++) {
    policy.selected[c] = all || exclude;
    policy.has_min_bytes[c] = 0;
  }
  if (all) return;
  while (*p) {
    size_t len = strcspn(p, ",");
    const char *item = p;
    size_t name_len = len;
    const char *ge = memchr(item, '>', len);
    if (ge) name_len = (size_t)(ge - item);
    int c = coll_by_name(item, name_len);
    if (c < 0) refuse(value, "unknown collective", name_len, item);
    if (ge) {
      char size_text[32];
      size_t size_len = len - name_len - 2;
      if (exclude) refuse(value, "a threshold in a ^ list, which names collectives left to MPI:", len, item);
      if (ge[1] != '=' || size_len == 0 || size_len >= sizeof size_text)
        refuse(value, "a threshold is written NAME>=BYTES (4096, 64K, 1M), not", len, item);
      memcpy(size_text, ge + 2, size_len);
      size_text[size_len] = '\0';
      if (parse_bytes(size_text, &policy.min_bytes[c]))
        refuse(value, "a threshold is written NAME>=BYTES (4096, 64K, 1M), not", len, item);
      policy.has_min_bytes[c] = 1;
    }
    policy.selected[c] = !exclude;
    p += len;
    if (*p == ',') {
      p++;
      if (!*p) refuse(value, "a trailing comma after", len, item);
    }
  }
}

static void load_once(void) {
  const char *debug = getenv("TALLY_DEBUG");
  policy.log_info = debug && (!strcasecmp(debug, "INFO") || !strcasecmp(debug, "TRACE"));
  const char *value = getenv("TALLY_MPI_COLLS");
  parse_colls(value ? value : "");
}

void shim_policy_load(void) { pthread_once(&policy_once, load_once); }

int shim_policy_selects(enum shim_coll coll, enum shim_reason *reason) {
  shim_policy_load();
  if (!policy.selected[coll]) return *reason = SHIM_NOT_SELECTED, 0;
  return 1;
}

int shim_policy_allows(enum shim_coll coll, size_t bytes, int own_cores, enum shim_reason *reason) {
  if (!shim_policy_selects(coll, reason)) return 0;
  size_t min_bytes = policy.has_min_bytes[coll] ? policy.min_bytes[coll] : own_cores ? own_core_min_bytes[coll] : 0;
  if (bytes < min_bytes) return *reason = SHIM_BELOW_THRESHOLD, 0;
  return 1;
}

/* MPI's predefined integer and floating types that are exactly one of Tally's. MPI_CHAR (its
 * signedness is the compiler's) and MPI_BYTE are not arithmetic types in MPI: never reduced here. */
static int map_datatype(MPI_Datatype type, tally_datatype_t *out) {
  static const tally_datatype_t by_size_signed[9] = {[1] = TALLY_INT8, [4] = TALLY_INT32, [8] = TALLY_INT64};
  static const tally_datatype_t by_size_unsigned[9] = {[1] = TALLY_UINT8, [4] = TALLY_UINT32, [8] = TALLY_UINT64};
  size_t size = 0;
  int is_signed = 1;
  if (type == MPI_FLOAT) return *out = TALLY_FLOAT32, 1;
  if (type == MPI_DOUBLE) return *out = TALLY_FLOAT64, 1;
  if (type == MPI_INT8_T || type == MPI_SIGNED_CHAR)
    size = 1;
  else if (type == MPI_INT32_T)
    size = 4;
  else if (type == MPI_INT64_T)
    size = 8;
  else if (type == MPI_INT)
    size = sizeof(int);
  else if (type == MPI_LONG)
    size = sizeof(long);
  else if (type == MPI_LONG_LONG || type == MPI_LONG_LONG_INT)
    size = sizeof(long long);
  else {
    is_signed = 0;
    if (type == MPI_UINT8_T || type == MPI_UNSIGNED_CHAR)
      size = 1;
    else if (type == MPI_UINT32_T)
      size = 4;
    else if (type == MPI_UINT64_T)
      size = 8;
    else if (type == MPI_UNSIGNED)
      size = sizeof(unsigned);
    else if (type == MPI_UNSIGNED_LONG)
      size = sizeof(unsigned long);
    else if (type == MPI_UNSIGNED_LONG_LONG)
      size = sizeof(unsigned long long);
  }
  if (size != 1 && size != 4 && size != 8) return 0; /* no 16-bit integers in Tally */
  *out = is_signed ? by_size_signed[size] : by_size_unsigned[size];
  return 1;
}

int shim_map_reduction(MPI_Datatype type, MPI_Op op, tally_datatype_t *ttype, tally_op_t *top,
                       enum shim_reason *reason) {
  if (op == MPI_SUM)
    *top = TALLY_SUM;
  else if (op == MPI_PROD)
    *top = TALLY_PROD;
  else if (op == MPI_MIN)
    *top = TALLY_MIN;
  else if (op == MPI_MAX)
    *top = TALLY_MAX;
  else
    return *reason = SHIM_OP, 0;
  if (!map_datatype(type, ttype)) return *reason = SHIM_DATATYPE, 0;
  return 1;
}

size_t shim_movable_size(MPI_Datatype type) {
  tally_datatype_t mapped;
  if (map_datatype(type, &mapped)) return tally_datatype_size(mapped);
  if (type == MPI_BYTE || type == MPI_CHAR) return 1;
  /* Any other named datatype without gaps (MPI_SHORT, MPI_2INT, MPI_C_BOOL, ...) moves as bytes. */
  int nints, naddrs, ntypes, combiner;
  if (type == MPI_DATATYPE_NULL || PMPI_Type_get_envelope(type, &nints, &naddrs, &ntypes, &combiner) != MPI_SUCCESS ||
      combiner != MPI_COMBINER_NAMED)
    return 0;
  int size;
  MPI_Aint lb, extent;
  if (PMPI_Type_size(type, &size) != MPI_SUCCESS || PMPI_Type_get_true_extent(type, &lb, &extent) != MPI_SUCCESS)
    return 0;
  return size > 0 && lb == 0 && extent == size ? (size_t)size : 0;
}

void shim_log(const char *level, const char *file, int line, const char *fmt, ...) {
  shim_policy_load();
  if (strcmp(level, "WARN") != 0 && !policy.log_info) return;
  char host[64] = "?", text[1024];
  gethostname(host, sizeof host - 1);
  int rank = -1, initialized = 0, finalized = 0;
  PMPI_Initialized(&initialized);
  PMPI_Finalized(&finalized);
  if (initialized && !finalized) PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  const char *base = strrchr(file, '/');
  fprintf(stderr, "%s:%d:%d [tally %s] %s:%d %s\n", host, (int)getpid(), rank, level, base ? base + 1 : file, line,
          text);
}

int shim_log_wanted(enum shim_coll coll, enum shim_reason reason) {
  shim_policy_load();
  return policy.log_info && !atomic_exchange(&logged[coll][reason], 1);
}

void shim_log_decision(enum shim_coll coll, enum shim_reason reason, const char *detail) {
  static const char *const why[SHIM_NUM_REASONS] = {
      [SHIM_TO_TALLY] = "to Tally",
      [SHIM_NOT_SELECTED] = "to MPI: not selected by TALLY_MPI_COLLS",
      [SHIM_BELOW_THRESHOLD] = "to MPI: below its size threshold (TALLY_MPI_COLLS's, or the default where every rank has a core of its own)",
      [SHIM_DATATYPE] = "to MPI: a datatype Tally does not have (derived, with gaps, or no exact match)",
      [SHIM_OP] = "to MPI: an op Tally does not have (user-defined, MAXLOC/MINLOC, logical or bitwise)",
      [SHIM_TYPES_DIFFER] = "to MPI: send and receive datatypes or counts differ",
      [SHIM_INTERCOMM] = "to MPI: an intercommunicator",
      [SHIM_TALLY_UNAVAILABLE] = "to MPI: no Tally communicator could be made for this communicator",
  };
  shim_log("INFO", __FILE__, __LINE__, "libtally_mpi: %s %s (first such call: %s)", colls[coll].mpi_name, why[reason],
           detail);
}
