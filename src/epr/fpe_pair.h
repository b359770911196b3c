/* Internal to the "fpe_pair" score provider (score_fpe.c: d = 1; score_fpe2.c: d = 2). */
#ifndef SGM_EPR_FPE_PAIR_H
#define SGM_EPR_FPE_PAIR_H

#include "sgm/score_provider.h"

#include <petscmat.h>

/// Bernoulli function B(z) = z / (e^z - 1), B(0) = 1: the Scharfetter-Gummel weight. Pure.
double sgm_fpe_bern(double z);
/// The pair force's magnitude F(|r|) of potential `pot` (positive: repulsive), 0 at and beyond
/// the cutoff rc and at r = 0. Pure.
double sgm_fpe_force_mag(const SgmAoupParams *p, const SgmPairPotential *pot, double rc, double r);
/// Solves A x = e_kp by a sparse LU on PETSC_COMM_SELF (MUMPS where PETSc has it and `mumps` is
/// set, else PETSc's own with nested-dissection ordering; options prefix -fpe_) and checks the
/// residual to round-off: the stationary FPE with row kp replaced by p_kp = 1. Not collective.
PetscErrorCode sgm_fpe_solve_pinned(Mat A, PetscInt kp, PetscBool mumps, Vec *x);
/// After a solve on rank 0 only (ierr its status there, PETSC_SUCCESS elsewhere): raises it on
/// every rank if it failed, else broadcasts the edge mass and the nf fields of N values each from
/// rank 0. Collective.
PetscErrorCode sgm_fpe_share(MPI_Comm comm, PetscErrorCode ierr, double *edge, double *const *f,
                             int nf, int64_t N);
/// The pair's state on every rank, whichever ranks own the two particles: xg = x of particle 0
/// and 1 (dim each), then g of 0 and 1 (4 dim values). Errors if an id is outside [0, 2) or a
/// particle is owned by no rank or by several. Collective.
PetscErrorCode sgm_fpe_gather_pair(MPI_Comm comm, const SgmParticles *P, int dim, double *xg);
/// Copies the pair's scores (dim values per particle, by id) and divergences (one per particle)
/// to the `count` local particles from i0. Pure.
void sgm_fpe_scatter_pair(const SgmParticles *P, int dim, int64_t i0, int64_t count,
                          const double *s_x, const double *s_g, const double *d_x,
                          const double *d_g, double *sx, double *sg, double *divx, double *divg);
/// Logs how many of the evaluated configurations were clamped to the grid (nothing if none were
/// evaluated). Collective.
PetscErrorCode sgm_fpe_log_outside(MPI_Comm comm, int64_t outside, int64_t evals);
/// The d = 2 solver: two AOUPs in an isotropic harmonic trap (score_fpe2.c). Collective.
PetscErrorCode sgm_score_fpe_pair2_create(SgmScoreProvider sp, SgmConfig cfg);

#endif
