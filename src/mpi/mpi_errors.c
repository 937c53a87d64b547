/* libtally_mpi's errors: a Tally failure follows the MPI communicator's error handler (fatal:
 * Tally's message and MPI_Abort; otherwise an MPI error code, of the error class "Tally", whose
 * MPI_Error_string is Tally's message), and the check at MPI_Init that the program runs the MPI
 * library this shim was built against. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpi_shim.h"

#if defined(OMPI_MAJOR_VERSION)
#define SHIM_BUILT_FOR "Open MPI"
#elif defined(MPICH_VERSION)
#define SHIM_BUILT_FOR "MPICH"
#else
#error "libtally_mpi knows how to check for Open MPI and MPICH only: add this MPI's name to SHIM_BUILT_FOR"
#endif

void shim_check_mpi_library(void) {
  /* Room for any MPI's string: the running library may not be the one whose mpi.h sized
   * MPI_MAX_LIBRARY_VERSION_STRING here (MPICH's is 8192, Open MPI's 256). */
  static char version[1 << 15];
  int len = 0;
  if (PMPI_Get_library_version(version, &len) != MPI_SUCCESS) return;
  version[sizeof version - 1] = '\0';
  if (strstr(version, SHIM_BUILT_FOR)) return;
  fprintf(stderr,
          "libtally_mpi: this program runs the MPI library \"%.*s\", but this libtally_mpi was built against %s, "
          "whose handles and constants differ. Use the one built for this program's MPI (libtally_mpi.so for the "
          "MPI found at build time, libtally_mpich.so for MPICH; README: MPI programs), or run the program "
          "without it (no LD_PRELOAD, no -ltally_mpi).\n",
          (int)strcspn(version, "\n,"), version, SHIM_BUILT_FOR);
  exit(1);
}

static pthread_mutex_t codes_lock = PTHREAD_MUTEX_INITIALIZER;
static int tally_error_class = -1;

/* A fresh MPI error code in the class "Tally" whose string is `message`; MPI_ERR_OTHER if MPI
 * has no room for one. */
static int error_code(const char *message) {
  int code = MPI_ERR_OTHER;
  pthread_mutex_lock(&codes_lock);
  if (tally_error_class < 0 && PMPI_Add_error_class(&tally_error_class) == MPI_SUCCESS)
    PMPI_Add_error_string(tally_error_class, "Tally: a collective run by libtally_mpi failed");
  if (tally_error_class >= 0 && PMPI_Add_error_code(tally_error_class, &code) == MPI_SUCCESS)
    PMPI_Add_error_string(code, message);
  pthread_mutex_unlock(&codes_lock);
  return code;
}

int shim_result(MPI_Comm comm, enum shim_coll coll, tally_result_t r, tally_comm_t tally) {
  if (r == TALLY_SUCCESS) return MPI_SUCCESS;
  char message[1200];
  snprintf(message, sizeof message, "%s through Tally failed (%s): %s", shim_coll_name(coll), tally_result_string(r),
           tally_comm_last_error(tally));
  MPI_Errhandler handler = MPI_ERRHANDLER_NULL;
  PMPI_Comm_get_errhandler(comm, &handler);
  int fatal = handler == MPI_ERRORS_ARE_FATAL;
  if (handler != MPI_ERRHANDLER_NULL) PMPI_Errhandler_free(&handler);
  if (fatal) {
    fprintf(stderr, "libtally_mpi: %s\n", message);
    PMPI_Abort(comm, MPI_ERR_OTHER);
  }
  /* MPI_Error_string's buffer is MPI_MAX_ERROR_STRING long: the message is cut to fit. */
  message[MPI_MAX_ERROR_STRING - 1] = '\0';
  int code = error_code(message);
  PMPI_Comm_call_errhandler(comm, code); /* a user's handler runs; MPI_ERRORS_RETURN does nothing */
  return code;
}
