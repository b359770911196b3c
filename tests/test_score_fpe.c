/* Tests of the "fpe_pair" score provider (src/epr/score_fpe.c): the stationary score of two AOUPs
 * in d = 1 from the Fokker-Planck equation of their relative coordinates, at 1, 2 and 4 ranks.
 * Every expectation comes from somewhere else:
 *  - free pair in a trap (k = 0): the Gaussian score of "exact_trap" (Lyapunov), to the grid's
 *    O(dr²) error;
 *  - interacting pairs (the ring of input/ring_mlp.toml; the trap with the 64-swimmer interaction):
 *    the stationary FPE written per configuration, Σ_i [∇_i·v^i + v^i·s^i] = 0 (eq. 23), with the
 *    forces and their derivatives computed here from the potential, so a wrong factor in any score
 *    or divergence term shows as a residual; the exchange symmetry of the two particles;
 *  - the gather over ranks: particles owned by different ranks give the serial values;
 *  - the epr stage with the provider on a short ring trajectory: E[∇·v] = 0 within 4 standard
 *    errors and the pointwise FPE residual far below the spread of ∇·v;
 *  - systems the provider does not solve are refused (create and the input check). */
#include "testutil.h"
#include "epr_util.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/schema.h"
#include "sgm/score_provider.h"
#include "sgm/simulate.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static SgmAoupParams pair_params(int periodic, double L, double A, double k, double v0,
                                 double gamma, double eps)
{
  SgmAoupParams p;
  memset(&p, 0, sizeof p);
  p.dim = 1, p.n = 2, p.L = L, p.periodic = periodic;
  p.mu = 1.0, p.trap_A = A, p.v0 = v0, p.gamma = gamma, p.eps = eps;
  p.a = 1.0, p.k = k, p.beta = 7.5, p.softplus_cut = 12.0, p.dt = 1e-3, p.seed = 1;
  strcpy(p.potential, "softplus");
  return p;
}

