/* Reads and validates the TALLY_* environment variables and the launcher variables. */
#define _GNU_SOURCE
#include "config_env.h"

#include "transports/verbs/select.h"
#include "tuning/tuner.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"
#include "core/reduce.h"

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* Parses a whole decimal number in [lo, hi]; returns 0 or -1. */
static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* The directory the variable `var` names, when set, into out: it must exist (`otherwise` says what
 * unsetting it does). */
static tally_result_t copy_directory(const char *var, const char *otherwise, char *out, size_t outlen) {
  const char *v = env(var);
  if (!v) return TALLY_SUCCESS;
  struct stat st;
  if (strlen(v) >= outlen || stat(v, &st) != 0 || !S_ISDIR(st.st_mode))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "%s='%s' is not an existing directory (shorter than %zu characters): create it first, or "
                       "unset it to %s",
                       var, v, outlen, otherwise);
  snprintf(out, outlen, "%s", v);
  return TALLY_SUCCESS;
}

static tally_result_t copy_choice(const char *var, const char *value, const char *const *valid, char *out,
                                  size_t outlen) {
  for (const char *const *v = valid; *v; v++)
    if (!strcmp(value, *v)) {
      snprintf(out, outlen, "%s", value);
      return TALLY_SUCCESS;
    }
  char list[128] = "";
  for (const char *const *v = valid; *v; v++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", v == valid ? "" : ", ", *v);
  return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s='%s' is not supported; valid values: %s", var, value, list);
}

/* A byte count from 0 to 2^40 in `var`, else `fallback`; `meaning` says what it does, for the error. */
static tally_result_t load_bytes(const char *var, const char *meaning, size_t fallback, size_t *out) {
  const char *v = env(var);
  long n;
  *out = fallback;
  if (!v) return TALLY_SUCCESS;
  if (parse_long(v, 0, 1L << 40, &n))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s='%s' is not a whole number of bytes from 0 to 2^40 (%s)", var, v,
                       meaning);
  *out = (size_t)n;
  return TALLY_SUCCESS;
}

/* TALLY_IB_*: checked here, so that a typo fails at init on every build, with or without RDMA. */
static tally_result_t load_rdma_settings(struct tally_config *cfg) {
  const char *v = env("TALLY_IB_HCA");
  if (v) {
    struct verbs_hca_filter filter;
    if (strlen(v) >= sizeof cfg->ib_hca)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_IB_HCA is longer than %zu characters",
                         sizeof cfg->ib_hca - 1);
    TALLY_CHECK(verbs_hca_filter_parse(v, &filter));
    snprintf(cfg->ib_hca, sizeof cfg->ib_hca, "%s", v);
  }
  TALLY_CHECK(verbs_gid_index_parse(env("TALLY_IB_GID_INDEX"), &cfg->ib_gid_index));
  long mb = 1024;
  if ((v = env("TALLY_IB_REG_CACHE_MB")) && parse_long(v, 0, 1L << 24, &mb))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_IB_REG_CACHE_MB='%s' is not a whole number of MiB from 0 to 16777216", v);
  cfg->ib_reg_cache_bytes = (size_t)mb << 20;
  return TALLY_SUCCESS;
}

/* TALLY_COMPRESS and TALLY_COMPRESS_MIN_BYTES: the 16-bit wire format of FLOAT32 data between hosts. */
static tally_result_t load_compress_settings(struct tally_config *cfg) {
  const char *v = env("TALLY_COMPRESS");
  cfg->compress = TALLY_WIRE_EXACT;
  if (v && tally_compress_parse(v, &cfg->compress))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_COMPRESS='%s' is not none (the default: data crosses hosts as it is), bf16 or fp16 "
                       "(FLOAT32 sums, averages, allgathers and broadcasts cross hosts as 16-bit values, reduced in "
                       "fp32)",
                       v);
  return load_bytes("TALLY_COMPRESS_MIN_BYTES", "calls smaller than this, per rank, are not compressed",
                    TALLY_DEFAULT_COMPRESS_MIN_BYTES, &cfg->compress_min_bytes);
}

int tally_compress_parse(const char *text, int *format) {
  for (int f = 0; f < TALLY_NUM_WIRE_FORMATS; f++)
    if (!strcmp(text, tally_wire_format_name(f))) {
      *format = f;
      return 0;
    }
  return -1;
}

/* TALLY_TUNING_FILE and TALLY_TUNING_CACHE (used by calibrate.c): the file itself is read at init,
 * where a missing or malformed one fails with its path. */
static tally_result_t load_tuning_settings(struct tally_config *cfg) {
  const char *v = env("TALLY_TUNING_FILE");
  if (v) {
    if (strlen(v) >= sizeof cfg->tuning_file)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_TUNING_FILE is longer than %zu characters",
                         sizeof cfg->tuning_file - 1);
    snprintf(cfg->tuning_file, sizeof cfg->tuning_file, "%s", v);
  }
  cfg->tuning_cache = 1;
  if ((v = env("TALLY_TUNING_CACHE"))) {
    if (strcmp(v, "0") && strcmp(v, "1"))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_TUNING_CACHE='%s' is not 0 (never read or write the cache of measured link costs) or 1 "
                         "(the default: keep them under $XDG_CACHE_HOME/tally or ~/.cache/tally)",
                         v);
    cfg->tuning_cache = v[0] == '1';
  }
  return TALLY_SUCCESS;
}

