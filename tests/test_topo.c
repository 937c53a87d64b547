/* Unit tests of topology discovery (sane values here, under a CPU binding, on a synthetic
 * two-node machine, and when hwloc fails), the wire record (round trip, every corrupted field and
 * every truncation refused), TALLY_HOSTID, and the job-wide summary. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <hwloc.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/error.h"
#include "core/log.h"
#include "device/device.h"
#include "topology/topo.h"

static void clear_env(void) {
  unsetenv("TALLY_HOSTID");
  unsetenv("HWLOC_SYNTHETIC");
  unsetenv("HWLOC_COMPONENTS");
}

TestSuite(topo, .init = clear_env);

static void assert_sane(const struct tally_topo *t) {
  cr_assert_geq(t->numa_nodes, 1);
  cr_assert(t->numa_node >= 0 && t->numa_node < t->numa_nodes, "numa node %d of %d", t->numa_node, t->numa_nodes);
  cr_assert(t->pus >= 1 && t->cores >= 1 && t->cores <= t->pus, "%d cores, %d PUs", t->cores, t->pus);
  cr_assert_neq(t->hostname[0], '\0');
  cr_assert(t->n_ifaces >= 0 && t->n_ifaces <= TALLY_TOPO_MAX_IFACES);
  cr_assert(t->nearest_iface >= -1 && t->nearest_iface < t->n_ifaces);
  cr_assert_eq(t->nearest_iface >= 0, t->n_ifaces > 0, "an interface exists but none is nearest");
  for (int i = 0; i < t->n_ifaces; i++) {
    const struct tally_topo_iface *f = &t->ifaces[i];
    cr_assert_neq(f->name[0], '\0');
    cr_assert_str_neq(f->name, "lo", "loopback is listed");
    cr_assert(f->families >= 1 && f->families <= (TALLY_TOPO_IPV4 | TALLY_TOPO_IPV6));
    cr_assert(f->numa_node >= -1 && f->numa_node < t->numa_nodes);
    cr_assert(f->speed_mbps == -1 || f->speed_mbps > 0);
  }
  if (!tally_device()) cr_assert_str_eq(t->gpu_bus_id, "", "no GPU here, yet a GPU bus id");
}

Test(topo, discovery_is_sane_here) {
  struct tally_topo t;
  tally_topo_discover(&t);
  assert_sane(&t);
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  cr_assert_eq(strncmp(t.hostname, host, sizeof t.hostname - 1), 0, "hostname %s, expected %s", t.hostname, host);
  cr_assert_leq(t.pus, sysconf(_SC_NPROCESSORS_ONLN));
  cr_assert_neq(t.cpus[0], '\0', "hwloc works here, so the binding should be known");
}

/* In a forked child, which has one thread: the binding is the process's, the union over its
 * threads, and Criterion's test process has threads of its own. */
Test(topo, binding_to_one_cpu_is_seen) {
  pid_t child = fork();
  cr_assert_geq(child, 0);
  if (child == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) _exit(2);
    struct tally_topo t;
    tally_topo_discover(&t);
    if (t.pus != 1 || t.cores != 1 || strcmp(t.cpus, "0") != 0 || t.first_pu != 0 || t.last_pu != 0) {
      fprintf(stderr, "bound to CPU 0, discovered %d PUs, %d cores, CPUs %s (%d..%d)\n", t.pus, t.cores, t.cpus,
              t.first_pu, t.last_pu);
      _exit(1);
    }
    _exit(0);
  }
  int status;
  cr_assert_eq(waitpid(child, &status, 0), child);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the bound child saw another binding (status %d)", status);
}

/* hwloc's synthetic topologies let a one-node machine test multi-node discovery. */
Test(topo, synthetic_two_node_machine) {
  setenv("HWLOC_SYNTHETIC", "pack:2 numa:1 core:2 pu:2", 1);
  struct tally_topo t;
  tally_topo_discover(&t);
  assert_sane(&t);
  cr_assert_eq(t.numa_nodes, 2);
  cr_assert_eq(t.pus, 8);
  cr_assert_eq(t.cores, 4);
}

