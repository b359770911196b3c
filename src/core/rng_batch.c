/* Batched normals: the Box-Muller pair of sgm_rng_normal2's counter for many ids at once, with the
 * log, sin and cos done by our own polynomial kernels so that the compiler vectorises the whole
 * chain (Philox in 32-bit lanes, the transform in 64-bit lanes). See docs/rng.md.
 *
 * Why not libm: glibc's log/sin/cos are scalar calls (libmvec needs -ffast-math), which kept the
 * engine's noise at ~50 ns per particle. The kernels below are the fdlibm/musl ones (log: e_log.c;
 * sin/cos: __sin/__cos on |x| <= pi/4) written without branches: plain +, -, *, /, sqrt and bit
 * operations, so every vector lane and the scalar reference sgm_rng_normal2_poly give the same
 * bits (ISO C: no FMA contraction; this file is also compiled with -ffp-contract=off, and with
 * -fno-math-errno so that sqrt is an instruction: its argument is never negative here).
 * The angle is reduced exactly in integers: the top 3 bits of the 32-bit angle word select the
 * octant, the other 29 give the angle inside it (reflected in odd octants), so sin and cos are only
 * evaluated on (0, pi/4). Accuracy against a long-double evaluation of the same uniforms: below
 * 1.5 R 2^-52 (R the Box-Muller radius), against 3.3 for the libm path of sgm_rng_normal2
 * (tests/test_rng_batch.c).
 */
#include "sgm/rng.h"
#include "sgm/simd.h"

#include <string.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define BLK       64 /* ids per block: fixed trip counts, so -O2 vectorises (no epilogue needed) */

#if defined(__GNUC__)
#define INL  static inline __attribute__((always_inline))
#define SQRT __builtin_sqrt
#else
#include <math.h>
#define INL  static inline
#define SQRT sqrt
#endif

/* Kernels marked SGM_CLONES are multiversioned (sgm/simd.h). */

INL uint64_t asu64(double x)
{
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
INL double asdbl(uint64_t u)
{
  double x;
  memcpy(&x, &u, sizeof x);
  return x;
}
/* the double of an integer 0 <= v < 2^52, exactly (no int64 -> double conversion instruction is
 * needed, which AVX2 lacks) */
INL double u52_to_d(uint64_t v)
{
  return asdbl(0x4330000000000000ull | v) - 4503599627370496.0;
}

/* log(x) for a positive normal double (fdlibm e_log.c, branch-free: no special cases needed) */
INL double klog(double x)
{
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
               Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
               Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
               Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
               Lg7 = 1.479819860511658591e-01;
  const uint64_t u = asu64(x);
  /* x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)) */
  uint64_t hx = (u >> 32) + (0x3ff00000u - 0x3fe6a09eu);
  const uint64_t kb = hx >> 20; /* k + 1023 */
  hx = (hx & 0x000fffffu) + 0x3fe6a09eu;
  const double xr = asdbl((hx << 32) | (u & 0xffffffffu));
  const double dk = u52_to_d(kb) - 1023.0;
  const double f = xr - 1.0, hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, w = z * z;
  const double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
  const double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
  const double R = t2 + t1;
  return s * (hfsq + R) + dk * ln2_lo - hfsq + f + dk * ln2_hi;
}

/* sin and cos on |x| <= pi/4 (fdlibm/musl __sin, __cos with y = 0) */
INL double ksin(double x)
{
  const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
               S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
               S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
  const double z = x * x, w = z * z, r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
  return x + z * x * (S1 + z * r);
}
INL double kcos(double x)
{
  const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
               C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
               C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
  const double z = x * x, w = z * z;
  const double r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
  const double hz = 0.5 * z, ww = 1.0 - hz;
  return ww + (((1.0 - ww) - hz) + z * r);
}

/* Words w0, w1, w2 of Philox4x32-10 at counter {sub, c1, c2, id}, round keys precomputed */
INL void philox3(const uint32_t rk0[10], const uint32_t rk1[10], uint32_t sub, uint32_t c1v,
                 uint32_t c2v, uint32_t id, uint32_t *o0, uint32_t *o1, uint32_t *o2)
{
  uint32_t c0 = sub, c1 = c1v, c2 = c2v, c3 = id;
  for (int r = 0; r < 10; r++) {
    const uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ rk0[r], n1 = (uint32_t)p1;
    const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ rk1[r], n3 = (uint32_t)p0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
  }
  *o0 = c0, *o1 = c1, *o2 = c2;
}

/* The Box-Muller pair of words (w0, w1, w2): the radius uniform exactly as sgm_rng_normal2
 * ((m + 0.5) 2^-53 rounded to double, m the 53 bits of w0 & 0x1fffff and w1), the angle
 * 2 pi (w2 + 0.5) 2^-32 evaluated by octant. */
INL void box_muller_poly(uint32_t w0, uint32_t w1, uint32_t w2, double *z0, double *z1)
{
  const uint64_t m = ((uint64_t)(w0 & 0x1fffffu) << 32) | (uint64_t)w1;
  const double dm = u52_to_d(m >> 26) * 67108864.0 + u52_to_d(m & 0x3ffffffu); /* exact */
  const double u1 = (dm + 0.5) * (1.0 / 9007199254740992.0);
  const double R = SQRT(-2.0 * klog(u1));
  /* theta = o pi/4 + alpha, alpha = (r + 1/2) 2^-29 pi/4; odd octants use pi/4 - alpha, i.e. r
   * reflected to 2^29 - 1 - r (= r ^ (2^29 - 1)) */
  const uint32_t o = w2 >> 29;
  const uint32_t r = (w2 & 0x1fffffffu) ^ ((0u - (o & 1u)) & 0x1fffffffu);
  const double al = (u52_to_d(r) + 0.5) * (0.78539816339744830962 / 536870912.0);
  const uint64_t s = asu64(ksin(al)), c = asu64(kcos(al));
  /* octants 1, 2, 5, 6 swap sin and cos; cos < 0 in 2..5, sin < 0 in 4..7 (sign-bit flips) */
  const uint64_t sw = 0ull - (uint64_t)(((o + 1u) >> 1) & 1u);
  const uint64_t cneg = (uint64_t)(((o + 2u) >> 2) & 1u) << 63;
  const uint64_t sneg = (uint64_t)((o >> 2) & 1u) << 63;
  *z0 = R * asdbl(((s & sw) | (c & ~sw)) ^ cneg);
  *z1 = R * asdbl(((c & sw) | (s & ~sw)) ^ sneg);
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#include <immintrin.h>
#define PHILOX_AVX2 1
/* Philox4x32-10 words w0, w1, w2 of BLK ids with AVX2 intrinsics, 8 ids per vector in 32-bit
 * lanes. GCC's vectoriser handles the 32 x 32 -> 64 products of philox3 with lane permutations
 * (~45 % of the batch's time); here the even lanes' products are one vpmuludq and the odd lanes'
 * another, recombined with blends. Integer operations only: the same words as philox3. */
__attribute__((target("avx2"))) static void
philox_blk_avx2(const uint32_t rk0[10], const uint32_t rk1[10], uint32_t sub, uint32_t c1v,
                uint32_t c2v, const uint32_t *ids, uint32_t *w0, uint32_t *w1, uint32_t *w2)
{
  const __m256i m0 = _mm256_set1_epi64x(PHILOX_M0), m1 = _mm256_set1_epi64x(PHILOX_M1);
  for (int i = 0; i < BLK; i += 8) {
    __m256i c0 = _mm256_set1_epi32((int)sub), c1 = _mm256_set1_epi32((int)c1v),
            c2 = _mm256_set1_epi32((int)c2v),
            c3 = _mm256_loadu_si256((const __m256i *)(const void *)(ids + i));
    for (int r = 0; r < 10; r++) {
      /* 64-bit products of the even lanes (low 32 bits of each 64-bit lane) and the odd lanes */
      const __m256i pe0 = _mm256_mul_epu32(c0, m0),
                    po0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i pe1 = _mm256_mul_epu32(c2, m1),
                    po1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      /* high words: even lanes from pe >> 32, odd lanes in place in po; low words: even lanes in
       * place in pe, odd lanes from po << 32 */
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(pe0, 32), po0, 0xaa);
      const __m256i lo0 = _mm256_blend_epi32(pe0, _mm256_slli_epi64(po0, 32), 0xaa);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(pe1, 32), po1, 0xaa);
      const __m256i lo1 = _mm256_blend_epi32(pe1, _mm256_slli_epi64(po1, 32), 0xaa);
      const __m256i k0 = _mm256_set1_epi32((int)rk0[r]), k1 = _mm256_set1_epi32((int)rk1[r]);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
      c3 = lo0;
    }
    _mm256_storeu_si256((__m256i *)(void *)(w0 + i), c0);
    _mm256_storeu_si256((__m256i *)(void *)(w1 + i), c1);
    _mm256_storeu_si256((__m256i *)(void *)(w2 + i), c2);
  }
}
static int have_avx2(void)
{
  static int v = -1;
  if (v < 0) v = __builtin_cpu_supports("avx2") ? 1 : 0;
  return v;
}
#endif

