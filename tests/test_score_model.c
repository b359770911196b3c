/* Test of the "model" score provider (src/epr/score_model.c): a tiny local transformer with its
 * PyTorch-default initial weights is saved to model.h5 with nn_io, 48 random particles in a
 * periodic box are given to an engine (each rank owns its part), and the provider's s_x, s_g and
 * divergences of every particle are compared, at 1, 2 and 4 ranks, with a direct serial call of an
 * independently loaded copy of the model on windows built here by brute force (K nearest by
 * minimum image, ties by id): 1e-6 relative. The divergences are also checked against central
 * finite differences of the direct model's output w.r.t. the centre's g (and x, whose shift moves
 * every neighbour displacement by -h) for a few particles. Two variants: learn = "xg" with the
 * Boltzmann-informed s_g = -g + N_g, and learn = "g" (s_x = 0) with max_batch not dividing the
 * number of owned particles (several chunks). */
#include "testutil.h"
#include "sgm/score_model.h"
#include "sgm/simulate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NP  48
#define DIM 2

/* Relative difference of float32 network outputs: |a - b| over the larger of |b| and `scale`,
 * the largest |value| of that quantity over the particles (the batch composition of the BLAS
 * products differs between the provider and the direct call, so values much smaller than their
 * quantity's scale differ in their last float bits relative to that scale). */
static double reldiff(double a, double b, double scale)
{
  return fabs(a - b) / fmax(fabs(b), scale);
}

/* Brute-force window of centre c: X, G (K+1, DIM) floats. */
static void brute_window(const double *x, const double *g, double L, int K, int c, float *X,
                         float *G)
{
  double d2[NP];
  int order[NP], n = 0;
  for (int j = 0; j < NP; j++) {
    if (j == c) continue;
    double s = 0;
    for (int k = 0; k < DIM; k++) {
      const double dk = sgm_min_image(x[j * DIM + k] - x[c * DIM + k], L);
      s += dk * dk;
    }
    d2[j] = s;
    int q = n++;
    while (q > 0 && (d2[order[q - 1]] > s || (d2[order[q - 1]] == s && order[q - 1] > j))) {
      order[q] = order[q - 1];
      q--;
    }
    order[q] = j;
  }
  for (int t = 0; t <= K; t++) {
    const int j = t == 0 ? c : order[t - 1];
    for (int k = 0; k < DIM; k++) {
      X[t * DIM + k] = t == 0 ? 0.0f : (float)sgm_min_image(x[j * DIM + k] - x[c * DIM + k], L);
      G[t * DIM + k] = (float)g[j * DIM + k];
    }
  }
}

