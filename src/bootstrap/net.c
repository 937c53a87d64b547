/* Socket helpers: interface choice, listen/connect, and blocking-with-deadline reads and writes
 * on non-blocking descriptors (poll, never a spin). */
#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"

const char *tally_net_format(const struct tally_sockaddr *addr, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
    snprintf(buf, len, "%s:%d", host, tally_net_port(addr));
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
    snprintf(buf, len, "[%s]:%d", host, tally_net_port(addr));
  } else {
    snprintf(buf, len, "(address family %d)", sa->sa_family);
  }
  return buf;
}

int tally_net_port(const struct tally_sockaddr *addr) {
  const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
  if (sa->sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)sa)->sin_port);
  if (sa->sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  return -1;
}

void tally_net_pack(const struct tally_sockaddr *addr, unsigned char out[TALLY_PACKED_ADDR_BYTES]) {
  const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
  memset(out, 0, TALLY_PACKED_ADDR_BYTES);
  out[0] = sa->sa_family == AF_INET ? 4 : 6;
  out[1] = (unsigned char)(tally_net_port(addr) >> 8);
  out[2] = (unsigned char)tally_net_port(addr);
  if (sa->sa_family == AF_INET)
    memcpy(out + 3, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  else
    memcpy(out + 3, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

int tally_net_unpack(const unsigned char in[TALLY_PACKED_ADDR_BYTES], struct tally_sockaddr *addr) {
  uint16_t port = htons((uint16_t)(in[1] << 8 | in[2]));
  if ((in[0] != 4 && in[0] != 6) || port == 0) return -1;
  memset(addr, 0, sizeof *addr);
  if (in[0] == 4) {
    for (int i = 7; i < TALLY_PACKED_ADDR_BYTES; i++)
      if (in[i] != 0) return -1; /* an IPv4 address leaves the rest of the field zero */
    struct sockaddr_in *a = (struct sockaddr_in *)&addr->ss;
    a->sin_family = AF_INET;
    a->sin_port = port;
    memcpy(&a->sin_addr, in + 3, 4);
    addr->len = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&addr->ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = port;
    memcpy(&a->sin6_addr, in + 3, 16);
    addr->len = sizeof *a;
  }
  return 0;
}

/* Does interface `name` pass the NCCL-style filter? */
static int interface_matches(const char *filter, const char *name) {
  int exclude = filter[0] == '^';
  if (exclude) filter++;
  int exact = filter[0] == '=';
  if (exact) filter++;
  char list[128];
  snprintf(list, sizeof list, "%s", filter);
  int listed = 0;
  char *save = NULL;
  for (char *tok = strtok_r(list, ",", &save); tok && !listed; tok = strtok_r(NULL, ",", &save))
    listed = exact ? !strcmp(name, tok) : !strncmp(name, tok, strlen(tok));
  return exclude ? !listed : listed;
}

tally_result_t tally_net_pick_address(const char *filter, struct tally_sockaddr *addr) {
  struct ifaddrs *ifs;
  if (getifaddrs(&ifs) != 0)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot list network interfaces: getifaddrs: %s", strerror(errno));
  const struct ifaddrs *best = NULL, *loopback = NULL;
  char names[512] = "";
  for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
    if (!strstr(names, i->ifa_name))
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", names[0] ? ", " : "", i->ifa_name);
    if (!(i->ifa_flags & IFF_UP)) continue;
    if (i->ifa_addr->sa_family == AF_INET6 &&
        IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr))
      continue; /* link-local addresses need a scope id to be reached: skip them */
    if (filter[0]) {
      if (!interface_matches(filter, i->ifa_name)) continue;
    } else if (i->ifa_flags & IFF_LOOPBACK) {
      if (!loopback || (loopback->ifa_addr->sa_family == AF_INET6 && i->ifa_addr->sa_family == AF_INET))
        loopback = i;
      continue;
    }
    /* Prefer IPv4 on the first matching interface. */
    if (!best || (best->ifa_addr->sa_family == AF_INET6 && i->ifa_addr->sa_family == AF_INET &&
                  !strcmp(best->ifa_name, i->ifa_name)))
      best = i;
  }
  if (!best) best = filter[0] ? NULL : loopback;
  if (!best) {
    freeifaddrs(ifs);
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_SOCKET_IFNAME='%s' matches no interface that is up with an address; interfaces here: %s",
                       filter, names);
  }
  memset(addr, 0, sizeof *addr);
  addr->len = best->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  memcpy(&addr->ss, best->ifa_addr, addr->len);
  freeifaddrs(ifs);
  return TALLY_SUCCESS;
}

tally_result_t tally_net_resolve(const char *host, int port, struct tally_sockaddr *addr) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  int rc = getaddrinfo(host, service, &hints, &res);
  if (rc != 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "cannot resolve host '%s': %s", host, gai_strerror(rc));
  memset(addr, 0, sizeof *addr);
  addr->len = res->ai_addrlen;
  memcpy(&addr->ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return TALLY_SUCCESS;
}

