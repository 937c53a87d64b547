/* Fork-based rank launcher for the multi-process tests (see harness.h). */
#define _GNU_SOURCE
#include "harness.h"

#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Present when built with AddressSanitizer: rank processes end with _exit, which skips the
 * sanitizer's own leak check, so they run it themselves. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

int harness_fail(int rank, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "rank %d: ", rank);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return 1;
}

int harness_expect(int rank, tally_comm_t comm, tally_result_t got, tally_result_t want, const char *needle) {
  const char *msg = tally_comm_last_error(comm);
  if (got != want)
    return harness_fail(rank, "got %s, expected %s: %s", tally_result_string(got), tally_result_string(want), msg);
  if (!strstr(msg, needle)) return harness_fail(rank, "message lacks '%s': %s", needle, msg);
  return 0;
}

struct comm_body {
  harness_body_fn body;
  void *arg;
};

static int run_with_comm(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  struct comm_body *cb = arg;
  tally_comm_t comm;
  tally_result_t r = tally_comm_init_rank(&comm, nranks, *id, rank);
  if (r != TALLY_SUCCESS)
    return harness_fail(rank, "tally_comm_init_rank: %s: %s", tally_result_string(r), tally_comm_last_error(NULL));
  int rc = cb->body(comm, rank, nranks, cb->arg);
  r = tally_comm_destroy(comm);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "tally_comm_destroy: %s", tally_result_string(r));
  return rc;
}

struct hosted_body {
  int ranks_per_host;
  struct comm_body inner;
};

static int run_on_fake_host(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  const struct hosted_body *hb = arg;
  char host[32];
  snprintf(host, sizeof host, "harness-host-%d", rank / hb->ranks_per_host);
  setenv("TALLY_HOSTID", host, 1);
  return run_with_comm(rank, nranks, id, (void *)&hb->inner);
}

double harness_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* In a rank of harness_run_growing: the pipe to the newcomers, and how many there are. */
static int newcomer_pipe = -1, newcomers;

int harness_send_id(const tally_unique_id_t *id) {
  for (int i = 0; i < newcomers; i++)
    if (newcomer_pipe < 0 || write(newcomer_pipe, id, sizeof *id) != sizeof *id) return -1;
  return 0;
}

/* A newcomer process: waits for the id on the pipe, then runs its body. */
static int run_newcomer(int index, int nnew, int fd, harness_raw_fn newcomer, void *arg) {
  tally_unique_id_t id;
  if (read(fd, &id, sizeof id) != sizeof id) return harness_fail(-1 - index, "newcomer %d got no id", index);
  return newcomer(index, nnew, &id, arg);
}

/* Forks the ranks and waits for them; `victim` (-1: none) is the rank expected to die by SIGKILL.
 * `nnew` newcomer processes (harness_run_growing) run `newcomer` once a rank sent them an id. */
