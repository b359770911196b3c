/* Pointwise activations: GELU (exact erf form), SiLU, ReLU, with first and second derivatives.
 *
 * Owns: f, f' and f'' of each activation and the four layer functions built from them. The
 * reverse-over-forward of y = f(x), ty = f'(x) tx needs f''. GELU is x Phi(x) with
 * Phi(x) = (1 + erf(x/sqrt 2))/2, so f' = Phi + x phi and f'' = phi (2 - x^2); SiLU is x s(x) with
 * f' = s (1 + x (1 - s)) and f'' = s (1 - s)(2 + x (1 - 2 s)); ReLU has f'' = 0 (and f'(0) = 0, as
 * in PyTorch). GELU runs in float, in blocks of GELU_BLK elements with a constant trip count (so
 * that -O2 vectorizes them without -ffast-math): Phi(x) = erfc(-x/sqrt 2)/2 from the Chebyshev fit
 * erfc(z) = t exp(-z^2 + P(t)), t = 1/(1 + z/2) (Numerical Recipes' erfcc, relative error
 * < 1.2e-7 for every z >= 0, so no cancellation in 1 + erf for x << 0) and a Cody-Waite expf with
 * a degree-7 polynomial (relative error ~2e-7); glibc's double erfc and exp were 40% of a training
 * step. One switch per call, not per element, keeps the inner loops branch-free.
 */
#include "sgm/nn.h"

#include "nn_simd.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define SGM_INV_SQRT2   0.70710678118654752440
#define SGM_INV_SQRT2PI 0.39894228040143267794
#define GELU_BLK        32
#ifdef __GNUC__ /* inlined into each target clone of the layer functions below */
#define SGM_ACT_INLINE static inline __attribute__((always_inline))
#else
#define SGM_ACT_INLINE static inline
#endif

/* exp(x) for -87 <= x <= 88 as sgm_nn_expf (Cody-Waite reduction, the same degree-7 Taylor
 * polynomial) but with the polynomial in Estrin's form: its dependency chain is 5 operations
 * deep instead of 14, and GELU's cost was the latency of these chains, not their operation
 * count. Relative error ~2e-7, as sgm_nn_expf. */
SGM_ACT_INLINE float gelu_expf(float x)
{
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  const float r2 = r * r, r4 = r2 * r2;
  const float a = 1.0f + r, b = 0.5f + r * (1.0f / 6), c = 1.0f / 24 + r * (1.0f / 120),
              d = 1.0f / 720 + r * (1.0f / 5040);
  const float p = (a + b * r2) + (c + d * r2) * r4;
  const int32_t e = ((int32_t)k + 127) * (1 << 23);
  float s;
  memcpy(&s, &e, sizeof s);
  return p * s;
}

/* Phi(x) and, if phi != NULL, phi(x) of GELU_BLK elements (the forward needs Phi alone). |x| is
 * clamped at 12 inside both (Phi(-12) = 2e-33, phi(12) = 2e-32; keeps the exp arguments >= -87),
 * x itself (so a NaN) reaches the callers. */
SGM_ACT_INLINE void gelu_phi(const float *restrict x, float *restrict Phi, float *restrict phi)
{
  for (int i = 0; i < GELU_BLK; i++) {
    const float xi = x[i], ax = sgm_nn_min_pos(fabsf(xi), 12.0f), z = ax * (float)SGM_INV_SQRT2;
    const float t = 1.0f / (1.0f + 0.5f * z);
    /* Numerical Recipes' erfcc polynomial in t, degree 9, in Estrin's form (see gelu_expf) */
    const float t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    const float p01 = -1.26551223f + t * 1.00002368f, p23 = 0.37409196f + t * 0.09678418f,
                p45 = -0.18628806f + t * 0.27886807f, p67 = -1.13520398f + t * 1.48851587f,
                p89 = -0.82215223f + t * 0.17087277f;
    const float P = ((p01 + p23 * t2) + (p45 + p67 * t2) * t4) + p89 * t8;
    const float h = 0.5f * t * gelu_expf(P - z * z), g = 1.0f - h; /* h = erfc(z)/2 */
    /* Phi = h for x < 0 (sign bit set), 1 - h otherwise: a bit select (no cancellation) */
    int32_t ix, ih, ig;
    memcpy(&ix, &xi, sizeof ix);
    memcpy(&ih, &h, sizeof ih);
    memcpy(&ig, &g, sizeof ig);
    const int32_t msk = -(int32_t)((uint32_t)ix >> 31), ip = (ih & msk) | (ig & ~msk);
    memcpy(&Phi[i], &ip, sizeof ip);
  }
  if (phi)
    for (int i = 0; i < GELU_BLK; i++) {
      const float ax = sgm_nn_min_pos(fabsf(x[i]), 12.0f);
      phi[i] = (float)SGM_INV_SQRT2PI * gelu_expf(-0.5f * ax * ax);
    }
}

