/* The verbs transport's choices that need no libibverbs, so that they are testable anywhere:
 *
 *   TALLY_IB_HCA        which devices and ports may be used (NCCL_IB_HCA's syntax, below)
 *   port choice         the first active, allowed port, preferring the rank's NUMA node
 *   TALLY_IB_GID_INDEX  which GID a RoCE port sends from; chosen from the GID table when unset
 *
 * The caller queries the hardware (ibv_get_device_list, ibv_query_port, ibv_query_gid_table) and
 * hands the answers in as plain values.
 */
#ifndef TALLY_VERBS_SELECT_H
#define TALLY_VERBS_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

/* TALLY_IB_HCA, as NCCL_IB_HCA: a comma-separated list of device[:port] entries.
 *   mlx5            every device whose name starts with "mlx5" (mlx5_0, mlx5_1, ...), all ports
 *   =mlx5_0:1       exact names: only port 1 of mlx5_0
 *   ^mlx5_2         every device except mlx5_2 (and every device starting with "mlx5_2")
 *   ^=mlx5_0:2      every port except port 2 of mlx5_0
 * Unset or empty: every device and port. */
#define VERBS_HCA_MAX_ENTRIES 32
#define VERBS_HCA_NAME_BYTES 64 /* IBV_SYSFS_NAME_MAX: names up to 63 characters */

struct verbs_hca_filter {
  int exclude; /* leading '^': the entries say what not to use */
  int exact;   /* leading '=': names match exactly, not as prefixes */
  int count;   /* 0: every device and port is allowed */
  struct {
    char name[VERBS_HCA_NAME_BYTES];
    int port; /* 0: every port */
  } entries[VERBS_HCA_MAX_ENTRIES];
  char spec[128]; /* the text parsed, for messages (cut short with "...") */
};

/* Parses `spec` (NULL or "" allow everything); a malformed entry is TALLY_ERR_INVALID_ARGUMENT with a
 * message naming it and showing the syntax. */
tally_result_t verbs_hca_filter_parse(const char *spec, struct verbs_hca_filter *f);
/* Whether port `port` of `device` may be used. */
int verbs_hca_filter_allows(const struct verbs_hca_filter *f, const char *device, int port);

/* One port of one device, as the caller found it. */
struct verbs_port_info {
  const char *device;
  int port;
  int numa_node; /* the device's NUMA node, -1 when unknown */
  int active;    /* the port's state is IBV_PORT_ACTIVE */
};

/* Chooses among ports[0..n), given in device-name order: an active port the filter allows, on the
 * rank's NUMA node (`rank_numa`, -1 when unknown) when there is one, else the first. Returns the
 * index, or -1 with a sentence in `why` saying what was found and why none qualified. */
int verbs_choose_port(const struct verbs_port_info *ports, int n, const struct verbs_hca_filter *f, int rank_numa,
                      char *why, size_t whylen);

/* GID types, with the values of libibverbs' enum ibv_gid_type (ibv_gid_entry.gid_type). */
enum verbs_gid_type { VERBS_GID_IB = 0, VERBS_GID_ROCE_V1 = 1, VERBS_GID_ROCE_V2 = 2 };

struct verbs_gid_entry {
  int index;
  uint8_t gid[16];
  enum verbs_gid_type type;
};

/* A port's GID table: `gids` lists the populated entries (others count as empty), `table_len` is the
 * port's gid_tbl_len. */
struct verbs_gid_table {
  const char *device;
  int port;
  int infiniband; /* link layer InfiniBand (else Ethernet: RoCE) */
  int table_len;
  const struct verbs_gid_entry *gids;
  int ngids;
};

/* Parses TALLY_IB_GID_INDEX: NULL or "" give -1 (choose automatically); otherwise a whole number from
 * 0 to 255, or TALLY_ERR_INVALID_ARGUMENT. */
tally_result_t verbs_gid_index_parse(const char *text, int *index);

/* Chooses the GID index for `t`. `override` (from verbs_gid_index_parse, -1: none) must name a
 * non-empty entry inside the table. Otherwise InfiniBand uses 0 (GIDs do not route within a subnet)
 * and RoCE takes, in this order, the first of: v2 with an IPv4-mapped address (::ffff:a.b.c.d), v2
 * with another address, v2 link-local (fe80::), v1 IPv4-mapped, any other v1. */
tally_result_t verbs_choose_gid(const struct verbs_gid_table *t, int override, int *index);

#endif
