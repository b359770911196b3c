/* K-nearest-neighbour windows of the local transformer (include/sgm/windows.h).
 *
 * Owns the neighbour search. Trade-offs: the windows keep their own copy of the owned particles
 * and their own halo engine rather than borrowing the dynamics engine's ghosts, because the
 * window radius (the K-th neighbour distance in the sparsest region, e.g. the MIPS gas) is
 * unrelated to the interaction range and must be able to grow without touching the dynamics.
 * The search bins locals + ghosts by their image positions into cells at least one halo width
 * wide and scans the 3^dim cells around each centre (O(N K) in total, not all pairs). A
 * candidate's distance is the minimum image of canonical doubles, so the same pair has bitwise
 * the same distance on every decomposition; a bounded insertion list ordered by (distance, global
 * id) then gives a decomposition-independent table. On a rank that is its own neighbour a
 * particle can appear twice (itself and a periodic ghost copy): duplicates are dropped by id.
 * Completeness: every particle within the halo width of a centre is a local or a ghost and lies
 * in the scanned cells, so a window is exact when its K-th distance is below the width; if any
 * window (on any rank) violates that, the width grows by 1.5x (at least to 1.05x the largest
 * K-th distance) and the search is redone. The one-hop halo supports widths up to the smallest
 * patch edge (half the box when one rank spans a dimension); beyond that the build fails with a
 * message naming K and the width needed.
 */
#include "sgm/windows.h"
#include "sgm/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct SgmWindows_ {
  MPI_Comm comm;
  SgmDecomp d;
  int dim, K;
  double width, max_width;
  int64_t ngrow;
  SgmHalo halo;
  SgmParticles part;
  SgmCells cells;
  int64_t nlocal;
  int64_t *nbr, *nbr_id; /* (nlocal, K+1) */
  size_t cap;
  double *bd2; /* (K) scratch of the insertion list */
  int64_t *bidx;
};

