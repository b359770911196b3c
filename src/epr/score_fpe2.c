/* The "fpe_pair" score provider in d = 2: the stationary score of two interacting AOUPs in an
 * isotropic harmonic trap from a numerical solution of their Fokker-Planck equation.
 *
 * As in d = 1 (score_fpe.c), r = x1 - x2, h = (g1 - g2)/2, X = (x1 + x2)/2, G = (g1 + g2)/2 split
 * the pair into a Gaussian (X, G) and the relative process
 *   dr = (2 v0 h - μA r + 2μ F(|r|) r̂) dt + 2√ε dB,   dh = -γ h dt + √γ dB',
 * now in R² x R². Its law is invariant under joint rotations of (r, h) and under the reflection
 * that mirrors both, so its density p depends on ρ = |r|, η = |h| and the angle φ ∈ [0, π] between
 * r and h (docs/derivations.md, "Two AOUPs in d = 2"). In these coordinates the operator has no
 * mixed derivatives: with D_r = 2ε, D_h = γ/2 the stationary equation, multiplied by ρη, is the
 * conservation law
 *   ∂_ρ(ρη J_ρ) + ∂_η(ρη J_η) + ∂_φ(ρη K) = 0,
 *   J_ρ = (2 v0 η cos φ - μAρ + 2μF(ρ)) p - D_r ∂_ρ p,   J_η = -γη p - D_h ∂_η p,
 *   K = -(2 v0 η sin φ / ρ) p - (D_r/ρ² + D_h/η²) ∂_φ p,
 * with zero flux at ρ = 0 and η = 0 (zero area), at φ = 0 and π (symmetry) and at the outer
 * edges. Finite volumes with Scharfetter-Gummel fluxes in each direction (an M-matrix: p > 0, and
 * probability is conserved exactly, so one row can be replaced by p = 1); ρ on a grid that is
 * uniform (fpe_dr) through the interaction range and one radius beyond and then grows by 5 % per
 * cell up to 25 fpe_dr; η and φ uniform. Solved once on rank 0 by a sparse LU (MUMPS where PETSc
 * has it: the grid is three-dimensional) and broadcast as six fields at the cell centres:
 *   ℓ_ρ, ℓ_φ/ρ, ℓ_η, ℓ_φ/η, Δ_r ℓ = ℓ_ρρ + ℓ_ρ/ρ + ℓ_φφ/ρ², Δ_h ℓ = ℓ_ηη + ℓ_η/η + ℓ_φφ/η²
 * (ℓ = log p; the η ghost cell below η = 0 is the point reflected through h = 0, (η, π - φ), so
 * the η = 0 axis is differenced as in Cartesian coordinates). At a configuration, with r̂, t̂ = r̂
 * turned by +90°, ĥ, ψ̂ = ĥ turned by +90° and φ signed (ℓ_φ is odd in it),
 *   ∇_r ℓ = ℓ_ρ r̂ - (ℓ_φ/ρ) t̂,   ∇_h ℓ = ℓ_η ĥ + (ℓ_φ/η) ψ̂,
 * and for particle 1 (particle 2 flips the ∇_r ℓ and ∇_h ℓ terms)
 *   s_x = -(Σ⁻¹_xx X + Σ⁻¹_xg G) + ∇_r ℓ,        ∇_{x1}·s_x = -Σ⁻¹_xx + Δ_r ℓ,
 *   s_g = -(Σ⁻¹_xg X + Σ⁻¹_gg G) + ∇_h ℓ / 2,    ∇_{g1}·s_g = -Σ⁻¹_gg + Δ_h ℓ / 4.
 * Trade-offs: a direct 3D factorisation (memory and time grow like the grid to the 4/3 and 2;
 * the default grid's are logged) rather than an iterative solve of a singular,
 * convection-dominated system; a periodic box is refused (it breaks the rotation invariance).
 */
#include "fpe_pair.h"
#include "sgm/core.h"

#include <petscksp.h>
#include <math.h>
#include <string.h>

enum { F_LR, F_LPR, F_LE, F_LPE, F_LAPR, F_LAPH, NFIELD };

typedef struct {
  int64_t nr, ne, nf;
  double *rf, *rc; /* ρ faces (nr + 1) and centres (nr) */
  double de, df;   /* η and φ spacings; centres (j + 1/2) de, (m + 1/2) df */
  double *f[NFIELD];
  double ixx, ixg, igg; /* one-particle Σ⁻¹ */
  int64_t outside, evals;
} Fpe2Ctx;

