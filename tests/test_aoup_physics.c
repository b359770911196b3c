/* Statistical physics checks of the integrator against exact results (derivations in
 * docs/derivations.md, section "AOUP in a harmonic trap"):
 *  - free AOUP: mean squared displacement after m steps against the exact discrete-time value
 *    (and, loosely, the continuum formula 2 eps t + 2 v0^2 (gamma t - 1 + e^{-gamma t}) / gamma^2);
 *  - AOUP in a harmonic trap: stationary covariance of (x, g) against the exact solution of the
 *    discrete Lyapunov equation of the scheme (-> the continuum Lyapunov solution as dt -> 0).
 * Particles do not interact (k = 0), so the N particles are N independent samples. Tolerances
 * are 5 standard errors of the estimators (stated at each check). */
#include "testutil.h"
#include "sgm/aoup.h"

#include <string.h>

static SgmAoupParams free_params(int64_t n)
{
  SgmAoupParams p;
  memset(&p, 0, sizeof p);
  p.dim = 2, p.n = n, p.L = 100.0, p.periodic = 0;
  p.mu = 1.0, p.v0 = 1.0, p.gamma = 1.0, p.eps = 0.5, p.a = 0.01, p.k = 0.0, p.beta = 7.5;
  p.softplus_cut = 16.0, p.dt = 0.02, p.g_exact = 1, p.seed = 2024;
  strcpy(p.potential, "harmonic");
  return p;
}

START_TEST(test_free_msd)
{
  const int64_t N = 4000;
  SgmAoupParams p = free_params(N);
  SgmAoup s;
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, 0), 0);
  double *x0 = malloc(sizeof(double) * (size_t)(2 * N));
  int64_t *order = malloc(sizeof(int64_t) * (size_t)N);
  for (int64_t i = 0; i < N; i++)
    order[s->part.id[i]] = i, x0[2 * s->part.id[i]] = s->part.x[2 * i],
    x0[2 * s->part.id[i] + 1] = s->part.x[2 * i + 1];
  const double rho = exp(-p.gamma * p.dt);
  int m = 0;
  const int checks[] = {10, 50, 150};
  for (int c = 0; c < 3; c++) {
    for (; m < checks[c]; m++) ck_assert_int_eq(sgm_aoup_step(s), 0);
    double msd = 0;
    for (int64_t i = 0; i < N; i++) {
      int64_t id = s->part.id[i];
      for (int k = 0; k < 2; k++) {
        double d = s->part.x[2 * i + k] - x0[2 * id + k];
        msd += d * d;
      }
    }
    msd /= (double)(2 * N);
    /* exact for the scheme: dt^2 v0^2 [m + 2 sum_l (m - l) rho^l] + 2 eps dt m */
    double sum = m;
    for (int l = 1; l < m; l++) sum += 2.0 * (m - l) * pow(rho, l);
    double exact = p.dt * p.dt * p.v0 * p.v0 * sum + 2.0 * p.eps * p.dt * m;
    double t = m * p.dt, gt = p.gamma * t;
    double cont = 2.0 * p.eps * t + 2.0 * p.v0 * p.v0 * (gt - 1.0 + exp(-gt)) / (p.gamma * p.gamma);
    /* Gaussian displacements: the mean of 2N squares has relative standard error 1/sqrt(N) */
    double se = exact / sqrt((double)N);
    ck_assert_msg(fabs(msd - exact) < 5.0 * se, "MSD(t=%g) = %g, exact %g (se %g)", t, msd, exact,
                  se);
    ck_assert_msg(fabs(exact - cont) < 0.05 * cont, "discrete %g vs continuum %g", exact, cont);
  }
  (void)order;
  free(x0), free(order);
  sgm_aoup_destroy(&s);
}
END_TEST

