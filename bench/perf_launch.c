/* perf_launch.c: starting tally-perf's ranks: forking -N local ranks and supervising them
 * (timeout, stopping the rest when one fails), or creating the communicator from a launcher's
 * environment (tally-run, mpirun, srun, torchrun) or as a single rank. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "perf.h"

static void init_fail(int rank, tally_result_t r, tally_comm_t comm) {
  if (rank >= 0)
    fprintf(stderr, "tally-perf: rank %d: %s: %s\n", rank, tally_result_string(r), tally_comm_last_error(comm));
  else
    fprintf(stderr, "tally-perf: %s: %s\n", tally_result_string(r), tally_comm_last_error(comm));
  fflush(stderr);
  exit(1);
}

/* The variables in which the launchers tally_comm_init_env knows give a process its rank. */
static const char *const rank_vars[] = {"TALLY_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"};

bool launcher_env_present(void) {
  for (size_t i = 0; i < sizeof rank_vars / sizeof rank_vars[0]; i++)
    if (getenv(rank_vars[i]) != NULL) return true;
  return false;
}

int env_rank_guess(void) {
  for (size_t i = 0; i < sizeof rank_vars / sizeof rank_vars[0]; i++) {
    const char *v = getenv(rank_vars[i]);
    if (v != NULL && v[0] != '\0') return atoi(v);
  }
  return -1;
}

static bool read_full(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

static bool write_full(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

/* As mpirun does when the ranks do not outnumber the cores: rank r on the r-th core this process
 * may use, so that the scheduler does not start two ranks on one core and move one later (small
 * calls then run several times slower for their first hundred or so iterations). More ranks than
 * cores stay unbound, also as mpirun leaves them. */
static void bind_to_core(int rank, int nranks) {
  cpu_set_t allowed, mine;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || nranks > CPU_COUNT(&allowed)) return;
  for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++) {
    if (!CPU_ISSET(cpu, &allowed) || seen++ != rank) continue;
    CPU_ZERO(&mine);
    CPU_SET(cpu, &mine);
    if (sched_setaffinity(0, sizeof mine, &mine) != 0)
      fprintf(stderr, "tally-perf: rank %d: cannot bind to core %d (%s); running unbound\n", rank, cpu, strerror(errno));
    return;
  }
}

/* The body of one forked rank: rank 0 makes the unique id and hands it to the others over
 * the pipe (N-1 copies of 128 bytes; each write is atomic because it is under PIPE_BUF). */
static int forked_rank(int rank, int nranks, int pipefd[2], const struct options *o) {
  tally_unique_id_t id;
  tally_comm_t comm = NULL;
  if (rank == 0) {
    close(pipefd[0]);
    tally_result_t r = tally_get_unique_id(&id);
    if (r != TALLY_SUCCESS) init_fail(rank, r, NULL);
    for (int i = 1; i < nranks; i++) {
      if (!write_full(pipefd[1], &id, sizeof id)) {
        fprintf(stderr, "tally-perf: rank 0: cannot pass the unique id to the other ranks: %s\n", strerror(errno));
        return 1;
      }
    }
    close(pipefd[1]);
  } else {
    close(pipefd[1]);
    if (!read_full(pipefd[0], &id, sizeof id)) {
      fprintf(stderr, "tally-perf: rank %d: rank 0 exited before passing the unique id\n", rank);
      return 1;
    }
    close(pipefd[0]);
  }
  tally_result_t r = tally_comm_init_rank(&comm, nranks, id, rank);
  if (r != TALLY_SUCCESS) init_fail(rank, r, comm);
  return run_rank(comm, o);
}

static void kill_all(pid_t *pids, const bool *alive, int n, int sig) {
  for (int i = 0; i < n; i++)
    if (alive[i]) kill(pids[i], sig);
}

