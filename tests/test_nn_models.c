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

#include <hdf5.h>
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
static float m_tt[MD * MB], m_tc[MD * MB * MC];

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
  fill(m_s, MD * MB * MD, -1, 1), fill(m_tt, MD * MB, -1, 1), fill(m_tc, MD * MB * MC, -1, 1);
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
  sgm_nn_mlp_jvp(mlp, m_tout, m_tx, m_tt, m_tc, MD);
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
  /* tangents on x, t and c together */
  float op[MB * MD], om[MB * MD], x0[MB * MD], t0[MB], c0[MB * MC];
  memcpy(x0, m_x, sizeof x0), memcpy(t0, m_t, sizeof t0), memcpy(c0, m_c, sizeof c0);
  mlp_loss_out();
  sgm_nn_mlp_jvp(mlp, m_tout, m_tx, m_tt, m_tc, MD);
  for (int d = 0; d < MD; d++) {
    for (int sg = 1; sg >= -1; sg -= 2) {
      for (int i = 0; i < MB * MD; i++) m_x[i] = x0[i] + sg * FD_H * m_tx[d * MB * MD + i];
      for (int i = 0; i < MB; i++) m_t[i] = t0[i] + sg * FD_H * m_tt[d * MB + i];
      for (int i = 0; i < MB * MC; i++) m_c[i] = c0[i] + sg * FD_H * m_tc[d * MB * MC + i];
      sgm_nn_mlp_forward(mlp, sg > 0 ? op : om, m_x, m_t, m_c, MB);
    }
    for (int i = 0; i < MB * MD; i++) {
      double fd = ((double)op[i] - om[i]) / (2 * FD_H);
      ck_assert_msg(fabs(m_tout[d * MB * MD + i] - fd) <= FD_TOL * fmax(fabs(fd), 0.1),
                    "mlp jvp %g vs fd %g", m_tout[d * MB * MD + i], fd);
    }
  }
  memcpy(m_x, x0, sizeof x0), memcpy(m_t, t0, sizeof t0), memcpy(m_c, c0, sizeof c0);
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

/* ---------------- transformers ---------------- */
enum { TB = 3, TT = 5, TD = 2, TG = 2, TO = 2, TNT = 2, TMAX = TB * TT * 4 };
static SgmNnTransformer tf;
static int tB, tlocal;
static float t_x[TMAX], t_g[TMAX], t_mask[TB * TT], t_out[TMAX], t_r[TMAX];
static float t_tx[TNT * TMAX], t_tg[TNT * TMAX], t_tout[TNT * TMAX], t_s[TNT * TMAX];
static float t_div[TB * TT], t_q[TB * TT];

static SgmNnTransformerConfig tf_config(void)
{
  SgmNnTransformerConfig c = {.dim = TD,
                              .gdim = TG,
                              .out_dim = TO,
                              .d_model = 8,
                              .n_layers = 2,
                              .n_heads = 2,
                              .mlp_hidden = 12,
                              .embed_hidden = 8,
                              .embed_depth = 1,
                              .dec_hidden = 8,
                              .dec_depth = 1,
                              .act = SGM_NN_ACT_GELU};
  return c;
}
static size_t t_nout(void)
{
  return (size_t)(tlocal ? tB : tB * TT) * TO;
}
static size_t t_ndiv(void)
{
  return (size_t)(tlocal ? tB : tB * TT);
}
static void tf_data(void)
{
  const int R = tB * TT;
  fill(t_x, (size_t)R * TD, -1, 1);
  fill(t_g, (size_t)R * TG, -1, 1);
  fill(t_r, TMAX, -1, 1), fill(t_q, TB * TT, -1, 1);
  fill(t_tx, TNT * TMAX, -1, 1), fill(t_tg, TNT * TMAX, -1, 1), fill(t_s, TNT * TMAX, -1, 1);
  for (int i = 0; i < R; i++) t_mask[i] = 1.0f;
  if (tlocal) {
    for (int b = 0; b < tB; b++)
      for (int a = 0; a < TD; a++) t_x[(size_t)b * TT * TD + a] = 0.0f; /* centre displacement */
    t_mask[1 * TT + 3] = 0.0f;                                          /* absent neighbours */
    t_mask[2 * TT + 2] = 0.0f, t_mask[2 * TT + 4] = 0.0f;
  }
}
static void ptf_setup(void)
{
  SgmNnTransformerConfig c = tf_config();
  tB = 2, tlocal = 0;
  /* max_tan 4 < N * D = 10 directions: the divergence runs in three chunks */
  ck_assert_int_eq(sgm_nn_transformer_create_particle(&c, TT, tB, 4, 11, &tf), 0);
  tf_data();
}
static void ltf_setup(void)
{
  SgmNnTransformerConfig c = tf_config();
  tB = TB, tlocal = 1;
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, TT - 1, tB, TNT, 13, &tf), 0);
  tf_data();
}
static void tf_teardown(void)
{
  sgm_nn_transformer_destroy(&tf);
  ck_assert_ptr_null(tf);
}
static void tf_fwd(float *out)
{
  ck_assert_int_eq(sgm_nn_transformer_forward(tf, out, t_x, t_g, tlocal ? t_mask : NULL, tB), 0);
}
static double tf_loss_out(void)
{
  tf_fwd(t_out);
  return dotd(t_out, t_r, t_nout());
}
static double tf_loss_jvp(void)
{
  double L = tf_loss_out();
  sgm_nn_transformer_jvp(tf, t_tout, t_tx, t_tg, TNT);
  return L + dotd(t_tout, t_s, TNT * t_nout());
}
static SgmNnInput t_which;
static void tf_loss_div_x(void)
{
  tf_loss_out();
  sgm_nn_transformer_divergence(tf, SGM_NN_INPUT_X, t_div);
}
static double tf_loss_div(void)
{
  double L = tf_loss_out();
  sgm_nn_transformer_divergence(tf, t_which, t_div);
  return L + dotd(t_div, t_q, t_ndiv());
}

START_TEST(test_tf_backward_fd)
{
  SgmParams *p = sgm_nn_transformer_params(tf);
  sgm_nn_params_zero_grad(p);
  tf_loss_out();
  sgm_nn_transformer_backward(tf, t_r);
  float *g = grads_copy(p);
  check_param_grads(tlocal ? "ltf bwd" : "ptf bwd", p, g, tf_loss_out);
  free(g);
}
END_TEST

/* dL/dx and dL/dg from input_grad after backward (L = r.out) or after jvp_backward
 * (L = r.out + s.tout, so the reverse-over-forward's input terms are checked too). */
