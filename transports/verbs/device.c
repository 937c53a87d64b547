/* Which RDMA device, port and address a rank uses: queries the hardware and lets select.c choose
 * (TALLY_IB_HCA, NUMA locality, TALLY_IB_GID_INDEX). The connection manager then binds to the IP
 * address behind the chosen GID, which puts every connection on that device and port. */
#define _GNU_SOURCE
#include "device.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "select.h"
#include "topology/topo.h"

enum { MAX_PORTS = 64, MAX_GIDS = 256 };

static int device_numa_node(const char *name) {
  char path[160];
  snprintf(path, sizeof path, "/sys/class/infiniband/%s/device/numa_node", name);
  return (int)tally_topo_read_number(path, -1);
}

/* Every port of every device, in the order libibverbs lists devices. */
struct port_list {
  struct verbs_port_info info[MAX_PORTS];
  char names[MAX_PORTS][VERBS_HCA_NAME_BYTES];
  struct ibv_device *device[MAX_PORTS];
  int n;
};

static void list_ports(struct ibv_device **devices, int ndevices, struct port_list *ports) {
  ports->n = 0;
  for (int d = 0; d < ndevices; d++) {
    struct ibv_context *ctx = ibv_open_device(devices[d]);
    struct ibv_device_attr attr;
    if (!ctx) continue;
    if (ibv_query_device(ctx, &attr) == 0)
      for (int p = 1; p <= attr.phys_port_cnt && ports->n < MAX_PORTS; p++) {
        struct ibv_port_attr pattr;
        if (ibv_query_port(ctx, (uint8_t)p, &pattr) != 0) continue;
        int i = ports->n++;
        snprintf(ports->names[i], sizeof ports->names[i], "%s", ibv_get_device_name(devices[d]));
        ports->device[i] = devices[d];
        ports->info[i] = (struct verbs_port_info){ports->names[i], p, device_numa_node(ports->names[i]),
                                                  pattr.state == IBV_PORT_ACTIVE};
      }
    ibv_close_device(ctx);
  }
}

/* The IPv4 address of network interface `ifindex`. */
static int interface_address(int ifindex, struct in_addr *out) {
  char name[IF_NAMESIZE];
  struct ifaddrs *all;
  if (!if_indextoname((unsigned)ifindex, name) || getifaddrs(&all) != 0) return -1;
  int found = -1;
  for (struct ifaddrs *a = all; a && found; a = a->ifa_next)
    if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET && !strcmp(a->ifa_name, name)) {
      *out = ((struct sockaddr_in *)a->ifa_addr)->sin_addr;
      found = 0;
    }
  freeifaddrs(all);
  return found;
}

/* Picks the GID of the chosen port and the IPv4 address the connection manager binds to. */
static tally_result_t choose_address(struct ibv_context *ctx, const char *name, int port, int gid_override,
                                     struct verbs_device_choice *out) {
  struct ibv_port_attr pattr;
  struct ibv_gid_entry raw[MAX_GIDS];
  struct verbs_gid_entry gids[MAX_GIDS];
  if (ibv_query_port(ctx, (uint8_t)port, &pattr) != 0)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot query port %d of RDMA device %s", port, name);
  ssize_t n = ibv_query_gid_table(ctx, raw, MAX_GIDS, 0);
  if (n < 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot read the GID table of RDMA device %s", name);
  int ngids = 0;
  for (ssize_t i = 0; i < n; i++)
    if ((int)raw[i].port_num == port) {
      gids[ngids].index = (int)raw[i].gid_index;
      memcpy(gids[ngids].gid, raw[i].gid.raw, 16);
      gids[ngids].type = (enum verbs_gid_type)raw[i].gid_type;
      ngids++;
    }
  struct verbs_gid_table table = {name, port, pattr.link_layer == IBV_LINK_LAYER_INFINIBAND, pattr.gid_tbl_len,
                                  gids, ngids};
  int index;
  TALLY_CHECK(verbs_choose_gid(&table, gid_override, &index));
  out->gid_index = index;
  struct in_addr ip = {0};
  int have_ip = 0;
  for (ssize_t i = 0; i < n && !have_ip; i++) {
    if ((int)raw[i].port_num != port || (int)raw[i].gid_index != index) continue;
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(raw[i].gid.raw, v4_mapped, 12)) {
      memcpy(&ip, raw[i].gid.raw + 12, 4);
      have_ip = 1;
    } else {
      have_ip = interface_address((int)raw[i].ndev_ifindex, &ip) == 0;
    }
  }
  if (!have_ip)
    return TALLY_ERROR(TALLY_ERR_UNSUPPORTED,
                       "RDMA device %s port %d (GID index %d) has no IPv4 address for the connection manager; give "
                       "its network interface (or IPoIB interface) an IPv4 address",
                       name, port, index);
  struct sockaddr_in *sin = (struct sockaddr_in *)&out->addr.ss;
  memset(&out->addr, 0, sizeof out->addr);
  sin->sin_family = AF_INET;
  sin->sin_addr = ip;
  out->addr.len = sizeof *sin;
  char text[INET_ADDRSTRLEN];
  snprintf(out->text, sizeof out->text, "%s port %d (%s, GID %d)", name, port,
           inet_ntop(AF_INET, &ip, text, sizeof text), index);
  return TALLY_SUCCESS;
}

tally_result_t verbs_choose_device(const char *hca_spec, int gid_override, int rank_numa,
                                   struct verbs_device_choice *out) {
  struct verbs_hca_filter filter;
  TALLY_CHECK(verbs_hca_filter_parse(hca_spec, &filter));
  int ndevices = 0;
  struct ibv_device **devices = ibv_get_device_list(&ndevices);
  struct port_list *ports = calloc(1, sizeof *ports);
  if (!ports) {
    if (devices) ibv_free_device_list(devices);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory listing RDMA ports");
  }
  if (devices) list_ports(devices, ndevices, ports);
  char why[512];
  int pick = verbs_choose_port(ports->info, ports->n, &filter, rank_numa, why, sizeof why);
  tally_result_t r;
  if (pick < 0) {
    r = TALLY_ERROR(TALLY_ERR_UNSUPPORTED, "%s", why);
  } else {
    snprintf(out->device, sizeof out->device, "%s", ports->names[pick]);
    out->port = ports->info[pick].port;
    struct ibv_context *ctx = ibv_open_device(ports->device[pick]);
    r = ctx ? choose_address(ctx, out->device, out->port, gid_override, out)
            : TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot open RDMA device %s", out->device);
    if (ctx) ibv_close_device(ctx);
  }
  free(ports);
  if (devices) ibv_free_device_list(devices);
  return r;
}
