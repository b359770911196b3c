/* Scaled dot-product multi-head attention with an optional key mask, and its derivatives.
 *
 * Owns: softmax(q k^T / sqrt(hs)) v for every (batch, head, query) with loops over keys, as in
 * llm.c's CPU attention. Token counts here are small (64 particles, or a centre plus K
 * neighbours), so per-head GEMMs would be dominated by call overhead; the projections around the
 * attention (in_proj, out_proj) are where the flops are, and those are sgemm. q, k and v carry
 * their own row strides, so the packed in_proj output (B,T,3C) is used in place, and the
 * centre-only last layer of the local transformer passes Tq = 1 queries against Tk keys.
 * Forward saves the probabilities; the tangent saves the tangent of the pre-softmax scores (the
 * tangent probabilities are recomputed from them). Masked keys get probability exactly 0, so
 * every derivative term on them vanishes and they are skipped. Dot products accumulate in double.
 */
#include "sgm/nn.h"

#include <math.h>

static inline double dot(const float *a, const float *b, int n)
{
  double s = 0.0;
  for (int c = 0; c < n; c++) s += (double)a[c] * b[c];
  return s;
}

void sgm_nn_attention_forward(float *out, float *att, const float *q, const float *k,
                              const float *v, const float *mask, int B, int Tq, int Tk, int C,
                              int NH, int ldq, int ldkv)
{
  /* out (B,Tq,C), att (B,NH,Tq,Tk), q (B,Tq,ldq), k, v (B,Tk,ldkv), mask (B,Tk) or NULL */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  for (int b = 0; b < B; b++) {
    const float *mk = mask ? mask + (size_t)b * Tk : NULL;
    for (int h = 0; h < NH; h++) {
      for (int i = 0; i < Tq; i++) {
        const float *qi = q + ((size_t)b * Tq + i) * ldq + h * hs;
        float *P = att + (((size_t)b * NH + h) * Tq + i) * Tk;
        double mx = -INFINITY;
        for (int j = 0; j < Tk; j++) {
          if (mk && mk[j] == 0.0f) {
            P[j] = 0.0f;
            continue;
          }
          double s = scale * dot(qi, k + ((size_t)b * Tk + j) * ldkv + h * hs, hs);
          P[j] = (float)s;
          if (s > mx) mx = s;
        }
        double sum = 0.0;
        for (int j = 0; j < Tk; j++) {
          if (mk && mk[j] == 0.0f) continue;
          double e = exp(P[j] - mx);
          P[j] = (float)e;
          sum += e;
        }
        for (int j = 0; j < Tk; j++) P[j] = (float)(P[j] / sum);
        float *oi = out + ((size_t)b * Tq + i) * C + h * hs;
        for (int c = 0; c < hs; c++) oi[c] = 0.0f;
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const float *vj = v + ((size_t)b * Tk + j) * ldkv + h * hs;
          for (int c = 0; c < hs; c++) oi[c] += P[j] * vj[c];
        }
      }
    }
  }
}

void sgm_nn_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int Tq, int Tk, int C, int NH, int ldq, int ldkv)
{
  /* dq (B,Tq,ldq), dk, dv (B,Tk,ldkv), scratch (Tk), dout (B,Tq,C), att (B,NH,Tq,Tk) */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  float *dP = scratch;
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      for (int i = 0; i < Tq; i++) {
        const size_t qoff = ((size_t)b * Tq + i) * ldq + h * hs;
        const float *P = att + (((size_t)b * NH + h) * Tq + i) * Tk;
        const float *doi = dout + ((size_t)b * Tq + i) * C + h * hs;
        double w = 0.0;
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const size_t kv = ((size_t)b * Tk + j) * ldkv + h * hs;
          dP[j] = (float)dot(doi, v + kv, hs);
          w += (double)P[j] * dP[j];
          for (int c = 0; c < hs; c++) dv[kv + c] += P[j] * doi[c];
        }
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const size_t kv = ((size_t)b * Tk + j) * ldkv + h * hs;
          const float dS = (float)(scale * P[j] * (dP[j] - w));
          for (int c = 0; c < hs; c++) {
            dq[qoff + c] += dS * k[kv + c];
            dk[kv + c] += dS * q[qoff + c];
          }
        }
      }
    }
  }
}