START_TEST(test_tf_input_grad_fd)
{
  const size_t R = (size_t)tB * TT;
  for (int rof = 0; rof < 2; rof++) {
    float dx[TMAX] = {0}, dg[TMAX] = {0};
    double (*loss)(void) = rof ? tf_loss_jvp : tf_loss_out;
    loss();
    if (rof)
      sgm_nn_transformer_jvp_backward(tf, t_r, t_s);
    else
      sgm_nn_transformer_backward(tf, t_r);
    sgm_nn_transformer_input_grad(tf, dx, dg);
    for (int w = 0; w < 2; w++) {
      float *in = w ? t_g : t_x, *an = w ? dg : dx;
      const size_t n = R * (w ? TG : TD);
      double e = 0.0, sc = 0.0;
      for (size_t i = 0; i < n; i++) {
        float v0 = in[i];
        in[i] = v0 + FD_H;
        double Lp = loss();
        in[i] = v0 - FD_H;
        double Lm = loss();
        in[i] = v0;
        double fd = (Lp - Lm) / (2 * FD_H);
        e = fmax(e, fabs(an[i] - fd));
        sc = fmax(sc, fabs(fd));
      }
      if (verbose()) printf("  input grad %s rof %d rel err %.2e\n", w ? "g" : "x", rof, e / sc);
      ck_assert_double_gt(sc, 0.0);
      ck_assert_msg(e <= FD_TOL * sc, "d%s (rof %d): error %.3g, scale %.3g", w ? "g" : "x", rof, e,
                    sc);
    }
  }
}
END_TEST

START_TEST(test_tf_jvp_fd)
{
  const size_t R = (size_t)tB * TT, no = t_nout();
  float op[TMAX], om[TMAX], x0[TMAX], g0[TMAX];
  memcpy(x0, t_x, sizeof x0), memcpy(g0, t_g, sizeof g0);
  tf_loss_out();
  sgm_nn_transformer_jvp(tf, t_tout, t_tx, t_tg, TNT);
  for (int d = 0; d < TNT; d++) {
    for (int sg = 1; sg >= -1; sg -= 2) {
      for (size_t i = 0; i < R * TD; i++) t_x[i] = x0[i] + sg * FD_H * t_tx[d * R * TD + i];
      for (size_t i = 0; i < R * TG; i++) t_g[i] = g0[i] + sg * FD_H * t_tg[d * R * TG + i];
      tf_fwd(sg > 0 ? op : om);
    }
    double e = 0.0, sc = 0.1;
    for (size_t i = 0; i < no; i++) {
      double fd = ((double)op[i] - om[i]) / (2 * FD_H);
      e = fmax(e, fabs(t_tout[d * no + i] - fd));
      sc = fmax(sc, fabs(fd));
    }
    if (verbose()) printf("  tf jvp dir %d rel err %.2e\n", d, e / sc);
    ck_assert_msg(e / sc <= FD_TOL, "jvp direction %d: relative error %.3g", d, e / sc);
  }
  memcpy(t_x, x0, sizeof x0), memcpy(t_g, g0, sizeof g0);
}
END_TEST

START_TEST(test_tf_jvp_backward_fd)
{
  SgmParams *p = sgm_nn_transformer_params(tf);
  sgm_nn_params_zero_grad(p);
  tf_loss_jvp();
  sgm_nn_transformer_jvp_backward(tf, t_r, t_s);
  float *g = grads_copy(p);
  check_param_grads(tlocal ? "ltf rof" : "ptf rof", p, g, tf_loss_jvp);
  free(g);
}
END_TEST

/* Trace of the FD Jacobian of each particle's (or centre's) score w.r.t. its own input. */
static void fd_trace(SgmNnInput which, double *tr)
{
  const int din = which == SGM_NN_INPUT_X ? TD : TG;
  float *in = which == SGM_NN_INPUT_X ? t_x : t_g;
  float op[TMAX], om[TMAX];
  const int per = tlocal ? 1 : TT;
  memset(tr, 0, sizeof(double) * tB * per);
  for (int i = 0; i < per; i++) {
    for (int a = 0; a < din; a++) {
      for (int sg = 1; sg >= -1; sg -= 2) {
        for (int b = 0; b < tB; b++) {
          if (tlocal && which == SGM_NN_INPUT_X) /* moving the centre moves every displacement */
            for (int j = 1; j < TT; j++) t_x[((size_t)b * TT + j) * TD + a] -= sg * FD_H;
          else
            in[((size_t)b * TT + i) * din + a] += sg * FD_H;
        }
        tf_fwd(sg > 0 ? op : om);
        for (int b = 0; b < tB; b++) {
          if (tlocal && which == SGM_NN_INPUT_X)
            for (int j = 1; j < TT; j++) t_x[((size_t)b * TT + j) * TD + a] += sg * FD_H;
          else
            in[((size_t)b * TT + i) * din + a] -= sg * FD_H;
        }
      }
      for (int b = 0; b < tB; b++) {
        const size_t o = ((size_t)b * per + i) * TO + a; /* score part starts at 0: TO == din */
        tr[b * per + i] += ((double)op[o] - om[o]) / (2 * FD_H);
      }
    }
  }
}

START_TEST(test_tf_divergence)
{
  for (int w = 0; w < 2; w++) {
    SgmNnInput which = w ? SGM_NN_INPUT_G : SGM_NN_INPUT_X;
    double tr[TB * TT];
    tf_loss_out();
    ck_assert_int_eq(sgm_nn_transformer_divergence(tf, which, t_div), 0);
    fd_trace(which, tr);
    /* error relative to the largest |trace| (the traces are O(1e-2) at initialisation) */
    double e = 0.0, sc = 0.0;
    for (size_t k = 0; k < t_ndiv(); k++) {
      if (verbose()) printf("  div[%zu] %.6f FD trace %.6f\n", k, t_div[k], tr[k]);
      e = fmax(e, fabs(t_div[k] - tr[k]));
      sc = fmax(sc, fabs(tr[k]));
    }
    ck_assert_double_gt(sc, 0.0);
    ck_assert_msg(e <= FD_TOL * sc, "%s divergence vs FD trace: error %.3g, scale %.3g",
                  w ? "g" : "x", e, sc);
  }
}
END_TEST

/* The divergence in x and in g (in local mode the latter's tangents are on the centres' g only:
 * the JVP leaves tangent faces off the centre rows to the reverse-over-forward, centre_tan_dense).
 */
START_TEST(test_tf_divergence_backward_fd)
{
  SgmParams *p = sgm_nn_transformer_params(tf);
  for (int w = 0; w < 2; w++) {
    t_which = w ? SGM_NN_INPUT_G : SGM_NN_INPUT_X;
    sgm_nn_params_zero_grad(p);
    tf_loss_out();
    sgm_nn_transformer_divergence(tf, t_which, t_div);
    sgm_nn_transformer_divergence_backward(tf, t_which, t_r, t_q);
    float *g = grads_copy(p);
    check_param_grads(tlocal ? (w ? "ltf div g" : "ltf div x") : (w ? "ptf div g" : "ptf div x"), p,
                      g, tf_loss_div);
    /* recomputing the tangents (no divergence call before) gives the same gradient */
    sgm_nn_params_zero_grad(p);
    tf_loss_out();
    sgm_nn_transformer_divergence_backward(tf, t_which, t_r, t_q);
    ck_assert_double_le(max_rel_diff(p->grads, g, p->nparams), 1e-6);
    free(g);
  }
}
END_TEST

