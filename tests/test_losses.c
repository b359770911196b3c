/* Tests of the training losses on a small local transformer:
 *  - parameter gradients of every loss variant against central finite differences of the loss
 *    (double accumulation; float network, h = 1e-2; tolerance 1e-3 relative to the largest
 *    gradient component checked plus 1e-3 of the component; observed <= 2e-5. A 5% error in a
 *    cotangent fails it);
 *  - the denoising loss value against an independent evaluation: windows rebuilt in the test from
 *    the neighbour ids (checked against brute force in test_windows) and positions, with the
 *    noise drawn here from the RNG;
 *  - the score-matching loss value with the divergence replaced by central differences of the
 *    model output in the centre's own coordinates (independent of the JVP machinery).
 * Micro-batching is exercised (10 centres, max_batch 4). */
#include "testutil.h"
#include "sgm/core.h"
#include "sgm/losses.h"
#include "sgm/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NP = 48, DIM = 2, K = 6, NC = 10, MB = 4 };
static const double Lbox = 7.0;

typedef struct {
  SgmDecomp d;
  SgmWindows w;
  int64_t id[NP];
  double x[NP * DIM], g[NP * DIM];
  int64_t centres[NC];
} Fixture;

static void fixture(Fixture *f)
{
  double Lb[2] = {Lbox, Lbox};
  ck_assert_int_eq(sgm_decomp_create(sgm_test_comm(), DIM, Lb, 1.0, NULL, &f->d, NULL), 0);
  for (int64_t i = 0; i < NP; i++) {
    double u[4], z[4];
    sgm_rng_uniform4(5, SGM_RNG_TEST, (uint64_t)i, 0, 0, u);
    sgm_rng_normal4(5, SGM_RNG_TEST, (uint64_t)i, 1, 0, z);
    f->id[i] = i;
    f->x[2 * i] = u[0] * Lbox, f->x[2 * i + 1] = u[1] * Lbox;
    f->g[2 * i] = z[0], f->g[2 * i + 1] = z[1];
  }
  ck_assert_int_eq(sgm_windows_create(sgm_test_comm(), &f->d, K, 2.0, &f->w), 0);
  ck_assert_int_eq(sgm_windows_build(f->w, NP, f->id, f->x, f->g), 0);
  for (int b = 0; b < NC; b++) f->centres[b] = (b * 7) % NP;
}

static SgmNnTransformer model(int out_dim, uint64_t seed)
{
  SgmNnTransformerConfig c = {.dim = DIM,
                              .gdim = DIM,
                              .out_dim = out_dim,
                              .d_model = 8,
                              .n_layers = 1,
                              .n_heads = 2,
                              .mlp_hidden = 16,
                              .embed_hidden = 8,
                              .embed_depth = 1,
                              .dec_hidden = 8,
                              .dec_depth = 1,
                              .act = SGM_NN_ACT_GELU};
  SgmNnTransformer m;
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, K, MB, DIM, seed, &m), 0);
  return m;
}

static double loss_of(SgmLoss l, Fixture *f, int64_t step)
{
  double v;
  ck_assert_int_eq(sgm_loss_eval(l, f->w, NC, f->centres, step, &v), 0);
  return v;
}

static void grad_check(SgmLossConfig cfg)
{
  Fixture f;
  fixture(&f);
  const int od = DIM * (cfg.learn_x + cfg.learn_g);
  SgmNnTransformer m = model(od, 17);
  SgmParams *p = sgm_nn_transformer_params(m);
  SgmLoss l;
  ck_assert_int_eq(sgm_loss_create(&cfg, m, K, MB, &l), 0);
  sgm_nn_params_zero_grad(p);
  double L0 = loss_of(l, &f, 3);
  ck_assert(isfinite(L0));
  float *g0 = malloc(sizeof(float) * p->nparams);
  memcpy(g0, p->grads, sizeof(float) * p->nparams);
  /* a spread of parameters plus the largest-gradient one */
  size_t idx[9], amax = 0;
  for (size_t i = 0; i < p->nparams; i++)
    if (fabsf(g0[i]) > fabsf(g0[amax])) amax = i;
  for (int k = 0; k < 8; k++) idx[k] = (size_t)((k * 2654435761ULL) % p->nparams);
  idx[8] = amax;
  double gmax = fabs(g0[amax]);
  ck_assert(gmax > 0);
  const double h = 1e-2;
  for (int k = 0; k < 9; k++) {
    const size_t i = idx[k];
    const float p0 = p->params[i];
    p->params[i] = p0 + (float)h;
    double Lp = loss_of(l, &f, 3);
    p->params[i] = p0 - (float)h;
    double Lm = loss_of(l, &f, 3);
    p->params[i] = p0;
    const double fd = (Lp - Lm) / (2 * h);
    if (getenv("SGM_TEST_VERBOSE"))
      printf("%s %zu fd %.6g grad %.6g rel %.2e\n", sgm_loss_name(cfg.kind), i, fd, (double)g0[i],
             fabs(fd - g0[i]) / gmax);
    ck_assert_msg(fabs(fd - g0[i]) <= 1e-3 * gmax + 1e-3 * fabs(fd),
                  "%s param %zu (%s...): fd %g vs grad %g", sgm_loss_name(cfg.kind), i,
                  p->tensors[0].name, fd, (double)g0[i]);
  }
  free(g0);
  ck_assert_int_eq(sgm_loss_destroy(&l), 0);
  ck_assert_int_eq(sgm_nn_transformer_destroy(&m), 0);
  ck_assert_int_eq(sgm_windows_destroy(&f.w), 0);
}

