/* Shared statistics of the RNG tests (test_rng.c, test_rng_batch.c, test_rng_normal2.c). */
#ifndef SGM_RNG_UTIL_H
#define SGM_RNG_UTIL_H

#include "testutil.h"

/// Kolmogorov-Smirnov statistic of x (sorted in place) against a CDF.
double sgm_test_ks(double *x, int n, double (*cdf)(double));
/// The standard normal CDF.
double sgm_test_cdf_normal(double x);
/// Checks that n = 10^6 draws z are standard normal, at 4.5 standard errors: mean (se 1e-3),
/// variance (se sqrt(2/n) = 1.41e-3), kurtosis (se sqrt(24/n) = 4.9e-3), tails (max |z| >= 4:
/// P(|z| > 4) = 6.3e-5, ~63 expected) and the KS distance (0.1% critical value 1.95/sqrt(n)).
/// Sorts z.
void sgm_test_check_normals(double *z, int n);

#endif
