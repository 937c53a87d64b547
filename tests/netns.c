/* Private network namespaces for the network-fault tests (see netns.h). */
#define _GNU_SOURCE
#include "netns.h"

#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int netns_enter_private(char *why, size_t whylen) {
  if (unshare(CLONE_NEWNET) != 0) {
    snprintf(why, whylen, "cannot create a network namespace (unshare: %s); run the tests as root", strerror(errno));
    return -1;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  int ok = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags |= IFF_UP;
  ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  if (fd >= 0) close(fd);
  if (!ok) {
    snprintf(why, whylen, "cannot bring up loopback in the new network namespace: %s", strerror(errno));
    return -1;
  }
  return 0;
}

int netns_iptables(const char *args) {
  if (system("command -v iptables >/dev/null 2>&1") != 0) return -1;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "iptables %s", args);
  int status = system(cmd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* Lines of /proc/net/tcp: "sl local_address rem_address st ...", addresses as HEX:PORT, state 0A
 * is LISTEN. */
static int scan(const char *path, int *ports, int n, int max) {
  FILE *f = fopen(path, "r");
  if (!f) return n;
  char line[512], local[64], remote[64];
  unsigned state;
  if (!fgets(line, sizeof line, f)) line[0] = '\0'; /* header */
  while (n < max && fgets(line, sizeof line, f)) {
    if (sscanf(line, "%*s %63s %63s %x", local, remote, &state) != 3 || state != 0x0A) continue;
    const char *colon = strrchr(local, ':');
    if (colon) ports[n++] = (int)strtol(colon + 1, NULL, 16);
  }
  fclose(f);
  return n;
}

int netns_listening_ports(int *ports, int max) {
  int n = scan("/proc/net/tcp", ports, 0, max);
  return scan("/proc/net/tcp6", ports, n, max);
}
