/* MPI tests of the K-nearest-neighbour windows: neighbour ids and gathered displacements against
 * a brute-force search over all pairs (minimum image, ties by id) computed on every rank from the
 * full configuration, so agreement on 1, 2 and 4 ranks also proves decomposition independence;
 * a sparse configuration that forces the halo to grow; particles handed to the wrong ranks
 * (migrated by the build); a K too large for the decomposition; builds for selected centres only
 * (sgm_windows_build_selected): the selected rows as brute force, the others the centre repeated.
 */
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

/* Builds windows for the full configuration (x, g of n particles in id order) on this
 * decomposition and compares every owned window with brute force. Returns the number of grows. */
/* scatter = 1 hands particle i to rank i % size (not its owner): the build must migrate. */
/* select: 0 every centre (sgm_windows_build), 1 ids divisible by 3, 2 ids below 8 (selected
 * builds). */
static int want_centre(void *ctx, int64_t id)
{
  const int sel = *(const int *)ctx;
  return sel == 1 ? id % 3 == 0 : id < 8;
}

static int64_t check_config(int64_t n, const double *x, const double *g, double L, int K,
                            double width0, int scatter, int select)
{
  MPI_Comm comm = sgm_test_comm();
  const int dim = 2;
  double Lb[2] = {L, L};
  SgmDecomp d;
  ck_assert_int_eq(sgm_decomp_create(comm, dim, Lb, 1.0, NULL, &d, NULL), 0);
  PetscMPIInt rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int64_t nl = 0;
  int64_t *id = malloc(sizeof(int64_t) * (size_t)n);
  double *xl = malloc(sizeof(double) * (size_t)(n * dim)),
         *gl = malloc(sizeof(double) * (size_t)(n * dim));
  for (int64_t i = 0; i < n; i++)
    if (scatter ? i % size == rank : sgm_decomp_owner(&d, x + i * dim) == rank) {
      id[nl] = i;
      memcpy(xl + nl * dim, x + i * dim, sizeof(double) * dim);
      memcpy(gl + nl * dim, g + i * dim, sizeof(double) * dim);
      nl++;
    }
  SgmWindows w;
  ck_assert_int_eq(sgm_windows_create(comm, &d, K, width0, &w), 0);
  if (select)
    ck_assert_int_eq(sgm_windows_build_selected(w, nl, id, xl, gl, want_centre, &select), 0);
  else
    ck_assert_int_eq(sgm_windows_build(w, nl, id, xl, gl), 0);
  int64_t wn;
  const int64_t *nbr, *nbr_id;
  const SgmParticles *p;
  ck_assert_int_eq(sgm_windows_get(w, &wn, &nbr, &nbr_id, &p), 0);
  int64_t total = wn;
  MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT64_T, MPI_SUM, comm);
  ck_assert_int_eq(total, n);
  if (!scatter) ck_assert_int_eq(wn, nl);
  Cand *c = malloc(sizeof(Cand) * (size_t)n);
  const int T = K + 1;
  float *X = malloc(sizeof(float) * (size_t)(T * dim)),
        *G = malloc(sizeof(float) * (size_t)(T * dim));
  float *M = malloc(sizeof(float) * (size_t)T);
  for (int64_t a = 0; a < wn; a++) {
    const int64_t i = p->id[a];
    ck_assert_int_eq(sgm_decomp_owner(&d, x + i * dim), rank);
    if (select && !want_centre(&select, i)) { /* not searched: the centre repeated */
      for (int t = 0; t < T; t++) {
        ck_assert_int_eq(nbr_id[a * T + t], i);
        ck_assert_int_eq(nbr[a * T + t], a);
      }
      continue;
    }
    int64_t m = 0;
    for (int64_t j = 0; j < n; j++) {
      if (j == i) continue;
      double d2 = 0;
      for (int k = 0; k < dim; k++) {
        double dk = sgm_min_image(x[j * dim + k] - x[i * dim + k], L);
        d2 += dk * dk;
      }
      c[m].d2 = d2, c[m].id = j, m++;
    }
    qsort(c, (size_t)m, sizeof(Cand), cand_cmp);
    ck_assert_int_eq(nbr_id[a * T], i);
    for (int t = 1; t < T; t++) ck_assert_int_eq(nbr_id[a * T + t], c[t - 1].id);
    ck_assert_int_eq(sgm_windows_gather(w, 1, &a, NULL, NULL, 0.0, X, G, M), 0);
    for (int t = 0; t < T; t++) {
      const int64_t j = nbr_id[a * T + t];
      ck_assert_float_eq(M[t], 1.0f);
      for (int k = 0; k < dim; k++) {
        double dk = t ? sgm_min_image(x[j * dim + k] - x[i * dim + k], L) : 0.0;
        ck_assert_float_eq(X[t * dim + k], (float)dk);
        ck_assert_float_eq(G[t * dim + k], (float)g[j * dim + k]);
      }
    }
  }
  int64_t ngrow;
  sgm_windows_width(w, NULL, &ngrow);
  ck_assert_int_eq(sgm_windows_destroy(&w), 0);
  free(c), free(X), free(G), free(M), free(id), free(xl), free(gl);
  return ngrow;
}

