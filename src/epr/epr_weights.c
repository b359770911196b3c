/* Which weights of model.h5 the `epr` stage evaluates ([epr] weights).
 *
 * Owns: the choice between the trained parameters (/params) and their exponential moving average
 * (/optimizer/ema, written when [train] ema > 0). "auto" takes the EMA when the file holds one,
 * as samplers and evaluations of EMA-trained networks usually do; "ema" requires it; "raw" never
 * uses it. Rank 0 looks into the file; the choice is broadcast and logged.
 */
#include "sgm/epr.h"
#include "sgm/core.h"

#include <string.h>

PetscErrorCode sgm_epr_load_weights(MPI_Comm comm, SgmConfig cfg, const char *path, SgmParams *p,
                                    int narch, const SgmNNAttr *arch)
{
  const char *mode;
  int ema = 0;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "epr.weights", &mode));
  if (!strcmp(mode, "auto"))
    PetscCall(sgm_nn_load_auto(comm, path, p, narch, arch, &ema));
  else if (!strcmp(mode, "ema")) {
    ema = 1;
    PetscCall(sgm_nn_load_ema(comm, path, p, narch, arch));
  } else
    PetscCall(sgm_nn_load(comm, path, p, narch, arch, NULL));
  PetscCall(sgm_log(comm, "epr: %s weights of %s\n", ema ? "EMA" : "trained (raw)", path));
  PetscFunctionReturn(PETSC_SUCCESS);
}