/* Phi (and phi unless NULL) of x[i0 .. i0 + GELU_BLK) (zero-padded past N); returns the block's
 * length. */
SGM_ACT_INLINE int gelu_block(const float *x, int i0, int N, float *Phi, float *phi)
{
  const int n = N - i0 < GELU_BLK ? N - i0 : GELU_BLK;
  if (n == GELU_BLK) {
    gelu_phi(x + i0, Phi, phi);
  } else {
    float xb[GELU_BLK] = {0};
    memcpy(xb, x + i0, (size_t)n * sizeof(float));
    gelu_phi(xb, Phi, phi);
  }
  return n;
}

/* Phi and phi of GELU_BLK elements from x and the forward output y = x Phi(x), the way the
 * derivatives after a forward pass get them: phi from one exp (x clamped at 12 as in gelu_phi),
 * Phi = y / x (within an ulp of gelu_phi's) except for |x| < 1e-20, where Phi = 1/2. One exp and
 * one division instead of the erfc fit, two exps and a division. */
SGM_ACT_INLINE void gelu_phi_y(const float *restrict x, const float *restrict y,
                               float *restrict Phi, float *restrict phi)
{
  for (int i = 0; i < GELU_BLK; i++) {
    const float ax = fabsf(x[i]), axc = sgm_nn_min_pos(ax, 12.0f);
    phi[i] = (float)SGM_INV_SQRT2PI * gelu_expf(-0.5f * axc * axc);
    int32_t ia, it;
    const float tiny = 1e-20f;
    memcpy(&ia, &ax, sizeof ia);
    memcpy(&it, &tiny, sizeof it);
    const float big = (float)(ia > it); /* 1: divide, 0: Phi = 1/2 (NaN divides) */
    Phi[i] = sgm_nn_select(big, y[i] / sgm_nn_select(big, x[i], 1.0f), 0.5f);
  }
}

/* gelu_block from x and y = gelu(x) (gelu_phi_y); phi is always computed. */
SGM_ACT_INLINE int gelu_block_y(const float *x, const float *y, int i0, int N, float *Phi,
                                float *phi)
{
  const int n = N - i0 < GELU_BLK ? N - i0 : GELU_BLK;
  if (n == GELU_BLK) {
    gelu_phi_y(x + i0, y + i0, Phi, phi);
  } else {
    float xb[GELU_BLK] = {0}, yb[GELU_BLK] = {0};
    memcpy(xb, x + i0, (size_t)n * sizeof(float));
    memcpy(yb, y + i0, (size_t)n * sizeof(float));
    gelu_phi_y(xb, yb, Phi, phi);
  }
  return n;
}

/* Phi and phi of a block: from the forward output when the caller has it. */
SGM_ACT_INLINE int gelu_block_any(const float *x, const float *y, int i0, int N, float *Phi,
                                  float *phi)
{
  return y ? gelu_block_y(x, y, i0, N, Phi, phi) : gelu_block(x, i0, N, Phi, phi);
}

/* The per-block combinations below, on restrict pointers with a constant trip count for full
 * blocks (a variable count n < GELU_BLK only for the last, partial block): with a variable count
 * GCC -O2 left these loops scalar, and they then cost more than the erfc fit itself. */
