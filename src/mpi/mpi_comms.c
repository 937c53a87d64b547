/* libtally_mpi's communicators: one Tally communicator per MPI communicator, made collectively on
 * the first intercepted call (rank 0 makes the unique id, PMPI_Bcast carries it), kept as an MPI
 * attribute whose delete callback destroys it (MPI_Comm_free, and MPI_Finalize for the world), and
 * a list of those alive so that MPI_Finalize releases the ones a program never freed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpi_shim.h"

struct shim_entry {
  tally_comm_t tally; /* NULL: every call on this communicator goes to MPI, because of why_not */
  enum shim_reason why_not;
  int own_cores; /* every rank has a core of its own (mpi_shim.h) */
  struct shim_entry *prev, *next; /* the entries alive */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int keyval_ready;
static int keyval = MPI_KEYVAL_INVALID;
static struct shim_entry *alive;

static void link_entry(struct shim_entry *e) {
  pthread_mutex_lock(&lock);
  e->next = alive;
  if (alive) alive->prev = e;
  alive = e;
  pthread_mutex_unlock(&lock);
}

static void unlink_entry(struct shim_entry *e) {
  pthread_mutex_lock(&lock);
  if (e->prev)
    e->prev->next = e->next;
  else
    alive = e->next;
  if (e->next) e->next->prev = e->prev;
  pthread_mutex_unlock(&lock);
}

/* The last communicator each thread looked up, so that a program calling one communicator over and
 * over skips MPI's attribute lookup (a tenth of a small allreduce that stays with MPI). It is
 * valid while no entry was deleted since it was taken: a freed communicator's handle may come
 * back for a new one. (Using a communicator while another thread frees it is erroneous in MPI, so
 * an entry in use is never the one being deleted.) */
static atomic_uint deletions;
static __thread struct {
  MPI_Comm comm;
  struct shim_entry *entry;
  unsigned deletions;
} last_lookup __attribute__((tls_model("initial-exec")));

static int delete_entry(MPI_Comm comm, int key, void *value, void *extra) {
  (void)comm, (void)key, (void)extra;
  struct shim_entry *e = value;
  atomic_fetch_add(&deletions, 1);
  unlink_entry(e);
  if (e->tally) tally_comm_destroy(e->tally);
  free(e);
  return MPI_SUCCESS;
}

static int ensure_keyval(void) {
  if (atomic_load_explicit(&keyval_ready, memory_order_acquire)) return 1;
  pthread_mutex_lock(&lock);
  if (!atomic_load(&keyval_ready) &&
      PMPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, delete_entry, &keyval, NULL) == MPI_SUCCESS)
    atomic_store_explicit(&keyval_ready, 1, memory_order_release);
  pthread_mutex_unlock(&lock);
  return atomic_load(&keyval_ready);
}

/* How making a rank's Tally communicator went, worst last: the ranks agree on the worst. */
enum made { MADE, FAILED, REFUSED /* Tally refused its configuration: a malformed TALLY_* variable */ };

static enum made outcome(tally_result_t r) {
  if (r == TALLY_SUCCESS) return MADE;
  shim_log("WARN", __FILE__, __LINE__, "libtally_mpi: %s", tally_comm_last_error(NULL));
  return r == TALLY_ERR_INVALID_ARGUMENT ? REFUSED : FAILED;
}

/* The ranks of `comm` on this host (collective over comm). */
static int local_ranks(MPI_Comm comm) {
  MPI_Comm local;
  int n = 1;
  if (PMPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) != MPI_SUCCESS) return n;
  PMPI_Comm_size(local, &n);
  PMPI_Comm_free(&local);
  return n;
}

/* The cores of this host (not this process's binding: mpirun binds each of 2 ranks to one core). */
static int usable_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* Collective over comm: every rank gets a Tally communicator, or none does. A failure (no network,
 * no memory) leaves the communicator's calls to MPI; a refused configuration ends the job, as a
 * malformed setting does in any Tally program. */
