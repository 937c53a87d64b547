/* Topology discovery with hwloc (host identity, NUMA node, binding, interfaces and their NUMA
 * locality), the wire record ranks exchange, and the job-wide summary built from all records.
 * Layout of the record: see the offsets in topo.h. */
#define _GNU_SOURCE
#include "topo.h"

#include <ctype.h>
#include <errno.h>
#include <hwloc.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/error.h"
#include "core/log.h"
#include "topo_hwloc.h"

static const char topo_magic[4] = {'T', 'T', 'P', '1'};
enum { FLAG_HAS_IFACE = 1, NO_NUMA_NODE = 0xffff, NO_SPEED = 0xffffffffu };

/* Copies as much of src as fits, always NUL-terminated, the rest of dst zeroed. */
static void copy_text(char *dst, size_t size, const char *src) {
  size_t n = strnlen(src, size - 1);
  memset(dst, 0, size);
  memcpy(dst, src, n);
}

/* --- host identity ------------------------------------------------------------------------- */

/* The first 64 bits of SHA-256("kind\0value"): the kind keeps an override from ever matching a
 * real host's id by construction. */
static uint64_t hash64(const char *kind, const char *value) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(ctx, kind, strlen(kind) + 1) &&
           EVP_DigestUpdate(ctx, value, strlen(value)) && EVP_DigestFinal_ex(ctx, digest, &len) && len >= 8;
  EVP_MD_CTX_free(ctx);
  if (!ok) abort(); /* libcrypto without SHA-256 leaves no way to name this host */
  return tally_get_u64(digest);
}

static void discover_host(struct tally_topo *t) {
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "unknown");
  copy_text(t->hostname, sizeof t->hostname, host);
  const char *override = getenv("TALLY_HOSTID");
  if (override && *override) {
    t->host_id = hash64("TALLY_HOSTID", override);
    return;
  }
  char boot_id[64] = "";
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (!f || !fgets(boot_id, sizeof boot_id, f))
    TLOG_INFO(TALLY_SUBSYS_TOPO, "cannot read /proc/sys/kernel/random/boot_id; the host id comes from the hostname");
  if (f) fclose(f);
  boot_id[strcspn(boot_id, "\n")] = '\0';
  char identity[sizeof boot_id + sizeof host + 1];
  snprintf(identity, sizeof identity, "%s/%s", boot_id, host);
  t->host_id = hash64("host", identity);
}

/* --- CPUs and NUMA nodes ------------------------------------------------------------------- */

/* What discovery had to guess, for the one WARN line. */
struct guesses {
  char text[384];
};

static void note_guess(struct guesses *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_guess(struct guesses *g, const char *fmt, ...) {
  size_t used = strlen(g->text);
  if (used) used += (size_t)snprintf(g->text + used, sizeof g->text - used, "; ");
  if (used >= sizeof g->text) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->text + used, sizeof g->text - used, fmt, ap);
  va_end(ap);
}

static void assume_whole_machine_one_node(struct tally_topo *t) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  t->numa_nodes = 1;
  t->numa_node = 0;
  t->pus = t->cores = online < 1 ? 1 : online > TALLY_TOPO_MAX_PUS ? TALLY_TOPO_MAX_PUS : (int)online;
  t->first_pu = 0;
  t->last_pu = t->pus - 1;
  t->cpus[0] = '\0';
}

/* The logical index of the one NUMA node in `nodes`, or -1 when it holds none or several. */
int tally_topo_single_node(hwloc_topology_t topo, hwloc_const_nodeset_t nodes) {
  if (!nodes || hwloc_bitmap_weight(nodes) != 1) return -1;
  hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(topo, (unsigned)hwloc_bitmap_first(nodes));
  return node ? (int)node->logical_index : -1;
}

/* Which node this process runs on: the one its binding covers, else the one its thread last ran
 * on (an unbound process on a multi-node machine), else the lowest node of the binding. */
