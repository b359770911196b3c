/* Philox4x32-10 and the sgm_hpc stream layout (see include/sgm/rng.h and docs/rng.md).
 *
 * Counter-based rather than stateful: a particle's noise at a step is recomputed from
 * (seed, purpose, id, step) on whichever rank owns it, so trajectories do not depend on the
 * decomposition and a restart needs no generator state. Normals use Box-Muller on two uniforms
 * in the open interval (0, 1) (no log(0)); it costs one log, one sqrt and a sincos per pair,
 * which is small against a force evaluation and exact in distribution (unlike Ziggurat tables it
 * needs no rejection loop, so a counter always yields exactly four normals).
 */
#include "sgm/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  return (uint32_t)p;
}

void sgm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
    uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += PHILOX_W0, k1 += PHILOX_W1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

void sgm_rng_u32x4(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                   uint32_t out[4])
{
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  const uint32_t ctr[4] = {sub, (uint32_t)step,
                           (uint32_t)((step >> 32) & 0xffffu) | (uint32_t)(purpose << 16),
                           (uint32_t)id};
  sgm_philox4x32_10(ctr, key, out);
}

double sgm_rng_u01(uint32_t w)
{
  return ((double)w + 0.5) * (1.0 / 4294967296.0);
}

void sgm_rng_uniform4(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                      double u[4])
{
  uint32_t w[4];
  sgm_rng_u32x4(seed, purpose, id, step, sub, w);
  for (int i = 0; i < 4; i++) u[i] = sgm_rng_u01(w[i]);
}

/* Box-Muller on a pair. The radius uniform has 53 bits (21 from `hi`, 32 from `lo`) so the tails
 * reach |z| ~ 8.6 instead of the ~6.7 that a single 32-bit word would allow. */
static void box_muller(uint32_t hi, uint32_t lo, uint32_t ang, double *z0, double *z1)
{
  const uint64_t m = ((uint64_t)(hi & 0x1fffffu) << 32) | (uint64_t)lo;
  const double u1 = ((double)m + 0.5) * (1.0 / 9007199254740992.0);
  const double r = sqrt(-2.0 * log(u1));
  const double t = 2.0 * M_PI * sgm_rng_u01(ang);
  *z0 = r * cos(t);
  *z1 = r * sin(t);
}

void sgm_rng_normal4(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                     double z[4])
{
  uint32_t w[4], v[4];
  /* Four normals need 2 x (53 + 32) bits, more than one counter's 128: the second counter is the
   * mirror `sub | 2^31`, so sub-counters handed to callers must stay below 2^31 (docs/rng.md). */
  sgm_rng_u32x4(seed, purpose, id, step, sub, w);
  sgm_rng_u32x4(seed, purpose, id, step, sub | 0x80000000u, v);
  box_muller(w[0], w[1], w[2], &z[0], &z[1]);
  box_muller(w[3], v[0], v[1], &z[2], &z[3]);
}

void sgm_rng_normals(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, int n, double *z)
{
  double t[4];
  int i = 0;
  for (uint32_t sub = 0; i < n; sub++) {
    sgm_rng_normal4(seed, purpose, id, step, sub, t);
    for (int j = 0; j < 4 && i < n; j++, i++) z[i] = t[j];
  }
}

void sgm_rng_normal2(uint64_t seed, uint32_t purpose, uint64_t id, uint64_t step, uint32_t sub,
                     double z[2])
{
  uint32_t w[4];
  sgm_rng_u32x4(seed, purpose, id, step, sub, w);
  box_muller(w[0], w[1], w[2], &z[0], &z[1]);
}
