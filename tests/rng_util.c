/* Shared statistics of the RNG tests (rng_util.h). */
#include "rng_util.h"

#include <math.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double sgm_test_ks(double *x, int n, double (*cdf)(double))
{
  double d = 0;
  qsort(x, (size_t)n, sizeof *x, cmp_double);
  for (int i = 0; i < n; i++) {
    double f = cdf(x[i]);
    double lo = f - (double)i / n, hi = (double)(i + 1) / n - f;
    if (lo > d) d = lo;
    if (hi > d) d = hi;
  }
  return d;
}

double sgm_test_cdf_normal(double x)
{
  return 0.5 * erfc(-x / sqrt(2.0));
}

void sgm_test_check_normals(double *z, int n)
{
  double m1 = 0, m2 = 0, m4 = 0, zmax = 0;
  ck_assert_int_eq(n, 1000000); /* the tolerances below are for 10^6 draws */
  for (int i = 0; i < n; i++) m1 += z[i];
  m1 /= n;
  for (int i = 0; i < n; i++) {
    double d = z[i] - m1;
    m2 += d * d;
    m4 += d * d * d * d;
    if (fabs(z[i]) > zmax) zmax = fabs(z[i]);
  }
  m2 /= n;
  m4 /= n;
  const double kurt = m4 / (m2 * m2);
  ck_assert_double_le(fabs(m1), 4.5e-3);
  ck_assert_double_le(fabs(m2 - 1.0), 6.4e-3);
  ck_assert_double_le(fabs(kurt - 3.0), 2.2e-2);
  ck_assert_double_ge(zmax, 4.0);
  ck_assert_double_le(sgm_test_ks(z, n, sgm_test_cdf_normal), 1.95 / sqrt((double)n));
}