START_TEST(test_ptf_permutation_equivariance)
{
  const int perm[TT] = {3, 0, 4, 1, 2};
  float x2[TMAX], g2[TMAX], o1[TMAX], o2[TMAX], x0[TMAX], g0[TMAX];
  float d1[TB * TT], d2[TB * TT];
  tf_fwd(o1);
  sgm_nn_transformer_divergence(tf, SGM_NN_INPUT_X, d1);
  memcpy(x0, t_x, sizeof x0), memcpy(g0, t_g, sizeof g0);
  for (int b = 0; b < tB; b++)
    for (int i = 0; i < TT; i++) {
      memcpy(x2 + ((size_t)b * TT + i) * TD, t_x + ((size_t)b * TT + perm[i]) * TD, TD * 4);
      memcpy(g2 + ((size_t)b * TT + i) * TG, t_g + ((size_t)b * TT + perm[i]) * TG, TG * 4);
    }
  memcpy(t_x, x2, sizeof x2), memcpy(t_g, g2, sizeof g2);
  tf_fwd(o2);
  sgm_nn_transformer_divergence(tf, SGM_NN_INPUT_X, d2);
  memcpy(t_x, x0, sizeof x0), memcpy(t_g, g0, sizeof g0);
  double e = 0.0, s = 0.0, ed = 0.0, sd = 0.0;
  for (int b = 0; b < tB; b++)
    for (int i = 0; i < TT; i++) {
      for (int a = 0; a < TO; a++) {
        e = fmax(e,
                 fabs(o2[((size_t)b * TT + i) * TO + a] - o1[((size_t)b * TT + perm[i]) * TO + a]));
        s = fmax(s, fabs(o1[((size_t)b * TT + perm[i]) * TO + a]));
      }
      ed = fmax(ed, fabs(d2[b * TT + i] - d1[b * TT + perm[i]]));
      sd = fmax(sd, fabs(d1[b * TT + perm[i]]));
    }
  ck_assert_msg(e <= SYM_TOL * s, "permutation: output error %.3g (scale %.3g)", e, s);
  ck_assert_msg(ed <= SYM_TOL * sd, "permutation: divergence error %.3g (scale %.3g)", ed, sd);
}
END_TEST

START_TEST(test_ltf_neighbour_order_and_absent)
{
  const int perm[TT] = {0, 4, 2, 1, 3}; /* centre stays token 0 */
  float x2[TMAX], g2[TMAX], m2[TB * TT], o1[TMAX], o2[TMAX], d1[TB], d2[TB];
  float x0[TMAX], g0[TMAX], m0[TB * TT];
  tf_fwd(o1);
  sgm_nn_transformer_divergence(tf, SGM_NN_INPUT_X, d1);
  memcpy(x0, t_x, sizeof x0), memcpy(g0, t_g, sizeof g0), memcpy(m0, t_mask, sizeof m0);
  for (int b = 0; b < tB; b++)
    for (int j = 0; j < TT; j++) {
      memcpy(x2 + ((size_t)b * TT + j) * TD, t_x + ((size_t)b * TT + perm[j]) * TD, TD * 4);
      memcpy(g2 + ((size_t)b * TT + j) * TG, t_g + ((size_t)b * TT + perm[j]) * TG, TG * 4);
      m2[b * TT + j] = t_mask[b * TT + perm[j]];
    }
  memcpy(t_x, x2, sizeof x2), memcpy(t_g, g2, sizeof g2), memcpy(t_mask, m2, sizeof m2);
  tf_fwd(o2);
  sgm_nn_transformer_divergence(tf, SGM_NN_INPUT_X, d2);
  ck_assert_double_le(max_rel_diff(o2, o1, t_nout()), SYM_TOL);
  ck_assert_double_le(max_rel_diff(d2, d1, tB), SYM_TOL);
  /* the data of an absent neighbour cannot matter: exactly the same output */
  memcpy(t_x, x0, sizeof x0), memcpy(t_g, g0, sizeof g0), memcpy(t_mask, m0, sizeof m0);
  for (int a = 0; a < TD; a++) t_x[(1 * TT + 3) * TD + a] = 5.0f + a;
  for (int a = 0; a < TG; a++) t_g[(1 * TT + 3) * TG + a] = -3.0f;
  tf_fwd(o2);
  for (size_t i = 0; i < t_nout(); i++) ck_assert_float_eq(o2[i], o1[i]);
  memcpy(t_x, x0, sizeof x0), memcpy(t_g, g0, sizeof g0);
}
END_TEST

START_TEST(test_ltf_translation_invariance)
{
  /* Windows built from absolute positions in a periodic box with minimum-image displacements:
   * translating every particle (wrapping into the box) must not change the output. */
  const double Lbox = 3.0;
  double pos[TB][TT][TD];
  float o1[TMAX], o2[TMAX];
  for (int b = 0; b < tB; b++)
    for (int j = 0; j < TT; j++)
      for (int a = 0; a < TD; a++) pos[b][j][a] = Lbox * urand();
  for (int pass = 0; pass < 2; pass++) {
    const double shift[TD] = {pass ? 1.7 : 0.0, pass ? -2.45 : 0.0};
    for (int b = 0; b < tB; b++)
      for (int j = 0; j < TT; j++)
        for (int a = 0; a < TD; a++) {
          double xc = fmod(pos[b][0][a] + shift[a] + 2 * Lbox, Lbox);
          double xj = fmod(pos[b][j][a] + shift[a] + 2 * Lbox, Lbox);
          double dx = xj - xc;
          dx -= Lbox * nearbyint(dx / Lbox);
          t_x[((size_t)b * TT + j) * TD + a] = (float)dx;
        }
    tf_fwd(pass ? o2 : o1);
  }
  double s = 0.0;
  for (size_t i = 0; i < t_nout(); i++) s = fmax(s, fabs(o1[i]));
  ck_assert_double_gt(s, 0.0);
  /* displacements agree to double rounding before the float cast: allow float-level error */
  ck_assert_double_le(max_rel_diff(o2, o1, t_nout()), SYM_TOL);
}
END_TEST

START_TEST(test_ltf_centre_only_equals_full)
{
  SgmParams *p = sgm_nn_transformer_params(tf);
  float o1[TMAX], o2[TMAX], d1[TB], d2[TB];
  float *g1 = NULL, *g2 = NULL;
  for (int full = 0; full < 2; full++) {
    sgm_nn_transformer_set_centre_only(tf, !full);
    sgm_nn_params_zero_grad(p);
    tf_fwd(full ? o2 : o1);
    sgm_nn_transformer_divergence(tf, SGM_NN_INPUT_X, full ? d2 : d1);
    sgm_nn_transformer_divergence_backward(tf, SGM_NN_INPUT_X, t_r, t_q);
    if (full)
      g2 = grads_copy(p);
    else
      g1 = grads_copy(p);
  }
  sgm_nn_transformer_set_centre_only(tf, 1);
  ck_assert_double_le(max_rel_diff(o2, o1, t_nout()), SYM_TOL);
  ck_assert_double_le(max_rel_diff(d2, d1, tB), SYM_TOL);
  ck_assert_double_le(max_rel_diff(g2, g1, p->nparams), 1e-4);
  free(g1), free(g2);
}
END_TEST

/* The JVP with no position tangent and g tangents on the centre tokens only (the divergence in
 * g: the position embedding's tangents are left to the reverse, the g embedding's and the first
 * block's QKV tangents are computed on the centre rows only, its attention tangent reads those
 * rows only) against the general path on the same tangent (an explicit zero position tangent
 * takes the general path); and the reverse-over-forward after each (parameter and input
 * gradients), which writes the zeros the centre path left out. */
