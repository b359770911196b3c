/* AOUP engine: state, pair-force registry, id-ordered force sums, Euler-Maruyama integration.
 *
 * Trade-off: forces are recomputed from fresh cell lists every step (no Verlet skin). With
 * dt = 0.1 and v0 = 0.025 a skin would be cheap to add, but rebuilding keeps the halo exactly
 * one interaction range wide and the code simple; pairs are visited twice (no Newton's third
 * law) so that each rank computes the full force on the particles it owns without a reverse
 * communication, and each particle's contributions are summed after sorting by partner id, which
 * makes the result independent of the decomposition bit for bit.
 */
#include "sgm/aoup.h"
#include "sgm/core.h"
#include "sgm/rng.h"

#include <stdlib.h>
#include <string.h>

static PetscClassId sgm_aoup_classid;
static PetscLogEvent ev_cells, ev_halo, ev_forces, ev_integrate, ev_migrate;

static PetscErrorCode check_finite(SgmAoup s, int q0, int nq);

static PetscErrorCode aoup_log_init(void)
{
  static int done = 0;
  PetscFunctionBeginUser;
  if (done) PetscFunctionReturn(PETSC_SUCCESS);
  done = 1;
  PetscCall(PetscClassIdRegister("SGM AOUP", &sgm_aoup_classid));
  PetscCall(PetscLogEventRegister("SgmCells", sgm_aoup_classid, &ev_cells));
  PetscCall(PetscLogEventRegister("SgmHalo", sgm_aoup_classid, &ev_halo));
  PetscCall(PetscLogEventRegister("SgmForces", sgm_aoup_classid, &ev_forces));
  PetscCall(PetscLogEventRegister("SgmIntegrate", sgm_aoup_classid, &ev_integrate));
  PetscCall(PetscLogEventRegister("SgmMigrate", sgm_aoup_classid, &ev_migrate));
  PetscFunctionReturn(PETSC_SUCCESS);
}

double sgm_force_harmonic(double r, double a, double k, double beta)
{
  (void)beta;
  return r < 2.0 * a ? k * (2.0 * a - r) : 0.0;
}

double sgm_force_softplus(double r, double a, double k, double beta)
{
  double y = beta * (2.0 * a - r);
  /* log(1 + e^y) without overflow: y + log1p(e^-y) for y > 0 */
  double sp = y > 0.0 ? y + log1p(exp(-y)) : log1p(exp(y));
  return k * sp / beta;
}

static SgmPairPotential registry[16] = {
    {"harmonic", sgm_force_harmonic, "k (2a - r) for r < 2a (eq. 94)"},
    {"softplus", sgm_force_softplus, "k softplus_beta(2a - r) (eq. 95)"},
};
static int nregistry = 2;

const SgmPairPotential *sgm_pair_potential_find(const char *name)
{
  for (int i = 0; i < nregistry; i++)
    if (!strcmp(registry[i].name, name)) return &registry[i];
  return NULL;
}