static int process_numa_node(hwloc_topology_t topo, hwloc_const_cpuset_t binding, struct guesses *g) {
  hwloc_nodeset_t nodes = hwloc_bitmap_alloc();
  hwloc_cpuset_t last = hwloc_bitmap_alloc();
  if (!nodes || !last) abort(); /* hwloc bitmaps are a few bytes: out of memory here is fatal anyway */
  hwloc_cpuset_to_nodeset(topo, binding, nodes);
  int node = tally_topo_single_node(topo, nodes);
  if (node < 0 && hwloc_get_last_cpu_location(topo, last, HWLOC_CPUBIND_THREAD) == 0) {
    hwloc_nodeset_t last_nodes = hwloc_bitmap_alloc();
    if (!last_nodes) abort();
    hwloc_cpuset_to_nodeset(topo, last, last_nodes);
    node = tally_topo_single_node(topo, last_nodes);
    hwloc_bitmap_free(last_nodes);
  }
  if (node < 0) {
    hwloc_obj_t lowest = hwloc_bitmap_iszero(nodes)
                             ? NULL
                             : hwloc_get_numanode_obj_by_os_index(topo, (unsigned)hwloc_bitmap_first(nodes));
    node = lowest ? (int)lowest->logical_index : 0;
    note_guess(g, "cannot tell which NUMA node this process runs on, assuming node %d", node);
  }
  hwloc_bitmap_free(last);
  hwloc_bitmap_free(nodes);
  return node;
}

/* The size of the largest data (or unified) cache above hardware thread `pu` (OS number): the last
 * level, the one the cores around it share. 0 when hwloc knows no cache there. */
static uint64_t largest_cache_above(hwloc_topology_t topo, int pu) {
  uint64_t largest = 0;
  for (hwloc_obj_t obj = pu < 0 ? NULL : hwloc_get_pu_obj_by_os_index(topo, (unsigned)pu); obj; obj = obj->parent)
    if (hwloc_obj_type_is_dcache(obj->type) && obj->attr && obj->attr->cache.size > largest)
      largest = obj->attr->cache.size;
  return largest;
}

static void discover_cpus(struct tally_topo *t, hwloc_topology_t topo, struct guesses *g) {
  int nodes = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  if (nodes < 1) {
    note_guess(g, "hwloc reports no NUMA node, assuming one");
    nodes = 1;
  }
  t->numa_nodes = nodes > TALLY_TOPO_MAX_NUMA_NODES ? TALLY_TOPO_MAX_NUMA_NODES : nodes;

  hwloc_cpuset_t binding = hwloc_bitmap_alloc();
  if (!binding) abort();
  if (hwloc_get_cpubind(topo, binding, HWLOC_CPUBIND_PROCESS) != 0) {
    note_guess(g, "cannot read this process's CPU binding (%s), assuming every CPU it may use", strerror(errno));
    hwloc_bitmap_copy(binding, hwloc_topology_get_allowed_cpuset(topo));
  }
  hwloc_bitmap_and(binding, binding, hwloc_topology_get_topology_cpuset(topo));
  if (hwloc_bitmap_iszero(binding)) {
    note_guess(g, "the CPU binding holds no CPU hwloc knows, assuming every CPU");
    hwloc_bitmap_copy(binding, hwloc_topology_get_topology_cpuset(topo));
  }
  int pus = hwloc_bitmap_weight(binding);
  t->pus = pus < 1 ? 1 : pus > TALLY_TOPO_MAX_PUS ? TALLY_TOPO_MAX_PUS : pus;
  int cores = 0;
  for (hwloc_obj_t core = NULL;
       (core = hwloc_get_next_obj_covering_cpuset_by_type(topo, binding, HWLOC_OBJ_CORE, core));)
    cores++;
  t->cores = cores < 1 || cores > t->pus ? t->pus : cores; /* no Core objects: count hardware threads */
  int first = hwloc_bitmap_first(binding), last = hwloc_bitmap_last(binding);
  t->first_pu = first < 0 || first >= TALLY_TOPO_MAX_PUS ? 0 : first;
  t->last_pu = last < t->first_pu || last >= TALLY_TOPO_MAX_PUS ? TALLY_TOPO_MAX_PUS - 1 : last;
  if (t->last_pu - t->first_pu + 1 < t->pus) { /* PUs numbered beyond what the record holds */
    t->pus = t->last_pu - t->first_pu + 1;
    if (t->cores > t->pus) t->cores = t->pus;
  }
  hwloc_bitmap_list_snprintf(t->cpus, sizeof t->cpus, binding);
  t->cache_bytes = largest_cache_above(topo, hwloc_bitmap_first(binding));
  t->numa_node = process_numa_node(topo, binding, g);
  if (t->numa_node >= t->numa_nodes) t->numa_node = 0;
  hwloc_bitmap_free(binding);
}

