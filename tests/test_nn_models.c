/* Model tests: MLP, particle transformer, local transformer.
 *
 * Each model's backward, JVP, reverse-over-forward and divergence is compared with an
 * independent finite-difference computation:
 *   backward            dL/dparam, L = r.out                    vs central FD of L
 *   jvp                 tout                                    vs (out(x + h t) - out(x - h t))/2h
 *   jvp_backward        dL/dparam, L = r.out + s.tout           vs central FD of L (FD of the JVP)
 *   divergence          div                                     vs trace of the FD Jacobian
 *   divergence_backward dL/dparam, L = r.out + q.div            vs central FD of L
 * Everything runs in float with losses summed in double; h = 1e-2 on O(1) inputs and parameters.
 * A gradient check passes when, per tensor, max |analytic - fd| <= FD_TOL * scale with
 * scale = max(max |fd| over the tensor, 1e-2 * max |fd| over the model) and FD_TOL = 2e-2 (FD
 * truncation ~1e-4, float rounding ~1e-5 relative, errors of a wrong term are O(1)). At most 5
 * entries per tensor are probed. Symmetry tests (permutation, neighbour order, translation,
 * centre-only last layer) compare two float evaluations with SYM_TOL = 1e-5 relative.
 */
#include "testutil.h"
#include "sgm/nn_models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_H    1e-2f
#define FD_TOL  2e-2
#define SYM_TOL 1e-5

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void)
{
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}
static void fill(float *a, size_t n, double lo, double hi)
{
  for (size_t i = 0; i < n; i++) a[i] = (float)(lo + (hi - lo) * urand());
}
static double dotd(const float *a, const float *b, size_t n)
{
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}
static double max_rel_diff(const float *a, const float *b, size_t n)
{
  double e = 0.0, s = 1e-30;
  for (size_t i = 0; i < n; i++) {
    e = fmax(e, fabs((double)a[i] - b[i]));
    s = fmax(s, fabs((double)b[i]));
  }
  return e / s;
}
static int verbose(void)
{
  return getenv("SGM_NN_TEST_VERBOSE") != NULL;
}

/* Checks analytic parameter gradients g (a copy of grads) against central differences of
 * loss() over at most 5 entries per tensor. */
static void check_param_grads(const char *what, SgmParams *p, const float *g, double (*loss)(void))
{
  enum { PER = 5 };
  const int nt = p->ntensors;
  double *fd = malloc(sizeof(double) * PER * nt), *an = malloc(sizeof(double) * PER * nt);
  int *cnt = calloc(nt, sizeof(int));
  double gmax = 0.0;
  for (int t = 0; t < nt; t++) {
    SgmTensorView *v = &p->tensors[t];
    size_t stride = v->size > PER ? v->size / PER : 1;
    for (size_t i = 0; i < v->size && cnt[t] < PER; i += stride) {
      float *w = p->params + v->offset + i, w0 = *w;
      *w = w0 + FD_H;
      double Lp = loss();
      *w = w0 - FD_H;
      double Lm = loss();
      *w = w0;
      fd[t * PER + cnt[t]] = (Lp - Lm) / (2.0 * FD_H);
      an[t * PER + cnt[t]] = g[v->offset + i];
      gmax = fmax(gmax, fabs(fd[t * PER + cnt[t]]));
      cnt[t]++;
    }
  }
  ck_assert_msg(gmax > 0.0, "%s: all finite-difference gradients vanish", what);
  for (int t = 0; t < nt; t++) {
    double e = 0.0, s = 1e-2 * gmax;
    for (int k = 0; k < cnt[t]; k++) {
      e = fmax(e, fabs(an[t * PER + k] - fd[t * PER + k]));
      s = fmax(s, fabs(fd[t * PER + k]));
    }
    if (verbose()) printf("  %-10s %-36s rel err %.2e\n", what, p->tensors[t].name, e / s);
    ck_assert_msg(e / s <= FD_TOL, "%s: d/d%s relative error %.3g > %.1g", what, p->tensors[t].name,
                  e / s, FD_TOL);
  }
  free(fd), free(an), free(cnt);
}

static float *grads_copy(const SgmParams *p)
{
  float *g = malloc(p->nparams * sizeof(float));
  memcpy(g, p->grads, p->nparams * sizeof(float));
  return g;
}

/* ---------------- MLP ---------------- */
enum { MB = 3, MD = 2, MF = 3, MC = 1 };
static SgmNnMlp mlp;
static float m_x[MB * MD], m_t[MB], m_c[MB * MC], m_out[MB * MD], m_r[MB * MD], m_q[MB];
static float m_tx[MD * MB * MD], m_tout[MD * MB * MD], m_s[MD * MB * MD], m_div[MB];

