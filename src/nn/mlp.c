/* The MLP score model s(x, t, c) = net([x | fourier(t) | c]).
 *
 * Owns: the concatenated input row, the fixed Fourier frequencies of the time input, and the
 * divergence by D one-hot forward-mode JVPs batched into one tangent pass (the tangent of the
 * first linear layer for all D directions is one sgemm of D*B rows). The JVP takes tangents of
 * x, t and c (any may be absent); the divergence is with respect to x only. The
 * reverse-over-forward reuses the stack's combined backward, so the divergence gradient costs about
 * one more backward.
 */
#include "sgm/nn_models.h"

#include "nn_stack.h"

#include <math.h>
#include <string.h>

struct SgmNnMlp_ {
  SgmNnMlpConfig cfg;
  int din, dout, max_batch, max_tan;
  SgmParams params;
  SgmNnArena ar;
  SgmNnStack net;
  SgmNnBuf inp;             /* (B, din) */
  float *freq;              /* (F) */
  float *t;                 /* (max_batch) times of the last forward, for the time tangent */
  float *tx, *tout, *dtout; /* divergence scratch: (max_tan, max_batch, D or dout) */
  int B, ntan, div_valid;
};

void sgm_nn_params_zero_grad(SgmParams *p)
{
  memset(p->grads, 0, p->nparams * sizeof(float));
}

int sgm_nn_params_find(const SgmParams *p, const char *name)
{
  for (int i = 0; i < p->ntensors; i++)
    if (!strcmp(p->tensors[i].name, name)) return i;
  return -1;
}

