/* Probability-flow trajectories of the `epr` stage (eq. 7) with PETSc TS, at 1, 2 and 4 ranks.
 *  - Trap with the exact score: N = 400 particles drawn from the stationary Gaussian N(0, Σ)
 *    (Lyapunov covariance) are flowed to t = 3 at rtol 1e-10. The trap's v = M z is linear,
 *    M = (AΣ + D) Σ⁻¹ per Cartesian component, so every particle at every output must equal
 *    exp(M t) z0 (matrix exponential by scaling and squaring in this file) to 1e-7; the sample
 *    covariance of the flowed particles must stay at Σ within 4 statistical standard errors (the
 *    flow preserves the stationary law) and equal exp(Mt) S0 exp(Mt)ᵀ to 1e-7.
 *  - Periodic, interacting (harmonic pairs), particles spread over every rank's patch, with a test
 *    provider s_x = 0, s_g = -2g: then v_g = γ g, so g(t) = g0 e^{γt} exactly whatever the
 *    positions do (checked to 1e-7 at every output), and the first output after t1 = 1e-4
 *    satisfies (x(t1) - x0)/t1 = v_x(x0) + O(t1), with v_x(x0) = μF + v0 g read from epr.h5 of
 *    the same frame (tolerance 0.01).
 *  - The files: flow_f<frame>.h5 (H5MD: position/orientation value [outputs+1][N][d], time) and
 *    flow_f<frame>.xdmf exist. */
#include "testutil.h"
#include "epr_util.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/h5md.h"
#include "sgm/score_provider.h"
#include "sgm/simulate.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double urand(uint64_t *s)
{
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) / 9007199254740992.0;
}
static double nrand(uint64_t *s)
{
  const double u = urand(s) + 1e-300, v = urand(s);
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static PetscErrorCode run_text(const char *text)
{
  SgmConfig cfg;
  SgmRun *run;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_create_from_string(sgm_test_comm(), "flow.toml", text, 0, NULL, &cfg));
  PetscCall(sgm_run_create(sgm_test_comm(), cfg, NULL, &run));
  PetscCall(sgm_run_stages(run));
  PetscCall(sgm_run_destroy(&run));
  PetscCall(sgm_config_destroy(&cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode write_traj(const char *path, int n, int periodic, double L, const double *x,
                                 const double *g)
{
  PetscMPIInt rank;
  SgmH5mdInfo info = {2, n, periodic, L, "all", "test", NULL, 0, NULL, NULL};
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(sgm_test_comm(), &rank));
  PetscCall(sgm_h5md_create(sgm_test_comm(), path, &info));
  PetscCall(sgm_h5md_append(sgm_test_comm(), path, "all", 0, 100, 1.0, 2, 0, rank ? 0 : n, x, g));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static double *read_all(const char *file, const char *name, size_t *n)
{
  hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open %s", file);
  double *v = sgm_test_read_all(f, name, n);
  H5Fclose(f);
  return v;
}

/* E = exp(M t) for a 2x2 M: Taylor series of M t / 2^s, then s squarings. */
static void expm2(const double M[2][2], double t, double E[2][2])
{
  const int s = 20;
  const double h = t / (double)(1 << s);
  double T[2][2] = {{1, 0}, {0, 1}}, R[2][2] = {{1, 0}, {0, 1}};
  for (int k = 1; k <= 12; k++) {
    double U[2][2];
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++) U[i][j] = (T[i][0] * M[0][j] + T[i][1] * M[1][j]) * h / k;
    memcpy(T, U, sizeof T);
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++) R[i][j] += T[i][j];
  }
  for (int q = 0; q < s; q++) {
    double U[2][2];
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++) U[i][j] = R[i][0] * R[0][j] + R[i][1] * R[1][j];
    memcpy(R, U, sizeof R);
  }
  memcpy(E, R, sizeof R);
}