static void mlp_setup(void)
{
  SgmNnMlpConfig cfg = {.in_dim = MD,
                        .out_dim = 0,
                        .cond_dim = MC,
                        .time_freqs = MF,
                        .time_max_freq = 8.0,
                        .hidden = 16,
                        .depth = 2,
                        .act = SGM_NN_ACT_GELU};
  ck_assert_int_eq(sgm_nn_mlp_create(&cfg, MB, MD, 7, &mlp), 0);
  fill(m_x, MB * MD, -1, 1), fill(m_t, MB, 0, 1), fill(m_c, MB * MC, -1, 1);
  fill(m_r, MB * MD, -1, 1), fill(m_q, MB, -1, 1), fill(m_tx, MD * MB * MD, -1, 1);
  fill(m_s, MD * MB * MD, -1, 1);
}
static void mlp_teardown(void)
{
  sgm_nn_mlp_destroy(&mlp);
  ck_assert_ptr_null(mlp);
}
static double mlp_loss_out(void)
{
  sgm_nn_mlp_forward(mlp, m_out, m_x, m_t, m_c, MB);
  return dotd(m_out, m_r, MB * MD);
}
static double mlp_loss_jvp(void)
{
  double L = mlp_loss_out();
  sgm_nn_mlp_jvp(mlp, m_tout, m_tx, MD);
  return L + dotd(m_tout, m_s, MD * MB * MD);
}
static double mlp_loss_div(void)
{
  double L = mlp_loss_out();
  sgm_nn_mlp_divergence(mlp, m_div);
  return L + dotd(m_div, m_q, MB);
}

START_TEST(test_mlp_backward_fd)
{
  SgmParams *p = sgm_nn_mlp_params(mlp);
  float dx[MB * MD] = {0};
  sgm_nn_params_zero_grad(p);
  mlp_loss_out();
  sgm_nn_mlp_backward(mlp, dx, m_r);
  float *g = grads_copy(p);
  check_param_grads("mlp bwd", p, g, mlp_loss_out);
  /* dL/dx against FD over the inputs */
  for (int i = 0; i < MB * MD; i++) {
    float x0 = m_x[i];
    m_x[i] = x0 + FD_H;
    double Lp = mlp_loss_out();
    m_x[i] = x0 - FD_H;
    double Lm = mlp_loss_out();
    m_x[i] = x0;
    double fd = (Lp - Lm) / (2 * FD_H);
    ck_assert_msg(fabs(dx[i] - fd) <= FD_TOL * fmax(fabs(fd), 0.1), "mlp dx[%d] %g vs fd %g", i,
                  dx[i], fd);
  }
  /* backward accumulates: a second call doubles the gradient */
  mlp_loss_out();
  sgm_nn_mlp_backward(mlp, NULL, m_r);
  for (size_t i = 0; i < p->nparams; i++)
    ck_assert_float_eq_tol(p->grads[i], 2.0f * g[i], 1e-5f * (1.0f + fabsf(g[i])));
  free(g);
}
END_TEST

START_TEST(test_mlp_jvp_fd)
{
  float op[MB * MD], om[MB * MD], x0[MB * MD];
  memcpy(x0, m_x, sizeof x0);
  mlp_loss_out();
  sgm_nn_mlp_jvp(mlp, m_tout, m_tx, MD);
  for (int d = 0; d < MD; d++) {
    for (int i = 0; i < MB * MD; i++) m_x[i] = x0[i] + FD_H * m_tx[d * MB * MD + i];
    sgm_nn_mlp_forward(mlp, op, m_x, m_t, m_c, MB);
    for (int i = 0; i < MB * MD; i++) m_x[i] = x0[i] - FD_H * m_tx[d * MB * MD + i];
    sgm_nn_mlp_forward(mlp, om, m_x, m_t, m_c, MB);
    for (int i = 0; i < MB * MD; i++) {
      double fd = ((double)op[i] - om[i]) / (2 * FD_H);
      ck_assert_msg(fabs(m_tout[d * MB * MD + i] - fd) <= FD_TOL * fmax(fabs(fd), 0.1),
                    "mlp jvp %g vs fd %g", m_tout[d * MB * MD + i], fd);
    }
  }
  memcpy(m_x, x0, sizeof x0);
}
END_TEST

START_TEST(test_mlp_jvp_backward_fd)
{
  SgmParams *p = sgm_nn_mlp_params(mlp);
  sgm_nn_params_zero_grad(p);
  mlp_loss_jvp();
  sgm_nn_mlp_jvp_backward(mlp, m_r, m_s);
  float *g = grads_copy(p);
  check_param_grads("mlp rof", p, g, mlp_loss_jvp);
  free(g);
}
END_TEST

