/* End-to-end test of the `epr` stage: simulate 64 non-interacting AOUPs in a harmonic trap, run
 * epr with the exact score, then check, at 1, 2 and 4 ranks:
 *  - files and shapes (epr.h5, epr.xdmf, fields.h5, fields.xdmf);
 *  - every stored score, velocity and EPR value against this file's own evaluation of the
 *    formulas on the stored (x, g) (round-off);
 *  - the global EPR against the analytic value: the expectation of |v|²_{D⁻¹} under the exact
 *    stationary covariance S of the *scheme* (docs/derivations.md), so the only error is
 *    statistical: 4 batch-means standard errors; and the continuum value within that plus the
 *    O(dt) difference;
 *  - E[∇·v] = 0 within 3 SE (it vanishes pointwise for the exact score) and E[|s|² + ∇·s] within
 *    3 SE of its expectation under S (and of 0 within 3 SE plus the O(dt) bias);
 *  - the score-error estimate (series sm_loss_x, sm_loss_g, div_b, score_error) against the
 *    formulas on the stored scores (round-off) and within 4 SE of its expectation under S; for a
 *    score 50 % too large (test_epr_score_error) within 4 SE of its expectation under S, 6 SE
 *    away from 0, and metrics.json consistent with the series.
 * With --long (LABELS long) the run is 10x longer at a 5x smaller dt, and the continuum values
 * are checked with 3 SE only. */
#include "testutil.h"
#include "sgm/app.h"
#include "sgm/epr.h"
#include "sgm/score_provider.h"
#include "sgm/simulate.h"

#include <hdf5.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static int long_run;

/* system of the test: μA = 1, v0 = 1, γ = 1, ε = 0.5, d = 2, N = 64 */
static const double MUA = 1.0, V0 = 1.0, GAM = 1.0, EPS = 0.5;
#define NP  64
#define DIM 2

