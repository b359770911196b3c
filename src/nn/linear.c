/* Linear layer on CBLAS, with its triple-loop reference.
 *
 * Owns: y = x W^T + b with PyTorch's (out, in) weight layout, so a state_dict computed elsewhere
 * compares without transposes. Forward, backward and the tangent are each one cblas_sgemm (the
 * tangent is the forward without bias, so a model stacks all its tangent directions into one
 * call). The forward writes the bias rows first and lets sgemm accumulate onto them (beta = 1:
 * one pass over the output fewer than sgemm's beta = 0 clear plus a bias pass); the bias
 * gradient is a row loop vectorized along the channels (nn_simd.h). The naive versions accumulate
 * in double and exist only to check the BLAS path in the tests; they are not tuned. At the small
 * model's shapes (N a multiple of 8, N and K <= 192) the three GEMMs run a no-packing AVX2/FMA
 * kernel instead of sgemm (below), the bias folded into the forward's accumulators.
 */
#include "sgm/nn.h"

#include "nn_simd.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

SGM_NN_INLINE void bias_rows(float *restrict out, const float *restrict bias, int BT, int OC)
{
  for (int r = 0; r < BT; r++) {
    float *restrict o = out + (size_t)r * OC;
    SGM_NN_ELEMENTS(OC, o[j] = bias[j]);
  }
}

/* dbias += the column sums of dout, four rows summed before each update of dbias (one
 * load-add-store chain through dbias per four rows instead of per row) */
SGM_NN_INLINE void bias_grad(float *restrict dbias, const float *restrict dout, int BT, int OC)
{
  int r = 0;
  for (; r + 4 <= BT; r += 4) {
    const float *restrict d0 = dout + (size_t)r * OC, *restrict d1 = d0 + OC,
                          *restrict d2 = d1 + OC, *restrict d3 = d2 + OC;
    SGM_NN_ELEMENTS(OC, dbias[j] += (d0[j] + d1[j]) + (d2[j] + d3[j]));
  }
  for (; r < BT; r++) {
    const float *restrict d = dout + (size_t)r * OC;
    SGM_NN_ELEMENTS(OC, dbias[j] += d[j]);
  }
}

/* ---- small-shape GEMMs without packing (AVX2 + FMA) ----
 *
 * The small model's linear layers have K, N <= 192 and tens of thousands of rows: OpenBLAS spends
 * a quarter of its time there packing panels that already fit in L1/L2. These kernels read the
 * operands in place: a register tile of MR = 6 rows x 16 columns (12 ymm accumulators), one
 * broadcast of A and two loads of B per k; the forward's weight (OC,C) is transposed once per call
 * (at most 192 x 192 floats) so B rows are contiguous. Used when N is a multiple of 8 and N, K <=
 * SGM_NN_GEMM_SMALL_MAX (the paper size, with a 256 in every layer, keeps sgemm) on a CPU with
 * AVX2 and FMA; the FMA sums differ from sgemm's in the last bits (tested against the naive loops
 * and sgemm, tests/test_nn_layers.c). */
#define SGM_NN_GEMM_SMALL_MAX 192

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GEMM_TGT  __attribute__((target("avx2,fma")))
#define GEMM_HAVE 1
#else
#define GEMM_HAVE 0
#endif

static int gemm_small_on = -1; /* -1: not yet decided */

static int gemm_small_cpu(void)
{
#if GEMM_HAVE
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

int sgm_nn_linear_small_gemm(int on)
{
  if (on >= 0)
    gemm_small_on = on ? gemm_small_cpu() : 0;
  else if (gemm_small_on < 0)
    gemm_small_on = gemm_small_cpu();
  return gemm_small_on;
}

#if GEMM_HAVE
/* 1 if the kernel serves an output N wide with reduction length K (the flag is set lazily; a race
 * between threads writes the same value). */
static int gemm_small(int N, int K)
{
  if (gemm_small_on < 0) gemm_small_on = gemm_small_cpu();
  return gemm_small_on && N % 8 == 0 && N <= SGM_NN_GEMM_SMALL_MAX && K <= SGM_NN_GEMM_SMALL_MAX;
}
#endif

#if GEMM_HAVE
enum { MR = 6 };

/* C[i][j] (i < mr, j < 8 nv) = (acc ? C : 0) + (bias ? bias[j] : 0) + sum_k A(i,k) B[k][j],
 * A(i,k) = A[i as + k ak], B rows ldb apart. */
GEMM_TGT SGM_NN_INLINE void kern(const int mr, const int nv, int K, const float *A, size_t as,
                                 size_t ak, const float *B, size_t ldb, float *Cm, size_t ldc,
                                 int acc, const float *bias)
{
  __m256 c0[MR], c1[MR];
  const __m256 z = _mm256_setzero_ps();
  const __m256 bb0 = bias ? _mm256_loadu_ps(bias) : z;
  const __m256 bb1 = bias && nv > 1 ? _mm256_loadu_ps(bias + 8) : z;
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    c0[i] = bb0;
    c1[i] = bb1;
    if (i < mr && acc) {
      c0[i] =
          bias ? _mm256_add_ps(_mm256_loadu_ps(Cm + i * ldc), bb0) : _mm256_loadu_ps(Cm + i * ldc);
      if (nv > 1)
        c1[i] = bias ? _mm256_add_ps(_mm256_loadu_ps(Cm + i * ldc + 8), bb1)
                     : _mm256_loadu_ps(Cm + i * ldc + 8);
    }
  }
  for (int k = 0; k < K; k++) {
    const float *b = B + k * ldb, *a = A + k * ak;
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = nv > 1 ? _mm256_loadu_ps(b + 8) : z;
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      if (i < mr) {
        const __m256 av = _mm256_broadcast_ss(a + i * as);
        c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
        if (nv > 1) c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
      }
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    if (i < mr) {
      _mm256_storeu_ps(Cm + i * ldc, c0[i]);
      if (nv > 1) _mm256_storeu_ps(Cm + i * ldc + 8, c1[i]);
    }
  }
}

