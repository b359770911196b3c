/* Unit tests of the EPR formulas and the exact trap score (docs/derivations.md, "Exact score and
 * EPR of AOUPs in a harmonic trap"). Every expectation is computed here another way:
 *  - Σ: residual of A Σ + Σ Aᵀ + 2D (1e-12), a 3x3 linear solve of the same equation, and an RK4
 *    integration of the covariance ODE dΣ/dt = A Σ + Σ Aᵀ + 2D to stationarity;
 *  - the exact EPR: tr(Mᵀ D⁻¹ M Σ) with M = A + D Σ⁻¹ as explicit 2x2 products;
 *  - the score: central differences of log N(0, Σ); its divergence: differences of the score;
 *  - per-particle formulas on hand-built states against hand-written arithmetic;
 *  - the drift divergence with pair forces against differences of the engine's forces. */
#include "testutil.h"
#include "sgm/epr.h"
#include "sgm/score_provider.h"

#include <math.h>
#include <string.h>

static SgmAoupParams trap_params(double muA, double v0, double gamma, double eps, int dim)
{
  SgmAoupParams p;
  memset(&p, 0, sizeof p);
  p.dim = dim, p.n = 4, p.L = 10.0, p.periodic = 0;
  p.mu = 1.0, p.trap_A = muA, p.v0 = v0, p.gamma = gamma, p.eps = eps;
  p.a = 1.0, p.k = 0.0, p.beta = 7.5, p.softplus_cut = 16.0, p.dt = 1e-3, p.seed = 1;
  strcpy(p.potential, "harmonic");
  return p;
}

static const double cases[][4] = {/* μA, v0, γ, ε */
                                  {0.05, 1.0, 0.1, 0.1},
                                  {1.0, 1.0, 1.0, 0.5},
                                  {0.3, 4.0, 2.0, 0.01},
                                  {2.0, 0.0, 0.5, 1.0},
                                  {0.5, 1.5, 0.7, 0.0}};
#define NCASES 5

/* 3x3 Gaussian elimination with partial pivoting. */
static void solve3(double M[3][3], double r[3], double out[3])
{
  for (int c = 0; c < 3; c++) {
    int piv = c;
    for (int i = c + 1; i < 3; i++)
      if (fabs(M[i][c]) > fabs(M[piv][c])) piv = i;
    for (int j = 0; j < 3; j++) {
      double t = M[c][j];
      M[c][j] = M[piv][j], M[piv][j] = t;
    }
    double t = r[c];
    r[c] = r[piv], r[piv] = t;
    for (int i = c + 1; i < 3; i++) {
      double f = M[i][c] / M[c][c];
      for (int j = c; j < 3; j++) M[i][j] -= f * M[c][j];
      r[i] -= f * r[c];
    }
  }
  for (int i = 2; i >= 0; i--) {
    double s = r[i];
    for (int j = i + 1; j < 3; j++) s -= M[i][j] * out[j];
    out[i] = s / M[i][i];
  }
}

/* L(Σ) = A Σ + Σ Aᵀ + 2D for A = [[-a, v0], [0, -γ]], D = diag(ε, γ); Σ = (xx, xg, gg). */
static void lyap(double a, double v0, double gm, double eps, const double S[3], double out[3])
{
  out[0] = 2.0 * (-a * S[0] + v0 * S[1]) + 2.0 * eps;
  out[1] = -a * S[1] + v0 * S[2] - gm * S[1];
  out[2] = -2.0 * gm * S[2] + 2.0 * gm;
}

