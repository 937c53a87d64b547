/* Where this rank's GPU sits in hwloc's picture of the machine: its NUMA node, and how many PCIe
 * levels separate it from each network interface, so that a rank picks the interface (and RDMA
 * device) nearest its GPU, as NCCL does. */
#include <hwloc.h>
#include <stdio.h>
#include <string.h>

#include "topo.h"
#include "topo_hwloc.h"

/* Levels from `gpu` up to the nearest object it shares with `dev` (1: the same PCIe switch, 2: the
 * same host bridge, more: across the CPU package or the machine); -1 when they share none. Walked
 * by hand: hwloc's common-ancestor helper compares depths, which I/O objects do not have. */
static int hops_to_shared_ancestor(hwloc_obj_t gpu, hwloc_obj_t dev) {
  int hops = 0;
  for (hwloc_obj_t g = gpu; g; g = g->parent, hops++)
    for (hwloc_obj_t d = dev; d; d = d->parent)
      if (d == g) return hops;
  return -1;
}

static hwloc_obj_t network_osdev(hwloc_topology_t topo, const char *name) {
  for (hwloc_obj_t dev = NULL; (dev = hwloc_get_next_osdev(topo, dev));)
    if (dev->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK && dev->name && !strcmp(dev->name, name)) return dev;
  return NULL;
}

void tally_topo_place_gpu(struct tally_topo *t, struct hwloc_topology *topo, const char *bus_id) {
  snprintf(t->gpu_bus_id, sizeof t->gpu_bus_id, "%s", bus_id);
  t->gpu_numa_node = -1;
  for (int i = 0; i < t->n_ifaces; i++) t->ifaces[i].gpu_hops = -1;
  hwloc_obj_t gpu = topo && bus_id[0] ? hwloc_get_pcidev_by_busidstring(topo, bus_id) : NULL;
  if (!gpu) return;
  hwloc_obj_t ancestor = hwloc_get_non_io_ancestor_obj(topo, gpu);
  t->gpu_numa_node = ancestor ? tally_topo_single_node(topo, ancestor->nodeset) : -1;
  for (int i = 0; i < t->n_ifaces; i++) {
    hwloc_obj_t dev = network_osdev(topo, t->ifaces[i].name);
    if (dev) t->ifaces[i].gpu_hops = hops_to_shared_ancestor(gpu, dev);
  }
}
