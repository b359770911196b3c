/* Shared pieces of the epr-stage and score-provider tests (test_epr_classes.c, test_epr_flow.c,
 * test_score_fpe.c, test_score_fpe2.c). */
#ifndef SGM_EPR_UTIL_H
#define SGM_EPR_UTIL_H

#include "testutil.h"
#include "sgm/score_provider.h"

#include <hdf5.h>
#include <stddef.h>

/// Creator of a linear test score provider: s_x = 0, s_g = -2 g (div_x = 0, div_g = -2 d), no
/// interaction range. Register it under a name of the test's choosing.
PetscErrorCode sgm_test_lin_score_create(SgmScoreProvider sp, SgmConfig cfg);

/// Evaluates the provider on a pair in dimension dim with particle 0 on rank 0 and particle 1 on
/// the last rank of sgm_test_comm(): x, g (2, dim) in, the pair's sx, sg (2, dim) and per-particle
/// divergences dx, dg (2) out on every rank. Collective.
void sgm_test_eval_pair(SgmScoreProvider sp, int dim, const double *x, const double *g, double *sx,
                        double *sg, double *dx, double *dg);

/// The whole dataset `name` of the open file f as doubles (n of them; caller frees).
double *sgm_test_read_all(hid_t f, const char *name, size_t *n);

#endif
