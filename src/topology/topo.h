/* Topology: what a rank knows about where it runs (host identity, NUMA node, cores, network
 * interfaces and their NUMA locality, learned with hwloc), a fixed-size versioned wire record
 * that ranks exchange at bootstrap, and the job-wide summary computed from every rank's record
 * (hosts, local ranks, ranks sharing a NUMA node).
 *
 * Host identity: a 64-bit hash of the boot id and the hostname, so that containers sharing a
 * kernel but not a hostname count as different hosts. TALLY_HOSTID (any string) replaces it, so
 * that tests can make ranks on one machine look like ranks on several hosts. */
#ifndef TALLY_TOPO_H
#define TALLY_TOPO_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#define TALLY_TOPO_HOSTNAME_BYTES 64 /* hostname text kept for messages, NUL included */
#define TALLY_TOPO_IFNAME_BYTES 16   /* IFNAMSIZ */
#define TALLY_TOPO_MAX_IFACES 32     /* interfaces beyond this many are ignored */
#define TALLY_TOPO_BUS_ID_BYTES 16   /* "0000:3b:00.0" and its NUL, as CUDA writes it */
#define TALLY_TOPO_MAX_NUMA_NODES 65535
#define TALLY_TOPO_MAX_PUS 65535
#define TALLY_TOPO_MAX_SPEED_MBPS 100000000 /* 100 Tb/s: anything above is a corrupt record */

enum { TALLY_TOPO_IPV4 = 1u << 0, TALLY_TOPO_IPV6 = 1u << 1 };

struct tally_topo_iface {
  char name[TALLY_TOPO_IFNAME_BYTES];
  unsigned families; /* TALLY_TOPO_IPV4 | TALLY_TOPO_IPV6: which usable addresses it has */
  int numa_node;     /* logical index of the NUMA node it hangs off; -1: none (virtual, or unknown) */
  int speed_mbps;    /* from /sys/class/net/<name>/speed; -1: unknown */
  int gpu_hops;      /* PCIe levels from this rank's GPU to the nearest object they share; -1: unknown */
};

/* NUMA nodes are numbered with hwloc's logical indexes, 0 .. numa_nodes-1. */
struct tally_topo {
  uint64_t host_id;
  char hostname[TALLY_TOPO_HOSTNAME_BYTES]; /* truncated; for messages only, never for identity */
  int numa_node;                            /* the node this process is bound to, or last ran on */
  int numa_nodes;                           /* NUMA nodes of the machine (1 when hwloc knows none) */
  int cores, pus;                           /* cores and hardware threads in the process's binding */
  int first_pu, last_pu;                    /* the binding's lowest and highest hardware thread (OS numbers) */
  char cpus[64];                            /* the binding as a CPU list ("0-3,8"); "" in decoded records */
  int n_ifaces; /* non-loopback interfaces that are up with an address; decoded records: 0 or 1 */
  struct tally_topo_iface ifaces[TALLY_TOPO_MAX_IFACES];
  int nearest_iface;                        /* index into ifaces of the one nearest this process; -1: none */
  char gpu_bus_id[TALLY_TOPO_BUS_ID_BYTES]; /* CUDA builds: the PCI bus id of this rank's GPU; "" otherwise */
  int gpu_numa_node;                        /* that GPU's NUMA node; -1: no GPU, or unknown */
  uint64_t cache_bytes; /* the largest data cache above the binding's first hardware thread (the last
                           level, which a host's ranks share); 0: hwloc knows none. Not on the wire:
                           0 in decoded records */
};

/* Learns the calling process's topology, with the GPU whose PCI bus id is `gpu_bus_id` (NULL or ""
 * for none: the caller asks the device runtime, device/device.h). Never fails: where hwloc or the
 * system says nothing useful it assumes one NUMA node (node 0) and the cores sysconf reports, and
 * logs one WARN line. */
void tally_topo_discover_with_gpu(struct tally_topo *t, const char *gpu_bus_id);
/* The same without a GPU. */
void tally_topo_discover(struct tally_topo *t);
/* tally_topo_discover_with_gpu, discovering the machine once per process (hwloc takes tens of
 * milliseconds); only the host identity, which TALLY_HOSTID may change, is worked out again on
 * each call. */
void tally_topo_discover_cached(struct tally_topo *t, const char *gpu_bus_id);

/* Places the GPU with PCI bus id `bus_id` ("" for none) in hwloc's topology `topo` (may be NULL):
 * sets gpu_bus_id, gpu_numa_node and each interface's gpu_hops. */
struct hwloc_topology;
void tally_topo_place_gpu(struct tally_topo *t, struct hwloc_topology *topo, const char *bus_id);
/* The index of the interface nearest this rank (its GPU first, then its NUMA node); -1: none. */
int tally_topo_nearest_iface(const struct tally_topo *t);

/* The number at the start of a (sysfs) file, or `fallback` when it cannot be read. */
long tally_topo_read_number(const char *path, long fallback);