static void random_config(int64_t n, double L, uint32_t tag, double *x, double *g)
{
  for (int64_t i = 0; i < n; i++) {
    double u[4];
    sgm_rng_uniform4(tag, SGM_RNG_TEST, (uint64_t)i, 0, 0, u);
    x[2 * i] = u[0] * L, x[2 * i + 1] = u[1] * L;
    g[2 * i] = u[2] - 0.5, g[2 * i + 1] = u[3] - 0.5;
  }
}

START_TEST(test_uniform_vs_brute)
{
  const int64_t n = 600;
  const double L = 16.0;
  double *x = malloc(sizeof(double) * 2 * n), *g = malloc(sizeof(double) * 2 * n);
  random_config(n, L, 7, x, g);
  /* exact ties: particle 1 and 2 equidistant from particle 0 */
  x[0] = 5.0, x[1] = 5.0, x[2] = 5.5, x[3] = 5.0, x[4] = 4.5, x[5] = 5.0;
  /* a particle across the periodic boundary */
  x[6] = 0.01, x[7] = 0.02, x[8] = L - 0.03, x[9] = L - 0.01;
  check_config(n, x, g, L, 16, 3.0, 0, 0);
  check_config(n, x, g, L, 5, 0.3, 0, 0);
  check_config(n, x, g, L, 7, 2.0, 1, 0);
  check_config(n, x, g, L, 16, 3.0, 0, 1);
  check_config(n, x, g, L, 7, 0.3, 1, 1);
  free(x), free(g);
}
END_TEST

START_TEST(test_sparse_grows)
{
  /* a dense cluster and a handful of isolated particles: the K-th neighbour of an isolated one
   * is far, so a small initial width must grow */
  const int64_t n = 300;
  const double L = 24.0;
  double *x = malloc(sizeof(double) * 2 * n), *g = malloc(sizeof(double) * 2 * n);
  random_config(n, L, 11, x, g);
  for (int64_t i = 8; i < n; i++)
    x[2 * i] = 1.0 + x[2 * i] / L * 4.0, x[2 * i + 1] = 1.0 + x[2 * i + 1] / L * 4.0;
  int64_t ngrow = check_config(n, x, g, L, 8, 0.5, 0, 0);
  ck_assert_int_gt(ngrow, 0);
  /* the isolated particles alone selected: their K-th distances still grow the halo */
  ck_assert_int_gt(check_config(n, x, g, L, 8, 0.5, 0, 2), 0);
  ck_assert_int_gt(check_config(n, x, g, L, 8, 0.5, 1, 2), 0);
  free(x), free(g);
}
END_TEST

START_TEST(test_too_wide)
{
  /* 20 particles at 4 ranks along a 10-wide box: K = 19 needs the whole box */
  PetscMPIInt size;
  MPI_Comm_size(sgm_test_comm(), &size);
  const int64_t n = 20;
  const double L = 10.0;
  double x[40], g[40];
  random_config(n, L, 3, x, g);
  double Lb[2] = {L, L};
  SgmDecomp d;
  ck_assert_int_eq(sgm_decomp_create(sgm_test_comm(), 2, Lb, 1.0, NULL, &d, NULL), 0);
  PetscMPIInt rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  int64_t id[20], nl = 0;
  double xl[40], gl[40];
  for (int64_t i = 0; i < n; i++)
    if (sgm_decomp_owner(&d, x + 2 * i) == rank) {
      id[nl] = i, xl[2 * nl] = x[2 * i], xl[2 * nl + 1] = x[2 * i + 1];
      gl[2 * nl] = g[2 * i], gl[2 * nl + 1] = g[2 * i + 1], nl++;
    }
  SgmWindows w;
  ck_assert_int_eq(sgm_windows_create(sgm_test_comm(), &d, 19, 1.0, &w), 0);
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  PetscErrorCode ierr = sgm_windows_build(w, nl, id, xl, gl);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  /* half the box (5) is not enough for the farthest of all 19 others in a 10x10 box unless the
   * points happen to be close; either outcome must be consistent on every rank */
  int bad = ierr != 0, any;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, sgm_test_comm());
  ck_assert_int_eq(bad, any);
  if (ierr) ck_assert_int_eq(ierr, SGM_ERR_USER);
  ck_assert_int_eq(sgm_windows_destroy(&w), 0);
  /* K >= N is always refused */
  ck_assert_int_eq(sgm_windows_create(sgm_test_comm(), &d, 20, 1.0, &w), 0);
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  ierr = sgm_windows_build(w, nl, id, xl, gl);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  ck_assert_int_eq(ierr, SGM_ERR_USER);
  ck_assert_int_eq(sgm_windows_destroy(&w), 0);
  (void)size;
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("windows");
  TCase *tc = tcase_create("knn");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_uniform_vs_brute);
  tcase_add_test(tc, test_sparse_grows);
  tcase_add_test(tc, test_too_wide);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