START_TEST(test_lyapunov)
{
  for (int c = 0; c < NCASES; c++) {
    const double a = cases[c][0], v0 = cases[c][1], gm = cases[c][2], eps = cases[c][3];
    double S[3], res[3];
    sgm_score_trap_covariance(a, v0, gm, eps, &S[0], &S[1], &S[2]);
    lyap(a, v0, gm, eps, S, res);
    const double scale = fabs(a * S[0]) + fabs(v0 * S[1]) + eps + gm;
    for (int k = 0; k < 3; k++)
      ck_assert_msg(fabs(res[k]) <= 1e-12 * scale, "case %d: %g", c, res[k]);
    /* linear solve of L(Σ) = 0 */
    double M[3][3] = {{-2 * a, 2 * v0, 0}, {0, -a - gm, v0}, {0, 0, -2 * gm}};
    double r[3] = {-2 * eps, 0, -2 * gm}, lin[3];
    solve3(M, r, lin);
    for (int k = 0; k < 3; k++) ck_assert_double_eq_tol(S[k], lin[k], 1e-12 * (1 + fabs(lin[k])));
    /* RK4 of dΣ/dt = L(Σ) from 0 to 40 relaxation times */
    const double tau = 1.0 / fmin(a, gm), h = 0.01 * tau;
    double Y[3] = {0, 0, 0};
    for (int it = 0; it < 4000; it++) {
      double k1[3], k2[3], k3[3], k4[3], Z[3];
      lyap(a, v0, gm, eps, Y, k1);
      for (int k = 0; k < 3; k++) Z[k] = Y[k] + 0.5 * h * k1[k];
      lyap(a, v0, gm, eps, Z, k2);
      for (int k = 0; k < 3; k++) Z[k] = Y[k] + 0.5 * h * k2[k];
      lyap(a, v0, gm, eps, Z, k3);
      for (int k = 0; k < 3; k++) Z[k] = Y[k] + h * k3[k];
      lyap(a, v0, gm, eps, Z, k4);
      for (int k = 0; k < 3; k++) Y[k] += h / 6.0 * (k1[k] + 2 * k2[k] + 2 * k3[k] + k4[k]);
    }
    for (int k = 0; k < 3; k++) ck_assert_double_eq_tol(S[k], Y[k], 1e-9 * (1 + fabs(S[k])));
  }
}
END_TEST

/* 2x2 helpers (row-major m[0..3]). */
static void mul2(const double *A, const double *B, double *C)
{
  double t[4] = {A[0] * B[0] + A[1] * B[2], A[0] * B[1] + A[1] * B[3], A[2] * B[0] + A[3] * B[2],
                 A[2] * B[1] + A[3] * B[3]};
  memcpy(C, t, sizeof t);
}

static void inv2(const double *A, double *B)
{
  const double det = A[0] * A[3] - A[1] * A[2];
  double t[4] = {A[3] / det, -A[1] / det, -A[2] / det, A[0] / det};
  memcpy(B, t, sizeof t);
}

START_TEST(test_exact_epr_trace)
{
  for (int c = 0; c < NCASES; c++) {
    const double a = cases[c][0], v0 = cases[c][1], gm = cases[c][2], eps = cases[c][3];
    for (int dim = 1; dim <= 2; dim++) {
      SgmAoupParams p = trap_params(a, v0, gm, eps, dim);
      SgmTrapExact e;
      ck_assert_int_eq(sgm_score_trap_exact(&p, &e), 0);
      double S[4] = {e.cxx, e.cxg, e.cxg, e.cgg}, Si[4], A[4] = {-a, v0, 0, -gm},
             D[4] = {eps, 0, 0, gm};
      inv2(S, Si);
      double M[4], DSi[4];
      mul2(D, Si, DSi);
      for (int k = 0; k < 4; k++) M[k] = A[k] + DSi[k];
      /* E[v_x²] = (M Σ Mᵀ)_xx, E[v_g²] = (M Σ Mᵀ)_gg */
      double MS[4], Mt[4] = {M[0], M[2], M[1], M[3]}, C[4];
      mul2(M, S, MS);
      mul2(MS, Mt, C);
      const double tx = eps > 0 ? dim * C[0] / eps : 0.0, tg = dim * C[3] / gm;
      ck_assert_double_eq_tol(e.tot_x, tx, 1e-10 * (1 + tx));
      ck_assert_double_eq_tol(e.tot_g, tg, 1e-10 * (1 + tg));
      /* system EPR parts: tr(M) split by block, and ∇·v = 0 per particle */
      ck_assert_double_eq_tol(e.sys_x, dim * M[0], 1e-10 * (1 + fabs(M[0])));
      ck_assert_double_eq_tol(e.sys_g, dim * M[3], 1e-10 * (1 + fabs(M[3])));
      ck_assert_double_eq_tol((e.sys_x + e.sys_g), 0.0, 1e-10 * (fabs(M[0]) + fabs(M[3])) + 1e-14);
      /* ε = 0: the g part alone is μA per component (docs/derivations.md) */
      if (eps == 0.0) ck_assert_double_eq_tol(e.tot, dim * a, 1e-12 * a * dim);
      /* v0 = 0: equilibrium, no entropy production */
      if (v0 == 0.0) ck_assert_double_eq_tol(e.tot, 0.0, 1e-14);
    }
  }
  SgmAoupParams bad = trap_params(1.0, 0.0, 1.0, 0.0, 2);
  SgmTrapExact e;
  ck_assert_int_eq(sgm_score_trap_exact(&bad, &e), -1);
}
END_TEST

