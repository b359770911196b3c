/* The learned score provider "model" and the model construction it shares with `train`.
 *
 * Owns: the declaration of the [model]-table -> network construction (implemented in
 * src/score/train.c, used by the train stage and by the "model" score provider, so that the
 * network evaluated by `epr` is built exactly as it was trained and its model.h5 architecture
 * attributes match), the full-state score networks ([model] kind = "mlp" and "transformer",
 * src/score/full_score.c: evaluation with exact per-particle divergences and the sm / FPE /
 * composite losses, eqs. 22, 24, 25), and the create function of the "model" provider
 * (src/epr/score_model.c).
 *
 * Kinds ([model] kind):
 *   local_transformer  the per-particle transformer over K-nearest-neighbour windows (App. F.6);
 *                      one batch element is one centre particle.
 *   mlp                an MLP on the full state: input (x_1, g_1, x_2, g_2, ..., x_N, g_N)
 *                      (N 2d numbers, particle-major), output (s_x^1, s_g^1, ..., s_x^N, s_g^N)
 *                      (or s_g^i only with learn = "g"); App. F.2 (two particles on a ring).
 *   transformer        the particle transformer over all N particles (App. E, F.5/F.6; permutation
 *                      equivariant): tokens (x_i, g_i), output per token [s_x^i | s_g^i] or s_g^i.
 * A full-state batch element is one whole configuration (a frame or an SDE replica). Either
 * full-state kind can carry a learned pair term ([model] pair_hidden > 0, src/score/pair_head.h):
 * per close pair a small MLP of (r, g_i.u, g_j.u, g_i.g_j) along u, g_i, g_j, added to both
 * scores with exact divergences; its tensors (pair.net.*) follow the network's in one slab.
 */
#ifndef SGM_SCORE_MODEL_H
#define SGM_SCORE_MODEL_H

#include "sgm/aoup.h"
#include "sgm/config.h"
#include "sgm/nn_io.h"
#include "sgm/nn_models.h"
#include "sgm/schema.h"
#include "sgm/score_provider.h"

typedef enum { SGM_SCORE_LOCAL = 0, SGM_SCORE_MLP = 1, SGM_SCORE_TRANSFORMER = 2 } SgmScoreKind;

typedef struct SgmFullScore_ *SgmFullScore;

/// A network built from the [model] table: the local transformer m (kind SGM_SCORE_LOCAL) or a
/// full-state network fs (kinds SGM_SCORE_MLP, SGM_SCORE_TRANSFORMER).
typedef struct {
  SgmScoreKind kind;
  SgmFullScore fs;            /* full-state kinds: owned by the caller (sgm_full_score_destroy) */
  SgmNnTransformer m;         /* local kind: owned by the caller (sgm_nn_transformer_destroy) */
  SgmNnTransformerConfig cfg; /* its configuration */
  int K, max_batch;           /* window size and the largest batch of centres */
  int learn_x;                /* 1: output (s_x, s_g) (2 dim), 0: s_g only (dim) */
  int boltzmann;              /* 1: s_g = -g_c + network output (App. F.3.2) */
  int boltzmann_x;            /* full-state kinds, 1: s_x^i = mu F_i / eps + N_x^i (App. F.3.2) */
  SgmNNAttr arch[32];         /* the architecture attributes of model.h5 */
  int narch;
} SgmScoreModelSpec;

/// Builds the local transformer of the [model] keys for dimension `dim` (weights initialised
/// from seed; max_tan = dim, enough for the divergences). SGM_ERR_USER for another [model] kind.
/// Not collective (errors on comm).
PetscErrorCode sgm_score_model_from_config(MPI_Comm comm, SgmConfig cfg, int dim, uint64_t seed,
                                           SgmScoreModelSpec *ms);
/// Builds the network of any [model] kind for n particles in dimension dim (the local kind as
/// sgm_score_model_from_config). Not collective (errors on comm).
PetscErrorCode sgm_score_model_build(MPI_Comm comm, SgmConfig cfg, int dim, int64_t n,
                                     uint64_t seed, SgmScoreModelSpec *ms);
/// The architecture attributes (arch, narch) and the settings of the network of any [model] kind
/// that sgm_score_model_build would build, without building it or checking the keys (no
/// network: ms->m and ms->fs stay NULL). Not collective.
PetscErrorCode sgm_score_model_arch(SgmConfig cfg, int dim, int64_t n, SgmScoreModelSpec *ms);
/// Whether the model file `path` holds another network than the [model] and [system] keys build
/// (sgm_score_model_arch against its /architecture, sgm_nn_arch_differs): *differs 0 (the same),
/// 1 (the first difference in msg[len], its attribute in which[wlen]) or -1 (unreadable, msg
/// says why). The calling rank alone, printing nothing.
PetscErrorCode sgm_score_model_file_differs(SgmConfig cfg, const char *path, char *which,
                                            size_t wlen, char *msg, size_t len, int *differs);
