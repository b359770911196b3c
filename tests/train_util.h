/* Shared pieces of the train-stage tests (test_train.c, test_train_full.c): running stages from
 * an input text, reading model.h5 / train_log.h5, and the rank-invariance and restart-identity
 * checks of a data-parallel training run. */
#ifndef SGM_TRAIN_UTIL_H
#define SGM_TRAIN_UTIL_H

#include "testutil.h"

#include <hdf5.h>
#include <stddef.h>

/// Runs `stages` (a TOML array, e.g. "[\"train\"]") of the input `text` (named `name` in
/// messages) with run.output = outdir and the `nset` further --set overrides `sets`, from the
/// checkpoint `restart` (or NULL).
PetscErrorCode sgm_test_run_text(MPI_Comm comm, const char *name, const char *text,
                                 const char *outdir, const char *stages, int nset,
                                 const char **sets, const char *restart);

/// Every tensor of /params of a model.h5, in name order, concatenated (free v).
typedef struct {
  float *v;
  size_t n;
  int nt;
  char names[64][80];
  size_t off[65];
} SgmTestParams;

/// The parameters of <dir>/model.h5.
SgmTestParams sgm_test_read_params(const char *dir);
/// Dataset `name` of the HDF5 file `path` read as `type` into a new array of 8-byte slots.
double *sgm_test_read_ds(const char *path, const char *name, size_t *n, hid_t type);
/// The loss log of <dir>/train_log.h5.
double *sgm_test_read_loss(const char *dir, size_t *n);

/// The train case of a test: its input text, the name of that text, and the prefix of its
/// temporary directories.
typedef struct {
  const char *name, *text, *tmp;
} SgmTrainCase;

/// Rank-count invariance: a simulate run on all ranks, then training on all ranks equals
/// training on rank 0 alone (PETSC_COMM_SELF) to relative 1e-5 of the largest parameter, losses
/// to 1e-4 (nlog entries each). The key slice [d_e, 2 d_e) of in_proj_bias is excluded: its
/// exact gradient is zero (softmax is invariant to a shift of all scores) and Adam turns its
/// rounding noise into +-lr steps, so it differs between summation orders without changing the
/// function. `extra`: nx (at most 8) further --set overrides.
void sgm_test_train_rank_invariance(const SgmTrainCase *c, const char *tag, int nx,
                                    const char **extra, int d_e, size_t nlog);

/// Restart identity: 10 uninterrupted steps equal 4 steps, stop, then `restarts` runs with
/// --restart, bitwise in the parameters and the loss log. `extra`: nx (at most 7) further --set
/// overrides.
void sgm_test_train_restart_identity(const SgmTrainCase *c, const char *tag, int nx,
                                     const char **extra, int restarts);

#endif
