/* hwloc helpers the topology files share (topo.c, topo_gpu.c). */
#ifndef TALLY_TOPO_HWLOC_H
#define TALLY_TOPO_HWLOC_H

#include <hwloc.h>

/* The logical index of the one NUMA node in `nodes`; -1 when there is not exactly one. */
int tally_topo_single_node(hwloc_topology_t topo, hwloc_const_nodeset_t nodes);

#endif
