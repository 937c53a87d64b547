/* Unit tests of configuration parsing, the unique id encoding and the wire header check. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "api/config_env.h"
#include "bootstrap/uid.h"
#include "core/error.h"
#include "core/reduce.h"
#include "core/wire.h"

static void clear_env(void) {
  const char *vars[] = {"TALLY_TIMEOUT", "TALLY_SOCKET_IFNAME", "TALLY_TRANSPORT", "TALLY_ALGO", "TALLY_DEBUG",
                        "TALLY_DEBUG_SUBSYS", "TALLY_SPIN_US", "TALLY_CHUNK_BYTES", "TALLY_RING_CHANNELS", "TALLY_IB_HCA", "TALLY_IB_GID_INDEX",
                        "TALLY_IB_REG_CACHE_MB", "TALLY_TUNING_FILE", "TALLY_TUNING_CACHE", "TALLY_CUDAIPC_MB", "TALLY_STAGING_CHUNK_MB", "TALLY_STATS", "TALLY_FLIGHT_RECORDS", "TALLY_FLIGHT_DIR", "TALLY_FLIGHT_SIGNAL", "TALLY_TRACE", "TALLY_COMPRESS", "TALLY_COMPRESS_MIN_BYTES", "TALLY_STREAM_BYTES", "TALLY_CACHE_BYTES", "TALLY_CORES_APART", "TALLY_RANK",
                        "TALLY_SIZE",
                        "TALLY_ROOT", "TALLY_SECRET", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
                        "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "RANK", "WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}

TestSuite(config, .init = clear_env);

Test(config, defaults) {
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS);
  cr_assert_float_eq(cfg.timeout_s, 300.0, 1e-9);
  cr_assert_str_eq(cfg.transport, "auto");
  cr_assert_str_eq(cfg.ifname, "");
  cr_assert_eq(cfg.stream_bytes, TALLY_STREAM_BYTES_AUTO); /* half the last-level cache, once it is known */
  cr_assert_eq(cfg.cache_bytes, 0);                        /* hwloc's */
  cr_assert_eq(cfg.cores_apart, TALLY_CORES_APART_AUTO);   /* measured where two ranks share a host */
}

Test(config, timeout_parsed) {
  setenv("TALLY_TIMEOUT", "2.5", 1);
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS);
  cr_assert_float_eq(cfg.timeout_s, 2.5, 1e-9);
}

/* Each malformed value is refused with a message naming the variable. */
static void expect_refused(const char *var, const char *value) {
  clear_env();
  setenv(var, value, 1);
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_ERR_INVALID_ARGUMENT, "%s=%s accepted", var, value);
  cr_assert(strstr(tally_error_message(), var), "message does not name %s: %s", var, tally_error_message());
}

