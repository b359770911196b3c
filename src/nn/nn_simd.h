/* Private to src/nn: the vectorization idioms shared by the layer kernels.
 *
 * The library builds with -O2 (GCC's "very cheap" vectorizer cost model: no runtime alias checks,
 * no loops that need a scalar epilogue), without -ffast-math (no reassociation, so no vectorized
 * float reductions) and, by default, without -march=native. The kernels therefore write their
 * element loops as blocks of SGM_NN_VL elements with a constant trip count over restrict
 * pointers (each block becomes one AVX-512 or a few narrower vector instructions), keep
 * reductions in SGM_NN_VL independent lanes, and are compiled for AVX-512 and AVX2 as well as the
 * baseline (SGM_CLONES, a GCC ifunc picked at load time). No FMA contraction in ISO C mode, so
 * every clone gives the same bits.
 */
#ifndef SGM_NN_SIMD_H
#define SGM_NN_SIMD_H

#include "sgm/simd.h"

#include <stdint.h>
#include <string.h>

#define SGM_NN_VL 16

#ifdef __GNUC__
#define SGM_NN_INLINE static inline __attribute__((always_inline))
#else
#define SGM_NN_INLINE static inline
#endif

/* NT sums over j in [0, C) in double lanes: TERMS sets t[0..NT) from the index j; OUT[q] gets
 * sum_j t[q] (lanes first, then the tail j >= C - C % SGM_NN_VL in order). */
#define SGM_NN_LANE_REDUCE(NT, C, TERMS, OUT)                                                      \
  do {                                                                                             \
    double acc_[NT][SGM_NN_VL];                                                                    \
    memset(acc_, 0, sizeof acc_);                                                                  \
    int i_ = 0;                                                                                    \
    for (; i_ + SGM_NN_VL <= (C); i_ += SGM_NN_VL)                                                 \
      for (int k_ = 0; k_ < SGM_NN_VL; k_++) {                                                     \
        const int j = i_ + k_;                                                                     \
        double t[NT];                                                                              \
        TERMS;                                                                                     \
        for (int q_ = 0; q_ < NT; q_++) acc_[q_][k_] += t[q_];                                     \
      }                                                                                            \
    for (int q_ = 0; q_ < NT; q_++) {                                                              \
      OUT[q_] = 0.0;                                                                               \
      for (int k_ = 0; k_ < SGM_NN_VL; k_++) OUT[q_] += acc_[q_][k_];                              \
    }                                                                                              \
    for (; i_ < (C); i_++) {                                                                       \
      const int j = i_;                                                                            \
      double t[NT];                                                                                \
      TERMS;                                                                                       \
      for (int q_ = 0; q_ < NT; q_++) OUT[q_] += t[q_];                                            \
    }                                                                                              \
  } while (0)

/* for j in [0, C): BODY, in blocks of SGM_NN_VL (vectorized when BODY uses restrict pointers). */
#define SGM_NN_ELEMENTS(C, BODY)                                                                   \
  do {                                                                                             \
    int i_ = 0;                                                                                    \
    for (; i_ + SGM_NN_VL <= (C); i_ += SGM_NN_VL)                                                 \
      for (int k_ = 0; k_ < SGM_NN_VL; k_++) {                                                     \
        const int j = i_ + k_;                                                                     \
        BODY;                                                                                      \
      }                                                                                            \
    for (; i_ < (C); i_++) {                                                                       \
      const int j = i_;                                                                            \
      BODY;                                                                                        \
    }                                                                                              \
  } while (0)

/* exp(x) for -87 <= x <= 88, branch-free (Cody-Waite reduction, degree-7 polynomial, relative
 * error ~2e-7). */
SGM_NN_INLINE float sgm_nn_expf(float x)
{
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  const float p =
      1.0f +
      r * (1.0f + r * (0.5f + r * (1.0f / 6 +
                                   r * (1.0f / 24 +
                                        r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  const int32_t e = ((int32_t)k + 127) * (1 << 23);
  float s;
  memcpy(&s, &e, sizeof s);
  return p * s;
}

/* min(a, hi) for a >= 0 (or NaN) and hi > 0 on the bit patterns: non-negative floats order as
 * their int32 patterns. A float comparison (`<` signals on NaN) keeps GCC from if-converting, and
 * so from vectorizing, a loop under the default -ftrapping-math. */
SGM_NN_INLINE float sgm_nn_min_pos(float a, float hi)
{
  int32_t ia, ih;
  memcpy(&ia, &a, sizeof ia);
  memcpy(&ih, &hi, sizeof ih);
  ia = ia > ih ? ih : ia;
  memcpy(&a, &ia, sizeof a);
  return a;
}

/* keep != 0 (any zero, +0 or -0, counts as 0) ? a : b, on the bit patterns. */
SGM_NN_INLINE float sgm_nn_select(float keep, float a, float b)
{
  int32_t ik, ia, ib;
  memcpy(&ik, &keep, sizeof ik);
  memcpy(&ia, &a, sizeof ia);
  memcpy(&ib, &b, sizeof ib);
  const int32_t m = -(int32_t)((ik & 0x7fffffff) != 0);
  ia = (ia & m) | (ib & ~m);
  memcpy(&a, &ia, sizeof a);
  return a;
}

#endif
