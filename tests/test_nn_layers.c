/* Layer tests: every backward, tangent (JVP) and reverse-over-forward (backward through the JVP)
 * against central finite differences, and the sgemm path against the triple-loop reference.
 *
 * Finite differences: the layers run in float, the scalar losses L = r.out (+ s.tout) are summed
 * in double, step h = 1e-2 on O(1) inputs. Truncation is O(h^2) ~ 1e-4 and rounding
 * ~ 1e-7 sqrt(n)/h ~ 1e-5 of the gradient scale, so a check passes when
 *   max_i |analytic_i - fd_i| <= FD_TOL * max(max_i |fd_i|, max_i |analytic_i|),  FD_TOL = 1e-2,
 * while a wrong or missing term gives an error of order 1. Every array (inputs, parameters,
 * tangents) is checked, at up to 64 strided entries each.
 */
#include "testutil.h"
#include "sgm/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_H      1e-2f
#define FD_TOL    1e-2
#define BLAS_RTOL 1e-5

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float *rnd(size_t n, double lo, double hi)
{
  float *a = malloc(n * sizeof *a);
  for (size_t i = 0; i < n; i++) a[i] = (float)(lo + (hi - lo) * urand());
  return a;
}
static float *zeros(size_t n)
{
  return calloc(n, sizeof(float));
}

/* A layer under test: arrays x[a] (inputs and parameters) with tangents tx[a] (NULL for
 * parameters, which are fixed in the JVP), gradient buffers gx[a], gtx[a]; callbacks run the
 * forward, the tangent, the backward from dout, the reverse-over-forward from dtout. */
typedef struct {
  int n;
  const char *name[8];
  float *x[8], *tx[8], *gx[8], *gtx[8];
  size_t len[8];
  float *out, *tout, *dout, *dtout;
  size_t nout;
  void (*fwd)(void);
  void (*jvp)(void);
  void (*bwd)(void);
  void (*jvpb)(void);
} Prob;

static Prob P;

static void prob_add(const char *name, float *x, float *tx, size_t len)
{
  int a = P.n++;
  P.name[a] = name, P.x[a] = x, P.tx[a] = tx, P.len[a] = len;
  P.gx[a] = zeros(len);
  P.gtx[a] = tx ? zeros(len) : NULL;
}
static void prob_out(size_t nout)
{
  free(P.out), free(P.tout), free(P.dout), free(P.dtout);
  P.nout = nout;
  P.out = zeros(nout), P.tout = zeros(nout);
  P.dout = rnd(nout, -1, 1), P.dtout = rnd(nout, -1, 1);
}
static void prob_free(void)
{
  for (int a = 0; a < P.n; a++) free(P.x[a]), free(P.tx[a]), free(P.gx[a]), free(P.gtx[a]);
  free(P.out), free(P.tout), free(P.dout), free(P.dtout);
  memset(&P, 0, sizeof P);
}
static double dotd(const float *a, const float *b, size_t n)
{
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}
static double loss(int with_tangent)
{
  P.fwd();
  double L = dotd(P.out, P.dout, P.nout);
  if (with_tangent) {
    P.jvp();
    L += dotd(P.tout, P.dtout, P.nout);
  }
  return L;
}
static double rel_err(const float *g, const double *fd, size_t n)
{
  double e = 0.0, s = 1e-12;
  for (size_t i = 0; i < n; i++) {
    e = fmax(e, fabs(g[i] - fd[i]));
    s = fmax(s, fmax(fabs(fd[i]), fabs(g[i])));
  }
  return e / s;
}

/* Compares g (analytic dL/dv) with central differences of L over up to 64 entries of v. */
static void check_grad(const char *what, float *v, const float *g, size_t len, int with_tangent)
{
  size_t stride = len > 64 ? len / 64 : 1, m = 0;
  float gs[80];
  double fd[80];
  for (size_t i = 0; i < len && m < 80; i += stride, m++) {
    float v0 = v[i];
    v[i] = v0 + FD_H;
    double Lp = loss(with_tangent);
    v[i] = v0 - FD_H;
    double Lm = loss(with_tangent);
    v[i] = v0;
    fd[m] = (Lp - Lm) / (2.0 * FD_H);
    gs[m] = g[i];
  }
  double e = rel_err(gs, fd, m);
  if (getenv("SGM_NN_TEST_VERBOSE")) printf("  %-28s rel err %.2e\n", what, e);
  ck_assert_msg(e <= FD_TOL, "%s: relative error %.3g > %.1g", what, e, FD_TOL);
}

static void check_backward(void)
{
  for (int a = 0; a < P.n; a++) memset(P.gx[a], 0, P.len[a] * sizeof(float));
  P.fwd();
  P.bwd();
  for (int a = 0; a < P.n; a++) {
    char w[64];
    snprintf(w, sizeof w, "backward d%s", P.name[a]);
    check_grad(w, P.x[a], P.gx[a], P.len[a], 0);
  }
}

static void check_jvp(void)
{
  size_t n = P.nout;
  float *op = zeros(n), *tout = zeros(n);
  double *fd = malloc(n * sizeof *fd);
  P.fwd();
  P.jvp();
  memcpy(tout, P.tout, n * sizeof(float));
  for (int sgn = 1; sgn >= -1; sgn -= 2) {
    for (int a = 0; a < P.n; a++)
      if (P.tx[a])
        for (size_t i = 0; i < P.len[a]; i++) P.x[a][i] += sgn * FD_H * P.tx[a][i];
    P.fwd();
    if (sgn == 1)
      memcpy(op, P.out, n * sizeof(float));
    else
      for (size_t i = 0; i < n; i++) fd[i] = ((double)op[i] - P.out[i]) / (2.0 * FD_H);
    for (int a = 0; a < P.n; a++)
      if (P.tx[a])
        for (size_t i = 0; i < P.len[a]; i++) P.x[a][i] -= sgn * FD_H * P.tx[a][i];
  }
  double e = rel_err(tout, fd, n);
  if (getenv("SGM_NN_TEST_VERBOSE")) printf("  %-28s rel err %.2e\n", "jvp", e);
  ck_assert_msg(e <= FD_TOL, "jvp: relative error %.3g > %.1g", e, FD_TOL);
  free(op), free(tout), free(fd);
}

static void check_jvp_backward(void)
{
  for (int a = 0; a < P.n; a++) {
    memset(P.gx[a], 0, P.len[a] * sizeof(float));
    if (P.gtx[a]) memset(P.gtx[a], 0, P.len[a] * sizeof(float));
  }
  P.fwd();
  P.jvp();
  P.bwd();
  P.jvpb();
  for (int a = 0; a < P.n; a++) {
    char w[64];
    snprintf(w, sizeof w, "jvp_backward d%s", P.name[a]);
    check_grad(w, P.x[a], P.gx[a], P.len[a], 1);
    if (P.tx[a]) {
      snprintf(w, sizeof w, "jvp_backward dt%s", P.name[a]);
      check_grad(w, P.tx[a], P.gtx[a], P.len[a], 1);
    }
  }
}

static void check_all(void)
{
  check_backward();
  check_jvp();
  check_jvp_backward();
}

/* ---- linear ---- */
enum { LB = 6, LC = 7, LOC = 5 };
static void lin_fwd(void)
{
  sgm_nn_linear_forward(P.out, P.x[0], P.x[1], P.x[2], LB, LC, LOC);
}
static void lin_jvp(void)
{
  sgm_nn_linear_jvp(P.tout, P.tx[0], P.x[1], LB, LC, LOC);
}
static void lin_bwd(void)
{
  sgm_nn_linear_backward(P.gx[0], P.gx[1], P.gx[2], P.dout, P.x[0], P.x[1], LB, LC, LOC);
}
static void lin_jvpb(void)
{
  sgm_nn_linear_jvp_backward(P.gtx[0], P.gx[1], P.dtout, P.tx[0], P.x[1], LB, LC, LOC);
}