Test(config, malformed_values_refused) {
  expect_refused("TALLY_TIMEOUT", "soon");
  expect_refused("TALLY_TIMEOUT", "-1");
  expect_refused("TALLY_TIMEOUT", "5s");
  expect_refused("TALLY_TRANSPORT", "carrier-pigeon");
  expect_refused("TALLY_ALGO", "bogus");
  expect_refused("TALLY_DEBUG", "LOUD");
  expect_refused("TALLY_DEBUG_SUBSYS", "INIT,NOPE");
  expect_refused("TALLY_SPIN_US", "-3");
  expect_refused("TALLY_CHUNK_BYTES", "12");
  expect_refused("TALLY_RING_CHANNELS", "3");
  expect_refused("TALLY_RING_CHANNELS", "0");
  expect_refused("TALLY_RING_CHANNELS", "two");
  expect_refused("TALLY_IB_HCA", "mlx5_0:x");
  expect_refused("TALLY_IB_GID_INDEX", "abc");
  expect_refused("TALLY_IB_REG_CACHE_MB", "-1");
  expect_refused("TALLY_TUNING_CACHE", "yes");
  expect_refused("TALLY_TUNING_CACHE", "2");
  expect_refused("TALLY_TUNING_CACHE", "01");
  expect_refused("TALLY_FLIGHT_RECORDS", "-1");
  expect_refused("TALLY_FLIGHT_RECORDS", "70000");
  expect_refused("TALLY_FLIGHT_DIR", "/nonexistent/tally-flight");
  expect_refused("TALLY_FLIGHT_DIR", "/etc/hostname"); /* a file, not a directory */
  expect_refused("TALLY_FLIGHT_SIGNAL", "yes");
  expect_refused("TALLY_TRACE", "/nonexistent/tally-trace");
  expect_refused("TALLY_TRACE", "/etc/hostname");
  expect_refused("TALLY_STATS", "yes");
  expect_refused("TALLY_STATS", "2");
  expect_refused("TALLY_CUDAIPC_MB", "lots");
  expect_refused("TALLY_CUDAIPC_MB", "4097");
  expect_refused("TALLY_STAGING_CHUNK_MB", "-1");
  expect_refused("TALLY_STAGING_CHUNK_MB", "4M");
  expect_refused("TALLY_STREAM_BYTES", "-1");
  expect_refused("TALLY_STREAM_BYTES", "8M");
  expect_refused("TALLY_CACHE_BYTES", "-1");
  expect_refused("TALLY_CACHE_BYTES", "32M");
  expect_refused("TALLY_CORES_APART", "yes");
  expect_refused("TALLY_CORES_APART", "2");
  char long_path[5000];
  memset(long_path, 'x', sizeof long_path - 1);
  long_path[0] = '/';
  long_path[sizeof long_path - 1] = '\0';
  expect_refused("TALLY_TUNING_FILE", long_path);
}

/* The tuning file is only named here (calibrate.c reads it at init); the cache is on unless 0. */
Test(config, tuning_settings) {
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS);
  cr_assert_str_eq(cfg.tuning_file, "");
  cr_assert_eq(cfg.tuning_cache, 1);
  setenv("TALLY_TUNING_FILE", "/etc/tally/links.tune", 1);
  setenv("TALLY_TUNING_CACHE", "0", 1);
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS, "%s", tally_error_message());
  cr_assert_str_eq(cfg.tuning_file, "/etc/tally/links.tune");
  cr_assert_eq(cfg.tuning_cache, 0);
  setenv("TALLY_TUNING_CACHE", "1", 1);
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS, "%s", tally_error_message());
  cr_assert_eq(cfg.tuning_cache, 1);
}

Test(config, cores_apart_values) {
  const char *values[] = {"auto", "0", "1"};
  const int want[] = {TALLY_CORES_APART_AUTO, 0, 1};
  for (int i = 0; i < 3; i++) {
    setenv("TALLY_CORES_APART", values[i], 1);
    struct tally_config cfg;
    cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS, "%s", tally_error_message());
    cr_assert_eq(cfg.cores_apart, want[i], "TALLY_CORES_APART=%s", values[i]);
  }
}

/* A valid TALLY_ALGO that leaves a collective only algorithms not written yet is refused at init,
 * saying what is implemented, rather than quietly running something else. */
Test(config, compress_settings) {
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS);
  cr_assert_eq(cfg.compress, TALLY_WIRE_EXACT);
  cr_assert_eq(cfg.compress_min_bytes, TALLY_DEFAULT_COMPRESS_MIN_BYTES);
  const char *names[] = {"none", "bf16", "fp16"};
  for (int f = 0; f < 3; f++) {
    setenv("TALLY_COMPRESS", names[f], 1);
    cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS);
    cr_assert_eq(cfg.compress, f, "TALLY_COMPRESS=%s", names[f]);
  }
  setenv("TALLY_COMPRESS_MIN_BYTES", "0", 1);
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS);
  cr_assert_eq(cfg.compress_min_bytes, 0);
  const char *bad[] = {"BF16", "bfloat16", "fp8", "1", " bf16"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    expect_refused("TALLY_COMPRESS", bad[i]);
    cr_assert(strstr(tally_error_message(), "none") && strstr(tally_error_message(), "bf16") &&
                  strstr(tally_error_message(), "fp16"),
              "the message does not list the valid values: %s", tally_error_message());
  }
  expect_refused("TALLY_COMPRESS_MIN_BYTES", "-1");
  expect_refused("TALLY_COMPRESS_MIN_BYTES", "64k");
  expect_refused("TALLY_COMPRESS_MIN_BYTES", "lots");
}

