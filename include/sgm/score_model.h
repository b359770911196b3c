/* The learned score provider "model" and the model construction it shares with `train`.
 *
 * Owns: the declaration of the [model]-table -> local transformer construction (implemented in
 * src/score/train.c, used by the train stage and by the "model" score provider, so that the
 * network evaluated by `epr` is built exactly as it was trained and its model.h5 architecture
 * attributes match), and the create function of the "model" provider (src/epr/score_model.c).
 */
#ifndef SGM_SCORE_MODEL_H
#define SGM_SCORE_MODEL_H

#include "sgm/aoup.h"
#include "sgm/config.h"
#include "sgm/nn_io.h"
#include "sgm/nn_models.h"
#include "sgm/score_provider.h"

/// A local transformer built from the [model] table.
typedef struct {
  SgmNnTransformer m;         /* owned by the caller (sgm_nn_transformer_destroy) */
  SgmNnTransformerConfig cfg; /* its configuration */
  int K, max_batch;           /* window size and the largest batch of centres */
  int learn_x;                /* 1: output (s_x, s_g) (2 dim), 0: s_g only (dim) */
  int boltzmann;              /* 1: s_g = -g_c + network output (App. F.3.2) */
  SgmNNAttr arch[16];         /* the architecture attributes of model.h5 */
  int narch;
} SgmScoreModelSpec;

/// Builds the local transformer of the [model] keys for dimension `dim` (weights initialised
/// from seed; max_tan = dim, enough for the divergences). Not collective (errors on comm).
PetscErrorCode sgm_score_model_from_config(MPI_Comm comm, SgmConfig cfg, int dim, uint64_t seed,
                                           SgmScoreModelSpec *ms);
/// Initial halo width of the windows: [model] window_width, or 1.5 times the radius holding K + 1
/// particles at the mean density when it is 0. Not collective.
PetscErrorCode sgm_score_model_window_width(SgmConfig cfg, const SgmAoupParams *ap, int K,
                                            double *width);
/// Create function of the "model" score provider (registered as "model"). Collective.
PetscErrorCode sgm_score_model_create(SgmScoreProvider sp, SgmConfig cfg);

#endif
