/* SIGUSR1 to flight records (flight_signal.h): a self-pipe and a thread that dumps. */
#define _GNU_SOURCE
#include "flight_signal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "core/log.h"
#include "registry.h"

static int wake_pipe[2] = {-1, -1};
static pthread_once_t armed = PTHREAD_ONCE_INIT;

static void on_sigusr1(int sig) {
  (void)sig;
  int saved = errno;
  char one = 1;
  ssize_t ignored = write(wake_pipe[1], &one, 1); /* full pipe: a dump is already due */
  (void)ignored;
  errno = saved;
}

static void dump_one(tally_comm_t comm, void *arg) {
  (void)arg;
  tally_flight_dump(comm, "SIGUSR1 (TALLY_FLIGHT_SIGNAL=1)");
}

static void *dumper_main(void *arg) {
  (void)arg;
  for (;;) {
    char buf[64];
    ssize_t n = read(wake_pipe[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return NULL;
    tally_registry_each(dump_one, NULL);
  }
}

static void arm(void) {
  if (pipe2(wake_pipe, O_CLOEXEC) != 0) {
    TLOG_WARN(TALLY_SUBSYS_INIT, "TALLY_FLIGHT_SIGNAL=1: cannot make a pipe (%s); SIGUSR1 is left alone",
              strerror(errno));
    return;
  }
  fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK);
  pthread_t thread;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the dumper takes no signals: the handler runs elsewhere */
  int e = pthread_create(&thread, NULL, dumper_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e) {
    TLOG_WARN(TALLY_SUBSYS_INIT, "TALLY_FLIGHT_SIGNAL=1: cannot start the dumping thread (%s); SIGUSR1 is left alone",
              strerror(e));
    return;
  }
  pthread_detach(thread);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigusr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, NULL) != 0)
    TLOG_WARN(TALLY_SUBSYS_INIT, "TALLY_FLIGHT_SIGNAL=1: cannot take SIGUSR1 (%s)", strerror(errno));
  else
    TLOG_INFO(TALLY_SUBSYS_INIT, "TALLY_FLIGHT_SIGNAL=1: SIGUSR1 to process %d writes its flight records",
              (int)getpid());
}

void tally_flight_signal_arm(void) { pthread_once(&armed, arm); }
