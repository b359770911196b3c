/* Which weights of model.h5 the `epr` stage evaluates ([epr] weights).
 *
 * Owns: the choice between the trained parameters (/params) and their exponential moving average
 * (/optimizer/ema, written when [train] ema > 0). "auto" takes the EMA when the file holds one,
 * as samplers and evaluations of EMA-trained networks usually do; "ema" requires it; "raw" never
 * uses it. Rank 0 looks into the file; the choice is broadcast and logged.
 */
#include "sgm/epr.h"
#include "sgm/core.h"

#include <hdf5.h>
#include <string.h>
#include <unistd.h>

/* 1 if path is an HDF5 file with /optimizer/ema, else 0 (also when it cannot be opened: the load
 * then reports why). Serial, rank 0. */
static int file_has_ema(const char *path)
{
  int has = 0;
  H5E_auto2_t fn;
  void *data;
  if (access(path, R_OK) != 0) return 0;
  H5Eget_auto2(H5E_DEFAULT, &fn, &data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f >= 0) {
    has = H5Lexists(f, "optimizer", H5P_DEFAULT) > 0 &&
          H5Lexists(f, "optimizer/ema", H5P_DEFAULT) > 0;
    H5Fclose(f);
  }
  H5Eset_auto2(H5E_DEFAULT, fn, data);
  return has;
}

PetscErrorCode sgm_epr_load_weights(MPI_Comm comm, SgmConfig cfg, const char *path, SgmParams *p,
                                    int narch, const SgmNNAttr *arch)
{
  const char *mode;
  PetscMPIInt rank;
  int ema = 0;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "epr.weights", &mode));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (!strcmp(mode, "ema"))
    ema = 1;
  else if (!strcmp(mode, "auto")) {
    if (rank == 0) ema = file_has_ema(path);
    PetscCallMPI(MPI_Bcast(&ema, 1, MPI_INT, 0, comm));
  }
  if (ema)
    PetscCall(sgm_nn_load_ema(comm, path, p, narch, arch));
  else
    PetscCall(sgm_nn_load(comm, path, p, narch, arch, NULL));
  PetscCall(sgm_log(comm, "epr: %s weights of %s\n", ema ? "EMA" : "trained (raw)", path));
  PetscFunctionReturn(PETSC_SUCCESS);
}