SGM_ACT_INLINE void gelu_fwd_blk(float *restrict out, const float *restrict x,
                                 const float *restrict Phi, int n)
{
  if (n == GELU_BLK)
    for (int i = 0; i < GELU_BLK; i++) out[i] = x[i] * Phi[i];
  else
    for (int i = 0; i < n; i++) out[i] = x[i] * Phi[i];
}
/* dx += (Phi + x phi) dy */
SGM_ACT_INLINE void gelu_bwd_blk(float *restrict dx, const float *restrict dy,
                                 const float *restrict x, const float *restrict Phi,
                                 const float *restrict phi, int n)
{
  if (n == GELU_BLK)
    for (int i = 0; i < GELU_BLK; i++) dx[i] += (Phi[i] + x[i] * phi[i]) * dy[i];
  else
    for (int i = 0; i < n; i++) dx[i] += (Phi[i] + x[i] * phi[i]) * dy[i];
}
/* dx = (Phi + x phi) dy (dx may be dy: no restrict) */
SGM_ACT_INLINE void gelu_bwd_set_blk(float *dx, const float *dy, const float *restrict x,
                                     const float *restrict Phi, const float *restrict phi, int n)
{
  if (n == GELU_BLK) {
    float t[GELU_BLK];
    for (int i = 0; i < GELU_BLK; i++) t[i] = (Phi[i] + x[i] * phi[i]) * dy[i];
    memcpy(dx, t, sizeof t);
  } else
    for (int i = 0; i < n; i++) dx[i] = (Phi[i] + x[i] * phi[i]) * dy[i];
}
/* ty = (Phi + x phi) tx */
SGM_ACT_INLINE void gelu_jvp_blk(float *restrict ty, const float *restrict tx,
                                 const float *restrict x, const float *restrict Phi,
                                 const float *restrict phi, int n)
{
  if (n == GELU_BLK)
    for (int i = 0; i < GELU_BLK; i++) ty[i] = (Phi[i] + x[i] * phi[i]) * tx[i];
  else
    for (int i = 0; i < n; i++) ty[i] = (Phi[i] + x[i] * phi[i]) * tx[i];
}
/* dst = f1 src (ty = f' tx for one direction) */
SGM_ACT_INLINE void mul_blk(float *restrict dst, const float *restrict f1,
                            const float *restrict src, int n)
{
  if (n == GELU_BLK)
    for (int i = 0; i < GELU_BLK; i++) dst[i] = f1[i] * src[i];
  else
    for (int i = 0; i < n; i++) dst[i] = f1[i] * src[i];
}
/* dst += f src */
SGM_ACT_INLINE void addmul_blk(float *restrict dst, const float *restrict f,
                               const float *restrict src, int n)
{
  if (n == GELU_BLK)
    for (int i = 0; i < GELU_BLK; i++) dst[i] += f[i] * src[i];
  else
    for (int i = 0; i < n; i++) dst[i] += f[i] * src[i];
}
/* dst += f a b */
SGM_ACT_INLINE void addmul2_blk(float *restrict dst, const float *restrict f,
                                const float *restrict a, const float *restrict b, int n)
{
  if (n == GELU_BLK)
    for (int i = 0; i < GELU_BLK; i++) dst[i] += f[i] * a[i] * b[i];
  else
    for (int i = 0; i < n; i++) dst[i] += f[i] * a[i] * b[i];
}

static inline double sigm(double x)
{
  return 1.0 / (1.0 + exp(-x));
}
static inline double silu_f(double x)
{
  return x * sigm(x);
}
static inline double silu_d1(double x)
{
  double s = sigm(x);
  return s * (1.0 + x * (1.0 - s));
}
static inline double silu_d2(double x)
{
  double s = sigm(x);
  return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s));
}

/* The layer functions are compiled for AVX-512 and AVX2 as well as the baseline, picked at load
 * time (GCC target_clones, an ifunc): the GELU blocks then run 8 or 16 lanes wide without
 * -march=native (SGM_CLONES, sgm/simd.h). No FMA contraction in ISO C mode, so every clone gives
 * the same bits. */

