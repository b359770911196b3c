/* Score-network models: an MLP, the particle transformer (App. E of the active-matter paper,
 * shared/papers/002) and its spatially local per-particle variant (App. F.6).
 *
 * Owns: model lifecycles, one SgmParams slab per model (names in PyTorch state_dict style), one
 * activation arena per model sized at creation for max_batch samples and max_tan tangent
 * directions, and the forward, backward, forward-mode JVP, reverse-over-forward (backward through
 * the JVP) and exact divergence of each model. Nothing is allocated after creation.
 *
 * Calling protocol (per model M):
 *   sgm_nn_M_forward        computes the output and saves activations for a batch of B samples.
 *   sgm_nn_M_backward       after forward: ACCUMULATES dL/dparams into params->grads (only
 *                           sgm_nn_params_zero_grad clears them).
 *   sgm_nn_M_jvp            after forward: tangent outputs for ntan <= max_tan input tangents,
 *                           direction-major arrays (ntan, B, ...); parameters fixed.
 *   sgm_nn_M_jvp_backward   after jvp: accumulates the parameter gradient of a loss
 *                           L(out, tout) given dout = dL/dout (or NULL) and dtout = dL/dtout.
 *   sgm_nn_M_divergence     after forward: exact divergence of the score part of the output with
 *                           respect to the chosen input, by forward-mode JVPs with one-hot
 *                           tangents (no finite differences, no random probes).
 *   sgm_nn_M_divergence_backward   after forward: accumulates the parameter gradient of
 *                           L(out, div) given dout (or NULL) and ddiv = dL/ddiv
 *                           (reverse-over-forward through the divergence's JVPs).
 * Initialisation follows PyTorch defaults: nn.Linear weight and bias U(-1/sqrt(fan_in),
 * +1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)); nn.MultiheadAttention in_proj_weight
 * xavier_uniform U(+-sqrt(6/(C + 3C))), in_proj_bias 0, out_proj weight as Linear, out_proj bias 0;
 * LayerNorm weight 1, bias 0. Each tensor's numbers come from the counter-based RNG
 * (seed, SGM_RNG_NN_INIT, id = tensor index, step 0, sub = element / 4), so a model is the same on
 * every rank and independent of the order of creation.
 * Memory: the arena holds every activation of a max_batch forward (llm.c style, no
 * recomputation), max_tan tangents of each, and the gradients of both; gradients inside an encoder
 * block and the block's forward temporaries are shared by all blocks, and max_tan = 0 (plain
 * training, no JVP/divergence) allocates no tangent memory. The local transformer at d_e = 256,
 * L = 4, K = 64 needs about 6 MB per centre with max_tan = 0 and 17 MB with max_tan = 2
 * (sgm_nn_transformer_memory reports the exact bytes); size max_batch accordingly.
 * All functions are serial (no MPI): data-parallel training reduces params->grads outside.
 */
#ifndef SGM_NN_MODELS_H
#define SGM_NN_MODELS_H

#include "sgm/nn.h"
#include "sgm/nn_params.h"

#include <petscsys.h>
#include <stdint.h>

/* PETSc < 3.19 has no PETSC_SUCCESS. */
#ifndef PETSC_SUCCESS
#define PETSC_SUCCESS 0
#endif

/// grads[0..nparams) = 0.
void sgm_nn_params_zero_grad(SgmParams *p);
/// Index of the tensor called `name`, or -1.
int sgm_nn_params_find(const SgmParams *p, const char *name);
/// Moves a model's slab into storage owned by the caller: copies p's parameters and gradients
/// into params and grads (p->nparams floats each), frees p's own, points p at them and marks p
/// external, so that the model's destroy leaves them alone (they must outlive the model). Used to
/// put two models' parameters into one slab for one optimiser, allreduce and model file.
PetscErrorCode sgm_nn_params_rebind(SgmParams *p, float *params, float *grads);

/// Which input a divergence or JVP differentiates.
typedef enum { SGM_NN_INPUT_X = 0, SGM_NN_INPUT_G = 1 } SgmNnInput;

/* ---- MLP: s(x, t, c) = net([x | fourier(t) | c]) ---- */

typedef struct {
  int in_dim;           /* D: differentiated input x */
  int out_dim;          /* output width; 0 means in_dim (a score) */
  int cond_dim;         /* continuous conditioning inputs c, 0 for none */
  int time_freqs;       /* F: Fourier features sin/cos(freq_k t) of a time input, 0 for none */
  double time_max_freq; /* angular frequencies geometric from 1 to this (needs F >= 2) */
  int hidden;           /* width of the hidden layers */
  int depth;            /* number of hidden layers (>= 1) */
  SgmNnAct act;
} SgmNnMlpConfig;

typedef struct SgmNnMlp_ *SgmNnMlp;

