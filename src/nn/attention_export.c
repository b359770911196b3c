/* Attention maps of a transformer's forward pass, for interpretation (attention rollout, paper 002
 * App. E.3, eq. 93).
 *
 * Owns: sgm_nn_transformer_attention, a second forward pass of an SgmNnTransformer built from
 * the public layer functions (nn.h) and the model's parameters found by name (the PyTorch
 * state_dict names of nn_models.h), that keeps every block's head-averaged attention
 * probabilities. Trade-off: it does not reuse transformer.c's activation arena (private, and the
 * local mode's last block there computes the centre query only, so its attention rows of the
 * other tokens do not exist); recomputing the forward in full with its own work arrays costs one
 * forward per call, which is negligible for the few particles an analysis asks for, and keeps the
 * training kernels untouched. The output of the recomputed pass is returned too, so a test (and a
 * caller) can check it against sgm_nn_transformer_forward.
 */
#include "sgm/nn_models.h"

#include <stdio.h>
#include <string.h>

static PetscErrorCode find(const SgmParams *p, const char *name, int n0, int n1, const float **v)
{
  const int i = sgm_nn_params_find(p, name);
  PetscFunctionBeginUser;
  PetscCheck(i >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "transformer attention: no parameter %s (configuration does not match the model)",
             name);
  const SgmTensorView *t = &p->tensors[i];
  PetscCheck(t->shape[0] == n0 && (t->ndim == 1 ? n1 == 0 : t->shape[1] == n1), PETSC_COMM_SELF,
             PETSC_ERR_ARG_SIZ,
             "transformer attention: %s has the wrong shape for the configuration", name);
  *v = p->params + t->offset;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* An MLP stack prefix.{0,2,..}: in (R, din) -> out (R, dout); tmp holds 2 R wmax floats. */
static PetscErrorCode stack_forward(const SgmParams *p, const char *prefix, int depth, int din,
                                    int hidden, int dout, SgmNnAct act, const float *in, float *out,
                                    int R, float *tmp, size_t wmax)
{
  char name[SGM_NN_NAME_LEN];
  const float *x = in;
  float *a = tmp, *b = tmp + (size_t)R * wmax;
  PetscFunctionBeginUser;
  for (int l = 0; l <= depth; l++) {
    const int i0 = l == 0 ? din : hidden, o0 = l == depth ? dout : hidden;
    const float *W, *bias;
    snprintf(name, sizeof name, "%s.%d.weight", prefix, 2 * l);
    PetscCall(find(p, name, o0, i0, &W));
    snprintf(name, sizeof name, "%s.%d.bias", prefix, 2 * l);
    PetscCall(find(p, name, o0, 0, &bias));
    float *y = l == depth ? out : a;
    sgm_nn_linear_forward(y, x, W, bias, R, i0, o0);
    if (l < depth) { /* the next linear reads b and writes a: no aliasing */
      sgm_nn_act_forward(act, b, a, R * o0);
      x = b;
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_attention(SgmNnTransformer m, const SgmNnTransformerConfig *cfg,
                                            const float *x, const float *g, const float *mask,
                                            int B, float *att, float *out)
{
  const SgmParams *p = sgm_nn_transformer_params(m);
  const int T = sgm_nn_transformer_tokens(m), C = cfg->d_model, NH = cfg->n_heads;
  const int L = cfg->n_layers, H = cfg->mlp_hidden, D = cfg->dim, Dg = cfg->gdim;
  const int Cx = Dg > 0 ? C / 2 : C, R = B * T;
  char name[SGM_NN_NAME_LEN];
  float *X, *qkv, *ay, *ao, *r1, *n1, *h, *ha, *f, *mean, *rstd, *pr, *ex, *eg, *tmp, *o;
  PetscFunctionBeginUser;
  PetscCheck(B >= 1 && C % NH == 0 && (Dg == 0 || g), PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "transformer attention: bad batch, heads or orientations");
  snprintf(name, sizeof name, "blocks.%d.attn.in_proj_weight", L);
  PetscCheck(sgm_nn_params_find(p, name) < 0, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "transformer attention: the model has more than n_layers = %d blocks", L);
  size_t wmax = (size_t)PetscMax(PetscMax(cfg->embed_hidden, cfg->dec_hidden), C);
  wmax = PetscMax(wmax, (size_t)cfg->out_dim);
  const size_t RC = (size_t)R * C;
  PetscCall(PetscMalloc6(RC, &X, 3 * RC, &qkv, RC, &ay, RC, &ao, RC, &r1, RC, &n1));
  PetscCall(PetscMalloc6((size_t)R * H, &h, (size_t)R * H, &ha, RC, &f, R, &mean, R, &rstd,
                         (size_t)B * NH * T * T, &pr));
  PetscCall(
      PetscMalloc4(RC, &ex, RC, &eg, 2 * (size_t)R * wmax, &tmp, (size_t)R * cfg->out_dim, &o));

  /* embeddings: X = [phi_x(x) | phi_g(g)] */
  PetscCall(stack_forward(p, "embed_x", cfg->embed_depth, D, cfg->embed_hidden, Cx, cfg->act, x, ex,
                          R, tmp, wmax));
  if (Dg > 0)
    PetscCall(stack_forward(p, "embed_g", cfg->embed_depth, Dg, cfg->embed_hidden, C - Cx, cfg->act,
                            g, eg, R, tmp, wmax));
  for (int r = 0; r < R; r++) {
    memcpy(X + (size_t)r * C, ex + (size_t)r * Cx, (size_t)Cx * sizeof(float));
    if (Dg > 0)
      memcpy(X + (size_t)r * C + Cx, eg + (size_t)r * (C - Cx), (size_t)(C - Cx) * sizeof(float));
  }
  /* blocks in full (every token), keeping the head-averaged probabilities */
  for (int l = 0; l < L; l++) {
    const float *win, *bin, *wo, *bo, *n1w, *n1b, *w1, *b1, *w2, *b2, *n2w, *n2b;
#define GET(var, suffix, s0, s1)                                                                   \
  do {                                                                                             \
    snprintf(name, sizeof name, "blocks.%d.%s", l, suffix);                                        \
    PetscCall(find(p, name, s0, s1, &var));                                                        \
  } while (0)
    GET(win, "attn.in_proj_weight", 3 * C, C);
    GET(bin, "attn.in_proj_bias", 3 * C, 0);
    GET(wo, "attn.out_proj.weight", C, C);
    GET(bo, "attn.out_proj.bias", C, 0);
    GET(n1w, "norm1.weight", C, 0);
    GET(n1b, "norm1.bias", C, 0);
    GET(w1, "linear1.weight", H, C);
    GET(b1, "linear1.bias", H, 0);
    GET(w2, "linear2.weight", C, H);
    GET(b2, "linear2.bias", C, 0);
    GET(n2w, "norm2.weight", C, 0);
    GET(n2b, "norm2.bias", C, 0);
#undef GET
    sgm_nn_linear_forward(qkv, X, win, bin, R, C, 3 * C);
    sgm_nn_attention_forward(ay, pr, qkv, qkv + C, qkv + 2 * C, mask, B, T, T, C, NH, 3 * C, 3 * C);
    for (int b = 0; b < B; b++) {
      float *A = att + ((size_t)b * L + l) * T * T;
      for (size_t e = 0; e < (size_t)T * T; e++) {
        double s = 0;
        for (int hh = 0; hh < NH; hh++) s += pr[((size_t)b * NH + hh) * T * T + e];
        A[e] = (float)(s / NH);
      }
    }
    sgm_nn_linear_forward(ao, ay, wo, bo, R, C, C);
    sgm_nn_residual_forward(r1, X, ao, (int)RC);
    sgm_nn_layernorm_forward(n1, mean, rstd, r1, n1w, n1b, R, C);
    sgm_nn_linear_forward(h, n1, w1, b1, R, C, H);
    sgm_nn_act_forward(cfg->act, ha, h, R * H);
    sgm_nn_linear_forward(f, ha, w2, b2, R, H, C);
    sgm_nn_residual_forward(r1, n1, f, (int)RC);
    sgm_nn_layernorm_forward(X, mean, rstd, r1, n2w, n2b, R, C);
  }
  PetscCall(stack_forward(p, "decoder", cfg->dec_depth, C, cfg->dec_hidden, cfg->out_dim, cfg->act,
                          X, o, R, tmp, wmax));
  if (out) memcpy(out, o, (size_t)R * cfg->out_dim * sizeof(float));
  PetscCall(PetscFree6(X, qkv, ay, ao, r1, n1));
  PetscCall(PetscFree6(h, ha, f, mean, rstd, pr));
  PetscCall(PetscFree4(ex, eg, tmp, o));
  PetscFunctionReturn(PETSC_SUCCESS);
}