void tally_net_set_port(struct tally_sockaddr *addr, int port) {
  struct sockaddr *sa = (struct sockaddr *)&addr->ss;
  if (sa->sa_family == AF_INET)
    ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

tally_result_t tally_net_listen(struct tally_sockaddr *addr, int *out_fd) {
  char text[80];
  int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (tally_net_port(addr) == 0) tally_net_set_port(addr, 0);
  if (bind(fd, (struct sockaddr *)&addr->ss, addr->len) != 0 || listen(fd, 1024) != 0) {
    int err = errno;
    close(fd);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot listen on %s: %s", tally_net_format(addr, text, sizeof text),
                       strerror(err));
  }
  addr->len = sizeof addr->ss;
  getsockname(fd, (struct sockaddr *)&addr->ss, &addr->len);
  *out_fd = fd;
  return TALLY_SUCCESS;
}

void tally_net_set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Waits until fd is ready for `events`, the deadline passes, or abort_fd is readable. */
static tally_result_t wait_fd(int fd, short events, uint64_t deadline, int abort_fd, const char *what) {
  for (;;) {
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = abort_fd, .events = POLLIN}};
    int ms = tally_ms_until(deadline, 1000);
    if (ms == 0) return TALLY_ERROR(TALLY_ERR_TIMEOUT, "timed out while %s (TALLY_TIMEOUT)", what);
    int n = poll(p, abort_fd >= 0 ? 2 : 1, ms);
    if (n < 0 && errno != EINTR) return TALLY_ERROR(TALLY_ERR_SYSTEM, "poll while %s: %s", what, strerror(errno));
    if (n > 0 && abort_fd >= 0 && p[1].revents)
      return TALLY_ERROR(TALLY_ERR_ABORTED, "aborted while %s (tally_comm_abort)", what);
    if (n > 0 && p[0].revents) return TALLY_SUCCESS;
  }
}

static tally_result_t net_connect(const struct tally_sockaddr *addr, uint64_t deadline, int abort_fd, int *out_fd,
                                  int retry_refused) {
  char text[80], what[128];
  tally_net_format(addr, text, sizeof text);
  snprintf(what, sizeof what, "connecting to %s", text);
  for (int backoff_ms = 1;; backoff_ms = backoff_ms < 100 ? backoff_ms * 2 : 100) {
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "socket: %s", strerror(errno));
    int err = 0;
    if (connect(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        tally_result_t r = wait_fd(fd, POLLOUT, deadline, abort_fd, what);
        if (r != TALLY_SUCCESS) {
          close(fd);
          return r;
        }
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    if (err == 0) {
      tally_net_set_nodelay(fd);
      *out_fd = fd;
      return TALLY_SUCCESS;
    }
    close(fd);
    if (err == ECONNREFUSED && !retry_refused)
      return TALLY_ERROR(TALLY_ERR_REMOTE, "nothing listens at %s any more (connection refused)", text);
    if (err != ECONNREFUSED && err != ETIMEDOUT && err != EHOSTUNREACH && err != ENETUNREACH && err != ECONNRESET)
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot connect to %s: %s", text, strerror(err));
    if (tally_ms_until(deadline, backoff_ms) < backoff_ms)
      return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                         "could not connect to %s before TALLY_TIMEOUT (last error: %s); is the process that should "
                         "listen there running, and is the address right?",
                         text, strerror(err));
    struct pollfd p = {.fd = abort_fd, .events = POLLIN};
    if (poll(&p, abort_fd >= 0 ? 1 : 0, backoff_ms) > 0)
      return TALLY_ERROR(TALLY_ERR_ABORTED, "aborted while %s (tally_comm_abort)", what);
  }
}

tally_result_t tally_net_connect(const struct tally_sockaddr *addr, uint64_t deadline, int abort_fd, int *out_fd) {
  return net_connect(addr, deadline, abort_fd, out_fd, 1);
}

tally_result_t tally_net_connect_listening(const struct tally_sockaddr *addr, uint64_t deadline, int abort_fd,
                                           int *out_fd) {
  return net_connect(addr, deadline, abort_fd, out_fd, 0);
}

tally_result_t tally_net_write_all(int fd, const void *buf, size_t len, uint64_t deadline, int abort_fd) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      TALLY_CHECK(wait_fd(fd, POLLOUT, deadline, abort_fd, "sending"));
    } else {
      return TALLY_ERROR(TALLY_ERR_REMOTE, "send failed: %s", n < 0 ? strerror(errno) : "connection closed");
    }
  }
  return TALLY_SUCCESS;
}

tally_result_t tally_net_read_all(int fd, void *buf, size_t len, uint64_t deadline, int abort_fd) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, 0);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      TALLY_CHECK(wait_fd(fd, POLLIN, deadline, abort_fd, "receiving"));
    } else {
      return TALLY_ERROR(TALLY_ERR_REMOTE, "receive failed: %s", n < 0 ? strerror(errno) : "connection closed by peer");
    }
  }
  return TALLY_SUCCESS;
}