static PetscErrorCode register_tables(void)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_schema_register(&sgm_table_run));
  PetscCall(sgm_schema_register(&sgm_table_system));
  PetscCall(sgm_schema_register(&sgm_table_simulate));
  PetscCall(sgm_schema_register(&sgm_table_epr));
  PetscCall(sgm_schema_register_check("epr", sgm_epr_config_check));
  PetscCall(sgm_stage_register("simulate", sgm_stage_simulate, "integrate the system's SDE"));
  PetscCall(sgm_stage_register("epr", sgm_stage_epr, "entropy production"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* A config holding only the [epr] grid keys (the provider reads nothing else from it). */
static SgmConfig grid_config(double dr, int nh)
{
  char text[512];
  SgmConfig cfg;
  ck_assert_int_eq(register_tables(), 0);
  snprintf(text, sizeof text,
           "[run]\nname = \"t\"\nstages = [\"simulate\"]\noutput = \"unused\"\n"
           "[epr]\nscore = \"fpe_pair\"\nfpe_dr = %g\nfpe_nh = %d\n",
           dr, nh);
  ck_assert_int_eq(
      sgm_config_create_from_string(sgm_test_comm(), "fpe_test.toml", text, 0, NULL, &cfg), 0);
  return cfg;
}

START_TEST(test_free_trap)
{
  /* k = 0: every particle is the Gaussian of exact_trap (Σ per component) */
  SgmAoupParams p = pair_params(0, 10.0, 1.0, 0.0, 1.0, 1.0, 0.5);
  SgmConfig cfg = grid_config(0.02, 240);
  SgmScoreProvider fp, ex;
  ck_assert_int_eq(sgm_score_provider_create(sgm_test_comm(), "fpe_pair", &p, cfg, &fp), 0);
  ck_assert_int_eq(sgm_score_provider_create(PETSC_COMM_SELF, "exact_trap", &p, NULL, &ex), 0);
  const double conf[][4] = {{0.3, -1.2, 0.9, -0.2},
                            {2.5, 0.7, -1.4, 0.5},
                            {-0.4, -3.1, 0.1, 1.6},
                            {1.1, 1.0, 0.0, 0.3},
                            {-2.0, 2.2, 1.2, -1.1}};
  for (int c = 0; c < 5; c++) {
    const double *x = conf[c], *g = conf[c] + 2;
    double sx[2], sg[2], dx[2], dg[2], ex_sx[2], ex_sg[2], ex_dx[2], ex_dg[2];
    sgm_test_eval_pair(fp, 1, x, g, sx, sg, dx, dg);
    SgmParticles P;
    memset(&P, 0, sizeof P);
    P.dim = 1;
    ck_assert_int_eq(sgm_particles_reserve(&P, 2), 0);
    P.nlocal = 2, P.id[0] = 0, P.id[1] = 1;
    memcpy(P.x, x, 2 * sizeof(double));
    memcpy(P.g, g, 2 * sizeof(double));
    ck_assert_int_eq(sgm_score_provider_eval(ex, &P, 0, 2, ex_sx, ex_sg, ex_dx, ex_dg), 0);
    sgm_particles_free(&P);
    for (int i = 0; i < 2; i++) {
      ck_assert_double_eq_tol(sx[i], ex_sx[i], 2e-3 * (1 + fabs(ex_sx[i])));
      ck_assert_double_eq_tol(sg[i], ex_sg[i], 2e-3 * (1 + fabs(ex_sg[i])));
      ck_assert_double_eq_tol(dx[i], ex_dx[i], 2e-3 * fabs(ex_dx[i]));
      ck_assert_double_eq_tol(dg[i], ex_dg[i], 2e-3 * fabs(ex_dg[i]));
    }
  }
  sgm_score_provider_destroy(&fp);
  sgm_score_provider_destroy(&ex);
  sgm_config_destroy(&cfg);
}
END_TEST

/* Σ_i [∇_i·v^i + v^i·s^i] at one configuration, with the forces from the potential. */
static double fpe_residual(const SgmAoupParams *p, const double x[2], const double g[2],
                           const double sx[2], const double sg[2], const double dx[2],
                           const double dg[2], double *scale)
{
  double r = x[0] - x[1];
  if (p->periodic) r -= p->L * round(r / p->L);
  const double rc = 2.0 * p->a + p->softplus_cut / p->beta, ar = fabs(r), e = 1e-6;
  double f = 0.0, df = 0.0;
  if (ar < rc) {
    f = sgm_force_softplus(ar, p->a, p->k, p->beta);
    df = (sgm_force_softplus(ar + e, p->a, p->k, p->beta) -
          sgm_force_softplus(ar - e, p->a, p->k, p->beta)) /
         (2 * e);
    f = r > 0 ? f : -f; /* the odd force; its derivative is even */
  }
  double res = 0.0, sc = 0.0;
  for (int i = 0; i < 2; i++) {
    const double Fi = -p->trap_A * x[i] + (i == 0 ? f : -f), dFi = -p->trap_A + df;
    const double vx = p->mu * Fi + p->v0 * g[i] - p->eps * sx[i];
    const double vg = -p->gamma * g[i] - p->gamma * sg[i];
    const double divx = p->mu * dFi - p->eps * dx[i], divg = -p->gamma - p->gamma * dg[i];
    res += divx + divg + vx * sx[i] + vg * sg[i];
    sc += fabs(divx) + fabs(divg) + fabs(vx * sx[i]) + fabs(vg * sg[i]);
  }
  *scale = sc;
  return res;
}

static int cmp_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The FPE residual over a lattice of configurations: at every point below `tol` times the size of
 * its terms (the grid's error grows where the density varies fastest, at overlaps with a large
 * push), and its median below 0.005 (a wrong factor of any divergence term gives >= 0.05). */
static void check_interacting(SgmAoupParams p, SgmConfig cfg, double rlo, double rhi, double tol)
{
  SgmScoreProvider sp;
  ck_assert_int_eq(sgm_score_provider_create(sgm_test_comm(), "fpe_pair", &p, cfg, &sp), 0);
  double worst = 0.0, absres[135];
  int n = 0;
  for (int a = 0; a < 9; a++)
    for (int b = 0; b < 5; b++)
      for (int c = 0; c < 3; c++) {
        const double r = rlo + (rhi - rlo) * a / 8.0, h = -1.2 + 0.6 * b, G = -0.8 + 0.8 * c;
        const double X = p.periodic ? 3.7 : -2.0 + 2.0 * c, sgn = (a + b) % 2 ? 1.0 : -1.0;
        const double x[2] = {X + 0.5 * sgn * r, X - 0.5 * sgn * r};
        const double g[2] = {G + sgn * h, G - sgn * h};
        double sx[2], sg[2], dx[2], dg[2], sc;
        sgm_test_eval_pair(sp, 1, x, g, sx, sg, dx, dg);
        const double res = fpe_residual(&p, x, g, sx, sg, dx, dg, &sc);
        if (getenv("SGM_FPE_TEST_VERBOSE"))
          printf("r %g h %g G %g X %g: residual %g (terms %g)\n", r, h, G, X, res, sc);
        worst = fmax(worst, fabs(res) / sc);
        absres[n++] = fabs(res);
        /* exchanging the particles exchanges the outputs (to the round-off of the solve and the
         * mirrored interpolation) */
        const double xs[2] = {x[1], x[0]}, gs[2] = {g[1], g[0]};
        double tx[2], tg[2], ux[2], ug[2];
        sgm_test_eval_pair(sp, 1, xs, gs, tx, tg, ux, ug);
        for (int i = 0; i < 2; i++) {
          ck_assert_double_eq_tol(tx[i], sx[1 - i], 1e-5 * (1 + fabs(sx[1 - i])));
          ck_assert_double_eq_tol(tg[i], sg[1 - i], 1e-5 * (1 + fabs(sg[1 - i])));
          ck_assert_double_eq_tol(ux[i], dx[1 - i], 1e-5 * (1 + fabs(dx[1 - i])));
          ck_assert_double_eq_tol(ug[i], dg[1 - i], 1e-5 * (1 + fabs(dg[1 - i])));
        }
      }
  qsort(absres, (size_t)n, sizeof(double), cmp_double);
  ck_assert_msg(worst < tol, "FPE residual %g of its terms' size", worst);
  ck_assert_msg(absres[n / 2] < 0.005, "median |FPE residual| %g", absres[n / 2]);
  sgm_score_provider_destroy(&sp);
}

START_TEST(test_ring_residual)
{
  /* input/ring_mlp.toml's system; r from just inside contact to the far side of the ring */
  SgmConfig cfg = grid_config(0.02, 240);
  check_interacting(pair_params(1, 16.0, 0.0, 1.0, 1.0, 0.1, 0.1), cfg, 1.6, 7.9, 0.02);
  sgm_config_destroy(&cfg);
}
END_TEST

START_TEST(test_trap_residual)
{
  /* the 64-swimmer interaction and trap (input/pair_trap_fpe.toml) */
  SgmConfig cfg = grid_config(0.04, 160);
  check_interacting(pair_params(0, 10.0, 0.05, 2.5, 1.0, 0.1, 0.1), cfg, 1.7, 20.0, 0.04);
  sgm_config_destroy(&cfg);
}
END_TEST

START_TEST(test_refusals)
{
  SgmScoreProvider sp = NULL;
  SgmAoupParams bad[5];
  bad[0] = pair_params(1, 16.0, 0.0, 1.0, 1.0, 0.1, 0.1), bad[0].n = 3;
  bad[1] = pair_params(1, 16.0, 0.0, 1.0, 1.0, 0.1, 0.1), bad[1].dim = 2;
  bad[2] = pair_params(1, 16.0, 0.0, 1.0, 1.0, 0.1, 0.0);  /* eps = 0 */
  bad[3] = pair_params(0, 16.0, 0.0, 1.0, 1.0, 0.1, 0.1);  /* open, no trap */
  bad[4] = pair_params(1, 16.0, 0.05, 1.0, 1.0, 0.1, 0.1); /* ring with a trap */
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  for (int c = 0; c < 5; c++) {
    char why[256];
    ck_assert_int_eq(sgm_score_fpe_pair_requirements(&bad[c], why, sizeof why), 0);
    ck_assert_msg(why[0], "case %d accepted", c);
    ck_assert_int_eq(sgm_score_provider_create(sgm_test_comm(), "fpe_pair", &bad[c], NULL, &sp),
                     SGM_ERR_USER);
    ck_assert_ptr_null(sp);
  }
  PetscPopErrorHandler();
}
END_TEST

START_TEST(test_input_check)
{
  /* the input check names epr.score for a system the provider does not solve */
  const char *text = "[run]\nname = \"t\"\nstages = [\"epr\"]\noutput = \"unused\"\n"
                     "[system]\ndim = 2\nn = 64\nboundary = \"open\"\ntrap_A = 0.05\n"
                     "[epr]\nscore = \"fpe_pair\"\n";
  SgmConfig cfg = NULL;
  ck_assert_int_eq(register_tables(), 0);
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  PetscErrorCode ierr =
      sgm_config_create_from_string(sgm_test_comm(), "bad.toml", text, 0, NULL, &cfg);
  PetscPopErrorHandler();
  ck_assert_int_eq(ierr, SGM_ERR_USER);
  ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_stage_ring)
{
  /* the epr stage on a short ring trajectory with the exact pair score */
  const char *dir = sgm_test_tmpdir("fpe_ring");
  char text[2048];
  snprintf(text, sizeof text,
           "[run]\nname = \"fpe_ring\"\nseed = 7\nstages = [\"simulate\", \"epr\"]\n"
           "overwrite = true\noutput = \"%s\"\n"
           "[system]\ndim = 1\nn = 2\nL = 16.0\nmu = 1.0\nv0 = 1.0\ngamma = 0.1\neps = 0.1\n"
           "a = 1.0\nk = 1.0\npotential = \"softplus\"\nbeta = 7.5\nsoftplus_cut = 12.0\n"
           "boundary = \"periodic\"\n"
           "[simulate]\ndt = 1e-3\nn_equil = 10000\nn_steps = 400000\nframe_every = 100\n"
           "relax_steps = 50\nskin = 0.3\n"
           "[epr]\nscore = \"fpe_pair\"\nbatches = 10\nclassify = false\nwrite_fields = false\n",
           dir);
  SgmConfig cfg;
  SgmRun *run;
  ck_assert_int_eq(register_tables(), 0);
  ck_assert_int_eq(
      sgm_config_create_from_string(sgm_test_comm(), "fpe_ring.toml", text, 0, NULL, &cfg), 0);
  ck_assert_int_eq(sgm_run_create(sgm_test_comm(), cfg, NULL, &run), 0);
  ck_assert_int_eq(sgm_run_stages(run), 0);
  ck_assert_int_eq(sgm_run_destroy(&run), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  char path[1024];
  snprintf(path, sizeof path, "%s/metrics.json", dir);
  char *js = sgm_test_slurp(path);
  const double dm = sgm_test_metric(js, "epr", "div_v_mean"),
               dse = sgm_test_metric(js, "epr", "div_v_se");
  free(js);
  ck_assert_msg(fabs(dm) < 4 * dse, "E[div v] = %g +- %g", dm, dse);
  /* per particle the residual is not 0, only its sum over the pair: the per-frame series (the
   * pair's mean) against the spread of the system EPR's series; frames where the particles
   * overlap (r ~ 0, where the odd pair force jumps) are rare and excluded by counting */
  snprintf(path, sizeof path, "%s/epr.h5", dir);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_int_ge(f, 0);
  hid_t d1 = H5Dopen2(f, "series/fpe_residual", H5P_DEFAULT),
        d2 = H5Dopen2(f, "series/epr_system", H5P_DEFAULT);
  ck_assert(d1 >= 0 && d2 >= 0);
  hid_t sp = H5Dget_space(d1);
  const hssize_t T = H5Sget_simple_extent_npoints(sp);
  ck_assert_int_eq(T, 4001);
  double *res = malloc(sizeof(double) * (size_t)T), *sys = malloc(sizeof(double) * (size_t)T);
  ck_assert_int_ge(H5Dread(d1, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, res), 0);
  ck_assert_int_ge(H5Dread(d2, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, sys), 0);
  H5Sclose(sp), H5Dclose(d1), H5Dclose(d2), H5Fclose(f);
  double m = 0, v = 0;
  for (hssize_t t = 0; t < T; t++) m += sys[t];
  m /= (double)T;
  for (hssize_t t = 0; t < T; t++) v += (sys[t] - m) * (sys[t] - m);
  const double sd = sqrt(v / (double)(T - 1));
  int64_t big = 0;
  for (hssize_t t = 0; t < T; t++) big += fabs(res[t]) > 0.02 * sd;
  ck_assert_msg(sd > 0.1, "std of the system EPR series %g", sd);
  ck_assert_msg(big <= T / 200, "%lld of %lld frames with |FPE residual| > 0.02 std(div v) = %g",
                (long long)big, (long long)T, 0.02 * sd);
  free(res), free(sys);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("score_fpe");
  TCase *t = tcase_create("core");
  tcase_set_timeout(t, 300);
  tcase_add_test(t, test_free_trap);
  tcase_add_test(t, test_ring_residual);
  tcase_add_test(t, test_trap_residual);
  tcase_add_test(t, test_refusals);
  tcase_add_test(t, test_input_check);
  tcase_add_test(t, test_stage_ring);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
