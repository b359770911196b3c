/* Serial tests of the decomposition maths, cell lists and pair forces. */
#include "testutil.h"
#include "sgm/aoup.h"
#include "sgm/rng.h"

#include <stdlib.h>

/* Every cell of a 256-rank layout belongs to exactly one patch, the owner maths agrees with the
 * split, patches tile the box (areas sum to L^2) and a point's owner patch contains it. */
static void check_layout(int px, int py, int64_t mx, int64_t my)
{
  SgmDecomp d = {.dim = 2, .dims = {px, py}, .ncell = {mx, my}, .L = {37.5, 81.25}};
  const int size = px * py;
  int *owner = calloc((size_t)(mx * my), sizeof(int));
  double area = 0;
  for (int r = 0; r < size; r++) {
    int c[2];
    sgm_decomp_coords(&d, r, c);
    ck_assert_int_eq(sgm_decomp_rank(&d, c), r);
    int64_t s0, n0, s1, n1;
    sgm_decomp_split(mx, px, c[0], &s0, &n0);
    sgm_decomp_split(my, py, c[1], &s1, &n1);
    ck_assert_int_ge(n0, 1);
    ck_assert_int_ge(n1, 1);
    for (int64_t j = s1; j < s1 + n1; j++)
      for (int64_t i = s0; i < s0 + n0; i++) {
        ck_assert_int_eq(owner[i + j * mx], 0);
        owner[i + j * mx] = r + 1;
        ck_assert_int_eq(sgm_decomp_coord_of_cell(&d, 0, i), c[0]);
        ck_assert_int_eq(sgm_decomp_coord_of_cell(&d, 1, j), c[1]);
      }
    double lo[2], hi[2];
    sgm_decomp_patch(&d, r, lo, hi);
    area += (hi[0] - lo[0]) * (hi[1] - lo[1]);
  }
  for (int64_t i = 0; i < mx * my; i++) ck_assert_int_ne(owner[i], 0);
  ck_assert_double_eq_tol(area, d.L[0] * d.L[1], 1e-9);
  for (int t = 0; t < 20000; t++) {
    double u[4], x[2], lo[2], hi[2];
    sgm_rng_uniform4(1, SGM_RNG_TEST, (uint64_t)t, 0, 0, u);
    x[0] = u[0] * d.L[0], x[1] = u[1] * d.L[1];
    int r = sgm_decomp_owner(&d, x);
    ck_assert_int_eq(owner[sgm_decomp_cell(&d, 0, x[0]) + sgm_decomp_cell(&d, 1, x[1]) * mx],
                     r + 1);
    sgm_decomp_patch(&d, r, lo, hi);
    for (int k = 0; k < 2; k++) {
      ck_assert(x[k] >= lo[k] - 1e-12 && x[k] < hi[k] + 1e-12);
    }
  }
  /* neighbours wrap periodically */
  int c[2] = {-1, py};
  ck_assert_int_eq(sgm_decomp_rank(&d, c), px - 1);
  free(owner);
}

START_TEST(test_layout_256)
{
  check_layout(16, 16, 226, 226);
  check_layout(16, 16, 16, 19);
  check_layout(256, 1, 1000, 3);
  check_layout(1, 256, 5, 257);
  check_layout(32, 8, 97, 45);
}
END_TEST

START_TEST(test_split)
{
  for (int p = 1; p <= 300; p += 7)
    for (int64_t n = p; n < 3 * p + 5; n += 3) {
      int64_t next = 0;
      for (int i = 0; i < p; i++) {
        int64_t s, c;
        sgm_decomp_split(n, p, i, &s, &c);
        ck_assert_int_eq(s, next);
        next = s + c;
      }
      ck_assert_int_eq(next, n);
    }
}
END_TEST

/* Cell lists find exactly the pairs within rc that brute force finds, in 1D and 2D, including a
 * dense cluster (hundreds of points per cell). */
