/* The `simulate` stage: integrates the [system] with the AOUP engine, writes trajectory.h5
 * (H5MD) + trajectory.xdmf and checkpoint.h5, and restarts from a checkpoint bit for bit.
 * Registration (src/app/register.c):
 *   sgm_schema_register(&sgm_table_system); sgm_schema_register(&sgm_table_simulate);
 *   sgm_stage_register("simulate", sgm_stage_simulate, "...");
 */
#ifndef SGM_SIMULATE_H
#define SGM_SIMULATE_H

#include "sgm/aoup.h"
#include "sgm/run.h"
#include "sgm/schema.h"

extern const SgmTableSpec sgm_table_system, sgm_table_simulate;

/// Collective: the `simulate` stage.
PetscErrorCode sgm_stage_simulate(SgmRun *run);

/// Not collective: the box edge, [system] L, or when unset the edge that holds n particles of
/// radius a at packing fraction phi (d = 2: pi n a^2 / L^2 = phi; d = 1: 2 n a / L = phi).
PetscErrorCode sgm_system_box_edge(SgmConfig cfg, double *L);
/// Not collective: engine parameters from [system] and [simulate] (L resolved from phi).
PetscErrorCode sgm_aoup_params_from_config(SgmConfig cfg, uint64_t seed, SgmAoupParams *p);

/// Particle-state checkpoint (checkpoint.h5): header, then x and g [N][d] in global-id order.
typedef struct {
  int64_t step;    /* dynamics steps done */
  int64_t nframes; /* trajectory frames written */
  uint64_t seed;
  int dim;
  int64_t n;
} SgmCheckpointHeader;

/// Collective: writes path (this rank holds rows [start, start+count)). `config` may be NULL.
PetscErrorCode sgm_checkpoint_write(MPI_Comm comm, const char *path, const SgmCheckpointHeader *h,
                                    int64_t start, int64_t count, const double *x, const double *g,
                                    const char *config);
/// Collective: reads the header and every row on every rank (*x, *g freed with PetscFree).
PetscErrorCode sgm_checkpoint_read(MPI_Comm comm, const char *path, SgmCheckpointHeader *h,
                                   double **x, double **g);

#endif
