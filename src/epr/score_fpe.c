/* The "fpe_pair" score provider: the stationary score of two interacting AOUPs in d = 1 (on a ring,
 * or in a harmonic trap) from a numerical solution of their Fokker-Planck equation; d = 2 (in a
 * trap) is score_fpe2.c, which this file's create function calls.
 *
 * With r = x1 - x2 (minimum image on the ring), h = (g1 - g2)/2, X = (x1 + x2)/2 and
 * G = (g1 + g2)/2, the pair force cancels in X and the trap and the OU noises split, so (X, G) and
 * (r, h) are independent Markov processes and the stationary density factorises,
 * log ρ = ℓ_lin(X, G) + ℓ(r, h) (docs/derivations.md, "Two AOUPs in d = 1: the numerically exact
 * score"). (X, G) is linear: Gaussian with half the one-particle covariance of
 * sgm_score_trap_covariance (on the ring X is uniform and G ~ N(0, 1/2)). (r, h) obeys
 *   0 = -∂_r(b_r p) - ∂_h(b_h p) + 2ε ∂²_r p + (γ/2) ∂²_h p,
 *   b_r = 2 v0 h - μA r + 2μ f(r),  b_h = -γ h,
 * f(r) = sign(r) F(|r|) the pair force of the input's potential (truncated at its cutoff, as the
 * engine). This file solves it by finite volumes on a uniform grid of cell centres (r periodic on
 * the ring, zero flux at ±rmax in the trap and at ±hmax) with Scharfetter-Gummel fluxes (exact for
 * a constant drift between two centres; the matrix is an M-matrix, so p > 0), the row of one
 * cell replaced by p = 1 to remove the constant null space, factorised once by PETSc's sparse LU on
 * rank 0 (PETSC_COMM_SELF) and broadcast. ℓ = log p and its first and second derivatives in r and
 * h come from central differences at the centres and are interpolated bilinearly to a
 * configuration; then, for particle 1 (particle 2 has the signs of the r and h terms flipped)
 *   s_x = -(Σ⁻¹_xx X + Σ⁻¹_xg G) + ∂_r ℓ,   ∇_{x1}·s_x = -Σ⁻¹_xx / 2 + ∂²_r ℓ,
 *   s_g = -(Σ⁻¹_xg X + Σ⁻¹_gg G) + ∂_h ℓ / 2,   ∇_{g1}·s_g = -Σ⁻¹_gg / 2 + ∂²_h ℓ / 4,
 * with Σ the one-particle covariance (ring: Σ⁻¹_xx = Σ⁻¹_xg = 0, Σ⁻¹_gg = 1). The grid's error is
 * second order in the spacing; the tests compare the k = 0 case with "exact_trap" and check the
 * FPE residual of an interacting pair. Trade-offs: one direct factorisation (memory ~ the grid
 * times its fill: a peak of 0.2 GB for the whole process with the ring's default 800 x 240 grid,
 * 0.5 GB with input/pair_trap_fpe.toml's 2930 x 160) instead of an iterative
 * solve, because the stationary problem is singular and convection-dominated at large |h|;
 * configurations outside the grid (|h| > hmax, |r| > rmax) are clamped to its edge and counted in
 * the log at the end.
 */
#include "fpe_pair.h"
#include "sgm/core.h"

#include <petscksp.h>
#include <math.h>
#include <time.h>
#include <string.h>

typedef struct {
  int periodic;
  int half; /* trap: r >= 0 only, the cell left of r = 0 at height h is the one at -h */
  int64_t nr, nh;
  double r0, dr, h0, dh;               /* centre of cell 0 and spacing */
  double *dl_r, *d2l_r, *dl_h, *d2l_h; /* (nr, nh), index i * nh + j */
  double ixx, ixg, igg;                /* one-particle Σ⁻¹ (ring: 0, 0, 1) */
  double xs[4], gs[4];                 /* gathered x1, x2, g1, g2 and owner counts */
  int64_t outside, evals;
} FpeCtx;

