/* The `epr` stage: velocity field, per-particle entropy production, diagnostics and spatial maps
 * (paper 002, eqs. 6, 15-18, 21, 23; §4.5, §6.4).
 *
 * Owns: the per-particle formulas (a plain kernel over flat arrays), the divergence of the drift
 * ∇_{x_i}·b_x^i including pair forces, and the stage that reads trajectory frames, evaluates a
 * score provider (score_provider.h) and writes epr.h5/epr.xdmf and fields.h5/fields.xdmf
 * (docs/formats.md). Registration (src/app/register.c):
 *   sgm_schema_register(&sgm_table_epr);
 *   sgm_stage_register("epr", sgm_stage_epr, "...");
 */
#ifndef SGM_EPR_H
#define SGM_EPR_H

#include "sgm/aoup.h"
#include "sgm/run.h"
#include "sgm/schema.h"
#include "sgm/nn_io.h"
#include "sgm/score_provider.h"

extern const SgmTableSpec sgm_table_epr;

/// Collective: the `epr` stage.
PetscErrorCode sgm_stage_epr(SgmRun *run);
/// Input check of the [epr] table (registered with sgm_schema_register_check): the system
/// requirements of the chosen score provider when the run has the epr stage. Not collective.
PetscErrorCode sgm_epr_config_check(SgmConfig cfg, SgmProblems pb);

/// Per-particle scalar outputs of sgm_epr_particle, in this order (X-macro: enum + names).
#define SGM_EPR_Q_LIST(X)                                                                          \
  X(TOT, "epr_total")       /* |v_x|²/ε + |v_g|²/γ (eq. 18), 1/time */                         \
  X(TOT_X, "epr_total_x")   /* |v_x|²/ε (0 when ε = 0) */                                       \
  X(TOT_G, "epr_total_g")   /* |v_g|²/γ */                                                       \
  X(SYS, "epr_system")      /* ∇_{x_i}·v_x^i + ∇_{g_i}·v_g^i (eq. 16) */                     \
  X(SYS_X, "epr_system_x")  /* ∇_{x_i}·v_x^i */                                                 \
  X(SYS_G, "epr_system_g")  /* ∇_{g_i}·v_g^i */                                                 \
  X(FPE, "fpe_residual")    /* ∇_i·v^i + v^i·s^i (eq. 23 per particle) */                      \
  X(SCORE_IBP, "score_ibp") /* |s^i|² + ∇_i·s^i */                                             \
  X(VS, "v_dot_s")          /* v^i·s^i */
typedef enum {
#define SGM_X(e, s) SGM_EPR_Q_##e,
  SGM_EPR_Q_LIST(SGM_X)
#undef SGM_X
      SGM_EPR_NQ
} SgmEprQuantity;
/// Dataset name of quantity q ("epr_total", ...).
const char *sgm_epr_quantity_name(int q);

/// Phase classes of the interface analysis (MIPS, paper 002 §7): by the local packing fraction
/// phi_i of observables.h (neighbours within [epr] local_radius · a).
typedef enum {
  SGM_EPR_CLASS_DILUTE = 0,    /* phi_i < phi_dilute */
  SGM_EPR_CLASS_INTERFACE = 1, /* phi_dilute <= phi_i < phi_dense */
  SGM_EPR_CLASS_DENSE = 2,     /* phi_i >= phi_dense (dense bulk) */
  SGM_EPR_NCLASS = 3
} SgmEprClass;
/// Class names "dilute", "interface", "dense" (metrics.json suffixes).
extern const char *const sgm_epr_class_names[SGM_EPR_NCLASS];
/// The class of local packing fraction phi for thresholds phi_dilute <= phi_dense. Pure.
static inline int sgm_epr_phase_class(double phi, double phi_dilute, double phi_dense)
{
  return phi < phi_dilute ? SGM_EPR_CLASS_DILUTE
                          : (phi < phi_dense ? SGM_EPR_CLASS_INTERFACE : SGM_EPR_CLASS_DENSE);
}

/// Coefficients of the AOUP SDE that enter v = b - D s: b_x = drift_x + v0 g, D_x = ε;
/// b_g = -γ g, D_g = γ.
typedef struct {
  double v0, gamma, eps;
} SgmEprCoeffs;

