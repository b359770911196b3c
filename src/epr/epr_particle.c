/* Per-particle EPR formulas and the divergence of the AOUP drift.
 *
 * Owns: v = b - D s per particle (eq. 6), the total-EPR parts |v_x|²/ε, |v_g|²/γ (eq. 18), the
 * system EPR ∇_i·v^i = ∇·b - D ∇·s per particle (eq. 16) and the per-particle summands of the
 * §4.5 diagnostics. These are plain functions over flat arrays so a unit test can check them on
 * hand-built states. The drift divergence walks the engine's own cell list with the same stencil
 * and cutoff as the force loop, so the two cannot disagree on who interacts; partner terms are
 * summed in partner-id order (as forces are), which keeps the result independent of the rank
 * count. The pair term uses ∇_x·(f(r) x/r) = f'(r) + (d - 1) f(r)/r; f' is analytic for the
 * built-in potentials. A truncated softplus force jumps at the cutoff; the delta function of that
 * jump is not included (it is a surface term of weight ~ f(rc) = k log(1 + e^{-cut})/β).
 */
#include "sgm/epr.h"

#include <math.h>
#include <string.h>

const char *sgm_epr_quantity_name(int q)
{
  static const char *names[] = {
#define SGM_X(e, s) s,
      SGM_EPR_Q_LIST(SGM_X)
#undef SGM_X
  };
  return q >= 0 && q < SGM_EPR_NQ ? names[q] : "?";
}

void sgm_epr_particle(const SgmEprCoeffs *c, int dim, const double *g, const double *drift_x,
                      const double *sx, const double *sg, double div_sx, double div_sg,
                      double div_bx, double *vx, double *vg, double *q)
{
  double vx2 = 0, vg2 = 0, vs = 0, s2 = 0;
  for (int k = 0; k < dim; k++) {
    vx[k] = drift_x[k] + c->v0 * g[k] - c->eps * sx[k];
    vg[k] = -c->gamma * g[k] - c->gamma * sg[k];
    vx2 += vx[k] * vx[k];
    vg2 += vg[k] * vg[k];
    vs += vx[k] * sx[k] + vg[k] * sg[k];
    s2 += sx[k] * sx[k] + sg[k] * sg[k];
  }
  q[SGM_EPR_Q_TOT_X] = c->eps > 0.0 ? vx2 / c->eps : 0.0;
  q[SGM_EPR_Q_TOT_G] = vg2 / c->gamma;
  q[SGM_EPR_Q_TOT] = q[SGM_EPR_Q_TOT_X] + q[SGM_EPR_Q_TOT_G];
  q[SGM_EPR_Q_SYS_X] = div_bx - c->eps * div_sx;
  q[SGM_EPR_Q_SYS_G] = -c->gamma * (double)dim - c->gamma * div_sg;
  q[SGM_EPR_Q_SYS] = q[SGM_EPR_Q_SYS_X] + q[SGM_EPR_Q_SYS_G];
  q[SGM_EPR_Q_VS] = vs;
  q[SGM_EPR_Q_SCORE_IBP] = s2 + div_sx + div_sg;
  q[SGM_EPR_Q_FPE] = q[SGM_EPR_Q_SYS] + vs;
}

void sgm_epr_score_terms(const SgmEprCoeffs *c, int dim, const double *sx, const double *sg,
                         double div_sx, double div_sg, double div_bx, double t[SGM_EPR_NSM])
{
  double sx2 = 0, sg2 = 0;
  for (int k = 0; k < dim; k++) sx2 += sx[k] * sx[k], sg2 += sg[k] * sg[k];
  t[0] = c->eps > 0.0 ? c->eps * (sx2 + 2.0 * div_sx) : 0.0;
  t[1] = c->gamma * (sg2 + 2.0 * div_sg);
  t[2] = div_bx - c->gamma * (double)dim;
}