/* --- network interfaces -------------------------------------------------------------------- */

static struct tally_topo_iface *find_or_add_iface(struct tally_topo *t, const char *name, int *dropped) {
  char base[TALLY_TOPO_IFNAME_BYTES];
  copy_text(base, sizeof base, name);
  base[strcspn(base, ":")] = '\0'; /* "eth0:1" is an address label on eth0 */
  for (int i = 0; i < t->n_ifaces; i++)
    if (!strcmp(t->ifaces[i].name, base)) return &t->ifaces[i];
  if (t->n_ifaces == TALLY_TOPO_MAX_IFACES) {
    ++*dropped;
    return NULL;
  }
  struct tally_topo_iface *f = &t->ifaces[t->n_ifaces++];
  memcpy(f->name, base, sizeof base);
  f->numa_node = -1;
  f->speed_mbps = -1;
  return f;
}

long tally_topo_read_number(const char *path, long fallback) {
  FILE *f = fopen(path, "r");
  long value = fallback;
  if (f) {
    if (fscanf(f, "%ld", &value) != 1) value = fallback;
    fclose(f);
  }
  return value;
}

/* Mb/s from sysfs; -1 when the driver does not say (virtual devices, links that are down). */
static int iface_speed(const char *name) {
  char path[64];
  snprintf(path, sizeof path, "/sys/class/net/%s/speed", name);
  long speed = tally_topo_read_number(path, -1);
  return speed < 1 || speed > TALLY_TOPO_MAX_SPEED_MBPS ? -1 : (int)speed;
}

/* The NUMA node of the hwloc network device `name`: its nearest non-I/O ancestor's single node. */
static int iface_numa_node(hwloc_topology_t topo, const char *name) {
  if (!topo) return -1;
  for (hwloc_obj_t dev = NULL; (dev = hwloc_get_next_osdev(topo, dev));) {
    if (dev->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK || !dev->name || strcmp(dev->name, name)) continue;
    hwloc_obj_t ancestor = hwloc_get_non_io_ancestor_obj(topo, dev);
    return ancestor ? tally_topo_single_node(topo, ancestor->nodeset) : -1;
  }
  return -1; /* not a device hwloc saw: virtual (veth, bridge, ifb) or I/O discovery unavailable */
}

/* Interfaces that are up, not loopback, with an address Tally can use (IPv6 link-local
 * addresses need a scope id, so net.c skips them and so does this list). */
static void discover_interfaces(struct tally_topo *t, hwloc_topology_t topo) {
  struct ifaddrs *ifs;
  if (getifaddrs(&ifs) != 0) {
    TLOG_INFO(TALLY_SUBSYS_TOPO, "cannot list network interfaces: getifaddrs: %s", strerror(errno));
    return;
  }
  int dropped = 0;
  for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
    int family = i->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    if (family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr)) continue;
    struct tally_topo_iface *f = find_or_add_iface(t, i->ifa_name, &dropped);
    if (f) f->families |= family == AF_INET ? TALLY_TOPO_IPV4 : TALLY_TOPO_IPV6;
  }
  freeifaddrs(ifs);
  if (dropped)
    TLOG_INFO(TALLY_SUBSYS_TOPO, "more than %d network interfaces: %d addresses on the others are ignored",
              TALLY_TOPO_MAX_IFACES, dropped);
  for (int i = 0; i < t->n_ifaces; i++) {
    t->ifaces[i].speed_mbps = iface_speed(t->ifaces[i].name);
    t->ifaces[i].numa_node = iface_numa_node(topo, t->ifaces[i].name);
  }
}

