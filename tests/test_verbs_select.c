/* Unit tests of the verbs transport's pure choices: the TALLY_IB_HCA filter, the port choice by
 * state and NUMA node, and the GID index (TALLY_IB_GID_INDEX or automatic). No RDMA device needed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "transports/verbs/select.h"

/* --- TALLY_IB_HCA ----------------------------------------------------------------------------- */

static struct verbs_hca_filter filter(const char *spec) {
  struct verbs_hca_filter f;
  cr_assert_eq(verbs_hca_filter_parse(spec, &f), TALLY_SUCCESS, "'%s' refused: %s", spec, tally_error_message());
  return f;
}

static int allows(const char *spec, const char *device, int port) {
  struct verbs_hca_filter f = filter(spec);
  return verbs_hca_filter_allows(&f, device, port);
}

Test(hca_filter, unset_or_empty_allows_everything) {
  struct verbs_hca_filter f = filter(NULL);
  cr_assert_eq(f.count, 0);
  cr_assert(verbs_hca_filter_allows(&f, "mlx5_0", 1));
  cr_assert(allows("", "rxe0", 2));
}

Test(hca_filter, names_match_as_prefixes) {
  cr_assert(allows("mlx5", "mlx5_0", 1));
  cr_assert(allows("mlx5", "mlx5_1", 2));
  cr_assert_not(allows("mlx5", "mlx4_0", 1));
  cr_assert(allows("mlx5_1", "mlx5_10", 1), "without '=', mlx5_1 also matches mlx5_10 (as NCCL_IB_HCA)");
}

Test(hca_filter, equals_matches_exactly) {
  struct verbs_hca_filter f = filter("=mlx5_1");
  cr_assert(f.exact);
  cr_assert_not(f.exclude);
  cr_assert(verbs_hca_filter_allows(&f, "mlx5_1", 1));
  cr_assert_not(verbs_hca_filter_allows(&f, "mlx5_10", 1));
  cr_assert_not(verbs_hca_filter_allows(&f, "mlx5", 1));
}

Test(hca_filter, port_restricts_the_entry) {
  struct verbs_hca_filter f = filter("mlx5_0:1,rxe0");
  cr_assert_eq(f.count, 2);
  cr_assert_str_eq(f.entries[0].name, "mlx5_0");
  cr_assert_eq(f.entries[0].port, 1);
  cr_assert_eq(f.entries[1].port, 0);
  cr_assert(verbs_hca_filter_allows(&f, "mlx5_0", 1));
  cr_assert_not(verbs_hca_filter_allows(&f, "mlx5_0", 2));
  cr_assert(verbs_hca_filter_allows(&f, "rxe0", 2));
  cr_assert_not(verbs_hca_filter_allows(&f, "mlx5_1", 1));
}

Test(hca_filter, caret_excludes) {
  cr_assert_not(allows("^mlx5_0", "mlx5_0", 1));
  cr_assert_not(allows("^mlx5_0", "mlx5_0", 2));
  cr_assert(allows("^mlx5_0", "mlx5_1", 1));
  cr_assert(allows("^mlx5_0", "rxe0", 1));
  cr_assert_not(allows("^mlx5_0:2", "mlx5_0", 2));
  cr_assert(allows("^mlx5_0:2", "mlx5_0", 1), "excluding a port leaves the device's other ports");
}

Test(hca_filter, caret_and_equals_combine) {
  struct verbs_hca_filter f = filter("^=mlx5_1");
  cr_assert(f.exclude && f.exact);
  cr_assert_not(verbs_hca_filter_allows(&f, "mlx5_1", 1));
  cr_assert(verbs_hca_filter_allows(&f, "mlx5_10", 1));
}

Test(hca_filter, limits_are_inclusive) {
  char spec[VERBS_HCA_MAX_ENTRIES * 8] = "";
  for (int i = 0; i < VERBS_HCA_MAX_ENTRIES; i++)
    snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%sd%d", i ? "," : "", i);
  struct verbs_hca_filter f = filter(spec);
  cr_assert_eq(f.count, VERBS_HCA_MAX_ENTRIES);
  char name[VERBS_HCA_NAME_BYTES];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  cr_assert(allows(name, name, 1));
  cr_assert_eq(verbs_hca_filter_parse("d:255", &f), TALLY_SUCCESS);
}