START_TEST(test_mlp_divergence)
{
  /* div = trace of the FD Jacobian (an independent computation from forward evaluations) */
  float op[MB * MD], om[MB * MD];
  mlp_loss_out();
  sgm_nn_mlp_divergence(mlp, m_div);
  double tr[MB] = {0};
  for (int a = 0; a < MD; a++) {
    for (int b = 0; b < MB; b++) m_x[b * MD + a] += FD_H;
    sgm_nn_mlp_forward(mlp, op, m_x, m_t, m_c, MB);
    for (int b = 0; b < MB; b++) m_x[b * MD + a] -= 2 * FD_H;
    sgm_nn_mlp_forward(mlp, om, m_x, m_t, m_c, MB);
    for (int b = 0; b < MB; b++) m_x[b * MD + a] += FD_H;
    for (int b = 0; b < MB; b++) tr[b] += ((double)op[b * MD + a] - om[b * MD + a]) / (2 * FD_H);
  }
  for (int b = 0; b < MB; b++)
    ck_assert_msg(fabs(m_div[b] - tr[b]) <= FD_TOL * fmax(fabs(tr[b]), 0.1),
                  "mlp div[%d] %g vs FD trace %g", b, m_div[b], tr[b]);
  /* reverse-over-forward of the divergence against FD of the exact divergence */
  SgmParams *p = sgm_nn_mlp_params(mlp);
  sgm_nn_params_zero_grad(p);
  mlp_loss_out();
  sgm_nn_mlp_divergence(mlp, m_div);
  sgm_nn_mlp_divergence_backward(mlp, m_r, m_q);
  float *g = grads_copy(p);
  check_param_grads("mlp div", p, g, mlp_loss_div);
  /* without the divergence call in between, divergence_backward recomputes the tangents */
  sgm_nn_params_zero_grad(p);
  mlp_loss_out();
  sgm_nn_mlp_divergence_backward(mlp, m_r, m_q);
  ck_assert_double_le(max_rel_diff(p->grads, g, p->nparams), 1e-6);
  free(g);
}
END_TEST

START_TEST(test_mlp_init)
{
  /* PyTorch Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); names as nn.Sequential. */
  SgmParams *p = sgm_nn_mlp_params(mlp);
  int w0 = sgm_nn_params_find(p, "net.0.weight"), b2 = sgm_nn_params_find(p, "net.2.bias");
  ck_assert_int_ge(w0, 0);
  ck_assert_int_ge(b2, 0);
  ck_assert_int_eq(p->tensors[w0].shape[0], 16);
  ck_assert_int_eq(p->tensors[w0].shape[1], MD + 2 * MF + MC);
  const double bound = 1.0 / sqrt(MD + 2 * MF + MC);
  double mx = 0.0, mean = 0.0;
  const float *w = p->params + p->tensors[w0].offset;
  for (size_t i = 0; i < p->tensors[w0].size; i++) {
    mx = fmax(mx, fabs(w[i]));
    mean += w[i];
  }
  ck_assert_double_le(mx, bound);
  ck_assert_double_ge(mx, 0.8 * bound);
  ck_assert_double_le(fabs(mean / p->tensors[w0].size), 0.25 * bound);
  /* same seed, same numbers; other seed, other numbers */
  SgmNnMlp m2, m3;
  SgmNnMlpConfig cfg = {.in_dim = MD,
                        .cond_dim = MC,
                        .time_freqs = MF,
                        .time_max_freq = 8.0,
                        .hidden = 16,
                        .depth = 2,
                        .act = SGM_NN_ACT_GELU};
  sgm_nn_mlp_create(&cfg, 1, 0, 7, &m2);
  sgm_nn_mlp_create(&cfg, 1, 0, 8, &m3);
  ck_assert_int_eq(memcmp(p->params, sgm_nn_mlp_params(m2)->params, p->nparams * sizeof(float)), 0);
  ck_assert_int_ne(memcmp(p->params, sgm_nn_mlp_params(m3)->params, p->nparams * sizeof(float)), 0);
  sgm_nn_mlp_destroy(&m2);
  sgm_nn_mlp_destroy(&m3);
}
END_TEST

static Suite *nn_models_suite(void)
{
  Suite *s = suite_create("nn_models");
  TCase *tc = tcase_create("mlp");
  tcase_add_checked_fixture(tc, mlp_setup, mlp_teardown);
  tcase_add_test(tc, test_mlp_backward_fd);
  tcase_add_test(tc, test_mlp_jvp_fd);
  tcase_add_test(tc, test_mlp_jvp_backward_fd);
  tcase_add_test(tc, test_mlp_divergence);
  tcase_add_test(tc, test_mlp_init);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, nn_models_suite());
}