START_TEST(test_ltf_centre_tangent_equals_general)
{
  static float tgc[TNT * TMAX], zx[TNT * TMAX], o[2][TNT * TMAX], dx[2][TMAX], dg[2][TMAX];
  SgmParams *p = sgm_nn_transformer_params(tf);
  memcpy(tgc, t_tg, sizeof tgc);
  for (int d = 0; d < TNT; d++)
    for (int b = 0; b < tB; b++)
      for (int j = 1; j < TT; j++)
        for (int a = 0; a < TG; a++) tgc[(((size_t)d * tB + b) * TT + j) * TG + a] = 0.0f;
  memset(zx, 0, sizeof zx);
  for (int full = 0; full < 2; full++) {
    float *g[2];
    sgm_nn_transformer_set_centre_only(tf, !full);
    for (int k = 0; k < 2; k++) { /* the centre path; the general path */
      sgm_nn_params_zero_grad(p);
      memset(dx[k], 0, sizeof dx[k]), memset(dg[k], 0, sizeof dg[k]);
      tf_fwd(t_out);
      /* every tangent face dirty first (general tangents), so that zeros left out show */
      ck_assert_int_eq(sgm_nn_transformer_jvp(tf, o[k], t_tx, t_tg, TNT), 0);
      ck_assert_int_eq(sgm_nn_transformer_jvp(tf, o[k], k ? zx : NULL, tgc, TNT), 0);
      ck_assert_int_eq(sgm_nn_transformer_jvp_backward(tf, t_r, t_s), 0);
      sgm_nn_transformer_input_grad(tf, dx[k], dg[k]);
      g[k] = grads_copy(p);
    }
    double sc = 0.0;
    for (size_t i = 0; i < TNT * t_nout(); i++) sc = fmax(sc, fabs((double)o[1][i]));
    ck_assert_double_gt(sc, 0.0);
    ck_assert_double_le(max_rel_diff(o[0], o[1], TNT * t_nout()), SYM_TOL);
    ck_assert_double_le(max_rel_diff(g[0], g[1], p->nparams), SYM_TOL);
    ck_assert_double_le(max_rel_diff(dx[0], dx[1], (size_t)tB * TT * TD), SYM_TOL);
    ck_assert_double_le(max_rel_diff(dg[0], dg[1], (size_t)tB * TT * TG), SYM_TOL);
    free(g[0]), free(g[1]);
  }
  sgm_nn_transformer_set_centre_only(tf, 1);
}
END_TEST

/* The JVP and its reverse (jvp_backward) of the centre-only last block, whose tangent goes through
 * the block input rows (centre_attention_jvp: no keys or values) and whose reverse forms the keys,
 * values and their tangents itself (centre_kvt), against the full last block (packed q, k, v), on
 * general tangents of x and g on every token and on g tangents of the centres only (the
 * divergence in g), with absent neighbours: at the fixture's width (window chunks) and at
 * d_model = 144 (whole-batch calls, the paper size's path). Each case runs jvp, jvp_backward, a
 * second jvp on other tangents and its jvp_backward, so that the keys' tangents of the first are
 * not reused by the second. Tangent outputs to SYM_TOL, gradients (parameters, x, g) to 1e-4. */
START_TEST(test_ltf_jvp_centre_equals_full)
{
  enum { NB = 5, KW = 6, TW = KW + 1, NR = NB * TW };
  SgmNnTransformerConfig c = tf_config();
  c.n_layers = 3;
  if (_i) c.d_model = 144, c.n_heads = 4, c.mlp_hidden = 24;
  static float x[NR * TD], g[NR * TG], mk[NR], r[NB * TO], s[2][TNT * NB * TO];
  static float tx[2][TNT * NR * TD], tg[2][TNT * NR * TG], tgc[TNT * NR * TG];
  static float to[2][2][TNT * NB * TO], dx[2][NR * TD], dg[2][NR * TG];
  fill(x, NR * TD, -1, 1), fill(g, NR * TG, -1, 1), fill(r, NB * TO, -1, 1);
  fill(s[0], TNT * NB * TO, -1, 1), fill(s[1], TNT * NB * TO, -1, 1);
  fill(tx[0], TNT * NR * TD, -1, 1), fill(tg[0], TNT * NR * TG, -1, 1);
  fill(tx[1], TNT * NR * TD, -1, 1), fill(tg[1], TNT * NR * TG, -1, 1);
  for (int i = 0; i < NR; i++) mk[i] = (i % TW == 0 || urand() < 0.7) ? 1.0f : 0.0f;
  for (int b = 0; b < NB; b++)
    for (int a = 0; a < TD; a++) x[b * TW * TD + a] = 0.0f; /* centre displacement */
  memset(tgc, 0, sizeof tgc);
  for (int d = 0; d < TNT; d++)
    for (int b = 0; b < NB; b++)
      for (int a = 0; a < TG; a++) tgc[((d * NB + b) * TW) * TG + a] = 1.0f + d - 0.5f * a;
  SgmNnTransformer m;
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, KW, NB, TNT, 23, &m), 0);
  SgmParams *p = sgm_nn_transformer_params(m);
  for (int kind = 0; kind < 2; kind++) { /* general tangents; centre g tangents */
    float *gr[2] = {NULL, NULL};
    for (int full = 0; full < 2; full++) {
      sgm_nn_transformer_set_centre_only(m, !full);
      sgm_nn_params_zero_grad(p);
      memset(dx[full], 0, sizeof dx[0]), memset(dg[full], 0, sizeof dg[0]);
      ck_assert_int_eq(sgm_nn_transformer_forward(m, to[full][0], x, g, mk, NB), 0);
      for (int round = 0; round < 2; round++) {
        const float *t1 = kind ? NULL : tx[round], *t2 = kind ? tgc : tg[round];
        if (kind && round) t1 = tx[1]; /* the second round: the general path after the centre one */
        ck_assert_int_eq(sgm_nn_transformer_jvp(m, to[full][round], t1, t2, TNT), 0);
        ck_assert_int_eq(sgm_nn_transformer_jvp_backward(m, round ? NULL : r, s[round]), 0);
      }
      sgm_nn_transformer_input_grad(m, dx[full], dg[full]);
      gr[full] = grads_copy(p);
    }
    for (int round = 0; round < 2; round++) {
      double sc = 0.0;
      for (int i = 0; i < TNT * NB * TO; i++) sc = fmax(sc, fabs(to[1][round][i]));
      ck_assert_double_gt(sc, 0.0);
      const double e = max_rel_diff(to[0][round], to[1][round], TNT * NB * TO);
      if (verbose())
        printf("  jvp centre vs full (C %d, kind %d, round %d): tout %.2e\n", c.d_model, kind,
               round, e);
      ck_assert_msg(e <= SYM_TOL, "tout (C %d, kind %d, round %d): %.3g", c.d_model, kind, round,
                    e);
    }
    const double eg = max_rel_diff(gr[0], gr[1], p->nparams);
    const double ex = max_rel_diff(dx[0], dx[1], NR * TD), eG = max_rel_diff(dg[0], dg[1], NR * TG);
    if (verbose())
      printf("  jvp_backward centre vs full (C %d, kind %d): params %.2e x %.2e g %.2e\n",
             c.d_model, kind, eg, ex, eG);
    ck_assert_msg(eg <= 1e-4 && ex <= 1e-4 && eG <= 1e-4,
                  "jvp_backward (C %d, kind %d): params %.3g, x %.3g, g %.3g", c.d_model, kind, eg,
                  ex, eG);
    free(gr[0]), free(gr[1]);
  }
  sgm_nn_transformer_destroy(&m);
}
END_TEST