/* The last-level cache: the largest one above the binding, from a synthetic machine's caches. */
Test(topo, largest_cache_is_the_last_level) {
  setenv("HWLOC_SYNTHETIC", "pack:1 l3:1(size=8388608) l2:2(size=524288) l1d:1(size=32768) core:1 pu:1", 1);
  struct tally_topo t;
  tally_topo_discover(&t);
  cr_assert_eq(t.cache_bytes, 8388608, "discovered %llu bytes, expected the 8 MiB L3",
               (unsigned long long)t.cache_bytes);
  setenv("HWLOC_SYNTHETIC", "pack:1 core:2 pu:1", 1); /* no caches at all: 0, and the caller assumes one */
  tally_topo_discover(&t);
  cr_assert_eq(t.cache_bytes, 0);
}

/* Here, where sysfs lists CPU caches: the largest data or unified cache of the binding's first CPU. */
Test(topo, largest_cache_matches_sysfs) {
  struct tally_topo t;
  tally_topo_discover(&t);
  unsigned long long largest = 0;
  for (int i = 0; i < 8; i++) {
    char path[128], type[32] = "";
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/cache/index%d/type", t.first_pu, i);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    int got = fscanf(f, "%31s", type);
    fclose(f);
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/cache/index%d/size", t.first_pu, i);
    long kib = tally_topo_read_number(path, -1); /* "8192K" */
    if (got == 1 && strcmp(type, "Instruction") && kib > 0 && (unsigned long long)kib << 10 > largest)
      largest = (unsigned long long)kib << 10;
  }
  if (!largest) cr_skip_test("SKIPPED: sysfs lists no cache for CPU %d here, so nothing to compare", t.first_pu);
  cr_assert_eq(t.cache_bytes, largest, "hwloc's last-level cache %llu bytes, sysfs %llu",
               (unsigned long long)t.cache_bytes, largest);
}

/* Runs discovery twice with stderr captured; returns how many WARN lines it printed. */
static int discover_twice_counting_warnings(struct tally_topo *t) {
  char path[] = "/tmp/test_topo_stderr_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  unlink(path);
  int saved = dup(2);
  fflush(stderr);
  dup2(fd, 2);
  tally_topo_discover(t);
  tally_topo_discover(t);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char text[4096] = "";
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  close(fd);
  text[n > 0 ? n : 0] = '\0';
  int warnings = 0;
  for (const char *p = text; (p = strstr(p, "[tally WARN]")); p++) warnings++;
  cr_assert(warnings == 0 || strstr(text, "topology: "), "unexpected warning: %s", text);
  return warnings;
}

Test(topo, hwloc_failure_falls_back_with_one_warning) {
  setenv("HWLOC_COMPONENTS", "stop", 1); /* hwloc then has no discovery component and fails to load */
  struct tally_topo t;
  cr_assert_eq(discover_twice_counting_warnings(&t), 1);
  assert_sane(&t);
  cr_assert_eq(t.numa_nodes, 1);
  cr_assert_eq(t.numa_node, 0);
}

Test(topo, no_warning_when_hwloc_works) {
  struct tally_topo t;
  cr_assert_eq(discover_twice_counting_warnings(&t), 0);
}

/* A record with every field in use: two nodes, an interface with all its fields. */
static struct tally_topo sample(void) {
  struct tally_topo t;
  memset(&t, 0, sizeof t);
  t.host_id = 0x0123456789abcdefull;
  snprintf(t.hostname, sizeof t.hostname, "node-a.example.org");
  t.numa_node = 1;
  t.numa_nodes = 2;
  t.cores = 8;
  t.pus = 16;
  t.first_pu = 16;
  t.last_pu = 31;
  t.n_ifaces = 2;
  t.ifaces[0] = (struct tally_topo_iface){"eth0", TALLY_TOPO_IPV4, 0, 1000, -1};
  t.ifaces[1] = (struct tally_topo_iface){"ib0", TALLY_TOPO_IPV4 | TALLY_TOPO_IPV6, 1, 100000, -1};
  t.nearest_iface = 1;
  snprintf(t.gpu_bus_id, sizeof t.gpu_bus_id, "0000:3b:00.0");
  return t;
}