static int64_t idx(const Fpe2Ctx *c, int64_t i, int64_t j, int64_t m)
{
  return (i * c->ne + j) * c->nf + m;
}

/* ρ faces: uniform dr up to rfine, then 5 % growth per cell up to 25 dr, until rmax. With rf ==
 * NULL only counts. */
static int64_t r_faces(double dr, double rfine, double rmax, double *rf)
{
  int64_t n = 0;
  double r = 0.0, step = dr;
  if (rf) rf[0] = 0.0;
  while (r < rmax - 1e-9 * dr) {
    if (r >= rfine - 1e-9 * dr) step = fmin(step * 1.05, 25.0 * dr);
    r += step;
    n++;
    if (rf) rf[n] = r;
  }
  return n;
}

/* Assembles and solves on rank 0; fills the fields. */
static PetscErrorCode fpe2_solve(const SgmAoupParams *p, Fpe2Ctx *c, double *mass_edge)
{
  const SgmPairPotential *pot = sgm_pair_potential_find(p->potential);
  const int64_t nr = c->nr, ne = c->ne, nf = c->nf, N = nr * ne * nf;
  const double Dr = 2.0 * p->eps, Dh = 0.5 * p->gamma, de = c->de, df = c->df;
  Mat A;
  Vec x;
  PetscFunctionBeginUser;
  PetscCheck(pot, PETSC_COMM_SELF, SGM_ERR_USER, "unknown pair potential '%s'", p->potential);
  const double rcut = sgm_aoup_interaction_range(p, pot);
  /* the configuration part of the ρ drift at each ρ face, -μAρ + 2μF(ρ): once per face, not per
   * (η, φ) row, and the same value for both cells of a face */
  double *bface;
  PetscCall(PetscMalloc1(nr + 1, &bface));
  for (int64_t fi = 0; fi <= nr; fi++)
    bface[fi] =
        -p->mu * p->trap_A * c->rf[fi] + 2.0 * p->mu * sgm_fpe_force_mag(p, pot, rcut, c->rf[fi]);
  PetscCall(MatCreateSeqAIJ(PETSC_COMM_SELF, (PetscInt)N, (PetscInt)N, 7, NULL, &A));
  /* the pinned cell: ρ = 2a + 2, η = 0.5, φ = π/2 (free particles, typical h) */
  int64_t ip = 0, jp = (int64_t)floor(0.5 / de), mp = nf / 2;
  while (ip < nr - 1 && c->rc[ip] < 2.0 * p->a + 2.0) ip++;
  if (jp >= ne) jp = ne - 1;
  const int64_t kp = idx(c, ip, jp, mp);
  for (int64_t i = 0; i < nr; i++) {
    const double rho = c->rc[i], wr = c->rf[i + 1] - c->rf[i];
    for (int64_t j = 0; j < ne; j++) {
      const double eta = ((double)j + 0.5) * de;
      const double Dphi = Dr / (rho * rho) + Dh / (eta * eta);
      for (int64_t m = 0; m < nf; m++) {
        const int64_t k = idx(c, i, j, m);
        PetscInt cols[7];
        PetscScalar vals[7];
        int nc = 0;
        double diag = 0.0;
        if (k == kp) {
          PetscCall(MatSetValue(A, (PetscInt)k, (PetscInt)k, 1.0, ADD_VALUES));
          continue;
        }
        const double phi = ((double)m + 0.5) * df;
        /* each face: its area, diffusion, drift (from the face's index, identical for both
         * cells), centre distance; this cell's outflux is side x the lower-to-upper flux
         * (D/Δ)(B(-P) p_lo - B(P) p_hi), P = b Δ / D */
        for (int side = -1; side <= 1; side += 2) {
          const int64_t in = i + side;
          if (in < 0 || in >= nr) continue;
          const int64_t fi = side > 0 ? i + 1 : i;
          const double dist = fabs(c->rc[in] - rho), area = c->rf[fi] * eta * de * df;
          const double bf = 2.0 * p->v0 * eta * cos(phi) + bface[fi];
          const double P = side * bf * dist / Dr, w = area * Dr / dist;
          diag += w * sgm_fpe_bern(-P);
          cols[nc] = (PetscInt)idx(c, in, j, m), vals[nc++] = -w * sgm_fpe_bern(P);
        }
        for (int side = -1; side <= 1; side += 2) {
          const int64_t jn = j + side;
          if (jn < 0 || jn >= ne) continue;
          const double ef = (double)(side > 0 ? j + 1 : j) * de, area = rho * ef * wr * df;
          const double P = side * (-p->gamma * ef) * de / Dh, w = area * Dh / de;
          diag += w * sgm_fpe_bern(-P);
          cols[nc] = (PetscInt)idx(c, i, jn, m), vals[nc++] = -w * sgm_fpe_bern(P);
        }
        for (int side = -1; side <= 1; side += 2) {
          const int64_t mn = m + side;
          if (mn < 0 || mn >= nf) continue;
          const double pf = (double)(side > 0 ? m + 1 : m) * df, area = rho * eta * wr * de;
          const double bf = -2.0 * p->v0 * eta * sin(pf) / rho;
          const double P = side * bf * df / Dphi, w = area * Dphi / df;
          diag += w * sgm_fpe_bern(-P);
          cols[nc] = (PetscInt)idx(c, i, j, mn), vals[nc++] = -w * sgm_fpe_bern(P);
        }
        cols[nc] = (PetscInt)k, vals[nc++] = diag;
        PetscCall(MatSetValues(A, 1, (PetscInt[]){(PetscInt)k}, nc, cols, vals, ADD_VALUES));
      }
    }
  }
  PetscCall(PetscFree(bface));
  PetscCall(MatAssemblyBegin(A, MAT_FINAL_ASSEMBLY));
  PetscCall(MatAssemblyEnd(A, MAT_FINAL_ASSEMBLY));
  PetscCall(sgm_fpe_solve_pinned(A, (PetscInt)kp, PETSC_TRUE, &x));
  const PetscScalar *pv;
  PetscCall(VecGetArrayRead(x, &pv));
  double *l, mass = 0.0, edge = 0.0, pmin = INFINITY;
  PetscCall(PetscMalloc1(N, &l));
  for (int64_t i = 0; i < nr; i++)
    for (int64_t j = 0; j < ne; j++)
      for (int64_t m = 0; m < nf; m++) {
        const int64_t k = idx(c, i, j, m);
        mass += pv[k] * c->rc[i] * (c->rf[i + 1] - c->rf[i]) * ((double)j + 0.5);
        if (pv[k] < pmin) pmin = pv[k];
      }
  PetscCheck(pmin > 0.0 && isfinite(mass), PETSC_COMM_SELF, PETSC_ERR_NOT_CONVERGED,
             "score \"fpe_pair\": the stationary density is not positive (min %g): refine the grid "
             "([epr] fpe_dr)",
             pmin);
  for (int64_t i = 0; i < nr; i++)
    for (int64_t j = 0; j < ne; j++)
      for (int64_t m = 0; m < nf; m++) {
        const int64_t k = idx(c, i, j, m);
        const double w = c->rc[i] * (c->rf[i + 1] - c->rf[i]) * ((double)j + 0.5);
        l[k] = log(pv[k]);
        if (j == ne - 1 || i == nr - 1) edge += pv[k] * w / mass;
      }
  PetscCall(VecRestoreArrayRead(x, &pv));
  *mass_edge = edge;
  /* derivatives at the centres; the first and last ρ cells and the last η cell copy their
   * neighbour below (negligible density there: the contact barrier, the far edges). The φ
   * differences are scaled to be exact for the first harmonic (cos φ, sin φ), the φ dependence of
   * a function linear in h: then ℓ_η/η and ℓ_φφ/η² cancel in Δ_h ℓ as they must near h = 0
   * instead of leaving an O(Δφ²/η) error */
  const double kf1 = df / sin(df), kf2 = df * df / (2.0 * (1.0 - cos(df)));
  for (int64_t i = 1; i < nr - 1; i++) {
    const double rho = c->rc[i], h1 = rho - c->rc[i - 1], h2 = c->rc[i + 1] - rho;
    for (int64_t j = 0; j < ne - 1; j++) {
      const double eta = ((double)j + 0.5) * de;
      for (int64_t m = 0; m < nf; m++) {
        const int64_t k = idx(c, i, j, m);
        const double lm = l[idx(c, i - 1, j, m)], lp = l[idx(c, i + 1, j, m)], l0 = l[k];
        const double lr = (-h2 / (h1 * (h1 + h2))) * lm + ((h2 - h1) / (h1 * h2)) * l0 +
                          (h1 / (h2 * (h1 + h2))) * lp;
        const double lrr = 2.0 * (lm / (h1 * (h1 + h2)) - l0 / (h1 * h2) + lp / (h2 * (h1 + h2)));
        /* η: below η = 0 the point reflected through h = 0, (η_0, π - φ) */
        const double ea = j > 0 ? l[idx(c, i, j - 1, m)] : l[idx(c, i, 0, nf - 1 - m)];
        const double eb = l[idx(c, i, j + 1, m)];
        const double le = (eb - ea) / (2.0 * de), lee = (eb - 2.0 * l0 + ea) / (de * de);
        /* φ: even about 0 and π, the ghost is the mirror cell */
        const double fa = l[idx(c, i, j, m > 0 ? m - 1 : 0)];
        const double fb = l[idx(c, i, j, m < nf - 1 ? m + 1 : nf - 1)];
        const double lf = kf1 * (fb - fa) / (2.0 * df),
                     lff = kf2 * (fb - 2.0 * l0 + fa) / (df * df);
        c->f[F_LR][k] = lr;
        c->f[F_LPR][k] = lf / rho;
        c->f[F_LE][k] = le;
        c->f[F_LPE][k] = lf / eta;
        c->f[F_LAPR][k] = lrr + lr / rho + lff / (rho * rho);
        c->f[F_LAPH][k] = lee + le / eta + lff / (eta * eta);
      }
    }
  }
  for (int q = 0; q < NFIELD; q++) {
    double *f = c->f[q];
    for (int64_t i = 1; i < nr - 1; i++)
      for (int64_t m = 0; m < nf; m++) f[idx(c, i, ne - 1, m)] = f[idx(c, i, ne - 2, m)];
    for (int64_t j = 0; j < ne; j++)
      for (int64_t m = 0; m < nf; m++) {
        f[idx(c, 0, j, m)] = f[idx(c, 1, j, m)];
        f[idx(c, nr - 1, j, m)] = f[idx(c, nr - 2, j, m)];
      }
  }
  PetscCall(PetscFree(l));
  PetscCall(VecDestroy(&x));
  PetscCall(MatDestroy(&A));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Trilinear interpolation of the six fields at (ρ, η, φ ∈ [0, π]) into v[NFIELD]; the fields
 * ℓ_φ/ρ and ℓ_φ/η are odd about φ = 0 and π, the others even (the ghost cells beyond the first
 * and last φ centre); below the first η centre the fields are extrapolated linearly; ρ below the
 * first centre takes its value, beyond the last or η beyond the last centre is clamped and
 * counted. */
static void interp(const Fpe2Ctx *c, double rho, double eta, double phi, double v[NFIELD], int *out)
{
  int64_t i0 = 0;
  double wr = 0.0;
  if (rho >= c->rc[c->nr - 1]) {
    if (rho > c->rc[c->nr - 1]) *out = 1;
    i0 = c->nr - 2, wr = 1.0;
  } else if (rho > c->rc[0]) {
    int64_t lo = 0, hi = c->nr - 1; /* rc[lo] <= rho < rc[hi] */
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (c->rc[mid] <= rho)
        lo = mid;
      else
        hi = mid;
    }
    i0 = lo, wr = (rho - c->rc[lo]) / (c->rc[lo + 1] - c->rc[lo]);
  }
  double ve = eta / c->de - 0.5;
  if (ve > (double)(c->ne - 1)) *out = 1, ve = (double)(c->ne - 1);
  int64_t j0 = ve < 0.0 ? 0 : (int64_t)floor(ve);
  if (j0 > c->ne - 2) j0 = c->ne - 2;
  const double we = ve - (double)j0; /* in [-1/2, 1] */
  const double vf = phi / c->df - 0.5;
  int64_t m0 = (int64_t)floor(vf);
  if (m0 < -1) m0 = -1;
  if (m0 > c->nf - 1) m0 = c->nf - 1;
  const double wf = vf - (double)m0;
  for (int q = 0; q < NFIELD; q++) {
    const double odd = (q == F_LPR || q == F_LPE) ? -1.0 : 1.0;
    double acc = 0.0;
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++)
        for (int e = 0; e < 2; e++) {
          int64_t m = m0 + e;
          double sgn = 1.0;
          if (m < 0) m = 0, sgn = odd;
          if (m > c->nf - 1) m = c->nf - 1, sgn = odd;
          const double w = (a ? wr : 1.0 - wr) * (b ? we : 1.0 - we) * (e ? wf : 1.0 - wf) * sgn;
          acc += w * c->f[q][idx(c, i0 + a, j0 + b, m)];
        }
    v[q] = acc;
  }
}

