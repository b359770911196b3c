/* Box, periodic images and the space decomposition of particle systems.
 *
 * Owns: minimum-image arithmetic, the rank grid (a periodic PETSc DMDA in 1D or 2D whose cells are
 * at least one interaction range wide) and the maths that maps a position to its owner rank. The
 * maths is pure arithmetic on (rank, size, dims, ncell) so a serial unit test can check a 256-rank
 * layout piece by piece; the DMDA only chooses the rank grid and is checked against it.
 *
 * Ownership is defined by the cell index c = floor(x * ncell / L) alone, never by comparing with
 * patch edges, so every rank computes the same owner for the same double.
 */
#ifndef SGM_DOMAIN_H
#define SGM_DOMAIN_H

#include <petscdm.h>
#include <petscdmda.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

/* PETSc < 3.19 has no PETSC_SUCCESS. */
#ifndef PETSC_SUCCESS
#define PETSC_SUCCESS 0
#endif

/// Minimum image of a displacement component for a box edge L: dx - L nearbyint(dx / L) (round
/// half to even), computed without a division for |dx| <= 1.5 L (the case of two wrapped
/// coordinates) with bitwise the same result.
static inline double sgm_min_image(double dx, double L)
{
  const double h = 0.5 * L;
  if (dx > h) return dx <= 3.0 * h ? dx - L : dx - L * nearbyint(dx / L);
  if (dx < -h) return dx >= -3.0 * h ? dx + L : dx - L * nearbyint(dx / L);
  return dx;
}

/// Wraps a coordinate into [0, L).
static inline double sgm_wrap(double x, double L)
{
  double y = x - L * floor(x / L);
  return (y >= L || y < 0.0) ? 0.0 : y;
}

/// Rank grid and cell grid of a decomposition. Ranks are numbered x fastest, as in a DMDA.
typedef struct {
  int dim;          /* 1 or 2 */
  int dims[2];      /* ranks per dimension (dims[1] = 1 in 1D) */
  int64_t ncell[2]; /* DMDA cells per dimension (ncell[1] = 1 in 1D) */
  double L[2];      /* box edges */
  /* Load-balanced cuts (NULL: PETSc's split, sgm_decomp_split): rank coordinate i along k owns
   * cells cut[k][i] .. cut[k][i+1]-1 (cut[k][0] = 0, cut[k][dims[k]] = ncell[k]); coord[k][c] is
   * the coordinate owning cell c. Owned by whoever balances (the AOUP engine); copies of the
   * struct share them. min_cells[k]: the fewest cells any coordinate has or may be given. */
  const int64_t *cut[2];
  const int32_t *coord[2];
  int64_t min_cells[2];
} SgmDecomp;

/// PETSc's default split of n cells over p pieces: piece i starts at *start and has *count
/// = n/p + (i < n%p) cells. Pure.
void sgm_decomp_split(int64_t n, int p, int i, int64_t *start, int64_t *count);
/// Cells of rank coordinate i along k: the balanced cuts where set, else sgm_decomp_split. Pure.
void sgm_decomp_range(const SgmDecomp *d, int k, int i, int64_t *start, int64_t *count);
/// Rank coordinates (x fastest) of `rank`. Pure.
void sgm_decomp_coords(const SgmDecomp *d, int rank, int coords[2]);
/// Rank at coordinates, wrapped periodically. Pure.
int sgm_decomp_rank(const SgmDecomp *d, const int coords[2]);
/// Patch of `rank`: [lo, hi) per dimension. Pure.
void sgm_decomp_patch(const SgmDecomp *d, int rank, double lo[2], double hi[2]);
/// Cell index of a wrapped coordinate along dimension k, in [0, ncell[k]). Pure. (Inline: the
/// migration and the cell-order sort call it for every particle.)
static inline int64_t sgm_decomp_cell(const SgmDecomp *d, int k, double x)
{
  if (k >= d->dim) return 0;
  double v = floor(x * ((double)d->ncell[k] / d->L[k]));
  if (!(v >= 0.0)) return 0; /* also NaN: never convert it to an integer */
  if (v >= (double)d->ncell[k]) return d->ncell[k] - 1;
  return (int64_t)v;
}
/// Rank coordinate along k that owns cell c. Pure.
static inline int sgm_decomp_coord_of_cell(const SgmDecomp *d, int k, int64_t c)
{
  if (d->coord[k]) return d->coord[k][c];
  int64_t n = d->ncell[k], p = d->dims[k], q = n / p, r = n % p;
  /* pieces 0..r-1 have q+1 cells, the rest q */
  int64_t big = r * (q + 1);
  if (c < big) return (int)(c / (q + 1));
  return (int)(r + (c - big) / q);
}
/// Owner rank of a wrapped position x[dim]. Pure.
int sgm_decomp_owner(const SgmDecomp *d, const double *x);

/// Collective on comm: builds the periodic DMDA (1D or 2D) with ncell[k] = floor(L[k]/width)
/// cells (width = max(rc, cell_size)); `grid` (NULL or dims, 0 = decide) hints the rank grid.
/// Fills d from DMDAGetInfo and checks DMDAGetOwnershipRanges against sgm_decomp_split.
/// *da may be NULL (it is destroyed then); otherwise the caller destroys it.
PetscErrorCode sgm_decomp_create(MPI_Comm comm, int dim, const double L[2], double width,
                                 const int grid[2], SgmDecomp *d, DM *da);

#endif