/// Creates the MLP for batches of at most max_batch samples and max_tan tangent directions
/// (divergence needs max_tan >= in_dim). Parameter names: net.{0,2,4,...}.{weight,bias}.
PetscErrorCode sgm_nn_mlp_create(const SgmNnMlpConfig *cfg, int max_batch, int max_tan,
                                 uint64_t seed, SgmNnMlp *m);
PetscErrorCode sgm_nn_mlp_destroy(SgmNnMlp *m);
/// The parameter and gradient slabs (owned by the model).
SgmParams *sgm_nn_mlp_params(SgmNnMlp m);
/// out (B,out_dim) from x (B,D), t (B) or NULL (if time_freqs = 0), cond (B,cond_dim) or NULL.
PetscErrorCode sgm_nn_mlp_forward(SgmNnMlp m, float *out, const float *x, const float *t,
                                  const float *cond, int B);
/// Accumulates dL/dparams from dout (B,out_dim); dx (B,D) += dL/dx if not NULL.
PetscErrorCode sgm_nn_mlp_backward(SgmNnMlp m, float *dx, const float *dout);
/// tout (ntan,B,out_dim) = d out/d(x,t,c) . (tx, tt, tc) for tx (ntan,B,D), tt (ntan,B),
/// tc (ntan,B,cond_dim); a NULL tangent is zero (e.g. tt alone gives d out/dt).
PetscErrorCode sgm_nn_mlp_jvp(SgmNnMlp m, float *tout, const float *tx, const float *tt,
                              const float *tc, int ntan);
/// After sgm_nn_mlp_jvp: accumulates dL/dparams for L(out, tout); dout (B,out) or NULL,
/// dtout (ntan,B,out).
PetscErrorCode sgm_nn_mlp_jvp_backward(SgmNnMlp m, const float *dout, const float *dtout);
/// div (B) = sum_a d out_a / d x_a (requires out_dim == in_dim).
PetscErrorCode sgm_nn_mlp_divergence(SgmNnMlp m, float *div);
/// Accumulates dL/dparams for L(out, div); dout (B,out) or NULL, ddiv (B).
PetscErrorCode sgm_nn_mlp_divergence_backward(SgmNnMlp m, const float *dout, const float *ddiv);

/* ---- Transformers (App. E and F.6) ----
 * Token i carries phi(x_i, g_i) = [phi_x(x_i) | phi_g(g_i)] (two MLP embeddings of width C/2,
 * or phi_x alone of width C when gdim = 0), then L post-norm encoder blocks (eq. 91)
 *   X <- LayerNorm(X + MultiHead(X)),  X <- LayerNorm(X + psi(X)),  psi = Linear-act-Linear,
 * then a row-wise MLP decoder. Names: embed_x.*, embed_g.*, blocks.{l}.attn.in_proj_weight,
 * blocks.{l}.attn.in_proj_bias, blocks.{l}.attn.out_proj.{weight,bias}, blocks.{l}.norm1.*,
 * blocks.{l}.linear1.*, blocks.{l}.linear2.*, blocks.{l}.norm2.*, decoder.*.
 *
 * Particle mode: full attention over all N particles; out (B,N,out_dim); equivariant under
 * permutations of the particles.
 * Local mode: a batch element is one centre particle with its K nearest neighbours, already
 * gathered: token 0 is the centre, tokens 1..K the neighbours; inputs are the minimum-image
 * displacements dx_j = x_j - x_c (B,K+1,D) (token 0 holds 0), orientations (B,K+1,gdim) and a
 * validity mask (B,K+1) (1 valid, 0 absent; token 0 must be valid). Attention ignores invalid
 * keys. out (B,out_dim) is read from the centre token. Because only that token is read, the last
 * block computes keys/values for all tokens but queries, out_proj, norms and psi for the centre
 * only (same result, fewer flops; sgm_nn_transformer_set_centre_only(m, 0) restores the full
 * last block for testing).
 *
 * Divergence. Let o0 be the first output component of the score of the chosen input: 0 for
 * SGM_NN_INPUT_X; for SGM_NN_INPUT_G, D if out_dim == D + gdim (joint output) else 0; the score
 * part has the input's dimension.
 *   Particle mode: div (B,N), div_i = sum_a d out_{i,o0+a} / d in_{i,a}; this needs N * dim
 *   one-hot JVPs (particles interact), done in chunks of max_tan directions.
 *   Local mode: div (B), the derivative of the centre output w.r.t. the centre's own input,
 *   dim JVPs. For X the centre position enters only through the displacements: the centre token's
 *   displacement is identically 0 and d(x_j - x_c)/dx_c = -I for every neighbour, so the tangent
 *   of direction a is -e_a on every neighbour token and 0 on the centre token, and
 *   div = sum_a d s_{c,a} / d x_{c,a} includes the neighbours' tangents. (Neighbour-list changes
 *   are discontinuities and are ignored, as in the paper.) For G the tangent is e_a on the
 *   centre token only.
 */