/* Nearest: with a GPU, the fewest PCIe levels from the GPU (interfaces hwloc does not place come
 * last); then on this process's NUMA node, else with no known node, else elsewhere; among equals
 * the fastest, then the first listed. */
int tally_topo_nearest_iface(const struct tally_topo *t) {
  int best = -1, best_distance = 0, best_speed = 0;
  for (int i = 0; i < t->n_ifaces; i++) {
    const struct tally_topo_iface *f = &t->ifaces[i];
    int numa_distance = f->numa_node == t->numa_node ? 0 : f->numa_node < 0 ? 1 : 2;
    int gpu_distance = t->gpu_numa_node < 0 ? 0 : f->gpu_hops < 0 ? 1000 : f->gpu_hops;
    int distance = gpu_distance * 4 + numa_distance;
    if (best < 0 || distance < best_distance || (distance == best_distance && f->speed_mbps > best_speed)) {
      best = i;
      best_distance = distance;
      best_speed = f->speed_mbps;
    }
  }
  return best;
}

/* --- discovery ----------------------------------------------------------------------------- */

static hwloc_topology_t load_topology(struct guesses *g) {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) {
    note_guess(g, "hwloc cannot start (%s)", strerror(errno));
    return NULL;
  }
  /* Network devices and the PCI path to them, so that an interface's NUMA node is known. */
  hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  /* The Linux component reads PCI locality from sysfs by itself. The libpciaccess component adds
   * nothing Tally uses and leaks its state each time hwloc unloads it; the GPU components would
   * start GPU runtimes in every rank at every communicator creation. Absent ones are refused
   * (-1), which is fine. */
  static const char *const unwanted_components[] = {"pci", "opencl", "gl", "cuda", "nvml", "rsmi", "levelzero"};
  for (size_t i = 0; i < sizeof unwanted_components / sizeof unwanted_components[0]; i++)
    (void)hwloc_topology_set_components(topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, unwanted_components[i]);
  if (hwloc_topology_load(topo) != 0) {
    note_guess(g, "hwloc cannot load this machine's topology (%s)", strerror(errno));
    hwloc_topology_destroy(topo);
    return NULL;
  }
  return topo;
}

void tally_topo_discover(struct tally_topo *t) { tally_topo_discover_with_gpu(t, NULL); }

void tally_topo_discover_with_gpu(struct tally_topo *t, const char *gpu_bus_id) {
  memset(t, 0, sizeof *t);
  discover_host(t);
  struct guesses g = {""};
  hwloc_topology_t topo = load_topology(&g);
  if (topo)
    discover_cpus(t, topo, &g);
  else
    assume_whole_machine_one_node(t);
  discover_interfaces(t, topo);
  tally_topo_place_gpu(t, topo, gpu_bus_id ? gpu_bus_id : "");
  if (topo) hwloc_topology_destroy(topo);
  t->nearest_iface = tally_topo_nearest_iface(t);

  if (g.text[0]) {
    static atomic_flag warned = ATOMIC_FLAG_INIT;
    int level = atomic_flag_test_and_set(&warned) ? TALLY_LOG_INFO : TALLY_LOG_WARN;
    tally_log(level, TALLY_SUBSYS_TOPO, __FILE__, __LINE__,
              "topology: %s. Shared-memory and interface choices may be poor: bind each rank to one NUMA node "
              "(numactl, taskset, srun --cpu-bind) and, in a container, let it read /sys and /proc so that hwloc "
              "sees the machine",
              g.text);
  }
  TLOG_INFO(TALLY_SUBSYS_TOPO,
            "topology: host %s (id %016llx), NUMA node %d of %d, %d cores / %d PUs (CPUs %s), "
            "last-level cache %llu KiB, GPU %s (NUMA node %d), nearest interface %s",
            t->hostname, (unsigned long long)t->host_id, t->numa_node, t->numa_nodes, t->cores, t->pus,
            t->cpus[0] ? t->cpus : "unknown", (unsigned long long)(t->cache_bytes >> 10),
            t->gpu_bus_id[0] ? t->gpu_bus_id : "none", t->gpu_numa_node,
            t->nearest_iface >= 0 ? t->ifaces[t->nearest_iface].name : "none");
}

