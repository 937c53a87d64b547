/* Choosing the RDMA device and port a rank uses, and the address its connections bind to. */
#ifndef TALLY_VERBS_DEVICE_H
#define TALLY_VERBS_DEVICE_H

#include <infiniband/verbs.h>

#include "bootstrap/net.h"
#include "tally.h"

struct verbs_device_choice {
  char device[64];
  int port;
  int gid_index;
  struct tally_sockaddr addr; /* IPv4 address behind the GID, port 0 */
  char text[128];             /* "rxe0 port 1 (10.0.2.15, GID 1)" */
};

/* By TALLY_IB_HCA (`hca_spec`, NULL: any), the rank's NUMA node (-1: unknown) and
 * TALLY_IB_GID_INDEX (`gid_override`, -1: choose). UNSUPPORTED with a message listing what was
 * found when no device qualifies. */
tally_result_t verbs_choose_device(const char *hca_spec, int gid_override, int rank_numa,
                                   struct verbs_device_choice *out);

#endif