/* s_g (and s_x) of one window from the direct model, in double. */
static PetscErrorCode direct(SgmScoreModelSpec *ms, const float *X, const float *G, double *sx,
                             double *sg, double *divx, double *divg)
{
  float out[2 * DIM], dv[1];
  const int og = ms->learn_x ? DIM : 0;
  PetscFunctionBeginUser;
  PetscCall(sgm_nn_transformer_forward(ms->m, out, X, G, NULL, 1));
  for (int k = 0; k < DIM; k++) {
    sx[k] = ms->learn_x ? out[k] : 0.0;
    sg[k] = out[og + k] - (ms->boltzmann ? G[k] : 0.0);
  }
  *divx = 0;
  if (ms->learn_x) {
    PetscCall(sgm_nn_transformer_divergence(ms->m, SGM_NN_INPUT_X, dv));
    *divx = dv[0];
  }
  PetscCall(sgm_nn_transformer_divergence(ms->m, SGM_NN_INPUT_G, dv));
  *divg = dv[0] - (ms->boltzmann ? DIM : 0.0);
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode check_variant(const char *learn, int boltzmann, int max_batch)
{
  MPI_Comm comm = sgm_test_comm();
  const char *dir = sgm_test_tmpdir("score_model");
  char text[12288], path[PETSC_MAX_PATH_LEN];
  SgmConfig cfg;
  SgmAoupParams p;
  SgmScoreModelSpec ms, ref;
  SgmScoreProvider sp;
  SgmAoup s;
  const int K = 6;
  PetscFunctionBeginUser;
  snprintf(path, sizeof path, "%s/tiny_model.h5", dir);
  snprintf(text, sizeof text,
           "[run]\nname = \"t\"\noutput = \"%s\"\nseed = 7\nstages = []\n"
           "[system]\nkind = \"aoup\"\ndim = 2\nn = %d\nphi = 0.4\nmu = 1.0\nv0 = 0.5\n"
           "gamma = 1.0\neps = 0.0\na = 1.0\nk = 1.0\nboundary = \"periodic\"\n"
           "[model]\nd_e = 8\nlayers = 1\nheads = 2\nK = %d\nmlp_hidden = 16\n"
           "embed_hidden = 8\nembed_depth = 1\ndec_hidden = 8\ndec_depth = 1\n"
           "learn = \"%s\"\nboltzmann = %s\nmax_batch = %d\n"
           "[epr]\nscore = \"model\"\nmodel = \"%s\"\n",
           dir, NP, K, learn, boltzmann ? "true" : "false", max_batch, path);
  PetscCall(sgm_config_create_from_string(comm, "score_model_test.toml", text, 0, NULL, &cfg));
  PetscCall(sgm_aoup_params_from_config(cfg, 7, &p));
  /* a model with its initial weights, saved with nn_io */
  PetscCall(sgm_score_model_from_config(comm, cfg, DIM, 11, &ms));
  PetscCall(
      sgm_nn_save(comm, path, sgm_nn_transformer_params(ms.m), ms.narch, ms.arch, 0, NULL, NULL));
  PetscCall(sgm_nn_transformer_destroy(&ms.m));
  /* an independent copy: different init seed, then the file's weights */
  PetscCall(sgm_score_model_from_config(comm, cfg, DIM, 99, &ref));
  PetscCall(sgm_nn_load(comm, path, sgm_nn_transformer_params(ref.m), ref.narch, ref.arch, NULL));

  /* the same random state on every rank */
  double x[NP * DIM], g[NP * DIM];
  int64_t ids[NP];
  uint64_t st = 12345;
  for (int i = 0; i < NP * DIM; i++) {
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    const double u = (double)(st >> 11) / 9007199254740992.0;
    x[i] = u * p.L;
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    g[i] = 2.0 * (double)(st >> 11) / 9007199254740992.0 - 1.0;
  }
  for (int i = 0; i < NP; i++) ids[i] = i;
  PetscCall(sgm_score_provider_create(comm, "model", &p, cfg, &sp));
  ck_assert_double_eq(sp->range, 0.0);
  PetscCall(sgm_aoup_create(comm, &p, &s));
  PetscCall(sgm_aoup_set_state(s, NP, ids, x, g, 0));
  const SgmParticles *P = &s->part;
  const int64_t nl = P->nlocal;
  double *sx, *sg, *dx, *dg, all[NP][2 * DIM + 2];
  PetscCall(PetscMalloc4(nl * DIM + 1, &sx, nl * DIM + 1, &sg, nl + 1, &dx, nl + 1, &dg));
  /* two calls: the first half, then the rest (batches of the caller) */
  PetscCall(sgm_score_provider_eval(sp, P, 0, nl / 2, sx, sg, dx, dg));
  PetscCall(sgm_score_provider_eval(sp, P, nl / 2, nl - nl / 2, sx + nl / 2 * DIM,
                                    sg + nl / 2 * DIM, dx + nl / 2, dg + nl / 2));
  memset(all, 0, sizeof all);
  for (int64_t i = 0; i < nl; i++) {
    double *r = all[P->id[i]];
    for (int k = 0; k < DIM; k++) r[k] = sx[i * DIM + k], r[DIM + k] = sg[i * DIM + k];
    r[2 * DIM] = dx[i], r[2 * DIM + 1] = dg[i];
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, all, NP * (2 * DIM + 2), MPI_DOUBLE, MPI_SUM, comm));

  double worst = 0, worst_fd = 0, colmax[2 * DIM + 2] = {0};
  for (int c = 0; c < NP; c++)
    for (int j = 0; j < 2 * DIM + 2; j++) colmax[j] = fmax(colmax[j], fabs(all[c][j]));
  float X[(K + 1) * DIM], G[(K + 1) * DIM];
  for (int c = 0; c < NP; c++) {
    double rsx[DIM], rsg[DIM], rdx, rdg;
    brute_window(x, g, p.L, K, c, X, G);
    PetscCall(direct(&ref, X, G, rsx, rsg, &rdx, &rdg));
    for (int k = 0; k < DIM; k++) {
      worst = fmax(worst, reldiff(all[c][k], rsx[k], colmax[k]));
      worst = fmax(worst, reldiff(all[c][DIM + k], rsg[k], colmax[DIM + k]));
    }
    worst = fmax(worst, reldiff(all[c][2 * DIM], rdx, colmax[2 * DIM]));
    worst = fmax(worst, reldiff(all[c][2 * DIM + 1], rdg, colmax[2 * DIM + 1]));
    if (c < 6) { /* finite differences of the direct model */
      const float h = 1e-2f;
      double fdg = 0, fdx = 0, a1[DIM], a2[DIM], b1[DIM], b2[DIM], t1, t2;
      for (int a = 0; a < DIM; a++) {
        const float g0 = G[a];
        G[a] = g0 + h;
        PetscCall(direct(&ref, X, G, a1, b1, &t1, &t2));
        G[a] = g0 - h;
        PetscCall(direct(&ref, X, G, a2, b2, &t1, &t2));
        G[a] = g0;
        fdg += (b1[a] - b2[a]) / (2.0 * h);
        if (ref.learn_x) {
          float X0[(K + 1) * DIM];
          memcpy(X0, X, sizeof X0);
          for (int t = 1; t <= K; t++) X[t * DIM + a] = X0[t * DIM + a] - h;
          PetscCall(direct(&ref, X, G, a1, b1, &t1, &t2));
          for (int t = 1; t <= K; t++) X[t * DIM + a] = X0[t * DIM + a] + h;
          PetscCall(direct(&ref, X, G, a2, b2, &t1, &t2));
          memcpy(X, X0, sizeof X0);
          fdx += (a1[a] - a2[a]) / (2.0 * h);
        }
      }
      worst_fd = fmax(worst_fd, fabs(fdg - all[c][2 * DIM + 1]) / (1.0 + fabs(fdg)));
      if (ref.learn_x) worst_fd = fmax(worst_fd, fabs(fdx - all[c][2 * DIM]) / (1.0 + fabs(fdx)));
    }
  }
  PetscCall(PetscPrintf(comm,
                        "score model (learn %s, boltzmann %d, max_batch %d): provider vs direct "
                        "%.3g, divergence vs finite differences %.3g\n",
                        learn, boltzmann, max_batch, worst, worst_fd));
  ck_assert_msg(worst <= 1e-6, "provider vs direct model: %g", worst);
  ck_assert_msg(worst_fd <= 2e-3, "divergence vs finite differences: %g", worst_fd);
  if (!ref.learn_x)
    for (int c = 0; c < NP; c++) ck_assert(all[c][0] == 0.0 && all[c][2 * DIM] == 0.0);
  PetscCall(PetscFree4(sx, sg, dx, dg));
  PetscCall(sgm_aoup_destroy(&s));
  PetscCall(sgm_score_provider_destroy(&sp));
  PetscCall(sgm_nn_transformer_destroy(&ref.m));
  PetscCall(sgm_config_destroy(&cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

START_TEST(xg_boltzmann)
{
  ck_assert_int_eq(check_variant("xg", 1, 128), 0);
}
END_TEST

START_TEST(g_chunks)
{
  ck_assert_int_eq(check_variant("g", 0, 5), 0);
}
END_TEST

START_TEST(wrong_architecture)
{
  /* a model.h5 whose architecture differs from [model] is refused */
  MPI_Comm comm = sgm_test_comm();
  const char *dir = sgm_test_tmpdir("score_model_arch");
  char text[12288], path[PETSC_MAX_PATH_LEN];
  SgmConfig cfg;
  SgmAoupParams p;
  SgmScoreModelSpec ms;
  SgmScoreProvider sp = NULL;
  snprintf(path, sizeof path, "%s/m.h5", dir);
  for (int v = 0; v < 2; v++) {
    snprintf(text, sizeof text,
             "[run]\nname = \"t\"\noutput = \"%s\"\nstages = []\n"
             "[system]\nkind = \"aoup\"\ndim = 2\nn = %d\nphi = 0.4\nv0 = 0.5\neps = 0.0\n"
             "boundary = \"periodic\"\n"
             "[model]\nd_e = 8\nlayers = 1\nheads = 2\nK = %d\nmlp_hidden = 16\n"
             "embed_hidden = 8\ndec_hidden = 8\nlearn = \"g\"\nmax_batch = 8\n"
             "[epr]\nscore = \"model\"\nmodel = \"%s\"\n",
             dir, NP, v ? 5 : 6, path);
    ck_assert_int_eq(
        sgm_config_create_from_string(comm, "score_model_arch.toml", text, 0, NULL, &cfg), 0);
    ck_assert_int_eq(sgm_aoup_params_from_config(cfg, 1, &p), 0);
    if (v == 0) {
      ck_assert_int_eq(sgm_score_model_from_config(comm, cfg, DIM, 1, &ms), 0);
      ck_assert_int_eq(sgm_nn_save(comm, path, sgm_nn_transformer_params(ms.m), ms.narch, ms.arch,
                                   0, NULL, NULL),
                       0);
      ck_assert_int_eq(sgm_nn_transformer_destroy(&ms.m), 0);
    } else {
      PetscErrorCode ierr;
      PetscCallVoid(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      ierr = sgm_score_provider_create(comm, "model", &p, cfg, &sp);
      PetscCallVoid(PetscPopErrorHandler());
      ck_assert_int_ne(ierr, 0);
    }
    ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  }
}
END_TEST

int main(int argc, char **argv)
{
  Suite *s = suite_create("score_model");
  TCase *t = tcase_create("provider");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, xg_boltzmann);
  tcase_add_test(t, g_chunks);
  tcase_add_test(t, wrong_architecture);
  suite_add_tcase(s, t);
  return sgm_test_main(argc, argv, s);
}