Test(config, unimplemented_algorithm_refused) {
  setenv("TALLY_ALGO", "allgather:tree", 1);
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_error_message(), "TALLY_ALGO leaves allgather"), "%s", tally_error_message());
  cr_assert(strstr(tally_error_message(), "implemented for allgather: ring, rhd, hier"), "%s", tally_error_message());
  setenv("TALLY_ALGO", "allreduce:rhd;ring", 1);
  cr_assert_eq(tally_config_load(&cfg), TALLY_SUCCESS, "%s", tally_error_message());
  cr_assert(tally_algo_spec_allows(&cfg.algo, TALLY_COLL_ALLREDUCE, TALLY_ALGO_RHD));
  cr_assert(!tally_algo_spec_allows(&cfg.algo, TALLY_COLL_ALLREDUCE, TALLY_ALGO_RING));
  cr_assert(tally_algo_spec_allows(&cfg.algo, TALLY_COLL_BROADCAST, TALLY_ALGO_RING));
}

Test(config, unknown_transport_lists_valid_ones) {
  setenv("TALLY_TRANSPORT", "udp", 1);
  struct tally_config cfg;
  cr_assert_eq(tally_config_load(&cfg), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_error_message(), "tcp"), "%s", tally_error_message());
}

Test(config, host_port) {
  char host[64];
  int port;
  cr_assert_eq(tally_split_host_port("10.1.2.3:29500", host, sizeof host, &port), 0);
  cr_assert_str_eq(host, "10.1.2.3");
  cr_assert_eq(port, 29500);
  cr_assert_eq(tally_split_host_port("[::1]:80", host, sizeof host, &port), 0);
  cr_assert_str_eq(host, "::1");
  cr_assert_eq(tally_split_host_port("nohost", host, sizeof host, &port), -1);
  cr_assert_eq(tally_split_host_port("h:0", host, sizeof host, &port), -1);
  cr_assert_eq(tally_split_host_port("h:65536", host, sizeof host, &port), -1);
  cr_assert_eq(tally_split_host_port(":80", host, sizeof host, &port), -1);
}

Test(config, secret_hex) {
  unsigned char s[16];
  cr_assert_eq(tally_parse_secret_hex("000102030405060708090a0b0c0d0eFF", s), 0);
  cr_assert_eq(s[1], 1);
  cr_assert_eq(s[15], 0xff);
  cr_assert_eq(tally_parse_secret_hex("0001", s), -1);
  cr_assert_eq(tally_parse_secret_hex("zz0102030405060708090a0b0c0d0eff", s), -1);
}

