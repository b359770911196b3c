/* Local windows of the per-particle transformer (paper 002, App. F.6): for every owned centre
 * particle its K nearest neighbours by periodic (minimum-image) distance, gathered into the arrays
 * the local transformer takes.
 *
 * Owns: a private copy of the owned particles plus ghosts (its own halo engine, whose width is
 * independent of the interaction range of the dynamics), cell lists over locals + ghosts, the
 * neighbour table (nlocal, K+1) (centre first, then neighbours by increasing distance, ties by
 * global id) and the gather into float windows. Distances are minimum images of canonical
 * coordinates in double and ties are broken by global id, so the table of a particle is the same
 * on any decomposition. The halo width grows (collectively) whenever some window's K-th distance
 * reaches it, so a sparse region can never silently miss a neighbour; a width beyond what a
 * one-hop halo supports is a clear error.
 */
#ifndef SGM_WINDOWS_H
#define SGM_WINDOWS_H

#include "sgm/cells.h"
#include "sgm/halo.h"

typedef struct SgmWindows_ *SgmWindows;

/// Collective on comm: windows of K neighbours over decomposition d, initial halo width `width`
/// (length; grown on demand, never shrunk). K >= 1.
PetscErrorCode sgm_windows_create(MPI_Comm comm, const SgmDecomp *d, int K, double width,
                                  SgmWindows *w);
/// Frees; accepts NULL and NULLs the handle. Not collective.
PetscErrorCode sgm_windows_destroy(SgmWindows *w);
/// Collective: builds the windows of the particles id (nlocal), x (nlocal, dim) canonical
/// positions, g (nlocal, dim) orientations given by this rank; they are first migrated to their
/// owners under d, so the centres of this rank (sgm_windows_get) may differ from the input.
/// Needs N - 1 >= K particles in total. Grows the halo and redoes the search when a K-th
/// neighbour distance reaches the halo width.
PetscErrorCode sgm_windows_build(SgmWindows w, int64_t nlocal, const int64_t *id, const double *x,
                                 const double *g);
/// sgm_windows_build for the centres that want(ctx, global id) selects (want NULL: all): only
/// their neighbours are searched and only their K-th distances decide the halo growth; the rows
/// of the other centres hold the centre itself (K + 1 times) and must not be gathered. The
/// selected rows are those sgm_windows_build gives. Cell lists and halo are those of a full
/// build, so sgm_windows_gather's perturbed re-selection works for the selected centres. (Training
/// uses it with the step's minibatch: batch / N of the search work.)
PetscErrorCode sgm_windows_build_selected(SgmWindows w, int64_t nlocal, const int64_t *id,
                                          const double *x, const double *g,
                                          int (*want)(void *ctx, int64_t id), void *ctx);
/// Not collective. After build: *nlocal centres (the owned particles, part->id[0..nlocal));
/// nbr (nlocal, K+1) indices into *part (locals
/// then ghosts; column 0 is the centre itself); nbr_id (nlocal, K+1) their global ids; any
/// output may be NULL.
PetscErrorCode sgm_windows_get(SgmWindows w, int64_t *nlocal, const int64_t **nbr,
                               const int64_t **nbr_id, const SgmParticles **part);
/// Current halo width and the number of times it was grown. Not collective.
void sgm_windows_width(SgmWindows w, double *width, int64_t *ngrow);
/// Not collective. Gathers B windows of the local centres `centres` (B, indices < nlocal):
///   X (B, K+1, dim) = min_image(x_j - x_c) + scale (px_j - px_c)   (centre row exactly 0)
///   G (B, K+1, dim) = g_j + scale pg_j
///   mask (B, K+1) = 1
/// px, pg (nlocal + nghost, dim) are per-particle perturbations in the order of *part, or NULL
/// (no perturbation). With px != NULL and scale != 0 the j are the K nearest neighbours of the
/// PERTURBED configuration (searched in the cells of the last clean search; ties to the lower
/// id), as the denoising loss requires; otherwise the clean windows of the last search.
PetscErrorCode sgm_windows_gather(SgmWindows w, int B, const int64_t *centres, const double *px,
                                  const double *pg, double scale, float *X, float *G, float *mask);

#endif
