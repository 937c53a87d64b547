/* tally-run: the local launcher. Starts N copies of a program on this host with the Tally
 * environment (TALLY_RANK/SIZE, TALLY_LOCAL_RANK/SIZE, TALLY_ROOT, TALLY_SECRET), forwards
 * SIGINT/SIGTERM/SIGHUP to them, and when one rank fails stops the others and exits with the
 * failing rank's status. Uses no part of the library. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define MAX_RANKS 4096
#define KILL_GRACE_SECONDS 3

struct rank_proc {
  pid_t pid;
  bool running;
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: tally-run -n N [--root HOST:PORT] [--] PROGRAM [ARGS...]\n"
          "\n"
          "Starts N local ranks of PROGRAM with TALLY_RANK, TALLY_SIZE, TALLY_LOCAL_RANK,\n"
          "TALLY_LOCAL_SIZE, TALLY_ROOT and TALLY_SECRET set, so that tally_comm_init_env()\n"
          "joins them into one communicator. Rank 0 hosts the bootstrap root.\n"
          "\n"
          "  -n, --np N          number of ranks to start (a positive integer, at most %d)\n"
          "      --root H:P      bootstrap root address to use instead of a free port on\n"
          "                      127.0.0.1; with it an existing TALLY_SECRET is kept\n"
          "  -h, --help          show this message\n"
          "\n"
          "SIGINT, SIGTERM and SIGHUP are forwarded to the ranks. If a rank exits non-zero or\n"
          "is killed by a signal, the others get SIGTERM (SIGKILL after %d s) and tally-run\n"
          "exits with that rank's status (128+signal for a signal). Exit status 2: bad\n"
          "arguments; 127: PROGRAM could not be run.\n",
          MAX_RANKS, KILL_GRACE_SECONDS);
}

static void bad_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "tally-run: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(run 'tally-run --help' for usage)\n");
  exit(2);
}

static int parse_nranks(const char *s) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (s[0] == '\0' || *end != '\0' || errno != 0 || v <= 0)
    bad_usage("-n needs a positive integer, not '%s'", s);
  if (v > MAX_RANKS) {
    fprintf(stderr, "tally-run: -n %ld is more than the %d ranks tally-run starts\n", v, MAX_RANKS);
    exit(2);
  }
  return (int)v;
}

/* Asks the kernel for a free TCP port on 127.0.0.1. Another process may take it before rank 0
 * binds it; the window is short and the job then fails at bootstrap with a clear error. */
static int pick_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  int saved = errno;
  close(fd);
  errno = saved;
  return port;
}