void tally_topo_discover_cached(struct tally_topo *t, const char *gpu_bus_id) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  static struct tally_topo machine;
  static int discovered;
  pthread_mutex_lock(&lock);
  if (!discovered) tally_topo_discover_with_gpu(&machine, gpu_bus_id);
  discovered = 1;
  *t = machine;
  pthread_mutex_unlock(&lock);
  discover_host(t); /* TALLY_HOSTID may differ from one communicator to the next */
}

/* --- the wire record ----------------------------------------------------------------------- */

void tally_topo_encode(const struct tally_topo *t, unsigned char out[TALLY_TOPO_WIRE_BYTES]) {
  memset(out, 0, TALLY_TOPO_WIRE_BYTES);
  memcpy(out + TALLY_TOPO_OFF_MAGIC, topo_magic, sizeof topo_magic);
  tally_put_u16(out + TALLY_TOPO_OFF_VERSION, TALLY_TOPO_WIRE_VERSION);
  tally_put_u64(out + TALLY_TOPO_OFF_HOST_ID, t->host_id);
  tally_put_u16(out + TALLY_TOPO_OFF_NUMA_NODE, (uint16_t)t->numa_node);
  tally_put_u16(out + TALLY_TOPO_OFF_NUMA_NODES, (uint16_t)t->numa_nodes);
  tally_put_u16(out + TALLY_TOPO_OFF_CORES, (uint16_t)t->cores);
  tally_put_u16(out + TALLY_TOPO_OFF_PUS, (uint16_t)t->pus);
  if (t->nearest_iface >= 0 && t->nearest_iface < t->n_ifaces) {
    const struct tally_topo_iface *f = &t->ifaces[t->nearest_iface];
    out[TALLY_TOPO_OFF_FLAGS] = FLAG_HAS_IFACE;
    copy_text((char *)out + TALLY_TOPO_OFF_IF_NAME, TALLY_TOPO_IFNAME_BYTES, f->name);
    out[TALLY_TOPO_OFF_IF_FAMILIES] = (unsigned char)f->families;
    tally_put_u16(out + TALLY_TOPO_OFF_IF_NUMA_NODE, f->numa_node < 0 ? NO_NUMA_NODE : (uint16_t)f->numa_node);
    tally_put_u32(out + TALLY_TOPO_OFF_IF_SPEED, f->speed_mbps < 0 ? NO_SPEED : (uint32_t)f->speed_mbps);
  }
  copy_text((char *)out + TALLY_TOPO_OFF_HOSTNAME, TALLY_TOPO_HOSTNAME_BYTES, t->hostname);
  copy_text((char *)out + TALLY_TOPO_OFF_GPU_BUS_ID, TALLY_TOPO_BUS_ID_BYTES, t->gpu_bus_id);
  tally_put_u16(out + TALLY_TOPO_OFF_FIRST_PU, (uint16_t)t->first_pu);
  tally_put_u16(out + TALLY_TOPO_OFF_LAST_PU, (uint16_t)t->last_pu);
}