START_TEST(test_linear_fd)
{
  prob_add("inp", rnd(LB * LC, -1, 1), rnd(LB * LC, -1, 1), LB * LC);
  prob_add("weight", rnd(LOC * LC, -1, 1), NULL, LOC * LC);
  prob_add("bias", rnd(LOC, -1, 1), NULL, LOC);
  prob_out(LB * LOC);
  P.fwd = lin_fwd, P.jvp = lin_jvp, P.bwd = lin_bwd, P.jvpb = lin_jvpb;
  check_all();
  prob_free();
}
END_TEST

START_TEST(test_linear_blas_vs_naive)
{
  /* Sizes that are not multiples of any SIMD width; accumulation starts from non-zero buffers. */
  const int BT = 37, C = 29, OC = 23;
  float *x = rnd(BT * C, -1, 1), *w = rnd(OC * C, -1, 1), *b = rnd(OC, -1, 1);
  float *dy = rnd(BT * OC, -1, 1);
  float *y1 = zeros(BT * OC), *y2 = zeros(BT * OC);
  float *dx1 = rnd(BT * C, -1, 1), *dw1 = rnd(OC * C, -1, 1), *db1 = rnd(OC, -1, 1);
  float *dx2 = malloc(BT * C * sizeof(float)), *dw2 = malloc(OC * C * sizeof(float)),
        *db2 = malloc(OC * sizeof(float));
  memcpy(dx2, dx1, BT * C * sizeof(float));
  memcpy(dw2, dw1, OC * C * sizeof(float));
  memcpy(db2, db1, OC * sizeof(float));
  sgm_nn_linear_forward(y1, x, w, b, BT, C, OC);
  sgm_nn_linear_forward_naive(y2, x, w, b, BT, C, OC);
  sgm_nn_linear_backward(dx1, dw1, db1, dy, x, w, BT, C, OC);
  sgm_nn_linear_backward_naive(dx2, dw2, db2, dy, x, w, BT, C, OC);
  struct {
    const char *n;
    float *a, *b;
    int len;
  } c[] = {{"out", y1, y2, BT * OC},
           {"dinp", dx1, dx2, BT * C},
           {"dweight", dw1, dw2, OC * C},
           {"dbias", db1, db2, OC}};
  for (int k = 0; k < 4; k++) {
    double e = 0.0, s = 0.0;
    for (int i = 0; i < c[k].len; i++) {
      e = fmax(e, fabs(c[k].a[i] - c[k].b[i]));
      s = fmax(s, fabs(c[k].b[i]));
    }
    ck_assert_msg(e <= BLAS_RTOL * s, "%s: sgemm vs naive %.3g (scale %.3g)", c[k].n, e, s);
  }
  free(x), free(w), free(b), free(dy), free(y1), free(y2), free(dx1), free(dw1), free(db1);
  free(dx2), free(dw2), free(db2);
}
END_TEST

/* The no-packing AVX2/FMA GEMMs of the linear layers (sgm_nn_linear_small_gemm) at the small
 * model's shapes and odd ones: row counts that are no multiple of the 6-row tile, the 48-row chunk
 * or the 64-row dW chunk, column counts that leave an 8-wide panel, K = 2 and K = 192 (two K
 * blocks), narrow inputs C <= 4 (their own input and weight gradient loops), and shapes outside the
 * kernel's range (sgemm). Forward (with bias), backward (+= onto
 * non-zero buffers) and the set-variant input gradient, each against the double naive loops with
 * the same tolerance as sgemm (BLAS_RTOL of the largest magnitude), with the kernel on and off. */
static const int small_shapes[][3] = {{329, 64, 192}, {329, 192, 64}, {101, 64, 64}, {53, 32, 64},
                                      {329, 2, 64},   {47, 64, 32},   {29, 24, 40},  {13, 128, 8},
                                      {31, 64, 200},  {17, 7, 16},    {5, 64, 128},  {1, 64, 64},
                                      {37, 3, 40},    {6, 4, 8},      {23, 1, 24}};
START_TEST(test_linear_small_gemm)
{
  const int BT = small_shapes[_i][0], C = small_shapes[_i][1], OC = small_shapes[_i][2];
  float *x = rnd(BT * C, -1, 1), *w = rnd(OC * C, -1, 1), *b = rnd(OC, -1, 1);
  float *dy = rnd(BT * OC, -1, 1), *dx0 = rnd(BT * C, -1, 1), *dw0 = rnd(OC * C, -1, 1);
  float *db0 = rnd(OC, -1, 1);
  float *y2 = zeros(BT * OC), *dx2 = malloc(BT * C * sizeof(float)),
        *dw2 = malloc(OC * C * sizeof(float)), *db2 = malloc(OC * sizeof(float)),
        *dxs2 = zeros(BT * C);
  memcpy(dx2, dx0, BT * C * sizeof(float));
  memcpy(dw2, dw0, OC * C * sizeof(float));
  memcpy(db2, db0, OC * sizeof(float));
  sgm_nn_linear_forward_naive(y2, x, w, b, BT, C, OC);
  sgm_nn_linear_backward_naive(dx2, dw2, db2, dy, x, w, BT, C, OC);
  sgm_nn_linear_backward_naive(dxs2, NULL, NULL, dy, x, w, BT, C, OC);
  const int was = sgm_nn_linear_small_gemm(-1);
  for (int on = 1; on >= 0; on--) {
    sgm_nn_linear_small_gemm(on);
    float *y1 = zeros(BT * OC), *dx1 = malloc(BT * C * sizeof(float)),
          *dw1 = malloc(OC * C * sizeof(float)), *db1 = malloc(OC * sizeof(float)),
          *dxs1 = rnd(BT * C, -1, 1); /* overwritten by the set variant */
    memcpy(dx1, dx0, BT * C * sizeof(float));
    memcpy(dw1, dw0, OC * C * sizeof(float));
    memcpy(db1, db0, OC * sizeof(float));
    sgm_nn_linear_forward(y1, x, w, b, BT, C, OC);
    sgm_nn_linear_backward(dx1, dw1, db1, dy, x, w, BT, C, OC);
    sgm_nn_linear_backward_input(dxs1, 0, dy, w, BT, C, OC);
    struct {
      const char *n;
      float *a, *b;
      int len;
    } c[] = {{"out", y1, y2, BT * OC},
             {"dinp", dx1, dx2, BT * C},
             {"dweight", dw1, dw2, OC * C},
             {"dbias", db1, db2, OC},
             {"dinp (set)", dxs1, dxs2, BT * C}};
    for (int k = 0; k < 5; k++) {
      double e = 0.0, s = 0.0;
      for (int i = 0; i < c[k].len; i++) {
        e = fmax(e, fabs(c[k].a[i] - c[k].b[i]));
        s = fmax(s, fabs(c[k].b[i]));
      }
      ck_assert_msg(e <= BLAS_RTOL * s,
                    "%s (%d x %d -> %d, small kernel %d): vs naive %.3g (scale %.3g)", c[k].n, BT,
                    C, OC, sgm_nn_linear_small_gemm(-1), e, s);
    }
    free(y1), free(dx1), free(dw1), free(db1), free(dxs1);
  }
  sgm_nn_linear_small_gemm(was);
  free(x), free(w), free(b), free(dy), free(dx0), free(dw0), free(db0);
  free(y2), free(dx2), free(dw2), free(db2), free(dxs2);
}
END_TEST

