/* Regression test of the denoising windows for s_x (learn = "xg" or "x" with the local
 * transformer): the window the network sees must be a function of the noised configuration only.
 * The windows were chosen in the clean frame and then filled with noised displacements, which
 * tells the network where the clean centre was (inside its clean K-nearest set): the centre's
 * noise became partly predictable, the denoising loss went below its bound -E|s|^2 and the learned
 * s_x was uncorrelated with the exact score (docs/validation.md, equilibrium check). Here every
 * window gathered with a position perturbation is compared with a brute-force K-nearest search
 * over all pairs of the perturbed configuration (minimum image of the clean displacement plus the
 * perturbation difference, ties by id), on 1, 2 and 4 ranks. */
#include "testutil.h"
#include "sgm/core.h"
#include "sgm/rng.h"
#include "sgm/windows.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  double d2;
  int64_t id;
} Cand;

static int cand_cmp(const void *a, const void *b)
{
  const Cand *p = a, *q = b;
  if (p->d2 != q->d2) return p->d2 < q->d2 ? -1 : 1;
  return (p->id > q->id) - (p->id < q->id);
}

START_TEST(test_denoise_windows_in_noised_frame)
{
  MPI_Comm comm = sgm_test_comm();
  const int dim = 2, K = 8, T = K + 1;
  const int64_t n = 500;
  const double L = 16.0, Lb[2] = {L, L};
  double *x = malloc(sizeof(double) * 2 * n), *g = malloc(sizeof(double) * 2 * n),
         *xi = malloc(sizeof(double) * 2 * n);
  for (int64_t i = 0; i < n; i++) {
    double u[4];
    sgm_rng_uniform4(3, SGM_RNG_TEST, (uint64_t)i, 0, 0, u);
    x[2 * i] = u[0] * L, x[2 * i + 1] = u[1] * L;
    g[2 * i] = u[2] - 0.5, g[2 * i + 1] = u[3] - 0.5;
    sgm_rng_normals(5, SGM_RNG_TEST, (uint64_t)i, 1, 2, xi + 2 * i);
  }
  SgmDecomp d;
  ck_assert_int_eq(sgm_decomp_create(comm, dim, Lb, 1.0, NULL, &d, NULL), 0);
  PetscMPIInt rank;
  MPI_Comm_rank(comm, &rank);
  int64_t nl = 0, *id = malloc(sizeof(int64_t) * (size_t)n);
  double *xl = malloc(sizeof(double) * 2 * n), *gl = malloc(sizeof(double) * 2 * n);
  for (int64_t i = 0; i < n; i++)
    if (sgm_decomp_owner(&d, x + 2 * i) == rank) {
      id[nl] = i;
      memcpy(xl + 2 * nl, x + 2 * i, 2 * sizeof(double));
      memcpy(gl + 2 * nl, g + 2 * i, 2 * sizeof(double));
      nl++;
    }
  SgmWindows w;
  ck_assert_int_eq(sgm_windows_create(comm, &d, K, 2.5, &w), 0);
  ck_assert_int_eq(sgm_windows_build(w, nl, id, xl, gl), 0);
  int64_t wn;
  const int64_t *nbr_id;
  const SgmParticles *p;
  ck_assert_int_eq(sgm_windows_get(w, &wn, NULL, &nbr_id, &p), 0);
  const int64_t nt = p->nlocal + p->nghost;
  double *px = malloc(sizeof(double) * 2 * (size_t)nt);
  for (int64_t j = 0; j < nt; j++) memcpy(px + 2 * j, xi + 2 * p->id[j], 2 * sizeof(double));
  float *X = malloc(sizeof(float) * (size_t)(T * dim)),
        *G = malloc(sizeof(float) * (size_t)(T * dim));
  float *M = malloc(sizeof(float) * (size_t)T);
  Cand *c = malloc(sizeof(Cand) * (size_t)n);
  int64_t changed = 0; /* windows whose clean and noised neighbour sets differ */
  for (int si = 0; si < 2; si++) {
    const double scale = si ? -0.3 : 0.3;
    for (int64_t a = 0; a < wn; a++) {
      const int64_t i = p->id[a];
      int64_t m = 0;
      for (int64_t j = 0; j < n; j++) {
        if (j == i) continue;
        double d2 = 0;
        for (int k = 0; k < dim; k++) {
          double dk = sgm_min_image(x[2 * j + k] - x[2 * i + k], L) +
                      scale * (xi[2 * j + k] - xi[2 * i + k]);
          d2 += dk * dk;
        }
        c[m].d2 = d2, c[m].id = j, m++;
      }
      qsort(c, (size_t)m, sizeof(Cand), cand_cmp);
      for (int t = 1; t < T; t++) changed += nbr_id[a * T + t] != c[t - 1].id;
      ck_assert_int_eq(sgm_windows_gather(w, 1, &a, px, NULL, scale, X, G, M), 0);
      for (int k = 0; k < dim; k++) {
        ck_assert_float_eq(X[k], 0.0f);
        ck_assert_float_eq(G[k], (float)g[2 * i + k]);
      }
      for (int t = 1; t < T; t++) {
        const int64_t j = c[t - 1].id;
        for (int k = 0; k < dim; k++) {
          double dk = sgm_min_image(x[2 * j + k] - x[2 * i + k], L) +
                      scale * (xi[2 * j + k] - xi[2 * i + k]);
          ck_assert_float_eq_tol(X[t * dim + k], (float)dk, 1e-5f);
          ck_assert_float_eq(G[t * dim + k], (float)g[2 * j + k]);
        }
      }
    }
  }
  /* the test is only meaningful if the perturbation changes some neighbour sets */
  MPI_Allreduce(MPI_IN_PLACE, &changed, 1, MPI_INT64_T, MPI_SUM, comm);
  ck_assert_int_gt(changed, 0);
  /* without a position perturbation the clean windows are kept */
  for (int64_t a = 0; a < wn; a++) {
    ck_assert_int_eq(sgm_windows_gather(w, 1, &a, NULL, NULL, 0.3, X, G, M), 0);
    for (int t = 1; t < T; t++) ck_assert_float_eq(G[t * dim], (float)g[2 * nbr_id[a * T + t]]);
  }
  ck_assert_int_eq(sgm_windows_destroy(&w), 0);
  free(x), free(g), free(xi), free(id), free(xl), free(gl), free(px), free(X), free(G), free(M),
      free(c);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("xg_score");
  TCase *tc = tcase_create("denoise_windows");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_denoise_windows_in_noised_frame);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