static int refuse_record(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int refuse_record(const char *fmt, ...) {
  char why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  TALLY_ERROR(TALLY_ERR_REMOTE, "a rank sent a bad topology record: %s", why);
  return -1;
}

/* A NUL-terminated run of visible characters (at least `min_len`), zero-padded to `size`. */
static int valid_text(const unsigned char *p, size_t size, size_t min_len) {
  size_t len = strnlen((const char *)p, size);
  if (len == size || len < min_len) return 0;
  for (size_t i = 0; i < len; i++)
    if (!isgraph(p[i])) return 0;
  for (size_t i = len; i < size; i++)
    if (p[i]) return 0;
  return 1;
}

static int all_zero(const unsigned char *p, size_t size) {
  for (size_t i = 0; i < size; i++)
    if (p[i]) return 0;
  return 1;
}

/* The nearest interface's fields, present or (all zero) absent. */
static int decode_iface(const unsigned char *in, struct tally_topo *t) {
  const unsigned char *first = in + TALLY_TOPO_OFF_IF_NAME;
  size_t span = TALLY_TOPO_OFF_HOSTNAME - TALLY_TOPO_OFF_IF_NAME;
  if (!(in[TALLY_TOPO_OFF_FLAGS] & FLAG_HAS_IFACE))
    return all_zero(first, span) ? 0 : refuse_record("interface fields set although the record says it has none");
  unsigned families = in[TALLY_TOPO_OFF_IF_FAMILIES];
  unsigned numa = tally_get_u16(in + TALLY_TOPO_OFF_IF_NUMA_NODE);
  uint32_t speed = tally_get_u32(in + TALLY_TOPO_OFF_IF_SPEED);
  if (!valid_text(first, TALLY_TOPO_IFNAME_BYTES, 1)) return refuse_record("the interface name is not a name");
  if (families == 0 || (families & ~(unsigned)(TALLY_TOPO_IPV4 | TALLY_TOPO_IPV6)))
    return refuse_record("unknown address families %#x on the interface", families);
  if (in[TALLY_TOPO_OFF_IF_RESERVED]) return refuse_record("a reserved interface byte is set");
  if (numa != NO_NUMA_NODE && numa >= (unsigned)t->numa_nodes)
    return refuse_record("the interface's NUMA node %u is not below the node count %d", numa, t->numa_nodes);
  if (speed != NO_SPEED && (speed == 0 || speed > TALLY_TOPO_MAX_SPEED_MBPS))
    return refuse_record("interface speed %u Mb/s is out of range", (unsigned)speed);
  struct tally_topo_iface *f = &t->ifaces[0];
  memcpy(f->name, first, TALLY_TOPO_IFNAME_BYTES);
  f->families = families;
  f->numa_node = numa == NO_NUMA_NODE ? -1 : (int)numa;
  f->speed_mbps = speed == NO_SPEED ? -1 : (int)speed;
  f->gpu_hops = -1; /* not on the wire: only the rank itself chooses by it */
  t->n_ifaces = 1;
  t->nearest_iface = 0;
  return 0;
}

int tally_topo_decode(const unsigned char *in, size_t len, struct tally_topo *t) {
  memset(t, 0, sizeof *t);
  t->nearest_iface = -1;
  t->gpu_numa_node = -1;
  if (len != TALLY_TOPO_WIRE_BYTES)
    return refuse_record("%zu bytes instead of %d (truncated, or from another Tally version)", len,
                         TALLY_TOPO_WIRE_BYTES);
  if (memcmp(in + TALLY_TOPO_OFF_MAGIC, topo_magic, sizeof topo_magic))
    return refuse_record("bad magic (not a topology record)");
  unsigned version = tally_get_u16(in + TALLY_TOPO_OFF_VERSION);
  if (version != TALLY_TOPO_WIRE_VERSION)
    return refuse_record("version %u; this Tally reads version %d: run the same Tally on every host", version,
                         TALLY_TOPO_WIRE_VERSION);
  if ((in[TALLY_TOPO_OFF_FLAGS] & ~FLAG_HAS_IFACE) || in[TALLY_TOPO_OFF_RESERVED])
    return refuse_record("unknown flags %#x", in[TALLY_TOPO_OFF_FLAGS] << 8 | in[TALLY_TOPO_OFF_RESERVED]);
  t->host_id = tally_get_u64(in + TALLY_TOPO_OFF_HOST_ID);
  t->numa_node = tally_get_u16(in + TALLY_TOPO_OFF_NUMA_NODE);
  t->numa_nodes = tally_get_u16(in + TALLY_TOPO_OFF_NUMA_NODES);
  t->cores = tally_get_u16(in + TALLY_TOPO_OFF_CORES);
  t->pus = tally_get_u16(in + TALLY_TOPO_OFF_PUS);
  if (t->numa_nodes < 1 || t->numa_node >= t->numa_nodes)
    return refuse_record("NUMA node %d of %d nodes", t->numa_node, t->numa_nodes);
  if (t->pus < 1 || t->cores < 1 || t->cores > t->pus)
    return refuse_record("%d cores for %d hardware threads", t->cores, t->pus);
  t->first_pu = tally_get_u16(in + TALLY_TOPO_OFF_FIRST_PU);
  t->last_pu = tally_get_u16(in + TALLY_TOPO_OFF_LAST_PU);
  if (t->last_pu < t->first_pu || t->last_pu - t->first_pu + 1 < t->pus)
    return refuse_record("%d hardware threads bound within PUs %d..%d", t->pus, t->first_pu, t->last_pu);
  for (int i = TALLY_TOPO_OFF_TAIL; i < TALLY_TOPO_WIRE_BYTES; i++)
    if (in[i]) return refuse_record("nonzero byte %d after the binding (from another Tally version)", i);
  if (decode_iface(in, t) != 0) return -1;
  if (!valid_text(in + TALLY_TOPO_OFF_HOSTNAME, TALLY_TOPO_HOSTNAME_BYTES, 1))
    return refuse_record("the hostname is not printable text");
  if (!valid_text(in + TALLY_TOPO_OFF_GPU_BUS_ID, TALLY_TOPO_BUS_ID_BYTES, 0))
    return refuse_record("the GPU bus id is not printable text");
  memcpy(t->hostname, in + TALLY_TOPO_OFF_HOSTNAME, TALLY_TOPO_HOSTNAME_BYTES);
  memcpy(t->gpu_bus_id, in + TALLY_TOPO_OFF_GPU_BUS_ID, TALLY_TOPO_BUS_ID_BYTES);
  return 0;
}

/* --- the job's picture --------------------------------------------------------------------- */

struct host_key {
  uint64_t host_id;
  int rank;
};

static int by_host_then_rank(const void *a, const void *b) {
  const struct host_key *x = a, *y = b;
  if (x->host_id != y->host_id) return x->host_id < y->host_id ? -1 : 1;
  return (x->rank > y->rank) - (x->rank < y->rank);
}

tally_result_t tally_job_topo_build(const struct tally_topo *records, int nranks, struct tally_job_topo *job) {
  memset(job, 0, sizeof *job);
  if (nranks < 1) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "a job topology needs at least one rank");
  size_t n = (size_t)nranks;
  /* One block: four per-rank arrays, then host_first_rank (at most nranks hosts). */
  int *block = calloc(5 * n, sizeof *block);
  struct host_key *keys = malloc(n * sizeof *keys);
  if (!block || !keys) {
    free(block);
    free(keys);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the topology of %d ranks", nranks);
  }
  job->nranks = nranks;
  job->host_index = block;
  job->local_rank = block + n;
  job->local_size = block + 2 * n;
  job->numa_node = block + 3 * n;
  job->host_first_rank = block + 4 * n;
  for (int r = 0; r < nranks; r++) {
    keys[r] = (struct host_key){records[r].host_id, r};
    job->numa_node[r] = records[r].numa_node;
  }
  /* Sorted by host then rank, each host's ranks form one run that starts with its lowest rank. */
  qsort(keys, n, sizeof *keys, by_host_then_rank);
  for (size_t start = 0, end = 0; start < n; start = end) {
    while (end < n && keys[end].host_id == keys[start].host_id) end++;
    for (size_t i = start; i < end; i++) {
      int r = keys[i].rank;
      job->local_rank[r] = (int)(i - start);
      job->local_size[r] = (int)(end - start);
      job->host_index[r] = keys[start].rank; /* for now: the host's lowest rank */
    }
  }
  /* Number hosts in the order of their lowest rank, which comes before the host's other ranks. */
  for (int r = 0; r < nranks; r++) {
    int lowest = job->host_index[r];
    if (lowest == r) {
      job->host_first_rank[job->nhosts] = r;
      job->host_index[r] = job->nhosts++;
    } else {
      job->host_index[r] = job->host_index[lowest];
    }
  }
  free(keys);
  return TALLY_SUCCESS;
}

