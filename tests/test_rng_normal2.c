/* sgm_rng_normal2: two standard normals from one Philox block (the engine's per-particle noise).
 * Statistics over 10^6 draws with tolerances of 4.5 standard errors (a correct generator fails
 * with probability < 1e-5 per check; the stream is deterministic, so the test is reproducible),
 * the word layout (w0, w1 radius, w2 angle), and independence of the pair and of neighbours. */
#include "testutil.h"
#include "sgm/rng.h"

#include <math.h>
#include <stdlib.h>

#define NDRAW 1000000

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double ks_normal(double *x, int n)
{
  double d = 0;
  qsort(x, (size_t)n, sizeof *x, cmp_double);
  for (int i = 0; i < n; i++) {
    double f = 0.5 * erfc(-x[i] / sqrt(2.0));
    double lo = f - (double)i / n, hi = (double)(i + 1) / n - f;
    if (lo > d) d = lo;
    if (hi > d) d = hi;
  }
  return d;
}

START_TEST(test_normal2_layout)
{
  /* One counter: the 53-bit radius uniform from w0 (low 21 bits) and w1, the angle from w2. */
  uint32_t w[4];
  double z[2];
  sgm_rng_u32x4(123, SGM_RNG_TEST, 45, 67, 3, w);
  sgm_rng_normal2(123, SGM_RNG_TEST, 45, 67, 3, z);
  const uint64_t m = ((uint64_t)(w[0] & 0x1fffffu) << 32) | (uint64_t)w[1];
  const double u1 = ((double)m + 0.5) / 9007199254740992.0;
  const double r = sqrt(-2.0 * log(u1)), t = 2.0 * M_PI * sgm_rng_u01(w[2]);
  ck_assert(z[0] == r * cos(t));
  ck_assert(z[1] == r * sin(t));
  /* every argument selects a different stream */
  double y[2];
  sgm_rng_normal2(124, SGM_RNG_TEST, 45, 67, 3, y);
  ck_assert(y[0] != z[0]);
  sgm_rng_normal2(123, SGM_RNG_TEST, 46, 67, 3, y);
  ck_assert(y[0] != z[0]);
  sgm_rng_normal2(123, SGM_RNG_TEST, 45, 68, 3, y);
  ck_assert(y[0] != z[0]);
  sgm_rng_normal2(123, SGM_RNG_TEST, 45, 67, 4, y);
  ck_assert(y[0] != z[0]);
  sgm_rng_normal2(123, SGM_RNG_NOISE_G, 45, 67, 3, y);
  ck_assert(y[0] != z[0]);
}
END_TEST

START_TEST(test_normal2_statistics)
{
  double *z = malloc(NDRAW * sizeof *z), m1 = 0, m2 = 0, m4 = 0, zmax = 0;
  ck_assert_ptr_nonnull(z);
  /* the engine's use: one call per (id, step); mix ids and steps */
  for (int i = 0; i < NDRAW / 2; i++)
    sgm_rng_normal2(7, SGM_RNG_TEST, (uint64_t)(i % 5003), (uint64_t)(i / 5003), 0, z + 2 * i);
  for (int i = 0; i < NDRAW; i++) m1 += z[i];
  m1 /= NDRAW;
  for (int i = 0; i < NDRAW; i++) {
    double d = z[i] - m1;
    m2 += d * d;
    m4 += d * d * d * d;
    if (fabs(z[i]) > zmax) zmax = fabs(z[i]);
  }
  m2 /= NDRAW;
  m4 /= NDRAW;
  const double kurt = m4 / (m2 * m2);
  /* se(mean) = 1e-3, se(var) = sqrt(2/n) = 1.41e-3, se(kurtosis) = sqrt(24/n) = 4.9e-3 */
  ck_assert_double_le(fabs(m1), 4.5e-3);
  ck_assert_double_le(fabs(m2 - 1.0), 6.4e-3);
  ck_assert_double_le(fabs(kurt - 3.0), 2.2e-2);
  ck_assert_double_ge(zmax, 4.0); /* P(|z| > 4) = 6.3e-5: ~63 expected */
  /* KS: 0.1% critical value 1.95/sqrt(n) */
  ck_assert_double_le(ks_normal(z, NDRAW), 1.95 / sqrt((double)NDRAW));
  free(z);
}
END_TEST

START_TEST(test_normal2_uncorrelated)
{
  /* the two components, and neighbouring ids and steps: se = 1/sqrt(n) */
  const int n = 500000;
  double c01 = 0, cid = 0, cst = 0, prev = 0;
  for (int i = 0; i < n; i++) {
    double z[2], w[2];
    sgm_rng_normal2(3, SGM_RNG_TEST, (uint64_t)i, 0, 0, z);
    sgm_rng_normal2(3, SGM_RNG_TEST, (uint64_t)i, 1, 0, w);
    c01 += z[0] * z[1];
    cst += z[1] * w[1];
    if (i) cid += z[0] * prev;
    prev = z[0];
  }
  ck_assert_double_le(fabs(c01 / n), 6.4e-3);
  ck_assert_double_le(fabs(cid / n), 6.4e-3);
  ck_assert_double_le(fabs(cst / n), 6.4e-3);
}
END_TEST

int main(int argc, char **argv)
{
  Suite *s = suite_create("rng_normal2");
  TCase *tc = tcase_create("normal2");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_normal2_layout);
  tcase_add_test(tc, test_normal2_statistics);
  tcase_add_test(tc, test_normal2_uncorrelated);
  suite_add_tcase(s, tc);
  return sgm_test_main(argc, argv, s);
}