static int run_ranks_growing(int nranks, double deadline_s, harness_raw_fn body, void *arg, int victim, int nnew,
                             harness_raw_fn newcomer, void *newcomer_arg) {
  int pipefd[2], growfd[2];
  if (pipe(pipefd) != 0) return 1;
  if (pipe(growfd) != 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    return 1;
  }
  fflush(NULL);
  pid_t *pids = calloc((size_t)(nranks + nnew), sizeof *pids);
  for (int i = 0; i < nnew; i++) {
    pids[nranks + i] = fork();
    if (pids[nranks + i] == 0) {
      close(pipefd[0]);
      close(pipefd[1]);
      close(growfd[1]);
      int rc = run_newcomer(i, nnew, growfd[0], newcomer, newcomer_arg);
      if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() && rc == 0)
        rc = harness_fail(nranks + i, "LeakSanitizer found leaks (see above)");
      fflush(NULL);
      _exit(rc);
    }
  }
  for (int r = 0; r < nranks; r++) {
    pids[r] = fork();
    if (pids[r] == 0) {
      close(growfd[0]);
      newcomer_pipe = growfd[1];
      newcomers = nnew;
      tally_unique_id_t id;
      if (r == 0) {
        close(pipefd[0]);
        tally_result_t res = tally_get_unique_id(&id);
        if (res != TALLY_SUCCESS) _exit(harness_fail(0, "tally_get_unique_id: %s", tally_comm_last_error(NULL)));
        for (int i = 1; i < nranks; i++)
          if (write(pipefd[1], &id, sizeof id) != sizeof id) _exit(harness_fail(0, "pipe write failed"));
        close(pipefd[1]);
      } else {
        close(pipefd[1]);
        if (read(pipefd[0], &id, sizeof id) != sizeof id) _exit(harness_fail(r, "did not get the unique id"));
        close(pipefd[0]);
      }
      int rc = body(r, nranks, &id, arg);
      if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() && rc == 0)
        rc = harness_fail(r, "LeakSanitizer found leaks (see above)");
      fflush(NULL);
      _exit(rc);
    }
  }
  close(pipefd[0]);
  close(pipefd[1]);
  close(growfd[0]);
  close(growfd[1]);
  nranks += nnew; /* from here on the newcomers are waited for like the ranks */
  int failed = 0, left = nranks;
  double deadline = harness_now_s() + deadline_s;
  while (left > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < nranks; r++)
        if (pids[r] == pid) {
          pids[r] = 0;
          int killed_as_planned = r == victim && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
          if (!killed_as_planned && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
            fprintf(stderr, "harness: rank %d %s %d\n", r, WIFEXITED(status) ? "exited with" : "killed by signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            failed = 1;
          }
        }
      left--;
      continue;
    }
    if (harness_now_s() > deadline) {
      for (int r = 0; r < nranks; r++)
        if (pids[r] > 0) {
          fprintf(stderr, "harness: rank %d still running after %.0f s: killing it (a hang is a failure)\n", r,
                  deadline_s);
          kill(pids[r], SIGKILL);
        }
      while (waitpid(-1, NULL, 0) > 0) {
      }
      failed = 1;
      break;
    }
    usleep(2000);
  }
  free(pids);
  return failed;
}

static int run_ranks(int nranks, double deadline_s, harness_raw_fn body, void *arg, int victim) {
  return run_ranks_growing(nranks, deadline_s, body, arg, victim, 0, NULL, NULL);
}

int harness_run_growing(int nranks, int nnew, double deadline_s, harness_body_fn body, harness_raw_fn newcomer,
                        void *arg, int victim) {
  struct comm_body cb = {body, arg};
  return run_ranks_growing(nranks, deadline_s, run_with_comm, &cb, victim, nnew, newcomer, arg);
}

int harness_run_raw(int nranks, double deadline_s, harness_raw_fn body, void *arg) {
  return run_ranks(nranks, deadline_s, body, arg, -1);
}

int harness_run(int nranks, double deadline_s, harness_body_fn body, void *arg) {
  struct comm_body cb = {body, arg};
  return run_ranks(nranks, deadline_s, run_with_comm, &cb, -1);
}

int harness_share_one_cpu(int on) {
  static cpu_set_t saved;
  static int have_saved;
  if (!on) return have_saved ? sched_setaffinity(0, sizeof saved, &saved) : 0;
  if (!have_saved && sched_getaffinity(0, sizeof saved, &saved) != 0) return -1;
  have_saved = 1;
  int cpu = sched_getcpu();
  if (cpu < 0) return -1;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return sched_setaffinity(0, sizeof one, &one);
}

int harness_run_on_hosts(int nranks, int ranks_per_host, double deadline_s, harness_body_fn body, void *arg) {
  struct hosted_body hb = {ranks_per_host, {body, arg}};
  return harness_run_raw(nranks, deadline_s, run_on_fake_host, &hb);
}

int harness_run_killing(int nranks, double deadline_s, harness_body_fn body, void *arg, int victim) {
  struct comm_body cb = {body, arg};
  return run_ranks(nranks, deadline_s, run_with_comm, &cb, victim);
}
