/* Scaled dot-product multi-head attention with an optional key mask, and its derivatives.
 *
 * Owns: softmax(q k^T / sqrt(hs)) v for every (batch, head), its backward, tangent and
 * reverse-over-forward. The fast path does, per (batch, head), the score and value products as
 * cblas_sgemm calls on strided views (Tq x Tk x hs), with the row-wise softmax algebra in loops
 * between them; at the paper's sizes (T = 65 tokens, hs = 64) this is several times faster than
 * per-element dot products, and the attention is about half of the forward flops. The loop
 * versions (_naive, double accumulation, skipping masked keys) are the references the tests
 * compare with. q, k and v carry their own row strides, so the packed in_proj output (B,T,3C) is
 * used in place, and the centre-only last layer of the local transformer passes Tq = 1 query
 * against Tk keys. Forward saves the probabilities; the tangent saves the tangent of the
 * pre-softmax scores (the tangent probabilities are recomputed from them). Masked keys get
 * probability exactly 0, so every derivative term on them vanishes; in the sgemm path they still
 * enter the products with weight 0, so their data must be finite (absent neighbours: zeros).
 */
#include "sgm/nn.h"

#include "nn_simd.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The row-wise softmax algebra of the sgemm path, vectorized (nn_simd.h): float exp, sums in
 * double lanes. */

typedef float att_v4f __attribute__((vector_size(16)));
typedef double att_v4d __attribute__((vector_size(32)));

/* sum_j a_j (b == NULL) or sum_j a_j b_j over j < n, in double: 16 lanes (lane l sums the
 * j = l mod 16 in order) as four 4-double vectors in named variables, so they stay in registers,
 * then the lanes pairwise, then the tail in order (SGM_NN_LANE_REDUCE kept its lanes in memory
 * behind a memset and summed them one after the other; at T = 17 that was ~1/8 of the loops). */
SGM_NN_INLINE double att_dsum(const float *restrict a, const float *restrict b, int n)
{
  att_v4d s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    att_v4f a0, a1, a2, a3;
    memcpy(&a0, a + j, sizeof a0), memcpy(&a1, a + j + 4, sizeof a1);
    memcpy(&a2, a + j + 8, sizeof a2), memcpy(&a3, a + j + 12, sizeof a3);
    att_v4d d0 = __builtin_convertvector(a0, att_v4d), d1 = __builtin_convertvector(a1, att_v4d),
            d2 = __builtin_convertvector(a2, att_v4d), d3 = __builtin_convertvector(a3, att_v4d);
    if (b) {
      att_v4f b0, b1, b2, b3;
      memcpy(&b0, b + j, sizeof b0), memcpy(&b1, b + j + 4, sizeof b1);
      memcpy(&b2, b + j + 8, sizeof b2), memcpy(&b3, b + j + 12, sizeof b3);
      d0 *= __builtin_convertvector(b0, att_v4d), d1 *= __builtin_convertvector(b1, att_v4d);
      d2 *= __builtin_convertvector(b2, att_v4d), d3 *= __builtin_convertvector(b3, att_v4d);
    }
    s0 += d0, s1 += d1, s2 += d2, s3 += d3;
  }
  const att_v4d t = (s0 + s1) + (s2 + s3);
  double r = (t[0] + t[1]) + (t[2] + t[3]);
  for (; j < n; j++) r += b ? (double)a[j] * (double)b[j] : (double)a[j];
  return r;
}

/* P (Tk) <- softmax(P) over the keys with mk[j] != 0 (all if mk == NULL); masked keys get 0. */
SGM_NN_INLINE void softmax_row(float *restrict P, const float *restrict mk, int Tk)
{
  float mx = -INFINITY;
  for (int j = 0; j < Tk; j++)
    if ((!mk || mk[j] != 0.0f) && P[j] > mx) mx = P[j];
  /* exp(P - max), the argument clamped at -87 (exp(-87) = 1.6e-38 ~ 0 after normalising) */
  if (mk)
    SGM_NN_ELEMENTS(Tk, const float z = sgm_nn_select(mk[j], P[j] - mx, -87.0f);
                    P[j] = sgm_nn_select(mk[j], sgm_nn_expf(-sgm_nn_min_pos(-z, 87.0f)), 0.0f));
  else
    SGM_NN_ELEMENTS(Tk, P[j] = sgm_nn_expf(-sgm_nn_min_pos(mx - P[j], 87.0f)));
  const float inv = (float)(1.0 / att_dsum(P, NULL, Tk));
  SGM_NN_ELEMENTS(Tk, P[j] *= inv);
}

/* dP (Tk) <- scale P (dP - P.dP): the softmax backward onto the scores. */
SGM_NN_INLINE void softmax_row_backward(float *restrict dP, const float *restrict P, float scale,
                                        int Tk)
{
  const float wf = (float)att_dsum(P, dP, Tk);
  SGM_NN_ELEMENTS(Tk, dP[j] = scale * P[j] * (dP[j] - wf));
}

/* S <- S where P != 0 (else 0); tP = P (S - P.S): the softmax tangent. */
SGM_NN_INLINE void softmax_row_jvp(float *restrict tP, float *restrict S, const float *restrict P,
                                   int Tk)
{
  SGM_NN_ELEMENTS(Tk, S[j] = sgm_nn_select(P[j], S[j], 0.0f));
  double m[1];
  SGM_NN_LANE_REDUCE(1, Tk, t[0] = (double)P[j] * (double)S[j], m);
  const float mf = (float)m[0];
  SGM_NN_ELEMENTS(Tk, tP[j] = P[j] * (S[j] - mf));
}

/* The reverse-over-forward of the softmax rows (see the _naive version): from P, S (scores'
 * tangent), dtP = dtout.v and dP = dtout.tv, leaves dS in dP and dts in dtP (both scaled). */
SGM_NN_INLINE void softmax_row_jvp_backward(float *restrict dP, float *restrict dtP,
                                            const float *restrict P, const float *restrict S,
                                            float scale, int Tk)
{
  double mu[2], w[1];
  SGM_NN_LANE_REDUCE(2, Tk, t[0] = (double)P[j] * (double)S[j];
                     t[1] = (double)P[j] * (double)dtP[j], mu);
  const float m = (float)mu[0], u = (float)mu[1];
  SGM_NN_ELEMENTS(Tk, dP[j] = dP[j] + dtP[j] * (S[j] - m) - S[j] * u);
  SGM_NN_LANE_REDUCE(1, Tk, t[0] = (double)P[j] * (double)dP[j], w);
  const float wf = (float)w[0];
  SGM_NN_ELEMENTS(Tk, dP[j] = scale * P[j] * (dP[j] - wf); dtP[j] = scale * P[j] * (dtP[j] - u));
}