static void assert_same_record(const struct tally_topo *a, const struct tally_topo *b) {
  cr_assert_eq(a->host_id, b->host_id);
  cr_assert_str_eq(a->hostname, b->hostname);
  cr_assert_eq(a->numa_node, b->numa_node);
  cr_assert_eq(a->numa_nodes, b->numa_nodes);
  cr_assert_eq(a->cores, b->cores);
  cr_assert_eq(a->pus, b->pus);
  cr_assert_eq(a->first_pu, b->first_pu);
  cr_assert_eq(a->last_pu, b->last_pu);
  cr_assert_str_eq(a->gpu_bus_id, b->gpu_bus_id);
  cr_assert_eq(b->n_ifaces, a->nearest_iface >= 0, "decoded records carry just the nearest interface");
  if (a->nearest_iface < 0) {
    cr_assert_eq(b->nearest_iface, -1);
    return;
  }
  const struct tally_topo_iface *x = &a->ifaces[a->nearest_iface], *y = &b->ifaces[b->nearest_iface];
  cr_assert_str_eq(x->name, y->name);
  cr_assert_eq(x->families, y->families);
  cr_assert_eq(x->numa_node, y->numa_node);
  cr_assert_eq(x->speed_mbps, y->speed_mbps);
}

static void assert_round_trip(const struct tally_topo *t) {
  unsigned char wire[TALLY_TOPO_WIRE_BYTES];
  struct tally_topo back;
  tally_topo_encode(t, wire);
  cr_assert_eq(tally_topo_decode(wire, sizeof wire, &back), 0, "refused: %s", tally_error_message());
  assert_same_record(t, &back);
}

Test(topo, round_trip) {
  cr_assert_leq(TALLY_TOPO_WIRE_BYTES, 160);
  struct tally_topo t = sample();
  assert_round_trip(&t);
  t.ifaces[1].numa_node = -1; /* a virtual interface */
  t.ifaces[1].speed_mbps = -1;
  assert_round_trip(&t);
  t.nearest_iface = -1; /* no interface at all */
  t.n_ifaces = 0;
  t.gpu_bus_id[0] = '\0';
  memset(t.hostname, 'h', sizeof t.hostname - 1); /* longest hostname */
  assert_round_trip(&t);
  tally_topo_discover(&t);
  assert_round_trip(&t);
}

/* Each entry overwrites `len` bytes at `offset` of a good record; every one must be refused. */
struct corruption {
  const char *what;
  int offset, len;
  const char *bytes;
};

static const struct corruption corruptions[] = {
    {"magic", TALLY_TOPO_OFF_MAGIC, 1, "X"},
    {"version 0", TALLY_TOPO_OFF_VERSION + 1, 1, "\0"},
    {"version 1 (before the binding span)", TALLY_TOPO_OFF_VERSION + 1, 1, "\1"},
    {"version 3", TALLY_TOPO_OFF_VERSION + 1, 1, "\3"},
    {"high version byte", TALLY_TOPO_OFF_VERSION, 1, "\1"},
    {"unknown flag", TALLY_TOPO_OFF_FLAGS, 1, "\3"},
    {"reserved byte", TALLY_TOPO_OFF_RESERVED, 1, "\1"},
    {"numa node = node count", TALLY_TOPO_OFF_NUMA_NODE, 2, "\0\2"},
    {"numa node huge", TALLY_TOPO_OFF_NUMA_NODE, 2, "\xff\xff"},
    {"no numa node", TALLY_TOPO_OFF_NUMA_NODES, 2, "\0\0"},
    {"zero cores", TALLY_TOPO_OFF_CORES, 2, "\0\0"},
    {"more cores than PUs", TALLY_TOPO_OFF_CORES, 2, "\0\x11"},
    {"zero PUs", TALLY_TOPO_OFF_PUS, 2, "\0\0"},
    {"no interface flag, interface fields set", TALLY_TOPO_OFF_FLAGS, 1, "\0"},
    {"empty interface name", TALLY_TOPO_OFF_IF_NAME, 1, "\0"},
    {"space in interface name", TALLY_TOPO_OFF_IF_NAME + 1, 1, " "},
    {"unterminated interface name", TALLY_TOPO_OFF_IF_NAME, 16, "aaaaaaaaaaaaaaaa"},
    {"garbage after interface name", TALLY_TOPO_OFF_IF_NAME + 15, 1, "x"},
    {"no address family", TALLY_TOPO_OFF_IF_FAMILIES, 1, "\0"},
    {"unknown address family", TALLY_TOPO_OFF_IF_FAMILIES, 1, "\4"},
    {"interface reserved byte", TALLY_TOPO_OFF_IF_RESERVED, 1, "\1"},
    {"interface numa node = node count", TALLY_TOPO_OFF_IF_NUMA_NODE, 2, "\0\2"},
    {"interface speed 0", TALLY_TOPO_OFF_IF_SPEED, 4, "\0\0\0\0"},
    {"interface speed too high", TALLY_TOPO_OFF_IF_SPEED, 4, "\x7f\0\0\0"},
    {"empty hostname", TALLY_TOPO_OFF_HOSTNAME, 1, "\0"},
    {"control character in hostname", TALLY_TOPO_OFF_HOSTNAME + 2, 1, "\n"},
    {"garbage after hostname", TALLY_TOPO_OFF_HOSTNAME + 63, 1, "x"},
    {"unterminated gpu bus id", TALLY_TOPO_OFF_GPU_BUS_ID + 12, 4, "abcd"},
    {"non-ASCII gpu bus id", TALLY_TOPO_OFF_GPU_BUS_ID, 1, "\xc3"},
    {"last PU before the first", TALLY_TOPO_OFF_LAST_PU, 2, "\0\x0f"},
    {"binding narrower than its PUs", TALLY_TOPO_OFF_FIRST_PU, 2, "\0\x11"},
    {"nonzero tail", TALLY_TOPO_OFF_TAIL + 3, 1, "\1"},
};