PetscErrorCode sgm_windows_create(MPI_Comm comm, const SgmDecomp *d, int K, double width,
                                  SgmWindows *wout)
{
  SgmWindows w;
  PetscMPIInt size;
  PetscFunctionBeginUser;
  PetscCheck(K >= 1, comm, SGM_ERR_USER, "windows need K >= 1 (got %d)", K);
  PetscCheck(width > 0 && isfinite(width), comm, SGM_ERR_USER, "window halo width must be > 0");
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscCalloc1(1, &w));
  w->comm = comm;
  w->d = *d;
  w->dim = d->dim;
  w->K = K;
  /* the one-hop halo reaches one patch: the smallest patch edge over all ranks */
  w->max_width = INFINITY;
  for (int k = 0; k < d->dim; k++) {
    double lim = 0.5 * d->L[k];
    if (d->dims[k] > 1)
      for (int r = 0; r < size; r++) {
        double lo[2], hi[2];
        sgm_decomp_patch(d, r, lo, hi);
        if (hi[k] - lo[k] < lim) lim = hi[k] - lo[k];
      }
    if (lim < w->max_width) w->max_width = lim;
  }
  w->width = width < w->max_width ? width : w->max_width;
  w->part.dim = d->dim;
  PetscCall(PetscMalloc2(K, &w->bd2, K, &w->bidx));
  PetscCall(sgm_halo_create(comm, d, w->width, &w->halo));
  *wout = w;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_windows_destroy(SgmWindows *wp)
{
  PetscFunctionBeginUser;
  if (!wp || !*wp) PetscFunctionReturn(PETSC_SUCCESS);
  SgmWindows w = *wp;
  PetscCall(sgm_halo_destroy(&w->halo));
  sgm_particles_free(&w->part);
  sgm_cells_free(&w->cells);
  free(w->nbr), free(w->nbr_id);
  PetscCall(PetscFree2(w->bd2, w->bidx));
  PetscCall(PetscFree(w));
  *wp = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Inserts (d2, id j) into the list ordered by (d2, id) of length *n <= K; drops duplicate ids. A
 * duplicate (a particle seen as a local and as its periodic ghost copy, or as two ghost copies) has
 * bitwise the same d2 (minimum image of the same canonical doubles, the same perturbation), so it
 * would sit right after its twin: the position is found first and the neighbour before it
 * compared, instead of scanning the list for the id on every insertion. */
static void insert(SgmWindows w, int *n, const int64_t *id, double d2, int64_t j)
{
  const int K = w->K;
  const int64_t gj = id[j];
  if (*n == K) {
    const double dl = w->bd2[K - 1];
    const int64_t il = id[w->bidx[K - 1]];
    if (d2 > dl || (d2 == dl && gj >= il)) return;
  }
  int pos = *n;
  while (pos > 0) {
    const double dp = w->bd2[pos - 1];
    const int64_t ip = id[w->bidx[pos - 1]];
    if (dp < d2 || (dp == d2 && ip <= gj)) break;
    pos--;
  }
  if (pos > 0 && w->bd2[pos - 1] == d2 && id[w->bidx[pos - 1]] == gj) return;
  for (int a = *n < K ? *n : K - 1; a > pos; a--)
    w->bd2[a] = w->bd2[a - 1], w->bidx[a] = w->bidx[a - 1];
  w->bd2[pos] = d2, w->bidx[pos] = j;
  if (*n < K) (*n)++;
}

/* One search at the current width for the centres `want` selects (all when NULL; the rows of the
 * others repeat the centre); *need = largest K-th distance (INFINITY when a window has fewer than
 * K candidates). */
static PetscErrorCode search(SgmWindows w, int (*want)(void *, int64_t), void *ctx, double *need)
{
  const int dim = w->dim, K = w->K;
  SgmParticles *p = &w->part;
  const int64_t nl = p->nlocal, nt = p->nlocal + p->nghost;
  double lo[2] = {0, 0}, hi[2] = {1, 1};
  PetscFunctionBeginUser;
  {
    PetscMPIInt rank;
    PetscCallMPI(MPI_Comm_rank(w->comm, &rank));
    sgm_decomp_patch(&w->d, rank, lo, hi);
    for (int k = 0; k < dim; k++) lo[k] -= w->width, hi[k] += w->width;
  }
  PetscCheck(sgm_cells_build(&w->cells, dim, lo, hi, w->width, 1 << 20, nt, p->xb) == 0,
             PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory (window cells)");
  const SgmCells *c = &w->cells;
  double worst = 0.0;
  for (int64_t i = 0; i < nl; i++) {
    int64_t ci = c->cell[i], cc[2] = {ci % c->nc[0], dim > 1 ? ci / c->nc[0] : 0};
    int n = 0;
    if (want && !want(ctx, p->id[i])) {
      int64_t *row = w->nbr + i * (K + 1), *rid = w->nbr_id + i * (K + 1);
      for (int a = 0; a <= K; a++) row[a] = i, rid[a] = p->id[i];
      continue;
    }
    for (int64_t oy = dim > 1 ? -1 : 0; oy <= (dim > 1 ? 1 : 0); oy++)
      for (int64_t ox = -1; ox <= 1; ox++) {
        int64_t cx = cc[0] + ox, cy = cc[1] + oy;
        if (cx < 0 || cx >= c->nc[0] || cy < 0 || cy >= c->nc[1]) continue;
        int64_t cell = cx + c->nc[0] * cy;
        for (int64_t q = c->start[cell]; q < c->start[cell + 1]; q++) {
          int64_t j = c->order[q];
          if (p->id[j] == p->id[i]) continue;
          double d2 = 0.0;
          for (int k = 0; k < dim; k++) {
            double dk = sgm_min_image(p->x[j * dim + k] - p->x[i * dim + k], w->d.L[k]);
            d2 += dk * dk;
          }
          insert(w, &n, p->id, d2, j);
        }
      }
    if (n < K)
      worst = INFINITY;
    else if (w->bd2[K - 1] > worst)
      worst = w->bd2[K - 1];
    int64_t *row = w->nbr + i * (K + 1), *rid = w->nbr_id + i * (K + 1);
    row[0] = i, rid[0] = p->id[i];
    for (int a = 0; a < K; a++) {
      int64_t j = a < n ? w->bidx[a] : i;
      row[1 + a] = j, rid[1 + a] = p->id[j];
    }
  }
  *need = sqrt(worst);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_windows_build(SgmWindows w, int64_t nlocal, const int64_t *id, const double *x,
                                 const double *g)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_windows_build_selected(w, nlocal, id, x, g, NULL, NULL));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_windows_build_selected(SgmWindows w, int64_t nlocal, const int64_t *id,
                                          const double *x, const double *g,
                                          int (*want)(void *ctx, int64_t id), void *ctx)
{
  const int dim = w->dim, K = w->K;
  SgmParticles *p = &w->part;
  PetscFunctionBeginUser;
  {
    int64_t ntot = nlocal;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &ntot, 1, MPI_INT64_T, MPI_SUM, w->comm));
    PetscCheck(ntot - 1 >= K, w->comm, SGM_ERR_USER,
               "windows of K = %d neighbours need more than K particles (N = %" PRId64 ")", K,
               ntot);
  }
  for (;;) {
    PetscCall(sgm_particles_reserve(p, nlocal));
    p->nlocal = nlocal, p->nghost = 0;
    if (nlocal) {
      memcpy(p->id, id, (size_t)nlocal * sizeof(int64_t));
      memcpy(p->x, x, (size_t)(nlocal * dim) * sizeof(double));
      memcpy(p->g, g, (size_t)(nlocal * dim) * sizeof(double));
    }
    /* the caller's particles may sit slightly outside their patch (an engine that migrates only
     * at neighbour-list rebuilds); the completeness argument needs every centre inside */
    PetscCall(sgm_halo_migrate(w->halo, p));
    if ((size_t)p->nlocal > w->cap) {
      size_t nc = (size_t)p->nlocal + (size_t)p->nlocal / 4 + 16;
      free(w->nbr), free(w->nbr_id);
      w->nbr = malloc(nc * (size_t)(K + 1) * sizeof(int64_t));
      w->nbr_id = malloc(nc * (size_t)(K + 1) * sizeof(int64_t));
      PetscCheck(w->nbr && w->nbr_id, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory (windows)");
      w->cap = nc;
    }
    w->nlocal = p->nlocal;
    PetscCall(sgm_halo_exchange(w->halo, p));
    PetscCall(sgm_halo_forward(w->halo, p, p->g, dim));
    double need;
    PetscCall(search(w, want, ctx, &need));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &need, 1, MPI_DOUBLE, MPI_MAX, w->comm));
    /* strict: a particle at exactly the width might sit on the far side of the halo edge */
    if (need < w->width) break;
    PetscCheck(w->width < w->max_width, w->comm, SGM_ERR_USER,
               "windows: the K = %d nearest neighbours of some particle reach beyond %g, the "
               "widest halo this decomposition supports (smallest patch edge, or half the box); "
               "use fewer ranks along a dimension or a smaller K",
               K, w->max_width);
    double nw = 1.5 * w->width;
    if (isfinite(need) && 1.05 * need > nw) nw = 1.05 * need;
    if (nw > w->max_width) nw = w->max_width;
    PetscCall(
        PetscInfo(NULL, "windows: halo width %g -> %g (K-th distance %g)\n", w->width, nw, need));
    w->width = nw;
    w->ngrow++;
    PetscCall(sgm_halo_destroy(&w->halo));
    PetscCall(sgm_halo_create(w->comm, &w->d, w->width, &w->halo));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_windows_get(SgmWindows w, int64_t *nlocal, const int64_t **nbr,
                               const int64_t **nbr_id, const SgmParticles **part)
{
  PetscFunctionBeginUser;
  if (nlocal) *nlocal = w->nlocal;
  if (nbr) *nbr = w->nbr;
  if (nbr_id) *nbr_id = w->nbr_id;
  if (part) *part = &w->part;
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_windows_width(SgmWindows w, double *width, int64_t *ngrow)
{
  if (width) *width = w->width;
  if (ngrow) *ngrow = w->ngrow;
}

/* The K nearest neighbours of local i in the perturbed frame x + scale px (minimum image of the
 * clean canonical doubles plus the perturbation difference, ties by id), from the cells of the
 * last search, into row (K+1; column 0 is i, missing neighbours repeat i). The denoising loss
 * needs its windows chosen in the noised frame: windows chosen in the clean frame but filled
 * with noised coordinates tell the network something about the clean positions (the centre lies
 * inside its clean K-nearest set), which makes the centre's noise partly predictable and the
 * denoising loss unbounded by -E|s|^2 (the learned s_x absorbs it). A perturbed neighbour outside
 * the halo would need to move by more than the width minus its clean K-th distance (rare for
 * scale much smaller than the interparticle distance; the same approximation as the halo). */
static void perturbed_row(SgmWindows w, int64_t i, const double *px, double scale, int64_t *row)
{
  const int dim = w->dim, K = w->K;
  const SgmParticles *p = &w->part;
  const SgmCells *c = &w->cells;
  const int64_t ci = c->cell[i], cc[2] = {ci % c->nc[0], dim > 1 ? ci / c->nc[0] : 0};
  int n = 0;
  for (int64_t oy = dim > 1 ? -1 : 0; oy <= (dim > 1 ? 1 : 0); oy++)
    for (int64_t ox = -1; ox <= 1; ox++) {
      const int64_t cx = cc[0] + ox, cy = cc[1] + oy;
      if (cx < 0 || cx >= c->nc[0] || cy < 0 || cy >= c->nc[1]) continue;
      const int64_t cell = cx + c->nc[0] * cy;
      for (int64_t q = c->start[cell]; q < c->start[cell + 1]; q++) {
        const int64_t j = c->order[q];
        if (p->id[j] == p->id[i]) continue;
        double d2 = 0.0;
        for (int k = 0; k < dim; k++) {
          const double dk = sgm_min_image(p->x[j * dim + k] - p->x[i * dim + k], w->d.L[k]) +
                            scale * (px[j * dim + k] - px[i * dim + k]);
          d2 += dk * dk;
        }
        insert(w, &n, p->id, d2, j);
      }
    }
  row[0] = i;
  for (int a = 0; a < K; a++) row[1 + a] = a < n ? w->bidx[a] : i;
}

PetscErrorCode sgm_windows_gather(SgmWindows w, int B, const int64_t *centres, const double *px,
                                  const double *pg, double scale, float *X, float *G, float *mask)
{
  const int dim = w->dim, T = w->K + 1;
  const SgmParticles *p = &w->part;
  const int reselect = px && scale != 0.0;
  int64_t *prow = NULL;
  PetscFunctionBeginUser;
  if (reselect) PetscCall(PetscMalloc1(T, &prow));
  for (int b = 0; b < B; b++) {
    const int64_t i = centres[b];
    PetscAssert(i >= 0 && i < w->nlocal, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
                "centre %" PRId64 " not local", i);
    const int64_t *row = w->nbr + i * T;
    if (reselect) {
      perturbed_row(w, i, px, scale, prow);
      row = prow;
    }
    for (int t = 0; t < T; t++) {
      const int64_t j = row[t];
      float *xo = X + ((size_t)b * T + t) * dim, *go = G + ((size_t)b * T + t) * dim;
      for (int k = 0; k < dim; k++) {
        double dx = 0.0;
        if (t > 0) {
          dx = sgm_min_image(p->x[j * dim + k] - p->x[i * dim + k], w->d.L[k]);
          if (px) dx += scale * (px[j * dim + k] - px[i * dim + k]);
        }
        xo[k] = (float)dx;
        go[k] = (float)(p->g[j * dim + k] + (pg ? scale * pg[j * dim + k] : 0.0));
      }
      if (mask) mask[(size_t)b * T + t] = 1.0f;
    }
  }
  PetscCall(PetscFree(prow));
  PetscFunctionReturn(PETSC_SUCCESS);
}