/* Each malformed spec is refused with a message naming the variable and the offending text (and,
 * for a bad entry, the expected syntax). */
static void expect_refused(const char *spec, const char *names, const char *says) {
  struct verbs_hca_filter f;
  tally_error_clear();
  cr_assert_eq(verbs_hca_filter_parse(spec, &f), TALLY_ERR_INVALID_ARGUMENT, "'%s' accepted", spec);
  const char *m = tally_error_message();
  cr_assert(strstr(m, "TALLY_IB_HCA"), "'%s': %s", spec, m);
  cr_assert(strstr(m, names), "'%s' does not name '%s': %s", spec, names, m);
  cr_assert(strstr(m, says), "'%s' does not say '%s': %s", spec, says, m);
}

Test(hca_filter, malformed_entries_refused) {
  const char *syntax = "device[:port]";
  expect_refused("mlx5_0:x", "'mlx5_0:x'", "port");
  expect_refused("mlx5_0:x", "'mlx5_0:x'", syntax);
  expect_refused("mlx5_0:", "'mlx5_0:'", "port");
  expect_refused("mlx5_0:0", "'mlx5_0:0'", "1 to 255");
  expect_refused("mlx5_0:256", "'mlx5_0:256'", "1 to 255");
  expect_refused("mlx5_0:1:2", "'mlx5_0:1:2'", "port");
  expect_refused("mlx5_0:-1", "'mlx5_0:-1'", "port");
  expect_refused(":1", "':1'", "no device name");
  expect_refused("mlx5_0, mlx5_1", "' mlx5_1'", "space");
  expect_refused("mlx5,^mlx4", "'^mlx4'", "only start");
  expect_refused("=^mlx5", "'^mlx5'", "only start");
}

Test(hca_filter, empty_entries_refused) {
  expect_refused("a,,b", "'a,,b'", "empty entry");
  expect_refused("a,", "'a,'", "empty entry");
  expect_refused(",a", "',a'", "empty entry");
  expect_refused("^", "'^'", "empty entry");
  expect_refused("=", "'='", "device[:port]");
  expect_refused("^=", "'^='", "empty entry");
}

Test(hca_filter, too_many_or_too_long_refused) {
  char spec[(VERBS_HCA_MAX_ENTRIES + 1) * 8] = "";
  for (int i = 0; i <= VERBS_HCA_MAX_ENTRIES; i++)
    snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%sd%d", i ? "," : "", i);
  expect_refused(spec, "more than 32", "entries");
  char name[VERBS_HCA_NAME_BYTES + 1];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  expect_refused(name, name, "longer than 63");
}

/* --- port choice ------------------------------------------------------------------------------ */

Test(port_choice, prefers_the_ranks_numa_node) {
  struct verbs_hca_filter f = filter(NULL);
  struct verbs_port_info ports[] = {{"mlx5_0", 1, 0, 1}, {"mlx5_1", 1, 1, 1}, {"mlx5_2", 1, 1, 1}};
  char why[256];
  cr_assert_eq(verbs_choose_port(ports, 3, &f, 1, why, sizeof why), 1, "first on node 1, in the order given");
  cr_assert_eq(verbs_choose_port(ports, 3, &f, 0, why, sizeof why), 0);
  cr_assert_eq(verbs_choose_port(ports, 3, &f, -1, why, sizeof why), 0, "rank's node unknown: first");
  cr_assert_eq(verbs_choose_port(ports, 3, &f, 5, why, sizeof why), 0, "no device on the node: first");
  struct verbs_port_info unknown[] = {{"rxe0", 1, -1, 1}, {"rxe1", 1, 0, 1}};
  cr_assert_eq(verbs_choose_port(unknown, 2, &f, -1, why, sizeof why), 0, "node -1 never matches");
}