Test(topo, every_corrupted_field_refused) {
  struct tally_topo t = sample(), back;
  unsigned char good[TALLY_TOPO_WIRE_BYTES], bad[TALLY_TOPO_WIRE_BYTES];
  tally_topo_encode(&t, good);
  for (size_t i = 0; i < sizeof corruptions / sizeof corruptions[0]; i++) {
    const struct corruption *c = &corruptions[i];
    memcpy(bad, good, sizeof bad);
    memcpy(bad + c->offset, c->bytes, (size_t)c->len);
    cr_assert_neq(memcmp(bad, good, sizeof bad), 0, "%s: the corruption changes nothing", c->what);
    tally_error_clear();
    cr_assert_eq(tally_topo_decode(bad, sizeof bad, &back), -1, "%s accepted", c->what);
    cr_assert(strstr(tally_error_message(), "topology record"), "%s: message '%s'", c->what, tally_error_message());
  }
}

Test(topo, wrong_lengths_refused) {
  struct tally_topo t = sample(), back;
  unsigned char wire[TALLY_TOPO_WIRE_BYTES + 1];
  tally_topo_encode(&t, wire);
  for (size_t len = 0; len < TALLY_TOPO_WIRE_BYTES; len++)
    cr_assert_eq(tally_topo_decode(wire, len, &back), -1, "a record truncated to %zu bytes was accepted", len);
  cr_assert_eq(tally_topo_decode(wire, sizeof wire, &back), -1, "an overlong record was accepted");
  cr_assert(strstr(tally_error_message(), "137 bytes"), "message: %s", tally_error_message());
}

Test(topo, hostid_overrides_host_identity) {
  struct tally_topo real, a, b, a_again, empty;
  tally_topo_discover(&real);
  setenv("TALLY_HOSTID", "fake-host-a", 1);
  tally_topo_discover(&a);
  tally_topo_discover(&a_again);
  setenv("TALLY_HOSTID", "fake-host-b", 1);
  tally_topo_discover(&b);
  setenv("TALLY_HOSTID", "", 1); /* empty: as if unset */
  tally_topo_discover(&empty);
  cr_assert_neq(a.host_id, b.host_id);
  cr_assert_neq(a.host_id, real.host_id);
  cr_assert_eq(a.host_id, a_again.host_id);
  cr_assert_eq(empty.host_id, real.host_id);
  unsigned char wire_a[TALLY_TOPO_WIRE_BYTES], wire_b[TALLY_TOPO_WIRE_BYTES];
  tally_topo_encode(&a, wire_a);
  tally_topo_encode(&b, wire_b);
  cr_assert_neq(memcmp(wire_a, wire_b, sizeof wire_a), 0);
}