GEMM_TGT static void kern_any(int mr, int nv, int K, const float *A, size_t as, size_t ak,
                              const float *B, size_t ldb, float *Cm, size_t ldc, int acc,
                              const float *bias)
{
#define KCASE(R)                                                                                   \
  case R:                                                                                          \
    if (nv > 1)                                                                                    \
      kern(R, 2, K, A, as, ak, B, ldb, Cm, ldc, acc, bias);                                        \
    else                                                                                           \
      kern(R, 1, K, A, as, ak, B, ldb, Cm, ldc, acc, bias);                                        \
    break;
  switch (mr) {
    KCASE(1)
    KCASE(2)
    KCASE(3)
    KCASE(4)
    KCASE(5)
    KCASE(6)
  default:
    break;
  }
#undef KCASE
}

/* Cm (M,N) = (acc ? Cm : 0) + bias + A (M,K) B (K,N); N % 8 == 0. K in at most 96-deep blocks
 * (later blocks accumulate), rows in chunks of ~16 kB of A, then 16-column panels of B (<= 6 kB),
 * then 6-row tiles: both operands of a tile come from L1. */
GEMM_TGT static void mm_nn(float *Cm, size_t ldc, int acc, const float *bias, const float *A,
                           size_t lda, const float *B, size_t ldb, int M, int N, int K)
{
  const int KBMAX = 96;
  const int nkb = (K + KBMAX - 1) / KBMAX, KB = nkb > 0 ? (K + nkb - 1) / nkb : 1;
  int MC = 4096 / KB / MR * MR;
  if (MC < MR) MC = MR;
  for (int r0 = 0; r0 < M; r0 += MC) {
    const int mc = M - r0 < MC ? M - r0 : MC;
    for (int k0 = 0; k0 < K; k0 += KB) {
      const int kb = K - k0 < KB ? K - k0 : KB, ac = acc || k0 > 0;
      const float *Ak = A + k0, *Bk = B + (size_t)k0 * ldb, *bk = k0 > 0 ? NULL : bias;
      for (int j0 = 0; j0 < N; j0 += 16) {
        const int nv = N - j0 >= 16 ? 2 : 1;
        const float *bj = bk ? bk + j0 : NULL;
        for (int i0 = 0; i0 < mc; i0 += MR) {
          const size_t r = (size_t)r0 + i0;
          if (mc - i0 >= MR && nv == 2)
            kern(MR, 2, kb, Ak + r * lda, lda, 1, Bk + j0, ldb, Cm + r * ldc + j0, ldc, ac, bj);
          else
            kern_any(mc - i0 < MR ? mc - i0 : MR, nv, kb, Ak + r * lda, lda, 1, Bk + j0, ldb,
                     Cm + r * ldc + j0, ldc, ac, bj);
        }
      }
    }
  }
}

/* Cm (M,N) += A^T B, A (K,M) and B (K,N) row-major; N % 8 == 0. The K rows in chunks of 64 (the
 * chunks of A and B, <= 48 kB each, mostly stay in L1 across the tiles). */
GEMM_TGT static void mm_tn(float *Cm, size_t ldc, const float *A, size_t lda, const float *B,
                           size_t ldb, int M, int N, int K)
{
  const int KC = 64;
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = K - k0 < KC ? K - k0 : KC;
    const float *Ak = A + (size_t)k0 * lda, *Bk = B + (size_t)k0 * ldb;
    for (int j0 = 0; j0 < N; j0 += 16) {
      const int nv = N - j0 >= 16 ? 2 : 1;
      for (int i0 = 0; i0 < M; i0 += MR) {
        if (M - i0 >= MR && nv == 2)
          kern(MR, 2, kc, Ak + i0, 1, lda, Bk + j0, ldb, Cm + (size_t)i0 * ldc + j0, ldc, 1, NULL);
        else
          kern_any(M - i0 < MR ? M - i0 : MR, nv, kc, Ak + i0, 1, lda, Bk + j0, ldb,
                   Cm + (size_t)i0 * ldc + j0, ldc, 1, NULL);
      }
    }
  }
}