tally_result_t tally_config_load(struct tally_config *cfg) {
  char err[256];
  if (tally_log_configure(env("TALLY_DEBUG"), env("TALLY_DEBUG_SUBSYS"), err, sizeof err) != 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s", err);

  memset(cfg, 0, sizeof *cfg);
  cfg->timeout_s = TALLY_DEFAULT_TIMEOUT_S;
  cfg->spin_us = 20;
  cfg->chunk_bytes = 512 * 1024;
  cfg->keepalive_s = TALLY_DEFAULT_KEEPALIVE_S;
  const char *v;
  if ((v = env("TALLY_TIMEOUT"))) {
    char *end;
    errno = 0;
    double t = strtod(v, &end);
    if (errno || end == v || *end || !(t > 0) || t > 1e7)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_TIMEOUT='%s' is not a positive number of seconds (for example 300 or 0.5)", v);
    cfg->timeout_s = t;
  }
  if ((v = env("TALLY_SOCKET_IFNAME"))) {
    if (strlen(v) >= sizeof cfg->ifname)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_SOCKET_IFNAME is longer than %zu characters",
                         sizeof cfg->ifname - 1);
    snprintf(cfg->ifname, sizeof cfg->ifname, "%s", v);
  }
  static const char *const transports[] = {"auto", "tcp", "shm", "verbs", NULL};
  TALLY_CHECK(copy_choice("TALLY_TRANSPORT", (v = env("TALLY_TRANSPORT")) ? v : "auto", transports, cfg->transport,
                          sizeof cfg->transport));
  TALLY_CHECK(tally_algo_spec_parse(env("TALLY_ALGO"), &cfg->algo));
  TALLY_CHECK(tally_tuner_check(&cfg->algo));
  long n;
  if ((v = env("TALLY_SPIN_US"))) {
    if (parse_long(v, 0, 1000000, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_SPIN_US='%s' is not a whole number from 0 to 1000000", v);
    cfg->spin_us = (int)n;
  }
  if ((v = env("TALLY_CHUNK_BYTES"))) {
    if (parse_long(v, 4096, 1L << 30, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "TALLY_CHUNK_BYTES='%s' is not a whole number from 4096 to 2^30",
                         v);
    cfg->chunk_bytes = (size_t)n;
  }
  if ((v = env("TALLY_STATS"))) {
    if (strcmp(v, "0") && strcmp(v, "1"))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_STATS='%s' is not 0 (the default: say nothing) or 1 (each rank prints its communicator's "
                         "counters to stderr when it destroys it)",
                         v);
    cfg->stats = v[0] == '1';
  }
  cfg->flight_records = 64;
  if ((v = env("TALLY_FLIGHT_RECORDS"))) {
    if (parse_long(v, 0, 65536, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_FLIGHT_RECORDS='%s' is not a whole number of calls from 0 (no flight recorder) to 65536",
                         v);
    cfg->flight_records = (int)n;
  }
  TALLY_CHECK(copy_directory("TALLY_FLIGHT_DIR", "log the flight records only", cfg->flight_dir,
                             sizeof cfg->flight_dir));
  if ((v = env("TALLY_FLIGHT_SIGNAL"))) {
    if (strcmp(v, "0") && strcmp(v, "1"))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_FLIGHT_SIGNAL='%s' is not 0 (the default: take no signal) or 1 (SIGUSR1 writes every "
                         "communicator's flight records)",
                         v);
    cfg->flight_signal = v[0] == '1';
  }
  TALLY_CHECK(copy_directory("TALLY_TRACE", "trace nothing", cfg->trace_dir, sizeof cfg->trace_dir));
  cfg->ring_channels = 1;
  if ((v = env("TALLY_RING_CHANNELS"))) {
    if (parse_long(v, 1, 2, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_RING_CHANNELS='%s' is not 1 (one ring, the default) or 2 (a second ring in the other "
                         "direction carries half of each large flat allreduce)",
                         v);
    cfg->ring_channels = (int)n;
  }
  cfg->staging_chunk_bytes = (size_t)TALLY_DEFAULT_STAGING_CHUNK_MB << 20;
  if ((v = env("TALLY_STAGING_CHUNK_MB"))) {
    if (parse_long(v, 0, 1024, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_STAGING_CHUNK_MB='%s' is not a whole number from 0 (calls on GPU communicators run "
                         "whole) to 1024 (MiB per pipelined piece)",
                         v);
    cfg->staging_chunk_bytes = (size_t)n << 20;
  }
  if ((v = env("TALLY_CUDAIPC_MB"))) {
    if (parse_long(v, 0, 4096, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_CUDAIPC_MB='%s' is not a whole number from 0 (off: stage device buffers through host "
                         "memory) to 4096 (MiB of GPU memory per rank for direct GPU-to-GPU collectives on one host)",
                         v);
    cfg->cudaipc_bytes = (size_t)n << 20;
  }
  TALLY_CHECK(load_bytes("TALLY_STREAM_BYTES",
                         "one-host calls whose ranks' outputs come to this many bytes together write them with "
                         "streaming stores; 0: never; unset: half the last-level cache",
                         TALLY_STREAM_BYTES_AUTO, &cfg->stream_bytes));
  TALLY_CHECK(load_bytes("TALLY_CACHE_BYTES",
                         "the last-level cache the one-host choices scale with; 0: the one hwloc reports", 0,
                         &cfg->cache_bytes));
  cfg->cores_apart = TALLY_CORES_APART_AUTO;
  if ((v = env("TALLY_CORES_APART")) && strcmp(v, "auto")) {
    if (strcmp(v, "0") && strcmp(v, "1"))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_CORES_APART='%s' is not auto (the default: two ranks on one host time the board's "
                         "meets when they start), 0 (their cores are near: the shared areas) or 1 (far apart: "
                         "allreduces up to a sixteenth of the last-level cache take the ring)",
                         v);
    cfg->cores_apart = v[0] == '1';
  }
  if ((v = env("TALLY_KEEPALIVE"))) {
    if (parse_long(v, 1, 3600, &n))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_KEEPALIVE='%s' is not a whole number of seconds from 1 to 3600", v);
    cfg->keepalive_s = (int)n;
  }
  TALLY_CHECK(load_tuning_settings(cfg));
  TALLY_CHECK(load_compress_settings(cfg));
  return load_rdma_settings(cfg);
}

int tally_split_host_port(const char *text, char *host, size_t hostlen, int *port) {
  const char *colon;
  const char *h = text;
  size_t hlen;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || close[1] != ':') return -1;
    h = text + 1;
    hlen = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (!colon) return -1;
    hlen = (size_t)(colon - text);
  }
  long p;
  if (hlen == 0 || hlen >= hostlen || parse_long(colon + 1, 1, 65535, &p)) return -1;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = (int)p;
  return 0;
}

int tally_parse_secret_hex(const char *hex, unsigned char secret[16]) {
  if (strlen(hex) != 32) return -1;
  for (int i = 0; i < 16; i++) {
    unsigned hi, lo;
    if (!isxdigit((unsigned char)hex[2 * i]) || !isxdigit((unsigned char)hex[2 * i + 1])) return -1;
    sscanf(hex + 2 * i, "%1x%1x", &hi, &lo);
    secret[i] = (unsigned char)(hi << 4 | lo);
  }
  return 0;
}

tally_result_t tally_launch_env_load(struct tally_launch_env *out) {
  static const char *const launchers[][2] = {{"TALLY_RANK", "TALLY_SIZE"},
                                             {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                             {"PMI_RANK", "PMI_SIZE"},
                                             {"SLURM_PROCID", "SLURM_NTASKS"},
                                             {"RANK", "WORLD_SIZE"}};
  memset(out, 0, sizeof *out);
  size_t i;
  for (i = 0; i < sizeof launchers / sizeof launchers[0]; i++)
    if (env(launchers[i][0])) break;
  if (i == sizeof launchers / sizeof launchers[0])
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "tally_comm_init_env: no rank in the environment; launch with tally-run, mpirun, srun or "
                       "torchrun, or set TALLY_RANK and TALLY_SIZE");
  const char *rank_var = launchers[i][0], *size_var = launchers[i][1];
  const char *rank_text = env(rank_var), *size_text = env(size_var);
  long size, rank;
  if (!size_text || parse_long(size_text, 1, 1 << 24, &size))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s is set but %s='%s' is not a positive rank count", rank_var,
                       size_var, size_text ? size_text : "");
  if (parse_long(rank_text, 0, size - 1, &rank))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s='%s' is not a rank from 0 to %ld (%s=%ld)", rank_var, rank_text,
                       size - 1, size_var, size);
  out->rank = (int)rank;
  out->size = (int)size;
  out->rank_var = rank_var;

  const char *root = env("TALLY_ROOT");
  if (root) {
    snprintf(out->root, sizeof out->root, "%s", root);
  } else if (env("MASTER_ADDR") && env("MASTER_PORT")) {
    snprintf(out->root, sizeof out->root, "%s:%s", env("MASTER_ADDR"), env("MASTER_PORT"));
  } else {
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "tally_comm_init_env: set TALLY_ROOT=host:port (the address rank 0 listens on) or "
                       "MASTER_ADDR and MASTER_PORT");
  }
  char host[256];
  int port;
  if (tally_split_host_port(out->root, host, sizeof host, &port))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "root address '%s' is not host:port (TALLY_ROOT, or MASTER_ADDR and MASTER_PORT)", out->root);
  const char *secret = env("TALLY_SECRET");
  if (secret) {
    if (tally_parse_secret_hex(secret, out->secret))
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_SECRET must be 32 hexadecimal digits (128 bits), for example from `openssl rand -hex "
                         "16`");
    out->has_secret = 1;
  }
  return TALLY_SUCCESS;
}
