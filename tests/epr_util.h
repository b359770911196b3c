/* Shared pieces of the epr-stage tests (test_epr_classes.c, test_epr_flow.c). */
#ifndef SGM_EPR_UTIL_H
#define SGM_EPR_UTIL_H

#include "testutil.h"
#include "sgm/score_provider.h"

#include <hdf5.h>
#include <stddef.h>

/// Creator of a linear test score provider: s_x = 0, s_g = -2 g (div_x = 0, div_g = -2 d), no
/// interaction range. Register it under a name of the test's choosing.
PetscErrorCode sgm_test_lin_score_create(SgmScoreProvider sp, SgmConfig cfg);

/// The whole dataset `name` of the open file f as doubles (n of them; caller frees).
double *sgm_test_read_all(hid_t f, const char *name, size_t *n);

#endif
