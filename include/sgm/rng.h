/* Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11; Random123).
 *
 * Owns: the Philox bijection and the stream layout of sgm_hpc. Every random number in a run is a
 * pure function of (seed, purpose, id, step, sub): the counter is built from (purpose, id, step,
 * sub) and the key from the seed, so any number can be recomputed on any rank without state.
 * This is what makes trajectories independent of the number of ranks. Layout (docs/rng.md):
 *
 *   key     = { seed & 0xffffffff, seed >> 32 }
 *   counter = { sub, step & 0xffffffff, (step >> 32) & 0xffff | purpose << 16, id }
 *
 * so step < 2^48, id < 2^32, purpose < 2^16. One counter gives 4 uint32; the normal generators
 * also use the mirror counter sub | 2^31, so callers keep sub < 2^31.
 */
#ifndef SGM_RNG_H
#define SGM_RNG_H

#include <stdint.h>

/// What the numbers are for; each purpose is an independent family of streams.
typedef enum {
  SGM_RNG_PLACEMENT = 1, /* initial positions */
  SGM_RNG_RELAX = 2,     /* overlap-removal moves */
  SGM_RNG_NOISE_X = 3,   /* thermal noise on positions */
  SGM_RNG_NOISE_G = 4,   /* active (OU) noise */
  SGM_RNG_INIT_G = 5,    /* stationary draw of g */
  SGM_RNG_NN_INIT = 6,   /* network initialisation (id = tensor index, step = 0) */
  SGM_RNG_BATCH = 7,     /* minibatch selection */
  SGM_RNG_DENOISE = 8,   /* denoising-loss perturbations */
  SGM_RNG_DIFFUSION = 9, /* forward/reverse diffusion noise */
  SGM_RNG_SAMPLER = 10,  /* sampler noise */
  SGM_RNG_UMBRELLA = 11, /* umbrella windows */
  SGM_RNG_MCMC = 12,     /* Monte Carlo moves */
  SGM_RNG_TEST = 0xffff  /* reserved for tests */
} SgmRngPurpose;

/// The raw bijection: out = Philox4x32-10(ctr, key). Matches Random123's philox4x32_R(10,...).
void sgm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/// Four raw 32-bit words of stream (seed, purpose, id, step) at sub-counter `sub`.
void sgm_rng_u32x4(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                   uint32_t out[4]);

/// Maps a 32-bit word to a double uniform in the open interval (0, 1): (w + 0.5) / 2^32.
double sgm_rng_u01(uint32_t w);

/// Four uniforms in (0, 1) from one counter.
void sgm_rng_uniform4(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                      double u[4]);

/// Four standard normals from one counter (two Box-Muller pairs), double precision.
void sgm_rng_normal4(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                     double z[4]);

/// n standard normals for (seed, purpose, id, step): counters sub = 0, 1, ... take 4 each.
void sgm_rng_normals(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, int n, double *z);

/// Two standard normals from ONE counter (one Box-Muller pair): w0, w1 give a 53-bit radius
/// uniform (21 + 32 bits), w2 the angle, w3 is unused. Half the cost of sgm_rng_normals(n = 2)
/// (one Philox block instead of two, one log/sqrt/sincos instead of two); a different stream from
/// sgm_rng_normal4 for the same arguments. The engine's per-particle noise in d <= 2.
void sgm_rng_normal2(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                     double z[2]);

/// The pair of sgm_rng_normal2's counter (seed, purpose, id[i], step, sub) for n ids at once:
/// z[2i], z[2i+1]. Same words and the same radius uniform as sgm_rng_normal2, but log, sin and
/// cos are our own branch-free polynomial kernels (fdlibm coefficients; the angle is reduced by
/// octant in integers), so the whole chain vectorises (AVX-512/AVX2 clones picked at load time):
/// ~8 ns per pair instead of ~50. Differs from sgm_rng_normal2 by a few ulps; bitwise equal to
/// sgm_rng_normal2_poly on every lane, clone and block position. docs/rng.md.
void sgm_rng_normal2_batch(uint64_t seed, uint32_t purpose, uint64_t step, uint32_t sub, int64_t n,
                           const int64_t *id, double *z);

/// The transform of sgm_rng_normal2_batch on given words: radius from w0 (low 21 bits) and w1,
/// angle 2 pi (w2 + 1/2) 2^-32 (exposed for tests of the octant reduction).
void sgm_rng_box_muller_poly(uint32_t w0, uint32_t w1, uint32_t w2, double z[2]);

/// Scalar reference of sgm_rng_normal2_batch for one id (identical bits).
void sgm_rng_normal2_poly(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                          double z[2]);

#endif