void sgm_nn_attention_jvp(float *tout, float *ts, const float *tq, const float *tk, const float *tv,
                          const float *att, const float *q, const float *k, const float *v,
                          const float *mask, int B, int Tq, int Tk, int C, int NH, int ldq,
                          int ldkv)
{
  /* tout (B,Tq,C), ts (B,NH,Tq,Tk), tq (B,Tq,ldq), tk, tv (B,Tk,ldkv), att (B,NH,Tq,Tk) */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  (void)mask; /* masked keys have P = 0; their ts is set to 0 below */
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      for (int i = 0; i < Tq; i++) {
        const size_t qoff = ((size_t)b * Tq + i) * ldq + h * hs;
        const float *P = att + (((size_t)b * NH + h) * Tq + i) * Tk;
        float *tsi = ts + (((size_t)b * NH + h) * Tq + i) * Tk;
        double m = 0.0;
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) {
            tsi[j] = 0.0f;
            continue;
          }
          const size_t kv = ((size_t)b * Tk + j) * ldkv + h * hs;
          double s = scale * (dot(tq + qoff, k + kv, hs) + dot(q + qoff, tk + kv, hs));
          tsi[j] = (float)s;
          m += P[j] * s;
        }
        float *toi = tout + ((size_t)b * Tq + i) * C + h * hs;
        for (int c = 0; c < hs; c++) toi[c] = 0.0f;
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const size_t kv = ((size_t)b * Tk + j) * ldkv + h * hs;
          const float tP = (float)(P[j] * (tsi[j] - m));
          for (int c = 0; c < hs; c++) toi[c] += tP * v[kv + c] + P[j] * tv[kv + c];
        }
      }
    }
  }
}

void sgm_nn_attention_jvp_backward(float *dq, float *dk, float *dv, float *dtq, float *dtk,
                                   float *dtv, float *scratch, const float *dtout, const float *att,
                                   const float *ts, const float *q, const float *k, const float *v,
                                   const float *tq, const float *tk, const float *tv, int B, int Tq,
                                   int Tk, int C, int NH, int ldq, int ldkv)
{
  /* dq, dtq (B,Tq,ldq), dk, dv, dtk, dtv (B,Tk,ldkv), scratch (2 Tk), dtout (B,Tq,C),
   * att, ts (B,NH,Tq,Tk), q, tq (B,Tq,ldq), k, v, tk, tv (B,Tk,ldkv).
   * With m = sum P ts, tP = P (ts - m), tout = tP v + P tv:
   *   dtP = dtout.v, dtv += P dtout, dv += tP dtout, dP = dtout.tv + dtP (ts - m) - ts u,
   *   u = sum P dtP, dts = P (dtP - u), dS = P (dP - sum P dP), then both score products. */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  float *dtP = scratch, *dP = scratch + Tk;
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      for (int i = 0; i < Tq; i++) {
        const size_t qoff = ((size_t)b * Tq + i) * ldq + h * hs;
        const float *P = att + (((size_t)b * NH + h) * Tq + i) * Tk;
        const float *tsi = ts + (((size_t)b * NH + h) * Tq + i) * Tk;
        const float *dti = dtout + ((size_t)b * Tq + i) * C + h * hs;
        double m = 0.0, u = 0.0, w = 0.0;
        for (int j = 0; j < Tk; j++) m += (double)P[j] * tsi[j];
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const size_t kv = ((size_t)b * Tk + j) * ldkv + h * hs;
          const float tP = (float)(P[j] * (tsi[j] - m));
          dtP[j] = (float)dot(dti, v + kv, hs);
          dP[j] = (float)dot(dti, tv + kv, hs);
          u += (double)P[j] * dtP[j];
          for (int c = 0; c < hs; c++) {
            dtv[kv + c] += P[j] * dti[c];
            dv[kv + c] += tP * dti[c];
          }
        }
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          dP[j] = (float)(dP[j] + dtP[j] * (tsi[j] - m) - tsi[j] * u);
          w += (double)P[j] * dP[j];
        }
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const size_t kv = ((size_t)b * Tk + j) * ldkv + h * hs;
          const float dS = (float)(scale * P[j] * (dP[j] - w));
          const float dts = (float)(scale * P[j] * (dtP[j] - u));
          for (int c = 0; c < hs; c++) {
            dq[qoff + c] += dS * k[kv + c] + dts * tk[kv + c];
            dtq[qoff + c] += dts * k[kv + c];
            dk[kv + c] += dS * q[qoff + c] + dts * tq[qoff + c];
            dtk[kv + c] += dts * q[qoff + c];
          }
        }
      }
    }
  }
}
