/* The `train` stage: offline, data-parallel training of the per-particle score network on the
 * frames of trajectory.h5 (paper 002, App. F.6-F.9).
 *
 * Owns: the [model] and [train] tables, the minibatch and frame selection (pure functions of
 * (seed, step, global id), so a batch does not depend on the number of ranks), the parameter hash
 * that proves every rank holds the same model, and the stage itself: per step one frame, windows,
 * loss and gradient, one MPI_Allreduce of the flat gradient slab, the same optimiser step on
 * every rank; progress, the loss curve (train_log.h5), metrics, checkpoints and restart.
 * Register with
 *   sgm_schema_register(&sgm_table_model); sgm_schema_register(&sgm_table_train);
 *   sgm_schema_register_check("train", sgm_train_config_check);
 *   sgm_stage_register("train", sgm_stage_train, "...");
 */
#ifndef SGM_TRAIN_H
#define SGM_TRAIN_H

#include "sgm/nn_params.h"
#include "sgm/run.h"
#include "sgm/schema.h"

#include <stdint.h>

extern const SgmTableSpec sgm_table_model, sgm_table_train;

/// Cross-key checks of [model] and [train] when `train` is among [run] stages (d_e even, heads
/// divide d_e, batch <= N, K < N, denoising s_x needs noise_x). Register with
/// sgm_schema_register_check("train", sgm_train_config_check). Not collective.
PetscErrorCode sgm_train_config_check(SgmConfig cfg, SgmProblems pb);

/// Pure. 1 when particle `id` (< n) is in the minibatch of `step`: each epoch of floor(n/batch)
/// steps visits a pseudo-random permutation of the ids (a Feistel bijection keyed by (seed,
/// SGM_RNG_BATCH, epoch), with cycle walking onto [0, n)) in consecutive slices of `batch`, so
/// every step has exactly `batch` particles and no id repeats within an epoch. 1 <= batch <= n.
int sgm_train_in_batch(uint64_t seed, int64_t step, uint64_t id, int64_t n, int64_t batch);
/// Pure. Frame used at `step`, uniform on [0, nframes) from (seed, SGM_RNG_BATCH, step).
int64_t sgm_train_frame(uint64_t seed, int64_t step, int64_t nframes);
/// Pure. 64-bit FNV-1a of the n floats' bytes.
uint64_t sgm_train_param_hash(const float *p, size_t n);
/// Collective: the parameter hash on every rank; SGM_ERR... (PETSC_ERR_PLIB) when two ranks
/// differ (MPI_Allreduce MIN and MAX). *hash (may be NULL) receives it.
PetscErrorCode sgm_train_check_params(MPI_Comm comm, const SgmParams *p, uint64_t *hash);
/// Collective: the `train` stage.
PetscErrorCode sgm_stage_train(SgmRun *run);

#endif
