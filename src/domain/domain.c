/* Decomposition maths (pure) and the DMDA that picks the rank grid.
 *
 * The DMDA is the field grid of the EPR maps too, so its cells are the unit of ownership: a rank
 * owns the cells of its DMDA patch (or, once the engine balanced the load, the cells between its
 * cuts, SgmDecomp.cut) and the particles whose cell index falls in them. Cells are at
 * least one interaction range wide, so every patch is too and halos come from face neighbours
 * only (corners via the x-then-y forwarding in halo.c).
 */
#include "sgm/domain.h"
#include "sgm/core.h"

#include <string.h>

void sgm_decomp_split(int64_t n, int p, int i, int64_t *start, int64_t *count)
{
  int64_t q = n / p, r = n % p;
  *count = q + (i < r ? 1 : 0);
  *start = q * i + (i < r ? i : r);
}

void sgm_decomp_range(const SgmDecomp *d, int k, int i, int64_t *start, int64_t *count)
{
  if (d->cut[k]) {
    *start = d->cut[k][i];
    *count = d->cut[k][i + 1] - d->cut[k][i];
  } else
    sgm_decomp_split(d->ncell[k], d->dims[k], i, start, count);
}

void sgm_decomp_coords(const SgmDecomp *d, int rank, int coords[2])
{
  coords[0] = rank % d->dims[0];
  coords[1] = rank / d->dims[0];
}

int sgm_decomp_rank(const SgmDecomp *d, const int coords[2])
{
  int cx = ((coords[0] % d->dims[0]) + d->dims[0]) % d->dims[0];
  int cy = ((coords[1] % d->dims[1]) + d->dims[1]) % d->dims[1];
  return cx + d->dims[0] * cy;
}

void sgm_decomp_patch(const SgmDecomp *d, int rank, double lo[2], double hi[2])
{
  int c[2];
  sgm_decomp_coords(d, rank, c);
  for (int k = 0; k < 2; k++) {
    int64_t s, n;
    sgm_decomp_range(d, k, c[k], &s, &n);
    lo[k] = d->L[k] * (double)s / (double)d->ncell[k];
    hi[k] = d->L[k] * (double)(s + n) / (double)d->ncell[k];
    if (k >= d->dim) lo[k] = 0.0, hi[k] = d->L[k];
  }
}

int sgm_decomp_owner(const SgmDecomp *d, const double *x)
{
  int c[2] = {0, 0};
  for (int k = 0; k < d->dim; k++)
    c[k] = sgm_decomp_coord_of_cell(d, k, sgm_decomp_cell(d, k, x[k]));
  return sgm_decomp_rank(d, c);
}

PetscErrorCode sgm_decomp_create(MPI_Comm comm, int dim, const double L[2], double width,
                                 const int grid[2], SgmDecomp *d, DM *da)
{
  DM dm;
  PetscInt M, N, m, n, p;
  const PetscInt *lx, *ly = NULL, *lz = NULL;
  PetscMPIInt size;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCheck(dim == 1 || dim == 2, comm, PETSC_ERR_ARG_OUTOFRANGE, "dimension %d not 1 or 2", dim);
  memset(d, 0, sizeof(*d));
  d->dim = dim;
  d->L[0] = L[0];
  d->L[1] = dim == 2 ? L[1] : 1.0;
  int64_t nc[2] = {(int64_t)floor(L[0] / width), dim == 2 ? (int64_t)floor(L[1] / width) : 1};
  for (int k = 0; k < dim; k++)
    PetscCheck(nc[k] >= 3, comm, SGM_ERR_USER,
               "box edge %g is less than 3 interaction ranges (%g): too small for a cell grid",
               L[k], width);
  if (dim == 1) {
    PetscCheck(nc[0] >= size, comm, SGM_ERR_USER,
               "%d ranks but only %" PRId64 " cells of width >= %g along the box: use fewer ranks",
               (int)size, nc[0], width);
    PetscCall(DMDACreate1d(comm, DM_BOUNDARY_PERIODIC, (PetscInt)nc[0], 1, 1, NULL, &dm));
  } else {
    PetscInt gx = (grid && grid[0] > 0) ? grid[0] : PETSC_DECIDE;
    PetscInt gy = (grid && grid[1] > 0) ? grid[1] : PETSC_DECIDE;
    PetscCall(DMDACreate2d(comm, DM_BOUNDARY_PERIODIC, DM_BOUNDARY_PERIODIC, DMDA_STENCIL_BOX,
                           (PetscInt)nc[0], (PetscInt)nc[1], gx, gy, 1, 1, NULL, NULL, &dm));
  }
  PetscCall(DMSetFromOptions(dm));
  PetscCall(DMSetUp(dm));
  PetscCall(DMDAGetInfo(dm, NULL, &M, &N, &p, &m, &n, NULL, NULL, NULL, NULL, NULL, NULL, NULL));
  PetscCall(DMDAGetOwnershipRanges(dm, &lx, dim == 2 ? &ly : NULL, NULL));
  (void)p;
  (void)lz;
  d->dims[0] = (int)m;
  d->dims[1] = dim == 2 ? (int)n : 1;
  d->ncell[0] = M;
  d->ncell[1] = dim == 2 ? N : 1;
  for (int k = 0; k < 2; k++) d->min_cells[k] = d->ncell[k] / d->dims[k];
  for (int k = 0; k < dim; k++) {
    const PetscInt *own = k == 0 ? lx : ly;
    for (int i = 0; i < d->dims[k]; i++) {
      int64_t s, c;
      sgm_decomp_split(d->ncell[k], d->dims[k], i, &s, &c);
      PetscCheck(own[i] == c, comm, PETSC_ERR_PLIB,
                 "DMDA ownership range %d along %d is %" PetscInt_FMT ", expected %" PRId64, i, k,
                 own[i], c);
    }
  }
  if (da)
    *da = dm;
  else
    PetscCall(DMDestroy(&dm));
  PetscFunctionReturn(PETSC_SUCCESS);
}
