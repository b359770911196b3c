/* Particle transformer (App. E, eq. 91) and spatially local per-particle transformer (App. F.6).
 *
 * Owns: one implementation of both. Tokens are particles (particle mode, T = N, full attention)
 * or a centre and its K gathered neighbours (local mode, T = K + 1, key mask for absent
 * neighbours, output read from token 0). Each token is [phi_x(x) | phi_g(g)] from two MLP
 * stacks, followed by L post-norm encoder blocks and a row-wise MLP decoder.
 *
 * Trade-offs. (1) In local mode the last block computes the query, out_proj, both LayerNorms and
 * psi for the centre token only: the centre's output does not depend on the other tokens'
 * last-block outputs, so the result is identical while the last block's token-wise work shrinks
 * by a factor T (about 15% of a 4-layer model); it can be switched off to test exactly that. Its
 * keys and values are not formed either in the forward, the plain backward and the JVP: the
 * scores and the value sum go through the block input rows (centre_attention_forward,
 * centre_attention_jvp); only the reverse-over-forward forms them and their tangents, once per
 * JVP when called (centre_kvt). (2) Every tangent pass is direction-major, so the
 * linear layers process all directions in one sgemm of ntan * rows; attention, LayerNorm and the
 * activations loop over directions because they read the primal. (3) The backward is written
 * once for the plain backward (ntan = 0) and the reverse-over-forward (ntan > 0): each layer
 * calls its _backward for the primal cotangent and its _jvp_backward per direction. (4) The
 * particle-mode divergence needs N * dim one-hot JVPs; they run in chunks of max_tan directions,
 * each chunk followed by its reverse-over-forward when a gradient is wanted, so memory is bounded
 * by max_tan, not by N * dim.
 */
#include "sgm/nn_models.h"

#include "nn_stack.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  SgmNnBuf qkv;                        /* (R,3C); centre-only block: kv (R,2C) then q (B,C) */
  SgmNnBuf att;                        /* (B,NH,Tq,T) probabilities; tangent face: score tangents */
  SgmNnBuf ay, ao, r1, n1, f, r2, n2;  /* (rows,C) */
  SgmNnBuf h, ha;                      /* (rows,H) */
  SgmNnBuf mean1, rstd1, mean2, rstd2; /* (rows) */
  SgmNnBuf xc;                         /* (B,C) centre rows of the block input */
  SgmNnBuf u, z; /* centre-only block (local mode, last block): (B,NH,C) u_h = W_k,h^T q_h and
                    z_h = sum_j P_hj x_j (tangent faces tu, tz; gradient faces du, dz) */
  int win, bin, wo, bo, n1w, n1b, w1, b1, w2, b2, n2w, n2b;
} Block;

/* A block's buffers except its output n2, in one order (aliasing and zeroing walk this list). */
#define NBLOCKBUF 15
static void block_bufs(Block *b, SgmNnBuf **v)
{
  SgmNnBuf *w[NBLOCKBUF] = {&b->qkv,   &b->att,   &b->ay,    &b->ao,    &b->r1,
                            &b->n1,    &b->f,     &b->r2,    &b->h,     &b->ha,
                            &b->mean1, &b->rstd1, &b->mean2, &b->rstd2, &b->xc};
  memcpy(v, w, sizeof w);
}

struct SgmNnTransformer_ {
  SgmNnTransformerConfig cfg;
  int local, T, max_batch, max_tan, centre_only, C, Cx, H, dout;
  SgmParams params;
  SgmNnArena ar;
  SgmNnStack ex, eg, dec;
  SgmNnBuf xin, gin, X0, decin;
  Block *blk;
  float *mask, *scratch;
  float *tx, *tg, *tout, *dtout; /* divergence scratch */
  int B, ntan, use_mask, div_valid;
  int kv_valid;  /* the centre-only block's keys and values (qkv.a) are those of this forward */
  int kvt_valid; /* ... and their tangents (qkv.t) those of this JVP */
  int tan_lazy;  /* this JVP left tangent faces off the centre rows unwritten (centre_tan_dense) */
  float *ts0;    /* (max_tan, max_batch, NH) centre_attention_jvp's score tangent constants */
};

static inline const float *P_(const SgmNnTransformer m, int i)
{
  return sgm_nn_param(&m->params, i);
}
static inline float *G_(const SgmNnTransformer m, int i)
{
  return sgm_nn_grad(&m->params, i);
}