static PetscErrorCode register_stages(void)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_schema_register(&sgm_table_system));
  PetscCall(sgm_schema_register(&sgm_table_simulate));
  PetscCall(sgm_schema_register(&sgm_table_epr));
  PetscCall(sgm_stage_register("simulate", sgm_stage_simulate, "integrate the system's SDE"));
  PetscCall(sgm_stage_register("epr", sgm_stage_epr, "entropy production"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode run_text(const char *text)
{
  SgmConfig cfg;
  SgmRun *run;
  PetscFunctionBeginUser;
  PetscCall(register_stages());
  PetscCall(sgm_config_create_from_string(sgm_test_comm(), "epr_test.toml", text, 0, NULL, &cfg));
  PetscCall(sgm_run_create(sgm_test_comm(), cfg, NULL, &run));
  PetscCall(sgm_run_stages(run));
  PetscCall(sgm_run_destroy(&run));
  PetscCall(sgm_config_destroy(&cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode run_stages(const char *outdir, const char *score, double dt, int64_t nsteps,
                                 int64_t every)
{
  char text[4096];
  PetscFunctionBeginUser;
  snprintf(text, sizeof text,
           "[run]\nname = \"epr_test\"\nseed = 11\nstages = [\"simulate\", \"epr\"]\n"
           "overwrite = true\noutput = \"%s\"\n"
           "[system]\ndim = %d\nn = %d\nL = 6.0\nmu = 1.0\nv0 = %g\ngamma = %g\neps = %g\na = 1.0\n"
           "k = 0.0\npotential = \"harmonic\"\ntrap_A = %g\nboundary = \"open\"\n"
           "[simulate]\ndt = %g\nn_equil = %lld\nn_steps = %lld\nframe_every = %lld\n"
           "g_update = \"exact\"\nrelax_steps = 0\n"
           "[epr]\nscore = \"%s\"\nbatches = 10\ngrid = [16, 16]\n",
           outdir, DIM, NP, V0, GAM, EPS, MUA, dt, (long long)(8.0 / dt), (long long)nsteps,
           (long long)every, score);
  PetscCall(run_text(text));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Reads a whole dataset (serially) and its shape. */
static double *read_all(hid_t f, const char *name, int *ndims, hsize_t dims[3])
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  ck_assert_msg(d >= 0, "dataset %s missing", name);
  hid_t sp = H5Dget_space(d);
  *ndims = H5Sget_simple_extent_ndims(sp);
  H5Sget_simple_extent_dims(sp, dims, NULL);
  size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
  double *v = malloc(sizeof(double) * (n + 1));
  ck_assert_int_ge(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
  H5Sclose(sp), H5Dclose(d);
  return v;
}

/* epr.h5 of run directory dir, open read-only (the test fails if it cannot be opened) */
static hid_t open_epr(const char *dir)
{
  char path[1024];
  snprintf(path, sizeof path, "%s/epr.h5", dir);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open %s", path);
  return f;
}

static int exists(const char *dir, const char *name)
{
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return access(p, F_OK) == 0;
}

static void batch_mean_se(const double *v, int64_t T, int nb, double *mean, double *se)
{
  double m = 0, b[64], bm = 0, bs = 0;
  int64_t t = 0;
  for (int k = 0; k < nb; k++) {
    int64_t len = T / nb + (k < T % nb);
    b[k] = 0;
    for (int64_t u = 0; u < len; u++) b[k] += v[t++];
    m += b[k];
    b[k] /= (double)len;
    bm += b[k];
  }
  bm /= nb;
  for (int k = 0; k < nb; k++) bs += (b[k] - bm) * (b[k] - bm);
  *mean = m / (double)T;
  *se = sqrt(bs / (nb - 1) / nb);
}

/* The trap's stationary covariance Σ of one component (docs/derivations.md) and its inverse. */
typedef struct {
  double cxx, cxg, ixx, ixg, igg;
} TrapSigma;
static TrapSigma trap_sigma(void)
{
  TrapSigma t;
  t.cxg = V0 / (MUA + GAM), t.cxx = EPS / MUA + V0 * V0 / (MUA * (MUA + GAM));
  const double det = t.cxx - t.cxg * t.cxg;
  t.ixx = 1.0 / det, t.ixg = -t.cxg / det, t.igg = t.cxx / det;
  return t;
}

/* The covariance S (row-major 2x2) of one component under the simulated scheme at step dt (x
 * Euler-Maruyama, g exact OU; docs/derivations.md, "The integrator's own stationary covariance").
 */
static void scheme_S(double dt, double S[4])
{
  const double rho = exp(-GAM * dt), c = 1 - MUA * dt, b = V0 * dt;
  const double Sxg = rho * b / (1 - rho * c),
               Sxx = (2 * c * b * Sxg + b * b + 2 * EPS * dt) / (1 - c * c);
  S[0] = Sxx, S[1] = S[2] = Sxg, S[3] = 1.0;
}

/* Expectation per particle of the score-error summand |ŝ|²_D + 2 ∇·(D ŝ) - ∇·b of the trap for
 * ŝ = (1 + c) s, s = -Σ⁻¹ z the continuum score, over z ~ N(0, S) (S the 2x2 covariance of one
 * component, row-major): d [(1 + c)² tr(Σ⁻¹ D Σ⁻¹ S) - 2 (1 + c) tr(D Σ⁻¹) - tr A] with
 * A = [[-μA, v0], [0, -γ]]. At S = Σ it is c² d tr(D Σ⁻¹) = c² E|s|²_D. */
static double trap_error_S(double c, const double S[4])
{
  const TrapSigma ts = trap_sigma();
  const double ixx = ts.ixx, ixg = ts.ixg, igg = ts.igg;
  const double Q[4] = {EPS * ixx * ixx + GAM * ixg * ixg, EPS * ixx * ixg + GAM * ixg * igg,
                       EPS * ixx * ixg + GAM * ixg * igg, EPS * ixg * ixg + GAM * igg * igg};
  const double trQS = Q[0] * S[0] + Q[1] * S[1] + Q[2] * S[2] + Q[3] * S[3];
  return DIM * ((1 + c) * (1 + c) * trQS - 2 * (1 + c) * (EPS * ixx + GAM * igg) + MUA + GAM);
}

static void epr_e2e(const char *tag, double dt, int64_t nsteps, int64_t every, double nse_cont)
{
  const char *dir = sgm_test_tmpdir(tag);
  ck_assert_int_eq(run_stages(dir, "exact_trap", dt, nsteps, every), 0);
  const char *files[] = {"epr.h5", "epr.xdmf", "fields.h5", "fields.xdmf", "metrics.json"};
  for (int i = 0; i < 5; i++) ck_assert_msg(exists(dir, files[i]), "%s missing", files[i]);
  const int64_t T = nsteps / every + 1;
  char path[1024];
  hid_t f = open_epr(dir);
  int nd;
  hsize_t dims[3];
  double *vec[6];
  const char *vn[6] = {"position", "orientation", "score_x", "score_g", "velocity_x", "velocity_g"};
  for (int v = 0; v < 6; v++) {
    vec[v] = read_all(f, vn[v], &nd, dims);
    ck_assert_int_eq(nd, 3);
    ck_assert_int_eq(dims[0], T);
    ck_assert_int_eq(dims[1], NP);
    ck_assert_int_eq(dims[2], DIM);
  }
  double *q[SGM_EPR_NQ];
  for (int k = 0; k < SGM_EPR_NQ; k++) {
    q[k] = read_all(f, sgm_epr_quantity_name(k), &nd, dims);
    ck_assert_int_eq(nd, 2);
    ck_assert_int_eq(dims[0], T);
    ck_assert_int_eq(dims[1], NP);
  }
  double *idv = read_all(f, "id", &nd, dims);
  ck_assert_int_eq(dims[0], NP);
  for (int i = 0; i < NP; i++) ck_assert_double_eq(idv[i], i);
  free(idv);
  double *st = read_all(f, "step", &nd, dims);
  ck_assert_int_eq(dims[0], T);
  ck_assert_double_eq((st[1] - st[0]), (double)every);
  free(st);
  double *ser = read_all(f, "series/epr_total", &nd, dims);
  ck_assert_int_eq(dims[0], T);

  /* the formulas, written here from docs/derivations.md */
  const TrapSigma ts = trap_sigma();
  const double cxx = ts.cxx, cxg = ts.cxg, ixx = ts.ixx, ixg = ts.ixg, igg = ts.igg;
  double maxerr = 0;
  for (int64_t t = 0; t < T; t++)
    for (int i = 0; i < NP; i++) {
      double tx = 0, tg = 0;
      for (int k = 0; k < DIM; k++) {
        const size_t o = ((size_t)t * NP + i) * DIM + k;
        const double x = vec[0][o], g = vec[1][o];
        const double sx = -(ixx * x + ixg * g), sg = -(ixg * x + igg * g);
        const double vx = -MUA * x + V0 * g - EPS * sx, vg = -GAM * g - GAM * sg;
        const double ref[4] = {sx, sg, vx, vg};
        for (int v = 0; v < 4; v++)
          maxerr = fmax(maxerr, fabs(vec[2 + v][o] - ref[v]) / (1 + fabs(ref[v])));
        tx += vx * vx / EPS, tg += vg * vg / GAM;
      }
      const size_t o = (size_t)t * NP + i;
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_TOT_X][o] - tx) / (1 + tx));
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_TOT_G][o] - tg) / (1 + tg));
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_TOT][o] - tx - tg) / (1 + tx + tg));
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_SYS_X][o] - DIM * (-MUA + EPS * ixx)));
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_SYS_G][o] - DIM * (-GAM + GAM * igg)));
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_SYS][o]));
      maxerr = fmax(maxerr, fabs(q[SGM_EPR_Q_VS][o]) / (1 + tx + tg));
    }
  ck_assert_msg(maxerr < 1e-12, "stored values differ from the formulas by %g", maxerr);

  /* per-frame means per particle; the stage's series must be the mean of the stored rows */
  double *fr[SGM_EPR_NQ];
  for (int k = 0; k < SGM_EPR_NQ; k++) {
    fr[k] = calloc((size_t)T, sizeof(double));
    for (int64_t t = 0; t < T; t++) {
      for (int i = 0; i < NP; i++) fr[k][t] += q[k][(size_t)t * NP + i];
      fr[k][t] /= NP;
    }
  }
  for (int64_t t = 0; t < T; t++)
    ck_assert_double_eq_tol(ser[t], fr[SGM_EPR_Q_TOT][t], 1e-12 * (1 + fr[SGM_EPR_Q_TOT][t]));

  /* expectations under the scheme's stationary covariance S (exact OU update of g) */
  double S[4];
  scheme_S(dt, S);
  /* M = A + D Σ⁻¹, E_S[(M z)_a (M z)_b] = (M S Mᵀ)_ab */
  const double M[4] = {-MUA + EPS * ixx, V0 + EPS * ixg, GAM * ixg, -GAM + GAM * igg};
  double MS[4] = {M[0] * S[0] + M[1] * S[2], M[0] * S[1] + M[1] * S[3], M[2] * S[0] + M[3] * S[2],
                  M[2] * S[1] + M[3] * S[3]};
  const double Cxx = MS[0] * M[0] + MS[1] * M[1], Cgg = MS[2] * M[2] + MS[3] * M[3];
  const double epr_S = DIM * (Cxx / EPS + Cgg / GAM);
  /* continuum: S = Σ */
  const double Sc[4] = {cxx, cxg, cxg, 1.0};
  double MSc[4] = {M[0] * Sc[0] + M[1] * Sc[2], M[0] * Sc[1] + M[1] * Sc[3],
                   M[2] * Sc[0] + M[3] * Sc[2], M[2] * Sc[1] + M[3] * Sc[3]};
  const double epr_c =
      DIM * ((MSc[0] * M[0] + MSc[1] * M[1]) / EPS + (MSc[2] * M[2] + MSc[3] * M[3]) / GAM);
  /* E_S[|s|² + ∇·s] = d [tr(Σ⁻¹ S Σ⁻¹) - tr Σ⁻¹] */
  const double Iv[4] = {ixx, ixg, ixg, igg};
  double IS[4] = {Iv[0] * S[0] + Iv[1] * S[2], Iv[0] * S[1] + Iv[1] * S[3],
                  Iv[2] * S[0] + Iv[3] * S[2], Iv[2] * S[1] + Iv[3] * S[3]};
  const double ibp_S =
      DIM * (IS[0] * Iv[0] + IS[1] * Iv[2] + IS[2] * Iv[1] + IS[3] * Iv[3] - (ixx + igg));

  double m, se;
  batch_mean_se(fr[SGM_EPR_Q_TOT], T, 10, &m, &se);
  PetscPrintf(sgm_test_comm(),
              "epr e2e (dt %g, %lld frames): EPR per particle %.5f +- %.5f; exact under the "
              "scheme's S %.5f, continuum %.5f\n",
              dt, (long long)T, m, se, epr_S, epr_c);
  ck_assert_msg(fabs(m - epr_S) < 4 * se, "EPR %g vs %g (S) beyond 4 SE = %g", m, epr_S, 4 * se);
  ck_assert_msg(fabs(m - epr_c) < nse_cont * se + fabs(epr_S - epr_c),
                "EPR %g vs continuum %g beyond %g SE + dt bias", m, epr_c, nse_cont);
  /* the stored global EPR is N times the mean per particle */
  double eg;
  hid_t a = H5Aopen(f, "epr_global", H5P_DEFAULT);
  ck_assert_int_ge(a, 0);
  H5Aread(a, H5T_NATIVE_DOUBLE, &eg);
  H5Aclose(a);
  ck_assert_double_eq_tol(eg, NP * m, 1e-9 * NP * m);

  batch_mean_se(fr[SGM_EPR_Q_SYS], T, 10, &m, &se);
  PetscPrintf(sgm_test_comm(), "  E(div v) = %.3e +- %.1e\n", m, se);
  ck_assert_msg(fabs(m) <= 3 * se + 1e-12, "E[div v] = %g, SE %g", m, se);
  batch_mean_se(fr[SGM_EPR_Q_SCORE_IBP], T, 10, &m, &se);
  PetscPrintf(sgm_test_comm(), "  E(|s|^2 + div s) = %.4f +- %.4f (under S: %.4f)\n", m, se, ibp_S);
  ck_assert_msg(fabs(m - ibp_S) < 3 * se, "E[|s|^2 + div s] = %g vs %g, SE %g", m, ibp_S, se);
  ck_assert_msg(fabs(m) < 3 * se + fabs(ibp_S), "E[|s|^2 + div s] = %g, SE %g", m, se);
  batch_mean_se(fr[SGM_EPR_Q_FPE], T, 10, &m, &se);
  ck_assert(fabs(m) < 1e-10);

  /* the score-error series (sgm_epr_score_terms) against the formulas on the stored scores, and
   * its expectation under S (0 under Σ: the exact score has no error) */
  double *ssx = read_all(f, "series/sm_loss_x", &nd, dims);
  ck_assert_int_eq(dims[0], T);
  double *ssg = read_all(f, "series/sm_loss_g", &nd, dims),
         *sdb = read_all(f, "series/div_b", &nd, dims);
  double *serr = read_all(f, "series/score_error", &nd, dims);
  maxerr = 0;
  for (int64_t t = 0; t < T; t++) {
    double lx = 0, lg = 0;
    for (int i = 0; i < NP; i++)
      for (int k = 0; k < DIM; k++) {
        const size_t o = ((size_t)t * NP + i) * DIM + k;
        lx += EPS * (vec[2][o] * vec[2][o] - 2 * ixx) / NP;
        lg += GAM * (vec[3][o] * vec[3][o] - 2 * igg) / NP;
      }
    const double db = -DIM * (MUA + GAM);
    maxerr = fmax(maxerr, fabs(ssx[t] - lx) + fabs(ssg[t] - lg) + fabs(sdb[t] - db));
    maxerr = fmax(maxerr, fabs(serr[t] - (lx + lg - db)));
  }
  ck_assert_msg(maxerr < 1e-12, "score-error series differ from the formulas by %g", maxerr);
  const double err_S = trap_error_S(0.0, S);
  batch_mean_se(serr, T, 10, &m, &se);
  PetscPrintf(sgm_test_comm(), "  score error %.4f +- %.4f (under S: %.4f, continuum 0)\n", m, se,
              err_S);
  ck_assert_msg(fabs(m - err_S) < 4 * se, "score error %g vs %g (S) beyond 4 SE = %g", m, err_S,
                4 * se);
  ck_assert_msg(fabs(m) < nse_cont * se + fabs(err_S), "score error %g, SE %g", m, se);
  free(ssx), free(ssg), free(sdb), free(serr);
  H5Fclose(f);

  /* fields: every particle-frame is binned (auto extent) */
  snprintf(path, sizeof path, "%s/fields.h5", dir);
  f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_int_ge(f, 0);
  double *cnt = read_all(f, "count", &nd, dims), tot = 0;
  ck_assert_int_eq(nd, 2);
  ck_assert_int_eq(dims[0], 16);
  ck_assert_int_eq(dims[1], 16);
  for (int i = 0; i < 256; i++) tot += cnt[i];
  ck_assert_double_eq(tot, (double)(T * NP));
  double *dens = read_all(f, "density", &nd, dims), *et = read_all(f, "epr_total", &nd, dims);
  double wsum = 0;
  for (int i = 0; i < 256; i++) wsum += et[i] * cnt[i];
  double all = 0;
  for (size_t o = 0; o < (size_t)T * NP; o++) all += q[SGM_EPR_Q_TOT][o];
  ck_assert_double_eq_tol(wsum, all, 1e-9 * all);
  free(cnt), free(dens), free(et);
  H5Fclose(f);
  snprintf(path, sizeof path, "%s/epr.xdmf", dir);
  FILE *fp = fopen(path, "r");
  ck_assert_ptr_nonnull(fp);
  int grids = 0;
  char line[4096];
  while (fgets(line, sizeof line, fp))
    if (strstr(line, "Polyvertex")) grids++;
  fclose(fp);
  ck_assert_int_eq(grids, T);
  for (int v = 0; v < 6; v++) free(vec[v]);
  for (int k = 0; k < SGM_EPR_NQ; k++) free(q[k]), free(fr[k]);
  free(ser);
}

