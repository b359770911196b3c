/* The learned pair term of the full-state score networks ([model] pair_hidden > 0; internal to
 * src/score, used by full_score.c).
 *
 * For every ordered pair (i, j) closer than the cutoff r_c, with r = |x_i - x_j| (minimum image
 * in a periodic box), u = (x_i - x_j) / r, a = g_i.u, b = g_j.u, c = g_i.g_j and the smooth
 * cutoff phi(r) = (1 + cos(pi r / r_c)) / 2, a small MLP f(r / r_c, a, b, c) (with contact_beta > 0
 * also of the contact profile e(r) = sigma(beta_c (r_0 - r)), sigma the logistic function, so that
 * terms that switch on within a contact need not be built from r / r_c; with gnorm also of
 * p = |g_i|^2 and q = |g_j|^2, which complete the pair's rotation invariants) with outputs
 * (f_xu, f_xi, f_xj, f_gu, f_gi, f_gj) (the first three only with learn_x) adds
 *   s_x^i += sum_j phi (f_xu u + f_xi g_i + f_xj g_j)
 *   s_g^i += sum_j phi (f_gu u + f_gi g_i + f_gj g_j).
 * These are the vector fields a pair can build from its own geometry in any dimension (the
 * relative orientation of each contact along its normal, which the particle transformer does not
 * learn from absolute positions: docs/validation.md). Their exact per-particle divergences
 * div_{x_i} s_x^i and div_{g_i} s_g^i follow from the MLP's Jacobian in its four inputs (four
 * one-hot JVPs per pair) and the geometry (pair_head.c); the gradient of a loss of the
 * divergences goes backward through those JVPs. Pairs are processed in chunks of at most
 * SGM_PAIR_ROWS rows, so memory does not grow with N; the backward pass recomputes each chunk's
 * forward. Serial.
 */
#ifndef SGM_SCORE_PAIR_HEAD_H
#define SGM_SCORE_PAIR_HEAD_H

#include "sgm/nn_models.h"

#define SGM_PAIR_ROWS 4096

typedef struct {
  int n, dim;    /* particles, spatial dimension */
  int learn_x;   /* 1: outputs for s_x and s_g (6), 0: s_g only (3) */
  int hidden;    /* MLP hidden width */
  int depth;     /* MLP hidden layers */
  SgmNnAct act;  /* MLP activation */
  double cutoff; /* r_c > 0 */
  double box;    /* periodic box edge, 0 for open space */
  /* > 0: a fifth MLP input, the contact profile e(r) = sigma(contact_beta (contact_r - r)) */
  double contact_beta, contact_r;
  int gnorm; /* 1: two more MLP inputs, |g_i|^2 and |g_j|^2 (the pair's full set of invariants) */
} SgmPairHeadConfig;

typedef struct SgmPairHead_ *SgmPairHead;

/// Creates the pair MLP (parameter names net.*; weights from seed as nn_models.h). Not collective.
PetscErrorCode sgm_pair_head_create(const SgmPairHeadConfig *c, uint64_t seed, SgmPairHead *ph);
PetscErrorCode sgm_pair_head_destroy(SgmPairHead *ph);
SgmParams *sgm_pair_head_params(SgmPairHead ph);
/// Sets sx, sg (B, n, dim) to the pair terms of B configurations x, g (B, n, dim) (sx untouched
/// when !learn_x) and, when divx is not NULL, divx, divg (B, n) to their per-particle divergences.
PetscErrorCode sgm_pair_head_eval(SgmPairHead ph, int B, const double *x, const double *g,
                                  double *sx, double *sg, double *divx, double *divg);
/// ACCUMULATES into the parameter gradients the gradient of a loss whose cotangents with respect
/// to the pair terms of the B configurations are dsx, dsg (B, n, dim) and, when ddg is not NULL,
/// with respect to their per-particle divergences ddx, ddg (B, n) (reverse over forward through
/// the Jacobian JVPs). dsx and ddx are ignored, and may be NULL, when !learn_x.
PetscErrorCode sgm_pair_head_backward(SgmPairHead ph, int B, const double *x, const double *g,
                                      const double *dsx, const double *dsg, const double *ddx,
                                      const double *ddg);

#endif
