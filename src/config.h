/* Configuration from the environment (TALLY_* variables), validated once per communicator:
 * a malformed or unknown value is an error with a message, never silently ignored. */
#ifndef TALLY_CONFIG_H
#define TALLY_CONFIG_H

#include "algo_spec.h"
#include "tally.h"

#define TALLY_DEFAULT_TIMEOUT_S 300.0
#define TALLY_DEFAULT_KEEPALIVE_S 5
#define TALLY_DEFAULT_STAGING_CHUNK_MB 4

struct tally_config {
  double timeout_s;     /* TALLY_TIMEOUT: every wait's deadline, seconds */
  char ifname[128];     /* TALLY_SOCKET_IFNAME: interface filter, NCCL syntax; "" = default */
  char transport[16];   /* TALLY_TRANSPORT: "auto" (shm within a host, verbs or else tcp across), "tcp", "shm" or
                           "verbs" */
  struct tally_algo_spec algo; /* TALLY_ALGO: the algorithms each collective may use (algo_spec.h) */
  int spin_us;          /* TALLY_SPIN_US: how long a waiting rank polls before it blocks */
  size_t chunk_bytes;   /* TALLY_CHUNK_BYTES: pipelining chunk of the ring algorithms */
  int ring_channels;    /* TALLY_RING_CHANNELS: rings a large flat allreduce runs on at once (1 or 2) */
  int keepalive_s;      /* TALLY_KEEPALIVE: a peer host silent this long is declared dead */
  char ib_hca[128];     /* TALLY_IB_HCA: RDMA devices and ports, NCCL_IB_HCA syntax; "" = any */
  int ib_gid_index;     /* TALLY_IB_GID_INDEX: RoCE GID index; -1 = chosen from the GID table */
  size_t ib_reg_cache_bytes; /* TALLY_IB_REG_CACHE_MB: registered user memory kept for reuse */
  char tuning_file[4096];    /* TALLY_TUNING_FILE: link costs to use instead of measuring them; "" = none */
  int tuning_cache;          /* TALLY_TUNING_CACHE: 1 (default) keeps measured link costs per host, 0 never */
  size_t staging_chunk_bytes; /* TALLY_STAGING_CHUNK_MB: on communicators whose every rank drives a GPU, the
                                size of the collectives large allreduce/broadcast/reduce calls are split into
                                (call_split.h); 0: never split */
  size_t cudaipc_bytes;      /* TALLY_CUDAIPC_MB: each rank's CUDA IPC window for one-host device collectives
                                (transports/cudaipc); 0 (default) stages them through host memory */
};

tally_result_t tally_config_load(struct tally_config *cfg);

/* Where tally_comm_init_env finds its job: rank and size from the first launcher whose variables
 * are set, the root's host:port, and the secret (absent: unauthenticated). */
struct tally_launch_env {
  int rank, size;
  const char *rank_var;   /* which variable the rank came from, for messages */
  char root[300];         /* host:port */
  unsigned char secret[16];
  int has_secret;
};
tally_result_t tally_launch_env_load(struct tally_launch_env *env);

/* Parses "host:port" or "[v6addr]:port" into its parts; returns 0 or -1. */
int tally_split_host_port(const char *text, char *host, size_t hostlen, int *port);
/* Parses 32 hex digits into 16 bytes; returns 0 or -1. */
int tally_parse_secret_hex(const char *hex, unsigned char secret[16]);

#endif
