/* perf_plot.c: tally-perf --plot: after the run, the -J file (and --plot-with's files) drawn as busbw
 * against size by `tally-trace perfplot` (tools/tally-trace, matplotlib), which this file finds and
 * runs; the drawing itself lives there, beside the traces' plots. */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"

void perf_plot_default_json(struct options *o) {
  if (o->json) return;
  const char *dot = strrchr(o->plot, '.'), *slash = strrchr(o->plot, '/');
  int stem = dot && (!slash || dot > slash) ? (int)(dot - o->plot) : (int)strlen(o->plot);
  snprintf(o->plot_json, sizeof o->plot_json, "%.*s.json", stem, o->plot);
  o->json = o->plot_json;
}

/* tally-trace beside this program (the build tree, or the installed bindir), else "tally-trace" on PATH. */
static void find_tool(char *path, size_t len) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    snprintf(path, len, "%s/tally-trace", dirname(self));
    if (access(path, X_OK) == 0) return;
  }
  snprintf(path, len, "tally-trace");
}

int perf_plot(const struct options *o, int status) {
  if (!o->plot) return status;
  if (o->fork_ranks <= 1 && launcher_env_present() && env_rank_guess() != 0) return status; /* rank 0 draws */
  if (status != 0) {
    fprintf(stderr, "tally-perf: --plot: not drawing %s, the run failed\n", o->plot);
    return status;
  }
  char tool[4200];
  find_tool(tool, sizeof tool);
  const char *argv[PERF_PLOT_MAX_WITH + 8];
  int argc = 0;
  argv[argc++] = tool;
  argv[argc++] = "perfplot";
  argv[argc++] = o->json;
  for (int i = 0; i < o->nplot_with; i++) argv[argc++] = o->plot_with[i];
  argv[argc++] = "-o";
  argv[argc++] = o->plot;
  argv[argc] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "tally-perf: --plot: cannot start %s: fork: %s\n", tool, strerror(errno));
    return 1;
  }
  if (pid == 0) {
    execvp(tool, (char *const *)argv);
    fprintf(stderr,
            "tally-perf: --plot: cannot run %s: %s; install Tally's tools (tally-trace sits beside tally-perf) "
            "or put tally-trace on PATH\n",
            tool, strerror(errno));
    _exit(127);
  }
  int ws;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
    fprintf(stderr, "tally-perf: --plot: %s perfplot failed (the results are in %s)\n", tool, o->json);
    return 1;
  }
  printf("# busbw plot: %s (data: %s)\n", o->plot, o->json);
  return 0;
}