/* ---- activations ---- */
enum { AN = 40 };
static SgmNnAct act_kind;
static void act_fwd(void)
{
  sgm_nn_act_forward(act_kind, P.out, P.x[0], AN);
}
static void act_jvp(void)
{
  sgm_nn_act_jvp(act_kind, P.tout, P.tx[0], P.x[0], AN);
}
static void act_bwd(void)
{
  sgm_nn_act_backward(act_kind, P.gx[0], P.dout, P.x[0], AN);
}
static void act_jvpb(void)
{
  sgm_nn_act_jvp_backward(act_kind, P.gx[0], P.gtx[0], P.dtout, P.x[0], P.tx[0], AN);
}

START_TEST(test_activations_fd)
{
  act_kind = (SgmNnAct)_i;
  float *x = rnd(AN, -3, 3);
  /* ReLU: keep inputs away from the kink so the finite difference is of a smooth function. */
  for (int i = 0; i < AN; i++)
    if (fabsf(x[i]) < 0.2f) x[i] = x[i] < 0 ? -0.2f - x[i] : 0.2f + x[i];
  prob_add("inp", x, rnd(AN, -1, 1), AN);
  prob_out(AN);
  P.fwd = act_fwd, P.jvp = act_jvp, P.bwd = act_bwd, P.jvpb = act_jvpb;
  check_all();
  prob_free();
}
END_TEST

START_TEST(test_gelu_values)
{
  /* Exact GELU x Phi(x) (not the tanh approximation): independent values from erf tables. */
  const float x[4] = {-2.0f, -0.5f, 0.5f, 3.0f};
  const double ref[4] = {-0.04550026389635842, -0.15426876936299344, 0.34573123063700656,
                         2.9959502039924083};
  float y[4];
  sgm_nn_gelu_forward(y, x, 4);
  for (int i = 0; i < 4; i++) ck_assert_double_eq_tol(y[i], ref[i], 1e-6);
}
END_TEST

START_TEST(test_gelu_float_accuracy)
{
  /* The float GELU (blocked, vectorized) against double erfc over [-14, 14] at an odd length
   * (a partial last block), its derivative (backward, jvp) and second derivative (jvp_backward),
   * relative to each value where the value is tiny (x << 0), and NaN propagation. */
  enum { NG = 1001 };
  static float x[NG], y[NG], d[NG], t[NG], one[NG], z[NG], dd[NG];
  for (int i = 0; i < NG; i++) x[i] = (float)(-14.0 + 28.0 * i / (NG - 1)), one[i] = 1.0f;
  sgm_nn_gelu_forward(y, x, NG);
  memset(d, 0, sizeof d);
  sgm_nn_gelu_backward(d, one, x, NG);
  sgm_nn_gelu_jvp(t, one, x, NG);
  memset(z, 0, sizeof z), memset(dd, 0, sizeof dd);
  sgm_nn_act_jvp_backward(SGM_NN_ACT_GELU, dd, z, one, x, one, NG);
  for (int i = 0; i < NG; i++) {
    const double xi = x[i], Phi = 0.5 * erfc(-xi / sqrt(2.0));
    const double phi = exp(-0.5 * xi * xi) / sqrt(2.0 * M_PI);
    const double f = xi * Phi, f1 = Phi + xi * phi, f2 = phi * (2.0 - xi * xi);
    const double rel = 2e-6 + 1e-7 * xi * xi;
    ck_assert_msg(fabs(y[i] - f) <= rel * fabs(f) + 1e-30, "gelu(%g) = %g, want %g", xi, y[i], f);
    ck_assert_msg(fabs(d[i] - f1) <= rel * fabs(f1) + 1e-7, "gelu'(%g) = %g, want %g", xi, d[i],
                  f1);
    ck_assert_msg(t[i] == d[i], "jvp and backward differ at %g", xi);
    ck_assert_msg(z[i] == d[i], "jvp_backward dt differs at %g", xi);
    ck_assert_msg(fabs(dd[i] - f2) <= rel * fabs(f2) + 1e-7, "gelu''(%g) = %g, want %g", xi, dd[i],
                  f2);
  }
  x[3] = NAN;
  sgm_nn_gelu_forward(y, x, 5);
  ck_assert(isnan(y[3]) && !isnan(y[2]) && !isnan(y[4]));
}
END_TEST

/* ---- LayerNorm ---- */
enum { NB = 5, NC = 9 };
static float ln_mean[NB], ln_rstd[NB];
static void ln_fwd(void)
{
  sgm_nn_layernorm_forward(P.out, ln_mean, ln_rstd, P.x[0], P.x[1], P.x[2], NB, NC);
}
static void ln_jvp(void)
{
  sgm_nn_layernorm_jvp(P.tout, P.tx[0], P.x[0], P.x[1], ln_mean, ln_rstd, NB, NC);
}
static void ln_bwd(void)
{
  sgm_nn_layernorm_backward(P.gx[0], P.gx[1], P.gx[2], P.dout, P.x[0], P.x[1], ln_mean, ln_rstd, NB,
                            NC);
}
static void ln_jvpb(void)
{
  sgm_nn_layernorm_jvp_backward(P.gx[0], P.gtx[0], P.gx[1], P.dtout, P.x[0], P.tx[0], P.x[1],
                                ln_mean, ln_rstd, NB, NC);
}

START_TEST(test_layernorm_fd)
{
  prob_add("inp", rnd(NB * NC, -2, 2), rnd(NB * NC, -1, 1), NB * NC);
  prob_add("weight", rnd(NC, 0.5, 1.5), NULL, NC);
  prob_add("bias", rnd(NC, -1, 1), NULL, NC);
  prob_out(NB * NC);
  P.fwd = ln_fwd, P.jvp = ln_jvp, P.bwd = ln_bwd, P.jvpb = ln_jvpb;
  check_all();
  /* Independent property: with weight 1, bias 0 each row has mean 0 and variance 1/(1+eps/var). */
  for (int i = 0; i < NC; i++) P.x[1][i] = 1.0f, P.x[2][i] = 0.0f;
  ln_fwd();
  for (int r = 0; r < NB; r++) {
    double m = 0.0, v = 0.0;
    for (int i = 0; i < NC; i++) m += P.out[r * NC + i];
    for (int i = 0; i < NC; i++) v += P.out[r * NC + i] * P.out[r * NC + i];
    ck_assert_double_eq_tol(m / NC, 0.0, 1e-6);
    ck_assert_double_eq_tol(v / NC, 1.0, 1e-3);
  }
  prob_free();
}
END_TEST

/* ---- softmax ---- */
enum { SB = 4, SV = 7 };
static float sm_mask[SV] = {1, 1, 0, 1, 1, 0, 1};
static const float *sm_use_mask;
static void sm_fwd(void)
{
  sgm_nn_softmax_forward(P.out, P.x[0], sm_use_mask, SB, SV);
}
static void sm_jvp(void)
{
  sgm_nn_softmax_jvp(P.tout, P.tx[0], P.out, SB, SV);
}
static void sm_bwd(void)
{
  sgm_nn_softmax_backward(P.gx[0], P.dout, P.out, SB, SV);
}
static void sm_jvpb(void)
{
  sgm_nn_softmax_jvp_backward(P.gx[0], P.gtx[0], P.dtout, P.out, P.tx[0], SB, SV);
}

