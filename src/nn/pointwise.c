/* Small layers without GEMMs: row-wise softmax, residual add, sinusoidal time embedding.
 *
 * Owns: the softmax used on its own (the attention inlines the same algebra per row so that it
 * needs no score buffer), the residual add (its tangent is itself, it has no second derivative),
 * and the fixed-frequency Fourier features of a scalar time. Sums accumulate in double.
 */
#include "sgm/nn.h"

#include "nn_simd.h"

#include <math.h>

void sgm_nn_softmax_forward(float *probs, const float *inp, const float *mask, int BT, int V)
{
  /* probs (BT,V), inp (BT,V), mask (V) or NULL */
  for (int r = 0; r < BT; r++) {
    const float *x = inp + (size_t)r * V;
    float *p = probs + (size_t)r * V;
    double mx = -INFINITY, sum = 0.0;
    for (int j = 0; j < V; j++)
      if ((!mask || mask[j] != 0.0f) && x[j] > mx) mx = x[j];
    for (int j = 0; j < V; j++) {
      double e = (!mask || mask[j] != 0.0f) ? exp(x[j] - mx) : 0.0;
      p[j] = (float)e;
      sum += e;
    }
    for (int j = 0; j < V; j++) p[j] = (float)(p[j] / sum);
  }
}

void sgm_nn_softmax_backward(float *dinp, const float *dout, const float *probs, int BT, int V)
{
  /* dinp (BT,V), dout (BT,V), probs (BT,V) */
  for (int r = 0; r < BT; r++) {
    const float *p = probs + (size_t)r * V, *dy = dout + (size_t)r * V;
    double s = 0.0;
    for (int j = 0; j < V; j++) s += (double)p[j] * dy[j];
    for (int j = 0; j < V; j++) dinp[(size_t)r * V + j] += (float)(p[j] * (dy[j] - s));
  }
}

void sgm_nn_softmax_jvp(float *tout, const float *tinp, const float *probs, int BT, int V)
{
  /* tout (BT,V), tinp (BT,V), probs (BT,V) */
  for (int r = 0; r < BT; r++) {
    const float *p = probs + (size_t)r * V, *tx = tinp + (size_t)r * V;
    double s = 0.0;
    for (int j = 0; j < V; j++) s += (double)p[j] * tx[j];
    for (int j = 0; j < V; j++) tout[(size_t)r * V + j] = (float)(p[j] * (tx[j] - s));
  }
}

void sgm_nn_softmax_jvp_backward(float *dinp, float *dtinp, const float *dtout, const float *probs,
                                 const float *tinp, int BT, int V)
{
  /* dinp, dtinp, dtout, probs, tinp (BT,V). ty = p (tx - m), m = p.tx:
   * d/dp_j = dty_j (tx_j - m) - tx_j (p.dty), then through the softmax; dtx = p (dty - p.dty). */
  for (int r = 0; r < BT; r++) {
    const float *p = probs + (size_t)r * V, *tx = tinp + (size_t)r * V,
                *dty = dtout + (size_t)r * V;
    double m = 0.0, u = 0.0, w = 0.0;
    for (int j = 0; j < V; j++) {
      m += (double)p[j] * tx[j];
      u += (double)p[j] * dty[j];
    }
    for (int j = 0; j < V; j++) w += p[j] * (dty[j] * (tx[j] - m) - tx[j] * u);
    for (int j = 0; j < V; j++) {
      double gp = dty[j] * (tx[j] - m) - tx[j] * u;
      if (dinp) dinp[(size_t)r * V + j] += (float)(p[j] * (gp - w));
      if (dtinp) dtinp[(size_t)r * V + j] += (float)(p[j] * (dty[j] - u));
    }
  }
}

SGM_NN_INLINE void add_to(float *restrict out, const float *restrict b, int N)
{
  SGM_NN_ELEMENTS(N, out[j] += b[j]);
}
SGM_NN_INLINE void add3(float *restrict out, const float *restrict a, const float *restrict b,
                        int N)
{
  SGM_NN_ELEMENTS(N, out[j] = a[j] + b[j]);
}

SGM_CLONES
void sgm_nn_residual_forward(float *out, const float *a, const float *b, int N)
{
  /* out, a, b (N); out may be a or b (in place) */
  if (out == a)
    add_to(out, b, N);
  else if (out == b)
    add_to(out, a, N);
  else
    add3(out, a, b, N);
}

SGM_CLONES
void sgm_nn_residual_backward(float *da, float *db, const float *dout, int N)
{
  /* da, db, dout (N) */
  if (da) add_to(da, dout, N);
  if (db) add_to(db, dout, N);
}

void sgm_nn_fourier_forward(float *out, const float *t, const float *freq, int B, int F)
{
  /* out (B,2F), t (B), freq (F) */
  for (int b = 0; b < B; b++) {
    for (int f = 0; f < F; f++) {
      double a = (double)freq[f] * t[b];
      out[(size_t)b * 2 * F + f] = (float)sin(a);
      out[(size_t)b * 2 * F + F + f] = (float)cos(a);
    }
  }
}

void sgm_nn_fourier_backward(float *dt, const float *dout, const float *t, const float *freq, int B,
                             int F)
{
  /* dt (B), dout (B,2F), t (B), freq (F) */
  for (int b = 0; b < B; b++) {
    double s = 0.0;
    for (int f = 0; f < F; f++) {
      double a = (double)freq[f] * t[b];
      s += freq[f] *
           (cos(a) * dout[(size_t)b * 2 * F + f] - sin(a) * dout[(size_t)b * 2 * F + F + f]);
    }
    dt[b] += (float)s;
  }
}

void sgm_nn_fourier_jvp(float *tout, const float *tt, const float *t, const float *freq, int B,
                        int F)
{
  /* tout (B,2F), tt (B), t (B), freq (F) */
  for (int b = 0; b < B; b++) {
    for (int f = 0; f < F; f++) {
      double a = (double)freq[f] * t[b];
      tout[(size_t)b * 2 * F + f] = (float)(tt[b] * freq[f] * cos(a));
      tout[(size_t)b * 2 * F + F + f] = (float)(-tt[b] * freq[f] * sin(a));
    }
  }
}

void sgm_nn_fourier_jvp_backward(float *dt, float *dtt, const float *dtout, const float *t,
                                 const float *tt, const float *freq, int B, int F)
{
  /* dt, dtt (B), dtout (B,2F), t, tt (B), freq (F) */
  for (int b = 0; b < B; b++) {
    double st = 0.0, stt = 0.0;
    for (int f = 0; f < F; f++) {
      double a = (double)freq[f] * t[b], w = freq[f];
      double gs = dtout[(size_t)b * 2 * F + f], gc = dtout[(size_t)b * 2 * F + F + f];
      stt += w * (cos(a) * gs - sin(a) * gc);
      st += tt[b] * w * w * (-sin(a) * gs - cos(a) * gc);
    }
    if (dt) dt[b] += (float)st;
    if (dtt) dtt[b] += (float)stt;
  }
}