START_TEST(test_ltf_partial_batch)
{
  /* A model built for a larger batch, first run on a full batch of other data (dirtying every
   * buffer), then on B < max_batch, gives the fixture model's gradients: only the used part of
   * the arena is zeroed and read. Same seed and config => same parameters. */
  SgmNnTransformerConfig c = tf_config();
  SgmNnTransformer big;
  enum { BB = 2 * TB };
  float x[BB * TT * TD], g[BB * TT * TG], mk[BB * TT], o[BB * TO], r[BB * TO], q[BB], dv[BB];
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, TT - 1, BB, TNT, 13, &big), 0);
  SgmParams *pb = sgm_nn_transformer_params(big), *p = sgm_nn_transformer_params(tf);
  ck_assert_int_eq(memcmp(pb->params, p->params, p->nparams * sizeof(float)), 0);
  fill(x, BB * TT * TD, -1, 1), fill(g, BB * TT * TG, -1, 1), fill(r, BB * TO, -1, 1);
  fill(q, BB, -1, 1);
  for (int i = 0; i < BB * TT; i++) mk[i] = 1.0f;
  sgm_nn_transformer_forward(big, o, x, g, mk, BB);
  sgm_nn_transformer_divergence_backward(big, SGM_NN_INPUT_X, r, q);
  sgm_nn_params_zero_grad(pb);
  sgm_nn_transformer_forward(big, o, t_x, t_g, t_mask, tB);
  sgm_nn_transformer_divergence(big, SGM_NN_INPUT_X, dv);
  sgm_nn_transformer_divergence_backward(big, SGM_NN_INPUT_X, t_r, t_q);
  sgm_nn_params_zero_grad(p);
  tf_loss_div_x();
  sgm_nn_transformer_divergence_backward(tf, SGM_NN_INPUT_X, t_r, t_q);
  ck_assert_double_le(max_rel_diff(o, t_out, (size_t)tB * TO), 1e-6);
  ck_assert_double_le(max_rel_diff(dv, t_div, (size_t)tB), 1e-6);
  ck_assert_double_le(max_rel_diff(pb->grads, p->grads, p->nparams), 1e-6);
  sgm_nn_transformer_destroy(&big);
}
END_TEST

START_TEST(test_ltf_lean_equals_full)
{
  /* max_tan = 0 (no tangent memory) on a 3-block model gives bitwise the fixture-config model's
   * output, parameter and input gradients at max_tan = 2, over two forward/backward rounds
   * (gradient faces shared between blocks must be cleared between blocks), in both last-block
   * modes; and it takes less memory. */
  SgmNnTransformerConfig c = tf_config();
  c.n_layers = 3;
  SgmNnTransformer lean, full;
  float o1[TMAX], o2[TMAX], dx1[TMAX] = {0}, dx2[TMAX] = {0}, dg1[TMAX] = {0}, dg2[TMAX] = {0};
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, TT - 1, tB, 0, 5, &lean), 0);
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, TT - 1, tB, TNT, 5, &full), 0);
  ck_assert_uint_lt(sgm_nn_transformer_memory(lean), sgm_nn_transformer_memory(full));
  SgmParams *pl = sgm_nn_transformer_params(lean), *pf = sgm_nn_transformer_params(full);
  float dv[TB];
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_ne(sgm_nn_transformer_divergence(lean, SGM_NN_INPUT_G, dv), 0); /* no tangents */
  PetscPopErrorHandler();
  for (int centre_only = 1; centre_only >= 0; centre_only--) {
    sgm_nn_transformer_set_centre_only(lean, centre_only);
    sgm_nn_transformer_set_centre_only(full, centre_only);
    sgm_nn_params_zero_grad(pl), sgm_nn_params_zero_grad(pf);
    for (int round = 0; round < 2; round++) {
      float *x = round ? t_g : t_x, *g = round ? t_x : t_g; /* other data in round 2 */
      ck_assert_int_eq(sgm_nn_transformer_forward(lean, o1, x, g, t_mask, tB), 0);
      ck_assert_int_eq(sgm_nn_transformer_forward(full, o2, x, g, t_mask, tB), 0);
      ck_assert_int_eq(memcmp(o1, o2, (size_t)tB * TO * sizeof(float)), 0);
      ck_assert_int_eq(sgm_nn_transformer_backward(lean, t_r), 0);
      ck_assert_int_eq(sgm_nn_transformer_backward(full, t_r), 0);
      sgm_nn_transformer_input_grad(lean, dx1, dg1);
      sgm_nn_transformer_input_grad(full, dx2, dg2);
    }
    ck_assert_int_eq(memcmp(pl->grads, pf->grads, pl->nparams * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(dx1, dx2, sizeof dx1), 0);
    ck_assert_int_eq(memcmp(dg1, dg2, sizeof dg1), 0);
  }
  sgm_nn_transformer_destroy(&lean);
  sgm_nn_transformer_destroy(&full);
}
END_TEST

