/* Files of the `epr` stage: epr.h5 (+ epr.xdmf) and fields.h5 (+ fields.xdmf); layouts in
 * docs/formats.md ("epr.h5 and fields.h5").
 *
 * epr.h5 (T selected frames, N particles, d dimensions; row i is the particle with global id i):
 *   /step [T] int64, /time [T] double, /id [N] int64
 *   /position, /orientation, /score_x, /score_g, /velocity_x, /velocity_g   [T][N][d] double
 *   /epr_total, /epr_total_x, /epr_total_g, /epr_system, /epr_system_x, /epr_system_g,
 *   /fpe_residual, /score_ibp, /v_dot_s                                      [T][N] double
 *   /<extra>   [T][N] double  optional per-particle scalars named by the stage (e.g. the local
 *              packing fraction and phase class of the interface analysis)
 *   /series/<name> [T] double  per-frame means per particle of the diagnostics
 *   root attributes: dim, n, nframes, score, and the summary values of the stage
 * fields.h5: /count, /density and one /<quantity> per map, each [ny][nx] double (cell data), with
 *   attributes origin [2], spacing [2], shape [2] (= ny, nx) and nframes on the root.
 */
#ifndef SGM_EPR_IO_H
#define SGM_EPR_IO_H

#include <petscsys.h>
#include <stdint.h>

typedef struct SgmEprFile_ *SgmEprFile;

typedef struct {
  int dim;
  int64_t n, nframes;
  const char *score;              /* provider name (root attribute) */
  const char *config;             /* resolved input as root attribute "input" (may be NULL) */
  int nextra;                     /* extra per-particle scalars [T][N] (0..SGM_EPR_MAX_EXTRA) */
  const char *const *extra_names; /* their dataset names */
} SgmEprFileInfo;
#define SGM_EPR_MAX_EXTRA 8

/// Per-particle vector datasets of a frame, in this order: position, orientation, score_x,
/// score_g, velocity_x, velocity_g.
#define SGM_EPR_NVEC 6
extern const char *const sgm_epr_vec_names[SGM_EPR_NVEC];

/// Collective: creates (truncates) path with every dataset sized for info->nframes frames.
PetscErrorCode sgm_epr_file_create(MPI_Comm comm, const char *path, const SgmEprFileInfo *info,
                                   SgmEprFile *f);
/// Collective: frame t; frames must come in order 0, 1, ..., nframes - 1 (they are buffered and
/// written in blocks). This rank holds rows [start, start + count) in id order, the same rows for
/// every frame:
/// vec[v][count*dim] for the SGM_EPR_NVEC vectors and q[count*nq] (particle-major, the order of
/// SGM_EPR_Q_LIST, nq = SGM_EPR_NQ) and extra[count*nextra] (particle-major; NULL if nextra = 0).
PetscErrorCode sgm_epr_file_write_frame(SgmEprFile f, int64_t t, int64_t step, double time,
                                        int64_t start, int64_t count,
                                        const double *const vec[SGM_EPR_NVEC], const double *q,
                                        int nq, const double *extra);
/// Collective: /series/<name> [nframes] from rank 0's v.
PetscErrorCode sgm_epr_file_write_series(SgmEprFile f, const char *name, const double *v);
/// Collective: a real root attribute (same value on every rank).
PetscErrorCode sgm_epr_file_set_attr(SgmEprFile f, const char *name, double v);
/// Collective: closes; accepts NULL and NULLs the handle.
PetscErrorCode sgm_epr_file_close(SgmEprFile *f);

/// Not collective: frames first, first + stride, ..., first + (nb - 1) stride of an H5MD
/// trajectory (every row): x[nb*n*dim], g[nb*n*dim] (g may be NULL), step[nb] (may be NULL).
PetscErrorCode sgm_epr_read_frames(MPI_Comm comm, const char *path, const char *group,
                                   int64_t first, int64_t stride, int64_t nb, int dim, int64_t n,
                                   double *x, double *g, int64_t *step);

/// Collective (rank 0 writes): epr.xdmf for an epr.h5 named h5_ref (relative to the sidecar):
/// a temporal collection of Polyvertex grids with attributes id, each vector component and each
/// scalar quantity, then the nextra datasets extra[k]. times[nframes] on rank 0.
PetscErrorCode sgm_epr_xdmf_write(MPI_Comm comm, const char *xdmf_path, const char *h5_ref, int dim,
                                  int64_t n, int64_t nframes, const double *times, int nextra,
                                  const char *const *extra);

typedef struct {
  int64_t nx, ny;               /* cells (ny = 1 in 1D) */
  double origin[2], spacing[2]; /* lower-left corner and cell edges (length) */
  int64_t nframes;              /* frames summed */
} SgmFieldsGrid;

/// Collective: fields.h5 at h5_path and fields.xdmf at xdmf_path (naming the data file h5_ref):
/// nf maps names[f] with data[f*ny*nx + iy*nx + ix], identical on every rank (each rank writes a
/// block of rows).
PetscErrorCode sgm_epr_fields_write(MPI_Comm comm, const char *h5_path, const char *xdmf_path,
                                    const char *h5_ref, const SgmFieldsGrid *grid, int nf,
                                    const char *const *names, const double *data);

#endif
