/* Vectorised inner loops of the AOUP engine (see aoup_kernels.h).
 *
 * Plain C11 the compiler can vectorise at -O2: fixed-size blocks (no epilogue), selects instead of
 * branches, bit-pattern maxima instead of floating-point ones (a non-negative double orders like
 * its bits, and NaN sorts above everything), multiversioned with target_clones like
 * src/nn/activation.c. Compiled with -fno-math-errno (sqrt is an instruction; its arguments are
 * never negative) and -ffp-contract=off (CMakeLists.txt): every clone gives the same bits.
 */
#include "aoup_kernels.h"
#include "sgm/domain.h"
#include "sgm/rng.h"
#include "sgm/simd.h"

#include <math.h>
#include <string.h>

#if defined(__GNUC__)
#define SQRT __builtin_sqrt
#else
#define SQRT sqrt
#endif

#define IB 64 /* particles per integration block */
#define SB SGM_AOUP_SLICE

static inline uint64_t asu64(double x)
{
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
static inline double asdbl(uint64_t u)
{
  double x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* a where the mask is all ones, else b: bit operations, which GCC if-converts and vectorises for
 * every clone (a floating-point ?: it may sink into a branch and then refuse to speculate) */
static inline double sel(uint64_t m, double a, double b)
{
  return asdbl((asu64(a) & m) | (asu64(b) & ~m));
}
static inline uint64_t mask(int c)
{
  return 0ull - (uint64_t)c;
}

/* sgm_wrap(x, L) for x in [-L, 2L), where floor(x / L) is -1, 0 or 1: the same operations */
static inline double wrap_near(double x, double L)
{
  const double y = sel(mask(x < 0.0), x + L, sel(mask(x >= L), x - L, x));
  return sel(mask((y >= L) | (y < 0.0)), 0.0, y);
}

/* One block of 2 IB elements (IB particles in 2D, or a zero-padded copy), updated in place: x and
 * g at the same operations as the scalar update, the largest squared displacement from r (as
 * bits) into *mbp and the largest exponent field of f + x + g into *badp. ne = the real elements
 * (the general-wrap fallback touches only those). */
static inline __attribute__((always_inline)) void
step_block(const SgmAoupStepConst *k, double *restrict xb, double *restrict gb,
           const double *restrict fb, const double *restrict rb, const double *restrict zg,
           const double *restrict zx, int ne, uint64_t *mbp, uint64_t *badp)
{
  const int dim = k->dim;
  const double dt = k->dt, v0 = k->v0, L = k->L, h = 0.5 * L, sx = k->sx, cg = k->cg, sg = k->sg;
  const uint64_t EXP = 0x7ff0000000000000ull;
  uint64_t mb = *mbp, bad = *badp;
  double u2[2 * IB];
  if (k->periodic) {
    double xo[2 * IB], go[2 * IB];
    uint64_t far = 0;
    for (int e = 0; e < 2 * IB; e++) {
      const double x0 = xb[e], g0 = gb[e];
      const double xr = x0 + dt * (fb[e] + v0 * g0) + sx * zx[e];
      /* sgm_wrap, which is the identity inside the box */
      const double xn = sel(mask((xr >= 0.0) & (xr < L)), xr, wrap_near(xr, L));
      far |= (uint64_t) !((xr >= -L) & (xr < 2.0 * L));
      const double gn = cg * g0 + sg * zg[e];
      /* f, x and g finite <=> their sum is (an inf + -inf or a NaN gives NaN) */
      const uint64_t ex = asu64(fb[e] + xn + gn) & EXP;
      bad = ex > bad ? ex : bad;
      /* sgm_min_image for |u| < L (both positions in [0, L)) */
      const double u = xn - rb[e];
      const double v = sel(mask(u > h), u - L, sel(mask(u < -h), u + L, u));
      xo[e] = x0, go[e] = g0, xb[e] = xn, gb[e] = gn, u2[e] = v * v;
    }
    if (far) /* a particle moved by more than L (or is not finite): the general wrap */
      for (int e = 0; e < ne; e++) {
        const double xr = xo[e] + dt * (fb[e] + v0 * go[e]) + sx * zx[e];
        if (!((xr >= -L) && (xr < 2.0 * L))) {
          const double xn = sgm_wrap(xr, L), u = sgm_min_image(xn - rb[e], L);
          const uint64_t ex = asu64(fb[e] + xn + gb[e]) & EXP;
          bad = ex > bad ? ex : bad;
          xb[e] = xn, u2[e] = u * u;
        }
      }
  } else
    for (int e = 0; e < 2 * IB; e++) {
      const double xn = xb[e] + dt * (fb[e] + v0 * gb[e]) + sx * zx[e];
      const double gn = cg * gb[e] + sg * zg[e];
      const uint64_t ex = asu64(fb[e] + xn + gn) & EXP;
      bad = ex > bad ? ex : bad;
      const double u = xn - rb[e];
      xb[e] = xn, gb[e] = gn, u2[e] = u * u;
    }
  if (dim == 2)
    for (int i = 0; i < IB; i++) {
      const uint64_t d2 = asu64(0.0 + u2[2 * i] + u2[2 * i + 1]);
      mb = d2 > mb ? d2 : mb;
    }
  else
    for (int i = 0; i < IB; i++) {
      const uint64_t d2 = asu64(0.0 + u2[i]);
      mb = d2 > mb ? d2 : mb;
    }
  *mbp = mb, *badp = bad;
}

SGM_CLONES
void sgm_aoup_kernel_integrate(const SgmAoupStepConst *k, int64_t n, const int64_t *id, double *x,
                               double *g, const double *f, const double *xref, double *maxd2,
                               int *finite)
{
  const int dim = k->dim;
  const uint64_t EXP = 0x7ff0000000000000ull;
  uint64_t mb = 0, bad = 0;
  for (int64_t i0 = 0; i0 < n; i0 += IB) {
    const int nb = n - i0 < IB ? (int)(n - i0) : IB, ne = nb * dim;
    double zg[2 * IB], zxb[2 * IB];
    static const double zeros[2 * IB]; /* the x noise when eps = 0 (no memset per block) */
    const double *zx = zeros;
    sgm_rng_normal2_batch(k->seed, SGM_RNG_NOISE_G, k->step, 0, nb, id + i0, zg);
    if (k->sx > 0.0) {
      sgm_rng_normal2_batch(k->seed, SGM_RNG_NOISE_X, k->step, 0, nb, id + i0, zxb);
      zx = zxb;
      if (dim == 1)
        for (int i = 0; i < nb; i++) zxb[i] = zxb[2 * i];
    }
    if (dim == 1) /* particle i takes the first normal of its pair */
      for (int i = 0; i < nb; i++) zg[i] = zg[2 * i];
    if (ne == 2 * IB) { /* a whole 2D block: in place, no copies */
      step_block(k, x + i0 * dim, g + i0 * dim, f + i0 * dim, xref + i0 * dim, zg, zx, ne, &mb,
                 &bad);
      continue;
    }
    /* the last block, or 1D: a zero-padded copy */
    double xb[2 * IB], gb[2 * IB], fb[2 * IB], rb[2 * IB];
    memcpy(xb, x + i0 * dim, (size_t)ne * sizeof(double));
    memcpy(gb, g + i0 * dim, (size_t)ne * sizeof(double));
    memcpy(fb, f + i0 * dim, (size_t)ne * sizeof(double));
    memcpy(rb, xref + i0 * dim, (size_t)ne * sizeof(double));
    for (int e = ne; e < 2 * IB; e++) xb[e] = gb[e] = fb[e] = rb[e] = zg[e] = zxb[e] = 0.0;
    step_block(k, xb, gb, fb, rb, zg, zx, ne, &mb, &bad);
    memcpy(x + i0 * dim, xb, (size_t)ne * sizeof(double));
    memcpy(g + i0 * dim, gb, (size_t)ne * sizeof(double));
  }
  /* squared displacements are >= +0, so the largest bit pattern is the largest value, and a NaN
   * (any sign) sorts above every number */
  *maxd2 = asdbl(mb);
  *finite = bad != EXP; /* the largest exponent field seen: all ones for an inf or NaN */
}

SGM_CLONES
void sgm_aoup_kernel_forces_h2p(int64_t n, const double *X, const int32_t *perm,
                                const int64_t *start, const int32_t *w, const int32_t *nb,
                                const int32_t *blist, int64_t nbl, double k, double twoa,
                                double rc2, double L, double mu, double A, double *F)
{
  const double h = 0.5 * L;
  for (int64_t t = 0; t < nbl; t++) {
    const int64_t b = blist[t], i0 = b * SB;
    const int32_t *q = nb + start[b];
    const int wb = w[b];
    double xi0[SB], xi1[SB], fs0[SB], fs1[SB];
    for (int c = 0; c < SB; c++) {
      const int64_t i = perm[i0 + c]; /* lanes past n: a copy of a local, not stored */
      xi0[c] = X[2 * i], xi1[c] = X[2 * i + 1], fs0[c] = 0.0, fs1[c] = 0.0;
    }
    for (int kk = 0; kk < wb; kk++, q += SB) {
      double c0[SB], c1[SB];
      /* the raw differences (indexed loads; GCC vectorises those only with gathers, which its
       * generic tuning disables for AVX2) */
      for (int c = 0; c < SB; c++) {
        const int32_t j = q[c];
        c0[c] = xi0[c] - X[2 * j];
        c1[c] = xi1[c] - X[2 * j + 1];
      }
      /* vectorised: the pair terms of slot kk of the slice's SB particles, added in slot order */
      for (int c = 0; c < SB; c++) {
        const double e0 = c0[c], e1 = c1[c];
        /* sgm_min_image for |d| < L */
        const double d0 = sel(mask(e0 > h), e0 - L, sel(mask(e0 < -h), e0 + L, e0));
        const double d1 = sel(mask(e1 > h), e1 - L, sel(mask(e1 < -h), e1 + L, e1));
        const double r2 = d0 * d0 + d1 * d1;
        const double r = SQRT(r2);
        const double m = k * (twoa - r) / r;
        /* out of range or coincident (padding): +0, which leaves a sum unchanged bit for bit
         * (sums start at +0 and never become -0); a NaN r2 stays in and propagates */
        const uint64_t in = mask(!((r2 >= rc2) | (r2 == 0.0)));
        fs0[c] += sel(in, m * d0, 0.0);
        fs1[c] += sel(in, m * d1, 0.0);
      }
    }
    const int nc = n - i0 < SB ? (int)(n - i0) : SB;
    for (int c = 0; c < nc; c++) {
      const int64_t i = perm[i0 + c];
      F[2 * i] = mu * fs0[c] - mu * A * xi0[c];
      F[2 * i + 1] = mu * fs1[c] - mu * A * xi1[c];
    }
  }
}