PetscErrorCode sgm_nn_params_rebind(SgmParams *p, float *params, float *grads)
{
  PetscFunctionBeginUser;
  PetscCheck(!p->external, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE,
             "params: the slab is already external");
  memcpy(params, p->params, p->nparams * sizeof(float));
  memcpy(grads, p->grads, p->nparams * sizeof(float));
  PetscCall(PetscFree(p->params));
  PetscCall(PetscFree(p->grads));
  p->params = params, p->grads = grads, p->external = 1;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_create(const SgmNnMlpConfig *cfg, int max_batch, int max_tan,
                                 uint64_t seed, SgmNnMlp *mp)
{
  SgmNnMlp m;
  int dims[SGM_NN_MAX_STACK + 1];
  PetscFunctionBeginUser;
  PetscCheck(cfg->in_dim > 0 && cfg->hidden > 0 && cfg->depth >= 1 &&
                 cfg->depth < SGM_NN_MAX_STACK && cfg->cond_dim >= 0 && cfg->time_freqs >= 0,
             PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "mlp: need in_dim > 0, hidden > 0, 1 <= depth < %d", SGM_NN_MAX_STACK);
  PetscCheck(cfg->time_freqs != 1 && (cfg->time_freqs == 0 || cfg->time_max_freq > 0),
             PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "mlp: time_freqs must be 0 or >= 2 with time_max_freq > 0");
  PetscCheck(max_batch > 0 && max_tan >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "mlp: max_batch > 0, max_tan >= 0");
  PetscCall(PetscNew(&m));
  m->cfg = *cfg;
  m->dout = cfg->out_dim > 0 ? cfg->out_dim : cfg->in_dim;
  m->din = cfg->in_dim + 2 * cfg->time_freqs + cfg->cond_dim;
  m->max_batch = max_batch;
  m->max_tan = max_tan;
  m->ar.max_tan = max_tan;
  m->ar.max_batch = max_batch;
  SgmNnParamBuilder pb = {&m->params, 0};
  dims[0] = m->din;
  for (int l = 1; l <= cfg->depth; l++) dims[l] = cfg->hidden;
  dims[cfg->depth + 1] = m->dout;
  PetscCall(sgm_nn_arena_reserve(&m->ar, &m->inp, (size_t)max_batch * m->din));
  PetscCall(
      sgm_nn_stack_define(&m->net, &pb, &m->ar, "net", cfg->depth + 1, dims, cfg->act, max_batch));
  PetscCall(sgm_nn_params_alloc(&pb));
  PetscCall(sgm_nn_arena_alloc(&m->ar));
  sgm_nn_stack_init(&m->net, &m->params, seed);
  if (cfg->time_freqs > 0) {
    PetscCall(PetscMalloc1(cfg->time_freqs, &m->freq));
    PetscCall(PetscCalloc1(max_batch, &m->t));
    for (int k = 0; k < cfg->time_freqs; k++)
      m->freq[k] = (float)exp(log(cfg->time_max_freq) * k / (cfg->time_freqs - 1));
  }
  const size_t nt = (size_t)(max_tan > 0 ? max_tan : 1) * max_batch;
  PetscCall(PetscCalloc1(nt * cfg->in_dim, &m->tx));
  PetscCall(PetscCalloc1(nt * m->dout, &m->tout));
  PetscCall(PetscCalloc1(nt * m->dout, &m->dtout));
  *mp = m;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_destroy(SgmNnMlp *mp)
{
  PetscFunctionBeginUser;
  if (!mp || !*mp) PetscFunctionReturn(PETSC_SUCCESS);
  SgmNnMlp m = *mp;
  PetscCall(sgm_nn_arena_free(&m->ar));
  if (!m->params.external) {
    PetscCall(PetscFree(m->params.params));
    PetscCall(PetscFree(m->params.grads));
  }
  PetscCall(PetscFree(m->params.tensors));
  PetscCall(PetscFree(m->freq));
  PetscCall(PetscFree(m->t));
  PetscCall(PetscFree(m->tx));
  PetscCall(PetscFree(m->tout));
  PetscCall(PetscFree(m->dtout));
  PetscCall(PetscFree(*mp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

SgmParams *sgm_nn_mlp_params(SgmNnMlp m)
{
  return &m->params;
}

PetscErrorCode sgm_nn_mlp_forward(SgmNnMlp m, float *out, const float *x, const float *t,
                                  const float *cond, int B)
{
  const int D = m->cfg.in_dim, F = m->cfg.time_freqs, Dc = m->cfg.cond_dim;
  PetscFunctionBeginUser;
  PetscCheck(B >= 0 && B <= m->max_batch, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "mlp: batch %d > max_batch %d", B, m->max_batch);
  PetscCheck((F == 0 || t) && (Dc == 0 || cond), PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "mlp: time or conditioning input missing");
  m->B = B;
  m->ntan = 0;
  m->div_valid = 0;
  if (F) memcpy(m->t, t, (size_t)B * sizeof(float));
  for (int b = 0; b < B; b++) {
    float *row = m->inp.a + (size_t)b * m->din;
    memcpy(row, x + (size_t)b * D, (size_t)D * sizeof(float));
    if (F) sgm_nn_fourier_forward(row + D, t + b, m->freq, 1, F);
    if (Dc) memcpy(row + D + 2 * F, cond + (size_t)b * Dc, (size_t)Dc * sizeof(float));
  }
  sgm_nn_stack_forward(&m->net, &m->params, m->inp.a, B);
  memcpy(out, m->net.pre[m->net.nl - 1].a, (size_t)B * m->dout * sizeof(float));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_backward(SgmNnMlp m, float *dx, const float *dout)
{
  const int B = m->B, D = m->cfg.in_dim;
  PetscFunctionBeginUser;
  sgm_nn_arena_zero_grad(&m->ar, m->B, 0);
  memcpy(m->net.pre[m->net.nl - 1].g, dout, (size_t)B * m->dout * sizeof(float));
  sgm_nn_stack_backward(&m->net, &m->params, m->inp.a, NULL, dx ? m->inp.g : NULL, NULL, B, 0);
  if (dx)
    for (int b = 0; b < B; b++)
      for (int a = 0; a < D; a++) dx[(size_t)b * D + a] += m->inp.g[(size_t)b * m->din + a];
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_jvp(SgmNnMlp m, float *tout, const float *tx, const float *tt,
                              const float *tcond, int ntan)
{
  const int B = m->B, D = m->cfg.in_dim, F = m->cfg.time_freqs, Dc = m->cfg.cond_dim;
  PetscFunctionBeginUser;
  PetscCheck(ntan >= 1 && ntan <= m->max_tan, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "mlp: %d tangent directions, max_tan %d", ntan, m->max_tan);
  m->ntan = ntan;
  m->div_valid = 0;
  memset(m->inp.t, 0, (size_t)ntan * B * m->din * sizeof(float));
  for (int d = 0; d < ntan; d++) {
    for (int b = 0; b < B; b++) {
      const size_t db = (size_t)d * B + b;
      float *row = m->inp.t + db * m->din;
      if (tx) memcpy(row, tx + db * D, (size_t)D * sizeof(float));
      if (tt && F) sgm_nn_fourier_jvp(row + D, tt + db, m->t + b, m->freq, 1, F);
      if (tcond && Dc) memcpy(row + D + 2 * F, tcond + db * Dc, (size_t)Dc * sizeof(float));
    }
  }
  sgm_nn_stack_jvp(&m->net, &m->params, m->inp.t, B, ntan);
  memcpy(tout, m->net.pre[m->net.nl - 1].t, (size_t)ntan * B * m->dout * sizeof(float));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_jvp_backward(SgmNnMlp m, const float *dout, const float *dtout)
{
  const int B = m->B, ntan = m->ntan;
  SgmNnBuf *o = &m->net.pre[m->net.nl - 1];
  PetscFunctionBeginUser;
  PetscCheck(ntan > 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "mlp: jvp_backward before jvp");
  sgm_nn_arena_zero_grad(&m->ar, m->B, ntan);
  if (dout) memcpy(o->g, dout, (size_t)B * m->dout * sizeof(float));
  memcpy(o->gt, dtout, (size_t)ntan * B * m->dout * sizeof(float));
  sgm_nn_stack_backward(&m->net, &m->params, m->inp.a, m->inp.t, NULL, NULL, B, ntan);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_divergence(SgmNnMlp m, float *div)
{
  const int B = m->B, D = m->cfg.in_dim;
  PetscFunctionBeginUser;
  PetscCheck(m->dout == D, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "mlp: divergence needs out_dim == in_dim");
  memset(m->tx, 0, (size_t)D * B * D * sizeof(float));
  for (int d = 0; d < D; d++)
    for (int b = 0; b < B; b++) m->tx[((size_t)d * B + b) * D + d] = 1.0f;
  PetscCall(sgm_nn_mlp_jvp(m, m->tout, m->tx, NULL, NULL, D));
  for (int b = 0; b < B; b++) {
    double s = 0.0;
    for (int d = 0; d < D; d++) s += m->tout[((size_t)d * B + b) * D + d];
    div[b] = (float)s;
  }
  m->div_valid = 1;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_mlp_divergence_backward(SgmNnMlp m, const float *dout, const float *ddiv)
{
  const int B = m->B, D = m->cfg.in_dim;
  PetscFunctionBeginUser;
  if (!m->div_valid) PetscCall(sgm_nn_mlp_divergence(m, m->dtout)); /* dtout as scratch */
  memset(m->dtout, 0, (size_t)D * B * D * sizeof(float));
  for (int d = 0; d < D; d++)
    for (int b = 0; b < B; b++) m->dtout[((size_t)d * B + b) * D + d] = ddiv[b];
  PetscCall(sgm_nn_mlp_jvp_backward(m, dout, m->dtout));
  PetscFunctionReturn(PETSC_SUCCESS);
}