/* ---- Fused small-window path (no BLAS) ----
 * At the local transformer's small size (T = 17 tokens, hs = 32) one (batch, head) is ~9k
 * multiply-adds per product: the sgemm call and packing overhead exceeded the arithmetic, and
 * attention was ~20% of a training step. When Tp * hs <= ATT_FUSED_MAX (Tp: Tk rounded up to 8;
 * 768 at the small size, 4608 at the paper's, which keeps sgemm) the forward and backward
 * run as loops instead: the score products q k^T and dO v^T as in-place dot products along the
 * head channels when hs % 8 == 0 (att_dots), else vectorized along the keys against a transposed
 * copy of k or v zero padded to a multiple of 8 keys (att_scores); the value products vectorized
 * along the head channels (att_values); every sum in a fixed order, so every clone gives the
 * same bits. Larger windows keep the sgemm path. */
#define ATT_FUSED_MAX 2048
#define ATT_BJ        8 /* keys are padded to a multiple of ATT_BJ for the score products */

/* Prefetches n rows of w floats, ld apart, from p (the next window's operands: in the backward
 * they come from memory, and the first loads of each window's keys or values were ~1/4 of the
 * loops' time). */
SGM_NN_INLINE void att_prefetch(const float *p, size_t ld, int n, int w)
{
  for (int r = 0; r < n; r++)
    for (int c = 0; c < w; c += 16) __builtin_prefetch(p + (size_t)r * ld + c);
}
/* the same for rows about to be written (their lines fetched for ownership ahead) */
SGM_NN_INLINE void att_prefetch_w(float *p, size_t ld, int n, int w)
{
  for (int r = 0; r < n; r++)
    for (int c = 0; c < w; c += 16) __builtin_prefetch(p + (size_t)r * ld + c, 1);
}

/* Bt (hs, Tp) = rows j < Tk of X (stride ld) transposed, zero for Tk <= j < Tp. */
SGM_NN_INLINE void att_transpose(float *restrict Bt, const float *restrict X, int ld, int Tk,
                                 int Tp, int hs)
{
  /* rows of X read contiguously (they stream from memory; Bt stays in L1) */
  for (int j = 0; j < Tk; j++) {
    const float *restrict x = X + (size_t)j * ld;
    for (int c = 0; c < hs; c++) Bt[(size_t)c * Tp + j] = x[c];
  }
  for (int c = 0; c < hs; c++)
    for (int j = Tk; j < Tp; j++) Bt[(size_t)c * Tp + j] = 0.0f;
}

/* 8-float vectors (GCC/Clang vector extension: element-wise operations, so every clone gives the
 * same bits; lowered to two SSE registers in the baseline clone). Accumulators are written out
 * per register: with arrays indexed in loops GCC -O2 kept them in memory. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8fu __attribute__((vector_size(32), aligned(4), may_alias)); /* unaligned view */
#define V8_LOAD(p)     (*(const v8fu *)(const void *)(p))
#define V8_STORE(p, v) (*(v8fu *)(void *)(p) = (v))
/* s in every lane (a broadcast; `(v8f){0} + s` costs an add more: x + 0 is no identity under
 * signed zeros, so the compiler keeps it) */
#define V8_SET1(s)                                                                                 \
  __extension__({                                                                                  \
    const float s_ = (s);                                                                          \
    (v8f){s_, s_, s_, s_, s_, s_, s_, s_};                                                         \
  })
/* the first n <= 8 elements of v to p */
#define V8_STORE_N(p, v, n)                                                                        \
  do {                                                                                             \
    float t_[8];                                                                                   \
    V8_STORE(t_, (v));                                                                             \
    memcpy((p), t_, (size_t)(n) * sizeof(float));                                                  \
  } while (0)

typedef int v8i __attribute__((vector_size(32)));

/* [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7] (AVX's hadd, as two in-lane shuffles
 * and an add) */
#define V8_HADD(a, b)                                                                              \
  (__builtin_shuffle((a), (b), (v8i){0, 2, 8, 10, 4, 6, 12, 14}) +                                 \
   __builtin_shuffle((a), (b), (v8i){1, 3, 9, 11, 5, 7, 13, 15}))

/* S[i][j] (Tq, Tk; row stride Tk) = alpha (A_i . B_j) for rows A_i (stride lda) and B_j (stride
 * ldb) of hs % 8 == 0 floats: the scores q k^T and the backward's dO v^T read in place, without
 * the transposed copy and the padding of the keys to a multiple of 8 that att_scores needs. Per
 * query row, keys in groups of 8: one 8-wide partial product vector per key (channel blocks
 * summed in order), then the 8 vectors reduced to one of 8 sums by pairwise shuffles; the other
 * keys one at a time (v8_hsum). A fixed order: every clone gives the same bits. */
/* sum of the 8 lanes of v in a fixed order */
SGM_NN_INLINE float v8_hsum(const v8f *p) /* by pointer: a vector argument is an ABI matter */
{
  const v8f v = *p;
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}
SGM_NN_INLINE void att_dots(float *restrict S, const float *restrict A, int lda,
                            const float *restrict Bm, int ldb, float alpha, int Tq, int Tk, int hs)
{
  const v8f al = V8_SET1(alpha);
  for (int i = 0; i < Tq; i++) {
    const float *a = A + (size_t)i * lda;
    float *s = S + (size_t)i * Tk;
    int j = 0;
    for (; j + 8 <= Tk; j += 8) {
      const float *b0 = Bm + (size_t)j * ldb;
      v8f p0, p1, p2, p3, p4, p5, p6, p7;
      {
        const v8f av = V8_LOAD(a);
        p0 = av * V8_LOAD(b0), p1 = av * V8_LOAD(b0 + ldb), p2 = av * V8_LOAD(b0 + 2 * ldb),
        p3 = av * V8_LOAD(b0 + 3 * ldb), p4 = av * V8_LOAD(b0 + 4 * ldb),
        p5 = av * V8_LOAD(b0 + 5 * ldb), p6 = av * V8_LOAD(b0 + 6 * ldb),
        p7 = av * V8_LOAD(b0 + 7 * ldb);
      }
      for (int c = 8; c < hs; c += 8) {
        const v8f av = V8_LOAD(a + c);
        const float *b = b0 + c;
        p0 += av * V8_LOAD(b), p1 += av * V8_LOAD(b + ldb), p2 += av * V8_LOAD(b + 2 * ldb),
            p3 += av * V8_LOAD(b + 3 * ldb), p4 += av * V8_LOAD(b + 4 * ldb),
            p5 += av * V8_LOAD(b + 5 * ldb), p6 += av * V8_LOAD(b + 6 * ldb),
            p7 += av * V8_LOAD(b + 7 * ldb);
      }
      const v8f u0 = V8_HADD(V8_HADD(p0, p1), V8_HADD(p2, p3));
      const v8f u1 = V8_HADD(V8_HADD(p4, p5), V8_HADD(p6, p7));
      const v8f r = __builtin_shuffle(u0, u1, (v8i){0, 1, 2, 3, 8, 9, 10, 11}) +
                    __builtin_shuffle(u0, u1, (v8i){4, 5, 6, 7, 12, 13, 14, 15});
      V8_STORE(s + j, al * r);
    }
    for (; j < Tk; j++) {
      const float *b = Bm + (size_t)j * ldb;
      v8f p = V8_LOAD(a) * V8_LOAD(b);
      for (int c = 8; c < hs; c += 8) p += V8_LOAD(a + c) * V8_LOAD(b + c);
      s[j] = alpha * v8_hsum(&p);
    }
  }
}