static double logp(const double *S, double x, double g)
{
  double Si[4];
  inv2(S, Si);
  return -0.5 * (Si[0] * x * x + 2 * Si[1] * x * g + Si[3] * g * g);
}

START_TEST(test_score_fd)
{
  for (int c = 0; c < NCASES; c++) {
    SgmAoupParams p = trap_params(cases[c][0], cases[c][1], cases[c][2], cases[c][3], 2);
    SgmScoreProvider sp;
    ck_assert_int_eq(sgm_score_provider_create(PETSC_COMM_SELF, "exact_trap", &p, NULL, &sp), 0);
    SgmTrapExact e;
    sgm_score_trap_exact(&p, &e);
    const double S[4] = {e.cxx, e.cxg, e.cxg, e.cgg};
    SgmParticles P;
    memset(&P, 0, sizeof P);
    P.dim = 2;
    ck_assert_int_eq(sgm_particles_reserve(&P, 3), 0);
    P.nlocal = 3;
    const double xs[6] = {0.3, -1.2, 2.5, 0.7, -0.4, -3.1},
                 gs[6] = {0.9, -0.2, -1.4, 0.5, 0.1, 2.2};
    for (int i = 0; i < 3; i++) P.id[i] = i;
    memcpy(P.x, xs, sizeof xs);
    memcpy(P.g, gs, sizeof gs);
    double sx[6], sg[6], dx[3], dg[3];
    ck_assert_int_eq(sgm_score_provider_eval(sp, &P, 0, 3, sx, sg, dx, dg), 0);
    const double h = 1e-5;
    for (int i = 0; i < 3; i++) {
      double divx = 0, divg = 0;
      for (int k = 0; k < 2; k++) {
        const double x = xs[2 * i + k], g = gs[2 * i + k];
        const double fx = (logp(S, x + h, g) - logp(S, x - h, g)) / (2 * h);
        const double fg = (logp(S, x, g + h) - logp(S, x, g - h)) / (2 * h);
        ck_assert_double_eq_tol(sx[2 * i + k], fx, 1e-6 * (1 + fabs(fx)));
        ck_assert_double_eq_tol(sg[2 * i + k], fg, 1e-6 * (1 + fabs(fg)));
        /* divergence: differences of the provider's own score */
        double a1[6], a2[6], b1[6], b2[6], t1, t2, t3, t4;
        P.x[2 * i + k] = x + h;
        sgm_score_provider_eval(sp, &P, i, 1, a1, b1, &t1, &t2);
        P.x[2 * i + k] = x - h;
        sgm_score_provider_eval(sp, &P, i, 1, a2, b2, &t3, &t4);
        P.x[2 * i + k] = x;
        divx += (a1[k] - a2[k]) / (2 * h);
        P.g[2 * i + k] = g + h;
        sgm_score_provider_eval(sp, &P, i, 1, a1, b1, &t1, &t2);
        P.g[2 * i + k] = g - h;
        sgm_score_provider_eval(sp, &P, i, 1, a2, b2, &t3, &t4);
        P.g[2 * i + k] = g;
        divg += (b1[k] - b2[k]) / (2 * h);
      }
      ck_assert_double_eq_tol(dx[i], divx, 1e-6 * (1 + fabs(divx)));
      ck_assert_double_eq_tol(dg[i], divg, 1e-6 * (1 + fabs(divg)));
    }
    sgm_particles_free(&P);
    sgm_score_provider_destroy(&sp);
    ck_assert_ptr_null(sp);
  }
  /* interactions, periodic boxes and unknown names are refused */
  SgmAoupParams p = trap_params(1, 1, 1, 1, 2);
  SgmScoreProvider sp = NULL;
  p.k = 1.0;
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_ne(sgm_score_provider_create(PETSC_COMM_SELF, "exact_trap", &p, NULL, &sp), 0);
  p.k = 0.0;
  ck_assert_int_ne(sgm_score_provider_create(PETSC_COMM_SELF, "no_such_score", &p, NULL, &sp), 0);
  PetscPopErrorHandler();
  ck_assert_ptr_null(sp);
}
END_TEST

