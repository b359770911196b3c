/* H5MD 1.1 trajectories and XDMF sidecars, written collectively with parallel HDF5.
 *
 * Owns: the file layout of trajectory.h5 (docs/simulate.md):
 *   /h5md                      attrs version = [1, 1]; groups author (name), creator (name,
 * version) /particles/<group>/box     attrs dimension, boundary ("periodic" | "none"); dataset
 * edges [d] /particles/<group>/id      [N] int64, the global ids; rows are stored in global-id
 * order, so row i of every value dataset is particle i /particles/<group>/position/{step [T] int64,
 * time [T] double, value [T][N][d] double} /particles/<group>/orientation/{step, time, value}   the
 * active variable g (same shapes) /parameters                attrs: the resolved input (TOML text)
 * and the system parameters Rank r writes rows [start_r, start_r + count_r) of each frame (start_r
 * from MPI_Exscan), one collective hyperslab write per dataset. Every frame is appended by
 * open-extend-write-close, so the file is consistent after each frame (a checkpoint records how
 * many frames it covers).
 */
#ifndef SGM_H5MD_H
#define SGM_H5MD_H

#include "sgm/schema.h"

#include <petscsys.h>
#include <stdint.h>

typedef struct {
  int dim;
  int64_t n;
  int periodic;
  double L;           /* box edge (periodic) or placement edge (open) */
  const char *group;  /* particle group name, e.g. "all" */
  const char *author; /* run name */
  const char *config; /* resolved input, stored as /parameters attribute "input" (may be NULL) */
  int nparams;        /* named real parameters stored as /parameters attributes */
  const char *const *param_names;
  const double *param_values;
} SgmH5mdInfo;

/// Collective: creates (truncates) the file with the H5MD layout and zero frames.
PetscErrorCode sgm_h5md_create(MPI_Comm comm, const char *path, const SgmH5mdInfo *info);
/// Collective: appends frame number `frame` (0-based; the datasets are extended to frame + 1).
/// This rank holds rows [start, start + count): x[count*dim], g[count*dim].
PetscErrorCode sgm_h5md_append(MPI_Comm comm, const char *path, const char *group, int64_t frame,
                               int64_t step, double time, int dim, int64_t start, int64_t count,
                               const double *x, const double *g);
/// Collective: opens the trajectory at path for appending frames and observables with the calls
/// below (one open and close per frame instead of one per writer). *fh is the HDF5 file id
/// (hid_t, a 64-bit integer in HDF5 >= 1.10); close it with sgm_h5md_close before anything else
/// opens the file, so the file is consistent between frames as with sgm_h5md_append.
PetscErrorCode sgm_h5md_open_append(MPI_Comm comm, const char *path, int64_t *fh);
/// Collective: closes a file opened by sgm_h5md_open_append.
PetscErrorCode sgm_h5md_close(int64_t fh);
/// sgm_h5md_append on an open file fh (sgm_h5md_open_append).
PetscErrorCode sgm_h5md_append_fh(MPI_Comm comm, int64_t fh, const char *group, int64_t frame,
                                  int64_t step, double time, int dim, int64_t start, int64_t count,
                                  const double *x, const double *g);
/// Collective: appends the nf frames frame0 .. frame0 + nf - 1 at once (one extension and one
/// write per dataset): steps[nf], times[nf] (read on rank 0), x and g [nf][count][dim] with this
/// rank's rows [start, start + count) of each frame.
PetscErrorCode sgm_h5md_append_frames_fh(MPI_Comm comm, int64_t fh, const char *group,
                                         int64_t frame0, int64_t nf, const int64_t *steps,
                                         const double *times, int dim, int64_t start, int64_t count,
                                         const double *x, const double *g);
/// Collective: number of frames in the file.
PetscErrorCode sgm_h5md_nframes(MPI_Comm comm, const char *path, const char *group,
                                int64_t *nframes);
/// Not collective, no MPI (the input check on rank 0): the particle count and dimension of
/// /particles/<group>/position/value (frames x particles x dimensions). Returns 0, or -1 (HDF5's
/// error printing off) when the file does not hold such a dataset.
int sgm_h5md_peek(const char *path, const char *group, int64_t *n, int *dim);
/// The input check of a stage that reads a trajectory ([epr] trajectory, [train] trajectory or
/// validate_trajectory, and the table's group):
/// sgm_config_check_input_file, then, for a file that is there (not one an earlier stage of the
/// run writes), its particle count and dimension against [system] n and dim. Rank 0 only.
PetscErrorCode sgm_h5md_check_input(SgmConfig cfg, SgmProblems pb, const char *key,
                                    const char *group_key, const char *stage);
/// Collective: shrinks (or checks) the file to `nframes` frames (restart).
PetscErrorCode sgm_h5md_truncate(MPI_Comm comm, const char *path, const char *group,
                                 int64_t nframes);
/// Collective: every rank reads all N rows of frame `frame` (-1 = last): x[n*dim], g[n*dim]
/// (g may be NULL), and the frame's step. Checks dim and n.
PetscErrorCode sgm_h5md_read_frame(MPI_Comm comm, const char *path, const char *group,
                                   int64_t frame, int dim, int64_t n, double *x, double *g,
                                   int64_t *step);

/// Collective: opens the trajectory at path read-only for repeated sgm_h5md_read_frame_fh calls
/// (one open for a training run instead of one per frame read); close it with sgm_h5md_close.
PetscErrorCode sgm_h5md_open_read(MPI_Comm comm, const char *path, int64_t *fh);
/// sgm_h5md_read_frame on a file opened by sgm_h5md_open_read (path only names it in messages).
PetscErrorCode sgm_h5md_read_frame_fh(MPI_Comm comm, int64_t fh, const char *path,
                                      const char *group, int64_t frame, int dim, int64_t n,
                                      double *x, double *g, int64_t *step);

/// Collective: the box edges [d] of /particles/<group>/box/edges (every rank reads).
PetscErrorCode sgm_h5md_read_edges(MPI_Comm comm, const char *path, const char *group, int dim,
                                   double *edges);

/// Collective (rank 0 writes): an XDMF 3 sidecar at xdmf_path describing every frame of the
/// H5MD file h5_path (read for the frame count and times) as a temporal collection of Polyvertex
/// grids with attributes id, gx (and gy). `h5_ref` is how the sidecar names the HDF5 file
/// (relative to the sidecar, e.g. "trajectory.h5"). In 1D the y and z coordinates come from the
/// zero dataset /parameters/xdmf_zero.
PetscErrorCode sgm_xdmf_write_trajectory(MPI_Comm comm, const char *xdmf_path, const char *h5_path,
                                         const char *h5_ref, const char *group);

#endif