PetscErrorCode sgm_fpe_solve_pinned(Mat A, PetscInt kp, PetscBool mumps, Vec *x)
{
  Vec b, res;
  KSP ksp;
  PC pc;
  PetscReal rn, xn;
  PetscInt N;
  PetscFunctionBeginUser;
  PetscCall(MatGetSize(A, &N, NULL));
  PetscCall(MatCreateVecs(A, x, &b));
  PetscCall(VecSet(b, 0.0));
  PetscCall(VecSetValue(b, kp, 1.0, INSERT_VALUES));
  PetscCall(VecAssemblyBegin(b));
  PetscCall(VecAssemblyEnd(b));
  PetscCall(KSPCreate(PETSC_COMM_SELF, &ksp));
  PetscCall(KSPSetOperators(ksp, A, A));
  PetscCall(KSPSetType(ksp, KSPPREONLY));
  PetscCall(KSPGetPC(ksp, &pc));
  PetscCall(PCSetType(pc, PCLU));
#if defined(PETSC_HAVE_MUMPS)
  if (mumps)
    PetscCall(PCFactorSetMatSolverType(pc, MATSOLVERMUMPS));
  else
    PetscCall(PCFactorSetMatOrderingType(pc, MATORDERINGND));
#else
  (void)mumps;
  PetscCall(PCFactorSetMatOrderingType(pc, MATORDERINGND));
#endif
  PetscCall(KSPSetOptionsPrefix(ksp, "fpe_"));
  PetscCall(KSPSetFromOptions(ksp));
  PetscCall(KSPSolve(ksp, b, *x));
  /* residual check: the direct solve must satisfy the system to round-off */
  PetscCall(VecDuplicate(b, &res));
  PetscCall(MatMult(A, *x, res));
  PetscCall(VecAXPY(res, -1.0, b));
  PetscCall(VecNorm(res, NORM_INFINITY, &rn));
  PetscCall(VecNorm(*x, NORM_INFINITY, &xn));
  PetscCall(VecDestroy(&res));
  PetscCall(VecDestroy(&b));
  PetscCall(KSPDestroy(&ksp));
  PetscCheck(rn <= 1e-8 * (xn > 1.0 ? xn : 1.0) * (double)N, PETSC_COMM_SELF,
             PETSC_ERR_NOT_CONVERGED,
             "score \"fpe_pair\": the stationary FPE solve left a residual %g (|p| %g)", (double)rn,
             (double)xn);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_fpe_share(MPI_Comm comm, PetscErrorCode ierr, double *edge, double *const *f,
                             int nf, int64_t N)
{
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  int ok = ierr == PETSC_SUCCESS;
  /* The other ranks have waited here for the whole solve: a blocking broadcast would poll the
   * network at full speed, which on an oversubscribed node (a laptop, the tests' 4 ranks on 2
   * cores) takes the cores the solve runs on. They poll every millisecond instead. */
  MPI_Request req;
  PetscCallMPI(MPI_Ibcast(&ok, 1, MPI_INT, 0, comm, &req));
  for (int done = 0; !done;) {
    PetscCallMPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (!done && rank) nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = 1000000}, NULL);
  }
  if (rank == 0) PetscCall(ierr);
  PetscCheck(ok, comm, PETSC_ERR_NOT_CONVERGED, "score \"fpe_pair\": the solve failed on rank 0");
  PetscCallMPI(MPI_Bcast(edge, 1, MPI_DOUBLE, 0, comm));
  for (int q = 0; q < nf; q++)
    for (int64_t k0 = 0; k0 < N; k0 += 1 << 26) {
      const int64_t m = PetscMin((int64_t)1 << 26, N - k0);
      PetscCallMPI(MPI_Bcast(f[q] + k0, (PetscMPIInt)m, MPI_DOUBLE, 0, comm));
    }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_fpe_gather_pair(MPI_Comm comm, const SgmParticles *P, int dim, double *xg)
{
  double buf[10] = {0}; /* x of 0 and 1, g of 0 and 1 (dim each), owners of 0 and 1 */
  PetscFunctionBeginUser;
  for (int64_t i = 0; i < P->nlocal; i++) {
    const int64_t id = P->id[i];
    PetscCheck(id == 0 || id == 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
               "score \"fpe_pair\": particle id %lld outside [0, 2)", (long long)id);
    for (int d = 0; d < dim; d++)
      buf[dim * id + d] = P->x[dim * i + d], buf[2 * dim + dim * id + d] = P->g[dim * i + d];
    buf[4 * dim + id] += 1.0;
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, buf, 4 * dim + 2, MPI_DOUBLE, MPI_SUM, comm));
  PetscCheck(buf[4 * dim] == 1.0 && buf[4 * dim + 1] == 1.0, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "score \"fpe_pair\": particles owned by %g and %g ranks", buf[4 * dim],
             buf[4 * dim + 1]);
  for (int k = 0; k < 4 * dim; k++) xg[k] = buf[k];
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_fpe_scatter_pair(const SgmParticles *P, int dim, int64_t i0, int64_t count,
                          const double *s_x, const double *s_g, const double *d_x,
                          const double *d_g, double *sx, double *sg, double *divx, double *divg)
{
  for (int64_t u = 0; u < count; u++) {
    const int64_t id = P->id[i0 + u];
    for (int d = 0; d < dim; d++)
      sx[dim * u + d] = s_x[dim * id + d], sg[dim * u + d] = s_g[dim * id + d];
    divx[u] = d_x[id], divg[u] = d_g[id];
  }
}