static void check_cells(int dim, int64_t n, double ext, double rc, double cluster)
{
  SgmCells c = {0};
  double *x = malloc(sizeof(double) * (size_t)(n * dim));
  for (int64_t i = 0; i < n; i++) {
    double u[4];
    sgm_rng_uniform4(7, SGM_RNG_TEST, (uint64_t)i, (uint64_t)dim, 0, u);
    double e = (i % 3 == 0) ? cluster : ext;
    for (int k = 0; k < dim; k++) x[i * dim + k] = e * u[k];
  }
  double lo[2] = {0, 0}, hi[2] = {ext, ext};
  ck_assert_int_eq(sgm_cells_build(&c, dim, lo, hi, rc, 1 << 20, n, x), 0);
  ck_assert_int_eq(c.start[c.ncells], n);
  int64_t found = 0, brute = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t ci = c.cell[i], cx = ci % c.nc[0], cy = ci / c.nc[0];
    for (int64_t yy = cy - 1; yy <= cy + 1; yy++)
      for (int64_t xx = cx - 1; xx <= cx + 1; xx++) {
        if (xx < 0 || yy < 0 || xx >= c.nc[0] || yy >= c.nc[1]) continue;
        for (int64_t q = c.start[xx + yy * c.nc[0]]; q < c.start[xx + yy * c.nc[0] + 1]; q++) {
          int64_t j = c.order[q];
          double r2 = 0;
          for (int k = 0; k < dim; k++)
            r2 += (x[i * dim + k] - x[j * dim + k]) * (x[i * dim + k] - x[j * dim + k]);
          if (j != i && r2 < rc * rc) found++;
        }
      }
    for (int64_t j = 0; j < n; j++) {
      double r2 = 0;
      for (int k = 0; k < dim; k++)
        r2 += (x[i * dim + k] - x[j * dim + k]) * (x[i * dim + k] - x[j * dim + k]);
      if (j != i && r2 < rc * rc) brute++;
    }
  }
  ck_assert_int_eq(found, brute);
  ck_assert_int_gt(brute, 0);
  /* rebuild with more points: arrays grow */
  ck_assert_int_eq(sgm_cells_build(&c, dim, lo, hi, rc, 1 << 20, n / 2, x), 0);
  ck_assert_int_eq(c.start[c.ncells], n / 2);
  sgm_cells_free(&c);
  free(x);
}

START_TEST(test_cells_vs_allpairs)
{
  check_cells(2, 3000, 40.0, 2.0, 4.0);
  check_cells(1, 2000, 300.0, 2.0, 3.0);
  check_cells(2, 500, 7.0, 2.3, 7.0);
}
END_TEST

START_TEST(test_pair_forces)
{
  const SgmPairPotential *h = sgm_pair_potential_find("harmonic"),
                         *s = sgm_pair_potential_find("softplus");
  ck_assert_ptr_nonnull(h);
  ck_assert_ptr_nonnull(s);
  ck_assert_ptr_null(sgm_pair_potential_find("nope"));
  ck_assert_double_eq_tol(h->force(1.5, 1.0, 2.5, 0), 2.5 * 0.5, 1e-15);
  ck_assert_double_eq(h->force(2.0, 1.0, 2.5, 0), 0.0);
  ck_assert_double_eq(h->force(3.0, 1.0, 2.5, 0), 0.0);
  /* softplus: (k/beta) log(1 + exp(beta (2a - r))), both branches, and -> harmonic for large beta
   */
  for (double r = 0.2; r < 4.0; r += 0.1) {
    double ref = 2.5 * log(1.0 + exp(7.5 * (2.0 - r))) / 7.5;
    ck_assert_double_eq_tol(s->force(r, 1.0, 2.5, 7.5), ref, 1e-13 * (1 + ref));
    ck_assert_double_eq_tol(s->force(r, 1.0, 1.0, 1e4), h->force(r, 1.0, 1.0, 0), 1e-4);
  }
  ck_assert(isfinite(s->force(0.0, 1.0, 1.0, 1e6)));
  /* minimum image */
  ck_assert_double_eq(sgm_min_image(9.2, 10.0), -0.8000000000000007);
  ck_assert_double_eq_tol(sgm_min_image(-9.2, 10.0), 0.8, 1e-14);
  ck_assert(sgm_min_image(4.9, 10.0) == 4.9);
  ck_assert_double_eq(sgm_wrap(-1e-300, 10.0), sgm_wrap(-1e-300, 10.0));
  ck_assert(sgm_wrap(-1e-17, 10.0) >= 0.0 && sgm_wrap(-1e-17, 10.0) < 10.0);
  ck_assert(sgm_wrap(10.0, 10.0) == 0.0);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("aoup_domain");
  TCase *t = tcase_create("core");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, test_layout_256);
  tcase_add_test(t, test_split);
  tcase_add_test(t, test_cells_vs_allpairs);
  tcase_add_test(t, test_pair_forces);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
