/* Private to src/nn: the activation arena, the parameter size table builder and the MLP stack
 * that the models share. Not installed; models are used through include/sgm/nn_models.h.
 *
 * An activation buffer (SgmNnBuf) has four faces carved from four slabs sized once at model
 * creation: the primal activation a (n floats), its tangents t (max_tan * n, direction-major),
 * and the gradients g (n) and gt (max_tan * n) of a loss with respect to both. A backward pass
 * zeroes the gradient slabs once and every layer accumulates into them (llm.c's grads_acts).
 */
#ifndef SGM_NN_STACK_H
#define SGM_NN_STACK_H

#include "sgm/nn.h"
#include "sgm/nn_params.h"

#include <petscsys.h>
#include <stdint.h>

#define SGM_NN_MAX_STACK 8

typedef struct SgmNnBuf_ SgmNnBuf;
struct SgmNnBuf_ {
  float *a, *t, *g, *gt;
  size_t n;        /* floats per face (tangent faces hold max_tan * n) */
  SgmNnBuf *alias; /* NULL, or the buffer whose g/gt (and a/t if alias_full) this one shares */
  int alias_full;
};

typedef struct {
  SgmNnBuf **bufs;
  int nbufs, cap;
  int max_tan;
  int max_batch;                        /* every buffer holds max_batch equal per-sample parts */
  size_t total;                         /* floats of the primal slab (buffers owning a face) */
  size_t gtotal;                        /* floats of the gradient slab */
  float *acts, *tacts, *gacts, *gtacts; /* the four slabs */
} SgmNnArena;

/// Registers buf with n floats; pointers are set by sgm_nn_arena_alloc.
PetscErrorCode sgm_nn_arena_reserve(SgmNnArena *ar, SgmNnBuf *buf, size_t n);
/// Registers buf with n <= src->n floats whose gradient faces (g, gt) are src's: for buffers
/// whose gradients are dead once their own layer's backward is done (the caller zeroes src's
/// gradient faces before the next layer reuses them, sgm_nn_buf_zero_grad). full != 0 shares the
/// primal and tangent faces as well: forward temporaries that no backward reads. src must have
/// been reserved first and must not itself be an alias.
PetscErrorCode sgm_nn_arena_reserve_alias(SgmNnArena *ar, SgmNnBuf *buf, size_t n, SgmNnBuf *src,
                                          int full);
/// Allocates the four slabs, touches every page once (so no page is first faulted inside a
/// training step) and resolves every registered buffer.
PetscErrorCode sgm_nn_arena_alloc(SgmNnArena *ar);
/// Zeroes the gradient faces in use for a batch of B: the first n / max_batch * B floats of g and
/// ntan times that of gt (tangents are packed direction-major with the used size as stride).
/// Aliased gradient faces are zeroed through their owner. With max_tan = 0 the tangent slabs are a
/// single dummy page (no tangent memory): plain training costs primal + gradient slabs only.
void sgm_nn_arena_zero_grad(SgmNnArena *ar, int B, int ntan);
/// Zeroes the gradient faces of one (owning) buffer in use for a batch of B and ntan tangents.
void sgm_nn_buf_zero_grad(const SgmNnArena *ar, SgmNnBuf *buf, int B, int ntan);
/// Bytes of the four slabs.
size_t sgm_nn_arena_bytes(const SgmNnArena *ar);
PetscErrorCode sgm_nn_arena_free(SgmNnArena *ar);

/// Size table under construction: views are appended, offsets assigned in order.
typedef struct {
  SgmParams *p;
  int cap;
} SgmNnParamBuilder;

/// Appends a tensor (ndim 1 or 2) and returns its index in p->tensors.
PetscErrorCode sgm_nn_params_add(SgmNnParamBuilder *pb, const char *name, int ndim, int s0, int s1,
                                 int *index);
