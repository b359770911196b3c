/* The interface analysis of the `epr` stage and the score-provider error path.
 *
 * Classes: a constructed periodic configuration (2D, L = 40, a = 1) with known phases — a
 * hexagonal slab of touching disks (dense bulk inside, interface at its two edges) and a sparse
 * square grid of gas particles — written as a two-frame trajectory (the second frame translated
 * across the periodic boundary). A test provider "test_lin" gives s_x = 0, s_g = -2g, so
 * v_g = -γ g - γ s_g = γ g exactly; g is set per region (dense 0.1, interface 1, gas 0.2 along
 * x), so the mean |v_g|² of each class and the two ratios are known. Checked at 1, 2, 4 ranks:
 *  - phi_local and phase_class of every particle of epr.h5 against this file's brute-force
 *    O(N²) minimum-image count with the same definition, and the intended geometry (slab centre
 *    dense, slab edges interface, gas dilute);
 *  - the per-class counts, mean |v_g|², mean total EPR and the ratios in metrics.json against the
 *    brute-force classes and the stored v_g (1e-12);
 *  - epr.xdmf names both new attributes.
 * Provider error path: a registered provider whose create allocates its context, sets destroy and
 * then fails is released through its destroy (the leak fixed in score_provider.c), and
 * sgm_score_provider_create returns the error with the handle untouched. */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LBOX  40.0
#define RLOC  5.0
#define PHILO 0.3
#define PHIHI 0.6
#define NMAX  512

static int np;
static double X0[NMAX * 2], G0[NMAX * 2];
static int region[NMAX]; /* intended: 0 gas, 1 slab edge row, 2 slab inner row */

static void build_config(void)
{
  const double s3 = sqrt(3.0);
  const int rows = 10;
  np = 0;
  /* slab: rows along y (spacing 2, periodic in y), stacked along x at spacing √3 */
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < 20; j++) {
      X0[2 * np] = 1.0 + r * s3;
      X0[2 * np + 1] = 2.0 * j + (r % 2 ? 1.0 : 0.0);
      region[np] = (r == 0 || r == rows - 1) ? 1 : ((r >= 3 && r <= rows - 4) ? 2 : 3);
      np++;
    }
  /* gas: a 2 x 5 grid far from the slab (distances > 7 to every slab particle) */
  for (int c = 0; c < 2; c++)
    for (int j = 0; j < 5; j++) {
      X0[2 * np] = 26.0 + 6.0 * c;
      X0[2 * np + 1] = 8.0 * j + 4.0;
      region[np] = 0;
      np++;
    }
  for (int i = 0; i < np; i++) {
    const double gx = region[i] == 1 ? 1.0 : (region[i] == 0 ? 0.2 : 0.1);
    G0[2 * i] = gx, G0[2 * i + 1] = 0.0;
  }
}

/* brute-force local packing fraction of particle i in positions x */
static double phi_brute(const double *x, int i)
{
  int cnt = 0;
  for (int j = 0; j < np; j++) {
    if (j == i) continue;
    double r2 = 0;
    for (int k = 0; k < 2; k++) {
      double d = x[2 * i + k] - x[2 * j + k];
      d -= LBOX * round(d / LBOX);
      r2 += d * d;
    }
    cnt += r2 < RLOC * RLOC;
  }
  return cnt / (RLOC * RLOC);
}

