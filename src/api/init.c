/* The ways to start a communicator: a unique id made by tally_get_unique_id and passed out of
 * band, or the environment a launcher (tally-run, mpirun, srun, torchrun) provides. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap/auth.h"
#include "bootstrap/bootstrap.h"
#include "bootstrap/uid.h"
#include "comm/comm.h"
#include "communicator.h"
#include "config_env.h"
#include "core/error.h"
#include "core/log.h"

/* Listens on `addr` and starts the bootstrap root there. */
static tally_result_t start_root(struct tally_job_id *job, double timeout_s) {
  int fd;
  TALLY_CHECK(tally_net_listen(&job->root, &fd));
  return tally_bootstrap_root_start(job, fd, timeout_s);
}

tally_result_t tally_get_unique_id(tally_unique_id_t *id) {
  if (!id) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_get_unique_id: id is NULL");
  struct tally_config cfg;
  TALLY_CHECK(tally_config_load(&cfg));
  struct tally_job_id job = {.authenticated = 1};
  tally_random_bytes(job.secret, sizeof job.secret);
  TALLY_CHECK(tally_net_pick_address(cfg.ifname, &job.root));
  TALLY_CHECK(start_root(&job, cfg.timeout_s));
  tally_uid_encode(&job, id);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_init_rank(tally_comm_t *comm, int nranks, tally_unique_id_t id, int rank) {
  return tally_comm_init_rank_config(comm, nranks, id, rank, NULL);
}

tally_result_t tally_comm_init_rank_config(tally_comm_t *comm, int nranks, tally_unique_id_t id, int rank,
                                           const tally_config_t *config) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_init_rank: comm is NULL");
  *comm = NULL;
  if (nranks <= 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_init_rank: nranks is %d; it must be at least 1", nranks);
  if (rank < 0 || rank >= nranks)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_init_rank: rank %d is outside 0..%d (nranks %d)", rank,
                       nranks - 1, nranks);
  if (config && config->struct_size != sizeof *config && config->struct_size != TALLY_CONFIG_V1_SIZE)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "tally_comm_init_rank_config: config.struct_size is %zu, not %zu (or %zu, the first "
                       "version's): start from TALLY_CONFIG_INITIALIZER",
                       config->struct_size, sizeof *config, (size_t)TALLY_CONFIG_V1_SIZE);
  tally_config_t settings = TALLY_CONFIG_INITIALIZER; /* the fields an older caller does not have keep defaults */
  if (config) memcpy(&settings, config, config->struct_size);
  settings.struct_size = sizeof settings;
  if (!(settings.timeout_s >= 0 && settings.timeout_s <= 1e7))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "tally_comm_init_rank_config: timeout_s %g is not a number of seconds from 0 (use "
                       "TALLY_TIMEOUT) to 1e7",
                       settings.timeout_s);
  if ((unsigned)settings.compress > TALLY_COMPRESS_FP16)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "tally_comm_init_rank_config: compress is %d, not one of TALLY_COMPRESS_DEFAULT, _NONE, _BF16 "
                       "or _FP16",
                       (int)settings.compress);
  if (settings.compress_min_bytes < -1)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "tally_comm_init_rank_config: compress_min_bytes is %lld; it is a number of bytes, or -1 for "
                       "TALLY_COMPRESS_MIN_BYTES",
                       settings.compress_min_bytes);
  struct tally_job_id job;
  TALLY_CHECK(tally_uid_decode(&id, &job));
  return tally_comm_create(comm, nranks, rank, &job, &settings);
}

tally_result_t tally_comm_init_env(tally_comm_t *comm) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_init_env: comm is NULL");
  *comm = NULL;
  struct tally_config cfg;
  TALLY_CHECK(tally_config_load(&cfg));
  struct tally_launch_env env;
  TALLY_CHECK(tally_launch_env_load(&env));
  struct tally_job_id job = {.authenticated = env.has_secret};
  memcpy(job.secret, env.secret, sizeof job.secret);
  char host[256];
  int port;
  tally_split_host_port(env.root, host, sizeof host, &port); /* validated by tally_launch_env_load */
  TALLY_CHECK(tally_net_resolve(host, port, &job.root));
  if (!env.has_secret) {
    static atomic_flag warned = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&warned))
      TLOG_WARN(TALLY_SUBSYS_INIT,
                "TALLY_SECRET is not set: this job runs unauthenticated, so anyone who can reach %s can join it; "
                "tally-run sets a secret, or export TALLY_SECRET=$(openssl rand -hex 16) on every rank",
                env.root);
  }
  if (env.rank == 0) {
    tally_result_t r = start_root(&job, cfg.timeout_s);
    if (r != TALLY_SUCCESS)
      return TALLY_ERROR(r, "rank 0 hosts the bootstrap root at %s and could not start it: %s", env.root,
                         tally_error_message());
  }
  return tally_comm_create(comm, env.size, env.rank, &job, NULL);
}