/// Input check (rank 0, schema.h): the model file `path`, read by the key `key` ("epr.model",
/// "train.init_model"), must hold the architecture the [model] and [system] keys build; a
/// difference is reported at the [model] (or [system]) key its attribute comes from.
PetscErrorCode sgm_score_model_check_file(SgmConfig cfg, SgmProblems pb, const char *key,
                                          const char *path);
/// The parameter slab of the spec's network.
SgmParams *sgm_score_model_params(SgmScoreModelSpec *ms);
/// Destroys the spec's network (either kind); accepts a spec without one.
PetscErrorCode sgm_score_model_spec_destroy(SgmScoreModelSpec *ms);

/* ---- Full-state networks (src/score/full_score.c). Serial: nothing here communicates. ---- */

typedef struct {
  SgmScoreKind kind;         /* SGM_SCORE_MLP or SGM_SCORE_TRANSFORMER */
  int n, dim;                /* particles and spatial dimension (orientations have dim too) */
  int learn_x;               /* 1: outputs s_x and s_g, 0: s_g only (s_x = 0) */
  int separate;              /* 1 (with learn_x): two networks, one for s_x and one for s_g */
  int boltzmann;             /* 1: s_g^i = -g_i + N_g^i (App. F.3.2) */
  int boltzmann_x;           /* 1: s_x^i = mu F_i / eps + N_x^i (App. F.3.2; N_x = 0 if !learn_x) */
  double eps;                /* translational noise eps of the shift (> 0 when boltzmann_x) */
  double x_scale;            /* positions enter the network as x / x_scale (0 or 1: as they are) */
  double x_period;           /* > 0 (MLP only): each position coordinate enters as
                                (cos 2πx/x_period, sin 2πx/x_period), a network periodic in the
                                box of that edge; x_scale is then unused */
  int max_batch;             /* configurations per forward pass */
  int max_tan;               /* tangent directions per JVP chunk (0: automatic) */
  int pair_hidden;           /* > 0: the learned pair term (pair_head.h) with this MLP width */
  int pair_depth;            /* its hidden layers */
  double pair_cutoff;        /* its cutoff radius r_c (> 0 when pair_hidden > 0) */
  double box;                /* periodic box edge for the pair distances, 0 for open space */
  double pair_contact_beta;  /* > 0: the pair MLP also sees sigma(beta (pair_contact_r - r)) */
  double pair_contact_r;     /* the contact distance of that profile (2 a) */
  int pair_gnorm;            /* 1: the pair MLP also sees |g_i|^2 and |g_j|^2 */
  SgmNnMlpConfig mlp;        /* kind mlp: hidden, depth, act (in/out widths are set here) */
  SgmNnTransformerConfig tf; /* kind transformer: everything but dim, gdim, out_dim */
} SgmFullScoreConfig;

/// Losses of the full-state kinds, per configuration r (sums over all N particles, eq. 26):
///   L_sm  = |s|^2 + 2 sum_i (div_{x_i} s_x^i + div_{g_i} s_g^i)  (s with its shifts)
///   R     = div b - sum_i (eps div_{x_i} s_x^i + gamma div_{g_i} s_g^i) + v.s,  v = b - D s
///   L     = w_sm L_sm + w_fpe R^2
/// sm: (w_sm, w_fpe) = (1, 0); fpe: (0, lambda2); composite: (lambda1, lambda2).
typedef struct {
  double w_sm, w_fpe;
  double eps, gamma; /* D = diag(eps, gamma) per particle */
} SgmFullLossWeights;

