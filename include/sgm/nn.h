/* Layers of the score networks: plain functions over flat float arrays (llm.c style).
 *
 * Owns: linear (CBLAS sgemm, PyTorch (out, in) weight layout), GELU (exact erf form), SiLU, ReLU,
 * LayerNorm, row-wise softmax, scaled dot-product multi-head attention with an optional key mask,
 * residual add, and the sinusoidal (Fourier) time embedding.
 *
 * Every layer has four functions:
 *   _forward        out from inp; saves what the others need (means, rstds, probabilities) in
 *                   buffers the caller owns. Nothing is allocated inside a layer.
 *   _backward       ACCUMULATES (+=) into input and parameter gradients (any may be NULL).
 *   _jvp            forward-mode tangent: tout = J(inp) tinp with the parameters fixed.
 *   _jvp_backward   reverse-over-forward: for a loss that depends on the tangent output, it
 *                   accumulates dtout^T d(tout)/d(inp, tinp, params) into dinp, dtinp, dparams.
 *                   The full VJP of (inp, tinp) -> (out, tout) is _backward(dout) plus
 *                   _jvp_backward(dtout); a model calls both.
 * Shape letters: B batch, T tokens (Tq queries, Tk keys), C channels, OC output channels,
 * NH heads, hs = C/NH head size, F frequencies, N element count. Arrays are row-major, the last
 * letter fastest. Weights and activations are float; reductions that feed a division (LayerNorm
 * statistics, softmax sums) accumulate in double; matrix products are sgemm (float).
 * All functions are serial and thread-safe on disjoint outputs; no MPI, no PETSc.
 */
#ifndef SGM_NN_H
#define SGM_NN_H

#include <stddef.h>

/// Pointwise activation kinds used by the models.
typedef enum { SGM_NN_ACT_GELU = 0, SGM_NN_ACT_SILU = 1, SGM_NN_ACT_RELU = 2 } SgmNnAct;

/// out (BT,OC) = inp (BT,C) @ weight^T + bias; weight (OC,C), bias (OC) or NULL. One sgemm.
void sgm_nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int BT, int C, int OC);
/// Triple-loop reference of sgm_nn_linear_forward (double accumulation), used by the tests.
void sgm_nn_linear_forward_naive(float *out, const float *inp, const float *weight,
                                 const float *bias, int BT, int C, int OC);
/// dinp (BT,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += sum_rows dout.
/// dout (BT,OC), inp (BT,C), weight (OC,C). Any of dinp, dweight, dbias may be NULL.
void sgm_nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int BT, int C, int OC);
/// dinp (BT,C) = dout @ weight (acc = 0) or += (acc != 0); dout (BT,OC), weight (OC,C).
void sgm_nn_linear_backward_input(float *dinp, int acc, const float *dout, const float *weight,
                                  int BT, int C, int OC);
/// The linear layers' GEMMs at small shapes (N a multiple of 8, N and K <= 192) run a no-packing
/// AVX2/FMA kernel instead of sgemm when the CPU has AVX2 and FMA. on = 1 / 0 switches it on
/// (where the CPU allows) / off, on = -1 only queries; returns whether it is on. For tests and
/// A/B benchmarks (not thread-safe; call before any thread uses the layers).
int sgm_nn_linear_small_gemm(int on);
/// Strided GEMM for the models' per-head products: Cm (M,N) = (acc ? Cm : 0) + bias + op(A) op(B),
/// op(A) (M,K) = A (M,K) or, ta != 0, the transpose of A (K,M); op(B) (K,N) = B (K,N) or,
/// tb != 0, the transpose of B (N,K); lda, ldb, ldc are the row strides of A, B, Cm as stored;
/// bias (N) added to every row, or NULL. The small-shape kernel where it applies (N a multiple of
/// 8, N and K <= 192, or N and M for ta), else sgemm.
void sgm_nn_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int ldb, const float *bias, int acc, float *Cm, int ldc);
/// Double-accumulation reference of sgm_nn_gemm, used by the tests.
void sgm_nn_gemm_naive(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                       int ldb, const float *bias, int acc, float *Cm, int ldc);
/// Triple-loop reference of sgm_nn_linear_backward.
void sgm_nn_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, int BT, int C, int OC);
/// tout (BT,OC) = tinp (BT,C) @ weight^T (no bias: the map is affine). BT may count several
/// tangent directions stacked row-wise, since the tangent does not depend on the primal.
void sgm_nn_linear_jvp(float *tout, const float *tinp, const float *weight, int BT, int C, int OC);
/// Reverse-over-forward of the linear tangent: dtinp (BT,C) += dtout @ weight,
/// dweight (OC,C) += dtout^T @ tinp. (No dinp term: the tangent does not depend on inp.)
void sgm_nn_linear_jvp_backward(float *dtinp, float *dweight, const float *dtout, const float *tinp,
                                const float *weight, int BT, int C, int OC);