#define NT 400
START_TEST(test_flow_trap)
{
  const char *dir = sgm_test_tmpdir("epr_flow_trap");
  const double MU = 1.0, A = 0.5, V0 = 1.0, GAM = 1.0, EPS = 0.2, TF = 3.0;
  const int NOUT = 3;
  char path[1024], text[4096];
  double cxx, cxg, cgg;
  sgm_score_trap_covariance(MU * A, V0, GAM, EPS, &cxx, &cxg, &cgg);
  /* stationary samples per component: (x, g) = chol(Σ) ξ */
  static double x[NT * 2], g[NT * 2];
  uint64_t st = 2024;
  const double l11 = sqrt(cxx), l21 = cxg / l11, l22 = sqrt(cgg - l21 * l21);
  for (int i = 0; i < NT * 2; i++) {
    const double a = nrand(&st), b = nrand(&st);
    x[i] = l11 * a;
    g[i] = l21 * a + l22 * b;
  }
  snprintf(path, sizeof path, "%s/trajectory.h5", dir);
  ck_assert_int_eq(write_traj(path, NT, 0, 10.0, x, g), 0);
  snprintf(text, sizeof text,
           "[run]\nname = \"flow\"\nseed = 1\nstages = [\"epr\"]\noverwrite = true\n"
           "output = \"%s\"\n"
           "[system]\ndim = 2\nn = %d\nL = 10.0\nmu = %g\nv0 = %g\ngamma = %g\neps = %g\n"
           "a = 1.0\nk = 0.0\ntrap_A = %g\nboundary = \"open\"\n"
           "[epr]\nscore = \"exact_trap\"\nbatches = 2\nwrite_particles = false\n"
           "write_fields = false\nflow_frames = [0]\nflow_time = %g\nflow_outputs = %d\n"
           "flow_rtol = 1e-10\nflow_atol = 1e-12\n",
           dir, NT, MU, V0, GAM, EPS, A, TF, NOUT);
  ck_assert_int_eq(run_text(text), 0);
  snprintf(path, sizeof path, "%s/flow_f0.xdmf", dir);
  ck_assert(access(path, F_OK) == 0);
  snprintf(path, sizeof path, "%s/flow_f0.h5", dir);
  size_t nx, ng, nt;
  double *fx = read_all(path, "/particles/all/position/value", &nx);
  double *fg = read_all(path, "/particles/all/orientation/value", &ng);
  double *ft = read_all(path, "/particles/all/position/time", &nt);
  ck_assert_uint_eq(nx, (size_t)(NOUT + 1) * NT * 2);
  ck_assert_uint_eq(nt, (size_t)NOUT + 1);
  /* M = (AΣ + D) Σ⁻¹ with A = [[-μA, v0], [0, -γ]], D = diag(ε, γ) */
  const double det = cxx * cgg - cxg * cxg;
  const double Si[2][2] = {{cgg / det, -cxg / det}, {-cxg / det, cxx / det}};
  const double Am[2][2] = {{-MU * A, V0}, {0, -GAM}}, Dm[2] = {EPS, GAM};
  const double Sg[2][2] = {{cxx, cxg}, {cxg, cgg}};
  double W[2][2], M[2][2];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++)
      W[i][j] = Am[i][0] * Sg[0][j] + Am[i][1] * Sg[1][j] + (i == j) * Dm[i];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) M[i][j] = W[i][0] * Si[0][j] + W[i][1] * Si[1][j];
  double maxerr = 0;
  for (int o = 0; o <= NOUT; o++) {
    ck_assert_double_eq_tol(ft[o], TF * o / NOUT, 1e-12);
    double E[2][2];
    expm2(M, ft[o], E);
    double S[3] = {0}, S0[3] = {0};
    for (int i = 0; i < NT * 2; i++) {
      const double ex = E[0][0] * x[i] + E[0][1] * g[i], eg = E[1][0] * x[i] + E[1][1] * g[i];
      const double ax = fx[(size_t)o * NT * 2 + i], ag = fg[(size_t)o * NT * 2 + i];
      maxerr = fmax(maxerr, fmax(fabs(ax - ex), fabs(ag - eg)));
      S[0] += ax * ax, S[1] += ax * ag, S[2] += ag * ag;
      S0[0] += x[i] * x[i], S0[1] += x[i] * g[i], S0[2] += g[i] * g[i];
    }
    const double m = NT * 2;
    for (int k = 0; k < 3; k++) S[k] /= m, S0[k] /= m;
    /* preserved law: within 4 standard errors of Σ (Gaussian: var(z_a z_b) = Σaa Σbb + Σab²) */
    ck_assert_msg(fabs(S[0] - cxx) < 4 * sqrt(2 * cxx * cxx / m), "cov xx %g vs %g", S[0], cxx);
    ck_assert_msg(fabs(S[1] - cxg) < 4 * sqrt((cxx * cgg + cxg * cxg) / m), "cov xg %g vs %g", S[1],
                  cxg);
    ck_assert_msg(fabs(S[2] - cgg) < 4 * sqrt(2 * cgg * cgg / m), "cov gg %g vs %g", S[2], cgg);
    /* and exactly the push-forward of the initial sample covariance */
    const double S0m[2][2] = {{S0[0], S0[1]}, {S0[1], S0[2]}};
    double P[2][2];
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++) {
        P[i][j] = 0;
        for (int a = 0; a < 2; a++)
          for (int b = 0; b < 2; b++) P[i][j] += E[i][a] * S0m[a][b] * E[j][b];
      }
    ck_assert(fabs(P[0][0] - S[0]) < 1e-7 && fabs(P[0][1] - S[1]) < 1e-7 &&
              fabs(P[1][1] - S[2]) < 1e-7);
  }
  ck_assert_msg(maxerr < 1e-7, "flow vs matrix exponential: max error %g", maxerr);
  /* the test is not vacuous: the flow moved the particles by O(1) */
  double moved = 0;
  for (int i = 0; i < NT * 2; i++) moved = fmax(moved, fabs(fx[(size_t)NOUT * NT * 2 + i] - x[i]));
  ck_assert(moved > 0.1);
  free(fx), free(fg), free(ft);
}
END_TEST

