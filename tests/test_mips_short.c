/* Short MIPS check for the default suite (the full run to t = 1/gamma is in docs/validation.md).
 *
 * N = 1024 AOUPs at the paper's MIPS parameters (phi = 0.5, v0 = 0.025, gamma = 1e-4, eps = 0,
 * dt = 0.1, harmonic k = 1, exact OU update of g, as input/quickstart.toml) from the relaxed random
 * placement, run to t = 3000 = 0.3/gamma; the control is the same system with gamma = 1: the same
 * speed v0 but a persistence length v0/gamma = 0.025a instead of 250a (Peclet number v0/(gamma a)
 * 0.025 instead of 250), far below MIPS, so it stays a homogeneous (cold) fluid.
 *
 * Measured with the [analysis] observables of the simulate stage (sgm_observables_compute,
 * r_local = 5a, contact when r < 2.2a), on the state at the start and on 5 states 1000 steps apart
 * at the end (averaged, because a 1024-particle cluster's contact network breaks and reconnects):
 *   - dense fraction: particles with n_i >= 18 neighbours within 5a (phi_i >= 0.72; a hexagonal
 *     cluster has phi_i ~ 0.9); from ~0.02 it grows above 0.10 with MIPS, vanishes in the control;
 *   - variance of n_i: the dense and dilute phases spread it (MIPS grows it, the control narrows);
 *   - largest contact-cluster fraction: a cluster spans most of the MIPS system (> 0.5), while the
 *     control's clusters are small (< 0.2).
 * Each criterion fails on the other system, so the test discriminates. The trajectories are
 * bitwise independent of the rank count, so the numbers are the same on 1, 2 or 4 ranks; the test
 * runs on 2 ranks only to stay short (23 s on the shared 2-core box at load average 8).
 * Measured: dense 0.021 -> MIPS 0.155, control 0.000; var(n_i) 8.47 -> 15.37, 3.63; largest
 * cluster 0.762 -> 0.713, 0.041 (the relaxed start is one contact network at r < 2.2a). */
#include "testutil.h"
#include "sgm/observables.h"

#include <string.h>

#define N       1024
#define STEPS   30000 /* t = 3000 = 0.3 / gamma */
#define AVG     5     /* end states averaged, AVG_GAP steps apart */
#define AVG_GAP 1000
#define DENSE_N 18 /* n_i >= 18 within 5a: phi_i >= 0.72 */

static SgmAoupParams mips(double gamma)
{
  SgmAoupParams p;
  memset(&p, 0, sizeof p);
  p.dim = 2, p.n = N, p.periodic = 1, p.L = sqrt((double)N * M_PI / 0.5);
  p.mu = 1, p.v0 = 0.025, p.gamma = gamma, p.eps = 0, p.a = 1, p.k = 1, p.beta = 7.5;
  p.softplus_cut = 16, p.dt = 0.1, p.g_exact = 1, p.seed = 2024, p.skin = 0.5;
  strcpy(p.potential, "harmonic");
  return p;
}

typedef struct {
  double dense, var, largest;
} Obs;

static Obs observe(SgmAoup s)
{
  SgmObservablesParams op;
  SgmObservables o;
  memset(&o, 0, sizeof o);
  sgm_observables_params_default(&op);
  op.sk_grid = -1; /* no S(k) */
  ck_assert_int_eq(sgm_observables_check(s, &op), 0);
  ck_assert_int_eq(sgm_observables_compute(s, &op, &o), 0);
  int64_t dense = 0, tot = 0;
  for (int b = 0; b < o.nbins; b++) {
    tot += o.hist[b];
    if (b >= DENSE_N) dense += o.hist[b];
  }
  ck_assert_int_eq(tot, N);
  Obs r = {(double)dense / N, o.nloc_var, o.largest_fraction};
  ck_assert_int_eq(sgm_observables_free(&o), 0);
  return r;
}

/* runs s to STEPS and returns the observables averaged over the last AVG states */
static Obs run(SgmAoup s)
{
  Obs m = {0, 0, 0};
  for (int t = 1; t <= STEPS; t++) {
    ck_assert_int_eq(sgm_aoup_step(s), 0);
    if (t > STEPS - AVG * AVG_GAP && t % AVG_GAP == 0) {
      Obs o = observe(s);
      m.dense += o.dense / AVG, m.var += o.var / AVG, m.largest += o.largest / AVG;
    }
  }
  return m;
}

START_TEST(test_mips_short_cluster)
{
  SgmAoupParams pm = mips(1e-4), pc = mips(1.0);
  SgmAoup s, c;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &pm, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, 200), 0);
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &pc, &c), 0);
  ck_assert_int_eq(sgm_aoup_init_random(c, 200), 0);
  const Obs o0 = observe(s), oc0 = observe(c);
  /* the same placement, seed and relaxation: the same initial state */
  ck_assert(o0.dense == oc0.dense && o0.var == oc0.var && o0.largest == oc0.largest);
  const Obs om = run(s), oc = run(c);
  if (s->rank == 0)
    printf("MIPS short (N = %d, t = %g): dense fraction (n_i >= %d within 5a) %.3f -> MIPS %.3f, "
           "control %.3f; var(n_i) %.2f -> MIPS %.2f, control %.2f; largest cluster %.3f -> "
           "MIPS %.3f, control %.3f\n",
           N, STEPS * pm.dt, DENSE_N, o0.dense, om.dense, oc.dense, o0.var, om.var, oc.var,
           o0.largest, om.largest, oc.largest);
  /* the relaxed random start is homogeneous */
  ck_assert_msg(o0.dense < 0.05, "initial dense fraction %g", o0.dense);
  /* MIPS: a dense phase (phi_i >= 0.72) holding > 10% of the particles, a broadened local
   * density distribution, and one contact cluster holding most particles */
  ck_assert_msg(om.dense > 0.10 && om.dense > 3.0 * o0.dense, "MIPS dense fraction %g -> %g",
                o0.dense, om.dense);
  ck_assert_msg(om.var > 1.3 * o0.var, "MIPS var(n_i) %g -> %g", o0.var, om.var);
  ck_assert_msg(om.largest > 0.5, "MIPS largest cluster fraction %g", om.largest);
  /* control (Pe = 0.025): no dense phase, a narrower distribution, no spanning cluster */
  ck_assert_msg(oc.dense < 0.02 && oc.dense < o0.dense, "control dense fraction %g -> %g", o0.dense,
                oc.dense);
  ck_assert_msg(oc.var < o0.var, "control var(n_i) %g -> %g", o0.var, oc.var);
  ck_assert_msg(oc.largest < 0.2, "control largest cluster fraction %g", oc.largest);
  sgm_aoup_destroy(&s);
  sgm_aoup_destroy(&c);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("mips_short");
  TCase *t = tcase_create("mips_short");
  tcase_set_timeout(t, 600);
  tcase_add_test(t, test_mips_short_cluster);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