/// out (N) = act(inp (N)). GELU is the exact form x Phi(x) (PyTorch approximate='none').
void sgm_nn_act_forward(SgmNnAct act, float *out, const float *inp, int N);
/// dinp (N) += act'(inp) dout.
void sgm_nn_act_backward(SgmNnAct act, float *dinp, const float *dout, const float *inp, int N);
/// tout (N) = act'(inp) tinp.
void sgm_nn_act_jvp(SgmNnAct act, float *tout, const float *tinp, const float *inp, int N);
/// dinp (N) += act''(inp) tinp dtout; dtinp (N) += act'(inp) dtout. Either may be NULL.
void sgm_nn_act_jvp_backward(SgmNnAct act, float *dinp, float *dtinp, const float *dtout,
                             const float *inp, const float *tinp, int N);
/// sgm_nn_act_backward given also the forward output out (N) = act(inp) (NULL: as
/// sgm_nn_act_backward): GELU's derivative then costs one exp and a division (Phi = out/inp)
/// instead of the erfc fit; equal to sgm_nn_act_backward up to an ulp of Phi.
void sgm_nn_act_backward_y(SgmNnAct act, float *dinp, const float *dout, const float *inp,
                           const float *out, int N);
/// As sgm_nn_act_backward_y but dinp (N) = act'(inp) dout, overwritten (no prior zeroing);
/// dinp may be dout (in place) for GELU only.
void sgm_nn_act_backward_y_set(SgmNnAct act, float *dinp, const float *dout, const float *inp,
                               const float *out, int N);
/// The tangent for ntan directions at once: tout (ntan,N) = act'(inp) tinp (ntan,N), the
/// derivative evaluated once per element (from out = act(inp) when out != NULL, as
/// sgm_nn_act_backward_y).
void sgm_nn_act_jvp_n(SgmNnAct act, float *tout, const float *tinp, const float *inp,
                      const float *out, int N, int ntan);
/// sgm_nn_act_jvp_backward for ntan directions: dinp (N) += sum_d act''(inp) tinp_d dtout_d,
/// dtinp_d += act'(inp) dtout_d (tinp, dtinp, dtout (ntan,N); dinp or dtinp may be NULL; out as
/// in sgm_nn_act_jvp_n).
void sgm_nn_act_jvp_backward_n(SgmNnAct act, float *dinp, float *dtinp, const float *dtout,
                               const float *inp, const float *out, const float *tinp, int N,
                               int ntan);
/// The named activations, as thin wrappers of the sgm_nn_act_* dispatchers.
void sgm_nn_gelu_forward(float *out, const float *inp, int N);
void sgm_nn_gelu_backward(float *dinp, const float *dout, const float *inp, int N);
void sgm_nn_gelu_jvp(float *tout, const float *tinp, const float *inp, int N);
void sgm_nn_silu_forward(float *out, const float *inp, int N);
void sgm_nn_silu_backward(float *dinp, const float *dout, const float *inp, int N);
void sgm_nn_silu_jvp(float *tout, const float *tinp, const float *inp, int N);
void sgm_nn_relu_forward(float *out, const float *inp, int N);
void sgm_nn_relu_backward(float *dinp, const float *dout, const float *inp, int N);
void sgm_nn_relu_jvp(float *tout, const float *tinp, const float *inp, int N);