/* Records of `nranks` ranks made by real discovery under TALLY_HOSTID=host-<host_of(r)>, sent
 * through the wire encoding as they will be at bootstrap. */
static void fake_job(struct tally_topo *records, int nranks, int (*host_of)(int rank)) {
  for (int r = 0; r < nranks; r++) {
    char id[32];
    snprintf(id, sizeof id, "host-%d", host_of(r));
    setenv("TALLY_HOSTID", id, 1);
    struct tally_topo t;
    tally_topo_discover(&t);
    t.numa_node = r % 2 < t.numa_nodes ? r % 2 : 0; /* pretend on two-node machines */
    unsigned char wire[TALLY_TOPO_WIRE_BYTES];
    tally_topo_encode(&t, wire);
    cr_assert_eq(tally_topo_decode(wire, sizeof wire, &records[r]), 0, "%s", tally_error_message());
  }
}

static int blocks_of_four(int rank) { return rank / 4; }
static int alternating(int rank) { return rank % 2; }

/* Records of `n` ranks on host `host_of(r)`, each bound to PUs first[r]..last[r]. */
static void bound_job(struct tally_topo *records, int n, int (*host_of)(int), const int *first, const int *last,
                      struct tally_job_topo *job) {
  for (int r = 0; r < n; r++) {
    records[r] = sample();
    records[r].host_id = (uint64_t)host_of(r) + 1;
    records[r].first_pu = first[r];
    records[r].last_pu = last[r];
    records[r].pus = records[r].cores = last[r] - first[r] + 1;
  }
  cr_assert_eq(tally_job_topo_build(records, n, job), TALLY_SUCCESS);
}

static int one_host(int rank) { return 0 * rank; }

Test(topo, cores_shared_counts_the_ranks_bindings_together) {
  struct tally_topo records[8];
  struct tally_job_topo job;
  /* bound to a core each, as mpirun and tally-perf -N bind: not shared, though each sees one PU */
  bound_job(records, 2, one_host, (int[]){0, 1}, (int[]){0, 1}, &job);
  cr_assert_not(tally_job_topo_cores_shared(&job, records, 0));
  cr_assert_not(tally_job_topo_cores_shared(&job, records, 1));
  tally_job_topo_free(&job);
  /* both bound to CPU 0 */
  bound_job(records, 2, one_host, (int[]){0, 0}, (int[]){0, 0}, &job);
  cr_assert(tally_job_topo_cores_shared(&job, records, 1));
  tally_job_topo_free(&job);
  /* unbound on a 2-PU machine: 2 ranks fit, 3 do not */
  bound_job(records, 3, one_host, (int[]){0, 0, 0}, (int[]){1, 1, 1}, &job);
  cr_assert(tally_job_topo_cores_shared(&job, records, 2));
  tally_job_topo_free(&job);
  bound_job(records, 2, one_host, (int[]){0, 0}, (int[]){1, 1}, &job);
  cr_assert_not(tally_job_topo_cores_shared(&job, records, 0));
  tally_job_topo_free(&job);
  /* overlapping spans count once: 0-3, 2-5 and 5 cover 6 PUs for 4 ranks; a fifth on 0-1 still fits */
  bound_job(records, 5, one_host, (int[]){0, 2, 5, 0, 0}, (int[]){3, 5, 5, 1, 1}, &job);
  cr_assert_not(tally_job_topo_cores_shared(&job, records, 4));
  tally_job_topo_free(&job);
  /* another host's ranks do not count: 4 ranks on 2 hosts, each host's two ranks on PUs 0 and 1 */
  bound_job(records, 4, alternating, (int[]){0, 0, 1, 1}, (int[]){0, 0, 1, 1}, &job);
  cr_assert_not(tally_job_topo_cores_shared(&job, records, 0));
  tally_job_topo_free(&job);
  /* three ranks of one host share PU 7 */
  bound_job(records, 3, one_host, (int[]){7, 7, 7}, (int[]){7, 7, 7}, &job);
  cr_assert(tally_job_topo_cores_shared(&job, records, 0));
  tally_job_topo_free(&job);
}