static SgmLossConfig base(SgmLossKind kind)
{
  SgmLossConfig c = {.kind = kind,
                     .dim = DIM,
                     .learn_x = 0,
                     .learn_g = 1,
                     .sigma = 0.1,
                     .noise_x = 1,
                     .antithetic = 1,
                     .boltzmann_g = 0,
                     .seed = 99};
  return c;
}

START_TEST(test_grad_denoise)
{
  grad_check(base(SGM_LOSS_DENOISE));
  SgmLossConfig c = base(SGM_LOSS_DENOISE);
  c.learn_x = 1, c.boltzmann_g = 1, c.antithetic = 0;
  grad_check(c);
}
END_TEST

START_TEST(test_grad_sm)
{
  grad_check(base(SGM_LOSS_SM));
  SgmLossConfig c = base(SGM_LOSS_SM);
  c.learn_x = 1;
  grad_check(c);
  c.learn_g = 0;
  grad_check(c);
  c.learn_g = 1, c.boltzmann_g = 1;
  grad_check(c);
}
END_TEST

/* Window of centre i from the full arrays with perturbations: X (T,D), G (T,D). */
static void manual_window(const Fixture *f, const int64_t *ids, int64_t i, const double *dxs,
                          const double *dgs, double scale, float *X, float *G)
{
  for (int t = 0; t <= K; t++) {
    const int64_t j = ids[t];
    for (int a = 0; a < DIM; a++) {
      double dx = t ? sgm_min_image(f->x[j * DIM + a] - f->x[i * DIM + a], Lbox) : 0.0;
      if (t && dxs) dx += scale * (dxs[j * DIM + a] - dxs[i * DIM + a]);
      X[t * DIM + a] = (float)dx;
      G[t * DIM + a] = (float)(f->g[j * DIM + a] + (dgs ? scale * dgs[j * DIM + a] : 0.0));
    }
  }
}

/* Ids of the window of centre i in the frame perturbed by scale dxs (brute force over all pairs,
 * ties by id): the denoising loss must choose its windows in the noised frame, since windows of
 * the clean frame reveal where the clean centre was (tests/test_xg_score.c). */
static void noised_ids(const Fixture *f, int64_t i, const double *dxs, double scale, int64_t *ids)
{
  double bd[K];
  int n = 0;
  ids[0] = i;
  for (int64_t j = 0; j < NP; j++) {
    if (j == i) continue;
    double d2 = 0.0;
    for (int a = 0; a < DIM; a++) {
      double d = sgm_min_image(f->x[j * DIM + a] - f->x[i * DIM + a], Lbox) +
                 scale * (dxs[j * DIM + a] - dxs[i * DIM + a]);
      d2 += d * d;
    }
    if (n == K && d2 >= bd[K - 1]) continue; /* j ascends: an equal d2 loses the tie */
    int pos = n < K ? n : K - 1;
    while (pos > 0 && bd[pos - 1] > d2) bd[pos] = bd[pos - 1], ids[1 + pos] = ids[pos], pos--;
    bd[pos] = d2, ids[1 + pos] = j;
    if (n < K) n++;
  }
}

