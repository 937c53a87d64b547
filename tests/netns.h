/* A private network namespace for tests that change the network under a running job (dropping a
 * rank's packets with iptables, scanning every listening port): the changes then touch only the
 * test's own loopback. Needs CAP_SYS_ADMIN (root); tests skip loudly where it is missing. */
#ifndef TALLY_TEST_NETNS_H
#define TALLY_TEST_NETNS_H

#include <stddef.h>

/* Moves the calling process into a new network namespace with loopback up. Returns 0, or -1 with
 * the reason in `why` (the caller skips the test and prints it). */
int netns_enter_private(char *why, size_t whylen);

/* Runs an iptables command line (arguments after "iptables") in the current namespace; returns
 * its exit status, or -1 when iptables is not installed. */
int netns_iptables(const char *args);

/* The TCP ports in LISTEN state in this namespace (from /proc/net/tcp and tcp6); returns how many
 * were stored in ports[0..max). */
int netns_listening_ports(int *ports, int max);

#endif