static void round_keys(uint64_t seed, uint32_t rk0[10], uint32_t rk1[10])
{
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) rk0[r] = k0, rk1[r] = k1, k0 += PHILOX_W0, k1 += PHILOX_W1;
}

SGM_CLONES
void sgm_rng_normal2_batch(uint64_t seed, uint32_t purpose, uint64_t step, uint32_t sub, int64_t n,
                           const int64_t *id, double *z)
{
  uint32_t rk0[10], rk1[10];
  round_keys(seed, rk0, rk1);
  const uint32_t c1 = (uint32_t)step;
  const uint32_t c2 = (uint32_t)((step >> 32) & 0xffffu) | (uint32_t)(purpose << 16);
  for (int64_t i0 = 0; i0 < n; i0 += BLK) {
    uint32_t ids[BLK], w0[BLK], w1[BLK], w2[BLK];
    double z0[BLK], z1[BLK];
    const int nb = n - i0 < BLK ? (int)(n - i0) : BLK;
    for (int i = 0; i < BLK; i++) ids[i] = i < nb ? (uint32_t)id[i0 + i] : 0u;
#if defined(PHILOX_AVX2)
    if (have_avx2())
      philox_blk_avx2(rk0, rk1, sub, c1, c2, ids, w0, w1, w2);
    else
#endif
      for (int i = 0; i < BLK; i++) philox3(rk0, rk1, sub, c1, c2, ids[i], &w0[i], &w1[i], &w2[i]);
    for (int i = 0; i < BLK; i++) box_muller_poly(w0[i], w1[i], w2[i], &z0[i], &z1[i]);
    for (int i = 0; i < nb; i++) z[2 * (i0 + i)] = z0[i], z[2 * (i0 + i) + 1] = z1[i];
  }
}

void sgm_rng_box_muller_poly(uint32_t w0, uint32_t w1, uint32_t w2, double z[2])
{
  box_muller_poly(w0, w1, w2, &z[0], &z[1]);
}

void sgm_rng_normal2_poly(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                          double z[2])
{
  uint32_t w[4];
  sgm_rng_u32x4(seed, purpose, id, step, sub, w);
  box_muller_poly(w[0], w[1], w[2], &z[0], &z[1]);
}