START_TEST(test_softmax_fd)
{
  sm_use_mask = _i ? sm_mask : NULL;
  prob_add("inp", rnd(SB * SV, -2, 2), rnd(SB * SV, -1, 1), SB * SV);
  prob_out(SB * SV);
  P.fwd = sm_fwd, P.jvp = sm_jvp, P.bwd = sm_bwd, P.jvpb = sm_jvpb;
  check_all();
  sm_fwd();
  for (int r = 0; r < SB; r++) {
    double s = 0.0;
    for (int j = 0; j < SV; j++) {
      s += P.out[r * SV + j];
      if (sm_use_mask && sm_mask[j] == 0.0f) ck_assert_float_eq(P.out[r * SV + j], 0.0f);
    }
    ck_assert_double_eq_tol(s, 1.0, 1e-6);
  }
  prob_free();
}
END_TEST

/* ---- attention: packed qkv (self-attention) and the centre-only form (Tq = 1) ---- */
enum { AB = 2, AT = 5, ACH = 8, ANH = 2 };
static float att_mask[AB * AT] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 0};
static float att_p[AB * ANH * AT * AT], att_ts[AB * ANH * AT * AT], att_scr[3 * AT * AT];
static int att_centre; /* 0: q, k, v from one packed (B,T,3C); 1: q (B,1,C), kv (B,T,2C) */
static const float *att_m;
static void att_fwd(void)
{
  if (!att_centre)
    sgm_nn_attention_forward(P.out, att_p, P.x[0], P.x[0] + ACH, P.x[0] + 2 * ACH, att_m, AB, AT,
                             AT, ACH, ANH, 3 * ACH, 3 * ACH);
  else
    sgm_nn_attention_forward(P.out, att_p, P.x[0], P.x[1], P.x[1] + ACH, att_m, AB, 1, AT, ACH, ANH,
                             ACH, 2 * ACH);
}
static void att_jvp(void)
{
  if (!att_centre)
    sgm_nn_attention_jvp(P.tout, att_ts, att_scr, P.tx[0], P.tx[0] + ACH, P.tx[0] + 2 * ACH, att_p,
                         P.x[0], P.x[0] + ACH, P.x[0] + 2 * ACH, att_m, AB, AT, AT, ACH, ANH,
                         3 * ACH, 3 * ACH);
  else
    sgm_nn_attention_jvp(P.tout, att_ts, att_scr, P.tx[0], P.tx[1], P.tx[1] + ACH, att_p, P.x[0],
                         P.x[1], P.x[1] + ACH, att_m, AB, 1, AT, ACH, ANH, ACH, 2 * ACH);
}
static void att_bwd(void)
{
  if (!att_centre)
    sgm_nn_attention_backward(P.gx[0], P.gx[0] + ACH, P.gx[0] + 2 * ACH, att_scr, P.dout, att_p,
                              P.x[0], P.x[0] + ACH, P.x[0] + 2 * ACH, AB, AT, AT, ACH, ANH, 3 * ACH,
                              3 * ACH);
  else
    sgm_nn_attention_backward(P.gx[0], P.gx[1], P.gx[1] + ACH, att_scr, P.dout, att_p, P.x[0],
                              P.x[1], P.x[1] + ACH, AB, 1, AT, ACH, ANH, ACH, 2 * ACH);
}
static void att_jvpb(void)
{
  if (!att_centre)
    sgm_nn_attention_jvp_backward(
        P.gx[0], P.gx[0] + ACH, P.gx[0] + 2 * ACH, P.gtx[0], P.gtx[0] + ACH, P.gtx[0] + 2 * ACH,
        att_scr, P.dtout, att_p, att_ts, P.x[0], P.x[0] + ACH, P.x[0] + 2 * ACH, P.tx[0],
        P.tx[0] + ACH, P.tx[0] + 2 * ACH, AB, AT, AT, ACH, ANH, 3 * ACH, 3 * ACH);
  else
    sgm_nn_attention_jvp_backward(P.gx[0], P.gx[1], P.gx[1] + ACH, P.gtx[0], P.gtx[1],
                                  P.gtx[1] + ACH, att_scr, P.dtout, att_p, att_ts, P.x[0], P.x[1],
                                  P.x[1] + ACH, P.tx[0], P.tx[1], P.tx[1] + ACH, AB, 1, AT, ACH,
                                  ANH, ACH, 2 * ACH);
}

START_TEST(test_attention_fd)
{
  /* _i bit 0: key mask on/off; bit 1: centre-only (one query row of a separate q array). */
  att_m = (_i & 1) ? att_mask : NULL;
  att_centre = (_i >> 1) & 1;
  if (!att_centre) {
    prob_add("qkv", rnd(AB * AT * 3 * ACH, -1.5, 1.5), rnd(AB * AT * 3 * ACH, -1, 1),
             AB * AT * 3 * ACH);
    prob_out(AB * AT * ACH);
  } else {
    prob_add("q", rnd(AB * ACH, -1.5, 1.5), rnd(AB * ACH, -1, 1), AB * ACH);
    prob_add("kv", rnd(AB * AT * 2 * ACH, -1.5, 1.5), rnd(AB * AT * 2 * ACH, -1, 1),
             AB * AT * 2 * ACH);
    prob_out(AB * ACH);
  }
  P.fwd = att_fwd, P.jvp = att_jvp, P.bwd = att_bwd, P.jvpb = att_jvpb;
  check_all();
  if (att_m) {
    /* A masked key gets probability 0 and its value cannot change the output. */
    att_fwd();
    for (int h = 0; h < ANH; h++)
      ck_assert_float_eq(att_p[((1 * ANH + h) * (att_centre ? 1 : AT)) * AT + 2], 0.0f);
  }
  prob_free();
}
END_TEST

/* B, T, C, NH: head size 4 (the loops' transposed-key path), 8 and 32 (in-place key dot
 * products, att_dots: key groups of 8 and single keys), 64 at T = 65 (sgemm) */
