/* Replays a fuzz corpus without libFuzzer: a main that feeds every file of the directories named on
 * the command line to the fuzz target it is linked with (LLVMFuzzerTestOneInput), so that the test
 * suite checks the regression corpus with any compiler, plainly and under the sanitizers.
 *
 *   replay_wire fuzz/corpus/wire [more directories...]
 *
 * Fails when a directory is missing, unreadable or holds no input; a broken invariant aborts. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_input.h"

/* Reads the whole file into a buffer of exactly its size (so that ASan catches reads past it). */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    fprintf(stderr, "replay: cannot stat %s: %s\n", path, strerror(errno));
    fclose(f);
    return -1;
  }
  size_t size = (size_t)st.st_size;
  uint8_t *data = malloc(size ? size : 1);
  if (!data || fread(data, 1, size, f) != size) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    free(data);
    fclose(f);
    return -1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(data, size);
  free(data);
  return 0;
}

/* Runs every regular file in `dir`; returns how many, or -1 on an error. */
static long run_directory(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "replay: cannot open the corpus directory %s: %s; pass fuzz/corpus/<target>\n", dir,
            strerror(errno));
    return -1;
  }
  long ran = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    char path[4096];
    struct stat st;
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (run_file(path) != 0) {
      closedir(d);
      return -1;
    }
    ran++;
  }
  closedir(d);
  return ran;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIRECTORY...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    long ran = run_directory(argv[i]);
    if (ran < 0) return 1;
    if (ran == 0) {
      fprintf(stderr, "replay: %s holds no inputs; a corpus directory needs at least one file\n", argv[i]);
      return 1;
    }
    printf("replay: ran %ld inputs from %s\n", ran, argv[i]);
  }
  return 0;
}