/* The wire record: big-endian, zero-padded, TALLY_TOPO_WIRE_BYTES long. It carries the host
 * identity, NUMA node and count, core and PU counts, the nearest interface (name, families, NUMA
 * node, speed), the hostname, the GPU bus id and the span of the binding (first and last PU). Offsets, for readers and for tests: */
enum {
  TALLY_TOPO_OFF_MAGIC = 0,         /* "TTP1" */
  TALLY_TOPO_OFF_VERSION = 4,       /* u16 */
  TALLY_TOPO_OFF_FLAGS = 6,         /* u8: bit 0 set when an interface follows */
  TALLY_TOPO_OFF_RESERVED = 7,      /* u8, zero */
  TALLY_TOPO_OFF_HOST_ID = 8,       /* u64 */
  TALLY_TOPO_OFF_NUMA_NODE = 16,    /* u16, < NUMA node count */
  TALLY_TOPO_OFF_NUMA_NODES = 18,   /* u16, >= 1 */
  TALLY_TOPO_OFF_CORES = 20,        /* u16, 1 .. PUs */
  TALLY_TOPO_OFF_PUS = 22,          /* u16, >= 1 */
  TALLY_TOPO_OFF_IF_NAME = 24,      /* 16 bytes, NUL-padded */
  TALLY_TOPO_OFF_IF_FAMILIES = 40,  /* u8: TALLY_TOPO_IPV4 | TALLY_TOPO_IPV6 */
  TALLY_TOPO_OFF_IF_RESERVED = 41,  /* u8, zero */
  TALLY_TOPO_OFF_IF_NUMA_NODE = 42, /* u16, < NUMA node count, or 0xffff for none */
  TALLY_TOPO_OFF_IF_SPEED = 44,     /* u32 Mb/s, or 0xffffffff for unknown */
  TALLY_TOPO_OFF_HOSTNAME = 48,     /* 64 bytes, NUL-padded */
  TALLY_TOPO_OFF_GPU_BUS_ID = 112,  /* 16 bytes, NUL-padded */
  TALLY_TOPO_OFF_FIRST_PU = 128,    /* u16 */
  TALLY_TOPO_OFF_LAST_PU = 130,     /* u16, >= first PU, and last - first + 1 >= PUs */
  TALLY_TOPO_OFF_TAIL = 132,        /* 4 bytes, zero */
  TALLY_TOPO_WIRE_BYTES = 136
};
#define TALLY_TOPO_WIRE_VERSION 2

void tally_topo_encode(const struct tally_topo *t, unsigned char out[TALLY_TOPO_WIRE_BYTES]);
/* Checks every field; returns 0, or -1 with the reason in tally_error_message() when the record
 * is not `len` == TALLY_TOPO_WIRE_BYTES bytes of a well-formed record of this version. The result
 * holds at most one interface, the sender's nearest, and no CPU list. */
int tally_topo_decode(const unsigned char *in, size_t len, struct tally_topo *t);

/* The job's picture, computed identically on every rank from the same records. Hosts are
 * numbered in the order of their lowest rank; local ranks follow rank order within a host. */
struct tally_job_topo {
  int nranks, nhosts;
  int *host_index;      /* [nranks] */
  int *local_rank;      /* [nranks]: position among the ranks of its host */
  int *local_size;      /* [nranks]: how many ranks its host runs */
  int *numa_node;       /* [nranks]: the NUMA node each rank reported */
  int *host_first_rank; /* [nhosts]: the lowest rank of each host */
};

/* SYSTEM when memory runs out, INVALID_ARGUMENT when nranks < 1; free with tally_job_topo_free. */
tally_result_t tally_job_topo_build(const struct tally_topo *records, int nranks, struct tally_job_topo *job);
void tally_job_topo_free(struct tally_job_topo *job);
/* Whether `rank`'s host runs more of the job's ranks than the hardware threads their bindings
 * span together (the union of each local rank's first..last PU): then ranks share cores, and a
 * waiting rank must yield its core rather than spin. Ranks bound to distinct cores, as mpirun and
 * tally-perf -N bind them, do not share; unbound ranks share when there are more than the host's
 * online PUs. */
int tally_job_topo_cores_shared(const struct tally_job_topo *job, const struct tally_topo *records, int rank);

static inline int tally_job_topo_same_host(const struct tally_job_topo *job, int a, int b) {
  return job->host_index[a] == job->host_index[b];
}
static inline int tally_job_topo_same_numa(const struct tally_job_topo *job, int a, int b) {
  return tally_job_topo_same_host(job, a, b) && job->numa_node[a] == job->numa_node[b];
}

/* One line about `host`: "host 1 of 2: nodeb (id 0123456789abcdef), 4 ranks: 4-7"; returns buf. */
const char *tally_job_topo_format_host(const struct tally_job_topo *job, const struct tally_topo *records, int host,
                                       char *buf, size_t len);
/* Logs the job's picture at INFO under TOPO: a summary line, then one line per host. */
void tally_job_topo_log(const struct tally_job_topo *job, const struct tally_topo *records);

#endif
