/* Local density and contact clusters of an AOUP state, in parallel on the engine's decomposition.
 *
 * Owns: sgm_observables_compute (it calls the S(k) code in structure_factor.c), the neighbour
 * count and union-find kernels (plain C over flat arrays), the distributed cluster labelling and
 * the metrics. The owned particles are copied into a private SgmParticles, migrated to their
 * owners (between Verlet-list rebuilds the engine's locals may have drifted out of their patch)
 * and given a private halo of width w = max(r_loc, r_contact): the engine's halo is only rc +
 * skin wide, and its ghost slots and recorded pattern belong to the force loop.
 *
 * Halo width: the halo engine forwards ghosts one hop per face (x faces then y faces), so it is
 * exact only when w <= the narrowest rank patch along each dimension; we check that (and w < L/2,
 * so that a pair has one minimum image) and stop with a message instead of returning silently
 * wrong counts.
 *
 * Pair tests use the minimum image of canonical positions (as the force loop does), so the
 * decision "r < r_loc" is the same double comparison on every decomposition; a periodic copy of a
 * ghost that is not the nearest image is skipped by comparing image positions (|xb_i - xb_j| <
 * L/2 per component).
 *
 * Clusters: a local union-find over locals + ghosts gives components that do not change; a label
 * (initially the id) is then propagated: every component takes the minimum label of its slots,
 * ghosts receive their owners' labels with sgm_halo_forward, repeat until no label changes
 * anywhere (one allreduce per round). At the fixed point every contact edge (u, v) is seen by
 * u's owner with v as a ghost (halo >= r_contact), so labels are equal along edges, i.e. the
 * minimum id of the cluster. Rounds grow with the number of rank patches a cluster crosses
 * (about the rank-grid diameter for a spanning cluster: 16 for 256 ranks), each round being one
 * halo message per face of size O(surface). We chose this over gathering cross-boundary edges
 * to rank 0 because it keeps memory and work per rank O(local + halo) at any rank count, with no
 * serial bottleneck. Cluster sizes are summed at the rank owning the label's id block
 * (one MPI_Alltoallv), so no rank holds an array of size N.
 */
#include "analysis_internal.h"
#include "sgm/core.h"

#include <stdlib.h>
#include <string.h>

static PetscLogEvent ev_density, ev_clusters, ev_sk;

