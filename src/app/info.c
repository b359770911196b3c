/* --help and --version. The version line names every library the binary was built and runs
 * with, so a user's bug report says which PETSc/HDF5/FFTW/OpenBLAS produced a number. */
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/version_config.h"

#include <cblas.h>
#include <fftw3.h>
#include <hdf5.h>

char *openblas_get_config(void); /* OpenBLAS extension, not in cblas.h on every build */

PetscErrorCode sgm_print_help(MPI_Comm comm)
{
  int n;
  const char *const *names, *const *docs;
  PetscFunctionBeginUser;
  PetscCall(sgm_stage_list(&n, &names, &docs));
  PetscCall(sgm_log(
      comm, "usage: sgm_hpc [--check] [--set table.key=value]... [--restart FILE] input.toml "
            "[PETSc options]\n"
            "       sgm_hpc --help | --version\n\n"
            "  --check           validate input.toml, print the resolved configuration "
            "(every key, its value, set or default) and exit\n"
            "  --set t.k=v       override key k of table [t] (value in TOML syntax; a bare "
            "word is a string)\n"
            "  --restart FILE    continue from a checkpoint written by an earlier run\n"
            "  --input-doc       print the input reference (docs/input.md) of this build\n"
            "  PETSc options     e.g. -log_view, -help; also settable in a [petsc] table\n\n"
            "stages ([run] stages = [...], run in order):\n"));
  for (int i = 0; i < n; i++) PetscCall(sgm_log(comm, "  %-10s %s\n", names[i], docs[i]));
  PetscCall(sgm_log(comm, "\nEvery input key, its type, default and unit: docs/input.md\n"
                          "Exit status: 0 success, 2 invalid input (nothing written), 1 other "
                          "errors.\n"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_print_version(MPI_Comm comm)
{
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING], petsc[256];
  int len;
  unsigned h5maj, h5min, h5rel;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Get_library_version(mpi, &len));
  for (int i = 0; i < len; i++)
    if (mpi[i] == '\n' || mpi[i] == ',') {
      mpi[i] = '\0';
      break;
    }
  PetscCall(PetscGetVersion(petsc, sizeof petsc));
  SgmCallH5(H5get_libversion(&h5maj, &h5min, &h5rel));
  PetscCall(sgm_log(comm,
                    "sgm_hpc %s\n  MPI      %s\n  PETSc    %s (built against %s)\n  SLEPc    %s\n"
                    "  HDF5     %u.%u.%u (parallel)\n  FFTW     %s\n  OpenBLAS %s\n",
                    sgm_version(), mpi, petsc, SGM_PETSC_PC_VERSION, SGM_SLEPC_PC_VERSION, h5maj,
                    h5min, h5rel, fftw_version, openblas_get_config()));
  PetscFunctionReturn(PETSC_SUCCESS);
}
