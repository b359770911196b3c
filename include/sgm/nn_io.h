/* Model files (model.h5): weights, architecture, hyperparameters and optimiser state in HDF5.
 *
 * Owns: the layout of model.h5 (docs/formats.md, section "model.h5"): one float32 dataset per
 * tensor view under /params (row-major, PyTorch (out, in) layout, the view's dotted name as the
 * dataset name), the caller's architecture and hyperparameter key/value lists as attributes of
 * /architecture and /hyperparameters, and the optimiser (moments under /optimizer/m, /optimizer/v,
 * optional /optimizer/ema, with the same dataset names; step count and settings as attributes).
 * Parameters are identical on every rank, so rank 0 alone reads and writes (serial HDF5 driver)
 * and broadcasts; files are written under a temporary name and renamed, so a crash never leaves a
 * torn model.h5. A file whose architecture or tensors differ from the model built from the input
 * is refused with SGM_ERR_USER naming the first difference.
 */
#ifndef SGM_NN_IO_H
#define SGM_NN_IO_H

#include <petscsys.h>
#include <stdint.h>
#include "sgm/nn_params.h"
#include "sgm/nn_optim.h"

typedef enum { SGM_NN_ATTR_STRING, SGM_NN_ATTR_INT, SGM_NN_ATTR_REAL } SgmNNAttrType;

/// One attribute: a key and a string, a 64-bit integer or a double (the field named by type).
typedef struct {
  const char *key;
  SgmNNAttrType type;
  const char *s;
  int64_t i;
  double r;
} SgmNNAttr;

/// Attribute literals: SGM_NN_ATTR_S("activation", "gelu"), SGM_NN_ATTR_I("d_e", 256),
/// SGM_NN_ATTR_R("sigma", 0.01).
#define SGM_NN_ATTR_S(k, v) ((SgmNNAttr){.key = (k), .type = SGM_NN_ATTR_STRING, .s = (v)})
#define SGM_NN_ATTR_I(k, v) ((SgmNNAttr){.key = (k), .type = SGM_NN_ATTR_INT, .i = (v)})
#define SGM_NN_ATTR_R(k, v) ((SgmNNAttr){.key = (k), .type = SGM_NN_ATTR_REAL, .r = (v)})

/// Writes `path` (tmp name + rename) from rank 0: every tensor of p, the `narch` architecture
/// attributes (checked on load), the `nhyper` hyperparameter attributes (stored, not checked),
/// and, when opt != NULL, the optimiser's moments, EMA, step and settings. Collective on comm;
/// every rank returns the same error code.
PetscErrorCode sgm_nn_save(MPI_Comm comm, const char *path, const SgmParams *p, int narch,
                           const SgmNNAttr *arch, int nhyper, const SgmNNAttr *hyper, SgmOptim opt);

/// Reads `path` into p->params (and, when opt != NULL, the optimiser's moments, EMA and step)
/// on rank 0 and broadcasts. The file's /architecture attributes must equal `arch` (same keys,
/// types and values, no extra keys) and its /params datasets must be exactly p's views (names and
/// shapes); otherwise SGM_ERR_USER naming the mismatch, on every rank, with p untouched. With
/// opt != NULL the file must hold an /optimizer of the same kind and size. Collective on comm.
PetscErrorCode sgm_nn_load(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                           const SgmNNAttr *arch, SgmOptim opt);

/// Like sgm_nn_load without optimiser, but fills p->params from the EMA weights
/// (/optimizer/ema); SGM_ERR_USER when the file has none. Collective on comm.
PetscErrorCode sgm_nn_load_ema(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                               const SgmNNAttr *arch);

/// sgm_nn_load_ema when `path` holds EMA weights (/optimizer/ema), else sgm_nn_load without
/// optimiser: the weights an evaluation usually wants. *ema (may be NULL) receives 1 when the EMA
/// weights were taken. Rank 0 looks into the file; collective on comm.
PetscErrorCode sgm_nn_load_auto(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                                const SgmNNAttr *arch, int *ema);

/// Compares the /architecture attributes of the model file `path` with `arch` as sgm_nn_load
/// does, on the calling rank alone and printing nothing (for the input check): 0 when they are
/// the same; 1 with the first difference in msg[len] and the name of its attribute in
/// which[wlen]; -1 when the file or its attributes cannot be read (msg says which).
int sgm_nn_arch_differs(const char *path, int narch, const SgmNNAttr *arch, char *which,
                        size_t wlen, char *msg, size_t len);

#endif
