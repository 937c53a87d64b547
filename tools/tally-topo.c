/* tally-topo: prints what Tally learns about this machine and this process — host identity,
 * NUMA nodes with their CPUs, the process's binding, the network interfaces with their NUMA node
 * and speed, and the interface nearest the process. Run it under the same binding (taskset,
 * numactl, srun --cpu-bind) as the ranks to see what they will see. */
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "device/device.h"
#include "topology/topo.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: tally-topo\n"
          "Prints the topology Tally discovers for this process: host id, NUMA nodes, CPU binding,\n"
          "network interfaces and the one nearest this process. TALLY_HOSTID overrides the host id.\n");
}

static const char *families_text(unsigned families) {
  switch (families) {
    case TALLY_TOPO_IPV4: return "IPv4";
    case TALLY_TOPO_IPV6: return "IPv6";
    case TALLY_TOPO_IPV4 | TALLY_TOPO_IPV6: return "IPv4+IPv6";
    default: return "-";
  }
}

/* One line per NUMA node of the machine, from hwloc directly: the library keeps only the
 * process's own node, not the machine's inventory. */
static void print_numa_nodes(const struct tally_topo *t) {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) {
    printf("numa node 0: details unknown (hwloc cannot start)\n");
    return;
  }
  if (hwloc_topology_load(topo) != 0) {
    printf("numa node 0: details unknown (hwloc cannot load this machine's topology)\n");
    hwloc_topology_destroy(topo);
    return;
  }
  for (hwloc_obj_t node = NULL; (node = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, node));) {
    char cpus[256];
    hwloc_bitmap_list_snprintf(cpus, sizeof cpus, node->cpuset);
    int cores = hwloc_get_nbobjs_inside_cpuset_by_type(topo, node->cpuset, HWLOC_OBJ_CORE);
    int threads = hwloc_bitmap_weight(node->cpuset);
    double gib = (double)node->attr->numanode.local_memory / (1u << 30);
    printf("numa node %u: os index %u, cpus %s (cores %d, hardware threads %d), memory %.1f GiB%s\n",
           node->logical_index, node->os_index, cpus[0] ? cpus : "none", cores > 0 ? cores : threads, threads, gib,
           (int)node->logical_index == t->numa_node ? "  <- this process" : "");
  }
  hwloc_topology_destroy(topo);
}

int main(int argc, char **argv) {
  if (argc > 1) {
    int help = !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
    if (!help) fprintf(stderr, "tally-topo: unexpected argument '%s'\n", argv[1]);
    usage(help ? stdout : stderr);
    return help ? 0 : 2;
  }
  char err[256];
  if (tally_log_configure(getenv("TALLY_DEBUG"), getenv("TALLY_DEBUG_SUBSYS"), err, sizeof err) != 0) {
    fprintf(stderr, "tally-topo: %s\n", err);
    return 2;
  }
  struct tally_topo t;
  char gpu_bus_id[TALLY_TOPO_BUS_ID_BYTES];
  tally_topo_discover_with_gpu(&t, tally_device_gpu_bus_id(gpu_bus_id, sizeof gpu_bus_id));
  const char *override = getenv("TALLY_HOSTID");
  printf("host: %s, id %016llx (%s)\n", t.hostname, (unsigned long long)t.host_id,
         override && *override ? "from TALLY_HOSTID" : "from the boot id and hostname");
  printf("numa nodes: %d\n", t.numa_nodes);
  print_numa_nodes(&t);
  printf("binding: cpus %s (cores %d, hardware threads %d), numa node %d\n", t.cpus[0] ? t.cpus : "unknown", t.cores,
         t.pus, t.numa_node);
  printf("interfaces: %d (up, not loopback, with an address)\n", t.n_ifaces);
  for (int i = 0; i < t.n_ifaces; i++) {
    const struct tally_topo_iface *f = &t.ifaces[i];
    char numa[16] = "none", speed[24] = "unknown";
    if (f->numa_node >= 0) snprintf(numa, sizeof numa, "%d", f->numa_node);
    if (f->speed_mbps > 0) snprintf(speed, sizeof speed, "%d Mb/s", f->speed_mbps);
    char gpu[48] = "";
    if (f->gpu_hops >= 0) snprintf(gpu, sizeof gpu, "  %d PCIe levels from the GPU", f->gpu_hops);
    printf("  %-15s %-9s numa node %-4s speed %s%s%s\n", f->name, families_text(f->families), numa, speed, gpu,
           i == t.nearest_iface ? "  <- nearest" : "");
  }
  printf("nearest interface: %s\n", t.nearest_iface >= 0 ? t.ifaces[t.nearest_iface].name : "none");
  if (t.gpu_bus_id[0])
    printf("gpu: %s, numa node %d\n", t.gpu_bus_id, t.gpu_numa_node);
  else
    printf("gpu: none\n");
  return 0;
}