typedef struct {
  int dim;          /* D: position (displacement) dimension */
  int gdim;         /* orientation dimension, 0 for none */
  int out_dim;      /* per-particle output width */
  int d_model;      /* C = d_e (even when gdim > 0) */
  int n_layers;     /* L encoder blocks */
  int n_heads;      /* NH, divides d_model */
  int mlp_hidden;   /* width of psi inside a block */
  int embed_hidden; /* width of the embedding MLPs' hidden layers */
  int embed_depth;  /* hidden layers of each embedding MLP (0: a single Linear) */
  int dec_hidden;   /* width of the decoder's hidden layers */
  int dec_depth;    /* hidden layers of the decoder (0: a single Linear) */
  SgmNnAct act;
} SgmNnTransformerConfig;

typedef struct SgmNnTransformer_ *SgmNnTransformer;

/// Particle transformer over N particles, batches of at most max_batch configurations.
PetscErrorCode sgm_nn_transformer_create_particle(const SgmNnTransformerConfig *cfg, int N,
                                                  int max_batch, int max_tan, uint64_t seed,
                                                  SgmNnTransformer *m);
/// Local transformer over windows of K neighbours (K+1 tokens), at most max_batch centres.
PetscErrorCode sgm_nn_transformer_create_local(const SgmNnTransformerConfig *cfg, int K,
                                               int max_batch, int max_tan, uint64_t seed,
                                               SgmNnTransformer *m);
PetscErrorCode sgm_nn_transformer_destroy(SgmNnTransformer *m);
SgmParams *sgm_nn_transformer_params(SgmNnTransformer m);
/// Local mode only: 1 (default) computes the last block for the centre token only, 0 in full.
void sgm_nn_transformer_set_centre_only(SgmNnTransformer m, int centre_only);
/// Tokens per batch element: N (particle) or K+1 (local).
int sgm_nn_transformer_tokens(SgmNnTransformer m);
/// Bytes of the activation arena (primal, gradient and max_tan tangent faces) sized at creation.
size_t sgm_nn_transformer_memory(SgmNnTransformer m);
/// Particle: x (B,N,D), g (B,N,gdim) or NULL if gdim = 0, mask (B,N) or NULL (a 0 marks a
/// padding particle that no other particle attends to), out (B,N,out_dim).
/// Local: x = displacements (B,K+1,D), g (B,K+1,gdim), mask (B,K+1) or NULL (all valid),
/// out (B,out_dim).
PetscErrorCode sgm_nn_transformer_forward(SgmNnTransformer m, float *out, const float *x,
                                          const float *g, const float *mask, int B);
/// Accumulates dL/dparams from dout (shaped as out).
PetscErrorCode sgm_nn_transformer_backward(SgmNnTransformer m, const float *dout);
/// tout (ntan, out shape) from tx (ntan,B,T,D) and tg (ntan,B,T,gdim); either may be NULL (zero).
PetscErrorCode sgm_nn_transformer_jvp(SgmNnTransformer m, float *tout, const float *tx,
                                      const float *tg, int ntan);
/// After jvp: accumulates dL/dparams for L(out, tout); dout or NULL, dtout (ntan, out shape).
PetscErrorCode sgm_nn_transformer_jvp_backward(SgmNnTransformer m, const float *dout,
                                               const float *dtout);
/// After sgm_nn_transformer_backward or _jvp_backward (or a one-chunk _divergence_backward):
/// dx (B,T,D) += dL/dx and dg (B,T,gdim) += dL/dg of the loss of that backward (either may be
/// NULL). In local mode x is the displacement input.
PetscErrorCode sgm_nn_transformer_input_grad(SgmNnTransformer m, float *dx, float *dg);
/// Attention maps for interpretation (src/nn/attention_export.c): recomputes the forward pass of
/// m for inputs shaped as in sgm_nn_transformer_forward, with every block in full (all T tokens,
/// also in local mode), and returns each block's attention probabilities averaged over the heads,
/// att (B, L, T, T) (row: query token, column: key token; masked keys 0; rows sum to 1), and, if
/// out is not NULL, every token's output out (B, T, out_dim) (in local mode token 0 is the
/// centre, the value sgm_nn_transformer_forward returns). cfg must be m's configuration.
/// Allocates its work arrays per call (analysis only). Serial.
PetscErrorCode sgm_nn_transformer_attention(SgmNnTransformer m, const SgmNnTransformerConfig *cfg,
                                            const float *x, const float *g, const float *mask,
                                            int B, float *att, float *out);
/// div: (B,N) in particle mode, (B) in local mode (see above).
PetscErrorCode sgm_nn_transformer_divergence(SgmNnTransformer m, SgmNnInput which, float *div);
/// Accumulates dL/dparams for L(out, div); dout or NULL, ddiv shaped as div.
PetscErrorCode sgm_nn_transformer_divergence_backward(SgmNnTransformer m, SgmNnInput which,
                                                      const float *dout, const float *ddiv);

#endif