START_TEST(test_epr_trap_e2e)
{
  if (long_run)
    epr_e2e("epr_trap_long", 0.002, 500000, 250, 3.0);
  else
    epr_e2e("epr_trap", 0.02, 6000, 15, 4.0);
}
END_TEST

/* A provider registered by the test, as a learned model would be: s_x = 0, s_g = -g. Then
 * v_x = b_x (pair forces + v0 g), v_g = 0, and ∇_x·v_x is the drift divergence alone. */
static PetscErrorCode gonly_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                 int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  (void)sp;
  for (int64_t u = 0; u < count; u++) {
    for (int k = 0; k < P->dim; k++)
      sx[u * P->dim + k] = 0.0, sg[u * P->dim + k] = -P->g[(i0 + u) * P->dim + k];
    divx[u] = 0.0, divg[u] = -(double)P->dim;
  }
  return PETSC_SUCCESS;
}

static PetscErrorCode gonly_create(SgmScoreProvider sp, SgmConfig cfg)
{
  (void)cfg;
  sp->eval = gonly_eval;
  sp->range = 6.0; /* wider than the interaction range: the stage widens the ghost layer */
  return PETSC_SUCCESS;
}

/* Softplus force and its derivative (k = 2.5, a = 1, β = 7.5), written out for the check. */
static double sp_f(double r)
{
  return 2.5 * log1p(exp(7.5 * (2.0 - r))) / 7.5;
}
static double sp_df(double r)
{
  return -2.5 / (1.0 + exp(-7.5 * (2.0 - r)));
}