Test(port_choice, skips_inactive_and_filtered_ports) {
  struct verbs_hca_filter f = filter("^mlx5_1");
  struct verbs_port_info ports[] = {{"mlx5_0", 1, 0, 0}, {"mlx5_1", 1, 0, 1}, {"mlx5_2", 1, 1, 1}};
  char why[256];
  cr_assert_eq(verbs_choose_port(ports, 3, &f, 0, why, sizeof why), 2, "remote but the only usable one");
}

Test(port_choice, no_device) {
  struct verbs_hca_filter f = filter(NULL);
  char why[256];
  cr_assert_eq(verbs_choose_port(NULL, 0, &f, 0, why, sizeof why), -1);
  cr_assert(strstr(why, "no RDMA device"), "%s", why);
}

Test(port_choice, says_why_each_port_was_refused) {
  struct verbs_hca_filter f = filter("rxe");
  struct verbs_port_info ports[] = {{"rxe0", 1, 0, 0}, {"mlx5_0", 1, 0, 1}};
  char why[512];
  cr_assert_eq(verbs_choose_port(ports, 2, &f, 0, why, sizeof why), -1);
  cr_assert(strstr(why, "rxe0:1 (port not active"), "%s", why);
  cr_assert(strstr(why, "mlx5_0:1 (not allowed by TALLY_IB_HCA=rxe)"), "%s", why);
}

Test(port_choice, long_descriptions_are_cut_short) {
  char spec[300];
  memset(spec, 'x', sizeof spec - 1);
  spec[sizeof spec - 1] = '\0';
  for (size_t i = 50; i < sizeof spec - 1; i += 50) spec[i] = ',';
  struct verbs_hca_filter f = filter(spec);
  cr_assert_eq(strlen(f.spec), sizeof f.spec - 1);
  cr_assert_str_eq(f.spec + sizeof f.spec - 4, "...");
  struct verbs_port_info ports[] = {{"mlx5_0", 1, 0, 1}, {"mlx5_1", 1, 0, 1}};
  char why[40];
  memset(why, '#', sizeof why);
  cr_assert_eq(verbs_choose_port(ports, 2, &f, 0, why, sizeof why), -1);
  cr_assert_eq(strlen(why), sizeof why - 1);
  cr_assert_eq(verbs_choose_port(ports, 2, &f, 0, why, 0), -1, "no room for a reason is no error");
}

/* --- GID index -------------------------------------------------------------------------------- */

Test(gid_index, parsed) {
  int index = 7;
  cr_assert_eq(verbs_gid_index_parse(NULL, &index), TALLY_SUCCESS);
  cr_assert_eq(index, -1);
  cr_assert_eq(verbs_gid_index_parse("", &index), TALLY_SUCCESS);
  cr_assert_eq(index, -1);
  cr_assert_eq(verbs_gid_index_parse("0", &index), TALLY_SUCCESS);
  cr_assert_eq(index, 0);
  cr_assert_eq(verbs_gid_index_parse("255", &index), TALLY_SUCCESS);
  cr_assert_eq(index, 255);
}

Test(gid_index, malformed_refused) {
  const char *bad[] = {"abc", "-1", "256", "3x", " 3", "+3", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int index;
    tally_error_clear();
    cr_assert_eq(verbs_gid_index_parse(bad[i], &index), TALLY_ERR_INVALID_ARGUMENT, "'%s' accepted", bad[i]);
    const char *m = tally_error_message();
    cr_assert(strstr(m, "TALLY_IB_GID_INDEX"), "%s", m);
    cr_assert(strstr(m, bad[i]), "%s", m);
    cr_assert(strstr(m, "0 to 255"), "%s", m);
  }
}

static struct verbs_gid_entry gid(int index, enum verbs_gid_type type, const char *address) {
  struct verbs_gid_entry e = {.index = index, .type = type};
  cr_assert_eq(inet_pton(AF_INET6, address, e.gid), 1, "%s", address);
  return e;
}

static int choose(const struct verbs_gid_entry *gids, int n, int infiniband, int override) {
  struct verbs_gid_table t = {"mlx5_0", 1, infiniband, 16, gids, n};
  int index = -99;
  cr_assert_eq(verbs_choose_gid(&t, override, &index), TALLY_SUCCESS, "%s", tally_error_message());
  return index;
}

