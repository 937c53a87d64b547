/* Strangers on the wire. While a job starts up and runs, another process connects to every port
 * the job listens on (the bootstrap root's and every rank's data port), again and again, and sends
 * random bytes, a truncated or forged handshake, or nothing at all. The job must still start,
 * compute correct results and finish: every such connection is refused without disturbing it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "netns.h"

enum { RANKS = 4, COMMS = 20, COUNT = 4096, MAX_PORTS = 64 };

struct attack_stats {
  atomic_int connections; /* connections the stranger made and fed */
};

/* What the stranger sends on one connection. The handshake's opening bytes are written out here
 * (magic "TLYA", version 1, purpose) so that some attempts get past the first check. */
static size_t stranger_bytes(unsigned char *buf, size_t cap, unsigned seed) {
  size_t len = (size_t)(rand_r(&seed) % (unsigned)cap);
  for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)rand_r(&seed);
  static const unsigned char hello[] = {'T', 'L', 'Y', 'A', 0, 1, 0, 1};
  switch (rand_r(&seed) % 4) {
    case 0: /* random bytes */ break;
    case 1: /* a hello cut short */
      len = (size_t)(rand_r(&seed) % sizeof hello);
      memcpy(buf, hello, len);
      break;
    case 2: /* a whole hello, then a forged proof */
      memcpy(buf, hello, sizeof hello);
      buf[7] = (unsigned char)(1 + rand_r(&seed) % 2); /* bootstrap or data purpose */
      if (len < 24 + 224) len = 24 + 224;
      break;
    default: /* nothing: connect and hang up */ len = 0;
  }
  return len;
}

static void attack_port(int port, unsigned seed) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  /* the job listens on its chosen interface: loopback is the only one in this namespace */
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) == 0) {
    unsigned char buf[512];
    size_t len = stranger_bytes(buf, sizeof buf, seed);
    if (len > 0 && send(fd, buf, len, MSG_NOSIGNAL) < 0) { /* refused mid-way: fine */
    }
  }
  close(fd);
}

static void stranger(struct attack_stats *stats) {
  unsigned seed = 12345;
  for (;;) {
    int ports[MAX_PORTS];
    int n = netns_listening_ports(ports, MAX_PORTS);
    for (int i = 0; i < n; i++) {
      attack_port(ports[i], rand_r(&seed));
      atomic_fetch_add(&stats->connections, 1);
    }
    usleep(500);
  }
}

/* Checks a few allreduces on `comm`. */
static int allreduce_correct(tally_comm_t comm, int rank, int n, int round) {
  static float buf[COUNT];
  for (int i = 0; i < COUNT; i++) buf[i] = (float)(rank + i % 7 + round);
  tally_result_t r = tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "allreduce %d: %s", round, tally_comm_last_error(comm));
  for (int i = 0; i < COUNT; i++) {
    float want = (float)(n * (n - 1) / 2 + n * (i % 7 + round));
    if (buf[i] != want) return harness_fail(rank, "round %d element %d: %g, expected %g", round, i, buf[i], want);
  }
  return 0;
}

/* Builds communicator after communicator (a fresh bootstrap root and fresh data ports each time,
 * with one rank late so the others sit in their accept loops while the stranger knocks), and
 * checks results on each. */
static int communicators_under_attack(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  for (int round = 0; round < COMMS; round++) {
    tally_unique_id_t id;
    if (rank == 0 && tally_get_unique_id(&id) != TALLY_SUCCESS)
      return harness_fail(rank, "tally_get_unique_id: %s", tally_comm_last_error(NULL));
    if (tally_broadcast(&id, &id, sizeof id, TALLY_UINT8, 0, comm, NULL) != TALLY_SUCCESS)
      return harness_fail(rank, "sending the unique id: %s", tally_comm_last_error(comm));
    if (rank == round % n) usleep(30000);
    tally_comm_t fresh;
    if (tally_comm_init_rank(&fresh, n, id, rank) != TALLY_SUCCESS)
      return harness_fail(rank, "communicator %d: %s", round, tally_comm_last_error(NULL));
    int bad = allreduce_correct(fresh, rank, n, round) || allreduce_correct(comm, rank, n, round);
    tally_comm_destroy(fresh);
    if (bad) return 1;
  }
  return 0;
}

/* Runs the job with the ranks' log in a file; returns the number of refused connections logged. */
static int run_logged(int *failed) {
  char path[] = "/tmp/tally-hostile-XXXXXX";
  int log = mkstemp(path);
  cr_assert_geq(log, 0);
  unlink(path);
  fflush(NULL);
  int saved = dup(2);
  dup2(log, 2);
  *failed = harness_run(RANKS, 120, communicators_under_attack, NULL);
  fflush(NULL);
  dup2(saved, 2);
  close(saved);
  FILE *f = fdopen(log, "r");
  rewind(f);
  char line[1024];
  int refused = 0;
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "refused a connection"))
      refused++;
    else
      fputs(line, stderr); /* anything else the ranks said */
  }
  fclose(f);
  return refused;
}

Test(hostile_network, job_survives_strangers_on_every_port) {
  char why[256];
  if (netns_enter_private(why, sizeof why) != 0) cr_skip_test("SKIPPED: %s", why);
  struct attack_stats *stats = mmap(NULL, sizeof *stats, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(stats, MAP_FAILED);
  setenv("TALLY_DEBUG", "WARN", 1); /* each refused stranger is a WARN line, counted below */
  fflush(NULL);
  pid_t attacker = fork();
  if (attacker == 0) {
    stranger(stats);
    _exit(0);
  }
  int failed;
  int refused = run_logged(&failed);
  kill(attacker, SIGKILL);
  waitpid(attacker, NULL, 0);
  unsetenv("TALLY_DEBUG");
  cr_assert_eq(failed, 0, "the job failed under attack");
  int connections = atomic_load(&stats->connections);
  fprintf(stderr, "the stranger made %d connections to the job's ports; the job refused %d during handshakes\n",
          connections, refused);
  cr_assert_gt(refused, 10, "only %d strangers reached a handshake: the test proved little", refused);
  munmap(stats, sizeof *stats);
}