static PetscErrorCode obs_log_init(void)
{
  static int done = 0;
  static PetscClassId cid;
  PetscFunctionBeginUser;
  if (done) PetscFunctionReturn(PETSC_SUCCESS);
  done = 1;
  PetscCall(PetscClassIdRegister("SGM analysis", &cid));
  PetscCall(PetscLogEventRegister("SgmObsDensity", cid, &ev_density));
  PetscCall(PetscLogEventRegister("SgmObsClusters", cid, &ev_clusters));
  PetscCall(PetscLogEventRegister("SgmObsSk", cid, &ev_sk));
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_observables_params_default(SgmObservablesParams *p)
{
  p->r_local = 5.0;
  p->density_bins = 64;
  p->contact_tol = 0.1;
  p->sk_grid = 0;
  p->every = 0;
  p->per_particle = 0;
}

PetscErrorCode sgm_observables_params_from_config(SgmConfig cfg, SgmObservablesParams *p)
{
  int64_t v;
  PetscFunctionBeginUser;
  sgm_observables_params_default(p);
  PetscCall(sgm_config_get_real(cfg, "analysis.r_local", &p->r_local));
  PetscCall(sgm_config_get_int(cfg, "analysis.density_bins", &v));
  p->density_bins = (int)v;
  PetscCall(sgm_config_get_real(cfg, "analysis.contact_tol", &p->contact_tol));
  PetscCall(sgm_config_get_int(cfg, "analysis.sk_grid", &v));
  p->sk_grid = (int)v;
  PetscCall(sgm_config_get_int(cfg, "analysis.every", &p->every));
  PetscBool pp;
  PetscCall(sgm_config_get_bool(cfg, "analysis.per_particle", &pp));
  p->per_particle = pp ? 1 : 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_free(SgmObservables *o)
{
  PetscFunctionBeginUser;
  free(o->hist), free(o->id), free(o->nloc), free(o->phi_loc), free(o->cluster);
  free(o->sk_k), free(o->sk_S), free(o->sk_max), free(o->sk_modes);
  sgm_observables_sk_free(o);
  memset(o, 0, sizeof *o);
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* realloc that accepts n = 0 (keeps a valid pointer) */
static PetscErrorCode resize(void **p, size_t n, size_t elem)
{
  PetscFunctionBeginUser;
  void *q = realloc(*p, (n ? n : 1) * elem);
  PetscCheck(q, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  *p = q;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* True when slot j is the nearest periodic copy of a partner of slot i: image positions xb
 * closer than L/2 in every component. */
static inline int nearest_copy(const double *xbi, const double *xbj, int dim, double halfL)
{
  for (int c = 0; c < dim; c++)
    if (fabs(xbi[c] - xbj[c]) >= halfL) return 0;
  return 1;
}

static inline double min_image_r2(const double *xi, const double *xj, int dim, double L)
{
  double r2 = 0.0;
  for (int c = 0; c < dim; c++) {
    double d = sgm_min_image(xi[c] - xj[c], L);
    r2 += d * d;
  }
  return r2;
}

/* Neighbour counts. nloc[nlocal]: for each owned slot i < nlocal, the number of slots j (locals
 * and ghosts, ntot in all) with another id, minimum-image distance < r and nearest copy. x, xb,
 * id: [ntot*dim], [ntot*dim], [ntot]; C: cells over the ntot slots with width >= r / R, searched
 * R cells either side (R = 2: a 5 x 5 block of r/2 cells, 31% less area than 3 x 3 cells of r). */
static void count_neighbours(int64_t *nloc, const SgmCells *C, int64_t R, const int64_t *id,
                             const double *x, const double *xb, int64_t nlocal, int dim, double L,
                             double r)
{
  const double r2max = r * r, halfL = 0.5 * L;
  for (int64_t i = 0; i < nlocal; i++) {
    const int64_t ci = C->cell[i], cx = ci % C->nc[0], cy = ci / C->nc[0];
    const int64_t y0 = cy > R ? cy - R : 0, y1 = cy + R < C->nc[1] ? cy + R : C->nc[1] - 1;
    const int64_t x0 = cx > R ? cx - R : 0, x1 = cx + R < C->nc[0] ? cx + R : C->nc[0] - 1;
    int64_t cnt = 0;
    for (int64_t yy = y0; yy <= y1; yy++) {
      const int64_t q0 = C->start[x0 + yy * C->nc[0]], q1 = C->start[x1 + 1 + yy * C->nc[0]];
      for (int64_t q = q0; q < q1; q++) {
        const int64_t j = C->order[q];
        if (id[j] == id[i]) continue;
        if (min_image_r2(x + i * dim, x + j * dim, dim, L) >= r2max) continue;
        if (!nearest_copy(xb + i * dim, xb + j * dim, dim, halfL)) continue;
        cnt++;
      }
    }
    nloc[i] = cnt;
  }
}

static int64_t uf_find(int64_t *parent, int64_t i)
{
  while (parent[i] != i) {
    parent[i] = parent[parent[i]]; /* path halving */
    i = parent[i];
  }
  return i;
}

static void uf_union(int64_t *parent, int64_t a, int64_t b)
{
  a = uf_find(parent, a), b = uf_find(parent, b);
  if (a < b)
    parent[b] = a;
  else if (b < a)
    parent[a] = b;
}

/* Union-find over all ntot slots: parent[ntot] ends with every slot pointing at its component's
 * root (the smallest slot index). Edges: pairs of slots with minimum-image distance < r, nearest
 * copy, and different ids (ghost-ghost edges are true edges too and shorten the propagation). */
static void contact_components(int64_t *parent, const SgmCells *C, const int64_t *id,
                               const double *x, const double *xb, int64_t ntot, int dim, double L,
                               double r)
{
  const double r2max = r * r, halfL = 0.5 * L;
  for (int64_t i = 0; i < ntot; i++) parent[i] = i;
  for (int64_t i = 0; i < ntot; i++) {
    const int64_t ci = C->cell[i], cx = ci % C->nc[0], cy = ci / C->nc[0];
    const int64_t y0 = cy > 0 ? cy - 1 : 0, y1 = cy + 1 < C->nc[1] ? cy + 1 : C->nc[1] - 1;
    const int64_t x0 = cx > 0 ? cx - 1 : 0, x1 = cx + 1 < C->nc[0] ? cx + 1 : C->nc[0] - 1;
    for (int64_t yy = y0; yy <= y1; yy++) {
      const int64_t q0 = C->start[x0 + yy * C->nc[0]], q1 = C->start[x1 + 1 + yy * C->nc[0]];
      for (int64_t q = q0; q < q1; q++) {
        const int64_t j = C->order[q];
        if (j <= i || id[j] == id[i]) continue;
        if (min_image_r2(x + i * dim, x + j * dim, dim, L) >= r2max) continue;
        if (!nearest_copy(xb + i * dim, xb + j * dim, dim, halfL)) continue;
        uf_union(parent, i, j);
      }
    }
  }
  for (int64_t i = 0; i < ntot; i++) parent[i] = uf_find(parent, i);
}

/* Rank owning the id block of `id` (PETSc split of n over size). */
static int id_block_owner(int64_t n, int size, int64_t id)
{
  int64_t q = n / size, r = n % size, big = r * (q + 1);
  return id < big ? (int)(id / (q + 1)) : (int)(r + (id - big) / q);
}

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Global cluster statistics from the labels of the owned particles. */
static PetscErrorCode cluster_sizes(SgmAoup s, const int64_t *label, int64_t nlocal,
                                    SgmObservables *o)
{
  const int size = s->size;
  const int64_t n = s->p.n;
  int64_t *sorted, *sb, *rb, *tally, start, count;
  int *sc, *sd, *rc, *rd;
  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1(nlocal + 1, &sorted));
  memcpy(sorted, label, (size_t)nlocal * sizeof(int64_t));
  qsort(sorted, (size_t)nlocal, sizeof(int64_t), cmp_i64);
  /* (label, count) records, sorted by label, hence grouped by destination rank */
  PetscCall(PetscMalloc1(2 * nlocal + 2, &sb));
  PetscCall(PetscCalloc4(size, &sc, size, &sd, size, &rc, size, &rd));
  int64_t nrec = 0;
  for (int64_t i = 0; i < nlocal;) {
    int64_t j = i;
    while (j < nlocal && sorted[j] == sorted[i]) j++;
    sb[2 * nrec] = sorted[i], sb[2 * nrec + 1] = j - i;
    sc[id_block_owner(n, size, sorted[i])] += 2;
    nrec++;
    i = j;
  }
  PetscCallMPI(MPI_Alltoall(sc, 1, MPI_INT, rc, 1, MPI_INT, s->comm));
  int64_t ts = 0, tr = 0;
  for (int r = 0; r < size; r++) sd[r] = (int)ts, ts += sc[r], rd[r] = (int)tr, tr += rc[r];
  PetscCall(PetscMalloc1(tr + 1, &rb));
  PetscCallMPI(MPI_Alltoallv(sb, sc, sd, MPI_INT64_T, rb, rc, rd, MPI_INT64_T, s->comm));
  sgm_decomp_split(n, size, s->rank, &start, &count);
  PetscCall(PetscCalloc1(count + 1, &tally));
  for (int64_t j = 0; j < tr / 2; j++) {
    int64_t lab = rb[2 * j];
    PetscCheck(lab >= start && lab < start + count, PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "cluster label %" PRId64 " sent to the wrong rank", lab);
    tally[lab - start] += rb[2 * j + 1];
  }
  /* largest: max size, ties broken by the smallest label; reduced as one (size, -label) pair */
  int64_t loc[3] = {0, 0, INT64_MIN}, best[2]; /* clusters, total, (size, -label) below */
  int64_t bsize = 0, blabel = INT64_MAX;
  for (int64_t j = 0; j < count; j++) {
    if (!tally[j]) continue;
    loc[0]++, loc[1] += tally[j];
    if (tally[j] > bsize) bsize = tally[j], blabel = start + j;
  }
  int64_t glob[2];
  PetscCallMPI(MPI_Allreduce(loc, glob, 2, MPI_INT64_T, MPI_SUM, s->comm));
  PetscCallMPI(MPI_Allreduce(&bsize, &best[0], 1, MPI_INT64_T, MPI_MAX, s->comm));
  int64_t mylab = bsize == best[0] ? blabel : INT64_MAX;
  PetscCallMPI(MPI_Allreduce(&mylab, &best[1], 1, MPI_INT64_T, MPI_MIN, s->comm));
  PetscCheck(glob[1] == n, s->comm, PETSC_ERR_PLIB,
             "cluster sizes add up to %" PRId64 " particles, expected %" PRId64, glob[1], n);
  o->n_clusters = glob[0];
  o->largest_size = best[0];
  o->largest_label = best[1];
  o->largest_fraction = (double)best[0] / (double)n;
  PetscCall(PetscFree(tally));
  PetscCall(PetscFree(rb));
  PetscCall(PetscFree4(sc, sd, rc, rd));
  PetscCall(PetscFree(sb));
  PetscCall(PetscFree(sorted));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Min-label propagation (see the file comment). lab[ntot] doubles (ids < 2^32 are exact), comp
 * [ntot] component roots. */
static PetscErrorCode propagate_labels(SgmAoup s, SgmHalo h, SgmParticles *P, const int64_t *comp,
                                       double *lab, double *cmin, int *iterations)
{
  const int64_t nlocal = P->nlocal, ntot = P->nlocal + P->nghost;
  PetscFunctionBeginUser;
  for (int64_t i = 0; i < ntot; i++) lab[i] = (double)P->id[i];
  for (int it = 1;; it++) {
    for (int64_t i = 0; i < ntot; i++) cmin[i] = INFINITY;
    for (int64_t i = 0; i < ntot; i++)
      if (lab[i] < cmin[comp[i]]) cmin[comp[i]] = lab[i];
    int changed = 0, any;
    for (int64_t i = 0; i < ntot; i++) {
      if (i < nlocal && cmin[comp[i]] != lab[i]) changed = 1;
      lab[i] = cmin[comp[i]];
    }
    PetscCallMPI(MPI_Allreduce(&changed, &any, 1, MPI_INT, MPI_LOR, s->comm));
    *iterations = it;
    if (!any) break;
    PetscCheck(it <= 4 * (s->size + 2), s->comm, PETSC_ERR_PLIB,
               "cluster labels did not converge in %d rounds", it);
    PetscCall(sgm_halo_forward(h, P, lab, 1));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Narrowest patch edge along dimension k over all ranks (pure arithmetic on the split). */
static double narrowest_patch(const SgmDecomp *d, int k)
{
  /* min_cells: the fewest cells the engine's load balancing may leave to a rank */
  return d->L[k] * (double)d->min_cells[k] / (double)d->ncell[k];
}

/* Exact moments of n_i from the global histogram of every value (no overflow bin): the same
 * integers on every rank count, summed in the same order, so the statistics are bitwise equal. */
static void density_moments(SgmObservables *o, const int64_t *full, int64_t nmax, int64_t n)
{
  double mean = 0.0, m2 = 0.0, m3 = 0.0, m4 = 0.0;
  for (int64_t v = 0; v <= nmax; v++) mean += (double)full[v] * (double)v;
  mean /= (double)n;
  for (int64_t v = 0; v <= nmax; v++) {
    double d = (double)v - mean, w = (double)full[v];
    m2 += w * d * d, m3 += w * d * d * d, m4 += w * d * d * d * d;
  }
  m2 /= (double)n, m3 /= (double)n, m4 /= (double)n;
  o->nloc_mean = mean;
  o->nloc_var = m2;
  o->skewness = o->kurtosis = o->bimodality = 0.0;
  if (n > 3 && m2 > 0.0) {
    const double N = (double)n, g1 = m3 / pow(m2, 1.5), k = m4 / (m2 * m2) - 3.0;
    o->skewness = g1 * sqrt(N * (N - 1.0)) / (N - 2.0);
    o->kurtosis = (N - 1.0) / ((N - 2.0) * (N - 3.0)) * ((N + 1.0) * k + 6.0);
    o->bimodality = (o->skewness * o->skewness + 1.0) /
                    (o->kurtosis + 3.0 * (N - 1.0) * (N - 1.0) / ((N - 2.0) * (N - 3.0)));
  }
}

static PetscErrorCode density_histogram(SgmAoup s, SgmObservables *o, int nbins)
{
  int64_t nmax = 0, *full, *gfull;
  PetscFunctionBeginUser;
  for (int64_t i = 0; i < o->nlocal; i++)
    if (o->nloc[i] > nmax) nmax = o->nloc[i];
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nmax, 1, MPI_INT64_T, MPI_MAX, s->comm));
  PetscCall(PetscCalloc2(nmax + 1, &full, nmax + 1, &gfull));
  for (int64_t i = 0; i < o->nlocal; i++) full[o->nloc[i]]++;
  PetscCallMPI(MPI_Allreduce(full, gfull, (int)(nmax + 1), MPI_INT64_T, MPI_SUM, s->comm));
  PetscCall(resize((void **)&o->hist, (size_t)nbins, sizeof(int64_t)));
  memset(o->hist, 0, (size_t)nbins * sizeof(int64_t));
  for (int64_t v = 0; v <= nmax; v++) o->hist[v < nbins - 1 ? v : nbins - 1] += gfull[v];
  o->nbins = nbins;
  o->nloc_max = nmax;
  density_moments(o, gfull, nmax, s->p.n);
  const double ratio = pow(s->p.a / o->r_local, (double)s->p.dim);
  o->phi_mean = o->nloc_mean * ratio;
  PetscCall(PetscFree2(full, gfull));
  PetscFunctionReturn(PETSC_SUCCESS);
}

double sgm_observables_halo_width(const SgmObservablesParams *p, double a)
{
  const double r_loc = p->r_local * a, r_con = 2.0 * a * (1.0 + p->contact_tol);
  return r_loc > r_con ? r_loc : r_con;
}

PetscErrorCode sgm_observables_check(SgmAoup s, const SgmObservablesParams *p)
{
  const int dim = s->p.dim;
  const double a = s->p.a, L = s->p.L;
  PetscFunctionBeginUser;
  PetscCheck(
      s->p.periodic, s->comm, SGM_ERR_USER,
      "analysis: the observables need a periodic box (boundary = \"open\" is not supported)");
  PetscCheck(p->r_local > 0.0 && p->density_bins >= 2 && p->contact_tol >= 0.0, s->comm,
             SGM_ERR_USER, "analysis: need r_local > 0, density_bins >= 2, contact_tol >= 0");
  const double r_loc = p->r_local * a, r_con = 2.0 * a * (1.0 + p->contact_tol);
  const double w = sgm_observables_halo_width(p, a);
  PetscCheck(w < 0.5 * L, s->comm, SGM_ERR_USER,
             "analysis: halo width %g (max of r_local*a = %g and 2a(1+contact_tol) = %g) must be "
             "below L/2 = %g",
             w, r_loc, r_con, 0.5 * L);
  for (int k = 0; k < dim; k++) {
    const double pw = narrowest_patch(&s->decomp, k);
    PetscCheck(w <= pw, s->comm, SGM_ERR_USER,
               "analysis: halo width %g (max of r_local*a = %g and 2a(1+contact_tol) = %g) exceeds "
               "the narrowest rank patch %g along dimension %d (%d ranks over L = %g). The halo "
               "engine exchanges with face neighbours only, one hop: use fewer ranks along that "
               "dimension ([simulate] grid), a larger box or a smaller analysis.r_local",
               w, r_loc, r_con, pw, k, s->decomp.dims[k], L);
  }
  PetscCheck(p->sk_grid >= -1 && p->sk_grid != 1, s->comm, SGM_ERR_USER,
             "analysis: sk_grid = %d: use -1 (none), 0 (automatic) or M >= 2", p->sk_grid);
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* 1 if M is even and has no prime factor above 5 (FFTW's fast radices 2, 3, 5). */
static int fft_friendly(int M)
{
  if (M % 2) return 0;
  while (M % 2 == 0) M /= 2;
  while (M % 3 == 0) M /= 3;
  while (M % 5 == 0) M /= 5;
  return M == 1;
}

/* The S(k) grid M: sk_grid, or automatic: the smallest even M >= 16 with no prime factor above
 * 5 and spacing L/M <= a/2, so shells reach k = 2 pi / a (at N = 4096, phi = 0.5, a = 1: L =
 * 160.4, M = 324; the power of two above, 512, took 1.5-2x as long per S(k) on 1 and 2 ranks,
 * docs/performance.md); 0 or less: no S(k). */
static int sk_grid_of(SgmAoup s, const SgmObservablesParams *p)
{
  int M = p->sk_grid;
  if (M == 0) {
    const double need = 2.0 * s->p.L / s->p.a;
    const int cap = s->p.dim == 1 ? 1 << 20 : 2048;
    M = 16;
    while ((M < need || !fft_friendly(M)) && M < cap) M++;
  }
  return M;
}

PetscErrorCode sgm_observables_prepare(SgmAoup s, const SgmObservablesParams *p, SgmObservables *o)
{
  PetscFunctionBeginUser;
  const int M = sk_grid_of(s, p);
  if (M >= 2) PetscCall(sgm_observables_sk_prepare(s, M, o));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_compute(SgmAoup s, const SgmObservablesParams *p, SgmObservables *o)
{
  const int dim = s->p.dim;
  const double a = s->p.a, L = s->p.L;
  SgmParticles P;
  SgmHalo h = NULL;
  SgmCells C;

  PetscFunctionBeginUser;
  PetscCall(obs_log_init());
  PetscCall(sgm_observables_check(s, p));
  const double r_loc = p->r_local * a, r_con = 2.0 * a * (1.0 + p->contact_tol);
  const double w = r_loc > r_con ? r_loc : r_con;
  o->dim = dim;
  o->n = s->p.n;
  o->per_particle = p->per_particle;
  o->step = s->step;
  o->r_local = r_loc;
  o->r_contact = r_con;

  /* private copy of the owned particles, private halo */
  memset(&P, 0, sizeof P);
  memset(&C, 0, sizeof C);
  P.dim = dim;
  PetscCall(sgm_particles_reserve(&P, s->part.nlocal + 1));
  P.nlocal = s->part.nlocal;
  memcpy(P.id, s->part.id, (size_t)P.nlocal * sizeof(int64_t));
  memcpy(P.x, s->part.x, (size_t)(P.nlocal * dim) * sizeof(double));
  memcpy(P.g, s->part.g, (size_t)(P.nlocal * dim) * sizeof(double));
  PetscCall(sgm_halo_create(s->comm, &s->decomp, w, &h));
  /* between Verlet-list rebuilds the engine's locals may have left their patch: migrate the copy */
  PetscCall(sgm_halo_migrate(h, &P));
  PetscCall(sgm_halo_exchange(h, &P));
  const int64_t nlocal = P.nlocal, ntot = P.nlocal + P.nghost;
  double lo[2] = {0, 0}, hi[2] = {0, 0}, plo[2], phi[2];
  sgm_decomp_patch(&s->decomp, s->rank, plo, phi);
  for (int c = 0; c < dim; c++) lo[c] = plo[c] - w, hi[c] = phi[c] + w;
  int64_t max_cells = dim == 1 ? 4 * ntot + 3 : 2 * (int64_t)sqrt((double)ntot) + 3;
  /* density cells of width >= r_loc / 2, searched two cells either side */
  PetscCheck(!sgm_cells_build(&C, dim, lo, hi, 0.5 * r_loc, max_cells, ntot, P.xb), PETSC_COMM_SELF,
             PETSC_ERR_MEM, "cell list allocation failed");

  /* local density */
  PetscCall(PetscLogEventBegin(ev_density, 0, 0, 0, 0));
  o->nlocal = nlocal;
  PetscCall(resize((void **)&o->id, (size_t)nlocal, sizeof(int64_t)));
  PetscCall(resize((void **)&o->nloc, (size_t)nlocal, sizeof(int64_t)));
  PetscCall(resize((void **)&o->phi_loc, (size_t)nlocal, sizeof(double)));
  PetscCall(resize((void **)&o->cluster, (size_t)nlocal, sizeof(int64_t)));
  memcpy(o->id, P.id, (size_t)nlocal * sizeof(int64_t));
  count_neighbours(o->nloc, &C, 2, P.id, P.x, P.xb, nlocal, dim, L, r_loc);
  const double ratio = pow(a / r_loc, (double)dim);
  for (int64_t i = 0; i < nlocal; i++) o->phi_loc[i] = (double)o->nloc[i] * ratio;
  PetscCall(density_histogram(s, o, p->density_bins));
  PetscCall(PetscLogEventEnd(ev_density, 0, 0, 0, 0));

  /* clusters */
  PetscCall(PetscLogEventBegin(ev_clusters, 0, 0, 0, 0));
  int64_t *comp;
  double *lab, *cmin;
  PetscCall(PetscMalloc3(ntot + 1, &comp, ntot + 1, &lab, ntot + 1, &cmin));
  /* contacts (r_con, about 2.2 a) are searched in their own cells of width >= r_con (before: the
   * cells of width w = max(r_loc, r_con), 5 a by default, about 5x more candidate pairs in 2D).
   * The edges are the same, so are the components (every root is its component's smallest slot). */
  SgmCells Cc;
  memset(&Cc, 0, sizeof Cc);
  PetscCheck(!sgm_cells_build(&Cc, dim, lo, hi, r_con, max_cells, ntot, P.xb), PETSC_COMM_SELF,
             PETSC_ERR_MEM, "cell list allocation failed");
  contact_components(comp, &Cc, P.id, P.x, P.xb, ntot, dim, L, r_con);
  sgm_cells_free(&Cc);
  PetscCall(propagate_labels(s, h, &P, comp, lab, cmin, &o->label_iterations));
  for (int64_t i = 0; i < nlocal; i++) o->cluster[i] = (int64_t)lab[i];
  PetscCall(cluster_sizes(s, o->cluster, nlocal, o));
  PetscCall(PetscFree3(comp, lab, cmin));
  PetscCall(PetscLogEventEnd(ev_clusters, 0, 0, 0, 0));

  sgm_cells_free(&C);
  sgm_particles_free(&P);
  PetscCall(sgm_halo_destroy(&h));

  /* structure factor */
  PetscCall(PetscLogEventBegin(ev_sk, 0, 0, 0, 0));
  const double tsk = MPI_Wtime();
  const int M = sk_grid_of(s, p);
  if (M > 0)
    PetscCall(sgm_observables_sk(s, M, o));
  else
    o->nshell = 0, o->sk_grid = 0;
  o->sk_seconds = MPI_Wtime() - tsk;
  PetscCall(PetscLogEventEnd(ev_sk, 0, 0, 0, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_metrics(SgmMetrics m, const char *stage, const SgmObservables *o)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_metrics_set(m, stage, "obs_largest_cluster_fraction", o->largest_fraction));
  PetscCall(sgm_metrics_set(m, stage, "obs_n_clusters", (double)o->n_clusters));
  PetscCall(sgm_metrics_set(m, stage, "obs_local_density_mean", o->nloc_mean));
  PetscCall(sgm_metrics_set(m, stage, "obs_local_density_bimodality", o->bimodality));
  PetscCall(sgm_metrics_set(m, stage, "obs_phi_local_mean", o->phi_mean));
  if (o->nshell > 1) {
    int best = 1;
    for (int sh = 2; sh < o->nshell; sh++)
      if (o->sk_S[sh] > o->sk_S[best]) best = sh;
    PetscCall(sgm_metrics_set(m, stage, "obs_sk_peak_k", o->sk_k[best]));
    PetscCall(sgm_metrics_set(m, stage, "obs_sk_peak", o->sk_S[best]));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}