/* The layers with a narrow input (C <= 4: the embeddings' first layers, x and g of dimension 2)
 * have N = C <= 4 in their input gradient and weight gradient, where sgemm packs for nothing and
 * the 16-wide tile does not apply: dinp (BT,C) (+)= dout (BT,OC) W (OC,C) as C dot products per
 * row, dW (OC,C) += dout^T inp as OC-wide vectors accumulated over the rows; OC % 8 == 0. */
GEMM_TGT static void narrow_backward_input(float *dinp, int acc, const float *dout,
                                           const float *weight, int BT, int C, int OC)
{
  float wt[4 * SGM_NN_GEMM_SMALL_MAX];
  for (int c = 0; c < C; c++)
    for (int o = 0; o < OC; o++) wt[c * OC + o] = weight[(size_t)o * C + c];
  for (int r = 0; r < BT; r++) {
    const float *d = dout + (size_t)r * OC;
    for (int c = 0; c < C; c++) {
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
      int o = 0;
      for (; o + 16 <= OC; o += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(d + o), _mm256_loadu_ps(wt + c * OC + o), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(d + o + 8), _mm256_loadu_ps(wt + c * OC + o + 8), s1);
      }
      if (o < OC)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(d + o), _mm256_loadu_ps(wt + c * OC + o), s0);
      float t[8];
      _mm256_storeu_ps(t, _mm256_add_ps(s0, s1));
      const float v = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
      dinp[(size_t)r * C + c] = acc ? dinp[(size_t)r * C + c] + v : v;
    }
  }
}

GEMM_TGT static void narrow_backward_weight(float *dweight, const float *dout, const float *inp,
                                            int BT, int C, int OC)
{
  for (int o0 = 0; o0 < OC; o0 += 16) { /* 16 outputs x C <= 4 inputs, even and odd rows apart */
    const int nv = OC - o0 >= 16 ? 2 : 1;
    __m256 a[4][2], e[4][2];
    for (int c = 0; c < 4; c++) a[c][0] = a[c][1] = e[c][0] = e[c][1] = _mm256_setzero_ps();
    int r = 0;
    for (; r + 2 <= BT; r += 2) {
      const float *d = dout + (size_t)r * OC + o0, *x = inp + (size_t)r * C;
      const __m256 d0 = _mm256_loadu_ps(d), d1 = nv > 1 ? _mm256_loadu_ps(d + 8) : d0;
      const __m256 f0 = _mm256_loadu_ps(d + OC), f1 = nv > 1 ? _mm256_loadu_ps(d + OC + 8) : f0;
      for (int c = 0; c < C; c++) {
        const __m256 xv = _mm256_broadcast_ss(x + c), yv = _mm256_broadcast_ss(x + C + c);
        a[c][0] = _mm256_fmadd_ps(d0, xv, a[c][0]);
        a[c][1] = _mm256_fmadd_ps(d1, xv, a[c][1]);
        e[c][0] = _mm256_fmadd_ps(f0, yv, e[c][0]);
        e[c][1] = _mm256_fmadd_ps(f1, yv, e[c][1]);
      }
    }
    for (; r < BT; r++) {
      const float *d = dout + (size_t)r * OC + o0, *x = inp + (size_t)r * C;
      const __m256 d0 = _mm256_loadu_ps(d), d1 = nv > 1 ? _mm256_loadu_ps(d + 8) : d0;
      for (int c = 0; c < C; c++) {
        const __m256 xv = _mm256_broadcast_ss(x + c);
        a[c][0] = _mm256_fmadd_ps(d0, xv, a[c][0]);
        a[c][1] = _mm256_fmadd_ps(d1, xv, a[c][1]);
      }
    }
    for (int c = 0; c < C; c++) {
      float t[16];
      _mm256_storeu_ps(t, _mm256_add_ps(a[c][0], e[c][0]));
      _mm256_storeu_ps(t + 8, _mm256_add_ps(a[c][1], e[c][1]));
      for (int k = 0; k < 8 * nv; k++) dweight[(size_t)(o0 + k) * C + c] += t[k];
    }
  }
}

/* 1 if the narrow-input backward serves C inputs and OC outputs */
static int gemm_narrow(int C, int OC)
{
  if (gemm_small_on < 0) gemm_small_on = gemm_small_cpu();
  return gemm_small_on && C <= 4 && OC % 8 == 0 && OC <= SGM_NN_GEMM_SMALL_MAX;
}
#endif

