/* Linear layer on CBLAS, with its triple-loop reference.
 *
 * Owns: y = x W^T + b with PyTorch's (out, in) weight layout, so a state_dict computed elsewhere
 * compares without transposes. Forward, backward and the tangent are each one cblas_sgemm (the
 * tangent is the forward without bias, so a model stacks all its tangent directions into one
 * call). The forward writes the bias rows first and lets sgemm accumulate onto them (beta = 1:
 * one pass over the output fewer than sgemm's beta = 0 clear plus a bias pass); the bias
 * gradient is a row loop vectorized along the channels (nn_simd.h). The naive versions accumulate
 * in double and exist only to check the BLAS path in the tests; they are not tuned.
 */
#include "sgm/nn.h"

#include "nn_simd.h"

#include <cblas.h>

SGM_NN_INLINE void bias_rows(float *restrict out, const float *restrict bias, int BT, int OC)
{
  for (int r = 0; r < BT; r++) {
    float *restrict o = out + (size_t)r * OC;
    SGM_NN_ELEMENTS(OC, o[j] = bias[j]);
  }
}

SGM_NN_INLINE void bias_grad(float *restrict dbias, const float *restrict dout, int BT, int OC)
{
  for (int r = 0; r < BT; r++) {
    const float *restrict d = dout + (size_t)r * OC;
    SGM_NN_ELEMENTS(OC, dbias[j] += d[j]);
  }
}

SGM_CLONES
void sgm_nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int BT, int C, int OC)
{
  /* out (BT,OC), inp (BT,C), weight (OC,C), bias (OC) */
  if (BT <= 0) return;
  if (bias) bias_rows(out, bias, BT, OC);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, OC, C, 1.0f, inp, C, weight, C,
              bias ? 1.0f : 0.0f, out, OC);
}

void sgm_nn_linear_forward_naive(float *out, const float *inp, const float *weight,
                                 const float *bias, int BT, int C, int OC)
{
  /* out (BT,OC), inp (BT,C), weight (OC,C), bias (OC) or NULL */
  for (int r = 0; r < BT; r++) {
    for (int j = 0; j < OC; j++) {
      double s = bias ? bias[j] : 0.0;
      for (int i = 0; i < C; i++) s += (double)inp[(size_t)r * C + i] * weight[(size_t)j * C + i];
      out[(size_t)r * OC + j] = (float)s;
    }
  }
}

SGM_CLONES
void sgm_nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int BT, int C, int OC)
{
  /* dinp (BT,C), dweight (OC,C), dbias (OC), dout (BT,OC), inp (BT,C), weight (OC,C) */
  if (BT <= 0) return;
  if (dinp)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, C, OC, 1.0f, dout, OC, weight, C,
                1.0f, dinp, C);
  if (dweight)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, BT, 1.0f, dout, OC, inp, C, 1.0f,
                dweight, C);
  if (dbias) bias_grad(dbias, dout, BT, OC);
}

void sgm_nn_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, int BT, int C, int OC)
{
  /* dinp (BT,C), dweight (OC,C), dbias (OC), dout (BT,OC), inp (BT,C), weight (OC,C) */
  if (dinp) {
    for (int r = 0; r < BT; r++) {
      for (int i = 0; i < C; i++) {
        double s = 0.0;
        for (int j = 0; j < OC; j++)
          s += (double)dout[(size_t)r * OC + j] * weight[(size_t)j * C + i];
        dinp[(size_t)r * C + i] += (float)s;
      }
    }
  }
  if (dweight) {
    for (int j = 0; j < OC; j++) {
      for (int i = 0; i < C; i++) {
        double s = 0.0;
        for (int r = 0; r < BT; r++) s += (double)dout[(size_t)r * OC + j] * inp[(size_t)r * C + i];
        dweight[(size_t)j * C + i] += (float)s;
      }
    }
  }
  if (dbias) {
    for (int j = 0; j < OC; j++) {
      double s = 0.0;
      for (int r = 0; r < BT; r++) s += dout[(size_t)r * OC + j];
      dbias[j] += (float)s;
    }
  }
}

void sgm_nn_linear_jvp(float *tout, const float *tinp, const float *weight, int BT, int C, int OC)
{
  /* tout (BT,OC), tinp (BT,C), weight (OC,C) */
  sgm_nn_linear_forward(tout, tinp, weight, NULL, BT, C, OC);
}

void sgm_nn_linear_jvp_backward(float *dtinp, float *dweight, const float *dtout, const float *tinp,
                                const float *weight, int BT, int C, int OC)
{
  sgm_nn_linear_backward(dtinp, dweight, NULL, dtout, tinp, weight, BT, C, OC);
}