/* S (Tq, Tk) = alpha A Bt for A rows of hs (stride lda) and Bt (hs, Tp), Tp = Tk rounded up to
 * 8: each S[i][j] = alpha * (sum over c in order). Four rows at a time share each load of Bt,
 * keys in blocks of 16 and 8. */
SGM_NN_INLINE void att_scores(float *restrict S, const float *restrict A, int lda,
                              const float *restrict Bt, float alpha, int Tq, int Tk, int Tp, int hs)
{
  const v8f al = V8_SET1(alpha);
  int i0 = 0;
  for (; i0 + 4 <= Tq; i0 += 4) {
    const float *a0 = A + (size_t)i0 * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    float *s0 = S + (size_t)i0 * Tk, *s1 = s0 + Tk, *s2 = s1 + Tk, *s3 = s2 + Tk;
    int j0 = 0;
    for (; j0 + 16 <= Tp; j0 += 16) {
      v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
      for (int c = 0; c < hs; c++) {
        const float *b = Bt + (size_t)c * Tp + j0;
        const v8f b0 = V8_LOAD(b), b1 = V8_LOAD(b + 8);
        const v8f x0 = V8_SET1(a0[c]), x1 = V8_SET1(a1[c]), x2 = V8_SET1(a2[c]),
                  x3 = V8_SET1(a3[c]);
        c00 += x0 * b0, c01 += x0 * b1, c10 += x1 * b0, c11 += x1 * b1;
        c20 += x2 * b0, c21 += x2 * b1, c30 += x3 * b0, c31 += x3 * b1;
      }
      const int n = Tk - j0 < 16 ? Tk - j0 : 16, n1 = n - 8;
      V8_STORE_N(s0 + j0, al * c00, n < 8 ? n : 8);
      V8_STORE_N(s1 + j0, al * c10, n < 8 ? n : 8);
      V8_STORE_N(s2 + j0, al * c20, n < 8 ? n : 8);
      V8_STORE_N(s3 + j0, al * c30, n < 8 ? n : 8);
      if (n1 > 0) {
        V8_STORE_N(s0 + j0 + 8, al * c01, n1);
        V8_STORE_N(s1 + j0 + 8, al * c11, n1);
        V8_STORE_N(s2 + j0 + 8, al * c21, n1);
        V8_STORE_N(s3 + j0 + 8, al * c31, n1);
      }
    }
    for (; j0 < Tp; j0 += 8) {
      v8f c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
      for (int c = 0; c < hs; c++) {
        const v8f b0 = V8_LOAD(Bt + (size_t)c * Tp + j0);
        c0 += V8_SET1(a0[c]) * b0, c1 += V8_SET1(a1[c]) * b0;
        c2 += V8_SET1(a2[c]) * b0, c3 += V8_SET1(a3[c]) * b0;
      }
      const int n = Tk - j0 < 8 ? Tk - j0 : 8;
      V8_STORE_N(s0 + j0, al * c0, n);
      V8_STORE_N(s1 + j0, al * c1, n);
      V8_STORE_N(s2 + j0, al * c2, n);
      V8_STORE_N(s3 + j0, al * c3, n);
    }
  }
  for (; i0 < Tq; i0++) {
    const float *a0 = A + (size_t)i0 * lda;
    float *s0 = S + (size_t)i0 * Tk;
    for (int j0 = 0; j0 < Tp; j0 += 8) {
      v8f c0 = {0};
      for (int c = 0; c < hs; c++) c0 += V8_SET1(a0[c]) * V8_LOAD(Bt + (size_t)c * Tp + j0);
      V8_STORE_N(s0 + j0, al * c0, Tk - j0 < 8 ? Tk - j0 : 8);
    }
  }
}

/* Y row r (hs, stride ldy) (+)= sum_n W[r * wr + n * wn] X row n (stride ldx), n < N, for r < M:
 * the value products P V (wr = Tk, wn = 1) and P^T dO (wr = 1, wn = Tk). acc != 0 adds onto Y.
 * The sum over n runs in order in float, then is added to Y once. Four rows at a time share each
 * load of X; channels in blocks of 16 and 8, then one at a time. */
SGM_NN_INLINE void att_values(float *restrict Y, int ldy, const float *restrict W, int wr, int wn,
                              const float *restrict X, int ldx, int M, int N, int hs, int acc)
{
#define ATT_PUT(y, v)                                                                              \
  do {                                                                                             \
    float *yp_ = (y);                                                                              \
    if (acc)                                                                                       \
      V8_STORE(yp_, V8_LOAD(yp_) + (v));                                                           \
    else                                                                                           \
      V8_STORE(yp_, (v));                                                                          \
  } while (0)
  int r0 = 0;
  for (; r0 + 4 <= M; r0 += 4) {
    const float *w0 = W + (size_t)r0 * wr, *w1 = w0 + wr, *w2 = w1 + wr, *w3 = w2 + wr;
    float *y0 = Y + (size_t)r0 * ldy, *y1 = y0 + ldy, *y2 = y1 + ldy, *y3 = y2 + ldy;
    int c0 = 0;
    for (; c0 + 16 <= hs; c0 += 16) {
      v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
      for (int n = 0; n < N; n++) {
        const float *x = X + (size_t)n * ldx + c0;
        const size_t o = (size_t)n * wn;
        const v8f b0 = V8_LOAD(x), b1 = V8_LOAD(x + 8);
        const v8f x0 = V8_SET1(w0[o]), x1 = V8_SET1(w1[o]), x2 = V8_SET1(w2[o]),
                  x3 = V8_SET1(w3[o]);
        c00 += x0 * b0, c01 += x0 * b1, c10 += x1 * b0, c11 += x1 * b1;
        c20 += x2 * b0, c21 += x2 * b1, c30 += x3 * b0, c31 += x3 * b1;
      }
      ATT_PUT(y0 + c0, c00);
      ATT_PUT(y0 + c0 + 8, c01);
      ATT_PUT(y1 + c0, c10);
      ATT_PUT(y1 + c0 + 8, c11);
      ATT_PUT(y2 + c0, c20);
      ATT_PUT(y2 + c0 + 8, c21);
      ATT_PUT(y3 + c0, c30);
      ATT_PUT(y3 + c0 + 8, c31);
    }
    for (; c0 + 8 <= hs; c0 += 8) {
      v8f c0v = {0}, c1v = {0}, c2v = {0}, c3v = {0};
      for (int n = 0; n < N; n++) {
        const v8f b0 = V8_LOAD(X + (size_t)n * ldx + c0);
        const size_t o = (size_t)n * wn;
        c0v += V8_SET1(w0[o]) * b0, c1v += V8_SET1(w1[o]) * b0;
        c2v += V8_SET1(w2[o]) * b0, c3v += V8_SET1(w3[o]) * b0;
      }
      ATT_PUT(y0 + c0, c0v);
      ATT_PUT(y1 + c0, c1v);
      ATT_PUT(y2 + c0, c2v);
      ATT_PUT(y3 + c0, c3v);
    }
    for (; c0 < hs; c0++)
      for (int r = 0; r < 4; r++) {
        float sc = 0.0f;
        for (int n = 0; n < N; n++)
          sc += W[(size_t)(r0 + r) * wr + (size_t)n * wn] * X[(size_t)n * ldx + c0];
        float *y = Y + (size_t)(r0 + r) * ldy + c0;
        *y = acc ? *y + sc : sc;
      }
  }
  for (; r0 < M; r0++) {
    const float *w0 = W + (size_t)r0 * wr;
    float *y0 = Y + (size_t)r0 * ldy;
    int c0 = 0;
    for (; c0 + 8 <= hs; c0 += 8) {
      v8f cv = {0};
      for (int n = 0; n < N; n++)
        cv += V8_SET1(w0[(size_t)n * wn]) * V8_LOAD(X + (size_t)n * ldx + c0);
      ATT_PUT(y0 + c0, cv);
    }
    for (; c0 < hs; c0++) {
      float sc = 0.0f;
      for (int n = 0; n < N; n++) sc += w0[(size_t)n * wn] * X[(size_t)n * ldx + c0];
      y0[c0] = acc ? y0[c0] + sc : sc;
    }
  }
#undef ATT_PUT
}