SGM_CLONES
void sgm_nn_act_forward(SgmNnAct act, float *out, const float *inp, int N)
{
  /* out (N), inp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
      float Phi[GELU_BLK];
      const int n = gelu_block(inp, i0, N, Phi, NULL);
      gelu_fwd_blk(out + i0, inp + i0, Phi, n);
    }
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) out[i] = (float)silu_f(inp[i]);
    break;
  case SGM_NN_ACT_RELU:
    for (int i = 0; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
    break;
  }
}

SGM_CLONES
void sgm_nn_act_backward(SgmNnAct act, float *dinp, const float *dout, const float *inp, int N)
{
  /* dinp (N), dout (N), inp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
      float Phi[GELU_BLK], phi[GELU_BLK];
      const int n = gelu_block(inp, i0, N, Phi, phi);
      gelu_bwd_blk(dinp + i0, dout + i0, inp + i0, Phi, phi, n);
    }
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) dinp[i] += (float)(silu_d1(inp[i]) * dout[i]);
    break;
  case SGM_NN_ACT_RELU:
    for (int i = 0; i < N; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
    break;
  }
}

SGM_CLONES
void sgm_nn_act_backward_y(SgmNnAct act, float *dinp, const float *dout, const float *inp,
                           const float *out, int N)
{
  /* dinp, dout, inp, out (N); out = act(inp) from the forward pass */
  if (act != SGM_NN_ACT_GELU || !out) {
    sgm_nn_act_backward(act, dinp, dout, inp, N);
    return;
  }
  for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
    float Phi[GELU_BLK], phi[GELU_BLK];
    const int n = gelu_block_y(inp, out, i0, N, Phi, phi);
    gelu_bwd_blk(dinp + i0, dout + i0, inp + i0, Phi, phi, n);
  }
}

SGM_CLONES
void sgm_nn_act_backward_y_set(SgmNnAct act, float *dinp, const float *dout, const float *inp,
                               const float *out, int N)
{
  /* dinp, dout, inp, out (N); dinp may be dout only for GELU */
  if (act != SGM_NN_ACT_GELU) {
    memset(dinp, 0, (size_t)N * sizeof(float));
    sgm_nn_act_backward(act, dinp, dout, inp, N);
    return;
  }
  for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
    float Phi[GELU_BLK], phi[GELU_BLK];
    const int n = out ? gelu_block_y(inp, out, i0, N, Phi, phi) : gelu_block(inp, i0, N, Phi, phi);
    gelu_bwd_set_blk(dinp + i0, dout + i0, inp + i0, Phi, phi, n);
  }
}

SGM_CLONES
void sgm_nn_act_jvp(SgmNnAct act, float *tout, const float *tinp, const float *inp, int N)
{
  /* tout (N), tinp (N), inp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
      float Phi[GELU_BLK], phi[GELU_BLK];
      const int n = gelu_block(inp, i0, N, Phi, phi);
      gelu_jvp_blk(tout + i0, tinp + i0, inp + i0, Phi, phi, n);
    }
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) tout[i] = (float)(silu_d1(inp[i]) * tinp[i]);
    break;
  case SGM_NN_ACT_RELU:
    for (int i = 0; i < N; i++) tout[i] = inp[i] > 0.0f ? tinp[i] : 0.0f;
    break;
  }
}

SGM_CLONES
void sgm_nn_act_jvp_backward(SgmNnAct act, float *dinp, float *dtinp, const float *dtout,
                             const float *inp, const float *tinp, int N)
{
  /* dinp, dtinp, dtout, inp, tinp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
      float Phi[GELU_BLK], phi[GELU_BLK];
      const int n = gelu_block(inp, i0, N, Phi, phi);
      for (int i = 0; i < n; i++) {
        const float x = inp[i0 + i], dy = dtout[i0 + i];
        if (dinp) dinp[i0 + i] += phi[i] * (2.0f - x * x) * tinp[i0 + i] * dy;
        if (dtinp) dtinp[i0 + i] += (Phi[i] + x * phi[i]) * dy;
      }
    }
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) {
      double x = inp[i];
      if (dinp) dinp[i] += (float)(silu_d2(x) * tinp[i] * dtout[i]);
      if (dtinp) dtinp[i] += (float)(silu_d1(x) * dtout[i]);
    }
    break;
  case SGM_NN_ACT_RELU:
    if (dtinp)
      for (int i = 0; i < N; i++) dtinp[i] += inp[i] > 0.0f ? dtout[i] : 0.0f;
    break;
  }
}

SGM_CLONES
void sgm_nn_act_jvp_n(SgmNnAct act, float *tout, const float *tinp, const float *inp,
                      const float *out, int N, int ntan)
{
  /* tout, tinp (ntan, N), inp (N): the derivative is evaluated once for all directions */
  if (act != SGM_NN_ACT_GELU) {
    for (int d = 0; d < ntan; d++)
      sgm_nn_act_jvp(act, tout + (size_t)d * N, tinp + (size_t)d * N, inp, N);
    return;
  }
  for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
    float Phi[GELU_BLK], phi[GELU_BLK], f1[GELU_BLK], xb[GELU_BLK] = {0};
    const int n = gelu_block_any(inp, out, i0, N, Phi, phi);
    memcpy(xb, inp + i0, (size_t)n * sizeof(float));
    for (int i = 0; i < GELU_BLK; i++) f1[i] = Phi[i] + xb[i] * phi[i];
    for (int d = 0; d < ntan; d++) {
      const size_t o = (size_t)d * N + i0;
      mul_blk(tout + o, f1, tinp + o, n);
    }
  }
}

