/* sgm_rng_normal2: two standard normals from one Philox block (the engine's per-particle noise).
 * Statistics over 10^6 draws with tolerances of 4.5 standard errors (a correct generator fails
 * with probability < 1e-5 per check; the stream is deterministic, so the test is reproducible),
 * the word layout (w0, w1 radius, w2 angle), and independence of the pair and of neighbours. */
#include "testutil.h"
#include "rng_util.h"
#include "sgm/rng.h"

#include <math.h>
#include <stdlib.h>

#define NDRAW 1000000

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
  double *z = malloc(NDRAW * sizeof *z);
  ck_assert_ptr_nonnull(z);
  /* the engine's use: one call per (id, step); mix ids and steps */
  for (int i = 0; i < NDRAW / 2; i++)
    sgm_rng_normal2(7, SGM_RNG_TEST, (uint64_t)(i % 5003), (uint64_t)(i / 5003), 0, z + 2 * i);
  sgm_test_check_normals(z, NDRAW);
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
