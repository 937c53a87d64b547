/* The files behind the link costs (tuning_io.h). */
#define _GNU_SOURCE
#include "tuning_io.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

enum { MAX_FILE_BYTES = 1 << 20 }; /* a tuning file is a few lines */

char *tally_tuning_read_text(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return NULL;
  char *text = malloc(MAX_FILE_BYTES + 1);
  size_t n = text ? fread(text, 1, MAX_FILE_BYTES + 1, f) : 0;
  int err = !text ? ENOMEM : ferror(f) ? (errno ? errno : EIO) : n > MAX_FILE_BYTES ? EFBIG : 0;
  fclose(f);
  if (err) {
    free(text);
    errno = err;
    return NULL;
  }
  text[n] = '\0';
  return text;
}

tally_result_t tally_tuning_apply_text(const char *text, const char *path, struct tally_cost_params *costs) {
  struct tally_tuning t;
  TALLY_CHECK(tally_tuning_parse(text, path, &t));
  for (int k = 0; k < TALLY_NUM_LINK_CLASSES; k++) tally_tuning_apply(&t, (enum tally_link_class)k, &costs[k]);
  return TALLY_SUCCESS;
}

int tally_tuning_cache_dir(char *buf, size_t len) {
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int n = xdg && xdg[0] == '/'     ? snprintf(buf, len, "%s/tally", xdg)
          : home && home[0] == '/' ? snprintf(buf, len, "%s/.cache/tally", home)
                                   : -1;
  return n > 0 && (size_t)n < len;
}

/* mkdir -p for the directory part of `path`. */
static int make_parent_dirs(const char *path) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) return 0;
  *slash = '\0';
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char was = *p;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
    if (!(*p = was)) return 0;
  }
}

int tally_tuning_write_atomically(const char *path, void (*write)(FILE *f, const void *ctx), const void *ctx) {
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
  if (make_parent_dirs(path)) return -1;
  FILE *f = fopen(tmp, "we");
  if (!f) return -1;
  write(f, ctx);
  int err = ferror(f) ? (errno ? errno : EIO) : 0;
  if (fclose(f) && !err) err = errno;
  if (!err && rename(tmp, path)) err = errno;
  if (!err) return 0;
  unlink(tmp);
  errno = err;
  return -1;
}