START_TEST(test_denoise_value)
{
  Fixture f;
  fixture(&f);
  SgmLossConfig cfg = base(SGM_LOSS_DENOISE);
  cfg.learn_x = 1, cfg.boltzmann_g = 1;
  SgmNnTransformer m = model(2 * DIM, 23);
  SgmLoss l;
  ck_assert_int_eq(sgm_loss_create(&cfg, m, K, MB, &l), 0);
  const int64_t step = 41;
  const double L = loss_of(l, &f, step);
  double xs[NP * DIM], gs[NP * DIM];
  for (int64_t j = 0; j < NP; j++) {
    double z[4];
    sgm_rng_normals(cfg.seed, SGM_RNG_DENOISE, (uint64_t)j, (uint64_t)step, 4, z);
    xs[j * DIM] = z[0], xs[j * DIM + 1] = z[1], gs[j * DIM] = z[2], gs[j * DIM + 1] = z[3];
  }
  double ref = 0.0;
  float X[(K + 1) * DIM], G[(K + 1) * DIM], out[2 * DIM];
  for (int b = 0; b < NC; b++) {
    const int64_t i = f.centres[b];
    for (int s = 1; s >= -1; s -= 2) {
      int64_t ids[K + 1];
      noised_ids(&f, i, xs, s * cfg.sigma, ids);
      manual_window(&f, ids, i, xs, gs, s * cfg.sigma, X, G);
      ck_assert_int_eq(sgm_nn_transformer_forward(m, out, X, G, NULL, 1), 0);
      for (int a = 0; a < DIM; a++) {
        /* eq. (88) less the constant |xi|^2 / sigma^2 */
        double ex = (double)out[a] + s * xs[i * DIM + a] / cfg.sigma;
        double eg = (double)out[DIM + a] - G[a] + s * gs[i * DIM + a] / cfg.sigma;
        ref += 0.5 * (ex * ex + eg * eg -
                      (xs[i * DIM + a] * xs[i * DIM + a] + gs[i * DIM + a] * gs[i * DIM + a]) /
                          (cfg.sigma * cfg.sigma));
      }
    }
  }
  ck_assert_msg(fabs(L - ref) <= 1e-5 * fabs(ref), "denoise loss %.10g vs %.10g", L, ref);
  ck_assert_int_eq(sgm_loss_destroy(&l), 0);
  ck_assert_int_eq(sgm_nn_transformer_destroy(&m), 0);
  ck_assert_int_eq(sgm_windows_destroy(&f.w), 0);
}
END_TEST

START_TEST(test_sm_value)
{
  Fixture f;
  fixture(&f);
  SgmLossConfig cfg = base(SGM_LOSS_SM);
  cfg.learn_x = 1;
  SgmNnTransformer m = model(2 * DIM, 29);
  SgmLoss l;
  ck_assert_int_eq(sgm_loss_create(&cfg, m, K, MB, &l), 0);
  const double L = loss_of(l, &f, 0);
  const int64_t *nbr_id;
  ck_assert_int_eq(sgm_windows_get(f.w, NULL, NULL, &nbr_id, NULL), 0);
  float X[(K + 1) * DIM], G[(K + 1) * DIM], out[2 * DIM], op[2 * DIM], om[2 * DIM];
  double ref = 0.0, hx = 1e-3;
  for (int b = 0; b < NC; b++) {
    const int64_t i = f.centres[b];
    manual_window(&f, nbr_id + i * (K + 1), i, NULL, NULL, 0, X, G);
    ck_assert_int_eq(sgm_nn_transformer_forward(m, out, X, G, NULL, 1), 0);
    for (int o = 0; o < 2 * DIM; o++) ref += (double)out[o] * out[o];
    /* divergence by central differences in the centre's own x (moves every displacement by -h)
     * and g (token 0 only) */
    for (int part = 0; part < 2; part++)
      for (int a = 0; a < DIM; a++) {
        float Xp[(K + 1) * DIM], Gp[(K + 1) * DIM], Xm[(K + 1) * DIM], Gm[(K + 1) * DIM];
        memcpy(Xp, X, sizeof X), memcpy(Xm, X, sizeof X), memcpy(Gp, G, sizeof G),
            memcpy(Gm, G, sizeof G);
        if (part == 0)
          for (int t = 1; t <= K; t++) Xp[t * DIM + a] -= (float)hx, Xm[t * DIM + a] += (float)hx;
        else
          Gp[a] += (float)hx, Gm[a] -= (float)hx;
        ck_assert_int_eq(sgm_nn_transformer_forward(m, op, Xp, Gp, NULL, 1), 0);
        ck_assert_int_eq(sgm_nn_transformer_forward(m, om, Xm, Gm, NULL, 1), 0);
        ref += 2.0 * ((double)op[part * DIM + a] - om[part * DIM + a]) / (2 * hx);
      }
  }
  ck_assert_msg(fabs(L - ref) <= 2e-2 * fabs(ref) + 1e-2, "sm loss %.8g vs FD %.8g", L, ref);
  ck_assert_int_eq(sgm_loss_destroy(&l), 0);
  ck_assert_int_eq(sgm_nn_transformer_destroy(&m), 0);
  ck_assert_int_eq(sgm_windows_destroy(&f.w), 0);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("losses");
  TCase *tc = tcase_create("losses");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_grad_denoise);
  tcase_add_test(tc, test_grad_sm);
  tcase_add_test(tc, test_denoise_value);
  tcase_add_test(tc, test_sm_value);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