double sgm_epr_pair_dforce(const SgmPairPotential *pot, double r, double a, double k, double beta)
{
  if (pot->force == sgm_force_harmonic) return r < 2.0 * a ? -k : 0.0;
  if (pot->force == sgm_force_softplus) {
    const double y = beta * (2.0 * a - r);
    /* logistic σ(y) without overflow */
    return -k * (y >= 0.0 ? 1.0 / (1.0 + exp(-y)) : exp(y) / (1.0 + exp(y)));
  }
  const double h = 1e-6 * (r > 1.0 ? r : 1.0);
  return (pot->force(r + h, a, k, beta) - pot->force(r - h, a, k, beta)) / (2.0 * h);
}

PetscErrorCode sgm_epr_drift_divergence(SgmAoup s, double *div)
{
  const int dim = s->p.dim;
  const SgmParticles *P = &s->part;
  const double rc2 = s->rc * s->rc, L = s->p.L, halfL = 0.5 * s->p.L;
  const double a = s->p.a, k = s->p.k, beta = s->p.beta, mu = s->p.mu;
  const double trap = -mu * s->p.trap_A * (double)dim;
  const int periodic = s->p.periodic;
  const SgmCells *C = &s->cells;
  int64_t *nid = NULL;
  double *nval = NULL;
  size_t cap = 0;

  PetscFunctionBeginUser;
  if (k == 0.0 || P->nlocal == 0) {
    for (int64_t i = 0; i < P->nlocal; i++) div[i] = trap;
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  for (int64_t i = 0; i < P->nlocal; i++) {
    const double *xi = P->x + i * dim, *xbi = P->xb + i * dim;
    const int64_t ci = C->cell[i], cx = ci % C->nc[0], cy = ci / C->nc[0];
    const int64_t y0 = cy > 0 ? cy - 1 : 0, y1 = cy + 1 < C->nc[1] ? cy + 1 : C->nc[1] - 1;
    const int64_t x0 = cx > 0 ? cx - 1 : 0, x1 = cx + 1 < C->nc[0] ? cx + 1 : C->nc[0] - 1;
    size_t ncand = 0, nnb = 0;
    for (int64_t yy = y0; yy <= y1; yy++)
      ncand += (size_t)(C->start[x1 + 1 + yy * C->nc[0]] - C->start[x0 + yy * C->nc[0]]);
    if (ncand > cap) {
      PetscCall(PetscFree2(nid, nval));
      cap = 2 * ncand;
      PetscCall(PetscMalloc2(cap, &nid, cap, &nval));
    }
    for (int64_t yy = y0; yy <= y1; yy++) {
      const int64_t q0 = C->start[x0 + yy * C->nc[0]], q1 = C->start[x1 + 1 + yy * C->nc[0]];
      for (int64_t q = q0; q < q1; q++) {
        const int64_t j = C->order[q];
        const double *xj = P->x + j * dim;
        double r2 = 0;
        for (int c = 0; c < dim; c++) {
          const double d = periodic ? sgm_min_image(xi[c] - xj[c], L) : xi[c] - xj[c];
          r2 += d * d;
        }
        if (r2 >= rc2 || j == i || r2 == 0.0) continue;
        if (periodic) {
          const double *xbj = P->xb + j * dim;
          int far = 0;
          for (int c = 0; c < dim; c++) far |= fabs(xbi[c] - xbj[c]) >= halfL;
          if (far) continue;
        }
        const double r = sqrt(r2);
        nid[nnb] = P->id[j];
        nval[nnb] = sgm_epr_pair_dforce(s->pot, r, a, k, beta) +
                    (double)(dim - 1) * s->pot->force(r, a, k, beta) / r;
        nnb++;
      }
    }
    for (size_t u = 1; u < nnb; u++) {
      const int64_t idu = nid[u];
      const double vu = nval[u];
      size_t v = u;
      while (v > 0 && nid[v - 1] > idu) nid[v] = nid[v - 1], nval[v] = nval[v - 1], v--;
      nid[v] = idu, nval[v] = vu;
    }
    double sum = 0.0;
    for (size_t u = 0; u < nnb; u++) sum += nval[u];
    div[i] = trap + mu * sum;
  }
  PetscCall(PetscFree2(nid, nval));
  PetscFunctionReturn(PETSC_SUCCESS);
}