START_TEST(test_ltf_wide_whole_batch)
{
  /* d_model = 144 > 128: the forward and plain backward run whole-batch layer calls (no window
   * chunks), the paper size's path. The centre-only last block (keys and values never formed:
   * centre_attention_forward) against the full last block (packed q, k, v attention), outputs to
   * SYM_TOL and the plain backward's parameter and input gradients to 1e-4, with absent
   * neighbours; and a lean model (max_tan = 0) bitwise equal to one with tangent memory. */
  enum { NB = 5, KW = 6, TW = KW + 1, NR = NB * TW };
  SgmNnTransformerConfig c = tf_config();
  c.d_model = 144, c.mlp_hidden = 24;
  static float x[NR * TD], g[NR * TG], mk[NR], r[NB * TO], o[2][NB * TO], dx[2][NR * TD],
      dg[2][NR * TG];
  fill(x, NR * TD, -1, 1), fill(g, NR * TG, -1, 1), fill(r, NB * TO, -1, 1);
  for (int i = 0; i < NR; i++) mk[i] = (i % TW == 0 || urand() < 0.7) ? 1.0f : 0.0f;
  SgmNnTransformer m[2];
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, KW, NB, 0, 17, &m[0]), 0);
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, KW, NB, TNT, 17, &m[1]), 0);
  SgmParams *p0 = sgm_nn_transformer_params(m[0]), *p1 = sgm_nn_transformer_params(m[1]);
  float *gr[2] = {NULL, NULL};
  for (int full = 0; full < 2; full++) {
    for (int k = 0; k < 2; k++) {
      sgm_nn_transformer_set_centre_only(m[k], !full);
      sgm_nn_params_zero_grad(k ? p1 : p0);
    }
    memset(dx, 0, sizeof dx), memset(dg, 0, sizeof dg);
    for (int k = 0; k < 2; k++) {
      ck_assert_int_eq(sgm_nn_transformer_forward(m[k], o[k], x, g, mk, NB), 0);
      ck_assert_int_eq(sgm_nn_transformer_backward(m[k], r), 0);
      sgm_nn_transformer_input_grad(m[k], dx[k], dg[k]);
    }
    ck_assert_int_eq(memcmp(o[0], o[1], sizeof o[0]), 0);
    ck_assert_int_eq(memcmp(p0->grads, p1->grads, p0->nparams * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(dx[0], dx[1], sizeof dx[0]), 0);
    ck_assert_int_eq(memcmp(dg[0], dg[1], sizeof dg[0]), 0);
    static float oc[NB * TO], dxc[NR * TD], dgc[NR * TG];
    if (!full) {
      memcpy(oc, o[0], sizeof oc), memcpy(dxc, dx[0], sizeof dxc), memcpy(dgc, dg[0], sizeof dgc);
      gr[0] = malloc(p0->nparams * sizeof(float));
      memcpy(gr[0], p0->grads, p0->nparams * sizeof(float));
    } else {
      double sc = 0.0;
      for (int i = 0; i < NB * TO; i++) sc = fmax(sc, fabs(o[0][i]));
      ck_assert_double_gt(sc, 0.0);
      ck_assert_double_le(max_rel_diff(oc, o[0], NB * TO), SYM_TOL);
      ck_assert_double_le(max_rel_diff(gr[0], p0->grads, p0->nparams), 1e-4);
      ck_assert_double_le(max_rel_diff(dxc, dx[0], NR * TD), 1e-4);
      ck_assert_double_le(max_rel_diff(dgc, dg[0], NR * TG), 1e-4);
    }
  }
  free(gr[0]);
  sgm_nn_transformer_destroy(&m[0]);
  sgm_nn_transformer_destroy(&m[1]);
}
END_TEST

START_TEST(test_ltf_chunked_forward)
{
  /* At small widths the forward and the plain backward run the embeddings and the full blocks in
   * chunks of 32 windows (transformer.c, forward_chunk, backward_chunk). 70 windows (3 chunks, the
   * last partial) with random absent neighbours, on a lean (max_tan = 0) and a full model, both
   * last-block modes: the batch output equals each window run alone to 1e-6 (every operation is
   * row- or window-local; only sgemm, at this config's widths that are no multiple of 8, may sum
   * differently for 1 row), and the batch gradients (parameters, inputs) equal the sums of the
   * single-window ones to 1e-5. */
  enum { NB = 70, NR = NB * TT };
  SgmNnTransformerConfig c = tf_config();
  c.n_layers = 3;
  static float x[NR * TD], g[NR * TG], mk[NR], o[NB * TO], os[NB * TO], o1[TO], r[NB * TO];
  static float dx[NR * TD], dg[NR * TG], dx1[NR * TD], dg1[NR * TG];
  fill(x, NR * TD, -1, 1), fill(g, NR * TG, -1, 1), fill(r, NB * TO, -1, 1);
  for (int i = 0; i < NR; i++) mk[i] = (i % TT == 0 || urand() < 0.7) ? 1.0f : 0.0f;
  for (int max_tan = 0; max_tan <= TNT; max_tan += TNT) {
    SgmNnTransformer m;
    ck_assert_int_eq(sgm_nn_transformer_create_local(&c, TT - 1, NB, max_tan, 21, &m), 0);
    SgmParams *p = sgm_nn_transformer_params(m);
    float *gsum = calloc(p->nparams, sizeof(float)), *gb = malloc(p->nparams * sizeof(float));
    for (int centre_only = 1; centre_only >= 0; centre_only--) {
      sgm_nn_transformer_set_centre_only(m, centre_only);
      sgm_nn_params_zero_grad(p);
      memset(dx, 0, sizeof dx), memset(dg, 0, sizeof dg);
      ck_assert_int_eq(sgm_nn_transformer_forward(m, o, x, g, mk, NB), 0);
      ck_assert_int_eq(sgm_nn_transformer_backward(m, r), 0);
      sgm_nn_transformer_input_grad(m, dx, dg);
      memcpy(gb, p->grads, p->nparams * sizeof(float));
      sgm_nn_params_zero_grad(p);
      memset(dx1, 0, sizeof dx1), memset(dg1, 0, sizeof dg1);
      for (int b = 0; b < NB; b++) {
        const size_t t0 = (size_t)b * TT;
        ck_assert_int_eq(sgm_nn_transformer_forward(m, o1, x + t0 * TD, g + t0 * TG, mk + t0, 1),
                         0);
        memcpy(os + (size_t)b * TO, o1, sizeof o1);
        ck_assert_int_eq(sgm_nn_transformer_backward(m, r + (size_t)b * TO), 0);
        sgm_nn_transformer_input_grad(m, dx1 + t0 * TD, dg1 + t0 * TG);
      }
      memcpy(gsum, p->grads, p->nparams * sizeof(float));
      ck_assert_double_le(max_rel_diff(o, os, NB * TO), 1e-6);
      ck_assert_double_le(max_rel_diff(gb, gsum, p->nparams), 1e-5);
      ck_assert_double_le(max_rel_diff(dx, dx1, NR * TD), 1e-5);
      ck_assert_double_le(max_rel_diff(dg, dg1, NR * TG), 1e-5);
    }
    free(gsum), free(gb);
    sgm_nn_transformer_destroy(&m);
  }
}
END_TEST

START_TEST(test_ltf_rejects_invalid_centre)
{
  /* a window whose centre is marked absent is a caller error, not a NaN */
  float o[TMAX];
  t_mask[2 * TT] = 0.0f;
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  PetscErrorCode ierr = sgm_nn_transformer_forward(tf, o, t_x, t_g, t_mask, tB);
  PetscPopErrorHandler();
  t_mask[2 * TT] = 1.0f;
  ck_assert_int_ne(ierr, 0);
}
END_TEST

START_TEST(test_tf_names_and_init)
{
  SgmParams *p = sgm_nn_transformer_params(tf);
  const char *names[] = {"embed_x.0.weight",
                         "embed_g.2.bias",
                         "blocks.0.attn.in_proj_weight",
                         "blocks.1.attn.out_proj.bias",
                         "blocks.1.norm2.weight",
                         "decoder.2.weight"};
  for (int k = 0; k < 6; k++) ck_assert_msg(sgm_nn_params_find(p, names[k]) >= 0, "%s", names[k]);
  int w = sgm_nn_params_find(p, "blocks.0.attn.in_proj_weight");
  int bi = sgm_nn_params_find(p, "blocks.0.attn.in_proj_bias");
  int ln = sgm_nn_params_find(p, "blocks.0.norm1.weight");
  ck_assert_int_eq(p->tensors[w].shape[0], 24);
  ck_assert_int_eq(p->tensors[w].shape[1], 8);
  const double xav = sqrt(6.0 / (8 + 24));
  double mx = 0.0;
  for (size_t i = 0; i < p->tensors[w].size; i++)
    mx = fmax(mx, fabs(p->params[p->tensors[w].offset + i]));
  ck_assert_double_le(mx, xav);
  ck_assert_double_ge(mx, 0.7 * xav);
  for (size_t i = 0; i < p->tensors[bi].size; i++)
    ck_assert_float_eq(p->params[p->tensors[bi].offset + i], 0.0f);
  for (size_t i = 0; i < p->tensors[ln].size; i++)
    ck_assert_float_eq(p->params[p->tensors[ln].offset + i], 1.0f);
}
END_TEST

