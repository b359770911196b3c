/* Vectorised inner loops of the AOUP engine (src/systems/aoup_kernels.c); internal to aoup.c.
 *
 * Both kernels give bitwise the same results as the plain loops they replace (same operations in
 * the same order per particle; selects instead of branches), on every clone (AVX-512, AVX2,
 * baseline). They only exist to let the compiler use vector lanes without -ffast-math.
 */
#ifndef SGM_AOUP_KERNELS_H
#define SGM_AOUP_KERNELS_H

#include <stdint.h>

#define SGM_AOUP_SLICE 8  /* locals per slice of the sliced-ELLPACK pair lists */
#define SGM_AOUP_SIGMA 64 /* window of the by-length lane order (SELL-C-sigma) */

/// Constants of one integration step (x by Euler-Maruyama, g by cg g + sg z).
typedef struct {
  int dim, periodic;
  double dt, v0, L, sx, cg, sg;
  uint64_t seed, step;
} SgmAoupStepConst;

/// One step for locals 0..n-1: draws the noise (sgm_rng_normal2_batch, SGM_RNG_NOISE_G and, when
/// sx > 0, SGM_RNG_NOISE_X), updates x (wrapped in periodic boxes) and g, and returns the largest
/// squared displacement from xref (NaN if any is NaN) and whether f, x and g all stayed finite.
void sgm_aoup_kernel_integrate(const SgmAoupStepConst *k, int64_t n, const int64_t *id, double *x,
                               double *g, const double *f, const double *xref, double *maxd2,
                               int *finite);

/// Harmonic pair forces in a periodic 2D box with canonical positions X (all in [0, L)^2), no
/// trap, over sliced-ELLPACK lists (SGM_AOUP_SLICE locals per slice; slice b has width w[b] and
/// its entries at nb + start[b], partner kk of local i = perm[b S + c] at kk S + c; lanes
/// b S + c >= n are padding and not stored), for the slices blist[0 .. nbl) only:
/// F[2i+c] = mu sum_kk t_c(i, nb[..]) - mu A X[2i+c] summed in slot order from +0, with
/// t = k (2a - r)/r d for 0 < r^2 < rc2 and +0 otherwise (padding slots hold i itself: r = 0).
void sgm_aoup_kernel_forces_h2p(int64_t n, const double *X, const int32_t *perm,
                                const int64_t *start, const int32_t *w, const int32_t *nb,
                                const int32_t *blist, int64_t nbl, double k, double twoa,
                                double rc2, double L, double mu, double A, double *F);

#endif