START_TEST(test_trap_covariance)
{
  const int64_t N = 4000;
  SgmAoupParams p = free_params(N);
  p.L = 2.0, p.trap_A = 1.0, p.dt = 0.01;
  SgmAoup s;
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, 0), 0);
  for (int t = 0; t < 1500; t++) ck_assert_int_eq(sgm_aoup_step(s), 0);
  double sxx = 0, sxg = 0, sgg = 0, mx = 0;
  const int nsamp = 5;
  for (int q = 0; q < nsamp; q++) {
    for (int t = 0; t < 100; t++) ck_assert_int_eq(sgm_aoup_step(s), 0);
    for (int64_t i = 0; i < 2 * N; i++) {
      double x = s->part.x[i], g = s->part.g[i];
      sxx += x * x, sxg += x * g, sgg += g * g, mx += x;
    }
  }
  const double ns = (double)(2 * N * nsamp);
  sxx /= ns, sxg /= ns, sgg /= ns, mx /= ns;
  /* exact stationary covariance of the scheme x' = c x + b g + sqrt(2 eps dt) z,
   * g' = rho g + sqrt(1 - rho^2) z' (docs/derivations.md) */
  const double c = 1.0 - p.mu * p.trap_A * p.dt, b = p.v0 * p.dt, rho = exp(-p.gamma * p.dt);
  const double Sgg = 1.0, Sxg = rho * b / (1.0 - rho * c);
  const double Sxx = (2.0 * c * b * Sxg + b * b + 2.0 * p.eps * p.dt) / (1.0 - c * c);
  const double muA = p.mu * p.trap_A;
  const double Cxg = p.v0 / (muA + p.gamma),
               Cxx = p.eps / muA + p.v0 * p.v0 / (muA * (muA + p.gamma));
  /* standard errors with only the 2N particle samples counted as independent (conservative) */
  const double n = (double)(2 * N);
  const double se_xx = Sxx * sqrt(2.0 / n), se_gg = sqrt(2.0 / n),
               se_xg = sqrt((Sxx + Sxg * Sxg) / n);
  ck_assert_msg(fabs(sxx - Sxx) < 5 * se_xx, "<xx> = %g, exact %g (se %g)", sxx, Sxx, se_xx);
  ck_assert_msg(fabs(sxg - Sxg) < 5 * se_xg, "<xg> = %g, exact %g (se %g)", sxg, Sxg, se_xg);
  ck_assert_msg(fabs(sgg - Sgg) < 5 * se_gg, "<gg> = %g, exact %g (se %g)", sgg, Sgg, se_gg);
  ck_assert_msg(fabs(mx) < 5 * sqrt(Sxx / n), "<x> = %g", mx);
  /* the scheme's covariance approaches the continuum Lyapunov solution, O(dt) */
  ck_assert_msg(fabs(Sxx - Cxx) < 0.02 * Cxx, "Sxx %g vs continuum %g", Sxx, Cxx);
  ck_assert_msg(fabs(Sxg - Cxg) < 0.02 * Cxg, "Sxg %g vs continuum %g", Sxg, Cxg);
  sgm_aoup_destroy(&s);
}
END_TEST

START_TEST(test_euler_g_variance)
{
  /* Euler-Maruyama g: stationary variance 2 gamma dt / (1 - (1 - gamma dt)^2) = 1 / (1 - gamma dt /
   * 2) */
  const int64_t N = 4000;
  SgmAoupParams p = free_params(N);
  p.g_exact = 0, p.gamma = 5.0, p.dt = 0.02, p.v0 = 0.0;
  SgmAoup s;
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, 0), 0);
  for (int t = 0; t < 200; t++) ck_assert_int_eq(sgm_aoup_step(s), 0);
  double sgg = 0;
  for (int64_t i = 0; i < 2 * N; i++) sgg += s->part.g[i] * s->part.g[i];
  sgg /= (double)(2 * N);
  const double expect = 1.0 / (1.0 - p.gamma * p.dt / 2.0), se = expect * sqrt(2.0 / (2.0 * N));
  ck_assert_msg(fabs(sgg - expect) < 5 * se, "<gg> = %g, expected %g (se %g)", sgg, expect, se);
  sgm_aoup_destroy(&s);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("aoup_physics");
  TCase *t = tcase_create("physics");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, test_free_msd);
  tcase_add_test(t, test_trap_covariance);
  tcase_add_test(t, test_euler_g_variance);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
