/* Shared pieces of the epr-stage tests (epr_util.h). */
#include "epr_util.h"

#include <stdlib.h>

static PetscErrorCode lin_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                               int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  (void)sp;
  for (int64_t u = 0; u < count; u++) {
    for (int k = 0; k < P->dim; k++)
      sx[u * P->dim + k] = 0.0, sg[u * P->dim + k] = -2.0 * P->g[(i0 + u) * P->dim + k];
    divx[u] = 0.0, divg[u] = -2.0 * P->dim;
  }
  return PETSC_SUCCESS;
}

PetscErrorCode sgm_test_lin_score_create(SgmScoreProvider sp, SgmConfig cfg)
{
  (void)cfg;
  sp->eval = lin_eval;
  sp->range = 0.0;
  return PETSC_SUCCESS;
}

double *sgm_test_read_all(hid_t f, const char *name, size_t *n)
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  ck_assert_msg(d >= 0, "dataset %s missing", name);
  hid_t sp = H5Dget_space(d);
  *n = (size_t)H5Sget_simple_extent_npoints(sp);
  double *v = malloc(sizeof(double) * (*n + 1));
  ck_assert_int_ge(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
  H5Sclose(sp), H5Dclose(d);
  return v;
}
