/* Pointwise activations: GELU (exact erf form), SiLU, ReLU, with first and second derivatives.
 *
 * Owns: f, f' and f'' of each activation and the four layer functions built from them. The
 * reverse-over-forward of y = f(x), ty = f'(x) tx needs f''. GELU is x Phi(x) with
 * Phi(x) = (1 + erf(x/sqrt 2))/2, so f' = Phi + x phi and f'' = phi (2 - x^2); SiLU is x s(x) with
 * f' = s (1 + x (1 - s)) and f'' = s (1 - s)(2 + x (1 - 2 s)); ReLU has f'' = 0 (and f'(0) = 0, as
 * in PyTorch). Phi is evaluated as erfc(-x/sqrt 2)/2: no cancellation in 1 + erf for x << 0, and
 * glibc's erfc is about twice as fast as its erf. One switch per call, not per element, keeps the
 * inner loops branch-free.
 */
#include "sgm/nn.h"

#include <math.h>

#define SGM_INV_SQRT2   0.70710678118654752440
#define SGM_INV_SQRT2PI 0.39894228040143267794

static inline double gelu_f(double x)
{
  return 0.5 * x * erfc(-x * SGM_INV_SQRT2);
}
static inline double gelu_d1(double x)
{
  return 0.5 * erfc(-x * SGM_INV_SQRT2) + x * SGM_INV_SQRT2PI * exp(-0.5 * x * x);
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

void sgm_nn_act_forward(SgmNnAct act, float *out, const float *inp, int N)
{
  /* out (N), inp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i = 0; i < N; i++) out[i] = (float)gelu_f(inp[i]);
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) out[i] = (float)silu_f(inp[i]);
    break;
  case SGM_NN_ACT_RELU:
    for (int i = 0; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
    break;
  }
}

void sgm_nn_act_backward(SgmNnAct act, float *dinp, const float *dout, const float *inp, int N)
{
  /* dinp (N), dout (N), inp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i = 0; i < N; i++) dinp[i] += (float)(gelu_d1(inp[i]) * dout[i]);
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) dinp[i] += (float)(silu_d1(inp[i]) * dout[i]);
    break;
  case SGM_NN_ACT_RELU:
    for (int i = 0; i < N; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
    break;
  }
}

void sgm_nn_act_jvp(SgmNnAct act, float *tout, const float *tinp, const float *inp, int N)
{
  /* tout (N), tinp (N), inp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i = 0; i < N; i++) tout[i] = (float)(gelu_d1(inp[i]) * tinp[i]);
    break;
  case SGM_NN_ACT_SILU:
    for (int i = 0; i < N; i++) tout[i] = (float)(silu_d1(inp[i]) * tinp[i]);
    break;
  case SGM_NN_ACT_RELU:
    for (int i = 0; i < N; i++) tout[i] = inp[i] > 0.0f ? tinp[i] : 0.0f;
    break;
  }
}

void sgm_nn_act_jvp_backward(SgmNnAct act, float *dinp, float *dtinp, const float *dtout,
                             const float *inp, const float *tinp, int N)
{
  /* dinp, dtinp, dtout, inp, tinp (N) */
  switch (act) {
  case SGM_NN_ACT_GELU:
    for (int i = 0; i < N; i++) {
      /* phi and Phi once for both derivatives */
      const double x = inp[i], phi = SGM_INV_SQRT2PI * exp(-0.5 * x * x);
      if (dinp) dinp[i] += (float)(phi * (2.0 - x * x) * tinp[i] * dtout[i]);
      if (dtinp) dtinp[i] += (float)((0.5 * erfc(-x * SGM_INV_SQRT2) + x * phi) * dtout[i]);
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