SGM_CLONES
void sgm_nn_act_jvp_backward_n(SgmNnAct act, float *dinp, float *dtinp, const float *dtout,
                               const float *inp, const float *out, const float *tinp, int N,
                               int ntan)
{
  /* dinp (N), dtinp, dtout, tinp (ntan, N), inp (N) */
  if (act != SGM_NN_ACT_GELU) {
    for (int d = 0; d < ntan; d++)
      sgm_nn_act_jvp_backward(act, dinp, dtinp ? dtinp + (size_t)d * N : NULL,
                              dtout + (size_t)d * N, inp, tinp + (size_t)d * N, N);
    return;
  }
  for (int i0 = 0; i0 < N; i0 += GELU_BLK) {
    float Phi[GELU_BLK], phi[GELU_BLK], f1[GELU_BLK], f2[GELU_BLK], xb[GELU_BLK] = {0};
    const int n = gelu_block_any(inp, out, i0, N, Phi, phi);
    memcpy(xb, inp + i0, (size_t)n * sizeof(float));
    for (int i = 0; i < GELU_BLK; i++) {
      const float x = xb[i];
      f1[i] = Phi[i] + x * phi[i];
      f2[i] = phi[i] * (2.0f - x * x);
    }
    for (int d = 0; d < ntan; d++) {
      const size_t o = (size_t)d * N + i0;
      if (dinp) addmul2_blk(dinp + i0, f2, tinp + o, dtout + o, n);
      if (dtinp) addmul_blk(dtinp + o, f1, dtout + o, n);
    }
  }
}

void sgm_nn_gelu_forward(float *out, const float *inp, int N)
{
  sgm_nn_act_forward(SGM_NN_ACT_GELU, out, inp, N);
}
void sgm_nn_gelu_backward(float *dinp, const float *dout, const float *inp, int N)
{
  sgm_nn_act_backward(SGM_NN_ACT_GELU, dinp, dout, inp, N);
}
void sgm_nn_gelu_jvp(float *tout, const float *tinp, const float *inp, int N)
{
  sgm_nn_act_jvp(SGM_NN_ACT_GELU, tout, tinp, inp, N);
}
void sgm_nn_silu_forward(float *out, const float *inp, int N)
{
  sgm_nn_act_forward(SGM_NN_ACT_SILU, out, inp, N);
}
void sgm_nn_silu_backward(float *dinp, const float *dout, const float *inp, int N)
{
  sgm_nn_act_backward(SGM_NN_ACT_SILU, dinp, dout, inp, N);
}
void sgm_nn_silu_jvp(float *tout, const float *tinp, const float *inp, int N)
{
  sgm_nn_act_jvp(SGM_NN_ACT_SILU, tout, tinp, inp, N);
}
void sgm_nn_relu_forward(float *out, const float *inp, int N)
{
  sgm_nn_act_forward(SGM_NN_ACT_RELU, out, inp, N);
}
void sgm_nn_relu_backward(float *dinp, const float *dout, const float *inp, int N)
{
  sgm_nn_act_backward(SGM_NN_ACT_RELU, dinp, dout, inp, N);
}
void sgm_nn_relu_jvp(float *tout, const float *tinp, const float *inp, int N)
{
  sgm_nn_act_jvp(SGM_NN_ACT_RELU, tout, tinp, inp, N);
}