/* What a RoCE port with an IPv4 and a global IPv6 address shows: each address as v1 and as v2. */
static const char *const V4 = "::ffff:10.0.0.1", *const V6 = "2001:db8::1", *const LL = "fe80::1";

Test(gid_choice, roce_v2_ipv4_first) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, LL), gid(1, VERBS_GID_ROCE_V2, LL),
                                gid(2, VERBS_GID_ROCE_V1, V6), gid(3, VERBS_GID_ROCE_V2, V6),
                                gid(4, VERBS_GID_ROCE_V1, V4), gid(5, VERBS_GID_ROCE_V2, V4)};
  cr_assert_eq(choose(t, 6, 0, -1), 5);
}

Test(gid_choice, roce_v2_other_address_before_link_local) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, LL), gid(1, VERBS_GID_ROCE_V2, LL),
                                gid(2, VERBS_GID_ROCE_V1, V6), gid(3, VERBS_GID_ROCE_V2, V6)};
  cr_assert_eq(choose(t, 4, 0, -1), 3);
  cr_assert_eq(choose(t, 2, 0, -1), 1, "v2 link-local when it is the only v2");
}

Test(gid_choice, roce_v2_before_v1) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, V4), gid(1, VERBS_GID_ROCE_V2, LL)};
  cr_assert_eq(choose(t, 2, 0, -1), 1);
}

Test(gid_choice, roce_v1_ipv4_then_any_v1) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, LL), gid(1, VERBS_GID_ROCE_V1, V4)};
  cr_assert_eq(choose(t, 2, 0, -1), 1);
  cr_assert_eq(choose(t, 1, 0, -1), 0, "v1 link-local is the last resort");
}

Test(gid_choice, empty_entries_skipped) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, LL), gid(1, VERBS_GID_ROCE_V2, "::"),
                                gid(2, VERBS_GID_ROCE_V2, LL)};
  cr_assert_eq(choose(t, 3, 0, -1), 2);
}

Test(gid_choice, infiniband_uses_index_0) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_IB, "fe80::2"), gid(1, VERBS_GID_IB, "fec0::2")};
  cr_assert_eq(choose(t, 2, 1, -1), 0);
  cr_assert_eq(choose(NULL, 0, 1, -1), 0);
}

Test(gid_choice, override_wins) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, LL), gid(3, VERBS_GID_ROCE_V2, V4)};
  cr_assert_eq(choose(t, 2, 0, 0), 0);
  cr_assert_eq(choose(t, 2, 1, 3), 3, "on InfiniBand too");
}

static void expect_gid_refused(const struct verbs_gid_entry *gids, int n, int override, tally_result_t code,
                               const char *says) {
  struct verbs_gid_table t = {"mlx5_7", 2, 0, 16, gids, n};
  int index = -99;
  tally_error_clear();
  cr_assert_eq(verbs_choose_gid(&t, override, &index), code, "index %d accepted", index);
  cr_assert_eq(index, -99);
  const char *m = tally_error_message();
  cr_assert(strstr(m, "mlx5_7 port 2"), "does not name the device: %s", m);
  cr_assert(strstr(m, says), "does not say '%s': %s", says, m);
}

Test(gid_choice, bad_override_refused) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V1, LL), gid(1, VERBS_GID_ROCE_V2, "::"),
                                gid(3, VERBS_GID_ROCE_V2, V4)};
  expect_gid_refused(t, 3, 16, TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_GID_INDEX=16 is outside the GID table");
  expect_gid_refused(t, 3, 16, TALLY_ERR_INVALID_ARGUMENT, "16 entries");
  expect_gid_refused(t, 3, 1, TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_GID_INDEX=1 names an empty GID entry");
  expect_gid_refused(t, 3, 2, TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_GID_INDEX=2 names an empty GID entry");
}

Test(gid_choice, roce_without_usable_gid_refused) {
  struct verbs_gid_entry t[] = {gid(0, VERBS_GID_ROCE_V2, "::"), gid(1, VERBS_GID_IB, LL)};
  expect_gid_refused(t, 2, -1, TALLY_ERR_SYSTEM, "no usable GID");
  expect_gid_refused(NULL, 0, -1, TALLY_ERR_SYSTEM, "IP address");
}