START_TEST(test_epr_periodic_provider)
{
  /* interacting MIPS-like system in a periodic box, decomposed at 1, 2 or 4 ranks: the stored
   * forces-based velocity and the drift divergence against an O(N²) minimum-image evaluation */
  const char *dir = sgm_test_tmpdir("epr_periodic");
  char text[4096];
  ck_assert_int_eq(sgm_score_provider_register("test_g_only", gonly_create, "test"), 0);
  snprintf(text, sizeof text,
           "[run]\nname = \"epr_per\"\nseed = 7\nstages = [\"simulate\", \"epr\"]\n"
           "overwrite = true\noutput = \"%s\"\n"
           "[system]\ndim = 2\nn = 200\nphi = 0.4\nv0 = 1.0\ngamma = 1.0\neps = 0.1\nk = 2.5\n"
           "potential = \"softplus\"\n"
           "[simulate]\ndt = 0.01\nn_equil = 20\nn_steps = 60\nframe_every = 20\nrelax_steps = 10\n"
           "[epr]\nscore = \"test_g_only\"\nfirst = 1\nstride = 2\n",
           dir);
  ck_assert_int_eq(run_text(text), 0);
  const int n = 200, T = 2; /* frames 1 and 3 of 4 */
  const double L = sqrt(n * M_PI / 0.4), rc = 2.0 + 16.0 / 7.5;
  char path[1024];
  snprintf(path, sizeof path, "%s/epr.h5", dir);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_int_ge(f, 0);
  int nd;
  hsize_t dims[3];
  double *x = read_all(f, "position", &nd, dims), *g = read_all(f, "orientation", &nd, dims);
  ck_assert_int_eq(dims[0], T);
  ck_assert_int_eq(dims[1], n);
  double *vx = read_all(f, "velocity_x", &nd, dims), *vg = read_all(f, "velocity_g", &nd, dims);
  double *sysx = read_all(f, "epr_system_x", &nd, dims),
         *totx = read_all(f, "epr_total_x", &nd, dims);
  double *sysg = read_all(f, "epr_system_g", &nd, dims);
  double *st = read_all(f, "step", &nd, dims);
  ck_assert_double_eq(st[0], 40.0);
  ck_assert_double_eq(st[1], 80.0);
  double maxerr = 0;
  int npairs = 0;
  for (int t = 0; t < T; t++)
    for (int i = 0; i < n; i++) {
      const double *xi = x + ((size_t)t * n + i) * 2;
      double F[2] = {0, 0}, div = 0;
      for (int j = 0; j < n; j++) {
        if (j == i) continue;
        const double *xj = x + ((size_t)t * n + j) * 2;
        double d[2];
        for (int k = 0; k < 2; k++) d[k] = xi[k] - xj[k], d[k] -= L * nearbyint(d[k] / L);
        const double r = hypot(d[0], d[1]);
        if (r >= rc) continue;
        npairs++;
        for (int k = 0; k < 2; k++) F[k] += sp_f(r) * d[k] / r;
        div += sp_df(r) + sp_f(r) / r;
      }
      const size_t o = (size_t)t * n + i;
      double v2 = 0;
      for (int k = 0; k < 2; k++) {
        const double ref = F[k] + g[2 * o + k];
        maxerr = fmax(maxerr, fabs(vx[2 * o + k] - ref) / (1 + fabs(ref)));
        ck_assert(vg[2 * o + k] == 0.0);
        v2 += vx[2 * o + k] * vx[2 * o + k];
      }
      maxerr = fmax(maxerr, fabs(sysx[o] - div) / (1 + fabs(div)));
      maxerr = fmax(maxerr, fabs(totx[o] - v2 / 0.1) / (1 + v2 / 0.1));
      ck_assert_double_eq_tol(sysg[o], 0.0, 1e-14);
    }
  ck_assert_msg(npairs > n, "too few interacting pairs (%d) for a meaningful check", npairs);
  ck_assert_msg(maxerr < 1e-10, "periodic EPR differs from the O(N^2) evaluation by %g", maxerr);
  free(x), free(g), free(vx), free(vg), free(sysx), free(totx), free(sysg), free(st);
  H5Fclose(f);
  /* maps on the DMDA grid: every particle-frame lands in a cell */
  snprintf(path, sizeof path, "%s/fields.h5", dir);
  f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  double *cnt = read_all(f, "count", &nd, dims), tot = 0;
  /* the engine's cell grid: at most L / rc cells per dimension (wider with a Verlet skin) */
  ck_assert_int_eq(dims[0], dims[1]);
  ck_assert(dims[0] >= 3 && (double)dims[0] <= L / rc);
  for (hsize_t c = 0; c < dims[0] * dims[1]; c++) tot += cnt[c];
  ck_assert_double_eq(tot, (double)(T * n));
  free(cnt);
  H5Fclose(f);
}
END_TEST