static inline double dot(const float *a, const float *b, int n)
{
  double s = 0.0;
  for (int c = 0; c < n; c++) s += (double)a[c] * b[c];
  return s;
}

void sgm_nn_attention_forward_naive(float *out, float *att, const float *q, const float *k,
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

void sgm_nn_attention_backward_naive(float *dq, float *dk, float *dv, float *scratch,
                                     const float *dout, const float *att, const float *q,
                                     const float *k, const float *v, int B, int Tq, int Tk, int C,
                                     int NH, int ldq, int ldkv)
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

void sgm_nn_attention_jvp_naive(float *tout, float *ts, float *scratch, const float *tq,
                                const float *tk, const float *tv, const float *att, const float *q,
                                const float *k, const float *v, const float *mask, int B, int Tq,
                                int Tk, int C, int NH, int ldq, int ldkv)
{
  /* tout (B,Tq,C), ts (B,NH,Tq,Tk), tq (B,Tq,ldq), tk, tv (B,Tk,ldkv), att (B,NH,Tq,Tk) */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  (void)mask; /* masked keys have P = 0; their ts is set to 0 below */
  (void)scratch;
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

void sgm_nn_attention_jvp_backward_naive(float *dq, float *dk, float *dv, float *dtq, float *dtk,
                                         float *dtv, float *scratch, const float *dtout,
                                         const float *att, const float *ts, const float *q,
                                         const float *k, const float *v, const float *tq,
                                         const float *tk, const float *tv, int B, int Tq, int Tk,
                                         int C, int NH, int ldq, int ldkv)
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

SGM_CLONES
void sgm_nn_attention_forward(float *out, float *att, const float *q, const float *k,
                              const float *v, const float *mask, int B, int Tq, int Tk, int C,
                              int NH, int ldq, int ldkv)
{
  /* out (B,Tq,C), att (B,NH,Tq,Tk), q (B,Tq,ldq), k, v (B,Tk,ldkv), mask (B,Tk) or NULL */
  const int hs = C / NH;
  const float scale = (float)(1.0 / sqrt((double)hs));
  const int Tp = (Tk + ATT_BJ - 1) / ATT_BJ * ATT_BJ;
  if ((size_t)Tp * hs <= ATT_FUSED_MAX) {
    float Kt[ATT_FUSED_MAX];
    for (int b = 0; b < B; b++) {
      const float *mk = mask ? mask + (size_t)b * Tk : NULL;
      for (int h = 0; h < NH; h++) {
        const float *Qh = q + (size_t)b * Tq * ldq + h * hs;
        const float *Kh = k + (size_t)b * Tk * ldkv + h * hs,
                    *Vh = v + (size_t)b * Tk * ldkv + h * hs;
        float *P = att + ((size_t)b * NH + h) * Tq * Tk;
        if (hs % 8 == 0)
          att_dots(P, Qh, ldq, Kh, ldkv, scale, Tq, Tk, hs);
        else {
          att_transpose(Kt, Kh, ldkv, Tk, Tp, hs);
          att_scores(P, Qh, ldq, Kt, scale, Tq, Tk, Tp, hs);
        }
        for (int i = 0; i < Tq; i++) softmax_row(P + (size_t)i * Tk, mk, Tk);
        att_values(out + (size_t)b * Tq * C + h * hs, C, P, Tk, 1, Vh, ldkv, Tq, Tk, hs, 0);
      }
    }
    return;
  }
  for (int b = 0; b < B; b++) {
    const float *mk = mask ? mask + (size_t)b * Tk : NULL;
    for (int h = 0; h < NH; h++) {
      const float *Qh = q + (size_t)b * Tq * ldq + h * hs;
      const float *Kh = k + (size_t)b * Tk * ldkv + h * hs,
                  *Vh = v + (size_t)b * Tk * ldkv + h * hs;
      float *P = att + ((size_t)b * NH + h) * Tq * Tk;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, scale, Qh, ldq, Kh, ldkv,
                  0.0f, P, Tk);
      for (int i = 0; i < Tq; i++) softmax_row(P + (size_t)i * Tk, mk, Tk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, P, Tk, Vh, ldkv,
                  0.0f, out + (size_t)b * Tq * C + h * hs, C);
    }
  }
}

/* acc = 1: dq, dk, dv accumulate; acc = 0: they are overwritten. */
SGM_NN_INLINE void attention_backward(float *dq, float *dk, float *dv, float *scratch,
                                      const float *dout, const float *att, const float *q,
                                      const float *k, const float *v, int B, int Tq, int Tk, int C,
                                      int NH, int ldq, int ldkv, int acc)
{
  /* dq (B,Tq,ldq), dk, dv (B,Tk,ldkv), scratch (Tq,Tk), dout (B,Tq,C), att (B,NH,Tq,Tk) */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  float *dP = scratch;
  const float beta = acc ? 1.0f : 0.0f;
  const int Tp = (Tk + ATT_BJ - 1) / ATT_BJ * ATT_BJ;
  if ((size_t)Tp * hs <= ATT_FUSED_MAX) {
    float Vt[ATT_FUSED_MAX];
    for (int b = 0; b < B; b++) {
      if (b + 1 < B) {
        att_prefetch(q + (size_t)(b + 1) * Tq * ldq, (size_t)ldq, Tq, C);
        att_prefetch(k + (size_t)(b + 1) * Tk * ldkv, (size_t)ldkv, Tk, C);
        att_prefetch(v + (size_t)(b + 1) * Tk * ldkv, (size_t)ldkv, Tk, C);
        att_prefetch(dout + (size_t)(b + 1) * Tq * C, (size_t)C, Tq, C);
        att_prefetch(att + (size_t)(b + 1) * NH * Tq * Tk, 0, 1, NH * Tq * Tk);
        att_prefetch_w(dq + (size_t)(b + 1) * Tq * ldq, (size_t)ldq, Tq, C);
        att_prefetch_w(dk + (size_t)(b + 1) * Tk * ldkv, (size_t)ldkv, Tk, C);
        att_prefetch_w(dv + (size_t)(b + 1) * Tk * ldkv, (size_t)ldkv, Tk, C);
      }
      for (int h = 0; h < NH; h++) {
        const size_t oq = (size_t)b * Tq * ldq + h * hs, okv = (size_t)b * Tk * ldkv + h * hs;
        const float *P = att + ((size_t)b * NH + h) * Tq * Tk;
        const float *dO = dout + (size_t)b * Tq * C + h * hs;
        if (hs % 8 == 0) /* dO v^T */
          att_dots(dP, dO, C, v + okv, ldkv, 1.0f, Tq, Tk, hs);
        else {
          att_transpose(Vt, v + okv, ldkv, Tk, Tp, hs);
          att_scores(dP, dO, C, Vt, 1.0f, Tq, Tk, Tp, hs);
        }
        att_values(dv + okv, ldkv, P, 1, Tk, dO, C, Tk, Tq, hs, acc); /* += P^T dO */
        for (int i = 0; i < Tq; i++)
          softmax_row_backward(dP + (size_t)i * Tk, P + (size_t)i * Tk, (float)scale, Tk);
        att_values(dq + oq, ldq, dP, Tk, 1, k + okv, ldkv, Tq, Tk, hs, acc); /* += dS k */
        att_values(dk + okv, ldkv, dP, 1, Tk, q + oq, ldq, Tk, Tq, hs, acc); /* += dS^T q */
      }
    }
    return;
  }
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const size_t oq = (size_t)b * Tq * ldq + h * hs, okv = (size_t)b * Tk * ldkv + h * hs;
      const float *P = att + ((size_t)b * NH + h) * Tq * Tk;
      const float *dO = dout + (size_t)b * Tq * C + h * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, 1.0f, dO, C, v + okv, ldkv,
                  0.0f, dP, Tk);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, P, Tk, dO, C, beta,
                  dv + okv, ldkv);
      for (int i = 0; i < Tq; i++)
        softmax_row_backward(dP + (size_t)i * Tk, P + (size_t)i * Tk, (float)scale, Tk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, dP, Tk, k + okv,
                  ldkv, beta, dq + oq, ldq);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, dP, Tk, q + oq, ldq,
                  beta, dk + okv, ldkv);
    }
  }
}

