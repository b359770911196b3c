/* Shared machinery of the models: activation arena, parameter size table, MLP stack.
 *
 * Owns: where every activation, tangent and gradient lives (four slabs, one allocation each,
 * sized at model creation for a maximum batch and a maximum number of tangent directions), the
 * construction of the SgmParams size table with PyTorch-default initialisation from the
 * counter-based RNG, and the MLP stack used as the MLP model, the transformers' embeddings, their
 * decoder. The stack's backward is written once for both uses: with ntan = 0 it is the ordinary
 * backward; with ntan > 0 it is the reverse-over-forward through the tangent pass as well
 * (activations contribute f''(pre) tpre gt to the primal gradient). Memory is traded for
 * simplicity: gradients of every activation are stored (llm.c's grads_acts) rather than
 * recomputed, so backward needs no allocation and reads like the forward in reverse.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* posix_memalign, madvise, MADV_HUGEPAGE */
#endif
#include "sgm/nn_models.h"
#include "nn_stack.h"

#include "sgm/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

PetscErrorCode sgm_nn_arena_reserve(SgmNnArena *ar, SgmNnBuf *buf, size_t n)
{
  PetscFunctionBeginUser;
  PetscCheck(ar->max_batch > 0 && n % (size_t)ar->max_batch == 0, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "arena buffer of %zu floats is not max_batch = %d equal parts", n, ar->max_batch);
  if (ar->nbufs == ar->cap) {
    int cap = ar->cap ? 2 * ar->cap : 64;
    PetscCall(PetscRealloc(sizeof(SgmNnBuf *) * (size_t)cap, &ar->bufs));
    ar->cap = cap;
  }
  ar->bufs[ar->nbufs++] = buf;
  buf->n = n;
  buf->alias = NULL;
  buf->alias_full = 0;
  ar->total += n;
  ar->gtotal += n;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_arena_reserve_alias(SgmNnArena *ar, SgmNnBuf *buf, size_t n, SgmNnBuf *src,
                                          int full)
{
  PetscFunctionBeginUser;
  PetscCheck(src && !src->alias && n <= src->n, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "arena alias: %zu floats onto a buffer of %zu (or onto an alias)", n,
             src ? src->n : 0);
  PetscCall(sgm_nn_arena_reserve(ar, buf, n));
  ar->gtotal -= n;
  if (full) ar->total -= n;
  buf->alias = src;
  buf->alias_full = full;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* A slab of n floats on 2 MiB boundaries, advised for transparent huge pages, touched once.
 * The slabs reach gigabytes at the paper's sizes; with 4 KiB pages the first touch costs one
 * fault per page (seconds in a VM) and the TLB misses slow every pass. */
static PetscErrorCode slab_alloc(size_t n, float **p)
{
  const size_t align = (size_t)2 << 20, bytes = (n * sizeof(float) + align - 1) / align * align;
  void *q = NULL;
  PetscFunctionBeginUser;
  PetscCheck(posix_memalign(&q, align, bytes > 0 ? bytes : align) == 0, PETSC_COMM_SELF,
             PETSC_ERR_MEM, "nn arena: cannot allocate %zu bytes", bytes);
#ifdef MADV_HUGEPAGE
  (void)madvise(q, bytes, MADV_HUGEPAGE); /* advice only: failure leaves 4 KiB pages */
#endif
  memset(q, 0, bytes);
  *p = q;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_arena_alloc(SgmNnArena *ar)
{
  /* with max_tan = 0 no tangent is ever computed: every tangent face points at one dummy page */
  const size_t tm = (size_t)ar->max_tan;
  PetscFunctionBeginUser;
  PetscCall(slab_alloc(ar->total, &ar->acts));
  PetscCall(slab_alloc(ar->gtotal, &ar->gacts));
  PetscCall(slab_alloc(tm * ar->total, &ar->tacts));
  PetscCall(slab_alloc(tm * ar->gtotal, &ar->gtacts));
  size_t off = 0, goff = 0;
  for (int i = 0; i < ar->nbufs; i++) {
    SgmNnBuf *b = ar->bufs[i];
    if (b->alias_full) {
      b->a = b->alias->a;
      b->t = b->alias->t;
    } else {
      b->a = ar->acts + off;
      b->t = ar->tacts + tm * off;
      off += b->n;
    }
    if (b->alias) {
      b->g = b->alias->g;
      b->gt = b->alias->gt;
    } else {
      b->g = ar->gacts + goff;
      b->gt = ar->gtacts + tm * goff;
      goff += b->n;
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_nn_buf_zero_grad(const SgmNnArena *ar, SgmNnBuf *buf, int B, int ntan)
{
  const size_t used = buf->n / (size_t)ar->max_batch * (size_t)B;
  memset(buf->g, 0, used * sizeof(float));
  if (ntan > 0) memset(buf->gt, 0, (size_t)ntan * used * sizeof(float));
}

void sgm_nn_arena_zero_grad(SgmNnArena *ar, int B, int ntan)
{
  for (int i = 0; i < ar->nbufs; i++)
    if (!ar->bufs[i]->alias) sgm_nn_buf_zero_grad(ar, ar->bufs[i], B, ntan);
}

size_t sgm_nn_arena_bytes(const SgmNnArena *ar)
{
  const size_t tm = (size_t)ar->max_tan;
  return sizeof(float) * (1 + tm) * (ar->total + ar->gtotal);
}

PetscErrorCode sgm_nn_arena_free(SgmNnArena *ar)
{
  PetscFunctionBeginUser;
  free(ar->acts);
  free(ar->gacts);
  free(ar->tacts);
  free(ar->gtacts);
  PetscCall(PetscFree(ar->bufs));
  memset(ar, 0, sizeof *ar);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_params_add(SgmNnParamBuilder *pb, const char *name, int ndim, int s0, int s1,
                                 int *index)
{
  SgmParams *p = pb->p;
  PetscFunctionBeginUser;
  if (p->ntensors == pb->cap) {
    int cap = pb->cap ? 2 * pb->cap : 32;
    PetscCall(PetscRealloc(sizeof(SgmTensorView) * (size_t)cap, &p->tensors));
    pb->cap = cap;
  }
  SgmTensorView *v = &p->tensors[p->ntensors];
  memset(v, 0, sizeof *v);
  PetscCheck(strlen(name) < SGM_NN_NAME_LEN, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ,
             "tensor name too long: %s", name);
  snprintf(v->name, sizeof v->name, "%s", name);
  v->ndim = ndim;
  v->shape[0] = s0;
  v->shape[1] = ndim > 1 ? s1 : 0;
  v->size = (size_t)s0 * (ndim > 1 ? (size_t)s1 : 1);
  v->offset = p->nparams;
  p->nparams += v->size;
  *index = p->ntensors++;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_nn_params_alloc(SgmNnParamBuilder *pb)
{
  PetscFunctionBeginUser;
  PetscCall(PetscCalloc1(pb->p->nparams, &pb->p->params));
  PetscCall(PetscCalloc1(pb->p->nparams, &pb->p->grads));
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_nn_params_fill(SgmParams *p, int index, uint64_t seed, double bound, float value)
{
  float *w = sgm_nn_param(p, index);
  const size_t n = p->tensors[index].size;
  for (size_t i = 0; i < n; i += 4) {
    double u[4];
    if (bound != 0.0)
      sgm_rng_uniform4(seed, SGM_RNG_NN_INIT, (uint64_t)index, 0, (uint32_t)(i / 4), u);
    for (size_t k = 0; k < 4 && i + k < n; k++)
      w[i + k] = bound != 0.0 ? (float)(bound * (2.0 * u[k] - 1.0)) : value;
  }
}

PetscErrorCode sgm_nn_stack_define(SgmNnStack *s, SgmNnParamBuilder *pb, SgmNnArena *ar,
                                   const char *prefix, int nl, const int *dims, SgmNnAct act,
                                   int max_rows)
{
  char name[SGM_NN_NAME_LEN];
  PetscFunctionBeginUser;
  PetscCheck(nl >= 1 && nl <= SGM_NN_MAX_STACK, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "%s: %d linear layers (1..%d allowed)", prefix, nl, SGM_NN_MAX_STACK);
  memset(s, 0, sizeof *s);
  s->nl = nl;
  s->act = act;
  for (int l = 0; l <= nl; l++) {
    PetscCheck(dims[l] > 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: width %d", prefix,
               dims[l]);
    s->dims[l] = dims[l];
  }
  for (int l = 0; l < nl; l++) {
    snprintf(name, sizeof name, "%s.%d.weight", prefix, 2 * l);
    PetscCall(sgm_nn_params_add(pb, name, 2, dims[l + 1], dims[l], &s->w[l]));
    snprintf(name, sizeof name, "%s.%d.bias", prefix, 2 * l);
    PetscCall(sgm_nn_params_add(pb, name, 1, dims[l + 1], 0, &s->b[l]));
    PetscCall(sgm_nn_arena_reserve(ar, &s->pre[l], (size_t)max_rows * dims[l + 1]));
    if (l < nl - 1)
      PetscCall(sgm_nn_arena_reserve(ar, &s->post[l], (size_t)max_rows * dims[l + 1]));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_nn_stack_init(SgmNnStack *s, SgmParams *p, uint64_t seed)
{
  for (int l = 0; l < s->nl; l++) {
    double bound = 1.0 / sqrt((double)s->dims[l]);
    sgm_nn_params_fill(p, s->w[l], seed, bound, 0.0f);
    sgm_nn_params_fill(p, s->b[l], seed, bound, 0.0f);
  }
}

void sgm_nn_stack_forward(SgmNnStack *s, const SgmParams *p, const float *inp, int rows)
{
  const float *x = inp;
  for (int l = 0; l < s->nl; l++) {
    sgm_nn_linear_forward(s->pre[l].a, x, sgm_nn_param(p, s->w[l]), sgm_nn_param(p, s->b[l]), rows,
                          s->dims[l], s->dims[l + 1]);
    if (l < s->nl - 1) {
      sgm_nn_act_forward(s->act, s->post[l].a, s->pre[l].a, rows * s->dims[l + 1]);
      x = s->post[l].a;
    }
  }
}

void sgm_nn_stack_forward_rows(SgmNnStack *s, const SgmParams *p, const float *inp, int r0,
                               int rows)
{
  const float *x = inp + (size_t)r0 * s->dims[0];
  for (int l = 0; l < s->nl; l++) {
    const int OC = s->dims[l + 1];
    float *pre = s->pre[l].a + (size_t)r0 * OC;
    sgm_nn_linear_forward(pre, x, sgm_nn_param(p, s->w[l]), sgm_nn_param(p, s->b[l]), rows,
                          s->dims[l], OC);
    if (l < s->nl - 1) {
      float *post = s->post[l].a + (size_t)r0 * OC;
      sgm_nn_act_forward(s->act, post, pre, rows * OC);
      x = post;
    }
  }
}

void sgm_nn_stack_jvp(SgmNnStack *s, const SgmParams *p, const float *tinp, int rows, int ntan)
{
  const float *tx = tinp;
  for (int l = 0; l < s->nl; l++) {
    const size_t n = (size_t)rows * s->dims[l + 1];
    sgm_nn_linear_jvp(s->pre[l].t, tx, sgm_nn_param(p, s->w[l]), ntan * rows, s->dims[l],
                      s->dims[l + 1]);
    if (l < s->nl - 1) {
      /* tangents are direction-major with stride n = rows * width (not the buffer capacity) */
      sgm_nn_act_jvp_n(s->act, s->post[l].t, s->pre[l].t, s->pre[l].a, s->post[l].a, (int)n, ntan);
      tx = s->post[l].t;
    }
  }
}

void sgm_nn_stack_backward_set(SgmNnStack *s, SgmParams *p, const float *inp, float *dinp, int rows)
{
  for (int l = s->nl - 1; l >= 0; l--) {
    const int C = s->dims[l], OC = s->dims[l + 1];
    const float *x = l > 0 ? s->post[l - 1].a : inp;
    float *dx = l > 0 ? s->post[l - 1].g : dinp;
    const float *W = sgm_nn_param(p, s->w[l]), *dy = s->pre[l].g;
    if (rows > 0) {
      if (dx) sgm_nn_linear_backward_input(dx, 0, dy, W, rows, C, OC);
      sgm_nn_linear_backward(NULL, sgm_nn_grad(p, s->w[l]), sgm_nn_grad(p, s->b[l]), dy, x, W, rows,
                             C, OC);
    }
    if (l > 0) /* d pre = act'(pre) d post, in place into pre's gradient face */
      sgm_nn_act_backward_y_set(s->act, s->pre[l - 1].g, s->post[l - 1].g, s->pre[l - 1].a,
                                s->post[l - 1].a, rows * C);
  }
}

void sgm_nn_stack_backward_set_rows(SgmNnStack *s, SgmParams *p, const float *inp, float *dinp,
                                    int r0, int g0, int rows)
{
  for (int l = s->nl - 1; l >= 0; l--) {
    const int C = s->dims[l], OC = s->dims[l + 1];
    const size_t oc = (size_t)r0 * C, gc = (size_t)g0 * C;
    const float *x = l > 0 ? s->post[l - 1].a + oc : inp + oc;
    float *dx = l > 0 ? s->post[l - 1].g + gc : (dinp ? dinp + oc : NULL);
    const float *W = sgm_nn_param(p, s->w[l]), *dy = s->pre[l].g + (size_t)g0 * OC;
    if (rows > 0) {
      if (dx) sgm_nn_linear_backward_input(dx, 0, dy, W, rows, C, OC);
      sgm_nn_linear_backward(NULL, sgm_nn_grad(p, s->w[l]), sgm_nn_grad(p, s->b[l]), dy, x, W, rows,
                             C, OC);
    }
    if (l > 0)
      sgm_nn_act_backward_y_set(s->act, s->pre[l - 1].g + gc, s->post[l - 1].g + gc,
                                s->pre[l - 1].a + oc, s->post[l - 1].a + oc, rows * C);
  }
}

void sgm_nn_stack_backward(SgmNnStack *s, SgmParams *p, const float *inp, const float *tinp,
                           float *dinp, float *dtinp, int rows, int ntan)
{
  for (int l = s->nl - 1; l >= 0; l--) {
    const int C = s->dims[l], OC = s->dims[l + 1];
    const float *x = l > 0 ? s->post[l - 1].a : inp;
    const float *tx = l > 0 ? s->post[l - 1].t : tinp;
    float *dx = l > 0 ? s->post[l - 1].g : dinp;
    float *dtx = l > 0 ? s->post[l - 1].gt : dtinp;
    const float *W = sgm_nn_param(p, s->w[l]);
    sgm_nn_linear_backward(dx, sgm_nn_grad(p, s->w[l]), sgm_nn_grad(p, s->b[l]), s->pre[l].g, x, W,
                           rows, C, OC);
    if (ntan > 0)
      sgm_nn_linear_jvp_backward(dtx, sgm_nn_grad(p, s->w[l]), s->pre[l].gt, tx, W, ntan * rows, C,
                                 OC);
    if (l > 0) {
      const size_t n = (size_t)rows * C;
      SgmNnBuf *pre = &s->pre[l - 1], *post = &s->post[l - 1];
      sgm_nn_act_backward_y(s->act, pre->g, post->g, pre->a, post->a, (int)n);
      if (ntan > 0)
        sgm_nn_act_jvp_backward_n(s->act, pre->g, pre->gt, post->gt, pre->a, post->a, pre->t,
                                  (int)n, ntan);
    }
  }
}
