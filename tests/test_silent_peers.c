/* Ranks that go quiet. A rank that stalls before a collective: every rank that times out waiting
 * names it, wherever it sits in the ring, the trees or the halving-doubling pairs (or on the host
 * board, for small calls), and some rank's own flight record says it heard nothing from it. A
 * rank whose host stops answering (its packets dropped, then the process killed, so no FIN or RST
 * ever arrives): the TCP keep-alive notices within TALLY_KEEPALIVE, long before TALLY_TIMEOUT. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "comm/comm.h"
#include "harness.h"
#include "netns.h"

enum { RANKS = 8, STALLED = 5, COUNT = 256, TIMEOUT_S = 3 };

static int warm_up(tally_comm_t comm, int rank) {
  float buf[COUNT];
  for (int i = 0; i < COUNT; i++) buf[i] = 1;
  if (tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "warm-up allreduce: %s", tally_comm_last_error(comm));
  return 0;
}

struct stall_plan {
  int broadcast;
  const char *algo;          /* TALLY_ALGO, NULL for the tuner's choice */
  int count;                 /* elements per call: small ones go to the host board */
  _Atomic int heard_nothing; /* in shared memory: ranks whose own record names the stalled rank */
};

static int stalled_rank_is_named(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  struct stall_plan *plan = arg;
  int broadcast = plan->broadcast;
  if (warm_up(comm, rank)) return 1;
  if (rank == STALLED) {
    sleep(TIMEOUT_S + 3); /* never calls the collective while the others wait */
    return 0;
  }
  static float buf[COUNT * 64]; /* large enough for the ring case */
  double start = harness_now_s();
  tally_result_t r = broadcast ? tally_broadcast(buf, buf, (size_t)plan->count, TALLY_FLOAT32, 0, comm, NULL)
                               : tally_allreduce(buf, buf, (size_t)plan->count, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  double took = harness_now_s() - start;
  const char *msg = tally_comm_last_error(comm);
  int chain = plan->algo && strstr(plan->algo, "ring");
  if (broadcast && chain && rank > 0 && rank < STALLED) /* the chain passes them before the stalled rank */
    return r == TALLY_SUCCESS ? 0 : harness_fail(rank, "broadcast before the stall failed: %s", msg);
  if (broadcast && !chain && r == TALLY_SUCCESS) return 0; /* outside the stalled rank's subtrees */
  if (r != TALLY_ERR_TIMEOUT) return harness_fail(rank, "expected a timeout, got %s: %s", tally_result_string(r), msg);
  char named[64];
  snprintf(named, sizeof named, "[rank at fault: rank %d (", STALLED);
  if (!strstr(msg, named)) return harness_fail(rank, "the message does not name rank %d as at fault: %s", STALLED, msg);
  if (strstr(msg, "heard nothing from rank 5")) atomic_fetch_add(&plan->heard_nothing, 1);
  if (took > TIMEOUT_S + 2.5) return harness_fail(rank, "took %.1f s to give up (TALLY_TIMEOUT=%d)", took, TIMEOUT_S);
  return 0;
}

static void run_stall(int broadcast, int count, const char *algo) {
  char timeout[16];
  snprintf(timeout, sizeof timeout, "%d", TIMEOUT_S);
  setenv("TALLY_TIMEOUT", timeout, 1);
  struct stall_plan *plan = mmap(NULL, sizeof *plan, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(plan, MAP_FAILED);
  plan->broadcast = broadcast;
  plan->count = count;
  plan->algo = algo;
  if (algo) setenv("TALLY_ALGO", algo, 1);
  cr_assert_eq(harness_run(RANKS, 60, stalled_rank_is_named, plan), 0);
  cr_assert_gt(atomic_load(&plan->heard_nothing), 0, "no rank's own record says it heard nothing from rank 5");
  munmap(plan, sizeof *plan);
  unsetenv("TALLY_TIMEOUT");
  unsetenv("TALLY_ALGO");
}

Test(silent_peers, stalled_rank_named_by_every_waiting_rank_in_allreduce) { run_stall(0, COUNT * 64, NULL); }
Test(silent_peers, stalled_rank_named_in_ring_allreduce) { run_stall(0, COUNT * 64, "allreduce:ring"); }
Test(silent_peers, stalled_rank_named_in_halving_doubling_allreduce) { run_stall(0, COUNT * 64, "allreduce:rhd"); }
Test(silent_peers, stalled_rank_named_in_tree_allreduce) { run_stall(0, COUNT * 64, "allreduce:tree"); }
Test(silent_peers, stalled_rank_named_by_every_waiting_rank_in_broadcast) { run_stall(1, COUNT, "broadcast:ring"); }
Test(silent_peers, stalled_rank_named_in_tree_broadcast) { run_stall(1, COUNT, "broadcast:tree"); }
Test(silent_peers, stalled_rank_named_on_the_host_board) { run_stall(0, 1, NULL); }

/* A host that goes silent in the middle of a job. */
enum { HOSTS = 4, SILENT = 2, KEEPALIVE_S = 2 };

struct silent_host {
  int ports[HOSTS]; /* each rank's data listening port */
};

static int host_goes_silent(tally_comm_t comm, int rank, int n, void *arg) {
  struct silent_host *shared = arg;
  struct tally_sockaddr me;
  comm->slots[TALLY_SLOT_NET].ops->address(comm->slots[TALLY_SLOT_NET].ep, &me);
  shared->ports[rank] = tally_net_port(&me);
  if (warm_up(comm, rank)) return 1; /* after it, every rank's port is published */
  if (rank == SILENT) {
    /* Each ring connection of this rank ends at its own listening port or at its successor's. */
    char rule[160];
    snprintf(rule, sizeof rule, "-A INPUT -p tcp -m multiport --ports %d,%d -j DROP", shared->ports[SILENT],
             shared->ports[(SILENT + 1) % n]);
    if (netns_iptables(rule) != 0) return harness_fail(rank, "iptables %s failed", rule);
    raise(SIGKILL); /* its FIN and RST are dropped: the others only hear silence */
  }
  float buf[COUNT] = {0};
  double start = harness_now_s();
  tally_result_t r = tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  double took = harness_now_s() - start;
  const char *msg = tally_comm_last_error(comm);
  if (r != TALLY_ERR_REMOTE)
    return harness_fail(rank, "expected a remote error, got %s: %s", tally_result_string(r), msg);
  if (!strstr(msg, "[rank at fault: rank 2 (")) return harness_fail(rank, "rank 2 is not named as at fault: %s", msg);
  if (rank == SILENT + 1 && !strstr(msg, "TALLY_KEEPALIVE"))
    return harness_fail(rank, "the rank receiving from the silent one should report the keep-alive: %s", msg);
  if (took > KEEPALIVE_S + 4)
    return harness_fail(rank, "took %.1f s to notice (TALLY_KEEPALIVE=%d)", took, KEEPALIVE_S);
  fprintf(stderr, "rank %d noticed the silent host after %.2f s\n", rank, took);
  return 0;
}

Test(silent_peers, silent_host_noticed_by_keepalive) {
  char why[256];
  if (netns_enter_private(why, sizeof why) != 0) cr_skip_test("SKIPPED: %s", why);
  if (netns_iptables("-L -n >/dev/null 2>&1") != 0)
    cr_skip_test("SKIPPED: iptables is missing or unusable here (scripts/install-deps.sh installs it)");
  struct silent_host *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(shared, MAP_FAILED);
  char keepalive[16];
  snprintf(keepalive, sizeof keepalive, "%d", KEEPALIVE_S);
  setenv("TALLY_KEEPALIVE", keepalive, 1);
  setenv("TALLY_TIMEOUT", "60", 1);    /* the keep-alive, not the timeout, must catch it */
  setenv("TALLY_TRANSPORT", "tcp", 1); /* the ranks share this machine, but here they talk like hosts */
  cr_assert_eq(harness_run_killing(HOSTS, 60, host_goes_silent, shared, SILENT), 0);
  unsetenv("TALLY_KEEPALIVE");
  unsetenv("TALLY_TIMEOUT");
  unsetenv("TALLY_TRANSPORT");
  munmap(shared, sizeof *shared);
}