SGM_CLONES
void sgm_nn_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int Tq, int Tk, int C, int NH, int ldq, int ldkv)
{
  attention_backward(dq, dk, dv, scratch, dout, att, q, k, v, B, Tq, Tk, C, NH, ldq, ldkv, 1);
}

SGM_CLONES
void sgm_nn_attention_backward_set(float *dq, float *dk, float *dv, float *scratch,
                                   const float *dout, const float *att, const float *q,
                                   const float *k, const float *v, int B, int Tq, int Tk, int C,
                                   int NH, int ldq, int ldkv)
{
  attention_backward(dq, dk, dv, scratch, dout, att, q, k, v, B, Tq, Tk, C, NH, ldq, ldkv, 0);
}

SGM_CLONES
void sgm_nn_attention_jvp(float *tout, float *ts, float *scratch, const float *tq, const float *tk,
                          const float *tv, const float *att, const float *q, const float *k,
                          const float *v, const float *mask, int B, int Tq, int Tk, int C, int NH,
                          int ldq, int ldkv)
{
  /* tout (B,Tq,C), ts (B,NH,Tq,Tk), scratch (Tq,Tk), tq (B,Tq,ldq), tk, tv (B,Tk,ldkv) */
  const int hs = C / NH;
  const float scale = (float)(1.0 / sqrt((double)hs));
  float *tP = scratch;
  (void)mask; /* masked keys have P = 0: their tangent probability is 0, their ts set to 0 */
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const size_t oq = (size_t)b * Tq * ldq + h * hs, okv = (size_t)b * Tk * ldkv + h * hs;
      const float *P = att + ((size_t)b * NH + h) * Tq * Tk;
      float *S = ts + ((size_t)b * NH + h) * Tq * Tk;
      float *tO = tout + (size_t)b * Tq * C + h * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, scale, tq + oq, ldq, k + okv,
                  ldkv, 0.0f, S, Tk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, scale, q + oq, ldq, tk + okv,
                  ldkv, 1.0f, S, Tk);
      for (int i = 0; i < Tq; i++)
        softmax_row_jvp(tP + (size_t)i * Tk, S + (size_t)i * Tk, P + (size_t)i * Tk, Tk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, tP, Tk, v + okv,
                  ldkv, 0.0f, tO, C);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, P, Tk, tv + okv,
                  ldkv, 1.0f, tO, C);
    }
  }
}

/* The tangent when tq, tk, tv are 0 on every row but row 0 of each batch row (the first block's
 * tangent in the local transformer's divergence in g: only the centre token's input moves). Per
 * (batch, head) the score tangents are a_j = scale tq_0 . k_j on query row 0 and
 * b_i = scale q_i . tk_0 on key 0 (two matrix-vector products); on query row i > 0 the softmax
 * tangent is then P_ij (delta_j0 - P_i0) b_i, so that row's output tangent has the closed form
 * P_i0 (b_i (v_0 - y_i) + tv_0) with y_i = sum_j P_ij v_j the primal output; row 0 is one
 * matrix-vector product over the keys. No Tq x Tk x hs product is left; the score tangents of
 * every (query, key) pair are still written for the reverse-over-forward. */
SGM_CLONES
void sgm_nn_attention_jvp_row0(float *tout, float *ts, float *scratch, const float *tq,
                               const float *tk, const float *tv, const float *att, const float *out,
                               const float *q, const float *k, const float *v, int B, int Tq,
                               int Tk, int C, int NH, int ldq, int ldkv)
{
  const int hs = C / NH;
  const float scale = (float)(1.0 / sqrt((double)hs));
  float *tP = scratch, *a = scratch + Tk, *bq = a + Tk;
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const size_t oq = (size_t)b * Tq * ldq + h * hs, okv = (size_t)b * Tk * ldkv + h * hs;
      const size_t oo = (size_t)b * Tq * C + h * hs;
      const float *P = att + ((size_t)b * NH + h) * Tq * Tk, *v0 = v + okv, *tv0 = tv + okv;
      float *S = ts + ((size_t)b * NH + h) * Tq * Tk;
      cblas_sgemv(CblasRowMajor, CblasNoTrans, Tk, hs, scale, k + okv, ldkv, tq + oq, 1, 0.0f, a,
                  1);
      cblas_sgemv(CblasRowMajor, CblasNoTrans, Tq, hs, scale, q + oq, ldq, tk + okv, 1, 0.0f, bq,
                  1);
      /* query row 0 */
      memcpy(S, a, (size_t)Tk * sizeof(float));
      S[0] += bq[0];
      softmax_row_jvp(tP, S, P, Tk);
      float *t0 = tout + oo;
      cblas_sgemv(CblasRowMajor, CblasTrans, Tk, hs, 1.0f, v + okv, ldkv, tP, 1, 0.0f, t0, 1);
      for (int c = 0; c < hs; c++) t0[c] += P[0] * tv0[c];
      /* query rows i > 0 */
      for (int i = 1; i < Tq; i++) {
        const float p0 = P[(size_t)i * Tk], bi = bq[i];
        const float *y = out + oo + (size_t)i * C;
        float *Si = S + (size_t)i * Tk, *ti = tout + oo + (size_t)i * C;
        memset(Si, 0, (size_t)Tk * sizeof(float));
        Si[0] = p0 != 0.0f ? bi : 0.0f;
        for (int c = 0; c < hs; c++) ti[c] = p0 * (bi * (v0[c] - y[c]) + tv0[c]);
      }
    }
  }
}

