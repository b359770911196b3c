/* LayerNorm over the channel axis, with its tangent and reverse-over-forward.
 *
 * Owns: y = w xhat + b, xhat = (x - mean) rstd, rstd = 1/sqrt(var + eps), eps = 1e-5 and the biased
 * variance as in PyTorch. The Jacobian of xhat w.r.t. x is J = rstd (I - 11^T/C - xhat xhat^T/C),
 * which is symmetric: the tangent J tx and the backward J (w dy) share one formula. The
 * reverse-over-forward adds d/dx [ (w dty)^T J(x) tx ], derived in closed form below (checked
 * against finite differences in tests/test_nn_layers.c). mean and rstd are saved (float) so
 * neither backward nor tangent re-reduces them.
 *
 * Speed (nn_simd.h idioms): row reductions accumulate in double, in SGM_NN_VL independent lanes;
 * the element-wise passes run in float, in blocks of SGM_NN_VL over restrict pointers. With
 * per-element double arithmetic LayerNorm was ~10% of a training step.
 */
#include "sgm/nn.h"

#include "nn_simd.h"

#include <math.h>

#define SGM_LN_EPS 1e-5

SGM_NN_INLINE void ln_row_forward(float *restrict o, float *restrict mean, float *restrict rstd,
                                  const float *restrict x, const float *restrict w,
                                  const float *restrict b, int C)
{
  double s1[1], s2[1];
  SGM_NN_LANE_REDUCE(1, C, t[0] = (double)x[j], s1);
  const double m = s1[0] / C;
  SGM_NN_LANE_REDUCE(1, C, t[0] = ((double)x[j] - m) * ((double)x[j] - m), s2);
  const float mf = (float)m, sf = (float)(1.0 / sqrt(s2[0] / C + SGM_LN_EPS));
  SGM_NN_ELEMENTS(C, o[j] = (x[j] - mf) * sf * w[j] + b[j]);
  *mean = mf;
  *rstd = sf;
}

SGM_CLONES
void sgm_nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int BT, int C)
{
  /* out (BT,C), mean (BT), rstd (BT), inp (BT,C), weight (C), bias (C) */
  for (int r = 0; r < BT; r++)
    ln_row_forward(out + (size_t)r * C, mean + r, rstd + r, inp + (size_t)r * C, weight, bias, C);
}

SGM_NN_INLINE void ln_row_backward(float *restrict dx, float *restrict dw, float *restrict db,
                                   const float *restrict dy, const float *restrict x,
                                   const float *restrict w, float m, float s, int C, int set)
{
  double S[2];
  SGM_NN_LANE_REDUCE(2, C, const float g = w[j] * dy[j]; t[0] = (double)g;
                     t[1] = (double)g * (double)((x[j] - m) * s), S);
  const float a = (float)(S[0] / C), b = (float)(S[1] / C);
  if (dx && set)
    SGM_NN_ELEMENTS(C, dx[j] = s * (w[j] * dy[j] - a - (x[j] - m) * s * b));
  else if (dx)
    SGM_NN_ELEMENTS(C, dx[j] += s * (w[j] * dy[j] - a - (x[j] - m) * s * b));
  if (dw) SGM_NN_ELEMENTS(C, dw[j] += dy[j] * ((x[j] - m) * s));
  if (db) SGM_NN_ELEMENTS(C, db[j] += dy[j]);
}

SGM_CLONES
void sgm_nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int BT, int C)
{
  /* dinp (BT,C), dweight (C), dbias (C), dout (BT,C), inp (BT,C), weight (C), mean, rstd (BT) */
  for (int r = 0; r < BT; r++)
    ln_row_backward(dinp ? dinp + (size_t)r * C : NULL, dweight, dbias, dout + (size_t)r * C,
                    inp + (size_t)r * C, weight, mean[r], rstd[r], C, 0);
}

SGM_CLONES
void sgm_nn_layernorm_backward_set(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, const float *mean,
                                   const float *rstd, int BT, int C)
{
  for (int r = 0; r < BT; r++)
    ln_row_backward(dinp ? dinp + (size_t)r * C : NULL, dweight, dbias, dout + (size_t)r * C,
                    inp + (size_t)r * C, weight, mean[r], rstd[r], C, 1);
}