static int make_secret(char out[33]) {
  unsigned char raw[16];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof raw; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[32] = '\0';
  return 0;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void signal_all(struct rank_proc *procs, int n, int sig) {
  for (int i = 0; i < n; i++)
    if (procs[i].running) kill(procs[i].pid, sig);
}

int main(int argc, char **argv) {
  int nranks = 0;
  const char *root = NULL;
  int argi = 1;

  /* Options end at the first word that is not one of ours, so PROGRAM's own options are left
   * alone (tally-run -n 2 prog -n 5 works without "--"). */
  while (argi < argc) {
    const char *a = argv[argi];
    if (strcmp(a, "--") == 0) {
      argi++;
      break;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "-n") == 0 || strcmp(a, "--np") == 0 || strcmp(a, "-np") == 0) {
      if (argi + 1 >= argc) bad_usage("%s needs a number of ranks", a);
      nranks = parse_nranks(argv[argi + 1]);
      argi += 2;
    } else if (strncmp(a, "--np=", 5) == 0) {
      nranks = parse_nranks(a + 5);
      argi++;
    } else if (strncmp(a, "-n", 2) == 0 && a[2] != '\0') {
      nranks = parse_nranks(a + 2);
      argi++;
    } else if (strcmp(a, "--root") == 0) {
      if (argi + 1 >= argc) bad_usage("%s needs HOST:PORT", a);
      root = argv[argi + 1];
      argi += 2;
    } else if (strncmp(a, "--root=", 7) == 0) {
      root = a + 7;
      argi++;
    } else if (a[0] == '-' && a[1] != '\0') {
      bad_usage("unknown option '%s'", a);
    } else {
      break;
    }
  }
  if (nranks == 0) bad_usage("%smissing -n N (the number of ranks to start)", "");
  if (argi >= argc) bad_usage("%sno program to run", "");
  if (root != NULL && (root[0] == '\0' || strrchr(root, ':') == NULL))
    bad_usage("--root needs HOST:PORT, not '%s'", root);
  char **prog_argv = argv + argi;

  char root_buf[64];
  if (root == NULL) {
    int port = pick_free_port();
    if (port < 0) {
      fprintf(stderr, "tally-run: cannot find a free TCP port on 127.0.0.1: %s\n", strerror(errno));
      return 1;
    }
    snprintf(root_buf, sizeof root_buf, "127.0.0.1:%d", port);
    root = root_buf;
  }
  char secret[33];
  const char *old_secret = getenv("TALLY_SECRET");
  bool keep_secret = root != root_buf && old_secret != NULL && old_secret[0] != '\0';
  if (!keep_secret && make_secret(secret) != 0) {
    fprintf(stderr, "tally-run: cannot make a job secret: getrandom: %s\n", strerror(errno));
    return 1;
  }

  char size_str[16];
  snprintf(size_str, sizeof size_str, "%d", nranks);
  if (setenv("TALLY_SIZE", size_str, 1) != 0 || setenv("TALLY_LOCAL_SIZE", size_str, 1) != 0 ||
      setenv("TALLY_ROOT", root, 1) != 0 || (!keep_secret && setenv("TALLY_SECRET", secret, 1) != 0)) {
    fprintf(stderr, "tally-run: cannot set the environment: %s\n", strerror(errno));
    return 1;
  }

  /* Signals we care about are blocked and collected with sigtimedwait(); children get the
   * original mask back before exec. */
  sigset_t wait_set, old_mask;
  sigemptyset(&wait_set);
  sigaddset(&wait_set, SIGCHLD);
  sigaddset(&wait_set, SIGINT);
  sigaddset(&wait_set, SIGTERM);
  sigaddset(&wait_set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &wait_set, &old_mask) != 0) {
    fprintf(stderr, "tally-run: sigprocmask: %s\n", strerror(errno));
    return 1;
  }

  struct rank_proc *procs = calloc((size_t)nranks, sizeof *procs);
  if (procs == NULL) {
    fprintf(stderr, "tally-run: out of memory\n");
    return 1;
  }
  pid_t parent = getpid();
  fflush(NULL);
  int running = 0;
  for (int r = 0; r < nranks; r++) {
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "tally-run: cannot start rank %d: fork: %s; stopping the other ranks\n", r, strerror(errno));
      signal_all(procs, r, SIGTERM);
      sleep(1);
      signal_all(procs, r, SIGKILL);
      while (wait(NULL) > 0) {}
      return 1;
    }
    if (pid == 0) {
#ifdef __linux__
      /* If tally-run itself is killed, do not leave ranks behind. */
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
#else
      (void)parent;
#endif
      sigprocmask(SIG_SETMASK, &old_mask, NULL);
      char rank_str[16];
      snprintf(rank_str, sizeof rank_str, "%d", r);
      if (setenv("TALLY_RANK", rank_str, 1) != 0 || setenv("TALLY_LOCAL_RANK", rank_str, 1) != 0) {
        fprintf(stderr, "tally-run: rank %d: cannot set the environment: %s\n", r, strerror(errno));
        _exit(127);
      }
      execvp(prog_argv[0], prog_argv);
      fprintf(stderr, "tally-run: cannot run %s: %s\n", prog_argv[0], strerror(errno));
      fflush(stderr);
      _exit(127);
    }
    procs[r].pid = pid;
    procs[r].running = true;
    running++;
  }

  int exit_status = 0;
  bool stopping = false;      /* SIGTERM sent to the survivors after a failure */
  double kill_deadline = 0.0; /* when the survivors get SIGKILL */
  bool killed = false;

  while (running > 0) {
    struct timespec timeout = {1, 0};
    if (stopping && !killed) {
      double left = kill_deadline - now_seconds();
      if (left <= 0) {
        fprintf(stderr, "tally-run: %d rank(s) still running %d s after SIGTERM; sending SIGKILL\n", running,
                KILL_GRACE_SECONDS);
        signal_all(procs, nranks, SIGKILL);
        killed = true;
        continue;
      }
      timeout.tv_sec = (time_t)left;
      timeout.tv_nsec = (long)((left - (double)timeout.tv_sec) * 1e9);
    }
    siginfo_t info;
    int sig = sigtimedwait(&wait_set, &info, &timeout);
    if (sig < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        /* Fall through to reaping: a SIGCHLD may have been merged with an earlier one. */
      } else {
        fprintf(stderr, "tally-run: sigtimedwait: %s\n", strerror(errno));
        return 1;
      }
    } else if (sig != SIGCHLD) {
      /* Signals from the terminal already went to the whole foreground process group, the
       * ranks included; only signals sent to tally-run alone (kill, a batch system) are
       * passed on, so that a rank does not see Ctrl-C twice. */
      if (info.si_code != SI_KERNEL) signal_all(procs, nranks, sig);
    }

    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      int r = -1;
      for (int i = 0; i < nranks; i++)
        if (procs[i].running && procs[i].pid == pid) r = i;
      if (r < 0) continue;
      procs[r].running = false;
      running--;
      bool failed = false;
      int code = 0;
      if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        failed = true;
        code = WEXITSTATUS(status);
        if (exit_status == 0)
          fprintf(stderr, "tally-run: rank %d (pid %ld) exited with status %d%s\n", r, (long)pid, code,
                  running > 0 ? "; stopping the other ranks" : "");
      } else if (WIFSIGNALED(status)) {
        failed = true;
        int s = WTERMSIG(status);
        code = 128 + s;
        if (exit_status == 0)
          fprintf(stderr, "tally-run: rank %d (pid %ld) was killed by signal %d (%s)%s\n", r, (long)pid, s,
                  strsignal(s), running > 0 ? "; stopping the other ranks" : "");
      }
      if (failed && exit_status == 0) exit_status = code;
      if (failed && !stopping && running > 0) {
        stopping = true;
        signal_all(procs, nranks, SIGTERM);
        kill_deadline = now_seconds() + KILL_GRACE_SECONDS;
      }
    }
  }
  free(procs);
  return exit_status;
}