SGM_CLONES
void sgm_nn_attention_jvp_backward(float *dq, float *dk, float *dv, float *dtq, float *dtk,
                                   float *dtv, float *scratch, const float *dtout, const float *att,
                                   const float *ts, const float *q, const float *k, const float *v,
                                   const float *tq, const float *tk, const float *tv, int B, int Tq,
                                   int Tk, int C, int NH, int ldq, int ldkv)
{
  /* dq, dtq (B,Tq,ldq), dk, dv, dtk, dtv (B,Tk,ldkv), scratch (3,Tq,Tk), dtout (B,Tq,C),
   * att, ts (B,NH,Tq,Tk); the algebra is spelled out in the _naive version. */
  const int hs = C / NH;
  const double scale = 1.0 / sqrt((double)hs);
  const size_t TT = (size_t)Tq * Tk;
  float *tP = scratch, *dtP = scratch + TT, *dP = scratch + 2 * TT;
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const size_t oq = (size_t)b * Tq * ldq + h * hs, okv = (size_t)b * Tk * ldkv + h * hs;
      const float *P = att + ((size_t)b * NH + h) * TT, *S = ts + ((size_t)b * NH + h) * TT;
      const float *dtO = dtout + (size_t)b * Tq * C + h * hs;
      for (int i = 0; i < Tq; i++) {
        const float *Pi = P + (size_t)i * Tk, *Si = S + (size_t)i * Tk;
        float *tPi = tP + (size_t)i * Tk;
        double m[1];
        SGM_NN_LANE_REDUCE(1, Tk, t[0] = (double)Pi[j] * (double)Si[j], m);
        const float mf = (float)m[0];
        for (int j = 0; j < Tk; j++) tPi[j] = Pi[j] * (Si[j] - mf);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, 1.0f, dtO, C, v + okv, ldkv,
                  0.0f, dtP, Tk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, 1.0f, dtO, C, tv + okv, ldkv,
                  0.0f, dP, Tk);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, P, Tk, dtO, C, 1.0f,
                  dtv + okv, ldkv);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, tP, Tk, dtO, C, 1.0f,
                  dv + okv, ldkv);
      for (int i = 0; i < Tq; i++) /* dS into dP, dts into dtP */
        softmax_row_jvp_backward(dP + (size_t)i * Tk, dtP + (size_t)i * Tk, P + (size_t)i * Tk,
                                 S + (size_t)i * Tk, (float)scale, Tk);
      /* dq += dS k + dts tk; dtq += dts k; dk += dS^T q + dts^T tq; dtk += dts^T q */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, dP, Tk, k + okv,
                  ldkv, 1.0f, dq + oq, ldq);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, dtP, Tk, tk + okv,
                  ldkv, 1.0f, dq + oq, ldq);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, dtP, Tk, k + okv,
                  ldkv, 1.0f, dtq + oq, ldq);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, dP, Tk, q + oq, ldq,
                  1.0f, dk + okv, ldkv);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, dtP, Tk, tq + oq, ldq,
                  1.0f, dk + okv, ldkv);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hs, Tq, 1.0f, dtP, Tk, q + oq, ldq,
                  1.0f, dtk + okv, ldkv);
    }
  }
}

/* ---- Centre-query attention through the keys' source rows ----
 * The centre-only last block of the local transformer has one query per window; with
 * u_h = W_k,h^T q_h its scores are u_h . x_j (+ q_h . b_k,h, the same for every key, which the
 * softmax drops) and its output sum_j P_hj v_j = W_v,h z_h + b_v,h with z_h = sum_j P_hj x_j, so
 * the keys and values of the T tokens are never formed: the caller's GEMMs over the batch make
 * u from q and the output from z. The loops below run per window on 8-wide vectors along the C
 * channels of x, every sum in a fixed order (every clone gives the same bits). */

/* S[j] = alpha * (a . x_j), j < Tk, for a (C) and rows x_j of X (C floats apart): four keys at a
 * time, channels in 8-wide blocks (lanes summed at the end), then the channel tail in order. */
SGM_NN_INLINE void xc_dots(float *restrict S, const float *restrict a, const float *restrict X,
                           float alpha, int Tk, int C)
{
  const int C8 = C / 8 * 8;
  int j = 0;
  for (; j + 4 <= Tk; j += 4) {
    const float *x0 = X + (size_t)j * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int c = 0; c < C8; c += 8) {
      const v8f av = V8_LOAD(a + c);
      s0 += av * V8_LOAD(x0 + c), s1 += av * V8_LOAD(x1 + c);
      s2 += av * V8_LOAD(x2 + c), s3 += av * V8_LOAD(x3 + c);
    }
    float t0 = v8_hsum(&s0), t1 = v8_hsum(&s1), t2 = v8_hsum(&s2), t3 = v8_hsum(&s3);
    for (int c = C8; c < C; c++)
      t0 += a[c] * x0[c], t1 += a[c] * x1[c], t2 += a[c] * x2[c], t3 += a[c] * x3[c];
    S[j] = alpha * t0, S[j + 1] = alpha * t1, S[j + 2] = alpha * t2, S[j + 3] = alpha * t3;
  }
  for (; j < Tk; j++) {
    const float *x0 = X + (size_t)j * C;
    v8f s0 = {0};
    for (int c = 0; c < C8; c += 8) s0 += V8_LOAD(a + c) * V8_LOAD(x0 + c);
    float t0 = v8_hsum(&s0);
    for (int c = C8; c < C; c++) t0 += a[c] * x0[c];
    S[j] = alpha * t0;
  }
}

/* y (C) = sum_j w[j] x_j over j < Tk in order, rows x_j of X (C floats apart): channels in blocks
 * of 32 (four accumulators), then 8, then one at a time. */