Test(topo, job_of_8_ranks_on_2_hosts_in_blocks) {
  struct tally_topo records[8];
  fake_job(records, 8, blocks_of_four);
  struct tally_job_topo job;
  cr_assert_eq(tally_job_topo_build(records, 8, &job), TALLY_SUCCESS);
  cr_assert_eq(job.nranks, 8);
  cr_assert_eq(job.nhosts, 2);
  for (int r = 0; r < 8; r++) {
    cr_assert_eq(job.host_index[r], r / 4, "rank %d on host %d", r, job.host_index[r]);
    cr_assert_eq(job.local_rank[r], r % 4, "rank %d has local rank %d", r, job.local_rank[r]);
    cr_assert_eq(job.local_size[r], 4);
    cr_assert_eq(tally_job_topo_same_host(&job, r, 0), r < 4);
    cr_assert(tally_job_topo_same_numa(&job, r, r));
    cr_assert(!tally_job_topo_same_numa(&job, r, (r + 4) % 8), "ranks on other hosts share no NUMA node");
  }
  cr_assert_eq(job.host_first_rank[0], 0);
  cr_assert_eq(job.host_first_rank[1], 4);
  char line[256];
  tally_job_topo_format_host(&job, records, 1, line, sizeof line);
  cr_assert(strstr(line, "host 1 of 2") && strstr(line, "4 ranks: 4-7"), "line: %s", line);
  tally_job_topo_log(&job, records);
  tally_job_topo_free(&job);
  cr_assert_null(job.host_index);
}

Test(topo, job_of_8_ranks_on_2_hosts_alternating) {
  struct tally_topo records[8];
  fake_job(records, 8, alternating);
  struct tally_job_topo job;
  cr_assert_eq(tally_job_topo_build(records, 8, &job), TALLY_SUCCESS);
  cr_assert_eq(job.nhosts, 2);
  for (int r = 0; r < 8; r++) {
    cr_assert_eq(job.host_index[r], r % 2);
    cr_assert_eq(job.local_rank[r], r / 2);
    cr_assert_eq(job.local_size[r], 4);
  }
  char line[256];
  tally_job_topo_format_host(&job, records, 0, line, sizeof line);
  cr_assert(strstr(line, "4 ranks: 0,2,4,6"), "line: %s", line);
  size_t room = (size_t)(strstr(line, "ranks: ") - line) + strlen("ranks: ") + 5; /* "0,2,4,6" does not fit */
  tally_job_topo_format_host(&job, records, 0, line, room);
  cr_assert_eq(strlen(line), room - 1);
  cr_assert_str_eq(line + room - 4, "...", "line: %s", line);
  tally_job_topo_free(&job);
}

Test(topo, job_sizes_uneven_and_single) {
  struct tally_topo records[5] = {sample(), sample(), sample(), sample(), sample()};
  records[3].host_id = 7; /* ranks 0,1,2,4 on one host, rank 3 alone */
  struct tally_job_topo job;
  cr_assert_eq(tally_job_topo_build(records, 5, &job), TALLY_SUCCESS);
  cr_assert_eq(job.nhosts, 2);
  int want_local[5] = {0, 1, 2, 0, 3}, want_size[5] = {4, 4, 4, 1, 4};
  for (int r = 0; r < 5; r++) {
    cr_assert_eq(job.local_rank[r], want_local[r], "rank %d", r);
    cr_assert_eq(job.local_size[r], want_size[r], "rank %d", r);
  }
  cr_assert_eq(job.host_index[3], 1);
  tally_job_topo_free(&job);
  cr_assert_eq(tally_job_topo_build(records, 1, &job), TALLY_SUCCESS);
  cr_assert(job.nhosts == 1 && job.local_rank[0] == 0 && job.local_size[0] == 1);
  tally_job_topo_free(&job);
  cr_assert_eq(tally_job_topo_build(records, 0, &job), TALLY_ERR_INVALID_ARGUMENT);
}

