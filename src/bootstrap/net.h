/* Socket helpers shared by the bootstrap and the TCP transport: interface selection
 * (TALLY_SOCKET_IFNAME), listening, connecting and whole-buffer I/O, all bounded by deadlines. */
#ifndef TALLY_NET_H
#define TALLY_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tally.h"

struct tally_sockaddr {
  struct sockaddr_storage ss;
  socklen_t len;
};

/* Picks the local address to listen on. `filter` follows NCCL_SOCKET_IFNAME: a comma-separated list
 * of name prefixes, "=" before the list for exact names, "^" to exclude; "" means the first
 * interface that is up and not loopback (loopback when there is none). */
tally_result_t tally_net_pick_address(const char *filter, struct tally_sockaddr *addr);
tally_result_t tally_net_resolve(const char *host, int port, struct tally_sockaddr *addr);
/* Binds and listens (port 0 = any) with a non-blocking fd; `addr` gets the bound port. */
tally_result_t tally_net_listen(struct tally_sockaddr *addr, int *fd);
/* Connects, retrying refused connections until the deadline (the peer may not listen yet). An
 * abort_fd that becomes readable (-1 for none) cuts the wait short. */
tally_result_t tally_net_connect(const struct tally_sockaddr *addr, uint64_t deadline, int abort_fd, int *fd);
/* The same for a peer known to listen already (a grow's root, api/comm_grow.c): a refused connection
 * means it is gone, and returns TALLY_ERR_REMOTE at once. */
tally_result_t tally_net_connect_listening(const struct tally_sockaddr *addr, uint64_t deadline, int abort_fd, int *fd);
tally_result_t tally_net_write_all(int fd, const void *buf, size_t len, uint64_t deadline, int abort_fd);
tally_result_t tally_net_read_all(int fd, void *buf, size_t len, uint64_t deadline, int abort_fd);
void tally_net_set_nodelay(int fd);
/* "1.2.3.4:5678" or "[::1]:5678". */
const char *tally_net_format(const struct tally_sockaddr *addr, char *buf, size_t len);
int tally_net_port(const struct tally_sockaddr *addr);
void tally_net_set_port(struct tally_sockaddr *addr, int port);

/* Fixed wire form of an IPv4 or IPv6 address: family (4 or 6), port (2 bytes), address (16). */
#define TALLY_PACKED_ADDR_BYTES 19
void tally_net_pack(const struct tally_sockaddr *addr, unsigned char out[TALLY_PACKED_ADDR_BYTES]);
/* Returns 0, or -1 when the bytes are not a valid address (unknown family, port 0). */
int tally_net_unpack(const unsigned char in[TALLY_PACKED_ADDR_BYTES], struct tally_sockaddr *addr);

#endif