static const int att_shapes[][4] = {{3, 7, 12, 3}, {3, 17, 64, 2}, {2, 9, 16, 2}, {2, 65, 64, 1}};
START_TEST(test_attention_blas_vs_naive)
{
  /* All four attention functions, fast path vs loop reference, packed self-attention with a key
   * mask and the centre-only form; gradients accumulate onto non-zero buffers. */
  const int B = att_shapes[_i][0], T = att_shapes[_i][1], C = att_shapes[_i][2];
  const int NH = att_shapes[_i][3], NQ = B * T * 3 * C;
  float *mask = malloc((size_t)B * T * sizeof(float));
  for (int i = 0; i < B * T; i++) mask[i] = (i % 5 == 3) ? 0.0f : 1.0f;
  for (int centre = 0; centre < 2; centre++) {
    const int Tq = centre ? 1 : T, ldq = centre ? C : 3 * C, ldkv = centre ? 2 * C : 3 * C;
    float *qa = rnd(NQ, -1.5, 1.5), *kva = rnd(NQ, -1.5, 1.5);
    float *tqa = rnd(NQ, -1, 1), *tkva = rnd(NQ, -1, 1);
    const float *q = qa, *k = centre ? kva : qa + C, *v = centre ? kva + C : qa + 2 * C;
    const float *tq = tqa, *tk = centre ? tkva : tqa + C, *tv = centre ? tkva + C : tqa + 2 * C;
    float *dout = rnd(B * T * C, -1, 1), *dtout = rnd(B * T * C, -1, 1);
    float *out[2], *att[2], *tout[2], *ts[2], *g[2][6];
    float *scr = zeros(3 * T * T);
    float *g0[6];
    for (int a = 0; a < 6; a++) g0[a] = rnd(NQ, -1, 1);
    for (int r = 0; r < 2; r++) {
      out[r] = zeros(B * T * C), tout[r] = zeros(B * T * C);
      att[r] = zeros(B * NH * T * T), ts[r] = zeros(B * NH * T * T);
      for (int a = 0; a < 6; a++) {
        g[r][a] = malloc(NQ * sizeof(float));
        memcpy(g[r][a], g0[a], NQ * sizeof(float));
      }
      /* gradient views: dq, dtq in g[.][0], g[.][3]; dk, dv, dtk, dtv at the k/v offsets */
      float *dq = g[r][0], *dtq = g[r][3];
      float *dk = centre ? g[r][1] : g[r][0] + C, *dv = centre ? g[r][1] + C : g[r][0] + 2 * C;
      float *dtk = centre ? g[r][4] : g[r][3] + C, *dtv = centre ? g[r][4] + C : g[r][3] + 2 * C;
      if (r == 0) {
        sgm_nn_attention_forward(out[r], att[r], q, k, v, mask, B, Tq, T, C, NH, ldq, ldkv);
        sgm_nn_attention_backward(dq, dk, dv, scr, dout, att[r], q, k, v, B, Tq, T, C, NH, ldq,
                                  ldkv);
        sgm_nn_attention_jvp(tout[r], ts[r], scr, tq, tk, tv, att[r], q, k, v, mask, B, Tq, T, C,
                             NH, ldq, ldkv);
        sgm_nn_attention_jvp_backward(dq, dk, dv, dtq, dtk, dtv, scr, dtout, att[r], ts[r], q, k, v,
                                      tq, tk, tv, B, Tq, T, C, NH, ldq, ldkv);
      } else {
        sgm_nn_attention_forward_naive(out[r], att[r], q, k, v, mask, B, Tq, T, C, NH, ldq, ldkv);
        sgm_nn_attention_backward_naive(dq, dk, dv, scr, dout, att[r], q, k, v, B, Tq, T, C, NH,
                                        ldq, ldkv);
        sgm_nn_attention_jvp_naive(tout[r], ts[r], scr, tq, tk, tv, att[r], q, k, v, mask, B, Tq, T,
                                   C, NH, ldq, ldkv);
        sgm_nn_attention_jvp_backward_naive(dq, dk, dv, dtq, dtk, dtv, scr, dtout, att[r], ts[r], q,
                                            k, v, tq, tk, tv, B, Tq, T, C, NH, ldq, ldkv);
      }
    }
    struct {
      const char *n;
      float *a, *b;
      size_t len;
    } c[] = {{"out", out[0], out[1], (size_t)B * Tq * C},
             {"att", att[0], att[1], (size_t)B * NH * Tq * T},
             {"tout", tout[0], tout[1], (size_t)B * Tq * C},
             {"ts", ts[0], ts[1], (size_t)B * NH * Tq * T},
             {"dq|dk|dv", g[0][0], g[1][0], NQ},
             {"dkv", g[0][1], g[1][1], NQ},
             {"dtq|dtk|dtv", g[0][3], g[1][3], NQ},
             {"dtkv", g[0][4], g[1][4], NQ}};
    for (int n = 0; n < 8; n++) {
      double e = 0.0, sc = 0.0;
      for (size_t i = 0; i < c[n].len; i++) {
        e = fmax(e, fabs(c[n].a[i] - c[n].b[i]));
        sc = fmax(sc, fabs(c[n].b[i]));
      }
      ck_assert_msg(e <= BLAS_RTOL * sc,
                    "attention %s (centre %d): sgemm vs naive %.3g (scale %.3g)", c[n].n, centre, e,
                    sc);
    }
    for (int r = 0; r < 2; r++) {
      free(out[r]), free(tout[r]), free(att[r]), free(ts[r]);
      for (int a = 0; a < 6; a++) free(g[r][a]);
    }
    for (int a = 0; a < 6; a++) free(g0[a]);
    free(qa), free(kva), free(tqa), free(tkva), free(dout), free(dtout), free(scr);
  }
  free(mask);
}
END_TEST

START_TEST(test_attention_jvp_row0)
{
  /* sgm_nn_attention_jvp_row0 (tangents on row 0 of each batch row only) against the loop
   * reference with zero tangents on the other rows, packed self-attention with a key mask (key 0
   * of batch row 1 among the masked keys); the fast path gets garbage on those rows, which it must
   * not read. */
  const int B = att_shapes[_i][0], T = att_shapes[_i][1], C = att_shapes[_i][2];
  const int NH = att_shapes[_i][3], NQ = B * T * 3 * C;
  float *mask = malloc((size_t)B * T * sizeof(float));
  for (int i = 0; i < B * T; i++) mask[i] = ((i % 5 == 3 && i % T != 1) || i == T) ? 0.0f : 1.0f;
  float *qkv = rnd(NQ, -1.5, 1.5), *tz = zeros(NQ), *tg = rnd(NQ, -1, 1);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < 3 * C; c++) tz[(size_t)b * T * 3 * C + c] = tg[(size_t)b * T * 3 * C + c];
  float *att = zeros(B * NH * T * T), *out = zeros(B * T * C), *scr = zeros(3 * T * T);
  float *tout[2], *ts[2];
  for (int r = 0; r < 2; r++) tout[r] = rnd(B * T * C, -1, 1), ts[r] = rnd(B * NH * T * T, -1, 1);
  sgm_nn_attention_forward(out, att, qkv, qkv + C, qkv + 2 * C, mask, B, T, T, C, NH, 3 * C, 3 * C);
  sgm_nn_attention_jvp_row0(tout[0], ts[0], scr, tg, tg + C, tg + 2 * C, att, out, qkv, qkv + C,
                            qkv + 2 * C, B, T, T, C, NH, 3 * C, 3 * C);
  sgm_nn_attention_jvp_naive(tout[1], ts[1], scr, tz, tz + C, tz + 2 * C, att, qkv, qkv + C,
                             qkv + 2 * C, mask, B, T, T, C, NH, 3 * C, 3 * C);
  const float *a[2] = {tout[0], ts[0]}, *e[2] = {tout[1], ts[1]};
  const int n[2] = {B * T * C, B * NH * T * T};
  for (int k = 0; k < 2; k++) {
    double err = 0.0, sc = 0.0;
    for (int i = 0; i < n[k]; i++) {
      err = fmax(err, fabs(a[k][i] - e[k][i]));
      sc = fmax(sc, fabs(e[k][i]));
    }
    ck_assert_double_gt(sc, 0.0);
    ck_assert_msg(err <= BLAS_RTOL * sc,
                  "attention jvp_row0 %s (B %d T %d C %d NH %d): %.3g (%.3g)", k ? "ts" : "tout", B,
                  T, C, NH, err, sc);
  }
  free(mask), free(qkv), free(tz), free(tg), free(att), free(out), free(scr);
  for (int r = 0; r < 2; r++) free(tout[r]), free(ts[r]);
}
END_TEST

START_TEST(test_attention_reference)
{
  /* Independent reference: one head, two keys, q.k known; out = p0 v0 + p1 v1 with
   * p = softmax(q.k / sqrt(hs)) computed by hand. */
  const int C = 2;
  float q[2] = {1.0f, 0.0f}, kv[2 * 4] = {2.0f, 0.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f};
  float out[2], att[2];
  sgm_nn_attention_forward(out, att, q, kv, kv + C, NULL, 1, 1, 2, C, 1, C, 2 * C);
  double s0 = 2.0 / sqrt(2.0), s1 = 0.0;
  double p0 = exp(s0) / (exp(s0) + exp(s1)), p1 = 1.0 - p0;
  ck_assert_double_eq_tol(att[0], p0, 1e-6);
  ck_assert_double_eq_tol(out[0], p0 * 1.0, 1e-6);
  ck_assert_double_eq_tol(out[1], p1 * 3.0, 1e-6);
}
END_TEST