static PetscErrorCode write_traj(const char *path, const double *x1)
{
  PetscMPIInt rank;
  SgmH5mdInfo info = {2, np, 1, LBOX, "all", "test", NULL, 0, NULL, NULL};
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(sgm_test_comm(), &rank));
  PetscCall(sgm_h5md_create(sgm_test_comm(), path, &info));
  const int64_t cnt = rank ? 0 : np;
  PetscCall(sgm_h5md_append(sgm_test_comm(), path, "all", 0, 0, 0.0, 2, 0, cnt, X0, G0));
  PetscCall(sgm_h5md_append(sgm_test_comm(), path, "all", 1, 10, 1.0, 2, 0, cnt, x1, G0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode run_epr(const char *dir)
{
  char text[4096];
  SgmConfig cfg;
  SgmRun *run;
  PetscFunctionBeginUser;
  snprintf(text, sizeof text,
           "[run]\nname = \"cls\"\nseed = 3\nstages = [\"epr\"]\noverwrite = true\n"
           "output = \"%s\"\n"
           "[system]\ndim = 2\nn = %d\nL = %g\nmu = 1.0\nv0 = 1.0\ngamma = 1.0\neps = 0.0\n"
           "a = 1.0\nk = 0.0\nboundary = \"periodic\"\n"
           "[epr]\nscore = \"test_lin\"\nbatches = 2\nwrite_fields = false\n"
           "local_radius = %g\nphi_dilute = %g\nphi_dense = %g\n",
           dir, np, LBOX, RLOC, PHILO, PHIHI);
  PetscCall(
      sgm_score_provider_register("test_lin", sgm_test_lin_score_create, "s_g = -2 g (test)"));
  PetscCall(sgm_config_create_from_string(sgm_test_comm(), "cls.toml", text, 0, NULL, &cfg));
  PetscCall(sgm_run_create(sgm_test_comm(), cfg, NULL, &run));
  PetscCall(sgm_run_stages(run));
  PetscCall(sgm_run_destroy(&run));
  PetscCall(sgm_config_destroy(&cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

START_TEST(test_interface_classes)
{
  const char *dir = sgm_test_tmpdir("epr_classes");
  char path[1024];
  double x1[NMAX * 2];
  build_config();
  /* frame 1: translated by (13.3, 7.7), wrapped into [0, L) */
  for (int i = 0; i < np; i++)
    for (int k = 0; k < 2; k++) {
      double u = X0[2 * i + k] + (k ? 7.7 : 13.3);
      x1[2 * i + k] = u - LBOX * floor(u / LBOX);
    }
  snprintf(path, sizeof path, "%s/trajectory.h5", dir);
  ck_assert_int_eq(write_traj(path, x1), 0);
  ck_assert_int_eq(run_epr(dir), 0);

  snprintf(path, sizeof path, "%s/epr.h5", dir);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_int_ge(f, 0);
  size_t nphi, ncls, nvg;
  double *phi = sgm_test_read_all(f, "phi_local", &nphi),
         *cls = sgm_test_read_all(f, "phase_class", &ncls);
  double *vg = sgm_test_read_all(f, "velocity_g", &nvg),
         *tot = sgm_test_read_all(f, "epr_total", &nvg);
  ck_assert_uint_eq(nphi, 2 * (size_t)np);
  ck_assert_uint_eq(ncls, 2 * (size_t)np);
  double cnt[3] = {0}, s_vg2[3] = {0}, s_tot[3] = {0}, s_lb[3] = {0};
  for (int t = 0; t < 2; t++) {
    const double *x = t ? x1 : X0;
    for (int i = 0; i < np; i++) {
      const double pb = phi_brute(x, i);
      const int cb = sgm_epr_phase_class(pb, PHILO, PHIHI);
      ck_assert_msg(fabs(phi[t * np + i] - pb) < 1e-12, "phi of %d at frame %d: %g vs %g", i, t,
                    phi[t * np + i], pb);
      ck_assert_msg((int)cls[t * np + i] == cb, "class of %d: %g vs %d", i, cls[t * np + i], cb);
      /* intended geometry */
      if (region[i] == 0) ck_assert_int_eq(cb, SGM_EPR_CLASS_DILUTE);
      if (region[i] == 1) ck_assert_int_eq(cb, SGM_EPR_CLASS_INTERFACE);
      if (region[i] == 2) ck_assert_int_eq(cb, SGM_EPR_CLASS_DENSE);
      /* v_g = γ g exactly */
      const double *v = vg + ((size_t)t * np + i) * 2;
      ck_assert(fabs(v[0] - G0[2 * i]) < 1e-14 && fabs(v[1]) < 1e-14);
      cnt[cb] += 1;
      s_vg2[cb] += v[0] * v[0] + v[1] * v[1];
      s_tot[cb] += tot[t * np + i];
      /* the exact-score bound's summand 2γ(∇_g·v_g - g·v_g) - |v_g|^2 with s_g = -2g, γ = 1,
       * d = 2: ∇_g·v_g = -γ(d + ∇·s_g) = 2 and v_g = g, so 4 - 3|g|^2 */
      s_lb[cb] += 4.0 - 3.0 * (G0[2 * i] * G0[2 * i] + G0[2 * i + 1] * G0[2 * i + 1]);
    }
  }
  H5Fclose(f);
  free(phi), free(cls), free(vg), free(tot);
  for (int c = 0; c < 3; c++) ck_assert_msg(cnt[c] >= 20, "class %d has %g members", c, cnt[c]);

  snprintf(path, sizeof path, "%s/metrics.json", dir);
  char *js = sgm_test_slurp(path);
  double vg2[3];
  for (int c = 0; c < 3; c++) {
    char k[64];
    vg2[c] = s_vg2[c] / cnt[c];
    snprintf(k, sizeof k, "class_count_%s", sgm_epr_class_names[c]);
    ck_assert_double_eq_tol(sgm_test_metric(js, "epr", k), cnt[c] / 2.0, 1e-12);
    snprintf(k, sizeof k, "vg2_%s", sgm_epr_class_names[c]);
    ck_assert_double_eq_tol(sgm_test_metric(js, "epr", k), vg2[c], 1e-12 * vg2[c]);
    snprintf(k, sizeof k, "epr_total_%s", sgm_epr_class_names[c]);
    ck_assert_double_eq_tol(sgm_test_metric(js, "epr", k), s_tot[c] / cnt[c], 1e-12 * vg2[c]);
    snprintf(k, sizeof k, "vg2_exact_lower_%s", sgm_epr_class_names[c]);
    ck_assert_double_eq_tol(sgm_test_metric(js, "epr", k), s_lb[c] / cnt[c], 1e-12 * (1 + vg2[c]));
  }
  /* the constructed answer: interface |g| = 1, dense 0.1, gas 0.2 */
  ck_assert_double_eq_tol(vg2[SGM_EPR_CLASS_INTERFACE], 1.0, 1e-12);
  ck_assert_double_eq_tol(sgm_test_metric(js, "epr", "vg2_ratio_interface_dense"), 100.0, 1e-9);
  ck_assert_double_eq_tol(sgm_test_metric(js, "epr", "vg2_ratio_interface_dilute"), 25.0, 1e-9);
  free(js);
  snprintf(path, sizeof path, "%s/epr.xdmf", dir);
  char *xd = sgm_test_slurp(path);
  ck_assert(strstr(xd, "Name=\"phi_local\"") && strstr(xd, "Name=\"phase_class\""));
  free(xd);
}
END_TEST

/* ---- provider create failure releases the partly built provider ---- */
static int fail_destroyed, fail_allocated;

static PetscErrorCode fail_destroy(SgmScoreProvider sp)
{
  PetscFunctionBeginUser;
  fail_destroyed++;
  PetscCall(PetscFree(sp->ctx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode fail_create(SgmScoreProvider sp, SgmConfig cfg)
{
  double *buf;
  (void)cfg;
  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(1000, &buf));
  fail_allocated++;
  sp->ctx = buf;
  sp->destroy = fail_destroy;
  SETERRQ(sp->comm, SGM_ERR_USER, "test provider: create fails after allocating its context");
}

static PetscErrorCode noeval_create(SgmScoreProvider sp, SgmConfig cfg)
{
  (void)cfg;
  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(10, (double **)&sp->ctx));
  fail_allocated++;
  sp->destroy = fail_destroy;
  PetscFunctionReturn(PETSC_SUCCESS);
}

START_TEST(test_provider_create_failure)
{
  SgmAoupParams p;
  SgmScoreProvider sp = NULL;
  memset(&p, 0, sizeof p);
  p.dim = 2, p.n = 4;
  ck_assert_int_eq(sgm_score_provider_register("test_fail", fail_create, "fails"), 0);
  ck_assert_int_eq(sgm_score_provider_register("test_noeval", noeval_create, "no eval"), 0);
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  PetscErrorCode e1 = sgm_score_provider_create(sgm_test_comm(), "test_fail", &p, NULL, &sp);
  PetscErrorCode e2 = sgm_score_provider_create(sgm_test_comm(), "test_noeval", &p, NULL, &sp);
  /* "exact_trap" refuses a periodic box before allocating: nothing to release */
  p.periodic = 1;
  PetscErrorCode e3 = sgm_score_provider_create(sgm_test_comm(), "exact_trap", &p, NULL, &sp);
  PetscPopErrorHandler();
  ck_assert_int_eq(e1, SGM_ERR_USER);
  ck_assert_int_eq(e2, PETSC_ERR_PLIB);
  ck_assert_int_eq(e3, SGM_ERR_USER);
  ck_assert_ptr_null(sp);
  ck_assert_int_eq(fail_allocated, 2);
  ck_assert_int_eq(fail_destroyed, 2);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("epr_classes");
  TCase *t = tcase_create("classes");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, test_interface_classes);
  tcase_add_test(t, test_provider_create_failure);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