static void make_tally_comm(MPI_Comm comm, struct shim_entry *e) {
  int rank, size;
  PMPI_Comm_rank(comm, &rank);
  PMPI_Comm_size(comm, &size);
  struct {
    int made;
    tally_unique_id_t id;
  } from_root = {0};
  if (rank == 0) from_root.made = outcome(tally_get_unique_id(&from_root.id));
  int made = FAILED, worst = FAILED;
  if (PMPI_Bcast(&from_root, sizeof from_root, MPI_BYTE, 0, comm) == MPI_SUCCESS) made = from_root.made;
  if (made == MADE) {
    /* MPI waits in a collective as long as the peers take: unless TALLY_TIMEOUT says otherwise, so
     * does the shim (Tally's longest limit), where Tally's default would fail a long imbalance. */
    tally_config_t config = TALLY_CONFIG_INITIALIZER;
    if (!getenv("TALLY_TIMEOUT")) config.timeout_s = 1e7;
    made = outcome(tally_comm_init_rank_config(&e->tally, size, from_root.id, rank, &config));
  }
  /* with the outcome, whether this host runs more of the communicator's ranks than a rank has cores */
  int mine[2] = {made, local_ranks(comm) > usable_cores()}, worst_of[2];
  if (PMPI_Allreduce(mine, worst_of, 2, MPI_INT, MPI_MAX, comm) == MPI_SUCCESS) {
    worst = worst_of[0];
    e->own_cores = !worst_of[1];
  }
  if (worst == MADE) return;
  if (worst == REFUSED) {
    fprintf(stderr,
            "libtally_mpi: Tally refused its configuration (the message above, from the rank that has it): fix "
            "the TALLY_* variable, or run without libtally_mpi\n");
    PMPI_Abort(comm, 1);
  }
  shim_log("WARN", __FILE__, __LINE__,
           "libtally_mpi: no Tally communicator for a communicator of %d ranks (a rank failed to make its own); "
           "its collectives go to MPI",
           size);
  if (e->tally) tally_comm_destroy(e->tally);
  e->tally = NULL;
  e->why_not = SHIM_TALLY_UNAVAILABLE;
}

tally_comm_t shim_comm_get(MPI_Comm comm, int *own_cores, enum shim_reason *reason) {
  void *value = NULL;
  int found = 0;
  unsigned deleted = atomic_load(&deletions);
  if (last_lookup.entry && last_lookup.comm == comm && last_lookup.deletions == deleted) {
    value = last_lookup.entry;
    found = 1;
  } else if (!ensure_keyval() || PMPI_Comm_get_attr(comm, keyval, &value, &found) != MPI_SUCCESS) {
    return *reason = SHIM_TALLY_UNAVAILABLE, NULL;
  }
  struct shim_entry *e = value;
  if (!found) {
    e = calloc(1, sizeof *e);
    if (!e) return *reason = SHIM_TALLY_UNAVAILABLE, NULL;
    int inter = 0;
    PMPI_Comm_test_inter(comm, &inter);
    if (inter)
      e->why_not = SHIM_INTERCOMM; /* every rank sees the same: nothing collective was skipped */
    else
      make_tally_comm(comm, e);
    link_entry(e);
    PMPI_Comm_set_attr(comm, keyval, e);
  }
  last_lookup.comm = comm;
  last_lookup.entry = e;
  last_lookup.deletions = deleted;
  if (!e->tally) *reason = e->why_not;
  *own_cores = e->own_cores;
  return e->tally;
}

int shim_comm_has_tally(MPI_Comm comm) {
  void *value = NULL;
  int found = 0;
  return atomic_load(&keyval_ready) && PMPI_Comm_get_attr(comm, keyval, &value, &found) == MPI_SUCCESS && found &&
         ((struct shim_entry *)value)->tally;
}

void shim_comms_release_all(void) {
  if (!atomic_load(&keyval_ready)) return;
  MPI_Comm predefined[] = {MPI_COMM_WORLD, MPI_COMM_SELF};
  for (int i = 0; i < 2; i++) {
    void *value;
    int found = 0;
    if (PMPI_Comm_get_attr(predefined[i], keyval, &value, &found) == MPI_SUCCESS && found)
      PMPI_Comm_delete_attr(predefined[i], keyval);
  }
  /* Communicators the program never freed: their Tally half goes now; MPI may still call
   * delete_entry for them later, which then frees only the entry. */
  pthread_mutex_lock(&lock);
  for (struct shim_entry *e = alive; e; e = e->next) {
    if (e->tally) tally_comm_destroy(e->tally);
    e->tally = NULL;
  }
  pthread_mutex_unlock(&lock);
}