/* ---- centre-query attention through the keys' source rows (sgm_nn_attention_xcentre_*) ---- */
enum { XB = 3, XT = 6, XNH = 2, XCMAX = 40 };
static float xc_mask[XB * XT] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1};
static float xc_p[XB * XNH * XT], xc_scr[XNH * XT];
static const float *xc_m;
static int xc_C;
static void xc_fwd(void)
{
  sgm_nn_attention_xcentre_forward(P.out, xc_p, P.x[0], P.x[1], xc_m, XB, XT, xc_C, XNH, 0.3f);
}
static void xc_bwd(void)
{
  sgm_nn_attention_xcentre_backward_set(P.gx[1], P.gx[0], xc_scr, P.dout, xc_p, P.x[0], P.x[1], XB,
                                        XT, xc_C, XNH, 0.3f);
}

START_TEST(test_attention_xcentre_fd)
{
  /* _i bit 0: key mask; bit 1: C = 40 (the 32- and 8-wide channel blocks) or 13 (a scalar tail) */
  xc_m = (_i & 1) ? xc_mask : NULL;
  xc_C = (_i & 2) ? 40 : 13;
  prob_add("u", rnd(XB * XNH * xc_C, -1.5, 1.5), NULL, XB * XNH * xc_C);
  prob_add("x", rnd(XB * XT * xc_C, -1.5, 1.5), NULL, XB * XT * xc_C);
  prob_out(XB * XNH * xc_C);
  P.fwd = xc_fwd, P.bwd = xc_bwd;
  /* the backward overwrites: start it from garbage instead of the zeros check_backward sets */
  check_backward();
  for (int a = 0; a < 2; a++)
    for (size_t i = 0; i < P.len[a]; i++) P.gx[a][i] = 1e3f;
  xc_fwd();
  xc_bwd();
  for (int a = 0; a < 2; a++)
    for (size_t i = 0; i < P.len[a]; i++) ck_assert_float_ne(P.gx[a][i], 1e3f);
  if (xc_m) {
    /* masked keys: probability 0, and their rows get a zero gradient */
    for (int b = 0; b < XB; b++)
      for (int j = 0; j < XT; j++)
        if (xc_m[b * XT + j] == 0.0f) {
          for (int h = 0; h < XNH; h++) ck_assert_float_eq(xc_p[(b * XNH + h) * XT + j], 0.0f);
          for (int c = 0; c < xc_C; c++) ck_assert_float_eq(P.gx[1][(b * XT + j) * xc_C + c], 0.0f);
        }
  }
  prob_free();
}
END_TEST

/* Against the double loops at several shapes (the small model's T = 17, C = 64, 2 heads; tails in
 * keys and channels), and the identity the transformer relies on: with u_h = W_k,h^T q_h the
 * output W_v,h z_h + b_v,h and the gradients of q and x equal those of the attention over the
 * projected keys and values k = x W_k^T + b_k, v = x W_v^T + b_v (sgm_nn_attention_*_naive). */
static const int xc_shapes[][4] = {{5, 17, 64, 2}, {3, 7, 13, 3}, {4, 9, 40, 1}, {2, 65, 32, 4}};
START_TEST(test_attention_xcentre_vs_naive)
{
  const int B = xc_shapes[_i][0], T = xc_shapes[_i][1], C = xc_shapes[_i][2], NH = xc_shapes[_i][3];
  const int hs = C / NH, NC = B * NH * C;
  const float scale = (float)(1.0 / sqrt((double)hs));
  float *x = rnd(B * T * C, -1.5, 1.5), *q = rnd(B * C, -1.5, 1.5), *dy = rnd(B * C, -1, 1);
  float *w = rnd(2 * C * C, -0.3, 0.3), *bkv = rnd(2 * C, -0.5, 0.5), *mask = zeros(B * T);
  for (int i = 0; i < B * T; i++) mask[i] = (i % T == 0 || urand() < 0.7) ? 1.0f : 0.0f;
  float *u = zeros(NC), *z[2], *att[2], *dx[2], *du[2], *scr = zeros(NH * T);
  for (int r = 0; r < 2; r++) {
    z[r] = zeros(NC), att[r] = zeros(B * NH * T), dx[r] = rnd(B * T * C, -1, 1);
    du[r] = rnd(NC, -1, 1);
  }
  for (int h = 0; h < NH; h++) /* u_h = q_h W_k,h */
    sgm_nn_gemm_naive(0, 0, B, C, hs, q + h * hs, C, w + (size_t)h * hs * C, C, NULL, 0, u + h * C,
                      NH * C);
  float *dz = rnd(NC, -1, 1);
  sgm_nn_attention_xcentre_forward(z[0], att[0], u, x, mask, B, T, C, NH, scale);
  sgm_nn_attention_xcentre_forward_naive(z[1], att[1], u, x, mask, B, T, C, NH, scale);
  sgm_nn_attention_xcentre_backward_set(dx[0], du[0], scr, dz, att[0], u, x, B, T, C, NH, scale);
  sgm_nn_attention_xcentre_backward_naive(dx[1], du[1], scr, dz, att[1], u, x, B, T, C, NH, scale);
  struct {
    const char *n;
    const float *a, *b;
    int len;
  } c[] = {{"z", z[0], z[1], NC},
           {"att", att[0], att[1], B * NH * T},
           {"dx", dx[0], dx[1], B * T * C},
           {"du", du[0], du[1], NC}};
  for (int k = 0; k < 4; k++) {
    double e = 0.0, sc = 0.0;
    for (int i = 0; i < c[k].len; i++) {
      e = fmax(e, fabs(c[k].a[i] - c[k].b[i]));
      sc = fmax(sc, fabs(c[k].b[i]));
    }
    ck_assert_msg(e <= BLAS_RTOL * sc, "xcentre %s (B %d T %d C %d NH %d): vs naive %.3g (%.3g)",
                  c[k].n, B, T, C, NH, e, sc);
  }
  /* the identity, against the attention over projected keys and values (all in double loops) */
  float *kv = zeros(B * T * 2 * C), *y1 = zeros(B * C), *y2 = zeros(B * C), *p2 = zeros(B * NH * T);
  float *dq1 = zeros(B * C), *dq2 = zeros(B * C), *dkv = zeros(B * T * 2 * C);
  float *dx2 = zeros(B * T * C), *dzr = zeros(NC), *ascr = zeros(T);
  sgm_nn_linear_forward_naive(kv, x, w, bkv, B * T, C, 2 * C);
  sgm_nn_attention_forward_naive(y2, p2, q, kv, kv + C, mask, B, 1, T, C, NH, C, 2 * C);
  sgm_nn_attention_backward_naive(dq2, dkv, dkv + C, ascr, dy, p2, q, kv, kv + C, B, 1, T, C, NH, C,
                                  2 * C);
  sgm_nn_linear_backward_naive(dx2, NULL, NULL, dkv, x, w, B * T, C, 2 * C);
  for (int h = 0; h < NH; h++) {
    const float *Wv = w + (size_t)(C + h * hs) * C;
    sgm_nn_gemm_naive(0, 1, B, hs, C, z[1] + h * C, NH * C, Wv, C, bkv + C + h * hs, 0, y1 + h * hs,
                      C);
    sgm_nn_gemm_naive(0, 0, B, C, hs, dy + h * hs, C, Wv, C, NULL, 0, dzr + h * C, NH * C);
  }
  sgm_nn_attention_xcentre_backward_naive(dx[1], du[1], scr, dzr, att[1], u, x, B, T, C, NH, scale);
  for (int h = 0; h < NH; h++)
    sgm_nn_gemm_naive(0, 1, B, hs, C, du[1] + h * C, NH * C, w + (size_t)h * hs * C, C, NULL, 0,
                      dq1 + h * hs, C);
  struct {
    const char *n;
    const float *a, *b;
    int len;
  } d[] = {{"out", y1, y2, B * C},
           {"att", att[1], p2, B * NH * T},
           {"dq", dq1, dq2, B * C},
           {"dx", dx[1], dx2, B * T * C}};
  for (int k = 0; k < 4; k++) {
    double e = 0.0, sc = 0.0;
    for (int i = 0; i < d[k].len; i++) {
      e = fmax(e, fabs(d[k].a[i] - d[k].b[i]));
      sc = fmax(sc, fabs(d[k].b[i]));
    }
    ck_assert_double_gt(sc, 0.0);
    ck_assert_msg(e <= 1e-5 * sc, "xcentre identity %s (B %d T %d C %d NH %d): %.3g (%.3g)", d[k].n,
                  B, T, C, NH, e, sc);
  }
  free(x), free(q), free(dy), free(w), free(bkv), free(mask), free(u), free(scr), free(dz);
  for (int r = 0; r < 2; r++) free(z[r]), free(att[r]), free(dx[r]), free(du[r]);
  free(kv), free(y1), free(y2), free(p2), free(dq1), free(dq2), free(dkv), free(dx2), free(dzr);
  free(ascr);
}
END_TEST