#define NPB 80
START_TEST(test_flow_periodic)
{
  const char *dir = sgm_test_tmpdir("epr_flow_periodic");
  const double L = 16.0, GAM = 0.7, T1 = 1e-4;
  const int NOUT = 4;
  char path[1024], text[4096];
  static double x[NPB * 2], g[NPB * 2];
  uint64_t st = 99;
  for (int i = 0; i < NPB * 2; i++) x[i] = urand(&st) * L, g[i] = nrand(&st);
  snprintf(path, sizeof path, "%s/trajectory.h5", dir);
  ck_assert_int_eq(write_traj(path, NPB, 1, L, x, g), 0);
  ck_assert_int_eq(
      sgm_score_provider_register("test_lin_flow", sgm_test_lin_score_create, "s_g = -2 g"), 0);
  snprintf(text, sizeof text,
           "[run]\nname = \"flowp\"\nseed = 1\nstages = [\"epr\"]\noverwrite = true\n"
           "output = \"%s\"\n"
           "[system]\ndim = 2\nn = %d\nL = %g\nmu = 1.0\nv0 = 1.0\ngamma = %g\neps = 0.0\n"
           "a = 1.0\nk = 1.0\npotential = \"harmonic\"\nboundary = \"periodic\"\n"
           "[epr]\nscore = \"test_lin_flow\"\nbatches = 2\nwrite_fields = false\n"
           "classify = false\nflow_frames = [0]\nflow_time = %g\nflow_outputs = %d\n"
           "flow_rtol = 1e-10\nflow_atol = 1e-12\n",
           dir, NPB, L, GAM, T1 * NOUT, NOUT);
  ck_assert_int_eq(run_text(text), 0);
  snprintf(path, sizeof path, "%s/flow_f0.h5", dir);
  size_t nx, ng, nt, nv;
  double *fx = read_all(path, "/particles/all/position/value", &nx);
  double *fg = read_all(path, "/particles/all/orientation/value", &ng);
  double *ft = read_all(path, "/particles/all/position/time", &nt);
  snprintf(path, sizeof path, "%s/epr.h5", dir);
  double *vx = read_all(path, "velocity_x", &nv);
  ck_assert_uint_eq(nv, (size_t)NPB * 2);
  for (int o = 0; o <= NOUT; o++)
    for (int i = 0; i < NPB * 2; i++)
      ck_assert_msg(fabs(fg[(size_t)o * NPB * 2 + i] - g[i] * exp(GAM * ft[o])) < 1e-7,
                    "g of %d at output %d", i, o);
  double maxdev = 0, maxv = 0;
  for (int i = 0; i < NPB * 2; i++) {
    double d = fx[NPB * 2 + i] - x[i];
    d -= L * round(d / L);
    ck_assert(fx[NPB * 2 + i] >= 0 && fx[NPB * 2 + i] < L); /* stored wrapped */
    maxdev = fmax(maxdev, fabs(d / ft[1] - vx[i]));
    maxv = fmax(maxv, fabs(vx[i]));
  }
  ck_assert_msg(maxdev < 0.01, "(x(t1) - x0)/t1 vs v_x(x0): %g", maxdev);
  ck_assert(maxv > 0.5); /* forces and v0 g make v_x O(1) */
  free(fx), free(fg), free(ft), free(vx);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("epr_flow");
  TCase *t = tcase_create("flow");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, test_flow_trap);
  tcase_add_test(t, test_flow_periodic);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
