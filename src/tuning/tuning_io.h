/* The files behind the link costs (calibrate.c): reading a tuning file into cost parameters, where
 * the cache lives, and writing a file so that a reader finds the old one or the new one whole. */
#ifndef TALLY_TUNING_IO_H
#define TALLY_TUNING_IO_H

#include <stdio.h>

#include "tuning_file.h"

/* The whole of a small text file (at most 1 MiB), NUL-terminated (free it); NULL with errno set
 * when it cannot be read (EFBIG when it is larger). */
char *tally_tuning_read_text(const char *path);

/* Parses `text` (the file at `path`) and applies what it gives over costs[TALLY_NUM_LINK_CLASSES],
 * which are unchanged on failure (tally_tuning_parse's error). */
tally_result_t tally_tuning_apply_text(const char *text, const char *path, struct tally_cost_params *costs);

/* $XDG_CACHE_HOME/tally, or ~/.cache/tally (a relative XDG_CACHE_HOME is ignored, as the XDG spec
 * says); 0 when there is neither. */
int tally_tuning_cache_dir(char *buf, size_t len);

/* Creates the directories above `path` (mode 0700, as the XDG spec asks), writes the file through
 * `write(f, ctx)` into a file of this process's own and renames it over `path`. 0, or -1 with errno
 * set (and nothing left behind). */
int tally_tuning_write_atomically(const char *path, void (*write)(FILE *f, const void *ctx), const void *ctx);

#endif