Test(topo, debug_subsystem_topo_is_known) {
  char err[256] = "";
  cr_assert_eq(tally_log_configure("INFO", "TOPO", err, sizeof err), 0, "%s", err);
  cr_assert_eq(tally_log_configure("INFO", "^TOPO,NET", err, sizeof err), 0, "%s", err);
  cr_assert_eq(tally_log_configure("WARN", "TOPOLOGY", err, sizeof err), -1);
  cr_assert(strstr(err, "TOPO"), "the list of valid subsystems lacks TOPO: %s", err);
}

/* tests/data/gpu_nics.xml: two packages, each one NUMA node with two cores. Package 0 has GPU
 * 0000:3b:00.0 and the RDMA NIC ib0 behind one PCIe switch, and eth0 on the same host bridge;
 * package 1 has GPU 0000:d8:00.0 and eth1 on one host bridge. veth0 is virtual (not in hwloc). */
static hwloc_topology_t load_gpu_nics(void) {
  hwloc_topology_t topo;
  cr_assert_eq(hwloc_topology_init(&topo), 0);
  hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_ALL);
  cr_assert_eq(hwloc_topology_set_xml(topo, TALLY_TEST_DATA_DIR "/gpu_nics.xml"), 0);
  cr_assert_eq(hwloc_topology_load(topo), 0, "cannot load gpu_nics.xml");
  return topo;
}

static struct tally_topo four_interfaces(int process_node) {
  struct tally_topo t;
  memset(&t, 0, sizeof t);
  t.numa_node = process_node;
  t.numa_nodes = 2;
  t.n_ifaces = 4;
  t.ifaces[0] = (struct tally_topo_iface){"eth0", TALLY_TOPO_IPV4, 0, 10000, -1};
  t.ifaces[1] = (struct tally_topo_iface){"eth1", TALLY_TOPO_IPV4, 1, 10000, -1};
  t.ifaces[2] = (struct tally_topo_iface){"veth0", TALLY_TOPO_IPV4, -1, 100000, -1};
  t.ifaces[3] = (struct tally_topo_iface){"ib0", TALLY_TOPO_IPV4, 0, 100000, -1};
  return t;
}

Test(topo, a_rank_picks_the_interface_nearest_its_gpu) {
  hwloc_topology_t topo = load_gpu_nics();
  /* The process runs on node 1, but its GPU hangs off node 0: the GPU decides. */
  struct tally_topo t = four_interfaces(1);
  tally_topo_place_gpu(&t, topo, "0000:3b:00.0");
  cr_assert_str_eq(t.gpu_bus_id, "0000:3b:00.0");
  cr_assert_eq(t.gpu_numa_node, 0);
  cr_assert_eq(t.ifaces[3].gpu_hops, 1, "ib0 shares the GPU's PCIe switch");
  cr_assert_eq(t.ifaces[0].gpu_hops, 2, "eth0 shares its host bridge");
  cr_assert_eq(t.ifaces[1].gpu_hops, 4, "eth1 is across the machine");
  cr_assert_eq(t.ifaces[2].gpu_hops, -1, "veth0 is not a PCI device");
  cr_assert_str_eq(t.ifaces[tally_topo_nearest_iface(&t)].name, "ib0");

  /* CUDA writes bus ids in capitals. */
  tally_topo_place_gpu(&t, topo, "0000:D8:00.0");
  cr_assert_eq(t.gpu_numa_node, 1);
  cr_assert_eq(t.ifaces[1].gpu_hops, 1);
  cr_assert_str_eq(t.ifaces[tally_topo_nearest_iface(&t)].name, "eth1");

  /* No GPU, or one hwloc does not know: the process's NUMA node decides, then speed. */
  struct tally_topo u = four_interfaces(0);
  tally_topo_place_gpu(&u, topo, "");
  cr_assert_eq(u.gpu_numa_node, -1);
  cr_assert_str_eq(u.ifaces[tally_topo_nearest_iface(&u)].name, "ib0");
  tally_topo_place_gpu(&u, topo, "0000:99:00.0");
  cr_assert_eq(u.gpu_numa_node, -1);
  cr_assert_str_eq(u.ifaces[tally_topo_nearest_iface(&u)].name, "ib0");
  u.numa_node = 1;
  cr_assert_str_eq(u.ifaces[tally_topo_nearest_iface(&u)].name, "eth1");
  hwloc_topology_destroy(topo);
}