int run_forked(const struct options *o) {
  int n = o->fork_ranks;
  int pipefd[2];
  if (pipe(pipefd) != 0) {
    fprintf(stderr, "tally-perf: pipe: %s\n", strerror(errno));
    return 1;
  }
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  bool *alive = calloc((size_t)n, sizeof *alive);
  if (pids == NULL || alive == NULL) {
    fprintf(stderr, "tally-perf: out of memory\n");
    return 1;
  }
  pid_t parent = getpid();
  fflush(NULL);
  for (int r = 0; r < n; r++) {
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "tally-perf: cannot start rank %d: fork: %s\n", r, strerror(errno));
      kill_all(pids, alive, r, SIGKILL);
      while (wait(NULL) > 0) {}
      return 1;
    }
    if (pid == 0) {
#ifdef __linux__
      prctl(PR_SET_PDEATHSIG, SIGKILL); /* do not outlive the parent */
      if (getppid() != parent) _exit(1);
#else
      (void)parent;
#endif
      free(pids);
      free(alive);
      if (!o->no_bind) bind_to_core(r, n);
      int status = forked_rank(r, n, pipefd, o);
      fflush(NULL);
      exit(status);
    }
    pids[r] = pid;
    alive[r] = true;
  }
  close(pipefd[0]);
  close(pipefd[1]);

  int running = n, result = 0;
  bool stopping = false, killed = false;
  double start = now_seconds(), kill_at = 0;
  while (running > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;
    if (pid > 0) {
      int r = -1;
      for (int i = 0; i < n; i++)
        if (alive[i] && pids[i] == pid) r = i;
      if (r < 0) continue;
      alive[r] = false;
      running--;
      if (WIFEXITED(status) && WEXITSTATUS(status) == STATUS_WRONG) {
        if (result == 0) result = 1; /* rank 0 has reported the wrong elements */
        continue;
      }
      bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      bool skipped = WIFEXITED(status) && WEXITSTATUS(status) == STATUS_SKIPPED; /* it said why */
      if (failed && result == 0 && skipped) {
        result = STATUS_SKIPPED;
      } else if (failed && result == 0) {
        result = WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1;
        if (WIFEXITED(status))
          fprintf(stderr, "tally-perf: rank %d (pid %ld) exited with status %d%s\n", r, (long)pid,
                  WEXITSTATUS(status), running ? "; stopping the other ranks" : "");
        else
          fprintf(stderr, "tally-perf: rank %d (pid %ld) was killed by signal %d (%s)%s\n", r, (long)pid,
                  WTERMSIG(status), strsignal(WTERMSIG(status)), running ? "; stopping the other ranks" : "");
      }
      if (failed && !stopping && running > 0) {
        stopping = true;
        kill_all(pids, alive, n, SIGTERM);
        kill_at = now_seconds() + 3;
      }
      continue;
    }
    double now = now_seconds();
    if (!stopping && o->timeout > 0 && now - start > o->timeout) {
      fprintf(stderr, "tally-perf: %d rank(s) still running after the %g s timeout (-T); stopping them\n", running,
              o->timeout);
      result = 1;
      stopping = true;
      kill_all(pids, alive, n, SIGTERM);
      kill_at = now + 3;
    }
    if (stopping && !killed && now >= kill_at) {
      kill_all(pids, alive, n, SIGKILL);
      killed = true;
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  free(pids);
  free(alive);
  return result;
}

/* Without -N (or with -N 1): the communicator from the launcher's environment, or with no
 * launcher a single rank that hosts the root itself. Exits with status 1 if that fails. */
tally_comm_t open_comm(const struct options *o) {
  tally_comm_t comm = NULL;
  tally_result_t r;
  if (o->fork_ranks == 0 && launcher_env_present()) {
    r = tally_comm_init_env(&comm);
    if (r != TALLY_SUCCESS) init_fail(env_rank_guess(), r, comm);
  } else {
    tally_unique_id_t id;
    r = tally_get_unique_id(&id);
    if (r != TALLY_SUCCESS) init_fail(0, r, NULL);
    r = tally_comm_init_rank(&comm, 1, id, 0);
    if (r != TALLY_SUCCESS) init_fail(0, r, comm);
  }
  return comm;
}