/* The score at one configuration x = (x1, x2), g = (g1, g2) (2 components each): s_x, s_g of both
 * particles (component-major per particle) and the divergences. */
static void fpe2_point(const Fpe2Ctx *c, const double x[4], const double g[4], double sx[4],
                       double sg[4], double divx[2], double divg[2], int *outside)
{
  const double r[2] = {x[0] - x[2], x[1] - x[3]}, h[2] = {0.5 * (g[0] - g[2]), 0.5 * (g[1] - g[3])};
  const double rho = hypot(r[0], r[1]), eta = hypot(h[0], h[1]);
  const double rh[2] = {rho > 0.0 ? r[0] / rho : 1.0, rho > 0.0 ? r[1] / rho : 0.0};
  const double th[2] = {-rh[1], rh[0]};
  const double eh[2] = {eta > 0.0 ? h[0] / eta : rh[0], eta > 0.0 ? h[1] / eta : rh[1]};
  const double ps[2] = {-eh[1], eh[0]};
  double phi = atan2(h[0] * th[0] + h[1] * th[1], h[0] * rh[0] + h[1] * rh[1]), sgn = 1.0;
  if (phi < 0.0) phi = -phi, sgn = -1.0;
  double v[NFIELD];
  int out = 0;
  interp(c, rho, eta, phi, v, &out);
  for (int d = 0; d < 2; d++) {
    const double X = 0.5 * (x[d] + x[2 + d]), G = 0.5 * (g[d] + g[2 + d]);
    const double gr = v[F_LR] * rh[d] - sgn * v[F_LPR] * th[d];
    const double gh = v[F_LE] * eh[d] + sgn * v[F_LPE] * ps[d];
    const double slx = -(c->ixx * X + c->ixg * G), slg = -(c->ixg * X + c->igg * G);
    sx[d] = slx + gr, sx[2 + d] = slx - gr;
    sg[d] = slg + 0.5 * gh, sg[2 + d] = slg - 0.5 * gh;
  }
  divx[0] = divx[1] = -c->ixx + v[F_LAPR];
  divg[0] = divg[1] = -c->igg + 0.25 * v[F_LAPH];
  *outside = out;
}