/* Cm (M,N) = (acc ? Cm : 0) + (bias ? bias : 0) + op(A) op(B), strided; see include/sgm/nn.h. */
void sgm_nn_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int ldb, const float *bias, int acc, float *Cm, int ldc)
{
  if (M <= 0 || N <= 0) return;
  float *bt = NULL;
#if GEMM_HAVE
  /* the kernels need op(B) as (K,N) rows: a transposed B is copied (at most 192 x 192) */
  const int fits = ta ? gemm_small(N, M) : gemm_small(N, K);
  if (fits && K > 0 && tb) {
    bt = malloc((size_t)K * N * sizeof(float));
    if (bt) {
      for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) bt[(size_t)k * N + n] = B[(size_t)n * ldb + k];
      B = bt, ldb = N, tb = 0;
    }
  }
  if (fits && K > 0 && !tb) {
    if (!ta) {
      mm_nn(Cm, (size_t)ldc, acc, bias, A, (size_t)lda, B, (size_t)ldb, M, N, K);
    } else {
      if (!acc || bias)
        for (int i = 0; i < M; i++)
          for (int n = 0; n < N; n++)
            Cm[(size_t)i * ldc + n] =
                (acc ? Cm[(size_t)i * ldc + n] : 0.0f) + (bias ? bias[n] : 0.0f);
      mm_tn(Cm, (size_t)ldc, A, (size_t)lda, B, (size_t)ldb, M, N, K);
    }
    free(bt);
    return;
  }
#endif
  free(bt);
  if (bias)
    for (int i = 0; i < M; i++)
      for (int n = 0; n < N; n++)
        Cm[(size_t)i * ldc + n] = (acc ? Cm[(size_t)i * ldc + n] : 0.0f) + bias[n];
  if (K <= 0) {
    if (!acc && !bias)
      for (int i = 0; i < M; i++) memset(Cm + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, 1.0f, A, lda, B, ldb, (acc || bias) ? 1.0f : 0.0f, Cm, ldc);
}

void sgm_nn_gemm_naive(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                       int ldb, const float *bias, int acc, float *Cm, int ldc)
{
  for (int i = 0; i < M; i++)
    for (int n = 0; n < N; n++) {
      double s = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; k++)
        s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
             (tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
      float *c = Cm + (size_t)i * ldc + n;
      *c = (float)(acc ? *c + s : s);
    }
}

SGM_CLONES
void sgm_nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int BT, int C, int OC)
{
  /* out (BT,OC), inp (BT,C), weight (OC,C), bias (OC) */
  if (BT <= 0) return;
#if GEMM_HAVE
  if (gemm_small(OC, C)) {
    float *wt = malloc((size_t)C * OC * sizeof(float));
    if (wt) {
      for (int j0 = 0; j0 < OC; j0 += 8) /* 8 weight rows at a time: whole lines both ways */
        for (int i = 0; i < C; i++)
          for (int j = j0; j < j0 + 8 && j < OC; j++)
            wt[(size_t)i * OC + j] = weight[(size_t)j * C + i];
      mm_nn(out, (size_t)OC, 0, bias, inp, (size_t)C, wt, (size_t)OC, BT, OC, C);
      free(wt);
      return;
    }
  }
#endif
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

void sgm_nn_linear_backward_input(float *dinp, int acc, const float *dout, const float *weight,
                                  int BT, int C, int OC)
{
  if (BT <= 0) return;
#if GEMM_HAVE
  if (gemm_narrow(C, OC)) {
    narrow_backward_input(dinp, acc, dout, weight, BT, C, OC);
    return;
  }
  if (gemm_small(C, OC)) {
    mm_nn(dinp, (size_t)C, acc, NULL, dout, (size_t)OC, weight, (size_t)C, BT, C, OC);
    return;
  }
#endif
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, C, OC, 1.0f, dout, OC, weight, C,
              acc ? 1.0f : 0.0f, dinp, C);
}

SGM_CLONES
void sgm_nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int BT, int C, int OC)
{
  /* dinp (BT,C), dweight (OC,C), dbias (OC), dout (BT,OC), inp (BT,C), weight (OC,C) */
  if (BT <= 0) return;
  if (dinp) sgm_nn_linear_backward_input(dinp, 1, dout, weight, BT, C, OC);
  if (dweight) {
#if GEMM_HAVE
    if (gemm_narrow(C, OC))
      narrow_backward_weight(dweight, dout, inp, BT, C, OC);
    else if (gemm_small(C, OC))
      mm_tn(dweight, (size_t)C, dout, (size_t)OC, inp, (size_t)C, OC, C, BT);
    else
#endif
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, BT, 1.0f, dout, OC, inp, C, 1.0f,
                  dweight, C);
  }
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
