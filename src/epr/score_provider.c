/* Score providers: the registry and the exact Gaussian score of trapped non-interacting AOUPs.
 *
 * Owns: name -> create registry (a learned network registers itself here later, so the `epr`
 * stage never branches on the kind of score) and "exact_trap". For k = 0 every particle and every
 * Cartesian component is an independent 2-variable linear SDE whose stationary law is Gaussian with
 * the covariance of sgm_score_trap_covariance (docs/derivations.md, "Exact score and EPR of AOUPs
 * in a harmonic trap"); its score is s = -Σ⁻¹ z, z = (x, g), with constant divergences. Trade-off:
 * the provider reads only the particle's own (x, g) and ignores the neighbourhood, which is the
 * exact answer only without interactions; it refuses k != 0 rather than return a wrong score.
 * ε = 0 is accepted when v0 != 0 (the Gaussian stays non-degenerate, det Σ = v0²γ/(μA(μA+γ)²)).
 */
#include "sgm/score_provider.h"
#include "sgm/core.h"
#include "sgm/score_model.h"

#include <string.h>

typedef struct {
  char name[32];
  SgmScoreCreateFn create;
  const char *doc;
} Entry;

static Entry registry[16];
static int nregistry;

PetscErrorCode sgm_score_provider_register(const char *name, SgmScoreCreateFn create,
                                           const char *doc)
{
  PetscFunctionBeginUser;
  for (int i = 0; i < nregistry; i++)
    if (!strcmp(registry[i].name, name)) {
      PetscCheck(registry[i].create == create, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE,
                 "score provider %s registered twice with different functions", name);
      PetscFunctionReturn(PETSC_SUCCESS);
    }
  PetscCheck(nregistry < 16, PETSC_COMM_SELF, PETSC_ERR_MEM, "too many score providers");
  PetscCheck(strlen(name) < sizeof registry[0].name, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ,
             "score provider name too long: %s", name);
  PetscCall(PetscStrncpy(registry[nregistry].name, name, sizeof registry[0].name));
  registry[nregistry].create = create;
  registry[nregistry].doc = doc;
  nregistry++;
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_score_trap_covariance(double muA, double v0, double gamma, double eps, double *cxx,
                               double *cxg, double *cgg)
{
  /* A Σ + Σ Aᵀ + 2D = 0 entry by entry: (g,g) -2γ cgg + 2γ = 0; (x,g) -(μA + γ) cxg + v0 cgg = 0;
   * (x,x) -2μA cxx + 2 v0 cxg + 2ε = 0. */
  *cgg = 1.0;
  *cxg = v0 / (muA + gamma);
  *cxx = (eps + v0 * (*cxg)) / muA;
}

int sgm_score_trap_exact(const SgmAoupParams *p, SgmTrapExact *e)
{
  const double a = p->mu * p->trap_A, d = (double)p->dim;
  memset(e, 0, sizeof *e);
  if (!(a > 0.0) || !(p->gamma > 0.0) || !(p->eps >= 0.0)) return -1;
  if (p->eps == 0.0 && p->v0 == 0.0) return -1;
  sgm_score_trap_covariance(a, p->v0, p->gamma, p->eps, &e->cxx, &e->cxg, &e->cgg);
  /* det = cxx - cxg² = ε/μA + v0²γ/(μA(μA+γ)²) written without cancellation */
  const double s = a + p->gamma;
  e->det = p->eps / a + p->v0 * p->v0 * p->gamma / (a * s * s);
  if (!(e->det > 0.0)) return -1;
  e->w = p->v0 * p->gamma / s;
  /* v_x = -w s_g, v_g = w s_x and E[s sᵀ] = Σ⁻¹ = [[cgg, -cxg], [-cxg, cxx]] / det */
  const double w2 = e->w * e->w;
  e->tot_x = p->eps > 0.0 ? d * w2 * e->cxx / (p->eps * e->det) : 0.0;
  e->tot_g = d * w2 * e->cgg / (p->gamma * e->det);
  e->tot = e->tot_x + e->tot_g;
  e->div_sx = -d * e->cgg / e->det;
  e->div_sg = -d * e->cxx / e->det;
  e->sys_x = -a * d - p->eps * e->div_sx;
  e->sys_g = -p->gamma * d - p->gamma * e->div_sg;
  return 0;
}

typedef struct {
  double ixx, ixg, igg; /* Σ⁻¹ per component */
  double div_sx, div_sg;
} TrapCtx;

static PetscErrorCode trap_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  const TrapCtx *c = (const TrapCtx *)sp->ctx;
  const int dim = P->dim;
  PetscFunctionBeginUser;
  for (int64_t u = 0; u < count; u++) {
    const double *x = P->x + (i0 + u) * dim, *g = P->g + (i0 + u) * dim;
    for (int k = 0; k < dim; k++) {
      sx[u * dim + k] = -(c->ixx * x[k] + c->ixg * g[k]);
      sg[u * dim + k] = -(c->ixg * x[k] + c->igg * g[k]);
    }
    divx[u] = c->div_sx;
    divg[u] = c->div_sg;
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode trap_destroy(SgmScoreProvider sp)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree(sp->ctx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode trap_create(SgmScoreProvider sp, SgmConfig cfg)
{
  const SgmAoupParams *p = &sp->p;
  SgmTrapExact e;
  TrapCtx *c;
  (void)cfg;
  PetscFunctionBeginUser;
  PetscCheck(!p->periodic && p->trap_A > 0.0, sp->comm, SGM_ERR_USER,
             "score \"exact_trap\" needs an open box with trap_A > 0 (got %s, trap_A = %g)",
             p->periodic ? "periodic" : "open", p->trap_A);
  PetscCheck(p->k == 0.0, sp->comm, SGM_ERR_USER,
             "score \"exact_trap\" is exact only for non-interacting particles: set [system] k = 0 "
             "(got %g)",
             p->k);
  PetscCheck(sgm_score_trap_exact(p, &e) == 0, sp->comm, SGM_ERR_USER,
             "score \"exact_trap\": no non-degenerate stationary Gaussian for mu A = %g, gamma = "
             "%g, eps = %g, v0 = %g (need mu A > 0, gamma > 0, eps >= 0, and v0 != 0 if eps = 0)",
             p->mu * p->trap_A, p->gamma, p->eps, p->v0);
  PetscCall(PetscNew(&c));
  c->ixx = e.cgg / e.det;
  c->ixg = -e.cxg / e.det;
  c->igg = e.cxx / e.det;
  c->div_sx = e.div_sx;
  c->div_sg = e.div_sg;
  sp->ctx = c;
  sp->eval = trap_eval;
  sp->destroy = trap_destroy;
  sp->range = 0.0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode register_builtin(void)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_score_provider_register(
      "exact_trap", trap_create,
      "Gaussian stationary score of non-interacting AOUPs in a harmonic trap (k = 0)"));
  PetscCall(sgm_score_provider_register(
      "fpe_pair", sgm_score_fpe_pair_create,
      "two interacting AOUPs in d = 1 (ring or trap): the stationary FPE of their relative "
      "coordinates solved on a grid"));
  PetscCall(sgm_score_provider_register("model", sgm_score_model_create,
                                        "trained local transformer (model.h5)"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_provider_list(char *buf, size_t len)
{
  size_t used = 0;
  PetscFunctionBeginUser;
  PetscCall(register_builtin());
  if (len) buf[0] = 0;
  for (int i = 0; i < nregistry && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "|" : "", registry[i].name);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_provider_create(MPI_Comm comm, const char *name, const SgmAoupParams *p,
                                         SgmConfig cfg, SgmScoreProvider *sp)
{
  SgmScoreProvider s;
  const Entry *e = NULL;
  char list[256];
  PetscFunctionBeginUser;
  PetscCall(register_builtin());
  for (int i = 0; i < nregistry; i++)
    if (!strcmp(registry[i].name, name)) e = &registry[i];
  PetscCall(sgm_score_provider_list(list, sizeof list));
  PetscCheck(e, comm, SGM_ERR_USER, "[epr] score = \"%s\" is not a registered score (%s)", name,
             list);
  PetscCall(PetscNew(&s));
  s->comm = comm;
  PetscCall(PetscStrncpy(s->name, name, sizeof s->name));
  s->p = *p;
  /* a create function that fails may already have set ctx and destroy: release through the
   * provider's own destroy (which must accept a partly built ctx), then the struct */
  PetscErrorCode ierr = e->create(s, cfg);
  if (ierr) {
    PetscCall(sgm_score_provider_destroy(&s));
    PetscCall(ierr);
  }
  if (!s->eval) {
    PetscCall(sgm_score_provider_destroy(&s));
    SETERRQ(comm, PETSC_ERR_PLIB, "score provider %s set no eval function", name);
  }
  *sp = s;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_provider_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                       int64_t count, double *sx, double *sg, double *divx,
                                       double *divg)
{
  PetscFunctionBeginUser;
  PetscAssert(i0 >= 0 && i0 + count <= P->nlocal, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
              "batch [%lld, %lld) outside the %lld owned particles", (long long)i0,
              (long long)(i0 + count), (long long)P->nlocal);
  PetscCall(sp->eval(sp, P, i0, count, sx, sg, divx, divg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_provider_destroy(SgmScoreProvider *sp)
{
  PetscFunctionBeginUser;
  if (!sp || !*sp) PetscFunctionReturn(PETSC_SUCCESS);
  if ((*sp)->destroy) PetscCall((*sp)->destroy(*sp));
  PetscCall(PetscFree(*sp));
  PetscFunctionReturn(PETSC_SUCCESS);
}