SGM_NN_INLINE void xc_combine(float *restrict y, const float *restrict w, const float *restrict X,
                              int Tk, int C)
{
  int c = 0;
  for (; c + 32 <= C; c += 32) {
    v8f y0 = {0}, y1 = {0}, y2 = {0}, y3 = {0};
    for (int j = 0; j < Tk; j++) {
      const float *x = X + (size_t)j * C + c;
      const v8f p = V8_SET1(w[j]);
      y0 += p * V8_LOAD(x), y1 += p * V8_LOAD(x + 8), y2 += p * V8_LOAD(x + 16),
          y3 += p * V8_LOAD(x + 24);
    }
    V8_STORE(y + c, y0), V8_STORE(y + c + 8, y1), V8_STORE(y + c + 16, y2),
        V8_STORE(y + c + 24, y3);
  }
  for (; c + 8 <= C; c += 8) {
    v8f y0 = {0};
    for (int j = 0; j < Tk; j++) y0 += (V8_SET1(w[j])) * V8_LOAD(X + (size_t)j * C + c);
    V8_STORE(y + c, y0);
  }
  for (; c < C; c++) {
    float s = 0.0f;
    for (int j = 0; j < Tk; j++) s += w[j] * X[(size_t)j * C + c];
    y[c] = s;
  }
}

SGM_CLONES
void sgm_nn_attention_xcentre_forward(float *z, float *att, const float *u, const float *x,
                                      const float *mask, int B, int Tk, int C, int NH, float scale)
{
  for (int b = 0; b < B; b++) {
    const float *X = x + (size_t)b * Tk * C, *mk = mask ? mask + (size_t)b * Tk : NULL;
    for (int h = 0; h < NH; h++) {
      const size_t o = ((size_t)b * NH + h) * C;
      float *P = att + ((size_t)b * NH + h) * Tk;
      xc_dots(P, u + o, X, scale, Tk, C);
      softmax_row(P, mk, Tk);
      xc_combine(z + o, P, X, Tk, C);
    }
  }
}

SGM_CLONES
void sgm_nn_attention_xcentre_backward_set(float *dx, float *du, float *scratch, const float *dz,
                                           const float *att, const float *u, const float *x, int B,
                                           int Tk, int C, int NH, float scale)
{
  float *restrict dS = scratch; /* (NH, Tk) */
  const int C8 = C / 8 * 8;
  for (int b = 0; b < B; b++) {
    const float *X = x + (size_t)b * Tk * C;
    const float *Pb = att + (size_t)b * NH * Tk;
    const size_t ob = (size_t)b * NH * C;
    for (int h = 0; h < NH; h++) {
      float *d = dS + (size_t)h * Tk;
      xc_dots(d, dz + ob + (size_t)h * C, X, 1.0f, Tk, C); /* dP = dz . x_j */
      softmax_row_backward(d, Pb + (size_t)h * Tk, scale, Tk);
      xc_combine(du + ob + (size_t)h * C, d, X, Tk, C); /* du = sum_j dS_j x_j */
    }
    /* dx_j = sum_h P_hj dz_h + dS_hj u_h */
    for (int j = 0; j < Tk; j++) {
      float *y = dx + ((size_t)b * Tk + j) * C;
      int c = 0;
      for (; c + 16 <= C; c += 16) {
        v8f y0 = {0}, y1 = {0};
        for (int h = 0; h < NH; h++) {
          const float *g = dz + ob + (size_t)h * C + c, *w = u + ob + (size_t)h * C + c;
          const v8f p = V8_SET1(Pb[(size_t)h * Tk + j]), e = V8_SET1(dS[(size_t)h * Tk + j]);
          y0 += p * V8_LOAD(g), y1 += p * V8_LOAD(g + 8);
          y0 += e * V8_LOAD(w), y1 += e * V8_LOAD(w + 8);
        }
        V8_STORE(y + c, y0), V8_STORE(y + c + 8, y1);
      }
      for (; c < C8; c += 8) {
        v8f y0 = {0};
        for (int h = 0; h < NH; h++) {
          y0 += (V8_SET1(Pb[(size_t)h * Tk + j])) * V8_LOAD(dz + ob + (size_t)h * C + c);
          y0 += (V8_SET1(dS[(size_t)h * Tk + j])) * V8_LOAD(u + ob + (size_t)h * C + c);
        }
        V8_STORE(y + c, y0);
      }
      for (; c < C; c++) {
        float s = 0.0f;
        for (int h = 0; h < NH; h++) {
          s += Pb[(size_t)h * Tk + j] * dz[ob + (size_t)h * C + c];
          s += dS[(size_t)h * Tk + j] * u[ob + (size_t)h * C + c];
        }
        y[c] = s;
      }
    }
  }
}

/* S[j] = alpha * (a . x_j + b . y_j), j < Tk: xc_dots over two pairs of vector and rows in one
 * pass (both products of a channel block into the same lanes). */
SGM_NN_INLINE void xc_dots2(float *restrict S, const float *restrict a, const float *restrict X,
                            const float *restrict b, const float *restrict Y, float alpha, int Tk,
                            int C)
{
  const int C8 = C / 8 * 8;
  int j = 0;
  for (; j + 4 <= Tk; j += 4) {
    const float *x0 = X + (size_t)j * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
    const float *y0 = Y + (size_t)j * C, *y1 = y0 + C, *y2 = y1 + C, *y3 = y2 + C;
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int c = 0; c < C8; c += 8) {
      const v8f av = V8_LOAD(a + c), bv = V8_LOAD(b + c);
      s0 += av * V8_LOAD(x0 + c), s1 += av * V8_LOAD(x1 + c);
      s2 += av * V8_LOAD(x2 + c), s3 += av * V8_LOAD(x3 + c);
      s0 += bv * V8_LOAD(y0 + c), s1 += bv * V8_LOAD(y1 + c);
      s2 += bv * V8_LOAD(y2 + c), s3 += bv * V8_LOAD(y3 + c);
    }
    float t0 = v8_hsum(&s0), t1 = v8_hsum(&s1), t2 = v8_hsum(&s2), t3 = v8_hsum(&s3);
    for (int c = C8; c < C; c++) {
      t0 += a[c] * x0[c] + b[c] * y0[c], t1 += a[c] * x1[c] + b[c] * y1[c];
      t2 += a[c] * x2[c] + b[c] * y2[c], t3 += a[c] * x3[c] + b[c] * y3[c];
    }
    S[j] = alpha * t0, S[j + 1] = alpha * t1, S[j + 2] = alpha * t2, S[j + 3] = alpha * t3;
  }
  for (; j < Tk; j++) {
    const float *x0 = X + (size_t)j * C, *y0 = Y + (size_t)j * C;
    v8f s0 = {0};
    for (int c = 0; c < C8; c += 8)
      s0 += V8_LOAD(a + c) * V8_LOAD(x0 + c), s0 += V8_LOAD(b + c) * V8_LOAD(y0 + c);
    float t0 = v8_hsum(&s0);
    for (int c = C8; c < C; c++) t0 += a[c] * x0[c] + b[c] * y0[c];
    S[j] = alpha * t0;
  }
}

/* y (C) = sum_j v[j] x_j + w[j] y_j over j < Tk in order: xc_combine over two pairs of weights and
 * rows in one pass. */
