/* Device, port and GID choice for the verbs transport: the TALLY_IB_HCA filter, the choice of a port
 * by state and NUMA locality, and the RoCE GID index (TALLY_IB_GID_INDEX or automatic). Pure
 * functions of what the caller queried from libibverbs; see select.h. */
#include "select.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define HCA_SYNTAX "expected [^][=]device[:port][,device[:port]...], for example mlx5_0:1,mlx5_1 or ^mlx5_2"

/* Refuses one entry of TALLY_IB_HCA, saying what is wrong with it and what the syntax is. */
static tally_result_t bad_entry(const char *spec, const char *entry, size_t len, const char *problem) {
  return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_HCA='%s': entry '%.*s' %s; %s", spec, (int)len, entry,
                     problem, HCA_SYNTAX);
}

/* Parses entry[0..len) ("device" or "device:port") into the next slot of f. */
static tally_result_t parse_entry(const char *spec, const char *entry, size_t len, struct verbs_hca_filter *f) {
  if (len == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_HCA='%s' has an empty entry; %s", spec, HCA_SYNTAX);
  if (f->count == VERBS_HCA_MAX_ENTRIES)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_HCA='%s' lists more than %d entries", spec,
                       VERBS_HCA_MAX_ENTRIES);
  const char *colon = memchr(entry, ':', len);
  size_t name_len = colon ? (size_t)(colon - entry) : len;
  if (name_len == 0) return bad_entry(spec, entry, len, "has no device name");
  if (name_len >= VERBS_HCA_NAME_BYTES) {
    char problem[64];
    snprintf(problem, sizeof problem, "has a device name longer than %d characters", VERBS_HCA_NAME_BYTES - 1);
    return bad_entry(spec, entry, len, problem);
  }
  for (size_t i = 0; i < name_len; i++) {
    if (isspace((unsigned char)entry[i]) || !isprint((unsigned char)entry[i]))
      return bad_entry(spec, entry, len, "contains a space or control character");
    if (entry[i] == '^' || entry[i] == '=')
      return bad_entry(spec, entry, len, "contains '^' or '=', which may only start the whole list");
  }
  long port = 0;
  if (colon) {
    const char *digits = colon + 1;
    size_t ndigits = len - name_len - 1;
    int ok = ndigits >= 1 && ndigits <= 3;
    for (size_t i = 0; ok && i < ndigits; i++) {
      ok = isdigit((unsigned char)digits[i]);
      port = port * 10 + (digits[i] - '0');
    }
    if (!ok || port < 1 || port > 255)
      return bad_entry(spec, entry, len, "has a port that is not a number from 1 to 255");
  }
  memcpy(f->entries[f->count].name, entry, name_len);
  f->entries[f->count].name[name_len] = '\0';
  f->entries[f->count].port = (int)port;
  f->count++;
  return TALLY_SUCCESS;
}

tally_result_t verbs_hca_filter_parse(const char *spec, struct verbs_hca_filter *f) {
  memset(f, 0, sizeof *f);
  if (!spec || !*spec) return TALLY_SUCCESS;
  if (snprintf(f->spec, sizeof f->spec, "%s", spec) >= (int)sizeof f->spec)
    memcpy(f->spec + sizeof f->spec - 4, "...", 4);
  const char *p = spec;
  if (*p == '^') f->exclude = 1, p++;
  if (*p == '=') f->exact = 1, p++;
  for (;;) {
    size_t len = strcspn(p, ",");
    TALLY_CHECK(parse_entry(spec, p, len, f));
    if (!p[len]) return TALLY_SUCCESS;
    p += len + 1;
  }
}

int verbs_hca_filter_allows(const struct verbs_hca_filter *f, const char *device, int port) {
  if (f->count == 0) return 1;
  int listed = 0;
  for (int i = 0; i < f->count && !listed; i++) {
    const char *name = f->entries[i].name;
    int name_matches = f->exact ? !strcmp(device, name) : !strncmp(device, name, strlen(name));
    listed = name_matches && (f->entries[i].port == 0 || f->entries[i].port == port);
  }
  return listed != f->exclude;
}

/* Appends to the NUL-terminated text in buf[0..len), cutting it short when full. */
__attribute__((format(printf, 3, 4))) static void append(char *buf, size_t len, const char *fmt, ...) {
  size_t used = strlen(buf);
  if (used + 1 >= len) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + used, len - used, fmt, ap);
  va_end(ap);
}