/// Allocates params and grads (zeroed) for the table built so far.
PetscErrorCode sgm_nn_params_alloc(SgmNnParamBuilder *pb);
/// Fills tensor `index` with U(-bound, bound) from the counter-based RNG
/// (seed, SGM_RNG_NN_INIT, id = index, step = 0, sub = element / 4), or with `value` if bound 0.
void sgm_nn_params_fill(SgmParams *p, int index, uint64_t seed, double bound, float value);

static inline float *sgm_nn_param(const SgmParams *p, int index)
{
  return p->params + p->tensors[index].offset;
}
static inline float *sgm_nn_grad(const SgmParams *p, int index)
{
  return p->grads + p->tensors[index].offset;
}

/// An MLP: nl linear layers dims[0] -> ... -> dims[nl], activation between (none at the end).
/// Names: prefix.{2l}.weight / .bias, as nn.Sequential(Linear, Act, Linear, ...) would have them.
typedef struct {
  int nl;
  int dims[SGM_NN_MAX_STACK + 1];
  int w[SGM_NN_MAX_STACK], b[SGM_NN_MAX_STACK];
  SgmNnAct act;
  SgmNnBuf pre[SGM_NN_MAX_STACK];  /* (rows, dims[l+1]); pre[nl-1] is the output */
  SgmNnBuf post[SGM_NN_MAX_STACK]; /* act(pre[l]) for l < nl-1 */
} SgmNnStack;

/// Defines tensors and buffers for up to max_rows rows. Weights kaiming-uniform (PyTorch Linear
/// default: U(+-1/sqrt(fan_in)) for weight and bias) are drawn by sgm_nn_stack_init.
PetscErrorCode sgm_nn_stack_define(SgmNnStack *s, SgmNnParamBuilder *pb, SgmNnArena *ar,
                                   const char *prefix, int nl, const int *dims, SgmNnAct act,
                                   int max_rows);
void sgm_nn_stack_init(SgmNnStack *s, SgmParams *p, uint64_t seed);
/// inp (rows, dims[0]) -> pre[nl-1].a (rows, dims[nl]).
void sgm_nn_stack_forward(SgmNnStack *s, const SgmParams *p, const float *inp, int rows);
/// The same for rows [r0, r0 + rows) only: inp and every face indexed from row 0 (row-local).
void sgm_nn_stack_forward_rows(SgmNnStack *s, const SgmParams *p, const float *inp, int r0,
                               int rows);
/// tinp (ntan, rows, dims[0]) -> pre[nl-1].t (ntan, rows, dims[nl]).
void sgm_nn_stack_jvp(SgmNnStack *s, const SgmParams *p, const float *tinp, int rows, int ntan);
/// From pre[nl-1].g (and .gt for ntan > 0): accumulates parameter gradients and, if not NULL,
/// dinp (rows, dims[0]) and dtinp (ntan, rows, dims[0]). tinp may be NULL when ntan = 0.
void sgm_nn_stack_backward(SgmNnStack *s, SgmParams *p, const float *inp, const float *tinp,
                           float *dinp, float *dtinp, int rows, int ntan);
/// The plain backward (no tangents) with overwrite semantics: from pre[nl-1].g, the gradient
/// faces of the hidden activations and dinp (if not NULL) are written, not accumulated, so
/// none of them needs zeroing first; parameter gradients still accumulate.
void sgm_nn_stack_backward_set(SgmNnStack *s, SgmParams *p, const float *inp, float *dinp,
                               int rows);
/// The same for rows [r0, r0 + rows) only (inp, dinp and every face indexed from row 0); the
/// parameter gradients accumulate. The gradient faces (pre[].g from pre[nl-1].g on, post[].g) are
/// read and written at rows [g0, g0 + rows) instead (g0 = r0: in place; g0 = 0: chunk-local
/// temporaries, the same memory for every chunk); dinp at rows r0.
void sgm_nn_stack_backward_set_rows(SgmNnStack *s, SgmParams *p, const float *inp, float *dinp,
                                    int r0, int g0, int rows);

#endif