Test(config, launcher_variables_in_order) {
  struct tally_launch_env env;
  cr_assert_eq(tally_launch_env_load(&env), TALLY_ERR_INVALID_USAGE);
  setenv("RANK", "1", 1);
  setenv("WORLD_SIZE", "4", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", "29500", 1);
  cr_assert_eq(tally_launch_env_load(&env), TALLY_SUCCESS);
  cr_assert_eq(env.rank, 1);
  cr_assert_eq(env.size, 4);
  cr_assert_str_eq(env.root, "127.0.0.1:29500");
  cr_assert_eq(env.has_secret, 0);
  setenv("OMPI_COMM_WORLD_RANK", "2", 1); /* Open MPI's variables come before torchrun's */
  setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  setenv("TALLY_SECRET", "00112233445566778899aabbccddeeff", 1);
  cr_assert_eq(tally_launch_env_load(&env), TALLY_SUCCESS);
  cr_assert_eq(env.rank, 2);
  cr_assert_eq(env.size, 3);
  cr_assert_eq(env.has_secret, 1);
}

Test(config, launcher_errors) {
  struct tally_launch_env env;
  setenv("TALLY_RANK", "4", 1);
  setenv("TALLY_SIZE", "4", 1);
  setenv("TALLY_ROOT", "127.0.0.1:1234", 1);
  cr_assert_eq(tally_launch_env_load(&env), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_error_message(), "TALLY_RANK"), "%s", tally_error_message());
  setenv("TALLY_RANK", "0", 1);
  setenv("TALLY_ROOT", "no-port", 1);
  cr_assert_eq(tally_launch_env_load(&env), TALLY_ERR_INVALID_ARGUMENT);
  setenv("TALLY_ROOT", "127.0.0.1:1234", 1);
  setenv("TALLY_SECRET", "short", 1);
  cr_assert_eq(tally_launch_env_load(&env), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_error_message(), "TALLY_SECRET"), "%s", tally_error_message());
  unsetenv("TALLY_SECRET");
  unsetenv("TALLY_ROOT");
  cr_assert_eq(tally_launch_env_load(&env), TALLY_ERR_INVALID_USAGE);
}

static struct tally_job_id sample_job(void) {
  struct tally_job_id job = {.authenticated = 1};
  cr_assert_eq(tally_net_resolve("127.0.0.1", 4242, &job.root), TALLY_SUCCESS);
  for (int i = 0; i < 16; i++) job.secret[i] = (unsigned char)(i * 17);
  return job;
}

Test(uid, round_trip) {
  struct tally_job_id job = sample_job(), back;
  tally_unique_id_t id;
  tally_uid_encode(&job, &id);
  cr_assert_eq(tally_uid_decode(&id, &back), TALLY_SUCCESS);
  cr_assert_eq(tally_net_port(&back.root), 4242);
  cr_assert_arr_eq(back.secret, job.secret, 16);
  cr_assert_eq(back.authenticated, 1);
}

Test(uid, ipv6_round_trip) {
  struct tally_job_id job = sample_job(), back;
  cr_assert_eq(tally_net_resolve("::1", 7, &job.root), TALLY_SUCCESS);
  tally_unique_id_t id;
  tally_uid_encode(&job, &id);
  cr_assert_eq(tally_uid_decode(&id, &back), TALLY_SUCCESS);
  char text[80];
  cr_assert_str_eq(tally_net_format(&back.root, text, sizeof text), "[::1]:7");
}

Test(uid, corrupt_ids_refused) {
  struct tally_job_id job = sample_job(), back;
  tally_unique_id_t id, bad;
  tally_uid_encode(&job, &id);
  memset(&bad, 0, sizeof bad);
  cr_assert_eq(tally_uid_decode(&bad, &back), TALLY_ERR_INVALID_ARGUMENT);
  bad = id;
  bad.internal[127] = 1; /* padding must be zero */
  cr_assert_eq(tally_uid_decode(&bad, &back), TALLY_ERR_INVALID_ARGUMENT);
  bad = id;
  bad.internal[5] = 9; /* unknown version */
  cr_assert_eq(tally_uid_decode(&bad, &back), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_error_message(), "version"), "%s", tally_error_message());
}

Test(uid, ipv4_address_with_junk_in_its_unused_bytes_refused) {
  struct tally_sockaddr addr;
  cr_assert_eq(tally_net_resolve("127.0.0.1", 7, &addr), TALLY_SUCCESS);
  unsigned char packed[TALLY_PACKED_ADDR_BYTES];
  tally_net_pack(&addr, packed);
  struct tally_sockaddr back;
  cr_assert_eq(tally_net_unpack(packed, &back), 0);
  packed[TALLY_PACKED_ADDR_BYTES - 1] = 0x5a; /* beyond the 4 bytes an IPv4 address uses */
  cr_assert_eq(tally_net_unpack(packed, &back), -1);
}