struct pu_span {
  int first, last;
};

static int by_first_pu(const void *a, const void *b) {
  const struct pu_span *x = a, *y = b;
  return (x->first > y->first) - (x->first < y->first);
}

int tally_job_topo_cores_shared(const struct tally_job_topo *job, const struct tally_topo *records, int rank) {
  int n = 0;
  struct pu_span *spans = malloc((size_t)job->local_size[rank] * sizeof *spans);
  if (!spans) return 1; /* the cautious answer */
  for (int r = 0; r < job->nranks; r++)
    if (tally_job_topo_same_host(job, r, rank) && n < job->local_size[rank])
      spans[n++] = (struct pu_span){records[r].first_pu, records[r].last_pu};
  qsort(spans, (size_t)n, sizeof *spans, by_first_pu);
  long covered = 0;
  for (int i = 0, end = -1; i < n; i++) { /* the union's size: each span counts past what came before */
    int from = spans[i].first > end ? spans[i].first : end + 1;
    if (spans[i].last >= from) covered += spans[i].last - from + 1;
    if (spans[i].last > end) end = spans[i].last;
  }
  free(spans);
  return job->local_size[rank] > covered;
}

void tally_job_topo_free(struct tally_job_topo *job) {
  free(job->host_index);
  memset(job, 0, sizeof *job);
}