START_TEST(test_mlp_activations_divergence_backward)
{
  /* SiLU with no time or conditioning input: the divergence gradient vs FD. (ReLU is checked at
   * the layer level with inputs kept off the kink; in a network a step of h flips units and the
   * finite difference of the piecewise-constant divergence is meaningless.) */
  SgmNnAct acts[1] = {SGM_NN_ACT_SILU};
  sgm_nn_mlp_destroy(&mlp);
  for (int k = 0; k < 1; k++) {
    SgmNnMlpConfig cfg = {.in_dim = MD, .hidden = 16, .depth = 2, .act = acts[k]};
    SgmNnMlp m;
    ck_assert_int_eq(sgm_nn_mlp_create(&cfg, MB, MD, 3 + k, &m), 0);
    mlp = m;
    /* reuse the MLP loss helpers with t and cond ignored (F = 0, cond_dim = 0) */
    SgmParams *p = sgm_nn_mlp_params(mlp);
    sgm_nn_params_zero_grad(p);
    mlp_loss_out();
    sgm_nn_mlp_divergence(mlp, m_div);
    sgm_nn_mlp_divergence_backward(mlp, m_r, m_q);
    float *g = grads_copy(p);
    check_param_grads("silu div", p, g, mlp_loss_div);
    free(g);
    sgm_nn_mlp_destroy(&mlp);
  }
}
END_TEST

/* ---------------- against PyTorch (tests/torch_ref/make_nn_ref.py) ----------------
 * The local transformer of ../shared/anchors/torch/model.py with a key mask (and the same weights
 * as a particle transformer), float64 autograd
 * reference from the same float32 weights and inputs: output, both divergences, parameter
 * gradients of r.s and of r.s + q.div_x (torch double backward). The C model runs in float, so
 * the comparison is at TORCH_TOL = 2e-5 relative to the largest reference entry of each array
 * (observed errors are ~1e-6). */
#define TORCH_TOL 2e-5

static void h5_read(hid_t f, const char *name, hid_t type, void *buf, size_t n)
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  ck_assert_msg(d >= 0, "%s missing in torch_nn_ref.h5", name);
  hid_t sp = H5Dget_space(d);
  ck_assert_int_eq((size_t)H5Sget_simple_extent_npoints(sp), n);
  ck_assert_int_ge(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
  H5Sclose(sp);
  H5Dclose(d);
}
static int h5_attr_int(hid_t f, const char *name)
{
  long long v = 0;
  hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  ck_assert_int_ge(a, 0);
  ck_assert_int_ge(H5Aread(a, H5T_NATIVE_LLONG, &v), 0);
  H5Aclose(a);
  return (int)v;
}
static void cmp_ref(const char *what, const float *c, const double *ref, size_t n)
{
  double e = 0.0, sc = 0.0;
  for (size_t i = 0; i < n; i++) {
    e = fmax(e, fabs(c[i] - ref[i]));
    sc = fmax(sc, fabs(ref[i]));
  }
  if (verbose()) printf("  torch %-36s rel err %.2e (scale %.2e)\n", what, e / sc, sc);
  ck_assert_msg(sc > 0.0, "%s: reference is all zero", what);
  ck_assert_msg(e <= TORCH_TOL * sc, "%s vs torch: error %.3g, scale %.3g", what, e, sc);
}

