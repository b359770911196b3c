/* Counting-sort cell lists. Two passes over the points (count, then place), so building costs
 * O(n + ncells) and the result is ordered by cell and, inside a cell, by point index: the order is
 * deterministic, which keeps debugging simple (force sums do not rely on it; see aoup.c). */
#include "sgm/cells.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 64;
  while (n < need) n *= 2;
  void *q = realloc(*p, n * elem);
  if (!q) return -1;
  *p = q;
  *cap = n;
  return 0;
}

static inline int64_t cell_index(const SgmCells *c, const double *x)
{
  int64_t idx = 0, stride = 1;
  for (int k = 0; k < c->dim; k++) {
    double v = floor((x[k] - c->lo[k]) / c->width[k]);
    int64_t i = !(v >= 0.0) ? 0 : v >= (double)c->nc[k] ? c->nc[k] - 1 : (int64_t)v;
    idx += i * stride;
    stride *= c->nc[k];
  }
  return idx;
}

int sgm_cells_build(SgmCells *c, int dim, const double lo[2], const double hi[2], double rc,
                    int64_t max_per_dim, int64_t n, const double *x)
{
  c->dim = dim;
  c->ncells = 1;
  for (int k = 0; k < 2; k++) {
    if (k >= dim) {
      c->nc[k] = 1, c->lo[k] = 0.0, c->width[k] = 1.0;
      continue;
    }
    double ext = hi[k] - lo[k];
    int64_t m = (int64_t)floor(ext / rc);
    if (!(m >= 1)) m = 1; /* also catches NaN extents */
    if (m > max_per_dim) m = max_per_dim;
    c->nc[k] = m;
    c->lo[k] = lo[k];
    c->width[k] = ext / (double)m;
    if (!(c->width[k] >= rc)) c->width[k] = rc; /* rounding: never narrower than rc */
    c->ncells *= m;
  }
  size_t capc = c->cap_cells, capp = c->cap_pts;
  if (grow((void **)&c->start, &capc, (size_t)c->ncells + 1, sizeof(int64_t))) return -1;
  capp = c->cap_pts;
  if (grow((void **)&c->order, &capp, (size_t)n, sizeof(int64_t))) return -1;
  capp = c->cap_pts;
  if (grow((void **)&c->cell, &capp, (size_t)n, sizeof(int64_t))) return -1;
  c->cap_cells = capc;
  c->cap_pts = capp;
  memset(c->start, 0, ((size_t)c->ncells + 1) * sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) {
    int64_t ci = cell_index(c, x + i * dim);
    c->cell[i] = ci;
    c->start[ci + 1]++;
  }
  for (int64_t ci = 0; ci < c->ncells; ci++) c->start[ci + 1] += c->start[ci];
  /* place: use cell[] temporarily as a cursor would need another array; walk with a copy */
  for (int64_t i = 0; i < n; i++) c->order[c->start[c->cell[i]]++] = i;
  for (int64_t ci = c->ncells; ci > 0; ci--) c->start[ci] = c->start[ci - 1];
  c->start[0] = 0;
  return 0;
}

int64_t sgm_cells_index(const SgmCells *c, const double *x)
{
  return cell_index(c, x);
}

void sgm_cells_free(SgmCells *c)
{
  free(c->start);
  free(c->order);
  free(c->cell);
  memset(c, 0, sizeof(*c));
}