START_TEST(test_particle_hand)
{
  /* d = 2, hand-built state; every number below is written out by hand */
  const SgmEprCoeffs c = {2.0, 0.5, 0.25}; /* v0, γ, ε */
  const double g[2] = {1.0, -2.0}, fx[2] = {0.5, 1.5}, sx[2] = {-1.0, 2.0}, sg[2] = {0.5, 0.25};
  double vx[2], vg[2], q[SGM_EPR_NQ];
  sgm_epr_particle(&c, 2, g, fx, sx, sg, -3.0, -4.0, -1.5, vx, vg, q);
  /* v_x = f + v0 g - ε s_x = (0.5 + 2 + 0.25, 1.5 - 4 - 0.5) = (2.75, -3) */
  ck_assert_double_eq_tol(vx[0], 2.75, 1e-15);
  ck_assert_double_eq_tol(vx[1], -3.0, 1e-15);
  /* v_g = -γ g - γ s_g = (-0.5 - 0.25, 1 - 0.125) = (-0.75, 0.875) */
  ck_assert_double_eq_tol(vg[0], -0.75, 1e-15);
  ck_assert_double_eq_tol(vg[1], 0.875, 1e-15);
  const double tx = (2.75 * 2.75 + 9.0) / 0.25, tg = (0.5625 + 0.765625) / 0.5;
  ck_assert_double_eq_tol(q[SGM_EPR_Q_TOT_X], tx, 1e-13);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_TOT_G], tg, 1e-13);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_TOT], tx + tg, 1e-13);
  /* ∇·v_x = ∇·b_x - ε ∇·s_x = -1.5 + 0.75; ∇·v_g = -γ d - γ ∇·s_g = -1 + 2 */
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS_X], -0.75, 1e-15);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS_G], 1.0, 1e-15);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS], 0.25, 1e-15);
  /* v·s = 2.75(-1) + (-3)(2) + (-0.75)(0.5) + 0.875(0.25) = -8.90625 */
  ck_assert_double_eq_tol(q[SGM_EPR_Q_VS], -8.90625, 1e-14);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_FPE], 0.25 - 8.90625, 1e-14);
  /* |s|² + ∇·s = 1 + 4 + 0.25 + 0.0625 - 7 */
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SCORE_IBP], -1.6875, 1e-14);
  /* ε = 0: no x part of the total EPR, v_x = b_x */
  const SgmEprCoeffs c0 = {2.0, 0.5, 0.0};
  sgm_epr_particle(&c0, 2, g, fx, sx, sg, -3.0, -4.0, -1.5, vx, vg, q);
  ck_assert_double_eq_tol(vx[0], 2.5, 1e-15);
  ck_assert(q[SGM_EPR_Q_TOT_X] == 0.0);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_TOT], tg, 1e-13);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS_X], -1.5, 1e-15);
  ck_assert_str_eq(sgm_epr_quantity_name(SGM_EPR_Q_TOT), "epr_total");
  ck_assert_str_eq(sgm_epr_quantity_name(SGM_EPR_Q_VS), "v_dot_s");
}
END_TEST

START_TEST(test_exact_pointwise)
{
  /* with the exact score, ∇·v and v·s vanish on every state (Ω Σ⁻¹ is traceless and v·s is an
   * antisymmetric form); the x and g parts are the derived constants */
  SgmAoupParams p = trap_params(0.05, 1.0, 0.1, 0.1, 2);
  SgmTrapExact e;
  sgm_score_trap_exact(&p, &e);
  SgmScoreProvider sp;
  ck_assert_int_eq(sgm_score_provider_create(PETSC_COMM_SELF, "exact_trap", &p, NULL, &sp), 0);
  SgmParticles P;
  memset(&P, 0, sizeof P);
  P.dim = 2;
  sgm_particles_reserve(&P, 1);
  P.nlocal = 1;
  const double x[2] = {7.0, -3.0}, gg[2] = {0.4, 1.3};
  memcpy(P.x, x, sizeof x), memcpy(P.g, gg, sizeof gg);
  double sx[2], sg[2], dx, dg, vx[2], vg[2], q[SGM_EPR_NQ];
  sgm_score_provider_eval(sp, &P, 0, 1, sx, sg, &dx, &dg);
  const double f[2] = {-p.mu * p.trap_A * x[0], -p.mu * p.trap_A * x[1]};
  const SgmEprCoeffs c = {p.v0, p.gamma, p.eps};
  sgm_epr_particle(&c, 2, gg, f, sx, sg, dx, dg, -p.mu * p.trap_A * 2, vx, vg, q);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS], 0.0, 1e-13);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_VS], 0.0, 1e-12);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS_X], e.sys_x, 1e-13);
  ck_assert_double_eq_tol(q[SGM_EPR_Q_SYS_G], e.sys_g, 1e-13);
  /* v_x = -w s_g, v_g = w s_x */
  for (int k = 0; k < 2; k++) {
    ck_assert_double_eq_tol(vx[k], -e.w * sg[k], 1e-12);
    ck_assert_double_eq_tol(vg[k], e.w * sx[k], 1e-12);
  }
  sgm_particles_free(&P);
  sgm_score_provider_destroy(&sp);
}
END_TEST