SGM_NN_INLINE void xc_combine2(float *restrict y, const float *restrict v, const float *restrict X,
                               const float *restrict w, const float *restrict Y, int Tk, int C)
{
  int c = 0;
  for (; c + 32 <= C; c += 32) {
    v8f y0 = {0}, y1 = {0}, y2 = {0}, y3 = {0};
    for (int j = 0; j < Tk; j++) {
      const float *x = X + (size_t)j * C + c, *z = Y + (size_t)j * C + c;
      const v8f p = V8_SET1(v[j]), q = V8_SET1(w[j]);
      y0 += p * V8_LOAD(x), y1 += p * V8_LOAD(x + 8), y2 += p * V8_LOAD(x + 16),
          y3 += p * V8_LOAD(x + 24);
      y0 += q * V8_LOAD(z), y1 += q * V8_LOAD(z + 8), y2 += q * V8_LOAD(z + 16),
          y3 += q * V8_LOAD(z + 24);
    }
    V8_STORE(y + c, y0), V8_STORE(y + c + 8, y1), V8_STORE(y + c + 16, y2),
        V8_STORE(y + c + 24, y3);
  }
  for (; c + 8 <= C; c += 8) {
    v8f y0 = {0};
    for (int j = 0; j < Tk; j++) {
      y0 += (V8_SET1(v[j])) * V8_LOAD(X + (size_t)j * C + c);
      y0 += (V8_SET1(w[j])) * V8_LOAD(Y + (size_t)j * C + c);
    }
    V8_STORE(y + c, y0);
  }
  for (; c < C; c++) {
    float s = 0.0f;
    for (int j = 0; j < Tk; j++) s += v[j] * X[(size_t)j * C + c] + w[j] * Y[(size_t)j * C + c];
    y[c] = s;
  }
}

SGM_CLONES
void sgm_nn_attention_xcentre_jvp(float *tz, float *ts, float *scratch, const float *tu,
                                  const float *tx, const float *att, const float *u, const float *x,
                                  const float *s0, int B, int Tk, int C, int NH, float scale)
{
  float *restrict tP = scratch; /* (Tk) */
  for (int b = 0; b < B; b++) {
    const float *X = x + (size_t)b * Tk * C, *tX = tx + (size_t)b * Tk * C;
    for (int h = 0; h < NH; h++) {
      const size_t o = ((size_t)b * NH + h) * C, oa = ((size_t)b * NH + h) * Tk;
      const float *P = att + oa;
      float *S = ts + oa;
      xc_dots2(S, tu + o, X, u + o, tX, scale, Tk, C);
      if (s0) {
        const float c0 = s0[(size_t)b * NH + h];
        SGM_NN_ELEMENTS(Tk, S[j] += c0);
      }
      softmax_row_jvp(tP, S, P, Tk);
      xc_combine2(tz + o, tP, X, P, tX, Tk, C);
    }
  }
}

void sgm_nn_attention_xcentre_forward_naive(float *z, float *att, const float *u, const float *x,
                                            const float *mask, int B, int Tk, int C, int NH,
                                            float scale)
{
  for (int b = 0; b < B; b++) {
    const float *mk = mask ? mask + (size_t)b * Tk : NULL;
    for (int h = 0; h < NH; h++) {
      const float *uh = u + ((size_t)b * NH + h) * C;
      float *P = att + ((size_t)b * NH + h) * Tk;
      double mx = -INFINITY, sum = 0.0;
      for (int j = 0; j < Tk; j++) {
        if (mk && mk[j] == 0.0f) continue;
        const double s = scale * dot(uh, x + ((size_t)b * Tk + j) * C, C);
        P[j] = (float)s;
        if (s > mx) mx = s;
      }
      for (int j = 0; j < Tk; j++) {
        if (mk && mk[j] == 0.0f) {
          P[j] = 0.0f;
          continue;
        }
        const double e = exp(P[j] - mx);
        P[j] = (float)e;
        sum += e;
      }
      for (int j = 0; j < Tk; j++) P[j] = (float)(P[j] / sum);
      for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int j = 0; j < Tk; j++) s += (double)P[j] * x[((size_t)b * Tk + j) * C + c];
        z[((size_t)b * NH + h) * C + c] = (float)s;
      }
    }
  }
}

void sgm_nn_attention_xcentre_backward_naive(float *dx, float *du, float *scratch, const float *dz,
                                             const float *att, const float *u, const float *x,
                                             int B, int Tk, int C, int NH, float scale)
{
  double *dS = malloc(sizeof(double) * (size_t)NH * Tk);
  (void)scratch;
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const float *P = att + ((size_t)b * NH + h) * Tk, *dzh = dz + ((size_t)b * NH + h) * C;
      double w = 0.0;
      for (int j = 0; j < Tk; j++) {
        dS[(size_t)h * Tk + j] = dot(dzh, x + ((size_t)b * Tk + j) * C, C);
        w += (double)P[j] * dS[(size_t)h * Tk + j];
      }
      for (int j = 0; j < Tk; j++)
        dS[(size_t)h * Tk + j] = (double)scale * P[j] * (dS[(size_t)h * Tk + j] - w);
      for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int j = 0; j < Tk; j++) s += dS[(size_t)h * Tk + j] * x[((size_t)b * Tk + j) * C + c];
        du[((size_t)b * NH + h) * C + c] = (float)s;
      }
    }
    for (int j = 0; j < Tk; j++)
      for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int h = 0; h < NH; h++) {
          const size_t o = ((size_t)b * NH + h) * C + c;
          s += (double)att[((size_t)b * NH + h) * Tk + j] * dz[o] + dS[(size_t)h * Tk + j] * u[o];
        }
        dx[((size_t)b * Tk + j) * C + c] = (float)s;
      }
  }
  free(dS);
}

void sgm_nn_attention_xcentre_jvp_naive(float *tz, float *ts, float *scratch, const float *tu,
                                        const float *tx, const float *att, const float *u,
                                        const float *x, const float *s0, int B, int Tk, int C,
                                        int NH, float scale)
{
  (void)scratch;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++) {
      const size_t o = ((size_t)b * NH + h) * C, oa = ((size_t)b * NH + h) * Tk;
      const float *P = att + oa;
      double m = 0.0;
      for (int j = 0; j < Tk; j++) {
        if (P[j] == 0.0f) {
          ts[oa + j] = 0.0f;
          continue;
        }
        const size_t ox = ((size_t)b * Tk + j) * C;
        const double s = scale * (dot(tu + o, x + ox, C) + dot(u + o, tx + ox, C)) +
                         (s0 ? s0[(size_t)b * NH + h] : 0.0);
        ts[oa + j] = (float)s;
        m += P[j] * s;
      }
      for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int j = 0; j < Tk; j++) {
          if (P[j] == 0.0f) continue;
          const size_t ox = ((size_t)b * Tk + j) * C + c;
          s += P[j] * ((ts[oa + j] - m) * x[ox] + tx[ox]);
        }
        tz[o + c] = (float)s;
      }
    }
}