SGM_NN_INLINE void ln_row_jvp(float *restrict to, const float *restrict tx, const float *restrict x,
                              const float *restrict w, float m, float s, int C)
{
  double S[2];
  SGM_NN_LANE_REDUCE(2, C, t[0] = (double)tx[j];
                     t[1] = (double)tx[j] * (double)((x[j] - m) * s), S);
  const float a = (float)(S[0] / C), b = (float)(S[1] / C);
  SGM_NN_ELEMENTS(C, to[j] = w[j] * s * (tx[j] - a - (x[j] - m) * s * b));
}

SGM_CLONES
void sgm_nn_layernorm_jvp(float *tout, const float *tinp, const float *inp, const float *weight,
                          const float *mean, const float *rstd, int BT, int C)
{
  /* tout (BT,C), tinp (BT,C), inp (BT,C), weight (C), mean, rstd (BT) */
  for (int r = 0; r < BT; r++)
    ln_row_jvp(tout + (size_t)r * C, tinp + (size_t)r * C, inp + (size_t)r * C, weight, mean[r],
               rstd[r], C);
}

SGM_NN_INLINE void ln_row_jvp_backward(float *restrict dx, float *restrict dtx, float *restrict dw,
                                       const float *restrict dty, const float *restrict x,
                                       const float *restrict tx, const float *restrict w, float m,
                                       float s, int C)
{
  /* With a = w dty and s(x) = a^T J(x) tx = rstd (P - Q), P = sum a tx - (sum a)(sum tx)/C,
   * Q = (sum xhat a)(sum xhat tx)/C:  d rstd/dx_k = -rstd^2 xhat_k / C and
   * dQ/dx_k = ((J a)_k sum(xhat tx) + (sum xhat a)(J tx)_k)/C, so
   * dx_k += -rstd^2 xhat_k (P - Q)/C - rstd ((J a)_k Sxt + Sxa (J tx)_k)/C. */
  double S[5]; /* sum a, sum tx, sum xhat a, sum xhat tx, sum a tx */
  SGM_NN_LANE_REDUCE(5, C, const double xh = (double)((x[j] - m) * s);
                     const double a = (double)(w[j] * dty[j]); const double tt = (double)tx[j];
                     t[0] = a; t[1] = tt; t[2] = xh * a; t[3] = xh * tt; t[4] = a * tt, S);
  const double P = S[4] - S[0] * S[1] / C, Q = S[2] * S[3] / C;
  const float fa = (float)(S[0] / C), ft = (float)(S[1] / C), fxa = (float)(S[2] / C),
              fxt = (float)(S[3] / C), c0 = (float)(-(double)s * s * (P - Q) / C);
  SGM_NN_ELEMENTS(C, const float xh = (x[j] - m) * s;
                  const float Ja = s * (w[j] * dty[j] - fa - xh * fxa);
                  const float Jt = s * (tx[j] - ft - xh * fxt); if (dw) dw[j] += dty[j] * Jt;
                  if (dtx) dtx[j] += Ja; if (dx) dx[j] += c0 * xh - s * (Ja * fxt + fxa * Jt));
}

SGM_CLONES
void sgm_nn_layernorm_jvp_backward(float *dinp, float *dtinp, float *dweight, const float *dtout,
                                   const float *inp, const float *tinp, const float *weight,
                                   const float *mean, const float *rstd, int BT, int C)
{
  /* dinp, dtinp (BT,C), dweight (C), dtout, inp, tinp (BT,C), weight (C), mean, rstd (BT) */
  for (int r = 0; r < BT; r++)
    ln_row_jvp_backward(dinp ? dinp + (size_t)r * C : NULL, dtinp ? dtinp + (size_t)r * C : NULL,
                        dweight, dtout + (size_t)r * C, inp + (size_t)r * C, tinp + (size_t)r * C,
                        weight, mean[r], rstd[r], C);
}