START_TEST(test_pair_dforce)
{
  const char *names[] = {"harmonic", "softplus"};
  for (int k = 0; k < 2; k++) {
    const SgmPairPotential *pot = sgm_pair_potential_find(names[k]);
    ck_assert_ptr_nonnull(pot);
    for (double r = 0.3; r < 2.6; r += 0.17) {
      if (fabs(r - 2.0) < 1e-3) continue; /* the harmonic kink */
      const double h = 1e-6;
      const double fd =
          (pot->force(r + h, 1.0, 2.5, 7.5) - pot->force(r - h, 1.0, 2.5, 7.5)) / (2 * h);
      ck_assert_double_eq_tol(sgm_epr_pair_dforce(pot, r, 1.0, 2.5, 7.5), fd, 1e-6);
    }
  }
}
END_TEST

/* ∇_{x_i}·b_x^i of interacting particles against central differences of the engine's forces. */
static void drift_div_fd(int periodic, const char *pot)
{
  SgmAoupParams p = trap_params(periodic ? 0.0 : 0.2, 1.0, 1.0, 0.1, 2);
  const int n = 5;
  p.n = n, p.k = 2.5, p.periodic = periodic, p.L = 16.0;
  strcpy(p.potential, pot);
  SgmAoup s;
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &p, &s), 0);
  /* a cluster with overlaps (r < 2a) across the periodic edge when periodic */
  const double x0[10] = {0.2, 0.3, 1.4, 0.9, 15.6, 0.1, 0.8, 15.5, 3.2, 3.0};
  double x[10], g[10] = {0};
  int64_t id[5] = {0, 1, 2, 3, 4};
  memcpy(x, x0, sizeof x);
  ck_assert_int_eq(sgm_aoup_set_state(s, n, id, x, g, 0), 0);
  ck_assert_int_eq(sgm_aoup_forces(s), 0);
  double div[5], byid[5];
  ck_assert_int_eq(sgm_epr_drift_divergence(s, div), 0);
  for (int i = 0; i < n; i++) byid[s->part.id[i]] = div[i];
  const double h = 1e-6;
  for (int i = 0; i < n; i++) {
    double fd = 0;
    for (int c = 0; c < 2; c++) {
      double fp = 0, fm = 0;
      for (int sgn = -1; sgn <= 1; sgn += 2) {
        memcpy(x, x0, sizeof x);
        x[2 * i + c] += sgn * h;
        ck_assert_int_eq(sgm_aoup_set_state(s, n, id, x, g, 0), 0);
        ck_assert_int_eq(sgm_aoup_forces(s), 0);
        for (int j = 0; j < n; j++)
          if (s->part.id[j] == i) *(sgn > 0 ? &fp : &fm) = s->part.f[2 * j + c];
      }
      fd += (fp - fm) / (2 * h);
    }
    ck_assert_msg(fabs(byid[i] - fd) < 1e-6 * (1 + fabs(fd)),
                  "%s periodic %d particle %d: %g vs %g", pot, periodic, i, byid[i], fd);
  }
  sgm_aoup_destroy(&s);
}

START_TEST(test_drift_divergence)
{
  drift_div_fd(0, "harmonic");
  drift_div_fd(0, "softplus");
  drift_div_fd(1, "softplus");
  drift_div_fd(1, "harmonic");
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("epr");
  TCase *t = tcase_create("epr");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, test_lyapunov);
  tcase_add_test(t, test_exact_epr_trace);
  tcase_add_test(t, test_score_fd);
  tcase_add_test(t, test_particle_hand);
  tcase_add_test(t, test_exact_pointwise);
  tcase_add_test(t, test_pair_dforce);
  tcase_add_test(t, test_drift_divergence);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
