/* LayerNorm over the channel axis, with its tangent and reverse-over-forward.
 *
 * Owns: y = w xhat + b, xhat = (x - mean) rstd, rstd = 1/sqrt(var + eps), eps = 1e-5 and the biased
 * variance as in PyTorch. The Jacobian of xhat w.r.t. x is J = rstd (I - 11^T/C - xhat xhat^T/C),
 * which is symmetric: the tangent J tx and the backward J (w dy) share one formula. The
 * reverse-over-forward adds d/dx [ (w dty)^T J(x) tx ], derived in closed form below (checked
 * against finite differences in tests/test_nn_layers.c). Statistics accumulate in double; mean and
 * rstd are saved so neither backward nor tangent re-reduces them.
 */
#include "sgm/nn.h"

#include <math.h>

#define SGM_LN_EPS 1e-5

void sgm_nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int BT, int C)
{
  /* out (BT,C), mean (BT), rstd (BT), inp (BT,C), weight (C), bias (C) */
  for (int r = 0; r < BT; r++) {
    const float *x = inp + (size_t)r * C;
    double m = 0.0, v = 0.0;
    for (int i = 0; i < C; i++) m += x[i];
    m /= C;
    for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
    v /= C;
    double s = 1.0 / sqrt(v + SGM_LN_EPS);
    float *o = out + (size_t)r * C;
    for (int i = 0; i < C; i++) o[i] = (float)((x[i] - m) * s * weight[i] + bias[i]);
    mean[r] = (float)m;
    rstd[r] = (float)s;
  }
}

void sgm_nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int BT, int C)
{
  /* dinp (BT,C), dweight (C), dbias (C), dout (BT,C), inp (BT,C), weight (C), mean, rstd (BT) */
  for (int r = 0; r < BT; r++) {
    const float *x = inp + (size_t)r * C, *dy = dout + (size_t)r * C;
    const double m = mean[r], s = rstd[r];
    double ga = 0.0, gx = 0.0;
    for (int i = 0; i < C; i++) {
      double g = (double)weight[i] * dy[i];
      ga += g;
      gx += g * (x[i] - m) * s;
    }
    ga /= C;
    gx /= C;
    for (int i = 0; i < C; i++) {
      double xh = (x[i] - m) * s;
      if (dinp) dinp[(size_t)r * C + i] += (float)(s * ((double)weight[i] * dy[i] - ga - xh * gx));
      if (dweight) dweight[i] += (float)(dy[i] * xh);
      if (dbias) dbias[i] += dy[i];
    }
  }
}

void sgm_nn_layernorm_jvp(float *tout, const float *tinp, const float *inp, const float *weight,
                          const float *mean, const float *rstd, int BT, int C)
{
  /* tout (BT,C), tinp (BT,C), inp (BT,C), weight (C), mean, rstd (BT) */
  for (int r = 0; r < BT; r++) {
    const float *x = inp + (size_t)r * C, *tx = tinp + (size_t)r * C;
    const double m = mean[r], s = rstd[r];
    double ta = 0.0, tx_xh = 0.0;
    for (int i = 0; i < C; i++) {
      ta += tx[i];
      tx_xh += tx[i] * (x[i] - m) * s;
    }
    ta /= C;
    tx_xh /= C;
    for (int i = 0; i < C; i++) {
      double xh = (x[i] - m) * s;
      tout[(size_t)r * C + i] = (float)(weight[i] * s * (tx[i] - ta - xh * tx_xh));
    }
  }
}

void sgm_nn_layernorm_jvp_backward(float *dinp, float *dtinp, float *dweight, const float *dtout,
                                   const float *inp, const float *tinp, const float *weight,
                                   const float *mean, const float *rstd, int BT, int C)
{
  /* dinp, dtinp (BT,C), dweight (C), dtout, inp, tinp (BT,C), weight (C), mean, rstd (BT).
   * With a = w dty and s(x) = a^T J(x) tx = rstd (P - Q), P = sum a tx - (sum a)(sum tx)/C,
   * Q = (sum xhat a)(sum xhat tx)/C:  d rstd/dx_k = -rstd^2 xhat_k / C and
   * dQ/dx_k = ((J a)_k sum(xhat tx) + (sum xhat a)(J tx)_k)/C, so
   * dx_k += -rstd^2 xhat_k (P - Q)/C - rstd ((J a)_k Sxt + Sxa (J tx)_k)/C. */
  for (int r = 0; r < BT; r++) {
    const float *x = inp + (size_t)r * C, *tx = tinp + (size_t)r * C, *dty = dtout + (size_t)r * C;
    const double m = mean[r], s = rstd[r];
    double sa = 0.0, st = 0.0, sxa = 0.0, sxt = 0.0, sat = 0.0;
    for (int i = 0; i < C; i++) {
      double xh = (x[i] - m) * s, a = (double)weight[i] * dty[i];
      sa += a;
      st += tx[i];
      sxa += xh * a;
      sxt += xh * tx[i];
      sat += a * tx[i];
    }
    const double P = sat - sa * st / C, Q = sxa * sxt / C;
    for (int i = 0; i < C; i++) {
      double xh = (x[i] - m) * s, a = (double)weight[i] * dty[i];
      double Ja = s * (a - sa / C - xh * sxa / C);
      double Jt = s * (tx[i] - st / C - xh * sxt / C);
      if (dweight) dweight[i] += (float)(dty[i] * Jt);
      if (dtinp) dtinp[(size_t)r * C + i] += (float)Ja;
      if (dinp)
        dinp[(size_t)r * C + i] +=
            (float)(-s * s * xh * (P - Q) / C - s * (Ja * sxt + sxa * Jt) / C);
    }
  }
}