/// LayerNorm over the last axis (eps = 1e-5, PyTorch default): out (BT,C), mean (BT), rstd (BT)
/// saved; inp (BT,C), weight (C), bias (C).
void sgm_nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int BT, int C);
/// dinp (BT,C), dweight (C), dbias (C) accumulate; dout (BT,C); mean, rstd from the forward.
void sgm_nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int BT, int C);
/// As sgm_nn_layernorm_backward but dinp is overwritten (dweight, dbias still accumulate).
void sgm_nn_layernorm_backward_set(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, const float *mean,
                                   const float *rstd, int BT, int C);
/// tout (BT,C) = weight * rstd (tinp - mean(tinp) - xhat mean(xhat tinp)), xhat the normalised
/// input. tinp (BT,C).
void sgm_nn_layernorm_jvp(float *tout, const float *tinp, const float *inp, const float *weight,
                          const float *mean, const float *rstd, int BT, int C);
/// Reverse-over-forward: dinp, dtinp (BT,C), dweight (C) accumulate from dtout (BT,C).
void sgm_nn_layernorm_jvp_backward(float *dinp, float *dtinp, float *dweight, const float *dtout,
                                   const float *inp, const float *tinp, const float *weight,
                                   const float *mean, const float *rstd, int BT, int C);

/// Row-wise softmax: probs (BT,V) from inp (BT,V); mask (V) or NULL: entries with mask 0 get
/// probability 0 (at least one entry must be valid).
void sgm_nn_softmax_forward(float *probs, const float *inp, const float *mask, int BT, int V);
/// dinp (BT,V) += probs (dout - sum(probs dout)).
void sgm_nn_softmax_backward(float *dinp, const float *dout, const float *probs, int BT, int V);
/// tout (BT,V) = probs (tinp - sum(probs tinp)).
void sgm_nn_softmax_jvp(float *tout, const float *tinp, const float *probs, int BT, int V);
/// Reverse-over-forward: dinp, dtinp (BT,V) accumulate from dtout (BT,V).
void sgm_nn_softmax_jvp_backward(float *dinp, float *dtinp, const float *dtout, const float *probs,
                                 const float *tinp, int BT, int V);

/// Multi-head scaled dot-product attention, softmax(q k^T / sqrt(hs)) v per head; two
/// cblas_sgemm per (batch, head) around a row-wise softmax.
///   out (B,Tq,C); att (B,NH,Tq,Tk) saved probabilities;
///   q (B,Tq,ldq) rows of which the first C are used, k and v (B,Tk,ldkv) likewise, so one packed
///   in_proj output qkv (B,T,3C) is passed as q = qkv, k = qkv + C, v = qkv + 2C, ldq = ldkv = 3C;
///   mask (B,Tk) or NULL: keys with mask 0 get probability 0 (each batch row needs one valid
///   key; the data of masked keys must be finite, it enters the products with weight 0).
void sgm_nn_attention_forward(float *out, float *att, const float *q, const float *k,
                              const float *v, const float *mask, int B, int Tq, int Tk, int C,
                              int NH, int ldq, int ldkv);
/// dq (B,Tq,ldq), dk, dv (B,Tk,ldkv) accumulate from dout (B,Tq,C); scratch (Tq,Tk) floats.
void sgm_nn_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int Tq, int Tk, int C, int NH, int ldq, int ldkv);
/// As sgm_nn_attention_backward but the first C columns of every row of dq, dk, dv are
/// overwritten (no prior zeroing).
void sgm_nn_attention_backward_set(float *dq, float *dk, float *dv, float *scratch,
                                   const float *dout, const float *att, const float *q,
                                   const float *k, const float *v, int B, int Tq, int Tk, int C,
                                   int NH, int ldq, int ldkv);
