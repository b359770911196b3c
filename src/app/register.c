/* The list of everything the program can do: every input table and every stage, registered once.
 * A new module adds its lines here and nowhere else. */
#include "sgm/app.h"
#include "sgm/schema.h"
#include "sgm/epr.h"
#include "sgm/observables.h"
#include "sgm/simulate.h"
#include "sgm/train.h"

PetscErrorCode sgm_register_all(void)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_schema_register(&sgm_table_run));
  PetscCall(sgm_schema_register(&sgm_table_petsc));
  PetscCall(sgm_schema_register(&sgm_table_system));
  PetscCall(sgm_schema_register(&sgm_table_simulate));
  PetscCall(sgm_schema_register(&sgm_table_analysis));
  PetscCall(sgm_schema_register(&sgm_table_model));
  PetscCall(sgm_schema_register(&sgm_table_train));
  PetscCall(sgm_schema_register_check("train", sgm_train_config_check));
  PetscCall(sgm_schema_register(&sgm_table_epr));
  PetscCall(sgm_schema_register_check("epr", sgm_epr_config_check));
  PetscCall(sgm_stage_register("simulate", sgm_stage_simulate,
                               "integrate the system's SDE: equilibration, then frames to "
                               "trajectory.h5 (H5MD) with checkpoints"));
  PetscCall(sgm_stage_register("train", sgm_stage_train,
                               "fit the per-particle score network on trajectory frames (or "
                               "online); writes model.h5 and train_log.h5"));
  PetscCall(sgm_stage_register("epr", sgm_stage_epr,
                               "entropy production: score, velocity field, per-particle EPR, "
                               "diagnostics, spatial maps (epr.h5, fields.h5 + XDMF)"));
  PetscFunctionReturn(PETSC_SUCCESS);
}