/* Appends the ranks of `host` as ranges ("0-3,8"), ending in "..." when they do not fit. */
static void format_rank_ranges(const struct tally_job_topo *job, int host, char *buf, size_t len) {
  size_t used = strlen(buf);
  for (int r = job->host_first_rank[host]; r < job->nranks && used < len; r++) {
    if (job->host_index[r] != host) continue;
    int last = r;
    while (last + 1 < job->nranks && job->host_index[last + 1] == host) last++;
    int first_range = r == job->host_first_rank[host];
    int n = last == r ? snprintf(buf + used, len - used, "%s%d", first_range ? "" : ",", r)
                      : snprintf(buf + used, len - used, "%s%d-%d", first_range ? "" : ",", r, last);
    used += (size_t)n;
    r = last;
  }
  if (used >= len && len > 4) memcpy(buf + len - 4, "...", 4);
}

const char *tally_job_topo_format_host(const struct tally_job_topo *job, const struct tally_topo *records, int host,
                                       char *buf, size_t len) {
  int first = job->host_first_rank[host];
  int n = snprintf(buf, len, "host %d of %d: %s (id %016llx), %d rank%s: ", host, job->nhosts, records[first].hostname,
                   (unsigned long long)records[first].host_id, job->local_size[first],
                   job->local_size[first] == 1 ? "" : "s");
  if (n >= 0 && (size_t)n < len) format_rank_ranges(job, host, buf, len);
  return buf;
}

void tally_job_topo_log(const struct tally_job_topo *job, const struct tally_topo *records) {
  enum { MAX_HOST_LINES = 64 }; /* a thousand-host job gets a summary, not a thousand lines */
  int fewest = job->nranks, most = 0;
  for (int h = 0; h < job->nhosts; h++) {
    int size = job->local_size[job->host_first_rank[h]];
    fewest = size < fewest ? size : fewest;
    most = size > most ? size : most;
  }
  TLOG_INFO(TALLY_SUBSYS_TOPO, "job: %d ranks on %d host%s, %d to %d ranks per host", job->nranks, job->nhosts,
            job->nhosts == 1 ? "" : "s", fewest, most);
  char line[512];
  for (int h = 0; h < job->nhosts && h < MAX_HOST_LINES; h++)
    TLOG_INFO(TALLY_SUBSYS_TOPO, "job: %s", tally_job_topo_format_host(job, records, h, line, sizeof line));
  if (job->nhosts > MAX_HOST_LINES)
    TLOG_INFO(TALLY_SUBSYS_TOPO, "job: ... and %d more hosts", job->nhosts - MAX_HOST_LINES);
}