PetscErrorCode sgm_pair_potential_register(const char *name, SgmPairForceFn fn, const char *doc)
{
  PetscFunctionBeginUser;
  if (sgm_pair_potential_find(name)) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCheck(nregistry < 16, PETSC_COMM_SELF, PETSC_ERR_SUP, "too many pair potentials");
  registry[nregistry++] = (SgmPairPotential){name, fn, doc};
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_create(MPI_Comm comm, const SgmAoupParams *p, SgmAoup *out)
{
  SgmAoup s;
  PetscFunctionBeginUser;
  PetscCall(aoup_log_init());
  PetscCall(PetscCalloc1(1, &s));
  s->comm = comm;
  s->p = *p;
  PetscCallMPI(MPI_Comm_rank(comm, &s->rank));
  PetscCallMPI(MPI_Comm_size(comm, &s->size));
  s->pot = sgm_pair_potential_find(p->potential);
  PetscCheck(s->pot, comm, SGM_ERR_USER, "unknown pair potential '%s'", p->potential);
  PetscCheck(p->dim == 1 || p->dim == 2, comm, SGM_ERR_USER, "dimension must be 1 or 2");
  PetscCheck(p->n >= 1 && p->n < ((int64_t)1 << 32), comm, SGM_ERR_USER, "bad particle count");
  s->rc = 2.0 * p->a;
  if (s->pot->force == sgm_force_softplus) s->rc = 2.0 * p->a + p->softplus_cut / p->beta;
  s->part.dim = p->dim;
  if (p->periodic) {
    double L[2] = {p->L, p->L};
    double width = p->cell_size > s->rc ? p->cell_size : s->rc;
    PetscCall(sgm_decomp_create(comm, p->dim, L, width, p->grid, &s->decomp, NULL));
    PetscCall(sgm_halo_create(comm, &s->decomp, s->rc, &s->halo));
  } else {
    PetscCall(PetscMalloc2(s->size, &s->rcounts, s->size, &s->rdispls));
  }
  *out = s;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_destroy(SgmAoup *sp)
{
  PetscFunctionBeginUser;
  if (!sp || !*sp) PetscFunctionReturn(PETSC_SUCCESS);
  SgmAoup s = *sp;
  PetscCall(sgm_halo_destroy(&s->halo));
  sgm_particles_free(&s->part);
  sgm_cells_free(&s->cells);
  free(s->nb_id), free(s->nb_f), free(s->gbuf);
  if (s->rcounts) PetscCall(PetscFree2(s->rcounts, s->rdispls));
  PetscCall(PetscFree(s));
  *sp = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Block of the id space owned by a rank in open mode and in gather_block. */
static int id_block_owner(int64_t n, int size, int64_t id)
{
  int64_t q = n / size, r = n % size, big = r * (q + 1);
  return id < big ? (int)(id / (q + 1)) : (int)(r + (id - big) / q);
}

static int owns(SgmAoup s, int64_t id, const double *x)
{
  if (s->p.periodic) return sgm_decomp_owner(&s->decomp, x) == s->rank;
  return id_block_owner(s->p.n, s->size, id) == s->rank;
}

PetscErrorCode sgm_aoup_set_state(SgmAoup s, int64_t n, const int64_t *id, const double *x,
                                  const double *g, int64_t step)
{
  const int dim = s->p.dim;
  PetscFunctionBeginUser;
  PetscCheck(n == s->p.n, s->comm, SGM_ERR_USER,
             "state has %" PRId64 " particles, expected %" PRId64, n, s->p.n);
  s->part.nlocal = s->part.nghost = 0;
  for (int64_t i = 0; i < n; i++) {
    double xi[2];
    for (int c = 0; c < dim; c++)
      xi[c] = s->p.periodic ? sgm_wrap(x[i * dim + c], s->p.L) : x[i * dim + c];
    if (!owns(s, id[i], xi)) continue;
    PetscCall(sgm_particles_reserve(&s->part, s->part.nlocal + 1));
    int64_t j = s->part.nlocal++;
    s->part.id[j] = id[i];
    for (int c = 0; c < dim; c++) {
      s->part.x[j * dim + c] = s->part.xb[j * dim + c] = xi[c];
      s->part.g[j * dim + c] = g[i * dim + c];
    }
  }
  s->step = step;
  PetscCall(sgm_aoup_check(s));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_check(SgmAoup s)
{
  /* count, and two order-independent checksums of the ids (sum and sum of a 64-bit mix, mod
   * 2^64): a lost or duplicated particle changes the count or, if swapped for another id, the
   * sums. The exact per-id check is in sgm_aoup_gather_block. */
  uint64_t loc[3] = {(uint64_t)s->part.nlocal, 0, 0}, tot[3], ref[3] = {(uint64_t)s->p.n, 0, 0};
  PetscFunctionBeginUser;
  for (int64_t i = 0; i < s->part.nlocal; i++) {
    uint64_t v = (uint64_t)s->part.id[i], h = v * 0x9E3779B97F4A7C15ull;
    loc[1] += v, loc[2] += h ^ (h >> 29);
  }
  for (int64_t i = 0; i < s->p.n; i++) {
    uint64_t v = (uint64_t)i, h = v * 0x9E3779B97F4A7C15ull;
    ref[1] += v, ref[2] += h ^ (h >> 29);
  }
  PetscCallMPI(MPI_Allreduce(loc, tot, 3, MPI_UINT64_T, MPI_SUM, s->comm));
  PetscCheck(tot[0] == ref[0] && tot[1] == ref[1] && tot[2] == ref[2], s->comm, PETSC_ERR_PLIB,
             "particle conservation violated at step %" PRId64 ": %" PRIu64
             " particles (expected %" PRIu64 ") or ids changed",
             s->step, tot[0], ref[0]);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_init_random(SgmAoup s, int relax_steps)
{
  const int dim = s->p.dim;
  const int64_t n = s->p.n;
  int64_t *id;
  double *x, *g;
  PetscFunctionBeginUser;
  PetscCall(PetscMalloc3(n, &id, n * dim, &x, n * dim, &g));
  for (int64_t i = 0; i < n; i++) {
    double u[4], z[2];
    id[i] = i;
    sgm_rng_uniform4(s->p.seed, SGM_RNG_PLACEMENT, (uint64_t)i, 0, 0, u);
    sgm_rng_normals(s->p.seed, SGM_RNG_INIT_G, (uint64_t)i, 0, dim, z);
    for (int c = 0; c < dim; c++) {
      x[i * dim + c] = s->p.periodic ? s->p.L * u[c] : s->p.L * (u[c] - 0.5);
      g[i * dim + c] = z[c];
    }
  }
  PetscCall(sgm_aoup_set_state(s, n, id, x, g, 0));
  PetscCall(PetscFree3(id, x, g));
  /* Overlap removal: overdamped descent on the pair energy (no activity, no noise), with a step
   * that keeps the harmonic contact stable and a per-step move capped at a/2. */
  const double h = 0.2 / (s->p.k > 0 ? s->p.k : 1.0), cap = 0.5 * s->p.a;
  for (int it = 0; it < relax_steps; it++) {
    PetscCall(sgm_aoup_forces(s));
    for (int64_t i = 0; i < s->part.nlocal * dim; i++) {
      double dx = h * s->part.f[i];
      if (dx > cap) dx = cap;
      if (dx < -cap) dx = -cap;
      s->part.x[i] += dx;
    }
    if (s->p.periodic) {
      for (int64_t i = 0; i < s->part.nlocal * dim; i++)
        s->part.x[i] = sgm_wrap(s->part.x[i], s->p.L);
      PetscCall(sgm_halo_migrate(s->halo, &s->part));
    }
  }
  PetscCall(check_finite(s, 1, 1));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode ghosts_open(SgmAoup s)
{
  const int dim = s->p.dim;
  SgmParticles *P = &s->part;
  const int rec = 1 + dim;
  PetscFunctionBeginUser;
  /* every rank receives every particle (including its own: they are skipped) */
  int mine = (int)(P->nlocal * rec);
  PetscCallMPI(MPI_Allgather(&mine, 1, MPI_INT, s->rcounts, 1, MPI_INT, s->comm));
  int64_t tot = 0;
  for (int r = 0; r < s->size; r++) s->rdispls[r] = (int)tot, tot += s->rcounts[r];
  size_t need = (size_t)tot + (size_t)mine + 1;
  if (need > s->gcap) {
    free(s->gbuf);
    s->gbuf = malloc(need * sizeof(double));
    PetscCheck(s->gbuf, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
    s->gcap = need;
  }
  double *sb = s->gbuf + tot;
  for (int64_t i = 0; i < P->nlocal; i++) {
    memcpy(&sb[i * rec], &P->id[i], sizeof(double));
    for (int c = 0; c < dim; c++) sb[i * rec + 1 + c] = P->x[i * dim + c];
  }
  PetscCallMPI(
      MPI_Allgatherv(sb, mine, MPI_DOUBLE, s->gbuf, s->rcounts, s->rdispls, MPI_DOUBLE, s->comm));
  int64_t ntot = tot / rec;
  PetscCall(sgm_particles_reserve(P, P->nlocal + ntot));
  P->nghost = 0;
  for (int r = 0; r < s->size; r++) {
    if (r == s->rank) continue;
    for (int64_t j = s->rdispls[r] / rec; j < (s->rdispls[r] + s->rcounts[r]) / rec; j++) {
      int64_t i = P->nlocal + P->nghost++;
      memcpy(&P->id[i], &s->gbuf[j * rec], sizeof(double));
      for (int c = 0; c < dim; c++) P->x[i * dim + c] = s->gbuf[j * rec + 1 + c];
    }
  }
  for (int64_t i = 0; i < (P->nlocal + P->nghost) * dim; i++) P->xb[i] = P->x[i];
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode nb_reserve(SgmAoup s, size_t n)
{
  PetscFunctionBeginUser;
  if (n <= s->nb_cap) PetscFunctionReturn(PETSC_SUCCESS);
  size_t c = s->nb_cap ? s->nb_cap : 64;
  while (c < n) c *= 2;
  void *a = realloc(s->nb_id, c * sizeof(int64_t)), *b;
  PetscCheck(a, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  s->nb_id = a;
  b = realloc(s->nb_f, c * 2 * sizeof(double));
  PetscCheck(b, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  s->nb_f = b;
  s->nb_cap = c;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Raises the same error on every rank if any rank found a non-finite force, position or g
 * (quantities q0 .. q0+nq-1 in that order): one allreduce for all, and the smallest
 * (id, quantity) wins so every rank prints the same message. */
static PetscErrorCode check_finite(SgmAoup s, int q0, int nq)
{
  const int dim = s->p.dim;
  static const char *names[] = {"force", "position", "orientation g"};
  const double *arr[3] = {s->part.f, s->part.x, s->part.g};
  int64_t bad = INT64_MAX, gbad;
  PetscFunctionBeginUser;
  for (int q = q0; q < q0 + nq; q++)
    for (int64_t i = 0; i < s->part.nlocal; i++)
      for (int c = 0; c < dim; c++)
        if (!isfinite(arr[q][i * dim + c])) {
          int64_t key = s->part.id[i] * 4 + q;
          if (key < bad) bad = key;
        }
  PetscCallMPI(MPI_Allreduce(&bad, &gbad, 1, MPIU_INT64, MPI_MIN, s->comm));
  PetscCheck(gbad == INT64_MAX, s->comm, PETSC_ERR_FP,
             "non-finite %s of particle %" PRId64 " in the step to step %" PRId64
             " (time step too large for the forces?)",
             names[gbad % 4], gbad / 4, s->step);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_forces(SgmAoup s)
{
  const int dim = s->p.dim;
  SgmParticles *P = &s->part;
  const double rc = s->rc, rc2 = rc * rc, L = s->p.L, halfL = 0.5 * s->p.L;
  const double a = s->p.a, k = s->p.k, beta = s->p.beta, mu = s->p.mu, A = s->p.trap_A;
  const SgmPairForceFn fpair = s->pot->force;
  double lo[2] = {0, 0}, hi[2] = {0, 0};

  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(ev_halo, 0, 0, 0, 0));
  if (s->p.periodic)
    PetscCall(sgm_halo_exchange(s->halo, P));
  else
    PetscCall(ghosts_open(s));
  PetscCall(PetscLogEventEnd(ev_halo, 0, 0, 0, 0));

  PetscCall(PetscLogEventBegin(ev_cells, 0, 0, 0, 0));
  const int64_t ntot = P->nlocal + P->nghost;
  if (s->p.periodic) {
    double plo[2], phi[2];
    sgm_decomp_patch(&s->decomp, s->rank, plo, phi);
    for (int c = 0; c < dim; c++) lo[c] = plo[c] - rc, hi[c] = phi[c] + rc;
  } else {
    for (int c = 0; c < dim; c++) lo[c] = INFINITY, hi[c] = -INFINITY;
    for (int64_t i = 0; i < ntot; i++)
      for (int c = 0; c < dim; c++) {
        double v = P->xb[i * dim + c];
        if (v < lo[c]) lo[c] = v;
        if (v > hi[c]) hi[c] = v;
      }
    for (int c = 0; c < dim; c++) hi[c] += rc; /* so the top particle is inside */
  }
  /* At most ~4 ntot cells: wider cells stay correct (the 3^d stencil needs width >= rc only),
   * and an escaped particle in an open box cannot blow up the grid. */
  int64_t max_cells = dim == 1 ? 4 * ntot + 3 : 2 * (int64_t)sqrt((double)ntot) + 3;
  PetscCheck(!sgm_cells_build(&s->cells, dim, lo, hi, rc, max_cells, ntot, P->xb), PETSC_COMM_SELF,
             PETSC_ERR_MEM, "cell list allocation failed");
  PetscCall(PetscLogEventEnd(ev_cells, 0, 0, 0, 0));

  PetscCall(PetscLogEventBegin(ev_forces, 0, 0, 0, 0));
  const SgmCells *C = &s->cells;
  const int harmonic = fpair == sgm_force_harmonic, periodic = s->p.periodic;
  for (int64_t i = 0; i < P->nlocal; i++) {
    const double *xi = P->x + i * dim, *xbi = P->xb + i * dim;
    const int64_t ci = C->cell[i], cx = ci % C->nc[0], cy = ci / C->nc[0];
    const int64_t y0 = cy > 0 ? cy - 1 : 0, y1 = cy + 1 < C->nc[1] ? cy + 1 : C->nc[1] - 1;
    const int64_t x0 = cx > 0 ? cx - 1 : 0, x1 = cx + 1 < C->nc[0] ? cx + 1 : C->nc[0] - 1;
    size_t ncand = 0, nnb = 0;
    for (int64_t yy = y0; yy <= y1; yy++)
      ncand += (size_t)(C->start[x1 + 1 + yy * C->nc[0]] - C->start[x0 + yy * C->nc[0]]);
    PetscCall(nb_reserve(s, ncand));
    for (int64_t yy = y0; yy <= y1; yy++) {
      /* the cells x0..x1 of a row are contiguous in the CSR order */
      const int64_t q0 = C->start[x0 + yy * C->nc[0]], q1 = C->start[x1 + 1 + yy * C->nc[0]];
      for (int64_t q = q0; q < q1; q++) {
        const int64_t j = C->order[q];
        const double *xj = P->x + j * dim;
        double d[2] = {0, 0}, r2 = 0;
        for (int c = 0; c < dim; c++) {
          d[c] = periodic ? sgm_min_image(xi[c] - xj[c], L) : xi[c] - xj[c];
          r2 += d[c] * d[c];
        }
        if (r2 >= rc2 || j == i || r2 == 0.0) continue;
        if (periodic) {
          /* several periodic copies of j may be present: keep the one nearest to i */
          const double *xbj = P->xb + j * dim;
          int far = 0;
          for (int c = 0; c < dim; c++) far |= fabs(xbi[c] - xbj[c]) >= halfL;
          if (far) continue;
        }
        const double r = sqrt(r2);
        const double m = (harmonic ? k * (2.0 * a - r) : fpair(r, a, k, beta)) / r;
        s->nb_id[nnb] = P->id[j];
        s->nb_f[2 * nnb] = m * d[0];
        s->nb_f[2 * nnb + 1] = m * d[1];
        nnb++;
      }
    }
    /* insertion sort by partner id: the sum order is then the same on every decomposition */
    for (size_t u = 1; u < nnb; u++) {
      int64_t idu = s->nb_id[u];
      double f0 = s->nb_f[2 * u], f1 = s->nb_f[2 * u + 1];
      size_t v = u;
      while (v > 0 && s->nb_id[v - 1] > idu) {
        s->nb_id[v] = s->nb_id[v - 1];
        s->nb_f[2 * v] = s->nb_f[2 * v - 2];
        s->nb_f[2 * v + 1] = s->nb_f[2 * v - 1];
        v--;
      }
      s->nb_id[v] = idu, s->nb_f[2 * v] = f0, s->nb_f[2 * v + 1] = f1;
    }
    double fs[2] = {0.0, 0.0};
    for (size_t u = 0; u < nnb; u++) fs[0] += s->nb_f[2 * u], fs[1] += s->nb_f[2 * u + 1];
    for (int c = 0; c < dim; c++) P->f[i * dim + c] = mu * fs[c] - mu * A * xi[c];
  }
  PetscCall(PetscLogEventEnd(ev_forces, 0, 0, 0, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_step(SgmAoup s)
{
  const int dim = s->p.dim;
  SgmParticles *P = &s->part;
  const double dt = s->p.dt, v0 = s->p.v0, L = s->p.L;
  const double sx = sqrt(2.0 * s->p.eps * dt);
  const double eg = exp(-s->p.gamma * dt);
  const double cg = s->p.g_exact ? eg : 1.0 - s->p.gamma * dt;
  const double sg =
      s->p.g_exact ? sqrt(-expm1(-2.0 * s->p.gamma * dt)) : sqrt(2.0 * s->p.gamma * dt);

  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_forces(s));
  PetscCall(PetscLogEventBegin(ev_integrate, 0, 0, 0, 0));
  for (int64_t i = 0; i < P->nlocal; i++) {
    double zx[4] = {0, 0, 0, 0}, zg[4];
    const uint64_t id = (uint64_t)P->id[i];
    if (sx > 0.0) sgm_rng_normals(s->p.seed, SGM_RNG_NOISE_X, id, (uint64_t)s->step, dim, zx);
    sgm_rng_normals(s->p.seed, SGM_RNG_NOISE_G, id, (uint64_t)s->step, dim, zg);
    for (int c = 0; c < dim; c++) {
      double *x = &P->x[i * dim + c], *g = &P->g[i * dim + c];
      double xn = *x + dt * (P->f[i * dim + c] + v0 * *g) + sx * zx[c];
      *x = s->p.periodic ? sgm_wrap(xn, L) : xn;
      *g = cg * *g + sg * zg[c];
    }
  }
  PetscCall(PetscLogEventEnd(ev_integrate, 0, 0, 0, 0));
  s->step++;
  PetscCall(check_finite(s, 0, 3));
  if (s->p.periodic) {
    PetscCall(PetscLogEventBegin(ev_migrate, 0, 0, 0, 0));
    PetscCall(sgm_halo_migrate(s->halo, P));
    PetscCall(PetscLogEventEnd(ev_migrate, 0, 0, 0, 0));
  }
  P->nghost = 0;
#if defined(SGM_DEBUG_CHECKS)
  PetscCall(sgm_aoup_check(s));
#endif
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_gather_block(SgmAoup s, int64_t *startp, int64_t *countp, double **xp,
                                     double **gp)
{
  const int dim = s->p.dim, rec = 1 + 2 * dim, size = s->size;
  const SgmParticles *P = &s->part;
  int *sc, *sd, *rc, *rd;
  double *sb, *rb, *x, *g;
  int64_t start, count;
  char *seen;

  PetscFunctionBeginUser;
  sgm_decomp_split(s->p.n, size, s->rank, &start, &count);
  PetscCall(PetscCalloc4(size, &sc, size, &sd, size, &rc, size, &rd));
  for (int64_t i = 0; i < P->nlocal; i++) sc[id_block_owner(s->p.n, size, P->id[i])] += rec;
  PetscCallMPI(MPI_Alltoall(sc, 1, MPI_INT, rc, 1, MPI_INT, s->comm));
  int64_t ts = 0, tr = 0;
  for (int r = 0; r < size; r++) sd[r] = (int)ts, ts += sc[r], rd[r] = (int)tr, tr += rc[r];
  PetscCall(PetscMalloc2(ts + 1, &sb, tr + 1, &rb));
  int *cur;
  PetscCall(PetscMalloc1(size, &cur));
  for (int r = 0; r < size; r++) cur[r] = sd[r];
  for (int64_t i = 0; i < P->nlocal; i++) {
    double *q = sb + cur[id_block_owner(s->p.n, size, P->id[i])];
    memcpy(&q[0], &P->id[i], sizeof(double));
    for (int c = 0; c < dim; c++) q[1 + c] = P->x[i * dim + c], q[1 + dim + c] = P->g[i * dim + c];
    cur[id_block_owner(s->p.n, size, P->id[i])] += rec;
  }
  PetscCallMPI(MPI_Alltoallv(sb, sc, sd, MPI_DOUBLE, rb, rc, rd, MPI_DOUBLE, s->comm));
  PetscCall(PetscMalloc1(count * dim + 1, &x));
  PetscCall(PetscMalloc1(count * dim + 1, &g));
  PetscCall(PetscCalloc1(count + 1, &seen));
  int ok = (tr / rec == count);
  for (int64_t j = 0; ok && j < tr / rec; j++) {
    int64_t id;
    memcpy(&id, &rb[j * rec], sizeof(double));
    if (id < start || id >= start + count || seen[id - start]) {
      ok = 0;
      break;
    }
    seen[id - start] = 1;
    for (int c = 0; c < dim; c++)
      x[(id - start) * dim + c] = rb[j * rec + 1 + c],
                             g[(id - start) * dim + c] = rb[j * rec + 1 + dim + c];
  }
  int allok;
  PetscCallMPI(MPI_Allreduce(&ok, &allok, 1, MPI_INT, MPI_LAND, s->comm));
  PetscCall(PetscFree(seen));
  PetscCall(PetscFree(cur));
  PetscCall(PetscFree2(sb, rb));
  PetscCall(PetscFree4(sc, sd, rc, rd));
  PetscCheck(allok, s->comm, PETSC_ERR_PLIB,
             "particle conservation violated at step %" PRId64 ": an id is missing or duplicated",
             s->step);
  *startp = start;
  *countp = count;
  *xp = x;
  *gp = g;
  PetscFunctionReturn(PETSC_SUCCESS);
}