PetscErrorCode sgm_fpe_log_outside(MPI_Comm comm, int64_t outside, int64_t evals)
{
  PetscFunctionBeginUser;
  if (evals)
    PetscCall(sgm_log(comm,
                      "epr: score \"fpe_pair\": %lld of %lld configurations outside the grid "
                      "(clamped to its edge)\n",
                      (long long)outside, (long long)evals));
  PetscFunctionReturn(PETSC_SUCCESS);
}

double sgm_fpe_bern(double z)
{
  if (fabs(z) < 1e-8) return 1.0 - 0.5 * z;
  return z / expm1(z);
}

double sgm_fpe_force_mag(const SgmAoupParams *p, const SgmPairPotential *pot, double rc, double r)
{
  const double ar = fabs(r);
  if (ar >= rc || ar == 0.0) return 0.0;
  return pot->force(ar, p->a, p->k, p->beta);
}

/* The odd pair force on a line, f(r) = sign(r) F(|r|). */
static double pair_force(const SgmAoupParams *p, const SgmPairPotential *pot, double rc, double r)
{
  const double f = sgm_fpe_force_mag(p, pot, rc, r);
  return r > 0.0 ? f : -f;
}

/* Position of r face fi (between cells fi - 1 and fi); a face within round-off of r = 0 is 0. */
static double face_r(const FpeCtx *c, int64_t fi)
{
  const double rf = c->r0 + ((double)fi - 0.5) * c->dr;
  return fabs(rf) < 1e-9 * c->dr ? 0.0 : rf;
}