START_TEST(test_ltf_vs_torch)
{
  hid_t f = H5Fopen(SGM_SOURCE_DIR "/tests/data/torch_nn_ref.h5", H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open tests/data/torch_nn_ref.h5");
  const int K = h5_attr_int(f, "K"), B = h5_attr_int(f, "B"), T = K + 1;
  SgmNnTransformerConfig c = {.dim = 2,
                              .gdim = 2,
                              .out_dim = 2,
                              .d_model = h5_attr_int(f, "d_e"),
                              .n_layers = h5_attr_int(f, "n_layers"),
                              .n_heads = h5_attr_int(f, "n_heads"),
                              .mlp_hidden = h5_attr_int(f, "ff_hidden"),
                              .embed_hidden = h5_attr_int(f, "emb_hidden"),
                              .embed_depth = 2,
                              .dec_hidden = h5_attr_int(f, "dec_hidden"),
                              .dec_depth = 2,
                              .act = SGM_NN_ACT_GELU};
  SgmNnTransformer m;
  ck_assert_int_eq(sgm_nn_transformer_create_local(&c, K, B, 2, 1, &m), 0);
  SgmParams *p = sgm_nn_transformer_params(m);
  const size_t R = (size_t)B * T;
  float *dx = malloc(R * 2 * sizeof(float)), *g = malloc(R * 2 * sizeof(float));
  float *mask = malloc(R * sizeof(float)), *r = malloc(B * 2 * sizeof(float));
  float *q = malloc(B * sizeof(float)), *out = malloc(B * 2 * sizeof(float));
  float *div = malloc(B * sizeof(float));
  double *ref = malloc(sizeof(double) * (p->nparams > R * 2 ? p->nparams : R * 2));
  h5_read(f, "dx", H5T_NATIVE_FLOAT, dx, R * 2);
  h5_read(f, "g", H5T_NATIVE_FLOAT, g, R * 2);
  h5_read(f, "mask", H5T_NATIVE_FLOAT, mask, R);
  h5_read(f, "r", H5T_NATIVE_FLOAT, r, (size_t)B * 2);
  h5_read(f, "q", H5T_NATIVE_FLOAT, q, (size_t)B);
  char name[128];
  for (int t = 0; t < p->ntensors; t++) {
    snprintf(name, sizeof name, "params/%s", p->tensors[t].name);
    h5_read(f, name, H5T_NATIVE_FLOAT, p->params + p->tensors[t].offset, p->tensors[t].size);
  }
  for (int centre_only = 1; centre_only >= 0; centre_only--) {
    sgm_nn_transformer_set_centre_only(m, centre_only);
    ck_assert_int_eq(sgm_nn_transformer_forward(m, out, dx, g, mask, B), 0);
    h5_read(f, "out", H5T_NATIVE_DOUBLE, ref, (size_t)B * 2);
    cmp_ref("out", out, ref, (size_t)B * 2);
    sgm_nn_transformer_divergence(m, SGM_NN_INPUT_G, div);
    h5_read(f, "div_g", H5T_NATIVE_DOUBLE, ref, (size_t)B);
    cmp_ref("div_g", div, ref, (size_t)B);
    sgm_nn_transformer_divergence(m, SGM_NN_INPUT_X, div);
    h5_read(f, "div_x", H5T_NATIVE_DOUBLE, ref, (size_t)B);
    cmp_ref("div_x", div, ref, (size_t)B);
    for (int pass = 0; pass < 2; pass++) {
      sgm_nn_params_zero_grad(p);
      if (pass == 0) {
        sgm_nn_transformer_backward(m, r);
      } else {
        sgm_nn_transformer_divergence(m, SGM_NN_INPUT_X, div);
        sgm_nn_transformer_divergence_backward(m, SGM_NN_INPUT_X, r, q);
      }
      for (int t = 0; t < p->ntensors; t++) {
        snprintf(name, sizeof name, "%s/%s", pass ? "grad_div" : "grad_out", p->tensors[t].name);
        h5_read(f, name, H5T_NATIVE_DOUBLE, ref, p->tensors[t].size);
        cmp_ref(name, p->grads + p->tensors[t].offset, ref, p->tensors[t].size);
      }
    }
  }
  H5Fclose(f);
  sgm_nn_transformer_destroy(&m);
  free(dx), free(g), free(mask), free(r), free(q), free(out), free(div), free(ref);
}
END_TEST

START_TEST(test_ptf_vs_torch)
{
  /* Particle mode with the same weights: N = K + 1 particles, no mask, per-particle divergence
   * in chunks (max_tan 5 < N * D = 12 directions). */
  hid_t f = H5Fopen(SGM_SOURCE_DIR "/tests/data/torch_nn_ref.h5", H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open tests/data/torch_nn_ref.h5");
  const int N = h5_attr_int(f, "K") + 1, B = h5_attr_int(f, "B");
  SgmNnTransformerConfig c = {.dim = 2,
                              .gdim = 2,
                              .out_dim = 2,
                              .d_model = h5_attr_int(f, "d_e"),
                              .n_layers = h5_attr_int(f, "n_layers"),
                              .n_heads = h5_attr_int(f, "n_heads"),
                              .mlp_hidden = h5_attr_int(f, "ff_hidden"),
                              .embed_hidden = h5_attr_int(f, "emb_hidden"),
                              .embed_depth = 2,
                              .dec_hidden = h5_attr_int(f, "dec_hidden"),
                              .dec_depth = 2,
                              .act = SGM_NN_ACT_GELU};
  SgmNnTransformer m;
  ck_assert_int_eq(sgm_nn_transformer_create_particle(&c, N, B, 5, 1, &m), 0);
  SgmParams *p = sgm_nn_transformer_params(m);
  const size_t R = (size_t)B * N;
  float *x = malloc(R * 2 * sizeof(float)), *g = malloc(R * 2 * sizeof(float));
  float *r = malloc(R * 2 * sizeof(float)), *q = malloc(R * sizeof(float));
  float *out = malloc(R * 2 * sizeof(float)), *div = malloc(R * sizeof(float));
  double *ref = malloc(sizeof(double) * (p->nparams > R * 2 ? p->nparams : R * 2));
  char name[128];
  h5_read(f, "p_x", H5T_NATIVE_FLOAT, x, R * 2);
  h5_read(f, "g", H5T_NATIVE_FLOAT, g, R * 2);
  h5_read(f, "p_r", H5T_NATIVE_FLOAT, r, R * 2);
  h5_read(f, "p_q", H5T_NATIVE_FLOAT, q, R);
  for (int t = 0; t < p->ntensors; t++) {
    snprintf(name, sizeof name, "params/%s", p->tensors[t].name);
    h5_read(f, name, H5T_NATIVE_FLOAT, p->params + p->tensors[t].offset, p->tensors[t].size);
  }
  ck_assert_int_eq(sgm_nn_transformer_forward(m, out, x, g, NULL, B), 0);
  h5_read(f, "p_out", H5T_NATIVE_DOUBLE, ref, R * 2);
  cmp_ref("p_out", out, ref, R * 2);
  sgm_nn_transformer_divergence(m, SGM_NN_INPUT_X, div);
  h5_read(f, "p_div_x", H5T_NATIVE_DOUBLE, ref, R);
  cmp_ref("p_div_x", div, ref, R);
  for (int pass = 0; pass < 2; pass++) {
    sgm_nn_params_zero_grad(p);
    if (pass == 0)
      sgm_nn_transformer_backward(m, r);
    else
      sgm_nn_transformer_divergence_backward(m, SGM_NN_INPUT_X, r, q);
    for (int t = 0; t < p->ntensors; t++) {
      snprintf(name, sizeof name, "%s/%s", pass ? "p_grad_div" : "p_grad_out", p->tensors[t].name);
      h5_read(f, name, H5T_NATIVE_DOUBLE, ref, p->tensors[t].size);
      cmp_ref(name, p->grads + p->tensors[t].offset, ref, p->tensors[t].size);
    }
  }
  H5Fclose(f);
  sgm_nn_transformer_destroy(&m);
  free(x), free(g), free(r), free(q), free(out), free(div), free(ref);
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
  tcase_add_test(tc, test_mlp_activations_divergence_backward);
  suite_add_tcase(s, tc);
  TCase *tp = tcase_create("particle_transformer");
  tcase_add_checked_fixture(tp, ptf_setup, tf_teardown);
  tcase_add_test(tp, test_tf_backward_fd);
  tcase_add_test(tp, test_tf_jvp_fd);
  tcase_add_test(tp, test_tf_input_grad_fd);
  tcase_add_test(tp, test_tf_jvp_backward_fd);
  tcase_add_test(tp, test_tf_divergence);
  tcase_add_test(tp, test_tf_divergence_backward_fd);
  tcase_add_test(tp, test_ptf_permutation_equivariance);
  tcase_add_test(tp, test_tf_names_and_init);
  suite_add_tcase(s, tp);
  TCase *tl = tcase_create("local_transformer");
  tcase_add_checked_fixture(tl, ltf_setup, tf_teardown);
  tcase_add_test(tl, test_tf_backward_fd);
  tcase_add_test(tl, test_tf_jvp_fd);
  tcase_add_test(tl, test_tf_input_grad_fd);
  tcase_add_test(tl, test_tf_jvp_backward_fd);
  tcase_add_test(tl, test_tf_divergence);
  tcase_add_test(tl, test_tf_divergence_backward_fd);
  tcase_add_test(tl, test_ltf_neighbour_order_and_absent);
  tcase_add_test(tl, test_ltf_translation_invariance);
  tcase_add_test(tl, test_ltf_centre_only_equals_full);
  tcase_add_test(tl, test_ltf_centre_tangent_equals_general);
  tcase_add_loop_test(tl, test_ltf_jvp_centre_equals_full, 0, 2);
  tcase_add_test(tl, test_ltf_partial_batch);
  tcase_add_test(tl, test_ltf_lean_equals_full);
  tcase_add_test(tl, test_ltf_wide_whole_batch);
  tcase_add_test(tl, test_ltf_chunked_forward);
  tcase_add_test(tl, test_ltf_rejects_invalid_centre);
  suite_add_tcase(s, tl);
  TCase *tt = tcase_create("torch_reference");
  tcase_add_test(tt, test_ltf_vs_torch);
  tcase_add_test(tt, test_ptf_vs_torch);
  suite_add_tcase(s, tt);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, nn_models_suite());
}