/// Tangent: tout (B,Tq,C) from tq (B,Tq,ldq), tk, tv (B,Tk,ldkv); saves the tangent of the
/// pre-softmax scores ts (B,NH,Tq,Tk) (0 on masked keys) for the reverse-over-forward;
/// scratch (Tq,Tk) floats.
void sgm_nn_attention_jvp(float *tout, float *ts, float *scratch, const float *tq, const float *tk,
                          const float *tv, const float *att, const float *q, const float *k,
                          const float *v, const float *mask, int B, int Tq, int Tk, int C, int NH,
                          int ldq, int ldkv);
/// As sgm_nn_attention_jvp for tangents tq, tk, tv that vanish on every row but row 0 of each
/// batch row (only those are read), in O(Tq hs + Tq Tk) per (batch, head) instead of
/// O(Tq Tk hs): out (B,Tq,C) is the forward's output on the same att, q, k, v; the same outputs
/// (ts on every (query, key) pair, 0 on masked keys); scratch 3 Tk + Tq floats.
void sgm_nn_attention_jvp_row0(float *tout, float *ts, float *scratch, const float *tq,
                               const float *tk, const float *tv, const float *att, const float *out,
                               const float *q, const float *k, const float *v, int B, int Tq,
                               int Tk, int C, int NH, int ldq, int ldkv);
/// Reverse-over-forward: from dtout (B,Tq,C) accumulates dq, dtq (B,Tq,ldq) and dk, dv, dtk, dtv
/// (B,Tk,ldkv); scratch (3,Tq,Tk) floats.
void sgm_nn_attention_jvp_backward(float *dq, float *dk, float *dv, float *dtq, float *dtk,
                                   float *dtv, float *scratch, const float *dtout, const float *att,
                                   const float *ts, const float *q, const float *k, const float *v,
                                   const float *tq, const float *tk, const float *tv, int B, int Tq,
                                   int Tk, int C, int NH, int ldq, int ldkv);
/// Loop references of the four attention functions (same arguments and scratch sizes; double
/// accumulation, masked keys skipped), used by the tests.
void sgm_nn_attention_forward_naive(float *out, float *att, const float *q, const float *k,
                                    const float *v, const float *mask, int B, int Tq, int Tk, int C,
                                    int NH, int ldq, int ldkv);
void sgm_nn_attention_backward_naive(float *dq, float *dk, float *dv, float *scratch,
                                     const float *dout, const float *att, const float *q,
                                     const float *k, const float *v, int B, int Tq, int Tk, int C,
                                     int NH, int ldq, int ldkv);
void sgm_nn_attention_jvp_naive(float *tout, float *ts, float *scratch, const float *tq,
                                const float *tk, const float *tv, const float *att, const float *q,
                                const float *k, const float *v, const float *mask, int B, int Tq,
                                int Tk, int C, int NH, int ldq, int ldkv);
void sgm_nn_attention_jvp_backward_naive(float *dq, float *dk, float *dv, float *dtq, float *dtk,
                                         float *dtv, float *scratch, const float *dtout,
                                         const float *att, const float *ts, const float *q,
                                         const float *k, const float *v, const float *tq,
                                         const float *tk, const float *tv, int B, int Tq, int Tk,
                                         int C, int NH, int ldq, int ldkv);