/* A wrong score, as a poorly trained model would give: ŝ = (1 + SCALE_C) s_exact of the trap. */
static const double SCALE_C = 0.5;
static PetscErrorCode scaled_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                  int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  (void)sp;
  const TrapSigma ts = trap_sigma();
  const double ixx = ts.ixx, ixg = ts.ixg, igg = ts.igg;
  const double f = 1.0 + SCALE_C;
  for (int64_t u = 0; u < count; u++) {
    const double *x = P->x + (i0 + u) * DIM, *g = P->g + (i0 + u) * DIM;
    for (int k = 0; k < DIM; k++) {
      sx[u * DIM + k] = -f * (ixx * x[k] + ixg * g[k]);
      sg[u * DIM + k] = -f * (ixg * x[k] + igg * g[k]);
    }
    divx[u] = -f * DIM * ixx, divg[u] = -f * DIM * igg;
  }
  return PETSC_SUCCESS;
}

static PetscErrorCode scaled_create(SgmScoreProvider sp, SgmConfig cfg)
{
  (void)cfg;
  sp->eval = scaled_eval;
  return PETSC_SUCCESS;
}

START_TEST(test_epr_score_error)
{
  /* the score-error estimate of a score 50 % too large: within 4 SE of its expectation under
   * the scheme's S, 6 SE away from 0; metrics.json's mean, SE and relative error agree */
  const char *dir = sgm_test_tmpdir("epr_scaled");
  const double dt = 0.02;
  const int64_t nsteps = 6000, every = 15, T = nsteps / every + 1;
  ck_assert_int_eq(sgm_score_provider_register("test_trap_scaled", scaled_create, "test"), 0);
  ck_assert_int_eq(run_stages(dir, "test_trap_scaled", dt, nsteps, every), 0);
  char path[1024];
  hid_t f = open_epr(dir);
  int nd;
  hsize_t dims[3];
  double *serr = read_all(f, "series/score_error", &nd, dims);
  double *sdb = read_all(f, "series/div_b", &nd, dims);
  ck_assert_int_eq(dims[0], T);
  H5Fclose(f);
  double S[4];
  scheme_S(dt, S);
  const TrapSigma ts = trap_sigma();
  const double Sc[4] = {ts.cxx, ts.cxg, ts.cxg, 1.0};
  const double eS = trap_error_S(SCALE_C, S), ec = trap_error_S(SCALE_C, Sc);
  double m, se, all = 0;
  batch_mean_se(serr, T, 10, &m, &se);
  PetscPrintf(sgm_test_comm(),
              "score error of (1 + %g) s_exact: %.4f +- %.4f (under S %.4f, continuum %.4f)\n",
              SCALE_C, m, se, eS, ec);
  ck_assert_msg(fabs(m - eS) < 4 * se, "score error %g vs %g beyond 4 SE = %g", m, eS, 4 * se);
  ck_assert_msg(m > 6 * se, "score error %g not resolved from 0 (SE %g)", m, se);
  for (int64_t t = 0; t < T; t++) all += sdb[t] / (double)T;
  ck_assert_double_eq_tol(all, -DIM * (MUA + GAM), 1e-12);
  snprintf(path, sizeof path, "%s/metrics.json", dir);
  char *js = sgm_test_slurp(path);
  ck_assert_double_eq_tol(sgm_test_metric(js, "epr", "score_error_mean"), m, 1e-9 * fabs(m));
  ck_assert_double_eq_tol(sgm_test_metric(js, "epr", "score_error_se"), se, 1e-6 * se);
  ck_assert_double_eq_tol(sgm_test_metric(js, "epr", "score_energy"), DIM * (MUA + GAM), 1e-9);
  ck_assert_double_eq_tol(sgm_test_metric(js, "epr", "score_error_rel"),
                          sqrt(m / (DIM * (MUA + GAM))), 1e-6);
  free(js), free(serr), free(sdb);
}
END_TEST

