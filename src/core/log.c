/* Rank-0 logging and the project version. Logging goes to stdout through PetscPrintf so that
 * output order follows PETSc's own messages (-log_view, -help). */
#include "sgm/core.h"
#include "sgm/version_config.h"

#include <stdarg.h>

PetscErrorCode sgm_log(MPI_Comm comm, const char *fmt, ...)
{
  int rank;
  va_list ap;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    va_start(ap, fmt);
    PetscCall(PetscVFPrintf(PETSC_STDOUT, fmt, ap));
    va_end(ap);
    fflush(stdout);
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

const char *sgm_version(void)
{
  return SGM_VERSION;
}
