/* Philox4x32-10 against the published Random123 known-answer vectors, and the statistics of the
 * derived uniforms and normals over 10^6 draws. Tolerances are ~4.5 standard errors of each
 * estimator (stated per test), so a correct generator fails with probability < 1e-5 per check;
 * the stream is deterministic, so the test is also reproducible. */
#include "testutil.h"
#include "rng_util.h"
#include "sgm/rng.h"

#include <math.h>
#include <stdlib.h>

#define NDRAW 1000000

START_TEST(test_known_answers)
{
  /* Random123 kat_vectors: counter[4] key[2] -> output[4] */
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int t = 0; t < 3; t++) {
    uint32_t out[4];
    sgm_philox4x32_10(kat[t], kat[t] + 4, out);
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(out[i], kat[t][6 + i]);
  }
}
END_TEST

START_TEST(test_stream_layout)
{
  /* The documented layout: key = seed halves; counter = {sub, step lo, step hi | purpose<<16, id}.
   */
  const uint64_t seed = 0x0123456789abcdefull, step = 0x0000beefcafe1234ull, id = 77;
  const uint32_t purpose = 9, sub = 5;
  uint32_t a[4], b[4];
  const uint32_t key[2] = {0x89abcdef, 0x01234567};
  const uint32_t ctr[4] = {sub, 0xcafe1234, 0xbeef | (9u << 16), 77};
  sgm_rng_u32x4(seed, purpose, id, step, sub, a);
  sgm_philox4x32_10(ctr, key, b);
  for (int i = 0; i < 4; i++) ck_assert_uint_eq(a[i], b[i]);
  /* Any field change changes the stream. */
  uint32_t c[4];
  sgm_rng_u32x4(seed, purpose + 1, id, step, sub, c);
  ck_assert(c[0] != a[0] || c[1] != a[1]);
  sgm_rng_u32x4(seed, purpose, id + 1, step, sub, c);
  ck_assert(c[0] != a[0] || c[1] != a[1]);
  sgm_rng_u32x4(seed, purpose, id, step + 1, sub, c);
  ck_assert(c[0] != a[0] || c[1] != a[1]);
  sgm_rng_u32x4(seed + 1, purpose, id, step, sub, c);
  ck_assert(c[0] != a[0] || c[1] != a[1]);
}
END_TEST

START_TEST(test_uniform_open_interval)
{
  ck_assert(sgm_rng_u01(0) > 0.0);
  ck_assert(sgm_rng_u01(0xffffffffu) < 1.0);
  ck_assert_double_eq_tol(sgm_rng_u01(0x80000000u), 0.5 + 0.5 / 4294967296.0, 1e-18);
}
END_TEST

static double cdf_uniform(double x)
{
  return x;
}

START_TEST(test_uniform_statistics)
{
  double *u = malloc(NDRAW * sizeof *u), mean = 0, var = 0;
  for (int i = 0; i < NDRAW / 4; i++)
    sgm_rng_uniform4(42, SGM_RNG_TEST, (uint64_t)i, 3, 0, u + 4 * i);
  for (int i = 0; i < NDRAW; i++) {
    ck_assert(u[i] > 0.0 && u[i] < 1.0);
    mean += u[i];
  }
  mean /= NDRAW;
  for (int i = 0; i < NDRAW; i++) var += (u[i] - mean) * (u[i] - mean);
  var /= NDRAW - 1;
  /* se(mean) = sqrt(1/12/n) = 2.9e-4; se(var) = sqrt(1/180/n) = 7.5e-5 */
  ck_assert_double_le(fabs(mean - 0.5), 1.3e-3);
  ck_assert_double_le(fabs(var - 1.0 / 12.0), 3.4e-4);
  /* KS: the 0.1% critical value is 1.95/sqrt(n) = 1.95e-3 */
  ck_assert_double_le(sgm_test_ks(u, NDRAW, cdf_uniform), 1.95e-3);
  free(u);
}
END_TEST

START_TEST(test_normal_statistics)
{
  double *z = malloc(NDRAW * sizeof *z);
  /* Mix the ways normals are drawn: many ids, several steps, sub-counters through sgm_rng_normals.
   */
  for (int i = 0; i < NDRAW / 8; i++)
    sgm_rng_normals(7, SGM_RNG_TEST, (uint64_t)i, 11, 8, z + 8 * i);
  sgm_test_check_normals(z, NDRAW);
  free(z);
}
END_TEST

START_TEST(test_normal_pairs_uncorrelated)
{
  /* Components of one draw and neighbouring ids must be uncorrelated: se = 1/sqrt(n) = 1.4e-3 */
  const int n = 500000;
  double c01 = 0, c02 = 0, cid = 0, prev[4] = {0};
  for (int i = 0; i < n; i++) {
    double z[4];
    sgm_rng_normal4(3, SGM_RNG_TEST, (uint64_t)i, 0, 0, z);
    c01 += z[0] * z[1];
    c02 += z[0] * z[2];
    if (i) cid += z[0] * prev[0];
    for (int k = 0; k < 4; k++) prev[k] = z[k];
  }
  ck_assert_double_le(fabs(c01 / n), 6.4e-3);
  ck_assert_double_le(fabs(c02 / n), 6.4e-3);
  ck_assert_double_le(fabs(cid / n), 6.4e-3);
}
END_TEST

START_TEST(test_normals_chunking)
{
  /* sgm_rng_normals(n) is the concatenation of normal4 at sub = 0, 1, ... (docs/rng.md) */
  double a[10], b[12];
  sgm_rng_normals(5, SGM_RNG_TEST, 9, 2, 10, a);
  for (uint32_t s = 0; s < 3; s++) sgm_rng_normal4(5, SGM_RNG_TEST, 9, 2, s, b + 4 * s);
  for (int i = 0; i < 10; i++) ck_assert(a[i] == b[i]);
}
END_TEST

int main(int argc, char **argv)
{
  Suite *s = suite_create("rng");
  TCase *tc = tcase_create("philox");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_known_answers);
  tcase_add_test(tc, test_stream_layout);
  tcase_add_test(tc, test_uniform_open_interval);
  tcase_add_test(tc, test_uniform_statistics);
  tcase_add_test(tc, test_normal_statistics);
  tcase_add_test(tc, test_normal_pairs_uncorrelated);
  tcase_add_test(tc, test_normals_chunking);
  suite_add_tcase(s, tc);
  return sgm_test_main(argc, argv, s);
}