/* The tangent sgm_nn_attention_xcentre_jvp: the fast loops against the double loops (with and
 * without the score tangent constant s0), and the identity the transformer's JVP relies on: with
 * u_h = W_k,h^T q_h, tu_h = W_k,h^T tq_h and s0_bh = scale tq_h . b_k,h, the output tangent
 * W_v,h tz_h and the score tangents ts equal those of the attention tangent over the projected
 * keys and values k = x W_k^T + b_k, v = x W_v^T + b_v and their tangents tx W_k^T, tx W_v^T
 * (sgm_nn_attention_jvp_naive), with absent keys. */
START_TEST(test_attention_xcentre_jvp)
{
  const int B = xc_shapes[_i][0], T = xc_shapes[_i][1], C = xc_shapes[_i][2], NH = xc_shapes[_i][3];
  const int hs = C / NH, NC = B * NH * C, NS = B * NH * T;
  const float scale = (float)(1.0 / sqrt((double)hs));
  float *x = rnd(B * T * C, -1.5, 1.5), *q = rnd(B * C, -1.5, 1.5);
  float *tx = rnd(B * T * C, -1, 1), *tq = rnd(B * C, -1, 1);
  float *w = rnd(2 * C * C, -0.3, 0.3), *bkv = rnd(2 * C, -0.5, 0.5), *mask = zeros(B * T);
  for (int i = 0; i < B * T; i++) mask[i] = (i % T == 0 || urand() < 0.7) ? 1.0f : 0.0f;
  float *u = zeros(NC), *tu = zeros(NC), *z = zeros(NC), *att = zeros(NS), *s0 = zeros(B * NH);
  float *scr = zeros(T), *tz[3], *ts[3];
  for (int r = 0; r < 3; r++) tz[r] = rnd(NC, -1, 1), ts[r] = rnd(NS, -1, 1);
  for (int h = 0; h < NH; h++) { /* u_h = q_h W_k,h, tu_h = tq_h W_k,h */
    sgm_nn_gemm_naive(0, 0, B, C, hs, q + h * hs, C, w + (size_t)h * hs * C, C, NULL, 0, u + h * C,
                      NH * C);
    sgm_nn_gemm_naive(0, 0, B, C, hs, tq + h * hs, C, w + (size_t)h * hs * C, C, NULL, 0,
                      tu + h * C, NH * C);
  }
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++) {
      double s = 0.0;
      for (int c = 0; c < hs; c++) s += (double)tq[b * C + h * hs + c] * bkv[h * hs + c];
      s0[b * NH + h] = (float)(scale * s);
    }
  sgm_nn_attention_xcentre_forward_naive(z, att, u, x, mask, B, T, C, NH, scale);
  sgm_nn_attention_xcentre_jvp(tz[0], ts[0], scr, tu, tx, att, u, x, s0, B, T, C, NH, scale);
  sgm_nn_attention_xcentre_jvp_naive(tz[1], ts[1], scr, tu, tx, att, u, x, s0, B, T, C, NH, scale);
  sgm_nn_attention_xcentre_jvp(tz[2], ts[2], scr, tu, tx, att, u, x, NULL, B, T, C, NH, scale);
  struct {
    const char *n;
    const float *a, *b;
    int len;
  } c[] = {{"tz", tz[0], tz[1], NC}, {"ts", ts[0], ts[1], NS}, {"tz (no s0)", tz[2], tz[1], NC}};
  for (int k = 0; k < 3; k++) {
    double e = 0.0, sc = 0.0;
    for (int i = 0; i < c[k].len; i++) {
      e = fmax(e, fabs(c[k].a[i] - c[k].b[i]));
      sc = fmax(sc, fabs(c[k].b[i]));
    }
    ck_assert_double_gt(sc, 0.0);
    ck_assert_msg(e <= BLAS_RTOL * sc,
                  "xcentre jvp %s (B %d T %d C %d NH %d): vs naive %.3g (%.3g)", c[k].n, B, T, C,
                  NH, e, sc);
  }
  /* without s0 the score tangents differ from those with it by s0 on every unmasked key, and
   * are 0 on the masked ones */
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int j = 0; j < T; j++) {
        const int i = (b * NH + h) * T + j;
        if (mask[b * T + j] == 0.0f) {
          ck_assert_float_eq(ts[0][i], 0.0f);
          ck_assert_float_eq(ts[2][i], 0.0f);
        } else {
          ck_assert_double_le(fabs(ts[0][i] - ts[2][i] - s0[b * NH + h]), 1e-5);
        }
      }
  /* the identity */
  float *kv = zeros(B * T * 2 * C), *tkv = zeros(B * T * 2 * C), *p2 = zeros(NS);
  float *y2 = zeros(B * C), *ty1 = zeros(B * C), *ty2 = zeros(B * C), *ts2 = zeros(NS);
  sgm_nn_linear_forward_naive(kv, x, w, bkv, B * T, C, 2 * C);
  sgm_nn_linear_forward_naive(tkv, tx, w, NULL, B * T, C, 2 * C);
  sgm_nn_attention_forward_naive(y2, p2, q, kv, kv + C, mask, B, 1, T, C, NH, C, 2 * C);
  sgm_nn_attention_jvp_naive(ty2, ts2, scr, tq, tkv, tkv + C, p2, q, kv, kv + C, mask, B, 1, T, C,
                             NH, C, 2 * C);
  for (int h = 0; h < NH; h++)
    sgm_nn_gemm_naive(0, 1, B, hs, C, tz[0] + h * C, NH * C, w + (size_t)(C + h * hs) * C, C, NULL,
                      0, ty1 + h * hs, C);
  struct {
    const char *n;
    const float *a, *b;
    int len;
  } d[] = {{"tout", ty1, ty2, B * C}, {"ts", ts[0], ts2, NS}};
  for (int k = 0; k < 2; k++) {
    double e = 0.0, sc = 0.0;
    for (int i = 0; i < d[k].len; i++) {
      e = fmax(e, fabs(d[k].a[i] - d[k].b[i]));
      sc = fmax(sc, fabs(d[k].b[i]));
    }
    ck_assert_double_gt(sc, 0.0);
    ck_assert_msg(e <= 1e-5 * sc, "xcentre jvp identity %s (B %d T %d C %d NH %d): %.3g (%.3g)",
                  d[k].n, B, T, C, NH, e, sc);
  }
  free(x), free(q), free(tx), free(tq), free(w), free(bkv), free(mask), free(u), free(tu), free(z);
  free(att), free(s0), free(scr);
  for (int r = 0; r < 3; r++) free(tz[r]), free(ts[r]);
  free(kv), free(tkv), free(p2), free(y2), free(ty1), free(ty2), free(ts2);
}
END_TEST

