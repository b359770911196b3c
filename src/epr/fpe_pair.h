/* Internal to the "fpe_pair" score provider (score_fpe.c: d = 1; score_fpe2.c: d = 2). */
#ifndef SGM_EPR_FPE_PAIR_H
#define SGM_EPR_FPE_PAIR_H

#include "sgm/score_provider.h"

/// Bernoulli function B(z) = z / (e^z - 1), B(0) = 1: the Scharfetter-Gummel weight. Pure.
double sgm_fpe_bern(double z);
/// The pair force's magnitude F(|r|) of potential `pot` (positive: repulsive), 0 at and beyond
/// the cutoff rc and at r = 0. Pure.
double sgm_fpe_force_mag(const SgmAoupParams *p, const SgmPairPotential *pot, double rc, double r);
/// The d = 2 solver: two AOUPs in an isotropic harmonic trap (score_fpe2.c). Collective.
PetscErrorCode sgm_score_fpe_pair2_create(SgmScoreProvider sp, SgmConfig cfg);

#endif