int verbs_choose_port(const struct verbs_port_info *ports, int n, const struct verbs_hca_filter *f, int rank_numa,
                      char *why, size_t whylen) {
  int first = -1;
  for (int i = 0; i < n; i++) {
    if (!ports[i].active || !verbs_hca_filter_allows(f, ports[i].device, ports[i].port)) continue;
    if (rank_numa >= 0 && ports[i].numa_node == rank_numa) return i;
    if (first < 0) first = i;
  }
  if (first >= 0) return first;
  if (whylen == 0) return -1;
  why[0] = '\0';
  if (n == 0) {
    append(why, whylen, "no RDMA device found (is an RDMA driver loaded? `ibv_devices` lists the devices)");
    return -1;
  }
  append(why, whylen, "no usable RDMA port; found:");
  for (int i = 0; i < n; i++) {
    int allowed = verbs_hca_filter_allows(f, ports[i].device, ports[i].port);
    append(why, whylen, "%s %s:%d (", i ? "," : "", ports[i].device, ports[i].port);
    if (!allowed)
      append(why, whylen, "not allowed by TALLY_IB_HCA=%s)", f->spec);
    else
      append(why, whylen, "port not active: check its cable and `ibv_devinfo`)");
  }
  return -1;
}

tally_result_t verbs_gid_index_parse(const char *text, int *index) {
  *index = -1;
  if (!text || !*text) return TALLY_SUCCESS;
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (!isdigit((unsigned char)text[0]) || errno || *end || v > 255)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_IB_GID_INDEX='%s' is not a GID table index from 0 to 255 (unset it to choose "
                       "automatically)",
                       text);
  *index = (int)v;
  return TALLY_SUCCESS;
}

static int gid_is_empty(const uint8_t gid[16]) {
  static const uint8_t zero[16];
  return !memcmp(gid, zero, sizeof zero);
}

static int gid_is_ipv4_mapped(const uint8_t gid[16]) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return !memcmp(gid, prefix, sizeof prefix);
}

static int gid_is_link_local(const uint8_t gid[16]) { return gid[0] == 0xfe && (gid[1] & 0xc0) == 0x80; }

/* The order in which RoCE GIDs are preferred: lower is better; -1 is never used. */
static int roce_preference(const struct verbs_gid_entry *e) {
  if (gid_is_empty(e->gid)) return -1;
  if (e->type == VERBS_GID_ROCE_V2) return gid_is_ipv4_mapped(e->gid) ? 0 : gid_is_link_local(e->gid) ? 2 : 1;
  if (e->type == VERBS_GID_ROCE_V1) return gid_is_ipv4_mapped(e->gid) ? 3 : 4;
  return -1;
}

tally_result_t verbs_choose_gid(const struct verbs_gid_table *t, int override, int *index) {
  if (override >= 0) {
    if (override >= t->table_len)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_IB_GID_INDEX=%d is outside the GID table of %s port %d, which has %d entries", override,
                         t->device, t->port, t->table_len);
    for (int i = 0; i < t->ngids; i++)
      if (t->gids[i].index == override && !gid_is_empty(t->gids[i].gid)) {
        *index = override;
        return TALLY_SUCCESS;
      }
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_IB_GID_INDEX=%d names an empty GID entry of %s port %d (the populated ones are in "
                       "/sys/class/infiniband/%s/ports/%d/gids/); unset it to choose automatically",
                       override, t->device, t->port, t->device, t->port);
  }
  if (t->infiniband) {
    *index = 0;
    return TALLY_SUCCESS;
  }
  int best = -1, best_preference = 0;
  for (int i = 0; i < t->ngids; i++) {
    int p = roce_preference(&t->gids[i]);
    if (p >= 0 && (best < 0 || p < best_preference)) best = i, best_preference = p;
  }
  if (best < 0)
    return TALLY_ERROR(TALLY_ERR_SYSTEM,
                       "RoCE device %s port %d has no usable GID: give its network interface an IP address, or set "
                       "TALLY_IB_GID_INDEX (see /sys/class/infiniband/%s/ports/%d/gids/)",
                       t->device, t->port, t->device, t->port);
  *index = t->gids[best].index;
  return TALLY_SUCCESS;
}