START_TEST(test_example_input)
{
  char path[1024];
  SgmConfig cfg;
  ck_assert_int_eq(register_stages(), 0);
  snprintf(path, sizeof path, "%s/input/trap_exact_epr.toml", SGM_SOURCE_DIR);
  ck_assert_int_eq(sgm_config_create(sgm_test_comm(), path, 0, NULL, &cfg), 0);
  SgmAoupParams p;
  ck_assert_int_eq(sgm_aoup_params_from_config(cfg, 1, &p), 0);
  SgmScoreProvider sp;
  ck_assert_int_eq(sgm_score_provider_create(sgm_test_comm(), "exact_trap", &p, cfg, &sp), 0);
  sgm_score_provider_destroy(&sp);
  ck_assert_int_eq(p.n, 64);
  sgm_config_destroy(&cfg);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("epr_stage");
  TCase *t = tcase_create("e2e");
  tcase_set_timeout(t, long_run ? 900 : 120);
  tcase_add_test(t, test_epr_trap_e2e);
  if (!long_run) {
    tcase_add_test(t, test_epr_periodic_provider);
    tcase_add_test(t, test_epr_score_error);
    tcase_add_test(t, test_example_input);
  }
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--long")) long_run = 1;
  return sgm_test_main(argc, argv, suite());
}
