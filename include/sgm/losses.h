/* Training losses of the per-particle score (paper 002): the denoising loss (eq. 88 in the form of
 * App. F.8) and the score-matching loss (eq. 22) with the exact per-particle divergence.
 *
 * Owns: the loss settings, the scratch arrays of one evaluation (gathered windows, outputs and
 * their cotangents, per-particle noise), sized at creation for the model's max_batch, and the
 * evaluation over a list of window centres in micro-batches of at most max_batch. The model's
 * output of one centre is [s_x (D) | s_g (D)] with only the learned parts present (out_dim = D
 * when one part is learned, 2D for both).
 *
 *   denoise: every particle's x (when noise_x) and g are perturbed by +-sigma xi (xi standard
 *            normal, a pure function of (seed, SGM_RNG_DENOISE, global id, step)); the windows
 *            are the neighbour lists of the clean frame with perturbed coordinates. Per centre c
 *            and sign s, eq. (88) with the target -s xi_c / sigma (eq. 87) less its
 *            parameter-independent term |xi_c|^2 / sigma^2:
 *              l_s = |shat|^2 + 2 s shat . xi_c / sigma,   shat = shat(r + s sigma xi),
 *            and l = (l_+ + l_-)/2 with antithetic pairs, l = l_+ without. Gradients are those of
 *            eq. (88); values estimate the score-matching loss (22) (E l ~ E|shat - s|^2 - E|s|^2)
 *            and can be compared with `sm`.
 *   sm:      l = |shat|^2 + 2 (div_{x_c} shat_x + div_{g_c} shat_g) over the learned parts,
 *            divergences exact through the model's divergence API (forward-mode JVPs).
 * Boltzmann-informed parameterisation (App. F.3.2, g part only): shat_g = -g_c + N_g, with N_g
 * the network (then div_g shat_g = -D + div_g N_g).
 * The FPE residual (eq. 24) and the composite loss (eq. 25) exist for the full-state networks
 * only (sgm_full_score_loss in score_model.h; kinds "mlp" and "transformer"): the residual squares
 * a sum over all particles, which the per-particle windows do not decompose; sgm_loss_create
 * refuses them, and the transition loss too (eq. 88 in the form of App. D.3: Euler-Maruyama
 * transitions of the whole system, sgm_full_score_loss_targets; full-state kinds only).
 * Nothing here communicates.
 */
#ifndef SGM_LOSSES_H
#define SGM_LOSSES_H

#include "sgm/nn_models.h"
#include "sgm/windows.h"

#define SGM_LOSS_LIST(X)                                                                           \
  X(DENOISE, "denoise")                                                                            \
  X(SM, "sm")                                                                                      \
  X(FPE, "fpe")                                                                                    \
  X(COMPOSITE, "composite")                                                                        \
  X(TRANSITION, "transition")

typedef enum {
#define SGM_X(e, s) SGM_LOSS_##e,
  SGM_LOSS_LIST(SGM_X)
#undef SGM_X
      SGM_LOSS_NKINDS
} SgmLossKind;

typedef struct {
  SgmLossKind kind;
  int dim;         /* D of positions and orientations */
  int learn_x;     /* the model outputs s_x */
  int learn_g;     /* the model outputs s_g */
  double sigma;    /* denoise: noise standard deviation (length for x, 1 for g) */
  int noise_x;     /* denoise: perturb positions too (App. F.8); required when learn_x */
  int antithetic;  /* denoise: +- pairs of the same noise */
  int boltzmann_g; /* s_g = -g_c + N_g */
  uint64_t seed;
  double lambda1, lambda2; /* composite: weights of the sm and FPE terms (eq. 25); fpe: lambda2 */
} SgmLossConfig;

typedef struct SgmLoss_ *SgmLoss;

/// Kind from its name ("denoise", "sm", "fpe", "composite", "transition"); SGM_ERR_USER listing the
/// names when unknown.
PetscErrorCode sgm_loss_kind_from_name(const char *name, SgmLossKind *kind);
/// Name of a kind.
const char *sgm_loss_name(SgmLossKind kind);
/// Loss for the local transformer m (windows of K neighbours, at most max_batch centres per
/// forward, out_dim = D (learn_x + learn_g)). Checks the settings (SGM_ERR_USER). Not collective.
PetscErrorCode sgm_loss_create(const SgmLossConfig *cfg, SgmNnTransformer m, int K, int max_batch,
                               SgmLoss *l);
/// Frees; accepts NULL and NULLs the handle.
PetscErrorCode sgm_loss_destroy(SgmLoss *l);
/// Not collective. For the B local centres (indices < nlocal of w's last build) ACCUMULATES into
/// the model's gradient slab the gradient of the SUM over centres of the per-centre loss, and
/// returns that sum (accumulated in double) in *loss_sum. `step` keys the denoising noise.
/// Allocates only when the number of locals + ghosts exceeds every earlier call's.
PetscErrorCode sgm_loss_eval(SgmLoss l, SgmWindows w, int64_t B, const int64_t *centres,
                             int64_t step, double *loss_sum);

#endif