/// Creates the network (weights from seed as in nn_models.h). Not collective.
PetscErrorCode sgm_full_score_create(const SgmFullScoreConfig *c, uint64_t seed, SgmFullScore *fs);
/// Frees; accepts NULL and NULLs the handle.
PetscErrorCode sgm_full_score_destroy(SgmFullScore *fs);
SgmParams *sgm_full_score_params(SgmFullScore fs);
/// Boltzmann-informed x score (boltzmann_x, App. F.3.2): the conservative drift of each
/// configuration, fc (B, n, dim) = mu F_i = -mu grad_i Phi (pair forces and trap, without v0 g:
/// the engine's force array), and its per-particle divergence divfc (B, n) = div_{x_i} mu F_i
/// (sgm_epr_drift_divergence). Then s_x^i = fc_i / eps + N_x^i and
/// div_{x_i} s_x^i = divfc_i / eps + div_{x_i} N_x^i; at v0 = 0 the Boltzmann score is exact with
/// N = 0 (s_x = -grad Phi_eff / eps with Phi_eff = mu Phi, the code's mobility convention).
/// Both may be NULL when the network was built without boltzmann_x (they are then ignored).
/// sgm_full_score_drift fills them from a PETSC_COMM_SELF engine that holds all n particles.
typedef struct {
  const double *fc, *divfc;
} SgmFullScoreShift;

/// Evaluates B configurations (any B >= 1, in chunks of max_batch): x, g (B, n, dim) ->
/// sx, sg (B, n, dim) (sx = 0 when !learn_x and !boltzmann_x) and the exact divergences
/// divx, divg (B, n) (div_{x_i}.s_x^i, div_{g_i}.s_g^i), by forward-mode JVPs with the one-hot
/// tangents of every particle's own coordinates. sh: the conservative drift (required with
/// boltzmann_x, else may be NULL).
PetscErrorCode sgm_full_score_eval(SgmFullScore fs, int B, const double *x, const double *g,
                                   const SgmFullScoreShift *sh, double *sx, double *sg,
                                   double *divx, double *divg);
/// The conservative drift of a PETSC_COMM_SELF engine holding all n particles, in global-id
/// order: computes its forces, then fc (n, dim) = mu F and divfc (n) = div_{x_i} mu F_i. Not
/// collective.
PetscErrorCode sgm_full_score_drift(SgmAoup e, double *fc, double *divfc);
/// ACCUMULATES into the parameter gradients the gradient of the SUM over the B configurations of
/// the loss w (see SgmFullLossWeights) and returns that sum in *loss_sum. bx (B, n, dim) is the
/// x drift mu F + v0 g, divb (B) the drift divergence div b = sum_i div_{x_i} b_x^i - gamma d n;
/// both may be NULL when w->w_fpe == 0. The residual needs s_x: w_fpe > 0 requires learn_x.
/// sh: the conservative drift of the Boltzmann-informed x score (as sgm_full_score_eval). The
/// shift does not depend on the parameters, so the cotangents w.r.t. the network outputs are
/// those w.r.t. the full score.
PetscErrorCode sgm_full_score_loss(SgmFullScore fs, const SgmFullLossWeights *w, int B,
                                   const double *x, const double *g, const double *bx,
                                   const double *divb, const SgmFullScoreShift *sh,
                                   double *loss_sum);
/// The transition loss (eq. 88 in the form of App. D.3; [train] loss = "transition"): B
/// configurations r' = (x, g) (B, n, dim), each drawn by the caller as one Euler-Maruyama step
/// r' = r + dt b(r) + sqrt(2 dt D) xi from a stored or simulated r, with the targets
/// t = -(2 dt D)^(-1/2) xi of eq. (87): tx, tg (B, n, dim) (tx may be NULL when !learn_x). fc is
/// the conservative drift mu F at r' (B, n, dim; required with boltzmann_x, else may be NULL).
/// Per configuration, over the learned parts,
///   l = sum_i |shat_i|^2 - 2 shat_i . t_i = |shat - t|^2 - |t|^2,
/// eq. (88) less its parameter-independent |t|^2, so that E l = E|shat - s|^2 - E|s|^2 estimates
/// the sm loss (eq. 22) and the two can be compared. ACCUMULATES into the parameter gradients
/// weight times the gradient of sum_b l_b and returns weight sum_b l_b in *loss_sum (weight 1/2
/// averages an antithetic pair). No divergences: two network passes per configuration. Serial.
PetscErrorCode sgm_full_score_loss_targets(SgmFullScore fs, int B, const double *x, const double *g,
                                           const double *fc, const double *tx, const double *tg,
                                           double weight, double *loss_sum);
/// Initial halo width of the windows: [model] window_width, or 1.5 times the radius holding K + 1
/// particles at the mean density when it is 0. Not collective.
PetscErrorCode sgm_score_model_window_width(SgmConfig cfg, const SgmAoupParams *ap, int K,
                                            double *width);
/// Create function of the "model" score provider (registered as "model"). Collective.
PetscErrorCode sgm_score_model_create(SgmScoreProvider sp, SgmConfig cfg);

#endif
