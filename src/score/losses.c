/* Denoising and score-matching losses of the local transformer (include/sgm/losses.h).
 *
 * Owns the per-centre loss formulas, their cotangents and the micro-batching. Trade-offs: the
 * denoising windows with noise on x are chosen in the noised frame (sgm_windows_gather searches
 * the K nearest of the perturbed positions in the cells of the clean frame's search): windows of
 * the clean frame filled with noised coordinates reveal where the clean centre was, make the
 * centre's x noise partly predictable and the loss unbounded by -E|s|^2, and the learned s_x
 * absorbs that instead of the score (tests/test_xg_score.c). The noise is drawn per particle
 * from its global id, so a neighbour's perturbation is the same on every rank and every
 * decomposition. Losses are returned as sums over centres (the caller divides by the global batch
 * size after the gradient allreduce) and accumulated in double; the per-centre values and
 * cotangents are formed in double from the float outputs. The denoising loss drops the
 * parameter-independent |xi_c|^2 / sigma^2 of eq. (88): its gradient is exactly that of eq. (88),
 * and its value, E|shat|^2 + 2 E[shat . xi / sigma] ~ E|shat - s|^2 - E|s|^2, estimates the
 * score-matching loss (22) instead of being swamped by the O(1/sigma^2) noise term.
 */
#include "sgm/losses.h"
#include "sgm/core.h"
#include "sgm/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const loss_names[] = {
#define SGM_X(e, s) s,
    SGM_LOSS_LIST(SGM_X)
#undef SGM_X
};

struct SgmLoss_ {
  SgmLossConfig c;
  SgmNnTransformer m;
  int K, T, mb, od;
  float *X, *G, *M, *out, *dout, *divx, *divg, *ddiv;
  double *xi; /* (cap, 2D) noise of every local and ghost: x part then g part */
  size_t xicap;
  double *px, *pg;
};

const char *sgm_loss_name(SgmLossKind kind)
{
  return kind >= 0 && kind < SGM_LOSS_NKINDS ? loss_names[kind] : "?";
}

PetscErrorCode sgm_loss_kind_from_name(const char *name, SgmLossKind *kind)
{
  PetscFunctionBeginUser;
  for (int k = 0; k < SGM_LOSS_NKINDS; k++)
    if (!strcmp(name, loss_names[k])) {
      *kind = (SgmLossKind)k;
      PetscFunctionReturn(PETSC_SUCCESS);
    }
  SETERRQ(PETSC_COMM_SELF, SGM_ERR_USER,
          "unknown loss \"%s\" (known: denoise, sm, fpe, composite, transition)", name);
}

