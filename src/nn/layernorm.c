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
#include <string.h>

#define SGM_LN_EPS 1e-5

typedef float ln_v4f __attribute__((vector_size(16)));
typedef double ln_v4d __attribute__((vector_size(32)));

/* Row reductions of the forward and plain backward, in double: 16 lanes as four 4-double vectors
 * in named variables, so they stay in registers (lane l sums the elements j = l mod 16 in order),
 * then the lanes pairwise, then the tail j >= C - C % 16 in order. Every clone gives the same
 * bits. (The generic SGM_NN_LANE_REDUCE kept its lanes in memory, cleared by a memset, and summed
 * them one after the other.) */
#define LN_LANES_SUM(a0, a1, a2, a3)                                                               \
  __extension__({                                                                                  \
    const ln_v4d s_ = ((a0) + (a1)) + ((a2) + (a3));                                               \
    (s_[0] + s_[1]) + (s_[2] + s_[3]);                                                             \
  })
/* the 4 floats at p as doubles (through a pointer: a vector return is an ABI matter) */
SGM_NN_INLINE void ln_load4(ln_v4d *d, const float *p)
{
  ln_v4f f;
  memcpy(&f, p, sizeof f);
  *d = __builtin_convertvector(f, ln_v4d);
}

/* sq = 0: sum_j x_j; sq = 1: sum_j (x_j - m)^2 */
SGM_NN_INLINE double ln_sum(const float *restrict x, double m, int sq, int C)
{
  ln_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  int i = 0;
  for (; i + 16 <= C; i += 16) {
    ln_v4d d0, d1, d2, d3;
    ln_load4(&d0, x + i), ln_load4(&d1, x + i + 4), ln_load4(&d2, x + i + 8);
    ln_load4(&d3, x + i + 12);
    if (sq) {
      d0 -= m, d1 -= m, d2 -= m, d3 -= m;
      d0 *= d0, d1 *= d1, d2 *= d2, d3 *= d3;
    }
    a0 += d0, a1 += d1, a2 += d2, a3 += d3;
  }
  double s = LN_LANES_SUM(a0, a1, a2, a3);
  for (; i < C; i++) s += sq ? ((double)x[i] - m) * ((double)x[i] - m) : (double)x[i];
  return s;
}

/* S[0] = sum_j w_j dy_j, S[1] = sum_j (w_j dy_j) ((x_j - m) s), each factor in float as the
 * element-wise passes form it */
SGM_NN_INLINE void ln_bwd_sums(double *S, const float *restrict dy, const float *restrict x,
                               const float *restrict w, float m, float s, int C)
{
  ln_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
  int i = 0;
  for (; i + 16 <= C; i += 16) {
    ln_v4d g[4], h[4];
    for (int l = 0; l < 4; l++) {
      ln_v4f wf, df, xf;
      memcpy(&wf, w + i + 4 * l, sizeof wf);
      memcpy(&df, dy + i + 4 * l, sizeof df);
      memcpy(&xf, x + i + 4 * l, sizeof xf);
      g[l] = __builtin_convertvector(wf * df, ln_v4d);
      h[l] = __builtin_convertvector((xf - m) * s, ln_v4d);
    }
    a0 += g[0], a1 += g[1], a2 += g[2], a3 += g[3];
    c0 += g[0] * h[0], c1 += g[1] * h[1], c2 += g[2] * h[2], c3 += g[3] * h[3];
  }
  S[0] = LN_LANES_SUM(a0, a1, a2, a3);
  S[1] = LN_LANES_SUM(c0, c1, c2, c3);
  for (; i < C; i++) {
    const float g = w[i] * dy[i];
    S[0] += (double)g;
    S[1] += (double)g * (double)((x[i] - m) * s);
  }
}

SGM_NN_INLINE void ln_row_forward(float *restrict o, float *restrict mean, float *restrict rstd,
                                  const float *restrict x, const float *restrict w,
                                  const float *restrict b, int C)
{
  double s1[1], s2[1];
  s1[0] = ln_sum(x, 0.0, 0, C);
  const double m = s1[0] / C;
  s2[0] = ln_sum(x, m, 1, C);
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
  ln_bwd_sums(S, dy, x, w, m, s, C);
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
