/* Reading the TALLY_* environment into struct tally_config (core/config.h), validated once per
 * communicator: a malformed or unknown value is an error with a message, never silently ignored.
 * Validation asks the layers that own a setting (the verbs transport's device filter, the tuner's
 * algorithms), which is why this lives at the API entry. */
#ifndef TALLY_CONFIG_ENV_H
#define TALLY_CONFIG_ENV_H

#include "core/config.h"
#include "tally.h"

tally_result_t tally_config_load(struct tally_config *cfg);
/* "none", "bf16" or "fp16" (TALLY_COMPRESS's values) into an enum tally_wire_format; 0, or -1. */
int tally_compress_parse(const char *text, int *format);

/* Where tally_comm_init_env finds its job: rank and size from the first launcher whose variables
 * are set, the root's host:port, and the secret (absent: unauthenticated). */
struct tally_launch_env {
  int rank, size;
  const char *rank_var; /* which variable the rank came from, for messages */
  char root[300];       /* host:port */
  unsigned char secret[16];
  int has_secret;
};
tally_result_t tally_launch_env_load(struct tally_launch_env *env);

/* Parses "host:port" or "[v6addr]:port" into its parts; returns 0 or -1. */
int tally_split_host_port(const char *text, char *host, size_t hostlen, int *port);
/* Parses 32 hex digits into 16 bytes; returns 0 or -1. */
int tally_parse_secret_hex(const char *hex, unsigned char secret[16]);

#endif
