/* The list of everything the program can do: every input table and every stage, registered once.
 * A new module adds its lines here and nowhere else. */
#include "sgm/app.h"
#include "sgm/schema.h"

PetscErrorCode sgm_register_all(void)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_schema_register(&sgm_table_run));
  PetscCall(sgm_schema_register(&sgm_table_petsc));
  PetscFunctionReturn(PETSC_SUCCESS);
}
