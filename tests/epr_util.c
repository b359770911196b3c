/* Shared pieces of the epr-stage tests (epr_util.h). */
#include "epr_util.h"

#include <stdlib.h>
#include <string.h>

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

void sgm_test_eval_pair(SgmScoreProvider sp, int dim, const double *x, const double *g, double *sx,
                        double *sg, double *dx, double *dg)
{
  int rank, size;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  MPI_Comm_size(sgm_test_comm(), &size);
  ck_assert_int_le(dim, 3);
  SgmParticles P;
  memset(&P, 0, sizeof P);
  P.dim = dim;
  ck_assert_int_eq(sgm_particles_reserve(&P, 2), 0);
  int n = 0;
  for (int id = 0; id < 2; id++)
    if ((id == 0 && rank == 0) || (id == 1 && rank == size - 1)) {
      P.id[n] = id;
      for (int d = 0; d < dim; d++)
        P.x[dim * n + d] = x[dim * id + d], P.g[dim * n + d] = g[dim * id + d];
      n++;
    }
  P.nlocal = n;
  double a[6], b[6], c[2], e[2];
  ck_assert_int_eq(sgm_score_provider_eval(sp, &P, 0, n, a, b, c, e), 0);
  /* by global id: sx (2 dim), sg (2 dim), dx (2), dg (2) */
  double all[4 * 3 + 4] = {0};
  for (int u = 0; u < n; u++) {
    const int64_t id = P.id[u];
    for (int d = 0; d < dim; d++)
      all[dim * id + d] = a[dim * u + d], all[2 * dim + dim * id + d] = b[dim * u + d];
    all[4 * dim + id] = c[u], all[4 * dim + 2 + id] = e[u];
  }
  MPI_Allreduce(MPI_IN_PLACE, all, 4 * dim + 4, MPI_DOUBLE, MPI_SUM, sgm_test_comm());
  for (int k = 0; k < 2 * dim; k++) sx[k] = all[k], sg[k] = all[2 * dim + k];
  for (int i = 0; i < 2; i++) dx[i] = all[4 * dim + i], dg[i] = all[4 * dim + 2 + i];
  sgm_particles_free(&P);
}