static PetscErrorCode fpe2_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  Fpe2Ctx *c = (Fpe2Ctx *)sp->ctx;
  double xg[8], s_x[4], s_g[4], d_x[2], d_g[2]; /* xg: x1 (2), x2 (2), g1 (2), g2 (2) */
  int out;
  PetscFunctionBeginUser;
  PetscCall(sgm_fpe_gather_pair(sp->comm, P, 2, xg));
  fpe2_point(c, xg, xg + 4, s_x, s_g, d_x, d_g, &out);
  c->outside += out, c->evals++;
  sgm_fpe_scatter_pair(P, 2, i0, count, s_x, s_g, d_x, d_g, sx, sg, divx, divg);
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode fpe2_destroy(SgmScoreProvider sp)
{
  Fpe2Ctx *c = (Fpe2Ctx *)sp->ctx;
  PetscFunctionBeginUser;
  if (!c) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_fpe_log_outside(sp->comm, c->outside, c->evals));
  PetscCall(PetscFree2(c->rf, c->rc));
  for (int q = 0; q < NFIELD; q++) PetscCall(PetscFree(c->f[q]));
  PetscCall(PetscFree(sp->ctx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_fpe_pair2_create(SgmScoreProvider sp, SgmConfig cfg)
{
  const SgmAoupParams *p = &sp->p;
  Fpe2Ctx *c;
  double dr = 0.0, hmax = 0.0, rmax = 0.0;
  int64_t ne = 0, nf = 96;
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  if (cfg) {
    PetscCall(sgm_config_get_real(cfg, "epr.fpe_dr", &dr));
    PetscCall(sgm_config_get_int(cfg, "epr.fpe_nh", &ne));
    PetscCall(sgm_config_get_real(cfg, "epr.fpe_hmax", &hmax));
    PetscCall(sgm_config_get_real(cfg, "epr.fpe_rmax", &rmax));
    PetscCall(sgm_config_get_int(cfg, "epr.fpe_nphi", &nf));
  }
  if (!(dr > 0.0)) dr = 0.04;
  if (ne == 0) ne = 28;
  if (!(hmax > 0.0)) hmax = 4.0; /* P(|h| > 4) = e^-16 */
  PetscCheck(ne >= 8 && nf >= 8, sp->comm, SGM_ERR_USER,
             "score \"fpe_pair\" in d = 2: [epr] fpe_nh = %lld and fpe_nphi = %lld must be >= 8",
             (long long)ne, (long long)nf);
  const SgmPairPotential *pot = sgm_pair_potential_find(p->potential);
  PetscCheck(pot, sp->comm, SGM_ERR_USER, "unknown pair potential '%s'", p->potential);
  double cxx, cxg, cgg;
  sgm_score_trap_covariance(p->mu * p->trap_A, p->v0, p->gamma, p->eps, &cxx, &cxg, &cgg);
  if (!(rmax > 0.0)) rmax = 7.0 * sqrt(2.0 * cxx) + 2.0 * p->a;
  const double rfine = sgm_aoup_interaction_range(p, pot) + p->a;
  PetscCall(PetscNew(&c));
  sp->ctx = c;
  sp->destroy = fpe2_destroy;
  const double det = cxx * cgg - cxg * cxg;
  c->ixx = cgg / det, c->ixg = -cxg / det, c->igg = cxx / det;
  c->nr = r_faces(dr, rfine, rmax, NULL);
  c->ne = ne, c->nf = nf, c->de = hmax / (double)ne, c->df = M_PI / (double)nf;
  const int64_t N = c->nr * ne * nf;
  PetscCheck(
      c->nr >= 3 && N <= 4000000, sp->comm, SGM_ERR_USER,
      "score \"fpe_pair\" in d = 2: %lld x %lld x %lld grid cells (rho, |h|, angle) is "
      "outside [3 rho cells, 4e6 cells] for the direct solve; change [epr] fpe_dr, fpe_nh or "
      "fpe_nphi",
      (long long)c->nr, (long long)ne, (long long)nf);
  PetscCall(PetscMalloc2(c->nr + 1, &c->rf, c->nr, &c->rc));
  r_faces(dr, rfine, rmax, c->rf);
  for (int64_t i = 0; i < c->nr; i++) c->rc[i] = 0.5 * (c->rf[i] + c->rf[i + 1]);
  for (int q = 0; q < NFIELD; q++) PetscCall(PetscCalloc1(N, &c->f[q]));
  PetscCallMPI(MPI_Comm_rank(sp->comm, &rank));
  double edge = 0.0, t0 = MPI_Wtime();
  PetscErrorCode ierr = PETSC_SUCCESS;
  if (rank == 0) ierr = fpe2_solve(p, c, &edge);
  PetscCall(sgm_fpe_share(sp->comm, ierr, &edge, c->f, NFIELD, N));
  PetscCall(
      sgm_log(sp->comm,
              "epr: score \"fpe_pair\" (d = 2): stationary FPE of (|r|, |h|, angle) on %lld x "
              "%lld x %lld cells (dr = %.4g near contact, up to %.4g; |r| <= %.4g, |h| <= "
              "%g) solved in %.1f s; mass in the edge cells %.2e\n",
              (long long)c->nr, (long long)ne, (long long)nf, dr, c->rf[c->nr] - c->rf[c->nr - 1],
              c->rf[c->nr], hmax, MPI_Wtime() - t0, edge));
  if (edge > 1e-6)
    PetscCall(sgm_log(sp->comm,
                      "epr: warning: score \"fpe_pair\": %.2e of the density lies in the grid's "
                      "edge cells; enlarge [epr] fpe_hmax or fpe_rmax\n",
                      edge));
  sp->eval = fpe2_eval;
  sp->range = 0.0;
  PetscFunctionReturn(PETSC_SUCCESS);
}
