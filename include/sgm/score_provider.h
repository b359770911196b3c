/* Score providers: where the `epr` stage gets s = ∇ log ρ and its exact divergence.
 *
 * Owns: the provider interface and its registry (name -> create function). A provider evaluates,
 * for a batch of owned particles [i0, i0 + count) of an SgmParticles whose locals and ghosts are
 * current (positions, orientations of the neighbourhood available), the per-particle score
 * s_x^i, s_g^i (d components each) and the exact divergences ∇_{x_i}·s_x^i and ∇_{g_i}·s_g^i.
 * "exact_trap" (this file's implementation) is the Gaussian stationary law of non-interacting
 * AOUPs in a harmonic trap; a learned network (nn module) plugs in as another registered provider
 * whose context holds the model, with no change to the stage.
 */
#ifndef SGM_SCORE_PROVIDER_H
#define SGM_SCORE_PROVIDER_H

#include "sgm/aoup.h"
#include "sgm/config.h"

typedef struct SgmScoreProvider_ *SgmScoreProvider;

/// Evaluates a batch: particles [i0, i0 + count) of P (owned: i0 + count <= P->nlocal); P's ghosts
/// are current. Outputs: sx[count*dim], sg[count*dim] (units 1/length and 1), divx[count],
/// divg[count] (∇_{x_i}·s_x^i, ∇_{g_i}·s_g^i). Not collective (rank-local: kernels never
/// communicate).
typedef PetscErrorCode (*SgmScoreEvalFn)(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                         int64_t count, double *sx, double *sg, double *divx,
                                         double *divg);
typedef PetscErrorCode (*SgmScoreDestroyFn)(SgmScoreProvider sp);

struct SgmScoreProvider_ {
  MPI_Comm comm;
  char name[32];
  SgmAoupParams p;           /* the system the score belongs to */
  double range;              /* neighbourhood the provider needs around a particle (0: none) */
  SgmScoreEvalFn eval;       /* set by the create function */
  SgmScoreDestroyFn destroy; /* frees ctx; may be NULL */
  void *ctx;
};

/// Fills sp->eval, sp->destroy, sp->ctx, sp->range for the system sp->p. `cfg` (may be NULL)
/// gives provider options (e.g. a model path). Collective on sp->comm. On an error return the
/// caller calls sp->destroy (if set) before freeing sp, so set destroy together with ctx and make
/// it accept a partly built ctx.
typedef PetscErrorCode (*SgmScoreCreateFn)(SgmScoreProvider sp, SgmConfig cfg);

/// Registers a provider kind (at most 16; re-registering the same name and function is a
/// no-op). Not collective.
PetscErrorCode sgm_score_provider_register(const char *name, SgmScoreCreateFn create,
                                           const char *doc);
/// Registered kinds: "a|b|..." into buf (for messages and docs). Not collective.
PetscErrorCode sgm_score_provider_list(char *buf, size_t len);
/// Collective: creates provider `name` for system p. Unknown name: SGM_ERR_USER.
PetscErrorCode sgm_score_provider_create(MPI_Comm comm, const char *name, const SgmAoupParams *p,
                                         SgmConfig cfg, SgmScoreProvider *sp);
/// Not collective: evaluates a batch (see SgmScoreEvalFn).
PetscErrorCode sgm_score_provider_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                       int64_t count, double *sx, double *sg, double *divx,
                                       double *divg);
/// Frees; accepts NULL and NULLs the handle. Not collective.
PetscErrorCode sgm_score_provider_destroy(SgmScoreProvider *sp);

/// Stationary covariance of one Cartesian component of a non-interacting trapped AOUP, the
/// solution of A Σ + Σ Aᵀ + 2 D = 0 with A = [[-μA, v0], [0, -γ]], D = diag(ε, γ):
/// Σ = [[cxx, cxg], [cxg, cgg]] (units length², length, 1). Pure.
void sgm_score_trap_covariance(double muA, double v0, double gamma, double eps, double *cxx,
                               double *cxg, double *cgg);

/// Exact per-particle stationary values for the trap (sums over the d components):
typedef struct {
  double cxx, cxg, cgg, det; /* Σ per component and det Σ */
  double w;                  /* A Σ + D = [[0, w], [-w, 0]] (antisymmetric) */
  double tot, tot_x, tot_g; /* E|v^i|²_{D⁻¹} and its x and g parts (1/time); tot_x = 0 if ε = 0 */
  double sys_x, sys_g;      /* ∇_{x_i}·v_x^i and ∇_{g_i}·v_g^i (constants; they sum to 0) */
  double div_sx, div_sg;    /* ∇_{x_i}·s_x^i, ∇_{g_i}·s_g^i (constants) */
} SgmTrapExact;
/// Fills e for the trap parameters (μ, A, v0, γ, ε, dim of p). Returns 0, or -1 when the
/// stationary Gaussian is degenerate or absent (μA <= 0, γ <= 0, ε < 0, or ε = v0 = 0). Pure.
int sgm_score_trap_exact(const SgmAoupParams *p, SgmTrapExact *e);

/// "fpe_pair" (score_fpe.c, score_fpe2.c): the stationary score of two interacting AOUPs in d = 1
/// (ring or trap) or d = 2 (trap) from the FPE of their relative coordinates solved on a grid.
/// Writes to `why` (empty if none) the reason the system p does not qualify. Pure.
PetscErrorCode sgm_score_fpe_pair_requirements(const SgmAoupParams *p, char *why, size_t len);
/// The create function of "fpe_pair" (registered by the registry). Collective.
PetscErrorCode sgm_score_fpe_pair_create(SgmScoreProvider sp, SgmConfig cfg);

#endif
