/* Parameter slabs: one contiguous float buffer each for parameters, gradients and optimiser
 * moments, carved into named tensor views by a size table (llm.c style).
 *
 * Owns: the size table and the views. Gradient synchronisation is one in-place MPI_Allreduce over
 * `grads` (nparams floats); a model file is one dataset per view; an optimiser is one loop over
 * nparams. Weights keep PyTorch's (out, in) layout.
 */
#ifndef SGM_NN_PARAMS_H
#define SGM_NN_PARAMS_H

#include <stddef.h>

#define SGM_NN_MAX_DIMS 4
#define SGM_NN_NAME_LEN 64

typedef struct {
  char name[SGM_NN_NAME_LEN]; /* e.g. "blocks.0.attn.qkv.weight" (PyTorch state_dict style) */
  int ndim;
  int shape[SGM_NN_MAX_DIMS];
  size_t offset; /* into params/grads, in floats */
  size_t size;   /* product of shape */
} SgmTensorView;

typedef struct {
  float *params; /* nparams */
  float *grads;  /* nparams; backward accumulates (+=), only zero_grad clears */
  size_t nparams;
  int ntensors;
  SgmTensorView *tensors;
  int external; /* 1: params/grads view storage owned by someone else (sgm_nn_params_rebind) */
} SgmParams;

#endif