static struct tally_msg_header sample_header(void) {
  struct tally_coll_desc d = {TALLY_COLL_ALLREDUCE, NULL, NULL, 100, TALLY_FLOAT32, TALLY_SUM, 0, 0, 0, 0, 0};
  struct tally_msg_header h;
  tally_header_fill(&h, &d, 7);
  h.index = 3;
  h.bytes = 40;
  return h;
}

Test(wire, matching_header_accepted) {
  struct tally_msg_header h = sample_header();
  unsigned char bytes[TALLY_WIRE_HEADER_BYTES];
  tally_header_encode(&h, bytes);
  cr_assert_eq(tally_header_check(bytes, &h, 1), TALLY_SUCCESS);
}

/* The check compares the bytes first and decodes only headers that differ: both ways must agree that
 * any changed byte, in any field, is not the expected header. */
Test(wire, any_changed_byte_is_refused) {
  struct tally_msg_header h = sample_header();
  unsigned char bytes[TALLY_WIRE_HEADER_BYTES];
  tally_header_encode(&h, bytes);
  cr_assert(tally_header_is(bytes, &h));
  for (int i = 0; i < TALLY_WIRE_HEADER_BYTES; i++) {
    bytes[i] ^= 0x01;
    cr_assert(!tally_header_is(bytes, &h), "byte %d changed, yet the header is the expected one", i);
    cr_assert_neq(tally_header_check(bytes, &h, 1), TALLY_SUCCESS, "byte %d changed, yet the check passed", i);
    bytes[i] ^= 0x01;
  }
  cr_assert_eq(tally_header_check(bytes, &h, 1), TALLY_SUCCESS);
}

Test(wire, different_collective_is_mismatch) {
  struct tally_msg_header mine = sample_header(), theirs = mine;
  theirs.count = 200;
  unsigned char bytes[TALLY_WIRE_HEADER_BYTES];
  tally_header_encode(&theirs, bytes);
  cr_assert_eq(tally_header_check(bytes, &mine, 5), TALLY_ERR_MISMATCH);
  cr_assert(strstr(tally_error_message(), "rank 5 called allreduce(count=200, float, sum)"), "%s",
            tally_error_message());
  theirs = mine;
  theirs.seq = 8;
  tally_header_encode(&theirs, bytes);
  cr_assert_eq(tally_header_check(bytes, &mine, 5), TALLY_ERR_MISMATCH);
}

Test(wire, garbage_and_wrong_length_refused) {
  struct tally_msg_header mine = sample_header(), theirs = mine;
  unsigned char bytes[TALLY_WIRE_HEADER_BYTES];
  memset(bytes, 0xab, sizeof bytes);
  cr_assert_eq(tally_header_check(bytes, &mine, 2), TALLY_ERR_REMOTE);
  theirs.bytes = 1 << 30; /* an oversized message is refused before any payload is read */
  tally_header_encode(&theirs, bytes);
  cr_assert_eq(tally_header_check(bytes, &mine, 2), TALLY_ERR_REMOTE);
}

Test(wire, different_compression_is_mismatch) {
  struct tally_msg_header mine = sample_header(), theirs = mine;
  theirs.wire = TALLY_WIRE_BF16;
  unsigned char bytes[TALLY_WIRE_HEADER_BYTES];
  tally_header_encode(&theirs, bytes);
  cr_assert_eq(tally_header_check(bytes, &mine, 3), TALLY_ERR_MISMATCH);
  cr_assert(strstr(tally_error_message(), "rank 3 sends its data across hosts as bf16 but this rank as none") &&
                strstr(tally_error_message(), "TALLY_COMPRESS"),
            "%s", tally_error_message());
  bytes[11] = TALLY_NUM_WIRE_FORMATS; /* no such format: not a header */
  cr_assert_eq(tally_header_check(bytes, &mine, 3), TALLY_ERR_REMOTE);
}
