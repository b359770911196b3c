/* Cell lists by counting sort (CSR): cell_start[c]..cell_start[c+1] index into `order`.
 *
 * Owns: binning points of a rectangle into cells of width >= rc and the CSR arrays. Every array
 * grows on demand and nothing has a fixed number of slots per cell, so dense MIPS clusters cannot
 * overflow. Points outside the rectangle are clamped into the border cells (harmless: neighbour
 * tests use true distances). Plain C, no MPI.
 */
#ifndef SGM_CELLS_H
#define SGM_CELLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  int dim;
  int64_t nc[2];   /* cells per dimension */
  double lo[2];    /* rectangle origin */
  double width[2]; /* cell widths (>= rc) */
  int64_t ncells;  /* nc[0]*nc[1] */
  int64_t *start;  /* [ncells+1] CSR offsets */
  int64_t *order;  /* [n] point indices sorted by cell */
  int64_t *cell;   /* [n] cell of each point */
  size_t cap_cells, cap_pts;
} SgmCells;

/// Builds the list for n points x[n*dim] in the rectangle [lo, hi) with cell width >= rc (the
/// number of cells per dimension is capped at max_per_dim). Returns 0, or -1 on allocation failure.
int sgm_cells_build(SgmCells *c, int dim, const double lo[2], const double hi[2], double rc,
                    int64_t max_per_dim, int64_t n, const double *x);
/// Cell index of a point (clamped).
int64_t sgm_cells_index(const SgmCells *c, const double *x);
/// Frees the arrays (the struct itself is the caller's).
void sgm_cells_free(SgmCells *c);

#endif