/// Centre-query attention read through the keys' and values' source rows (the local
/// transformer's centre-only last block, one query per window). With u_h = W_k,h^T q_h (a GEMM
/// of the caller) the scores q_h . k_j are u_h . x_j plus q_h . b_k,h, a constant over the keys
/// that the softmax drops, and sum_j P_hj v_j = W_v,h z_h + b_v,h with z_h = sum_j P_hj x_j:
///   att (B,NH,Tk) = softmax_j(scale u_h . x_j) over keys with mask != 0 (masked: 0);
///   z (B,NH,C) = sum_j P_hj x_j; u (B,NH,C); x (B,Tk,C) the block input rows; mask (B,Tk) or NULL.
void sgm_nn_attention_xcentre_forward(float *z, float *att, const float *u, const float *x,
                                      const float *mask, int B, int Tk, int C, int NH, float scale);
/// Its backward from dz (B,NH,C): du (B,NH,C) = sum_j dS_hj x_j and dx (B,Tk,C) = sum_h P_hj dz_h
/// + dS_hj u_h, both overwritten, dS = scale P (dP - sum P dP), dP_hj = dz_h . x_j;
/// scratch (NH,Tk) floats.
void sgm_nn_attention_xcentre_backward_set(float *dx, float *du, float *scratch, const float *dz,
                                           const float *att, const float *u, const float *x, int B,
                                           int Tk, int C, int NH, float scale);
/// Its tangent from tu (B,NH,C) and tx (B,Tk,C), the tangents of u and x: tz (B,NH,C) =
/// sum_j tP_hj x_j + P_hj tx_j with tP = P (ts - sum_j P ts) and the score tangents
/// ts (B,NH,Tk) = scale (tu_h . x_j + u_h . tx_j) + s0_bh (0 on masked keys), both overwritten;
/// s0 (B,NH) or NULL: a constant per (window, head) added to the score tangents, which the softmax
/// drops; pass scale tq_h . b_k,h to leave in ts the score tangents of the keys' form (those of
/// sgm_nn_attention_jvp); scratch (Tk) floats.
void sgm_nn_attention_xcentre_jvp(float *tz, float *ts, float *scratch, const float *tu,
                                  const float *tx, const float *att, const float *u, const float *x,
                                  const float *s0, int B, int Tk, int C, int NH, float scale);
/// Loop references of the three (double accumulation).
void sgm_nn_attention_xcentre_forward_naive(float *z, float *att, const float *u, const float *x,
                                            const float *mask, int B, int Tk, int C, int NH,
                                            float scale);
void sgm_nn_attention_xcentre_backward_naive(float *dx, float *du, float *scratch, const float *dz,
                                             const float *att, const float *u, const float *x,
                                             int B, int Tk, int C, int NH, float scale);
void sgm_nn_attention_xcentre_jvp_naive(float *tz, float *ts, float *scratch, const float *tu,
                                        const float *tx, const float *att, const float *u,
                                        const float *x, const float *s0, int B, int Tk, int C,
                                        int NH, float scale);

/// out (N) = a (N) + b (N); also the tangent rule (the map is linear).
void sgm_nn_residual_forward(float *out, const float *a, const float *b, int N);
/// da (N) += dout, db (N) += dout (either may be NULL).
void sgm_nn_residual_backward(float *da, float *db, const float *dout, int N);

/// Sinusoidal time embedding: out (B,2F) = [sin(freq_f t_b) | cos(freq_f t_b)];
/// t (B), freq (F) fixed angular frequencies (no parameters).
void sgm_nn_fourier_forward(float *out, const float *t, const float *freq, int B, int F);
/// dt (B) += sum_f freq_f (cos dout_sin - sin dout_cos).
void sgm_nn_fourier_backward(float *dt, const float *dout, const float *t, const float *freq, int B,
                             int F);
/// tout (B,2F) = tt_b freq_f [cos | -sin].
void sgm_nn_fourier_jvp(float *tout, const float *tt, const float *t, const float *freq, int B,
                        int F);
/// Reverse-over-forward: dt (B), dtt (B) accumulate from dtout (B,2F).
void sgm_nn_fourier_jvp_backward(float *dt, float *dtt, const float *dtout, const float *t,
                                 const float *tt, const float *freq, int B, int F);

#endif