/* Builds and solves the (r, h) problem on rank 0; fills the four derivative fields. */
static PetscErrorCode fpe_solve(const SgmAoupParams *p, FpeCtx *c, double *mass_edge)
{
  const SgmPairPotential *pot = sgm_pair_potential_find(p->potential);
  const int64_t nr = c->nr, nh = c->nh, N = nr * nh;
  const double Dr = 2.0 * p->eps, Dh = 0.5 * p->gamma, dr = c->dr, dh = c->dh;
  Mat A;
  Vec x;
  PetscFunctionBeginUser;
  PetscCheck(pot, PETSC_COMM_SELF, SGM_ERR_USER, "unknown pair potential '%s'", p->potential);
  const double rc = sgm_aoup_interaction_range(p, pot);
  PetscCall(MatCreateSeqAIJ(PETSC_COMM_SELF, (PetscInt)N, (PetscInt)N, 5, NULL, &A));
  /* the pinned cell: h = 0, r = the cell farthest from contact on the ring, 2a + 2 in the trap */
  const int64_t jp = nh / 2;
  int64_t ip = c->periodic ? 0 : (int64_t)floor((2.0 * p->a + 2.0 - c->r0) / dr + 0.5);
  if (ip < 0) ip = 0;
  if (ip >= nr) ip = nr - 1;
  const int64_t kp = ip * nh + jp;
  for (int64_t i = 0; i < nr; i++) {
    for (int64_t j = 0; j < nh; j++) {
      const int64_t k = i * nh + j;
      PetscInt cols[5];
      PetscScalar vals[5];
      int nc = 0;
      double diag = 0.0;
      if (k == kp) {
        PetscCall(MatSetValue(A, (PetscInt)k, (PetscInt)k, 1.0, ADD_VALUES));
        continue;
      }
      const double h = c->h0 + (double)j * dh;
      /* r faces: right (i + 1/2) and left (i - 1/2); outflux counted positive */
      for (int side = -1; side <= 1; side += 2) {
        int64_t in = i + side, jn = j;
        if (in < 0 && c->half) {
          in = 0, jn = nh - 1 - j; /* (-r, h) is (r, -h): the mirror cell */
        } else if (in < 0 || in >= nr) {
          if (!c->periodic) continue; /* zero flux */
          in = (in + nr) % nr;
        }
        /* the face's position from its index, so that both cells of a face compute the same
         * drift bit for bit (conservation: then the pinned row is implied by the others); the
         * ring's wrap face is face 0 from both sides, and the face at r = 0 is exactly 0, where
         * the odd pair force takes the mean 0 of its jump */
        int64_t fi = side > 0 ? i + 1 : i;
        if (c->periodic) fi %= nr;
        const double rf = face_r(c, fi);
        const double bf =
            2.0 * p->v0 * h - p->mu * p->trap_A * rf + 2.0 * p->mu * pair_force(p, pot, rc, rf);
        /* flux from the lower to the upper cell: (D/dr)(B(-P) p_lo - B(P) p_hi), P = b dr / D;
         * this cell's outflux across the face is side times it */
        const double P = side * bf * dr / Dr, w = Dr / (dr * dr);
        diag += w * sgm_fpe_bern(-P);
        cols[nc] = (PetscInt)(in * nh + jn), vals[nc++] = -w * sgm_fpe_bern(P);
      }
      for (int side = -1; side <= 1; side += 2) {
        const int64_t jn = j + side;
        if (jn < 0 || jn >= nh) continue;
        const double bf = -p->gamma * (c->h0 + ((double)(side > 0 ? j + 1 : j) - 0.5) * dh);
        const double P = side * bf * dh / Dh, w = Dh / (dh * dh);
        diag += w * sgm_fpe_bern(-P);
        cols[nc] = (PetscInt)(i * nh + jn), vals[nc++] = -w * sgm_fpe_bern(P);
      }
      cols[nc] = (PetscInt)k, vals[nc++] = diag;
      PetscCall(MatSetValues(A, 1, (PetscInt[]){(PetscInt)k}, nc, cols, vals, ADD_VALUES));
    }
  }
  PetscCall(MatAssemblyBegin(A, MAT_FINAL_ASSEMBLY));
  PetscCall(MatAssemblyEnd(A, MAT_FINAL_ASSEMBLY));
  PetscCall(sgm_fpe_solve_pinned(A, (PetscInt)kp, PETSC_FALSE, &x));
  const PetscScalar *pv;
  PetscCall(VecGetArrayRead(x, &pv));
  double *l, mass = 0.0, edge = 0.0, pmin = INFINITY;
  PetscCall(PetscMalloc1(N, &l));
  for (int64_t k = 0; k < N; k++) {
    mass += pv[k];
    if (pv[k] < pmin) pmin = pv[k];
  }
  PetscCheck(pmin > 0.0 && isfinite(mass), PETSC_COMM_SELF, PETSC_ERR_NOT_CONVERGED,
             "score \"fpe_pair\": the stationary density is not positive (min %g): refine the grid "
             "([epr] fpe_dr)",
             pmin);
  for (int64_t i = 0; i < nr; i++)
    for (int64_t j = 0; j < nh; j++) {
      const int64_t k = i * nh + j;
      l[k] = log(pv[k] / mass);
      if (j == 0 || j == nh - 1 || (!c->periodic && i == nr - 1)) edge += pv[k] / mass;
    }
  PetscCall(VecRestoreArrayRead(x, &pv));
  *mass_edge = edge;
  /* central differences at the centres; at a zero-flux edge the neighbour's value */
  for (int64_t i = 0; i < nr; i++)
    for (int64_t j = 0; j < nh; j++) {
      int64_t ia = i - 1, ib = i + 1, ja = j - 1, jb = j + 1;
      if (c->periodic) ia = (ia + nr) % nr, ib = ib % nr;
      const int64_t k = i * nh + j;
      if (ib >= nr) {
        c->dl_r[k] = 0.0, c->d2l_r[k] = 0.0; /* the trap's outer edge: filled below */
      } else {
        const double la = ia < 0 ? l[nh - 1 - j] : l[ia * nh + j]; /* ia < 0: the mirror cell */
        c->dl_r[k] = (l[ib * nh + j] - la) / (2.0 * dr);
        c->d2l_r[k] = (l[ib * nh + j] - 2.0 * l[k] + la) / (dr * dr);
      }
      if (ja < 0 || jb >= nh) {
        c->dl_h[k] = 0.0, c->d2l_h[k] = 0.0;
      } else {
        c->dl_h[k] = (l[i * nh + jb] - l[i * nh + ja]) / (2.0 * dh);
        c->d2l_h[k] = (l[i * nh + jb] - 2.0 * l[k] + l[i * nh + ja]) / (dh * dh);
      }
    }
  /* edges: copy the adjacent interior cell (the density there is negligible, checked above) */
  for (int64_t i = 0; i < nr; i++) {
    const int64_t a0 = i * nh, a1 = i * nh + nh - 1;
    c->dl_h[a0] = c->dl_h[a0 + 1], c->d2l_h[a0] = c->d2l_h[a0 + 1];
    c->dl_h[a1] = c->dl_h[a1 - 1], c->d2l_h[a1] = c->d2l_h[a1 - 1];
  }
  if (!c->periodic)
    for (int64_t j = 0; j < nh; j++) {
      const int64_t a1 = (nr - 1) * nh + j;
      c->dl_r[a1] = c->dl_r[a1 - nh], c->d2l_r[a1] = c->d2l_r[a1 - nh];
    }
  PetscCall(PetscFree(l));
  PetscCall(VecDestroy(&x));
  PetscCall(MatDestroy(&A));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Bilinear interpolation of a field at (r, h); clamps outside the grid and says so. */
static double interp(const FpeCtx *c, const double *f, double r, double h, int *out)
{
  double u = (r - c->r0) / c->dr, v = (h - c->h0) / c->dh;
  const double umax = (double)(c->nr - 1), vmax = (double)(c->nh - 1);
  if (!c->periodic && u > umax) *out = 1, u = umax;
  if (!c->periodic && u < 0.0) u = 0.0; /* r in [0, dr/2): the value of the first cell */
  if (v < 0.0 || v > vmax) *out = 1, v = v < 0.0 ? 0.0 : vmax;
  int64_t i0 = (int64_t)floor(u), j0 = (int64_t)floor(v);
  double wu = u - (double)i0, wv = v - (double)j0;
  if (j0 >= c->nh - 1) j0 = c->nh - 2, wv = 1.0;
  int64_t i1 = i0 + 1;
  if (c->periodic) {
    i0 = ((i0 % c->nr) + c->nr) % c->nr;
    i1 = (i0 + 1) % c->nr;
  } else if (i0 >= c->nr - 1) {
    i0 = c->nr - 2, i1 = c->nr - 1, wu = 1.0;
  }
  const int64_t j1 = j0 + 1;
  return (1.0 - wu) * ((1.0 - wv) * f[i0 * c->nh + j0] + wv * f[i0 * c->nh + j1]) +
         wu * ((1.0 - wv) * f[i1 * c->nh + j0] + wv * f[i1 * c->nh + j1]);
}

/* The score at one configuration (x1, x2), (g1, g2) of ring length L: s_x, s_g and the
 * per-particle divergences of both particles; *outside = 1 when it was clamped to the grid. */
static void fpe_point(const FpeCtx *c, const double x[2], const double g[2], double L, double sx[2],
                      double sg[2], double divx[2], double divg[2], int *outside)
{
  double r = x[0] - x[1], h = 0.5 * (g[0] - g[1]), sgn = 1.0;
  const double G = 0.5 * (g[0] + g[1]);
  if (c->periodic) r -= L * round(r / L);
  if (c->half && r < 0.0) r = -r, h = -h, sgn = -1.0; /* ℓ(r, h) = ℓ(-r, -h) */
  /* X enters only through the trap (Σ⁻¹_xx = Σ⁻¹_xg = 0 on the ring) */
  const double X = c->periodic ? 0.0 : 0.5 * (x[0] + x[1]);
  int out = 0;
  const double lr = sgn * interp(c, c->dl_r, r, h, &out);
  const double lh = sgn * interp(c, c->dl_h, r, h, &out);
  const double l2r = interp(c, c->d2l_r, r, h, &out), l2h = interp(c, c->d2l_h, r, h, &out);
  const double slx = -(c->ixx * X + c->ixg * G), slg = -(c->ixg * X + c->igg * G);
  sx[0] = slx + lr, sx[1] = slx - lr;
  sg[0] = slg + 0.5 * lh, sg[1] = slg - 0.5 * lh;
  divx[0] = divx[1] = -0.5 * c->ixx + l2r;
  divg[0] = divg[1] = -0.5 * c->igg + 0.25 * l2h;
  *outside = out;
}

static PetscErrorCode fpe_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                               int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  FpeCtx *c = (FpeCtx *)sp->ctx;
  double xg[4], s_x[2], s_g[2], d_x[2], d_g[2]; /* xg: x1, x2, g1, g2 */
  int out;
  PetscFunctionBeginUser;
  PetscCall(sgm_fpe_gather_pair(sp->comm, P, 1, xg));
  fpe_point(c, xg, xg + 2, sp->p.L, s_x, s_g, d_x, d_g, &out);
  c->outside += out, c->evals++;
  sgm_fpe_scatter_pair(P, 1, i0, count, s_x, s_g, d_x, d_g, sx, sg, divx, divg);
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode fpe_destroy(SgmScoreProvider sp)
{
  FpeCtx *c = (FpeCtx *)sp->ctx;
  PetscFunctionBeginUser;
  if (!c) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_fpe_log_outside(sp->comm, c->outside, c->evals));
  PetscCall(PetscFree4(c->dl_r, c->d2l_r, c->dl_h, c->d2l_h));
  PetscCall(PetscFree(sp->ctx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_fpe_pair_requirements(const SgmAoupParams *p, char *why, size_t len)
{
  PetscFunctionBeginUser;
  why[0] = 0;
  if (p->n != 2 || (p->dim != 1 && p->dim != 2))
    snprintf(why, len, "needs two particles in d = 1 or 2 (got n = %lld, dim = %d)",
             (long long)p->n, p->dim);
  else if (p->dim == 2 && (p->periodic || !(p->trap_A > 0.0)))
    snprintf(why, len,
             "in d = 2 needs a harmonic trap (trap_A > 0) in an open box: a periodic box breaks "
             "the rotation invariance the solver uses");
  else if (!(p->eps > 0.0) || !(p->gamma > 0.0) || !(p->mu > 0.0))
    snprintf(why, len,
             "needs eps > 0, gamma > 0 and mu > 0 (got eps = %g, gamma = %g, mu = %g): the "
             "relative coordinate must diffuse",
             p->eps, p->gamma, p->mu);
  else if (!p->periodic && !(p->trap_A > 0.0))
    snprintf(why, len,
             "needs a ring (boundary = \"periodic\") or a trap (trap_A > 0) in an open "
             "box");
  else if (p->periodic && p->trap_A != 0.0)
    snprintf(why, len, "does not take a trap on the ring (trap_A = %g)", p->trap_A);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_fpe_pair_create(SgmScoreProvider sp, SgmConfig cfg)
{
  const SgmAoupParams *p = &sp->p;
  FpeCtx *c;
  char why[256];
  double dr = 0.02, hmax = 3.5, rmax = 0.0;
  int64_t nh = 240;
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCall(sgm_score_fpe_pair_requirements(p, why, sizeof why));
  PetscCheck(!why[0], sp->comm, SGM_ERR_USER, "score \"fpe_pair\" %s", why);
  if (p->dim == 2) {
    PetscCall(sgm_score_fpe_pair2_create(sp, cfg));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  if (cfg) {
    double v_dr;
    PetscCall(sgm_config_get_real(cfg, "epr.fpe_dr", &v_dr));
    if (v_dr > 0.0) dr = v_dr;
    int64_t v;
    PetscCall(sgm_config_get_int(cfg, "epr.fpe_nh", &v));
    if (v > 0) nh = v;
    PetscCheck(nh >= 8, sp->comm, SGM_ERR_USER,
               "score \"fpe_pair\": [epr] fpe_nh = %lld must be 0 (default) or >= 8",
               (long long)nh);
    double v_h;
    PetscCall(sgm_config_get_real(cfg, "epr.fpe_hmax", &v_h));
    if (v_h > 0.0) hmax = v_h;
    PetscCall(sgm_config_get_real(cfg, "epr.fpe_rmax", &rmax));
  }
  PetscCall(PetscNew(&c));
  sp->ctx = c;
  sp->destroy = fpe_destroy;
  c->periodic = p->periodic;
  if (p->periodic) {
    c->nr = (int64_t)ceil(p->L / dr - 1e-9);
    c->dr = p->L / (double)c->nr;
    c->r0 = -0.5 * p->L + 0.5 * c->dr;
    c->igg = 1.0;
  } else {
    double cxx, cxg, cgg;
    sgm_score_trap_covariance(p->mu * p->trap_A, p->v0, p->gamma, p->eps, &cxx, &cxg, &cgg);
    const double det = cxx * cgg - cxg * cxg;
    c->ixx = cgg / det, c->ixg = -cxg / det, c->igg = cxx / det;
    /* free pair: Var r = 2 cxx; 7 standard deviations unless set */
    if (!(rmax > 0.0)) rmax = 7.0 * sqrt(2.0 * cxx) + 2.0 * p->a;
    /* the density is symmetric under (r, h) -> (-r, -h) and in the trap the contact barrier at
     * r = 0 (the particles cannot pass each other on a line) nearly splits the two halves, which
     * makes the full-line problem singular to round-off: solve on r >= 0 with the mirror
     * condition at r = 0 */
    c->half = 1;
    c->nr = (int64_t)ceil(rmax / dr - 1e-9);
    c->dr = rmax / (double)c->nr;
    c->r0 = 0.5 * c->dr;
  }
  c->nh = nh;
  c->dh = 2.0 * hmax / (double)nh;
  c->h0 = -hmax + 0.5 * c->dh;
  const int64_t N = c->nr * c->nh;
  PetscCheck(N <= 20000000, sp->comm, SGM_ERR_USER,
             "score \"fpe_pair\": %lld x %lld grid cells is too many for the direct solve; raise "
             "[epr] fpe_dr or lower fpe_nh",
             (long long)c->nr, (long long)c->nh);
  PetscCall(PetscMalloc4(N, &c->dl_r, N, &c->d2l_r, N, &c->dl_h, N, &c->d2l_h));
  PetscCallMPI(MPI_Comm_rank(sp->comm, &rank));
  double edge = 0.0, t0 = MPI_Wtime();
  PetscErrorCode ierr = PETSC_SUCCESS;
  if (rank == 0) ierr = fpe_solve(p, c, &edge);
  double *const f[4] = {c->dl_r, c->d2l_r, c->dl_h, c->d2l_h};
  PetscCall(sgm_fpe_share(sp->comm, ierr, &edge, f, 4, N));
  PetscCall(sgm_log(sp->comm,
                    "epr: score \"fpe_pair\": stationary FPE of (r, h) on %lld x %lld cells (dr = "
                    "%.4g, dh = %.4g, |h| <= %g%s) solved in %.1f s; mass in the edge cells %.2e\n",
                    (long long)c->nr, (long long)c->nh, c->dr, c->dh, hmax,
                    p->periodic ? ", r periodic" : "", MPI_Wtime() - t0, edge));
  if (edge > 1e-6)
    PetscCall(sgm_log(sp->comm,
                      "epr: warning: score \"fpe_pair\": %.2e of the density lies in the grid's "
                      "edge cells; enlarge [epr] fpe_hmax%s\n",
                      edge, p->periodic ? "" : " or fpe_rmax"));
  sp->eval = fpe_eval;
  sp->range = 0.0;
  PetscFunctionReturn(PETSC_SUCCESS);
}