PetscErrorCode sgm_loss_create(const SgmLossConfig *cfg, SgmNnTransformer m, int K, int max_batch,
                               SgmLoss *lout)
{
  SgmLoss l;
  PetscFunctionBeginUser;
  PetscCheck(cfg->learn_x || cfg->learn_g, PETSC_COMM_SELF, SGM_ERR_USER,
             "the loss must learn s_x, s_g or both");
  PetscCheck(cfg->kind == SGM_LOSS_DENOISE || cfg->kind == SGM_LOSS_SM, PETSC_COMM_SELF,
             SGM_ERR_USER,
             "loss \"%s\" needs a full-state model ([model] kind = \"mlp\" or \"transformer\"): "
             "the FPE residual and the whole-system transitions do not decompose over local "
             "windows",
             sgm_loss_name(cfg->kind));
  PetscCheck(cfg->kind != SGM_LOSS_DENOISE || (cfg->sigma > 0 && isfinite(cfg->sigma)),
             PETSC_COMM_SELF, SGM_ERR_USER, "denoising needs sigma > 0");
  PetscCheck(cfg->kind != SGM_LOSS_DENOISE || !cfg->learn_x || cfg->noise_x, PETSC_COMM_SELF,
             SGM_ERR_USER, "denoising s_x needs noise on x (noise_x)");
  PetscCheck(sgm_nn_transformer_tokens(m) == K + 1, PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP,
             "model has %d tokens, windows K + 1 = %d", sgm_nn_transformer_tokens(m), K + 1);
  PetscCall(PetscCalloc1(1, &l));
  l->c = *cfg;
  l->m = m;
  l->K = K, l->T = K + 1, l->mb = max_batch;
  l->od = cfg->dim * (cfg->learn_x + cfg->learn_g);
  const size_t win = (size_t)max_batch * (size_t)l->T * (size_t)cfg->dim;
  PetscCall(PetscMalloc3(win, &l->X, win, &l->G, (size_t)max_batch * l->T, &l->M));
  PetscCall(PetscMalloc3((size_t)max_batch * l->od, &l->out, (size_t)max_batch * l->od, &l->dout,
                         (size_t)max_batch, &l->ddiv));
  PetscCall(PetscMalloc2((size_t)max_batch, &l->divx, (size_t)max_batch, &l->divg));
  *lout = l;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_loss_destroy(SgmLoss *lp)
{
  PetscFunctionBeginUser;
  if (!lp || !*lp) PetscFunctionReturn(PETSC_SUCCESS);
  SgmLoss l = *lp;
  PetscCall(PetscFree3(l->X, l->G, l->M));
  PetscCall(PetscFree3(l->out, l->dout, l->ddiv));
  PetscCall(PetscFree2(l->divx, l->divg));
  free(l->xi), free(l->px), free(l->pg);
  PetscCall(PetscFree(l));
  *lp = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Noise of every local and ghost particle of the windows at this step. */
static PetscErrorCode draw_noise(SgmLoss l, const SgmParticles *p, int64_t step)
{
  const int D = l->c.dim;
  const int64_t nt = p->nlocal + p->nghost;
  PetscFunctionBeginUser;
  if ((size_t)nt > l->xicap) {
    size_t nc = (size_t)nt + (size_t)nt / 4 + 64;
    free(l->xi), free(l->px), free(l->pg);
    l->xi = malloc(nc * 2 * (size_t)D * sizeof(double));
    l->px = malloc(nc * (size_t)D * sizeof(double));
    l->pg = malloc(nc * (size_t)D * sizeof(double));
    PetscCheck(l->xi && l->px && l->pg, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory (noise)");
    l->xicap = nc;
  }
  for (int64_t j = 0; j < nt; j++) {
    double *z = l->xi + j * 2 * D;
    sgm_rng_normals(l->c.seed, SGM_RNG_DENOISE, (uint64_t)p->id[j], (uint64_t)step, 2 * D, z);
    for (int a = 0; a < D; a++) l->px[j * D + a] = z[a], l->pg[j * D + a] = z[D + a];
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode eval_denoise(SgmLoss l, SgmWindows w, int nb, const int64_t *cen, double *acc)
{
  const int D = l->c.dim, T = l->T, od = l->od;
  const int nsign = l->c.antithetic ? 2 : 1;
  const double sig = l->c.sigma, wt = 1.0 / nsign;
  PetscFunctionBeginUser;
  for (int si = 0; si < nsign; si++) {
    const double s = si == 0 ? 1.0 : -1.0;
    PetscCall(sgm_windows_gather(w, nb, cen, l->c.noise_x ? l->px : NULL, l->pg, s * sig, l->X,
                                 l->G, l->M));
    PetscCall(sgm_nn_transformer_forward(l->m, l->out, l->X, l->G, l->M, nb));
    for (int b = 0; b < nb; b++) {
      const double *xi = l->xi + cen[b] * 2 * D;
      int o = 0;
      for (int part = 0; part < 2; part++) {
        if (part == 0 && !l->c.learn_x) continue;
        if (part == 1 && !l->c.learn_g) continue;
        for (int a = 0; a < D; a++, o++) {
          double sh = l->out[(size_t)b * od + o];
          if (part == 1 && l->c.boltzmann_g) sh -= l->G[(size_t)b * T * D + a];
          const double z = s * xi[part * D + a] / sig;
          *acc += wt * (sh * sh + 2.0 * sh * z);
          l->dout[(size_t)b * od + o] = (float)(wt * 2.0 * (sh + z));
        }
      }
    }
    PetscCall(sgm_nn_transformer_backward(l->m, l->dout));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode eval_sm(SgmLoss l, SgmWindows w, int nb, const int64_t *cen, double *acc)
{
  const int D = l->c.dim, T = l->T, od = l->od;
  PetscFunctionBeginUser;
  PetscCall(sgm_windows_gather(w, nb, cen, NULL, NULL, 0.0, l->X, l->G, l->M));
  PetscCall(sgm_nn_transformer_forward(l->m, l->out, l->X, l->G, l->M, nb));
  if (l->c.learn_x) PetscCall(sgm_nn_transformer_divergence(l->m, SGM_NN_INPUT_X, l->divx));
  if (l->c.learn_g) PetscCall(sgm_nn_transformer_divergence(l->m, SGM_NN_INPUT_G, l->divg));
  for (int b = 0; b < nb; b++) {
    double v = 0.0;
    for (int o = 0; o < od; o++) {
      double sh = l->out[(size_t)b * od + o];
      const int is_g = !l->c.learn_x || o >= D;
      if (is_g && l->c.boltzmann_g) sh -= l->G[(size_t)b * T * D + (o % D)];
      v += sh * sh;
      l->dout[(size_t)b * od + o] = (float)(2.0 * sh);
    }
    if (l->c.learn_x) v += 2.0 * l->divx[b];
    if (l->c.learn_g) v += 2.0 * (l->divg[b] - (l->c.boltzmann_g ? D : 0));
    *acc += v;
    l->ddiv[b] = 2.0f;
  }
  /* the G divergence was computed last, so its JVPs are reused by the first backward */
  if (l->c.learn_g) {
    PetscCall(sgm_nn_transformer_divergence_backward(l->m, SGM_NN_INPUT_G, l->dout, l->ddiv));
    if (l->c.learn_x)
      PetscCall(sgm_nn_transformer_divergence_backward(l->m, SGM_NN_INPUT_X, NULL, l->ddiv));
  } else {
    PetscCall(sgm_nn_transformer_divergence_backward(l->m, SGM_NN_INPUT_X, l->dout, l->ddiv));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_loss_eval(SgmLoss l, SgmWindows w, int64_t B, const int64_t *centres,
                             int64_t step, double *loss_sum)
{
  const SgmParticles *p;
  double acc = 0.0;
  PetscFunctionBeginUser;
  PetscCall(sgm_windows_get(w, NULL, NULL, NULL, &p));
  PetscCheck(p->dim == l->c.dim, PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP, "dimension mismatch");
  if (l->c.kind == SGM_LOSS_DENOISE && B > 0) PetscCall(draw_noise(l, p, step));
  for (int64_t b0 = 0; b0 < B; b0 += l->mb) {
    const int nb = (int)(B - b0 < l->mb ? B - b0 : l->mb);
    if (l->c.kind == SGM_LOSS_DENOISE)
      PetscCall(eval_denoise(l, w, nb, centres + b0, &acc));
    else
      PetscCall(eval_sm(l, w, nb, centres + b0, &acc));
  }
  *loss_sum = acc;
  PetscFunctionReturn(PETSC_SUCCESS);
}
