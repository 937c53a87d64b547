/* The settings every layer reads (struct tally_config), one copy per communicator. They come from
 * the TALLY_* environment variables, read and validated by src/api/config_env.c. */
#ifndef TALLY_CONFIG_H
#define TALLY_CONFIG_H

#include "algo_spec.h"
#include "tally.h"

#define TALLY_DEFAULT_TIMEOUT_S 300.0
#define TALLY_DEFAULT_KEEPALIVE_S 5
#define TALLY_DEFAULT_STAGING_CHUNK_MB 4
/* Calls smaller than this (bytes per rank) are not compressed: the conversions' fixed costs and the
 * small calls' latency-bound steps leave nothing to gain (TALLY_COMPRESS_MIN_BYTES). */
#define TALLY_DEFAULT_COMPRESS_MIN_BYTES (256 * 1024)
/* One-host calls whose outputs, all ranks' together, come to at least half the host's last-level
 * cache write them with streaming stores (core/copy.h; algorithms/shared.c): there the buffers
 * outgrow the caches. TALLY_STREAM_BYTES sets the size instead; unset, cfg.stream_bytes holds this. */
#define TALLY_STREAM_BYTES_AUTO ((size_t)-1)
/* The last-level cache the one-host choices assume where neither TALLY_CACHE_BYTES nor hwloc gives
 * one: this 2-core VM's on the day the choices were first measured. */
#define TALLY_FALLBACK_CACHE_BYTES ((size_t)32 << 20)
#define TALLY_CORES_APART_AUTO (-1)

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
                                (device/call_split.h); 0: never split */
  int stats;                 /* TALLY_STATS: 1 prints each rank's counters when it destroys a communicator */
  int flight_records;        /* TALLY_FLIGHT_RECORDS: calls the flight recorder keeps per communicator; 0: off */
  char flight_dir[4096];     /* TALLY_FLIGHT_DIR: where failed communicators' records go as files; "": log only */
  int flight_signal;         /* TALLY_FLIGHT_SIGNAL: 1 dumps every communicator's flight records on SIGUSR1 */
  char trace_dir[4096];      /* TALLY_TRACE: where each rank writes its trace-event JSON (comm/trace.h); "": off */
  int compress;              /* TALLY_COMPRESS: enum tally_wire_format (core/reduce.h) of FLOAT32 data on links
                                between hosts; TALLY_WIRE_EXACT (default) sends it as it is */
  size_t compress_min_bytes; /* TALLY_COMPRESS_MIN_BYTES: smaller calls (bytes per rank) are never compressed */
  size_t stream_bytes;       /* TALLY_STREAM_BYTES: one-host calls whose ranks' outputs come to this many bytes
                                together write them with streaming stores (core/copy.h); 0: never;
                                TALLY_STREAM_BYTES_AUTO (default): half the last-level cache */
  size_t cache_bytes;        /* TALLY_CACHE_BYTES: the last-level cache the one-host choices scale with
                                (tuning/tuner.c, algorithms/shared.c); 0 (default): hwloc's */
  int cores_apart;           /* TALLY_CORES_APART: whether two ranks on one host, each on a core of its own,
                                are far apart (algorithms/board.c measures it at init; tuning/tuner.c asks);
                                TALLY_CORES_APART_AUTO (default): measure */
  size_t cudaipc_bytes;      /* TALLY_CUDAIPC_MB: each rank's CUDA IPC window for one-host device collectives
                                (src/device/ipc); 0 (default) stages them through host memory */
};

#endif