/// One particle in d = dim dimensions. Inputs: g[dim]; drift_x[dim] = μF - μA x (the engine's
/// part.f); sx[dim], sg[dim] the score; div_sx = ∇_{x_i}·s_x^i, div_sg = ∇_{g_i}·s_g^i;
/// div_bx = ∇_{x_i}·b_x^i (sgm_epr_drift_divergence). Outputs: vx[dim], vg[dim] (eq. 6) and
/// q[SGM_EPR_NQ]. With ε = 0 the x part of the total EPR is 0 (Fig. 8 convention). Pure.
void sgm_epr_particle(const SgmEprCoeffs *c, int dim, const double *g, const double *drift_x,
                      const double *sx, const double *sg, double div_sx, double div_sg,
                      double div_bx, double *vx, double *vg, double *q);

/// The D-weighted score-matching terms of one particle, for the score-error estimate of the `epr`
/// stage: t[0] = ε (|s_x|² + 2 ∇_{x_i}·s_x^i), t[1] = γ (|s_g|² + 2 ∇_{g_i}·s_g^i) (the summands of
/// eq. 22 weighted by D; t[0] = 0 when ε = 0) and t[2] = ∇_i·b^i = div_bx - γ d. Over the
/// stationary density, E[∇·v] = 0 gives E|s|²_D = -E[∇·b] for the exact score s, so for any
/// score ŝ E[t0 + t1 - t2] (summed over particles) = E|ŝ - s|²_D: the score's squared error
/// without knowing s (docs/formats.md, "metrics.json"). Pure.
#define SGM_EPR_NSM 3
void sgm_epr_score_terms(const SgmEprCoeffs *c, int dim, const double *sx, const double *sg,
                         double div_sx, double div_sg, double div_bx, double t[SGM_EPR_NSM]);

/// Derivative df/dr of a registered pair-force magnitude: analytic for "harmonic" (-k inside 2a)
/// and "softplus" (-k σ(β(2a - r))), a central finite difference of pot->force otherwise. Pure.
double sgm_epr_pair_dforce(const SgmPairPotential *pot, double r, double a, double k, double beta);

/// Attention rollout (paper 002 eq. 93) of token `row`: r = e_rowᵀ Ã_{L-1} ⋯ Ã_0 with
/// Ã_l = (I + A_l)/2, A (L, T, T) the head-averaged, row-stochastic attention of block l (row:
/// query). r[T] sums to 1. Pure (src/epr/epr_attention.c).
void sgm_epr_attention_rollout(int L, int T, const float *A, int row, double *r);

/// Collective: the attention part of the `epr` stage: for [epr] attention_ids on
/// attention_frames (empty: default_frame) of the trajectory, the K-neighbour windows, per-layer
/// head-averaged attention of model.h5 and the rollout, into attention.h5 (docs/formats.md).
/// Nothing when attention_ids is empty. s is an engine of the run's system (its state is reset).
PetscErrorCode sgm_epr_attention_stage(SgmRun *run, SgmAoup s, const char *traj, const char *group,
                                       int64_t default_frame);

/// Collective: loads the weights of model.h5 at path into p as [epr] weights says (auto: the EMA
/// /optimizer/ema when the file has it, else the trained parameters; ema; raw), after the
/// architecture check of sgm_nn_load; logs which (src/epr/epr_weights.c).
PetscErrorCode sgm_epr_load_weights(MPI_Comm comm, SgmConfig cfg, const char *path, SgmParams *p,
                                    int narch, const SgmNNAttr *arch);

/// Collective: the probability-flow part of the `epr` stage (eq. 7, src/epr/epr_flow.c): from
/// each of [epr] flow_frames, dR/dt = v(R) with v = b - D s from provider sp, integrated with
/// PETSc TS (adaptive TSRK, options prefix flow_) to flow_time, flow_outputs + 1 snapshots into
/// flow_f<frame>.h5 (H5MD) + .xdmf. Nothing when flow_frames is empty. s's state is reset.
PetscErrorCode sgm_epr_flow_stage(SgmRun *run, SgmAoup s, SgmScoreProvider sp, const char *traj,
                                  const char *group);

/// Not collective: ∇_{x_i}·b_x^i for every owned particle of s after sgm_aoup_forces (ghosts and
/// cell list current): -μ A d + μ Σ_j [f'(r_ij) + (d - 1) f(r_ij)/r_ij] over partners within the
/// interaction range, summed in partner-id order. div[s->part.nlocal], units 1/time.
PetscErrorCode sgm_epr_drift_divergence(SgmAoup s, double *div);

#endif
