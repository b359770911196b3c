/* Core conventions shared by every module: error handling, logging, exit codes.
 *
 * Orchestration code returns PetscErrorCode and wraps every call in PetscCall/PetscCallMPI.
 * HDF5 returns negative values on failure; SgmCallH5 turns that into a PETSc error with the
 * call's text so the stack trace names the failing HDF5 call. User errors (bad input, missing
 * files) use SGM_ERR_USER so that main() exits with status 2, as the design requires.
 */
#ifndef SGM_CORE_H
#define SGM_CORE_H

#include <petscsys.h>

/// PETSc error code used for errors the user caused (bad input, unreadable file): exit status 2.
#define SGM_ERR_USER PETSC_ERR_USER_INPUT

/// Wraps an HDF5 call (herr_t or hid_t): a negative return becomes a PETSc error.
#define SgmCallH5(call)                                                                            \
  do {                                                                                             \
    if ((call) < 0) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_LIB, "HDF5 call failed: %s", #call);        \
  } while (0)

/// Like SgmCallH5 for calls that return a handle: assigns it, then checks it.
#define SgmCallH5H(lhs, call)                                                                      \
  do {                                                                                             \
    (lhs) = (call);                                                                                \
    if ((lhs) < 0) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_LIB, "HDF5 call failed: %s", #call);         \
  } while (0)

/// Logs on rank 0 of comm (collective-free: other ranks return at once).
PetscErrorCode sgm_log(MPI_Comm comm, const char *fmt, ...) PETSC_ATTRIBUTE_FORMAT(2, 3);

/// Project version string ("0.1.0").
const char *sgm_version(void);

#endif