static PetscErrorCode transformer_create(const SgmNnTransformerConfig *cfg, int local, int T,
                                         int max_batch, int max_tan, uint64_t seed,
                                         SgmNnTransformer *mp)
{
  SgmNnTransformer m;
  char name[SGM_NN_NAME_LEN];
  int dims[SGM_NN_MAX_STACK + 1];
  PetscFunctionBeginUser;
  PetscCheck(
      cfg->dim > 0 && cfg->gdim >= 0 && cfg->out_dim > 0 && cfg->n_layers >= 1 &&
          cfg->n_heads >= 1 && cfg->d_model % cfg->n_heads == 0 && cfg->mlp_hidden > 0 &&
          (cfg->gdim == 0 || cfg->d_model % 2 == 0),
      PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
      "transformer: need dim, out_dim, n_layers, n_heads, mlp_hidden > 0, n_heads | d_model, "
      "d_model even when gdim > 0");
  PetscCheck(cfg->embed_depth >= 0 && cfg->embed_depth < SGM_NN_MAX_STACK && cfg->dec_depth >= 0 &&
                 cfg->dec_depth < SGM_NN_MAX_STACK &&
                 (cfg->embed_depth == 0 || cfg->embed_hidden > 0) &&
                 (cfg->dec_depth == 0 || cfg->dec_hidden > 0),
             PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "transformer: bad embedding/decoder depth");
  PetscCheck(T >= 1 && max_batch > 0 && max_tan >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "transformer: tokens %d, max_batch %d, max_tan %d", T, max_batch, max_tan);
  PetscCall(PetscNew(&m));
  m->cfg = *cfg;
  m->local = local;
  m->centre_only = local;
  m->T = T;
  m->max_batch = max_batch;
  m->max_tan = max_tan;
  m->ar.max_tan = max_tan;
  m->ar.max_batch = max_batch;
  m->C = cfg->d_model;
  m->Cx = cfg->gdim > 0 ? m->C / 2 : m->C;
  m->H = cfg->mlp_hidden;
  m->dout = cfg->out_dim;
  const int C = m->C, H = m->H, L = cfg->n_layers, NH = cfg->n_heads;
  const size_t R = (size_t)max_batch * T;
  SgmNnParamBuilder pb = {&m->params, 0};
  SgmNnArena *ar = &m->ar;

  PetscCall(sgm_nn_arena_reserve(ar, &m->xin, R * cfg->dim));
  dims[0] = cfg->dim;
  for (int l = 1; l <= cfg->embed_depth; l++) dims[l] = cfg->embed_hidden;
  dims[cfg->embed_depth + 1] = m->Cx;
  PetscCall(sgm_nn_stack_define(&m->ex, &pb, ar, "embed_x", cfg->embed_depth + 1, dims, cfg->act,
                                (int)R));
  if (cfg->gdim > 0) {
    PetscCall(sgm_nn_arena_reserve(ar, &m->gin, R * cfg->gdim));
    dims[0] = cfg->gdim;
    dims[cfg->embed_depth + 1] = C - m->Cx;
    PetscCall(sgm_nn_stack_define(&m->eg, &pb, ar, "embed_g", cfg->embed_depth + 1, dims, cfg->act,
                                  (int)R));
  }
  PetscCall(sgm_nn_arena_reserve(ar, &m->X0, R * C));
  PetscCall(PetscCalloc1(L, &m->blk));
  for (int l = 0; l < L; l++) {
    Block *b = &m->blk[l];
#define ADD(field, nd, s0, s1, suffix)                                                             \
  do {                                                                                             \
    snprintf(name, sizeof name, "blocks.%d.%s", l, suffix);                                        \
    PetscCall(sgm_nn_params_add(&pb, name, nd, s0, s1, &b->field));                                \
  } while (0)
    ADD(win, 2, 3 * C, C, "attn.in_proj_weight");
    ADD(bin, 1, 3 * C, 0, "attn.in_proj_bias");
    ADD(wo, 2, C, C, "attn.out_proj.weight");
    ADD(bo, 1, C, 0, "attn.out_proj.bias");
    ADD(n1w, 1, C, 0, "norm1.weight");
    ADD(n1b, 1, C, 0, "norm1.bias");
    ADD(w1, 2, H, C, "linear1.weight");
    ADD(b1, 1, H, 0, "linear1.bias");
    ADD(w2, 2, C, H, "linear2.weight");
    ADD(b2, 1, C, 0, "linear2.bias");
    ADD(n2w, 1, C, 0, "norm2.weight");
    ADD(n2b, 1, C, 0, "norm2.bias");
#undef ADD
    /* Block l > 0 shares block 0's gradient faces for everything but its output n2 (backward
     * finishes one block before the next reuses them, block_zero_grad in between), and its
     * forward temporaries ao and f (read by no backward) entirely. */
    SgmNnBuf *b0[NBLOCKBUF], *bl[NBLOCKBUF];
    block_bufs(&m->blk[0], b0);
    block_bufs(b, bl);
    const size_t sz[NBLOCKBUF] = {R * 3 * C,
                                  (size_t)max_batch * NH * T * T,
                                  R * C,
                                  R * C,
                                  R * C,
                                  R * C,
                                  R * C,
                                  R * C,
                                  R * H,
                                  R * H,
                                  R,
                                  R,
                                  R,
                                  R,
                                  (size_t)max_batch * C};
    for (int k = 0; k < NBLOCKBUF; k++) {
      if (l == 0)
        PetscCall(sgm_nn_arena_reserve(ar, bl[k], sz[k]));
      else
        PetscCall(
            sgm_nn_arena_reserve_alias(ar, bl[k], sz[k], b0[k], bl[k] == &b->ao || bl[k] == &b->f));
    }
    PetscCall(sgm_nn_arena_reserve(ar, &b->n2, R * C));
    if (local && l == L - 1) {
      PetscCall(sgm_nn_arena_reserve(ar, &b->u, (size_t)max_batch * NH * C));
      PetscCall(sgm_nn_arena_reserve(ar, &b->z, (size_t)max_batch * NH * C));
    }
  }
  PetscCall(sgm_nn_arena_reserve(ar, &m->decin, (size_t)max_batch * C));
  dims[0] = C;
  for (int l = 1; l <= cfg->dec_depth; l++) dims[l] = cfg->dec_hidden;
  dims[cfg->dec_depth + 1] = cfg->out_dim;
  PetscCall(sgm_nn_stack_define(&m->dec, &pb, ar, "decoder", cfg->dec_depth + 1, dims, cfg->act,
                                local ? max_batch : (int)R)); /* local: the centre token only */
  PetscCall(sgm_nn_params_alloc(&pb));
  PetscCall(sgm_nn_arena_alloc(ar));

  sgm_nn_stack_init(&m->ex, &m->params, seed);
  if (cfg->gdim > 0) sgm_nn_stack_init(&m->eg, &m->params, seed);
  sgm_nn_stack_init(&m->dec, &m->params, seed);
  for (int l = 0; l < L; l++) {
    Block *b = &m->blk[l];
    sgm_nn_params_fill(&m->params, b->win, seed, sqrt(6.0 / (C + 3.0 * C)), 0.0f);
    sgm_nn_params_fill(&m->params, b->bin, seed, 0.0, 0.0f);
    sgm_nn_params_fill(&m->params, b->wo, seed, 1.0 / sqrt((double)C), 0.0f);
    sgm_nn_params_fill(&m->params, b->bo, seed, 0.0, 0.0f);
    sgm_nn_params_fill(&m->params, b->n1w, seed, 0.0, 1.0f);
    sgm_nn_params_fill(&m->params, b->n1b, seed, 0.0, 0.0f);
    sgm_nn_params_fill(&m->params, b->w1, seed, 1.0 / sqrt((double)C), 0.0f);
    sgm_nn_params_fill(&m->params, b->b1, seed, 1.0 / sqrt((double)C), 0.0f);
    sgm_nn_params_fill(&m->params, b->w2, seed, 1.0 / sqrt((double)H), 0.0f);
    sgm_nn_params_fill(&m->params, b->b2, seed, 1.0 / sqrt((double)H), 0.0f);
    sgm_nn_params_fill(&m->params, b->n2w, seed, 0.0, 1.0f);
    sgm_nn_params_fill(&m->params, b->n2b, seed, 0.0, 0.0f);
  }
  const size_t nt = (size_t)(max_tan > 0 ? max_tan : 1);
  const size_t nout = local ? (size_t)max_batch * cfg->out_dim : R * cfg->out_dim;
  PetscCall(PetscCalloc1((size_t)max_batch * T, &m->mask));
  PetscCall(PetscCalloc1(3 * (size_t)T * T + (size_t)NH * T, &m->scratch));
  PetscCall(PetscCalloc1(nt * R * cfg->dim, &m->tx));
  PetscCall(PetscCalloc1(nt * R * (cfg->gdim > 0 ? cfg->gdim : 1), &m->tg));
  PetscCall(PetscCalloc1(nt * nout, &m->tout));
  PetscCall(PetscCalloc1(nt * nout, &m->dtout));
  PetscCall(PetscCalloc1(nt * max_batch * NH, &m->ts0));
  *mp = m;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_create_particle(const SgmNnTransformerConfig *cfg, int N,
                                                  int max_batch, int max_tan, uint64_t seed,
                                                  SgmNnTransformer *m)
{
  PetscFunctionBeginUser;
  PetscCall(transformer_create(cfg, 0, N, max_batch, max_tan, seed, m));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_create_local(const SgmNnTransformerConfig *cfg, int K,
                                               int max_batch, int max_tan, uint64_t seed,
                                               SgmNnTransformer *m)
{
  PetscFunctionBeginUser;
  PetscCall(transformer_create(cfg, 1, K + 1, max_batch, max_tan, seed, m));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_destroy(SgmNnTransformer *mp)
{
  PetscFunctionBeginUser;
  if (!mp || !*mp) PetscFunctionReturn(PETSC_SUCCESS);
  SgmNnTransformer m = *mp;
  PetscCall(sgm_nn_arena_free(&m->ar));
  if (!m->params.external) {
    PetscCall(PetscFree(m->params.params));
    PetscCall(PetscFree(m->params.grads));
  }
  PetscCall(PetscFree(m->params.tensors));
  PetscCall(PetscFree(m->blk));
  PetscCall(PetscFree(m->mask));
  PetscCall(PetscFree(m->scratch));
  PetscCall(PetscFree(m->tx));
  PetscCall(PetscFree(m->tg));
  PetscCall(PetscFree(m->tout));
  PetscCall(PetscFree(m->dtout));
  PetscCall(PetscFree(m->ts0));
  PetscCall(PetscFree(*mp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

SgmParams *sgm_nn_transformer_params(SgmNnTransformer m)
{
  return &m->params;
}

void sgm_nn_transformer_set_centre_only(SgmNnTransformer m, int centre_only)
{
  m->centre_only = m->local && centre_only;
  m->div_valid = 0;
}

size_t sgm_nn_transformer_memory(SgmNnTransformer m)
{
  return sgm_nn_arena_bytes(&m->ar);
}

int sgm_nn_transformer_tokens(SgmNnTransformer m)
{
  return m->T;
}

/* Is block l computed for the centre token only? */
static inline int centre_block(const SgmNnTransformer m, int l)
{
  return m->centre_only && l == m->cfg.n_layers - 1;
}
/* Block input activation: the previous block's output or the embedding. */
static inline SgmNnBuf *block_in(SgmNnTransformer m, int l)
{
  return l == 0 ? &m->X0 : &m->blk[l - 1].n2;
}
/* The decoder's input buffer and row count. */
static inline SgmNnBuf *dec_in(SgmNnTransformer m, int *rows)
{
  const int L = m->cfg.n_layers;
  if (!m->local) {
    *rows = m->B * m->T;
    return &m->blk[L - 1].n2;
  }
  *rows = m->B;
  return m->centre_only ? &m->blk[L - 1].n2 : &m->decin;
}

/* The forward through the embeddings and the full (not centre-only) blocks runs in chunks of
 * SGM_LTF_CHUNK_WIN windows when C <= SGM_LTF_CHUNK_MAXC (the small model; the paper size keeps
 * whole-batch calls): forward_chunk. */
#define SGM_LTF_CHUNK_WIN  32
#define SGM_LTF_CHUNK_MAXC 128

/* dst[b] = src[b*T] for rows of width C (the centre token of each window), and the reverse add. */
static void gather_centre(float *dst, const float *src, int B, int T, int C)
{
  for (int b = 0; b < B; b++)
    memcpy(dst + (size_t)b * C, src + (size_t)b * T * C, (size_t)C * sizeof(float));
}
static void scatter_add_centre(float *dst, const float *src, int B, int T, int C)
{
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) dst[(size_t)b * T * C + c] += src[(size_t)b * C + c];
}

/* The centre-only block's attention without its keys and values (sgm_nn_attention_xcentre_*):
 * per head u_h = W_k,h^T q_h, scores u_h . x_j over the block input rows, z_h = sum_j P_hj x_j,
 * output W_v,h z_h + b_v,h, as GEMMs over the B centres around the per-window loops. The K, V
 * projection of all T tokens (2 C^2 multiply-adds per token forward, twice that backward) becomes
 * 2 C^2 per centre; q_h . b_k,h, the same for every key, drops out of the softmax (so b_k gets no
 * gradient from the plain backward; the reverse-over-forward keeps the keys and values, see
 * centre_kvt). Forward: q (B,C) is in place; u, z, ay and att are written. */
static void centre_attention_forward(SgmNnTransformer m, Block *b, const float *X, const float *mk,
                                     int b0, int nb)
{
  const int B = m->B, T = m->T, C = m->C, NH = m->cfg.n_heads, hs = C / NH;
  const size_t oc = (size_t)b0 * C, ou = (size_t)b0 * NH * C;
  const float *q = b->qkv.a + (size_t)B * T * 2 * C + oc;
  const float *Wk = P_(m, b->win) + (size_t)C * C, *Wv = Wk + (size_t)C * C;
  const float *bv = P_(m, b->bin) + 2 * C;
  const float scale = (float)(1.0 / sqrt((double)hs));
  for (int h = 0; h < NH; h++)
    sgm_nn_gemm(0, 0, nb, C, hs, q + h * hs, C, Wk + (size_t)h * hs * C, C, NULL, 0,
                b->u.a + ou + (size_t)h * C, NH * C);
  sgm_nn_attention_xcentre_forward(b->z.a + ou, b->att.a + (size_t)b0 * NH * T, b->u.a + ou,
                                   X + (size_t)b0 * T * C, mk ? mk + (size_t)b0 * T : NULL, nb, T,
                                   C, NH, scale);
  for (int h = 0; h < NH; h++)
    sgm_nn_gemm(0, 1, nb, hs, C, b->z.a + ou + (size_t)h * C, NH * C, Wv + (size_t)h * hs * C, C,
                bv + h * hs, 0, b->ay.a + oc + h * hs, C);
}

/* The centre block's forward up to its attention output for windows [b0, b0 + nb): the centre rows
 * xc, q = xc W_q^T + b_q, then centre_attention_forward. */
static void centre_forward_rows(SgmNnTransformer m, Block *b, const float *X, const float *mk,
                                int b0, int nb)
{
  const int T = m->T, C = m->C;
  const size_t oc = (size_t)b0 * C;
  float *q = b->qkv.a + (size_t)m->B * T * 2 * C + oc;
  gather_centre(b->xc.a + oc, X + (size_t)b0 * T * C, nb, T, C);
  sgm_nn_linear_forward(q, b->xc.a + oc, P_(m, b->win), P_(m, b->bin), nb, C, C);
  centre_attention_forward(m, b, X, mk, b0, nb);
}

/* Its plain backward, part 1 over the whole batch from ay.g and r1.g: parameter gradients of W_v,
 * b_v, dz (z.g), and xc.g = r1.g. */
static void centre_backward_params(SgmNnTransformer m, Block *b)
{
  const int B = m->B, C = m->C, NH = m->cfg.n_heads, hs = C / NH;
  const float *dY = b->ay.g, *Wv = P_(m, b->win) + (size_t)2 * C * C;
  float *dWv = G_(m, b->win) + (size_t)2 * C * C;
  for (int h = 0; h < NH; h++) {
    sgm_nn_gemm(1, 0, hs, C, B, dY + h * hs, C, b->z.a + (size_t)h * C, NH * C, NULL, 1,
                dWv + (size_t)h * hs * C, C);
    sgm_nn_gemm(0, 0, B, C, hs, dY + h * hs, C, Wv + (size_t)h * hs * C, C, NULL, 0,
                b->z.g + (size_t)h * C, NH * C);
  }
  sgm_nn_linear_backward(NULL, NULL, G_(m, b->bin) + 2 * C, dY, NULL, NULL, B, C, C);
  /* the residual's part of the centre rows' gradient, d xc = d r1 (+ the q projection's, added per
   * chunk): r1's gradient face is block 0's, which the chunked backward of the blocks below
   * overwrites chunk by chunk; xc's is not used there */
  memcpy(b->xc.g, b->r1.g, (size_t)B * C * sizeof(float));
}

/* Part 2 for windows [b0, b0 + nb): dX (the block input's gradient for these windows, from its
 * row 0: a chunk-local temporary, see backward_chunk) is overwritten: the attention's part, then
 * the centre rows get the q projection's and the residual's (xc.g); parameter gradients of W_k,
 * W_q, b_q accumulate. Reads no gradient face that the blocks below share (u, z are the centre
 * block's own; q's is written here first). */
static void centre_backward_rows(SgmNnTransformer m, Block *b, const float *X, float *dX, int b0,
                                 int nb)
{
  const int B = m->B, T = m->T, C = m->C, NH = m->cfg.n_heads, hs = C / NH;
  const size_t oc = (size_t)b0 * C, ou = (size_t)b0 * NH * C, ox = (size_t)b0 * T * C;
  const size_t okv = (size_t)B * T * 2 * C;
  const float *q = b->qkv.a + okv + oc, *Wk = P_(m, b->win) + (size_t)C * C;
  float *dq = b->qkv.g + okv + oc, *dWk = G_(m, b->win) + (size_t)C * C;
  const float scale = (float)(1.0 / sqrt((double)hs));
  sgm_nn_attention_xcentre_backward_set(dX, b->u.g + ou, m->scratch, b->z.g + ou,
                                        b->att.a + (size_t)b0 * NH * T, b->u.a + ou, X + ox, nb, T,
                                        C, NH, scale);
  for (int h = 0; h < NH; h++) {
    sgm_nn_gemm(0, 1, nb, hs, C, b->u.g + ou + (size_t)h * C, NH * C, Wk + (size_t)h * hs * C, C,
                NULL, 0, dq + h * hs, C);
    sgm_nn_gemm(1, 0, hs, C, nb, q + h * hs, C, b->u.g + ou + (size_t)h * C, NH * C, NULL, 1,
                dWk + (size_t)h * hs * C, C);
  }
  float *dxc = b->xc.g + oc;
  sgm_nn_linear_backward_input(dxc, 1, dq, P_(m, b->win), nb, C, C);
  sgm_nn_linear_backward(NULL, G_(m, b->win), G_(m, b->bin), dq, b->xc.a + oc, NULL, nb, C, C);
  scatter_add_centre(dX, dxc, nb, T, C);
}

/* The centre-only block's keys and values of every token (qkv.a, (R,2C)), for the
 * reverse-over-forward, once per forward. */
static void centre_kv(SgmNnTransformer m, Block *b, const float *X)
{
  const int C = m->C;
  if (m->kv_valid) return;
  sgm_nn_linear_forward(b->qkv.a, X, P_(m, b->win) + (size_t)C * C, P_(m, b->bin) + C, m->B * m->T,
                        C, 2 * C);
  m->kv_valid = 1;
}

/* The centre-only block's attention tangent without keys and values (the tangent of
 * centre_attention_forward, sgm_nn_attention_xcentre_jvp): qt = xc.t W_q^T, per head
 * tu_h = W_k,h^T tq_h, score tangents scale (tu_h . x_j + u_h . tx_j), tz_h = sum_j tP_hj x_j +
 * P_hj tx_j, output tangent W_v,h tz_h, as GEMMs over the ntan * B centres around the per-window
 * loops: 2 C^2 multiply-adds per centre and direction instead of the 2 C^2 per token of the keys'
 * and values' tangents (and their primal, centre_kv). The score tangents saved in att.t get the
 * constant scale tq_h . b_k,h that the softmax drops, so that they are those of the keys' form,
 * which the reverse-over-forward (transformer_backward) reads with the keys and values it forms
 * itself (centre_kvt). Writes qt (after the ntan * R rows of kvt in qkv.t), u.t, z.t, att.t, ay.t.
 */
static void centre_attention_jvp(SgmNnTransformer m, Block *b, const SgmNnBuf *Xb, int ntan)
{
  const int B = m->B, T = m->T, C = m->C, NH = m->cfg.n_heads, hs = C / NH, R = B * T;
  const int nr = ntan * B;
  const float *Wq = P_(m, b->win), *Wk = Wq + (size_t)C * C, *Wv = Wk + (size_t)C * C;
  const float *bk = P_(m, b->bin) + C;
  const float scale = (float)(1.0 / sqrt((double)hs));
  float *qt = b->qkv.t + (size_t)ntan * R * 2 * C, *s0 = m->ts0;
  sgm_nn_linear_jvp(qt, b->xc.t, Wq, nr, C, C);
  for (int h = 0; h < NH; h++)
    sgm_nn_gemm(0, 0, nr, C, hs, qt + h * hs, C, Wk + (size_t)h * hs * C, C, NULL, 0,
                b->u.t + (size_t)h * C, NH * C);
  for (int r = 0; r < nr; r++)
    for (int h = 0; h < NH; h++) {
      const float *a = qt + (size_t)r * C + h * hs, *bb = bk + h * hs;
      float s = 0.0f;
      for (int c = 0; c < hs; c++) s += a[c] * bb[c];
      s0[(size_t)r * NH + h] = scale * s;
    }
  for (int d = 0; d < ntan; d++)
    sgm_nn_attention_xcentre_jvp(b->z.t + (size_t)d * B * NH * C, b->att.t + (size_t)d * B * NH * T,
                                 m->scratch, b->u.t + (size_t)d * B * NH * C,
                                 Xb->t + (size_t)d * R * C, b->att.a, b->u.a, Xb->a,
                                 s0 + (size_t)d * B * NH, B, T, C, NH, scale);
  for (int h = 0; h < NH; h++)
    sgm_nn_gemm(0, 1, nr, hs, C, b->z.t + (size_t)h * C, NH * C, Wv + (size_t)h * hs * C, C, NULL,
                0, b->ay.t + h * hs, C);
}

/* The keys' and values' primal (centre_kv) and tangents (kvt: qkv.t, (ntan,R,2C)) of the
 * centre-only block for the reverse-over-forward, once per JVP. */
static void centre_kvt(SgmNnTransformer m, Block *b, const SgmNnBuf *Xb, int ntan)
{
  const int C = m->C;
  centre_kv(m, b, Xb->a);
  if (m->kvt_valid || !ntan) return;
  sgm_nn_linear_jvp(b->qkv.t, Xb->t, P_(m, b->win) + (size_t)C * C, ntan * m->B * m->T, C, 2 * C);
  m->kvt_valid = 1;
}

/* The forward of windows [b0, b0 + nb) through the embeddings and every full (not centre-only)
 * block, for small widths (C <= SGM_LTF_CHUNK_MAXC). Every operation there is row- or
 * window-local (and so is the K, V projection of a centre-only block, done here too), so the
 * results are bitwise those of whole-batch calls, but a chunk's activations stay in L2 from one
 * layer to the next instead of streaming through L3 (the attention's first
 * reads of q, k, v were a third of its time). xin and gin hold the inputs already. */
static void forward_chunk(SgmNnTransformer m, const float *mk, int b0, int nb)
{
  const int T = m->T, C = m->C, H = m->H, NH = m->cfg.n_heads, L = m->cfg.n_layers;
  const int Dg = m->cfg.gdim, nr = nb * T, Cx = m->Cx;
  const size_t o = (size_t)b0 * T;
  sgm_nn_stack_forward_rows(&m->ex, &m->params, m->xin.a, (int)o, nr);
  const float *ex = m->ex.pre[m->ex.nl - 1].a;
  if (Dg > 0) {
    sgm_nn_stack_forward_rows(&m->eg, &m->params, m->gin.a, (int)o, nr);
    const float *eg = m->eg.pre[m->eg.nl - 1].a;
    for (size_t r = o; r < o + (size_t)nr; r++) {
      memcpy(m->X0.a + r * C, ex + r * Cx, (size_t)Cx * sizeof(float));
      memcpy(m->X0.a + r * C + Cx, eg + r * (C - Cx), (size_t)(C - Cx) * sizeof(float));
    }
  } else {
    memcpy(m->X0.a + o * C, ex + o * C, (size_t)nr * C * sizeof(float));
  }
  for (int l = 0; l < L; l++) {
    Block *b = &m->blk[l];
    const float *X = block_in(m, l)->a + o * C;
    if (centre_block(m, l)) { /* up to its attention output; the rest per centre, after */
      centre_forward_rows(m, b, X - o * C, mk, b0, nb);
      continue;
    }
    float *qkv = b->qkv.a + o * 3 * C;
    sgm_nn_linear_forward(qkv, X, P_(m, b->win), P_(m, b->bin), nr, C, 3 * C);
    sgm_nn_attention_forward(b->ay.a + o * C, b->att.a + (size_t)b0 * NH * T * T, qkv, qkv + C,
                             qkv + 2 * C, mk ? mk + o : NULL, nb, T, T, C, NH, 3 * C, 3 * C);
    sgm_nn_linear_forward(b->ao.a + o * C, b->ay.a + o * C, P_(m, b->wo), P_(m, b->bo), nr, C, C);
    sgm_nn_residual_forward(b->r1.a + o * C, X, b->ao.a + o * C, nr * C);
    sgm_nn_layernorm_forward(b->n1.a + o * C, b->mean1.a + o, b->rstd1.a + o, b->r1.a + o * C,
                             P_(m, b->n1w), P_(m, b->n1b), nr, C);
    sgm_nn_linear_forward(b->h.a + o * H, b->n1.a + o * C, P_(m, b->w1), P_(m, b->b1), nr, C, H);
    sgm_nn_act_forward(m->cfg.act, b->ha.a + o * H, b->h.a + o * H, nr * H);
    sgm_nn_linear_forward(b->f.a + o * C, b->ha.a + o * H, P_(m, b->w2), P_(m, b->b2), nr, H, C);
    sgm_nn_residual_forward(b->r2.a + o * C, b->n1.a + o * C, b->f.a + o * C, nr * C);
    sgm_nn_layernorm_forward(b->n2.a + o * C, b->mean2.a + o, b->rstd2.a + o, b->r2.a + o * C,
                             P_(m, b->n2w), P_(m, b->n2b), nr, C);
  }
}

PetscErrorCode sgm_nn_transformer_forward(SgmNnTransformer m, float *out, const float *x,
                                          const float *g, const float *mask, int B)
{
  const int T = m->T, C = m->C, H = m->H, NH = m->cfg.n_heads, L = m->cfg.n_layers;
  const int D = m->cfg.dim, Dg = m->cfg.gdim, R = B * T;
  PetscFunctionBeginUser;
  PetscCheck(B >= 0 && B <= m->max_batch, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "transformer: batch %d > max_batch %d", B, m->max_batch);
  PetscCheck(Dg == 0 || g, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "transformer: orientations missing");
  m->B = B;
  m->ntan = 0;
  m->kv_valid = 0;
  m->kvt_valid = 0;
  m->tan_lazy = 0;
  m->div_valid = 0;
  m->use_mask = mask != NULL;
  if (m->use_mask) {
    memcpy(m->mask, mask, (size_t)R * sizeof(float));
    for (int b = 0; b < B; b++) {
      int nvalid = 0;
      for (int j = 0; j < T; j++) nvalid += mask[(size_t)b * T + j] != 0.0f;
      PetscCheck(nvalid > 0 && (!m->local || mask[(size_t)b * T] != 0.0f), PETSC_COMM_SELF,
                 PETSC_ERR_ARG_WRONG, "transformer: window %d has %s", b,
                 nvalid ? "an invalid centre token" : "no valid token");
    }
  }
  const float *mk = m->use_mask ? m->mask : NULL;

  const int chunked = C <= SGM_LTF_CHUNK_MAXC;
  if (chunked) {
    memcpy(m->xin.a, x, (size_t)R * D * sizeof(float));
    if (Dg > 0) memcpy(m->gin.a, g, (size_t)R * Dg * sizeof(float));
    for (int b0 = 0; b0 < B; b0 += SGM_LTF_CHUNK_WIN)
      forward_chunk(m, mk, b0, B - b0 < SGM_LTF_CHUNK_WIN ? B - b0 : SGM_LTF_CHUNK_WIN);
  } else {
    memcpy(m->xin.a, x, (size_t)R * D * sizeof(float));
    sgm_nn_stack_forward(&m->ex, &m->params, m->xin.a, R);
    const float *ex = m->ex.pre[m->ex.nl - 1].a;
    if (Dg > 0) {
      memcpy(m->gin.a, g, (size_t)R * Dg * sizeof(float));
      sgm_nn_stack_forward(&m->eg, &m->params, m->gin.a, R);
      const float *eg = m->eg.pre[m->eg.nl - 1].a;
      for (int r = 0; r < R; r++) {
        memcpy(m->X0.a + (size_t)r * C, ex + (size_t)r * m->Cx, (size_t)m->Cx * sizeof(float));
        memcpy(m->X0.a + (size_t)r * C + m->Cx, eg + (size_t)r * (C - m->Cx),
               (size_t)(C - m->Cx) * sizeof(float));
      }
    } else {
      memcpy(m->X0.a, ex, (size_t)R * C * sizeof(float));
    }
  }

  for (int l = 0; l < L; l++) {
    Block *b = &m->blk[l];
    const float *X = block_in(m, l)->a;
    int rows;
    const float *xres; /* the residual stream entering the block, rows x C */
    if (chunked && !centre_block(m, l)) continue; /* done in forward_chunk */
    if (!centre_block(m, l)) {
      rows = R;
      xres = X;
      sgm_nn_linear_forward(b->qkv.a, X, P_(m, b->win), P_(m, b->bin), R, C, 3 * C);
      sgm_nn_attention_forward(b->ay.a, b->att.a, b->qkv.a, b->qkv.a + C, b->qkv.a + 2 * C, mk, B,
                               T, T, C, NH, 3 * C, 3 * C);
    } else {
      rows = B;
      xres = b->xc.a;
      if (!chunked) /* else done per chunk in forward_chunk */
        centre_forward_rows(m, b, X, mk, 0, B);
    }
    sgm_nn_linear_forward(b->ao.a, b->ay.a, P_(m, b->wo), P_(m, b->bo), rows, C, C);
    sgm_nn_residual_forward(b->r1.a, xres, b->ao.a, rows * C);
    sgm_nn_layernorm_forward(b->n1.a, b->mean1.a, b->rstd1.a, b->r1.a, P_(m, b->n1w), P_(m, b->n1b),
                             rows, C);
    sgm_nn_linear_forward(b->h.a, b->n1.a, P_(m, b->w1), P_(m, b->b1), rows, C, H);
    sgm_nn_act_forward(m->cfg.act, b->ha.a, b->h.a, rows * H);
    sgm_nn_linear_forward(b->f.a, b->ha.a, P_(m, b->w2), P_(m, b->b2), rows, H, C);
    sgm_nn_residual_forward(b->r2.a, b->n1.a, b->f.a, rows * C);
    sgm_nn_layernorm_forward(b->n2.a, b->mean2.a, b->rstd2.a, b->r2.a, P_(m, b->n2w), P_(m, b->n2b),
                             rows, C);
  }
  if (m->local && !m->centre_only) gather_centre(m->decin.a, m->blk[L - 1].n2.a, B, T, C);
  int rows;
  SgmNnBuf *di = dec_in(m, &rows);
  sgm_nn_stack_forward(&m->dec, &m->params, di->a, rows);
  memcpy(out, m->dec.pre[m->dec.nl - 1].a, (size_t)rows * m->dout * sizeof(float));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Every tangent face of an MLP stack set to 0 (its JVP on a zero input tangent). */
static void stack_zero_tangents(SgmNnStack *s, int rows, int ntan)
{
  for (int l = 0; l < s->nl; l++) {
    const size_t n = (size_t)ntan * rows * s->dims[l + 1];
    memset(s->pre[l].t, 0, n * sizeof(float));
    if (l < s->nl - 1) memset(s->post[l].t, 0, n * sizeof(float));
  }
}

/* 1 if the g tangents tg (ntan, R, Dg) vanish on every token but the centres (token 0). */
static int tangent_centre_only(const SgmNnTransformer m, const float *tg, int ntan)
{
  const int B = m->B, T = m->T, Dg = m->cfg.gdim;
  for (int d = 0; d < ntan; d++)
    for (int b = 0; b < B; b++) {
      const float *t = tg + (((size_t)d * B + b) * T + 1) * Dg;
      for (size_t k = 0; k < (size_t)(T - 1) * Dg; k++)
        if (t[k] != 0.0f) return 0;
    }
  return 1;
}

/* An MLP stack's tangent on the rows (d, b, token 0) only, row (d B + b) T of its (ntan, B T)
 * tangent faces: strided GEMMs over the ntan B centre rows and the activations' tangents per row;
 * the other rows are not written. */
static void stack_jvp_centre(SgmNnStack *s, const SgmParams *p, const float *tinp, int B, int T,
                             int ntan)
{
  const float *tx = tinp;
  const int nr = ntan * B;
  for (int l = 0; l < s->nl; l++) {
    const int IC = s->dims[l], OC = s->dims[l + 1];
    sgm_nn_gemm(0, 1, nr, OC, IC, tx, T * IC, sgm_nn_param(p, s->w[l]), IC, NULL, 0, s->pre[l].t,
                T * OC);
    if (l < s->nl - 1) {
      for (int r = 0; r < nr; r++) {
        const size_t o = (size_t)r * T * OC, oa = (size_t)(r % B) * T * OC;
        sgm_nn_act_jvp_n(s->act, s->post[l].t + o, s->pre[l].t + o, s->pre[l].a + oa,
                         s->post[l].a + oa, OC, 1);
      }
      tx = s->post[l].t;
    }
  }
}

/* The first block's QKV tangent on the centre rows only: row (d, b, token 0) of X0.t is row
 * d B + b with stride T C (R = B T); the other rows of qkv.t are not written. */
static void qkv_jvp_centre(SgmNnTransformer m, Block *b, const float *Xt, int ntan)
{
  const int C = m->C, T = m->T;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ntan * m->B, 3 * C, C, 1.0f, Xt, T * C,
              P_(m, b->win), C, 0.0f, b->qkv.t, T * 3 * C);
}

/* After a JVP with tangents on the centres' g only (tan_lazy): the tangent faces that it left
 * unwritten off the centre rows (both embeddings', the first block's QKV) get their zeros, the
 * centre rows recomputed by the same calls, for the reverse-over-forward. */
static void centre_tan_dense(SgmNnTransformer m)
{
  const int B = m->B, T = m->T, C = m->C, R = B * T, ntan = m->ntan;
  if (!m->tan_lazy) return;
  stack_zero_tangents(&m->ex, R, ntan);
  stack_zero_tangents(&m->eg, R, ntan);
  stack_jvp_centre(&m->eg, &m->params, m->gin.t, B, T, ntan);
  if (!centre_block(m, 0)) {
    memset(m->blk[0].qkv.t, 0, (size_t)ntan * R * 3 * C * sizeof(float));
    qkv_jvp_centre(m, &m->blk[0], m->X0.t, ntan);
  }
  m->tan_lazy = 0;
}

PetscErrorCode sgm_nn_transformer_jvp(SgmNnTransformer m, float *tout, const float *tx,
                                      const float *tg, int ntan)
{
  const int B = m->B, T = m->T, C = m->C, H = m->H, NH = m->cfg.n_heads, L = m->cfg.n_layers;
  const int D = m->cfg.dim, Dg = m->cfg.gdim, R = B * T;
  const SgmNnAct act = m->cfg.act;
  const float *mk = m->use_mask ? m->mask : NULL;
  PetscFunctionBeginUser;
  PetscCheck(ntan >= 1 && ntan <= m->max_tan, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "transformer: %d tangent directions, max_tan %d", ntan, m->max_tan);
  m->ntan = ntan;
  m->div_valid = 0;
  m->kvt_valid = 0;
  /* Local mode, tangents in g of the centre tokens only (the divergence in g): the block input's
   * tangent is 0 on every other token, so the g embedding's tangent is computed on the centre rows
   * only (stack_jvp_centre), the first block's QKV tangent too (strided sgemm), and its attention
   * tangent reads those rows only (sgm_nn_attention_jvp_row0). The zeros on the other rows of the
   * embeddings' and the first block's QKV tangent faces, read by the reverse-over-forward only,
   * are written by it (centre_tan_dense); X0.t is written whole. */
  const int centre_tan = m->local && !tx && tg && Dg > 0 && tangent_centre_only(m, tg, ntan);
  m->tan_lazy = 0;
  if (tx) {
    memcpy(m->xin.t, tx, (size_t)ntan * R * D * sizeof(float));
    sgm_nn_stack_jvp(&m->ex, &m->params, m->xin.t, R, ntan);
  } else {
    /* no position tangent: every tangent of the position embedding is 0 (what its JVP would
     * compute), so write the zeros instead of running 2 sgemm per layer on zero input */
    memset(m->xin.t, 0, (size_t)ntan * R * D * sizeof(float));
    if (!centre_tan) stack_zero_tangents(&m->ex, R, ntan);
  }
  const float *ext = m->ex.pre[m->ex.nl - 1].t;
  if (centre_tan) {
    const int Cg = C - m->Cx;
    memcpy(m->gin.t, tg, (size_t)ntan * R * Dg * sizeof(float));
    stack_jvp_centre(&m->eg, &m->params, m->gin.t, B, T, ntan);
    const float *egt = m->eg.pre[m->eg.nl - 1].t;
    memset(m->X0.t, 0, (size_t)ntan * R * C * sizeof(float));
    for (size_t r = 0; r < (size_t)ntan * R; r += T)
      memcpy(m->X0.t + r * C + m->Cx, egt + r * Cg, (size_t)Cg * sizeof(float));
  } else if (Dg > 0) {
    if (tg)
      memcpy(m->gin.t, tg, (size_t)ntan * R * Dg * sizeof(float));
    else
      memset(m->gin.t, 0, (size_t)ntan * R * Dg * sizeof(float));
    sgm_nn_stack_jvp(&m->eg, &m->params, m->gin.t, R, ntan);
    const float *egt = m->eg.pre[m->eg.nl - 1].t;
    for (size_t r = 0; r < (size_t)ntan * R; r++) {
      memcpy(m->X0.t + r * C, ext + r * m->Cx, (size_t)m->Cx * sizeof(float));
      memcpy(m->X0.t + r * C + m->Cx, egt + r * (C - m->Cx), (size_t)(C - m->Cx) * sizeof(float));
    }
  } else {
    memcpy(m->X0.t, ext, (size_t)ntan * R * C * sizeof(float));
  }

  for (int l = 0; l < L; l++) {
    Block *b = &m->blk[l];
    const SgmNnBuf *Xb = block_in(m, l);
    int rows;
    const float *xres_t;
    if (!centre_block(m, l)) {
      rows = R;
      xres_t = Xb->t;
      if (l == 0 && centre_tan) /* the centre rows only; the others' zeros: centre_tan_dense */
        qkv_jvp_centre(m, b, Xb->t, ntan);
      else
        sgm_nn_linear_jvp(b->qkv.t, Xb->t, P_(m, b->win), ntan * R, C, 3 * C);
      for (int d = 0; d < ntan; d++) {
        const float *qt = b->qkv.t + (size_t)d * R * 3 * C;
        if (l == 0 && centre_tan) /* q, k, v tangents on the centre tokens only */
          sgm_nn_attention_jvp_row0(b->ay.t + (size_t)d * R * C,
                                    b->att.t + (size_t)d * B * NH * T * T, m->scratch, qt, qt + C,
                                    qt + 2 * C, b->att.a, b->ay.a, b->qkv.a, b->qkv.a + C,
                                    b->qkv.a + 2 * C, B, T, T, C, NH, 3 * C, 3 * C);
        else
          sgm_nn_attention_jvp(b->ay.t + (size_t)d * R * C, b->att.t + (size_t)d * B * NH * T * T,
                               m->scratch, qt, qt + C, qt + 2 * C, b->att.a, b->qkv.a, b->qkv.a + C,
                               b->qkv.a + 2 * C, mk, B, T, T, C, NH, 3 * C, 3 * C);
      }
    } else {
      rows = B;
      for (int d = 0; d < ntan; d++)
        gather_centre(b->xc.t + (size_t)d * B * C, Xb->t + (size_t)d * R * C, B, T, C);
      xres_t = b->xc.t;
      centre_attention_jvp(m, b, Xb, ntan);
    }
    const size_t nC = (size_t)rows * C, nH = (size_t)rows * H;
    sgm_nn_linear_jvp(b->ao.t, b->ay.t, P_(m, b->wo), ntan * rows, C, C);
    sgm_nn_residual_forward(b->r1.t, xres_t, b->ao.t, (int)(ntan * nC));
    for (int d = 0; d < ntan; d++)
      sgm_nn_layernorm_jvp(b->n1.t + d * nC, b->r1.t + d * nC, b->r1.a, P_(m, b->n1w), b->mean1.a,
                           b->rstd1.a, rows, C);
    sgm_nn_linear_jvp(b->h.t, b->n1.t, P_(m, b->w1), ntan * rows, C, H);
    sgm_nn_act_jvp_n(act, b->ha.t, b->h.t, b->h.a, b->ha.a, (int)nH, ntan);
    sgm_nn_linear_jvp(b->f.t, b->ha.t, P_(m, b->w2), ntan * rows, H, C);
    sgm_nn_residual_forward(b->r2.t, b->n1.t, b->f.t, (int)(ntan * nC));
    for (int d = 0; d < ntan; d++)
      sgm_nn_layernorm_jvp(b->n2.t + d * nC, b->r2.t + d * nC, b->r2.a, P_(m, b->n2w), b->mean2.a,
                           b->rstd2.a, rows, C);
  }
  if (m->local && !m->centre_only)
    for (int d = 0; d < ntan; d++)
      gather_centre(m->decin.t + (size_t)d * B * C, m->blk[L - 1].n2.t + (size_t)d * R * C, B, T,
                    C);
  int rows;
  SgmNnBuf *di = dec_in(m, &rows);
  sgm_nn_stack_jvp(&m->dec, &m->params, di->t, rows, ntan);
  memcpy(tout, m->dec.pre[m->dec.nl - 1].t, (size_t)ntan * rows * m->dout * sizeof(float));
  m->tan_lazy = centre_tan;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Backward through forward (ntan = 0) or through forward and tangent (ntan > 0), from the
 * gradients already placed on the decoder output (g and, for ntan > 0, gt faces). */
static void transformer_backward(SgmNnTransformer m, int ntan)
{
  const int B = m->B, T = m->T, C = m->C, H = m->H, NH = m->cfg.n_heads, L = m->cfg.n_layers;
  const int Dg = m->cfg.gdim, R = B * T;
  const SgmNnAct act = m->cfg.act;
  SgmParams *p = &m->params;
  float *scr = m->scratch;
  int rows;
  SgmNnBuf *di = dec_in(m, &rows);
  sgm_nn_stack_backward(&m->dec, p, di->a, di->t, di->g, di->gt, rows, ntan);
  if (m->local && !m->centre_only) {
    SgmNnBuf *n2 = &m->blk[L - 1].n2;
    scatter_add_centre(n2->g, m->decin.g, B, T, C);
    for (int d = 0; d < ntan; d++)
      scatter_add_centre(n2->gt + (size_t)d * R * C, m->decin.gt + (size_t)d * B * C, B, T, C);
  }
  for (int l = L - 1; l >= 0; l--) {
    Block *b = &m->blk[l];
    SgmNnBuf *Xb = block_in(m, l);
    const int cb = centre_block(m, l);
    if (l < L - 1) { /* the gradient faces shared with the block above: dead now, cleared */
      SgmNnBuf *b0[NBLOCKBUF];
      block_bufs(&m->blk[0], b0);
      for (int k = 0; k < NBLOCKBUF; k++) sgm_nn_buf_zero_grad(&m->ar, b0[k], B, ntan);
    }
    rows = cb ? B : R;
    const size_t nC = (size_t)rows * C, nH = (size_t)rows * H;
    /* norm2, residual 2 */
    sgm_nn_layernorm_backward(b->r2.g, G_(m, b->n2w), G_(m, b->n2b), b->n2.g, b->r2.a,
                              P_(m, b->n2w), b->mean2.a, b->rstd2.a, rows, C);
    for (int d = 0; d < ntan; d++)
      sgm_nn_layernorm_jvp_backward(b->r2.g, b->r2.gt + d * nC, G_(m, b->n2w), b->n2.gt + d * nC,
                                    b->r2.a, b->r2.t + d * nC, P_(m, b->n2w), b->mean2.a,
                                    b->rstd2.a, rows, C);
    sgm_nn_residual_backward(b->n1.g, b->f.g, b->r2.g, (int)nC);
    sgm_nn_residual_backward(b->n1.gt, b->f.gt, b->r2.gt, (int)(ntan * nC));
    /* psi */
    sgm_nn_linear_backward(b->ha.g, G_(m, b->w2), G_(m, b->b2), b->f.g, b->ha.a, P_(m, b->w2), rows,
                           H, C);
    if (ntan)
      sgm_nn_linear_jvp_backward(b->ha.gt, G_(m, b->w2), b->f.gt, b->ha.t, P_(m, b->w2),
                                 ntan * rows, H, C);
    sgm_nn_act_backward_y(act, b->h.g, b->ha.g, b->h.a, b->ha.a, (int)nH);
    if (ntan > 0)
      sgm_nn_act_jvp_backward_n(act, b->h.g, b->h.gt, b->ha.gt, b->h.a, b->ha.a, b->h.t, (int)nH,
                                ntan);
    sgm_nn_linear_backward(b->n1.g, G_(m, b->w1), G_(m, b->b1), b->h.g, b->n1.a, P_(m, b->w1), rows,
                           C, H);
    if (ntan)
      sgm_nn_linear_jvp_backward(b->n1.gt, G_(m, b->w1), b->h.gt, b->n1.t, P_(m, b->w1),
                                 ntan * rows, C, H);
    /* norm1, residual 1 */
    sgm_nn_layernorm_backward(b->r1.g, G_(m, b->n1w), G_(m, b->n1b), b->n1.g, b->r1.a,
                              P_(m, b->n1w), b->mean1.a, b->rstd1.a, rows, C);
    for (int d = 0; d < ntan; d++)
      sgm_nn_layernorm_jvp_backward(b->r1.g, b->r1.gt + d * nC, G_(m, b->n1w), b->n1.gt + d * nC,
                                    b->r1.a, b->r1.t + d * nC, P_(m, b->n1w), b->mean1.a,
                                    b->rstd1.a, rows, C);
    SgmNnBuf *xres = cb ? &b->xc : Xb;
    sgm_nn_residual_backward(xres->g, b->ao.g, b->r1.g, (int)nC);
    sgm_nn_residual_backward(xres->gt, b->ao.gt, b->r1.gt, (int)(ntan * nC));
    /* out_proj */
    sgm_nn_linear_backward(b->ay.g, G_(m, b->wo), G_(m, b->bo), b->ao.g, b->ay.a, P_(m, b->wo),
                           rows, C, C);
    if (ntan)
      sgm_nn_linear_jvp_backward(b->ay.gt, G_(m, b->wo), b->ao.gt, b->ay.t, P_(m, b->wo),
                                 ntan * rows, C, C);
    /* attention and in_proj */
    if (!cb) {
      const float *q = b->qkv.a;
      float *dq = b->qkv.g;
      sgm_nn_attention_backward(dq, dq + C, dq + 2 * C, scr, b->ay.g, b->att.a, q, q + C, q + 2 * C,
                                B, T, T, C, NH, 3 * C, 3 * C);
      for (int d = 0; d < ntan; d++) {
        const size_t o = (size_t)d * R * 3 * C;
        const float *qt = b->qkv.t + o;
        float *dqt = b->qkv.gt + o;
        sgm_nn_attention_jvp_backward(dq, dq + C, dq + 2 * C, dqt, dqt + C, dqt + 2 * C, scr,
                                      b->ay.gt + (size_t)d * R * C, b->att.a,
                                      b->att.t + (size_t)d * B * NH * T * T, q, q + C, q + 2 * C,
                                      qt, qt + C, qt + 2 * C, B, T, T, C, NH, 3 * C, 3 * C);
      }
      sgm_nn_linear_backward(Xb->g, G_(m, b->win), G_(m, b->bin), b->qkv.g, Xb->a, P_(m, b->win), R,
                             C, 3 * C);
      if (ntan)
        sgm_nn_linear_jvp_backward(Xb->gt, G_(m, b->win), b->qkv.gt, Xb->t, P_(m, b->win), ntan * R,
                                   C, 3 * C);
    } else {
      centre_kvt(m, b, Xb, ntan);
      const float *kv = b->qkv.a, *q = b->qkv.a + (size_t)R * 2 * C;
      float *dkv = b->qkv.g, *dq = b->qkv.g + (size_t)R * 2 * C;
      const float *kvt = b->qkv.t, *qt = b->qkv.t + (size_t)ntan * R * 2 * C;
      float *dkvt = b->qkv.gt, *dqt = b->qkv.gt + (size_t)ntan * R * 2 * C;
      sgm_nn_attention_backward(dq, dkv, dkv + C, scr, b->ay.g, b->att.a, q, kv, kv + C, B, 1, T, C,
                                NH, C, 2 * C);
      for (int d = 0; d < ntan; d++) {
        const size_t okv = (size_t)d * R * 2 * C, oq = (size_t)d * B * C;
        sgm_nn_attention_jvp_backward(dq, dkv, dkv + C, dqt + oq, dkvt + okv, dkvt + okv + C, scr,
                                      b->ay.gt + oq, b->att.a, b->att.t + (size_t)d * B * NH * T, q,
                                      kv, kv + C, qt + oq, kvt + okv, kvt + okv + C, B, 1, T, C, NH,
                                      C, 2 * C);
      }
      const float *Wq = P_(m, b->win), *Wkv = P_(m, b->win) + (size_t)C * C;
      float *dWq = G_(m, b->win), *dWkv = G_(m, b->win) + (size_t)C * C;
      sgm_nn_linear_backward(b->xc.g, dWq, G_(m, b->bin), dq, b->xc.a, Wq, B, C, C);
      sgm_nn_linear_backward(Xb->g, dWkv, G_(m, b->bin) + C, dkv, Xb->a, Wkv, R, C, 2 * C);
      if (ntan) {
        sgm_nn_linear_jvp_backward(b->xc.gt, dWq, dqt, b->xc.t, Wq, ntan * B, C, C);
        sgm_nn_linear_jvp_backward(Xb->gt, dWkv, dkvt, Xb->t, Wkv, ntan * R, C, 2 * C);
      }
      scatter_add_centre(Xb->g, b->xc.g, B, T, C);
      for (int d = 0; d < ntan; d++)
        scatter_add_centre(Xb->gt + (size_t)d * R * C, b->xc.gt + (size_t)d * B * C, B, T, C);
    }
  }
  /* embeddings */
  SgmNnBuf *exo = &m->ex.pre[m->ex.nl - 1];
  for (size_t r = 0; r < (size_t)R; r++)
    for (int c = 0; c < m->Cx; c++) exo->g[r * m->Cx + c] += m->X0.g[r * C + c];
  for (size_t r = 0; r < (size_t)ntan * R; r++)
    for (int c = 0; c < m->Cx; c++) exo->gt[r * m->Cx + c] += m->X0.gt[r * C + c];
  sgm_nn_stack_backward(&m->ex, p, m->xin.a, m->xin.t, m->xin.g, NULL, R, ntan);
  if (Dg > 0) {
    SgmNnBuf *ego = &m->eg.pre[m->eg.nl - 1];
    const int Cg = C - m->Cx;
    for (size_t r = 0; r < (size_t)R; r++)
      for (int c = 0; c < Cg; c++) ego->g[r * Cg + c] += m->X0.g[r * C + m->Cx + c];
    for (size_t r = 0; r < (size_t)ntan * R; r++)
      for (int c = 0; c < Cg; c++) ego->gt[r * Cg + c] += m->X0.gt[r * C + m->Cx + c];
    sgm_nn_stack_backward(&m->eg, p, m->gin.a, m->gin.t, m->gin.g, NULL, R, ntan);
  }
}

/* dinp (rows,C) = dout (rows,OC) W (OC,C), or += with acc; dW (OC,C) += dout^T inp; db += the
 * column sums of dout. */
static void lin_bwd(float *dinp, int acc, float *dW, float *db, const float *dout, const float *inp,
                    const float *W, int rows, int C, int OC)
{
  if (rows <= 0) return;
  if (dinp) sgm_nn_linear_backward_input(dinp, acc, dout, W, rows, C, OC);
  sgm_nn_linear_backward(NULL, dW, db, dout, inp, W, rows, C, OC);
}

/* The plain backward (ntan = 0) from the gradient on the decoder output: the same sums as
 * transformer_backward(m, 0) in the same order, but every activation gradient is written by its
 * first producer instead of accumulated onto a zeroed face, so the arena's gradient slab is
 * never cleared (that memset alone was ~10% of a small-model training step), and the residual
 * branches reuse their input gradient instead of copying it: the gradient of r2 serves as that of
 * f and, after the linear1 backward adds onto it, as that of n1; the gradient of r1 serves as
 * that of ao. Parameter gradients accumulate as always. */
/* transformer_backward_plain for windows [b0, b0 + nb) through the full blocks l <= lc and the
 * embeddings, at small widths (as forward_chunk): every layer there is row- or window-local but
 * the parameter gradients, which accumulate chunk after chunk. The gradients on the output of
 * block lc are complete before the first chunk. */
static void backward_chunk(SgmNnTransformer m, int lc, int b0, int nb, int top_at_zero)
{
  const int T = m->T, C = m->C, H = m->H, NH = m->cfg.n_heads, Dg = m->cfg.gdim;
  const int nr = nb * T, Cx = m->Cx;
  const size_t o = (size_t)b0 * T;
  const SgmNnAct act = m->cfg.act;
  SgmParams *p = &m->params;
  /* Every activation gradient here but the block input's is a temporary of this chunk (the
   * parameter gradients accumulate): they sit at row 0 of their faces, the same memory for every
   * chunk, so it stays in cache instead of a fresh 1.3 MB per chunk (write-allocated from memory).
   * The gradient on the output of block lc comes at rows o, or at row 0 with top_at_zero (as the
   * caller wrote it); the blocks below pass theirs at row 0 (go). */
  size_t go = top_at_zero ? 0 : o;
  for (int l = lc; l >= 0; l--) {
    Block *b = &m->blk[l];
    SgmNnBuf *Xb = block_in(m, l);
    float *r2g = b->r2.g, *r1g = b->r1.g, *hg = b->h.g, *hag = b->ha.g, *ayg = b->ay.g;
    sgm_nn_layernorm_backward_set(r2g, G_(m, b->n2w), G_(m, b->n2b), b->n2.g + go * C,
                                  b->r2.a + o * C, P_(m, b->n2w), b->mean2.a + o, b->rstd2.a + o,
                                  nr, C);
    lin_bwd(hag, 0, G_(m, b->w2), G_(m, b->b2), r2g, b->ha.a + o * H, P_(m, b->w2), nr, H, C);
    sgm_nn_act_backward_y_set(act, hg, hag, b->h.a + o * H, b->ha.a + o * H, nr * H);
    lin_bwd(r2g, 1, G_(m, b->w1), G_(m, b->b1), hg, b->n1.a + o * C, P_(m, b->w1), nr, C, H);
    sgm_nn_layernorm_backward_set(r1g, G_(m, b->n1w), G_(m, b->n1b), r2g, b->r1.a + o * C,
                                  P_(m, b->n1w), b->mean1.a + o, b->rstd1.a + o, nr, C);
    lin_bwd(ayg, 0, G_(m, b->wo), G_(m, b->bo), r1g, b->ay.a + o * C, P_(m, b->wo), nr, C, C);
    const float *q = b->qkv.a + o * 3 * C;
    float *dq = b->qkv.g, *dX = Xb->g;
    sgm_nn_attention_backward_set(dq, dq + C, dq + 2 * C, m->scratch, ayg,
                                  b->att.a + (size_t)b0 * NH * T * T, q, q + C, q + 2 * C, nb, T, T,
                                  C, NH, 3 * C, 3 * C);
    lin_bwd(dX, 0, G_(m, b->win), G_(m, b->bin), dq, Xb->a + o * C, P_(m, b->win), nr, C, 3 * C);
    sgm_nn_residual_forward(dX, dX, r1g, nr * C);
    go = 0;
  }
  /* the embeddings' gradient faces as chunk-local temporaries too (row 0); the input gradients
   * (xin.g, gin.g, read by sgm_nn_transformer_input_grad) at the chunk's rows */
  SgmNnBuf *exo = &m->ex.pre[m->ex.nl - 1];
  const float *dX0 = m->X0.g + go * C; /* the chunk's X0 gradient, its row 0 */
  for (size_t r = 0; r < (size_t)nr; r++)
    memcpy(exo->g + r * Cx, dX0 + r * C, (size_t)Cx * sizeof(float));
  sgm_nn_stack_backward_set_rows(&m->ex, p, m->xin.a, m->xin.g, (int)o, 0, nr);
  if (Dg > 0) {
    SgmNnBuf *ego = &m->eg.pre[m->eg.nl - 1];
    const int Cg = C - Cx;
    for (size_t r = 0; r < (size_t)nr; r++)
      memcpy(ego->g + r * Cg, dX0 + r * C + Cx, (size_t)Cg * sizeof(float));
    sgm_nn_stack_backward_set_rows(&m->eg, p, m->gin.a, m->gin.g, (int)o, 0, nr);
  }
}

static void transformer_backward_plain(SgmNnTransformer m)
{
  const int B = m->B, T = m->T, C = m->C, H = m->H, NH = m->cfg.n_heads, L = m->cfg.n_layers;
  const int Dg = m->cfg.gdim, R = B * T;
  const SgmNnAct act = m->cfg.act;
  SgmParams *p = &m->params;
  float *scr = m->scratch;
  int rows;
  SgmNnBuf *di = dec_in(m, &rows);
  sgm_nn_stack_backward_set(&m->dec, p, di->a, di->g, rows);
  if (m->local && !m->centre_only) {
    SgmNnBuf *n2 = &m->blk[L - 1].n2;
    memset(n2->g, 0, (size_t)R * C * sizeof(float));
    scatter_add_centre(n2->g, m->decin.g, B, T, C);
  }
  const int chunked = C <= SGM_LTF_CHUNK_MAXC;
  for (int l = L - 1; l >= 0; l--) {
    Block *b = &m->blk[l];
    SgmNnBuf *Xb = block_in(m, l);
    const int cb = centre_block(m, l);
    if (chunked && !cb) { /* this block, those below and the embeddings: per window chunk */
      for (int b0 = 0; b0 < B; b0 += SGM_LTF_CHUNK_WIN)
        backward_chunk(m, l, b0, B - b0 < SGM_LTF_CHUNK_WIN ? B - b0 : SGM_LTF_CHUNK_WIN, 0);
      return;
    }
    rows = cb ? B : R;
    /* norm2; residual 2: d f = d r2 */
    sgm_nn_layernorm_backward_set(b->r2.g, G_(m, b->n2w), G_(m, b->n2b), b->n2.g, b->r2.a,
                                  P_(m, b->n2w), b->mean2.a, b->rstd2.a, rows, C);
    /* psi */
    lin_bwd(b->ha.g, 0, G_(m, b->w2), G_(m, b->b2), b->r2.g, b->ha.a, P_(m, b->w2), rows, H, C);
    sgm_nn_act_backward_y_set(act, b->h.g, b->ha.g, b->h.a, b->ha.a, rows * H);
    /* d n1 = d r2 (residual 2) + d h W1, accumulated in r2's gradient face */
    lin_bwd(b->r2.g, 1, G_(m, b->w1), G_(m, b->b1), b->h.g, b->n1.a, P_(m, b->w1), rows, C, H);
    /* norm1; residual 1: d ao = d r1 */
    sgm_nn_layernorm_backward_set(b->r1.g, G_(m, b->n1w), G_(m, b->n1b), b->r2.g, b->r1.a,
                                  P_(m, b->n1w), b->mean1.a, b->rstd1.a, rows, C);
    lin_bwd(b->ay.g, 0, G_(m, b->wo), G_(m, b->bo), b->r1.g, b->ay.a, P_(m, b->wo), rows, C, C);
    /* attention, in_proj, and the residual's d X += d r1 */
    if (!cb) {
      const float *q = b->qkv.a;
      float *dq = b->qkv.g;
      sgm_nn_attention_backward_set(dq, dq + C, dq + 2 * C, scr, b->ay.g, b->att.a, q, q + C,
                                    q + 2 * C, B, T, T, C, NH, 3 * C, 3 * C);
      lin_bwd(Xb->g, 0, G_(m, b->win), G_(m, b->bin), dq, Xb->a, P_(m, b->win), R, C, 3 * C);
      sgm_nn_residual_forward(Xb->g, Xb->g, b->r1.g, R * C);
    } else {
      centre_backward_params(m, b);
      if (chunked) { /* per window chunk, each followed by the blocks below and the embeddings */
        for (int b0 = 0; b0 < B; b0 += SGM_LTF_CHUNK_WIN) {
          const int nb = B - b0 < SGM_LTF_CHUNK_WIN ? B - b0 : SGM_LTF_CHUNK_WIN;
          centre_backward_rows(m, b, Xb->a, Xb->g, b0, nb);
          backward_chunk(m, l - 1, b0, nb, 1);
        }
        return;
      }
      centre_backward_rows(m, b, Xb->a, Xb->g, 0, B);
    }
  }
  /* embeddings */
  SgmNnBuf *exo = &m->ex.pre[m->ex.nl - 1];
  for (size_t r = 0; r < (size_t)R; r++)
    memcpy(exo->g + r * m->Cx, m->X0.g + r * C, (size_t)m->Cx * sizeof(float));
  sgm_nn_stack_backward_set(&m->ex, p, m->xin.a, m->xin.g, R);
  if (Dg > 0) {
    SgmNnBuf *ego = &m->eg.pre[m->eg.nl - 1];
    const int Cg = C - m->Cx;
    for (size_t r = 0; r < (size_t)R; r++)
      memcpy(ego->g + r * Cg, m->X0.g + r * C + m->Cx, (size_t)Cg * sizeof(float));
    sgm_nn_stack_backward_set(&m->eg, p, m->gin.a, m->gin.g, R);
  }
}

static size_t out_size(const SgmNnTransformer m)
{
  return (size_t)(m->local ? m->B : m->B * m->T) * m->dout;
}

PetscErrorCode sgm_nn_transformer_backward(SgmNnTransformer m, const float *dout)
{
  PetscFunctionBeginUser;
  memcpy(m->dec.pre[m->dec.nl - 1].g, dout, out_size(m) * sizeof(float));
  transformer_backward_plain(m);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_jvp_backward(SgmNnTransformer m, const float *dout,
                                               const float *dtout)
{
  const int ntan = m->ntan;
  SgmNnBuf *o = &m->dec.pre[m->dec.nl - 1];
  PetscFunctionBeginUser;
  PetscCheck(ntan > 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "transformer: jvp_backward before jvp");
  centre_tan_dense(m);
  sgm_nn_arena_zero_grad(&m->ar, m->B, ntan);
  if (dout) memcpy(o->g, dout, out_size(m) * sizeof(float));
  memcpy(o->gt, dtout, (size_t)ntan * out_size(m) * sizeof(float));
  transformer_backward(m, ntan);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_input_grad(SgmNnTransformer m, float *dx, float *dg)
{
  const size_t R = (size_t)m->B * m->T;
  PetscFunctionBeginUser;
  if (dx)
    for (size_t i = 0; i < R * m->cfg.dim; i++) dx[i] += m->xin.g[i];
  if (dg && m->cfg.gdim > 0)
    for (size_t i = 0; i < R * m->cfg.gdim; i++) dg[i] += m->gin.g[i];
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Divergence geometry: input width, first score component, number of directions. */
static PetscErrorCode div_setup(const SgmNnTransformer m, SgmNnInput which, int *din, int *o0,
                                int *ndir)
{
  const int D = m->cfg.dim, Dg = m->cfg.gdim;
  PetscFunctionBeginUser;
  *din = which == SGM_NN_INPUT_X ? D : Dg;
  PetscCheck(*din > 0, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "transformer: no such input");
  *o0 = (which == SGM_NN_INPUT_G && m->dout == D + Dg) ? D : 0;
  PetscCheck(*o0 + *din <= m->dout, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "transformer: out_dim %d has no score part for an input of width %d", m->dout, *din);
  *ndir = m->local ? *din : m->T * *din;
  PetscCheck(m->max_tan >= (m->local ? *din : 1), PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "transformer: divergence needs max_tan >= %d", m->local ? *din : 1);
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* One-hot tangents for directions [d0, d0 + nc) into m->tx or m->tg. */
static void div_tangents(SgmNnTransformer m, SgmNnInput which, int din, int d0, int nc)
{
  const int B = m->B, T = m->T, R = B * T;
  float *t = which == SGM_NN_INPUT_X ? m->tx : m->tg;
  memset(t, 0, (size_t)nc * R * din * sizeof(float));
  for (int k = 0; k < nc; k++) {
    const int d = d0 + k;
    float *tk = t + (size_t)k * R * din;
    if (!m->local) {
      const int i = d / din, a = d % din; /* particle i, coordinate a */
      for (int b = 0; b < B; b++) tk[((size_t)b * T + i) * din + a] = 1.0f;
    } else if (which == SGM_NN_INPUT_X) {
      /* d(x_j - x_c)/dx_c = -I on every neighbour; the centre's displacement is constant 0 */
      for (int b = 0; b < B; b++)
        for (int j = 1; j < T; j++) tk[((size_t)b * T + j) * din + d] = -1.0f;
    } else {
      for (int b = 0; b < B; b++) tk[(size_t)b * T * din + d] = 1.0f;
    }
  }
}

/* Index into a (nc, out) tangent output of the score component paired with direction d. */
static inline size_t div_index(const SgmNnTransformer m, int k, int b, int d, int din, int o0)
{
  const size_t os = out_size(m);
  if (!m->local) {
    const int i = d / din, a = d % din;
    return (size_t)k * os + ((size_t)b * m->T + i) * m->dout + o0 + a;
  }
  return (size_t)k * os + (size_t)b * m->dout + o0 + d;
}

PetscErrorCode sgm_nn_transformer_divergence(SgmNnTransformer m, SgmNnInput which, float *div)
{
  int din, o0, ndir;
  PetscFunctionBeginUser;
  PetscCall(div_setup(m, which, &din, &o0, &ndir));
  const int B = m->B, per = m->local ? 1 : m->T, chunk = m->max_tan;
  memset(div, 0, (size_t)B * per * sizeof(float));
  for (int d0 = 0; d0 < ndir; d0 += chunk) {
    const int nc = ndir - d0 < chunk ? ndir - d0 : chunk;
    div_tangents(m, which, din, d0, nc);
    PetscCall(sgm_nn_transformer_jvp(m, m->tout, which == SGM_NN_INPUT_X ? m->tx : NULL,
                                     which == SGM_NN_INPUT_G ? m->tg : NULL, nc));
    for (int k = 0; k < nc; k++) {
      const int d = d0 + k, i = m->local ? 0 : d / din;
      for (int b = 0; b < B; b++)
        div[(size_t)b * per + i] += m->tout[div_index(m, k, b, d, din, o0)];
    }
  }
  m->div_valid = ndir <= chunk ? 1 + (int)which : 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_transformer_divergence_backward(SgmNnTransformer m, SgmNnInput which,
                                                      const float *dout, const float *ddiv)
{
  int din, o0, ndir;
  PetscFunctionBeginUser;
  PetscCall(div_setup(m, which, &din, &o0, &ndir));
  const int B = m->B, per = m->local ? 1 : m->T, chunk = m->max_tan;
  const int reuse = m->div_valid == 1 + (int)which;
  for (int d0 = 0; d0 < ndir; d0 += chunk) {
    const int nc = ndir - d0 < chunk ? ndir - d0 : chunk;
    if (!reuse) {
      div_tangents(m, which, din, d0, nc);
      PetscCall(sgm_nn_transformer_jvp(m, m->tout, which == SGM_NN_INPUT_X ? m->tx : NULL,
                                       which == SGM_NN_INPUT_G ? m->tg : NULL, nc));
    }
    memset(m->dtout, 0, (size_t)nc * out_size(m) * sizeof(float));
    for (int k = 0; k < nc; k++) {
      const int d = d0 + k, i = m->local ? 0 : d / din;
      for (int b = 0; b < B; b++)
        m->dtout[div_index(m, k, b, d, din, o0)] = ddiv[(size_t)b * per + i];
    }
    /* the primal cotangent enters once; later chunks add only their tangent terms */
    PetscCall(sgm_nn_transformer_jvp_backward(m, d0 == 0 ? dout : NULL, m->dtout));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}