/* sgm_nn_gemm (the strided per-head GEMMs) against the double loops: every transpose case, with
 * and without accumulation and bias, padded strides, in the small kernel's range and outside it
 * (sgemm), kernel on and off. */
static const int gemm_shapes[][3] = {{67, 64, 32}, {33, 32, 64}, {64, 32, 1030}, {7, 24, 5},
                                     {5, 200, 16}, {13, 12, 7},  {1, 8, 1}};
START_TEST(test_gemm_strided)
{
  const int M = gemm_shapes[_i][0], N = gemm_shapes[_i][1], K = gemm_shapes[_i][2], pad = 3;
  const int was = sgm_nn_linear_small_gemm(-1);
  for (int on = 1; on >= 0; on--) {
    sgm_nn_linear_small_gemm(on);
    for (int mode = 0; mode < 16; mode++) {
      const int ta = mode & 1, tb = (mode >> 1) & 1, acc = (mode >> 2) & 1, hb = (mode >> 3) & 1;
      const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
      float *A = rnd((size_t)(ta ? K : M) * lda, -1, 1),
            *Bm = rnd((size_t)(tb ? N : K) * ldb, -1, 1);
      float *bias = hb ? rnd(N, -1, 1) : NULL, *c1 = rnd((size_t)M * ldc, -1, 1);
      float *c2 = malloc((size_t)M * ldc * sizeof(float));
      memcpy(c2, c1, (size_t)M * ldc * sizeof(float));
      sgm_nn_gemm(ta, tb, M, N, K, A, lda, Bm, ldb, bias, acc, c1, ldc);
      sgm_nn_gemm_naive(ta, tb, M, N, K, A, lda, Bm, ldb, bias, acc, c2, ldc);
      double e = 0.0, sc = 0.0;
      for (int i = 0; i < M; i++)
        for (int n = 0; n < ldc; n++) {
          const size_t o = (size_t)i * ldc + n;
          if (n >= N) { /* the padding is not touched */
            ck_assert_float_eq(c1[o], c2[o]);
            continue;
          }
          e = fmax(e, fabs(c1[o] - c2[o]));
          sc = fmax(sc, fabs(c2[o]));
        }
      ck_assert_msg(e <= BLAS_RTOL * sc,
                    "gemm %d x %d x %d ta %d tb %d acc %d bias %d kernel %d: %.3g (%.3g)", M, N, K,
                    ta, tb, acc, hb, on, e, sc);
      free(A), free(Bm), free(bias), free(c1), free(c2);
    }
  }
  sgm_nn_linear_small_gemm(was);
}
END_TEST

/* ---- residual and Fourier time embedding ---- */
enum { RN = 11, FB = 4, FF = 3 };
static float ff_freq[FF] = {1.0f, 3.0f, 7.5f};
static void res_fwd(void)
{
  sgm_nn_residual_forward(P.out, P.x[0], P.x[1], RN);
}
static void res_jvp(void)
{
  sgm_nn_residual_forward(P.tout, P.tx[0], P.tx[1], RN);
}
static void res_bwd(void)
{
  sgm_nn_residual_backward(P.gx[0], P.gx[1], P.dout, RN);
}
static void res_jvpb(void)
{
  sgm_nn_residual_backward(P.gtx[0], P.gtx[1], P.dtout, RN);
}
static void ff_fwd(void)
{
  sgm_nn_fourier_forward(P.out, P.x[0], ff_freq, FB, FF);
}
static void ff_jvp(void)
{
  sgm_nn_fourier_jvp(P.tout, P.tx[0], P.x[0], ff_freq, FB, FF);
}
static void ff_bwd(void)
{
  sgm_nn_fourier_backward(P.gx[0], P.dout, P.x[0], ff_freq, FB, FF);
}
static void ff_jvpb(void)
{
  sgm_nn_fourier_jvp_backward(P.gx[0], P.gtx[0], P.dtout, P.x[0], P.tx[0], ff_freq, FB, FF);
}

START_TEST(test_residual_fourier_fd)
{
  prob_add("a", rnd(RN, -1, 1), rnd(RN, -1, 1), RN);
  prob_add("b", rnd(RN, -1, 1), rnd(RN, -1, 1), RN);
  prob_out(RN);
  P.fwd = res_fwd, P.jvp = res_jvp, P.bwd = res_bwd, P.jvpb = res_jvpb;
  check_all();
  prob_free();
  prob_add("t", rnd(FB, 0, 1), rnd(FB, -1, 1), FB);
  prob_out(FB * 2 * FF);
  P.fwd = ff_fwd, P.jvp = ff_jvp, P.bwd = ff_bwd, P.jvpb = ff_jvpb;
  check_all();
  ff_fwd();
  ck_assert_double_eq_tol(P.out[1], sin(3.0 * P.x[0][0]), 1e-6);
  ck_assert_double_eq_tol(P.out[FF + 2], cos(7.5 * P.x[0][0]), 1e-6);
  prob_free();
}
END_TEST

static Suite *nn_layers_suite(void)
{
  Suite *s = suite_create("nn_layers");
  TCase *tc = tcase_create("layers");
  /* A failed ck_assert leaves a test early (no fork): release what it left before the next. */
  tcase_add_checked_fixture(tc, prob_free, NULL);
  tcase_add_test(tc, test_linear_fd);
  tcase_add_test(tc, test_linear_blas_vs_naive);
  tcase_add_loop_test(tc, test_linear_small_gemm, 0,
                      (int)(sizeof small_shapes / sizeof small_shapes[0]));
  tcase_add_loop_test(tc, test_activations_fd, 0, 3);
  tcase_add_test(tc, test_gelu_values);
  tcase_add_test(tc, test_gelu_float_accuracy);
  tcase_add_test(tc, test_layernorm_fd);
  tcase_add_loop_test(tc, test_softmax_fd, 0, 2);
  tcase_add_loop_test(tc, test_attention_fd, 0, 4);
  tcase_add_loop_test(tc, test_attention_blas_vs_naive, 0,
                      (int)(sizeof att_shapes / sizeof att_shapes[0]));
  tcase_add_loop_test(tc, test_attention_jvp_row0, 0,
                      (int)(sizeof att_shapes / sizeof att_shapes[0]));
  tcase_add_test(tc, test_attention_reference);
  tcase_add_loop_test(tc, test_attention_xcentre_fd, 0, 4);
  tcase_add_loop_test(tc, test_attention_xcentre_vs_naive, 0,
                      (int)(sizeof xc_shapes / sizeof xc_shapes[0]));
  tcase_add_loop_test(tc, test_attention_xcentre_jvp, 0,
                      (int)(sizeof xc_shapes / sizeof xc_shapes[0]));
  tcase_add_loop_test(tc, test_gemm_strided, 0, (int)(sizeof gemm_shapes / sizeof gemm_shapes[0]));
  tcase_add_test(tc, test_residual_fourier_fd);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, nn_layers_suite());
}
