/* AOUP engine: state, pair-force registry, id-ordered force sums, Euler-Maruyama integration.
 *
 * Verlet lists (range rc + skin, ghosts of that width) are rebuilt, with migration, when a particle
 * moved more than skin/2; between rebuilds a step forwards the ghost positions, overlapped with
 * the forces of the particles whose lists hold no ghost, and ends with one allreduce (Verlet
 * displacement, non-finite flag). Pairs are visited twice (no Newton's third law) so that each
 * rank computes the full force on the particles it owns without a reverse communication, and each
 * particle's contributions are summed in partner-id order, which makes the result independent of
 * the decomposition bit for bit.
 */
#include "sgm/aoup.h"
#include "aoup_kernels.h"
#include "sgm/core.h"
#include "sgm/rng.h"

#include <stdlib.h>
#include <string.h>

static PetscClassId sgm_aoup_classid;
static PetscLogEvent ev_cells, ev_halo, ev_forces, ev_integrate, ev_migrate;

static PetscErrorCode check_finite(SgmAoup s, int q0, int nq, int scan, double *maxd2);

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

double sgm_aoup_interaction_range(const SgmAoupParams *p, const SgmPairPotential *pot)
{
  return pot->force == sgm_force_softplus ? 2.0 * p->a + p->softplus_cut / p->beta : 2.0 * p->a;
}

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
  PetscCheck(p->skin >= 0.0, comm, SGM_ERR_USER, "negative Verlet skin %g", p->skin);
  PetscCheck(p->dim == 1 || p->dim == 2, comm, SGM_ERR_USER, "dimension must be 1 or 2");
  PetscCheck(p->n >= 1 && p->n < ((int64_t)1 << 32), comm, SGM_ERR_USER, "bad particle count");
  s->rc = sgm_aoup_interaction_range(p, s->pot);
  s->part.dim = p->dim;
  if (p->periodic) {
    double L[2] = {p->L, p->L};
    const double rl = s->rc + p->skin; /* list range = ghost width <= patch width */
    double width = p->cell_size > rl ? p->cell_size : rl;
    PetscCall(sgm_decomp_create(comm, p->dim, L, width, p->grid, &s->decomp, NULL));
    PetscCall(sgm_halo_create(comm, &s->decomp, rl, &s->halo));
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
  free(s->nb_id), free(s->sell), free(s->sl_w), free(s->sl_start), free(s->sl_perm), free(s->gbuf);
  free(s->sl_list);
  PetscCall(PetscFree(s->bal_scratch));
  for (int k = 0; k < 2; k++) {
    PetscCall(PetscFree(s->bal_cut[k]));
    PetscCall(PetscFree(s->bal_coord[k]));
  }
  free(s->cx), free(s->cid), free(s->lid);
  free(s->sort_key), free(s->sort_perm), free(s->sort_cnt), free(s->sort_tmp);
  PetscCall(PetscFree(s->nl_start));
  PetscCall(PetscFree(s->xref));
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
  PetscCall(sgm_aoup_sync(s));
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
  s->list_valid = 0;
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
  PetscCall(sgm_aoup_sync(s));
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
    s->list_valid = 0; /* moves are not bounded by the skin */
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
  s->list_valid = 0; /* the last relaxation move is not covered by the lists */
  PetscCall(check_finite(s, 1, 1, 1, NULL));
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
  size_t c = s->nb_cap ? s->nb_cap : 1024;
  while (c < n) c *= 2;
  void *a = realloc(s->nb_id, c * sizeof(int32_t));
  PetscCheck(a, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  s->nb_id = a;
  s->nb_cap = c;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Raises the same error on every rank if any rank found a non-finite force, position or g
 * (quantities q0 .. q0+nq-1 in that order), and reduces *maxd2 (the Verlet displacement, may be
 * NULL) in the same allreduce: {max d2, -key} with MPI_MAX, where the smallest (id, quantity) key
 * wins so every rank prints the same message. Keys < 2^35 are exact in a double. With scan = 0
 * the caller has already checked that every value is finite (the step loop does it on the fly)
 * and only the reduction runs. */
/* The smallest key id * 4 + quantity of a non-finite value among quantities q0 .. q0+nq-1 of
 * the locals (INFINITY if none). */
static double nonfinite_key(SgmAoup s, int q0, int nq)
{
  const int dim = s->p.dim;
  const double *arr[3] = {s->part.f, s->part.x, s->part.g};
  double bad = INFINITY;
  for (int q = q0; q < q0 + nq; q++)
    for (int64_t i = 0; i < s->part.nlocal; i++)
      for (int c = 0; c < dim; c++)
        if (!isfinite(arr[q][i * dim + c])) {
          double key = (double)(s->part.id[i] * 4 + q);
          if (key < bad) bad = key;
        }
  return bad;
}

/* The reduced pair {max d2, -key} (see check_finite): the error, identical on every rank. */
static PetscErrorCode reduced_check(SgmAoup s, const double out[2], int64_t step)
{
  static const char *names[] = {"force", "position", "orientation g"};
  PetscFunctionBeginUser;
  const int64_t gbad = isfinite(out[1]) ? (int64_t)(-out[1]) : -1;
  PetscCheck(gbad < 0, s->comm, PETSC_ERR_FP,
             "non-finite %s of particle %" PRId64 " in the step to step %" PRId64
             " (time step too large for the forces?)",
             names[gbad % 4], gbad / 4, step);
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Raises the same error on every rank if any rank found a non-finite force, position or g
 * (quantities q0 .. q0+nq-1 in that order), and reduces *maxd2 (the Verlet displacement, may be
 * NULL) in the same allreduce: {max d2, -key} with MPI_MAX, where the smallest (id, quantity) key
 * wins so every rank prints the same message. Keys < 2^35 are exact in a double. With scan = 0
 * the caller has already checked that every value is finite (the step loop does it on the fly)
 * and only the reduction runs. */
static PetscErrorCode check_finite(SgmAoup s, int q0, int nq, int scan, double *maxd2)
{
  double in[2], out[2];
  PetscFunctionBeginUser;
  in[0] = maxd2 && isfinite(*maxd2) ? *maxd2 : 0.0;
  in[1] = scan ? -nonfinite_key(s, q0, nq) : -INFINITY;
  PetscCallMPI(MPI_Allreduce(in, out, 2, MPI_DOUBLE, MPI_MAX, s->comm));
  if (maxd2) *maxd2 = out[0];
  PetscCall(reduced_check(s, out, s->step));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_set_lagged(SgmAoup s, PetscBool on)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_sync(s));
  /* only where the forward reaches every rank; elsewhere the step keeps its allreduce */
  s->lagged = on && s->p.periodic && s->halo && sgm_halo_reduce_covers_all(s->halo);
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Applies the reduced pair of the last step: the error, the Verlet criterion (pair distances
 * changed by at most 2 max|dx| since the build). */
static PetscErrorCode lagged_apply(SgmAoup s)
{
  PetscFunctionBeginUser;
  s->red_pending = 0;
  PetscCall(reduced_check(s, s->red_out, s->red_step));
  if (!(2.0 * sqrt(s->red_out[0]) < s->p.skin)) s->list_valid = 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_sync(SgmAoup s)
{
  PetscFunctionBeginUser;
  if (!s->red_pending) PetscFunctionReturn(PETSC_SUCCESS);
  const double t0 = MPI_Wtime();
  PetscCallMPI(MPI_Allreduce(s->red_in, s->red_out, 2, MPI_DOUBLE, MPI_MAX, s->comm));
  s->tm.reduce += MPI_Wtime() - t0;
  PetscCall(lagged_apply(s));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_invalidate(SgmAoup s)
{
  PetscFunctionBeginUser;
  s->list_valid = 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Cell-order sort of the local particles (like LAMMPS's atom sort): a stable counting sort by
 * the decomposition cell of x, so that particles close in space are close in memory and the force
 * loop's partner loads hit the cache. Only the storage order changes: forces are summed in
 * partner-id order and every other reduction is order independent, so trajectories are bitwise
 * unchanged. Arrays grow only (no allocation once warm). */
static PetscErrorCode sort_locals(SgmAoup s)
{
  SgmParticles *P = &s->part;
  const int dim = s->p.dim;
  const int64_t n = P->nlocal;
  PetscFunctionBeginUser;
  if (n < 2) PetscFunctionReturn(PETSC_SUCCESS);
  if ((size_t)n > s->sort_cap) {
    size_t c = (size_t)n + (size_t)n / 4;
    free(s->sort_key), free(s->sort_perm), free(s->sort_tmp);
    s->sort_key = malloc(c * sizeof(int64_t));
    s->sort_perm = malloc(c * sizeof(int64_t));
    s->sort_tmp = malloc(c * (size_t)dim * sizeof(double) + c * sizeof(int64_t));
    PetscCheck(s->sort_key && s->sort_perm && s->sort_tmp, PETSC_COMM_SELF, PETSC_ERR_MEM,
               "out of memory");
    s->sort_cap = c;
  }
  int64_t lo[2] = {INT64_MAX, INT64_MAX}, hi[2] = {0, 0};
  int64_t *key = s->sort_key, *perm = s->sort_perm;
  /* the cells once: x cell in key, y cell in perm (both overwritten below) */
  for (int64_t i = 0; i < n; i++)
    for (int c = 0; c < dim; c++) {
      const int64_t q = sgm_decomp_cell(&s->decomp, c, P->x[i * dim + c]);
      (c == 0 ? key : perm)[i] = q;
      if (q < lo[c]) lo[c] = q;
      if (q > hi[c]) hi[c] = q;
    }
  const int64_t nx = hi[0] - lo[0] + 1, ny = dim == 2 ? hi[1] - lo[1] + 1 : 1;
  const size_t nk = (size_t)(nx * ny) + 1;
  if (nk > s->sort_cnt_cap) {
    free(s->sort_cnt);
    s->sort_cnt_cap = nk + nk / 4;
    s->sort_cnt = malloc(s->sort_cnt_cap * sizeof(int64_t));
    PetscCheck(s->sort_cnt, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  }
  int64_t *cnt = s->sort_cnt;
  memset(cnt, 0, nk * sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) {
    int64_t k = key[i] - lo[0];
    if (dim == 2) k += nx * (perm[i] - lo[1]);
    key[i] = k;
    cnt[k + 1]++;
  }
  for (size_t k = 1; k < nk; k++) cnt[k] += cnt[k - 1];
  for (int64_t i = 0; i < n; i++) perm[cnt[key[i]]++] = i; /* perm[new] = old */
  /* apply to id, x, xb, g (f is recomputed after every build) */
  int64_t *tid = s->sort_tmp;
  for (int64_t i = 0; i < n; i++) tid[i] = P->id[perm[i]];
  memcpy(P->id, tid, (size_t)n * sizeof(int64_t));
  double *tx = s->sort_tmp;
  double *arr[3] = {P->x, P->xb, P->g};
  for (int a = 0; a < 3; a++) {
    for (int64_t i = 0; i < n; i++)
      for (int c = 0; c < dim; c++) tx[i * dim + c] = arr[a][perm[i] * dim + c];
    memcpy(arr[a], tx, (size_t)(n * dim) * sizeof(double));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The lists in sliced-ELLPACK order (aoup.h) for the vectorised force kernel: per slice of
 * SGM_AOUP_SLICE locals, slot kk of every lane in turn, padded with the particle itself. The
 * cell-order sort makes neighbouring locals similar in density, so little is padding. */
static PetscErrorCode build_sell(SgmAoup s)
{
  const int S = SGM_AOUP_SLICE;
  const int64_t n = s->part.nlocal, nsl = (n + S - 1) / S;
  PetscFunctionBeginUser;
  if ((size_t)nsl + 1 > s->sl_cap) {
    size_t c = (size_t)nsl + 1 + (size_t)nsl / 4;
    free(s->sl_start), free(s->sl_w), free(s->sl_perm), free(s->sl_list);
    s->sl_start = malloc(c * sizeof(int64_t));
    s->sl_w = malloc(c * sizeof(int32_t));
    s->sl_perm = malloc(c * S * sizeof(int32_t));
    s->sl_list = malloc(c * sizeof(int32_t));
    PetscCheck(s->sl_start && s->sl_w && s->sl_perm && s->sl_list, PETSC_COMM_SELF, PETSC_ERR_MEM,
               "out of memory");
    s->sl_cap = c;
  }
  /* SELL-C-sigma: inside windows of SGM_AOUP_SIGMA (cell-ordered) locals, lane order by list
   * length, longest first (stable), so that a slice's lists have similar lengths */
  int32_t *perm = s->sl_perm;
#define LEN(i) (s->nl_start[(i) + 1] - s->nl_start[(i)])
  for (int64_t w0 = 0; w0 < n; w0 += SGM_AOUP_SIGMA) {
    const int64_t w1 = w0 + SGM_AOUP_SIGMA < n ? w0 + SGM_AOUP_SIGMA : n;
    for (int64_t i = w0; i < w1; i++) {
      int64_t v = i;
      while (v > w0 && LEN(perm[v - 1]) < LEN(i)) perm[v] = perm[v - 1], v--;
      perm[v] = (int32_t)i;
    }
  }
  for (int64_t i = n; i < nsl * S; i++) perm[i] = (int32_t)(n - 1); /* pad lanes: never stored */
  int64_t tot = 0;
  for (int64_t b = 0; b < nsl; b++) {
    int64_t w = 0;
    for (int64_t i = b * S; i < (b + 1) * S && i < n; i++) w = LEN(perm[i]) > w ? LEN(perm[i]) : w;
    s->sl_start[b] = tot, s->sl_w[b] = (int32_t)w, tot += w * S;
  }
  s->sl_start[nsl] = tot;
  if ((size_t)tot > s->sell_cap) {
    size_t c = s->sell_cap ? s->sell_cap : 1024;
    while (c < (size_t)tot) c *= 2;
    free(s->sell);
    s->sell = malloc(c * sizeof(int32_t));
    PetscCheck(s->sell, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
    s->sell_cap = c;
  }
  int64_t nint = 0, nbnd = 0;
  for (int64_t b = 0; b < nsl; b++) {
    int32_t *q = s->sell + s->sl_start[b];
    int ghost = 0;
    for (int c = 0; c < S; c++) {
      const int64_t i = perm[b * S + c];
      const int64_t q0 = s->nl_start[i], len = b * S + c < n ? LEN(i) : 0;
      for (int64_t kk = 0; kk < s->sl_w[b]; kk++) {
        q[kk * S + c] = kk < len ? s->nb_id[q0 + kk] : (int32_t)i;
        ghost |= q[kk * S + c] >= n;
      }
    }
    /* interior slices from the front, boundary slices from the back (reversed below) */
    if (ghost)
      s->sl_list[nsl - 1 - nbnd++] = (int32_t)b;
    else
      s->sl_list[nint++] = (int32_t)b;
#undef LEN
  }
  for (int64_t u = 0; u < nbnd / 2; u++) { /* boundary slices in increasing order */
    const int32_t t = s->sl_list[nint + u];
    s->sl_list[nint + u] = s->sl_list[nsl - 1 - u], s->sl_list[nsl - 1 - u] = t;
  }
  s->sl_nint = nint;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Rebuild: migrate to owners, ghosts of width rc + skin, cell lists, then for every local particle
 * the list of partners within rc + skin, sorted by global id with duplicates (several periodic
 * copies of one particle, or images of itself) removed. The force loop walks these lists in order,
 * so a particle's force is the sum of its pair terms in partner-id order whatever the
 * decomposition, and whenever the list was built. */
PetscErrorCode sgm_aoup_set_balance(SgmAoup s, int64_t every, double min_width)
{
  SgmDecomp *d = &s->decomp;
  PetscFunctionBeginUser;
  PetscCheck(every >= 0, s->comm, SGM_ERR_USER, "balance interval %" PRId64 " < 0", every);
  s->bal_every = s->p.periodic && s->size > 1 ? every : 0;
  if (!s->bal_every) PetscFunctionReturn(PETSC_SUCCESS);
  for (int k = 0; k < s->p.dim; k++) {
    const int64_t nc = d->ncell[k], np = d->dims[k], uni = nc / np;
    if (np == 1) continue;
    /* a patch keeps at least half the uniform width, one cell (>= the ghost width) and
     * min_width (the observables' halo), never more than the uniform split gives */
    int64_t m = (uni + 1) / 2;
    const int64_t need = (int64_t)ceil(min_width * (double)nc / d->L[k] - 1e-9);
    if (need > m) m = need;
    if (m < 1) m = 1;
    if (m > uni) m = uni;
    d->min_cells[k] = m;
    if (!s->bal_cut[k]) {
      PetscCall(PetscMalloc1(np + 1, &s->bal_cut[k]));
      PetscCall(PetscMalloc1(nc, &s->bal_coord[k]));
    }
  }
  /* balance()'s scratch, made here so the step loop allocates nothing: per dimension a column
   * histogram (nc), its prefix sums (nc + 1) and the proposed cuts (np + 1) */
  int64_t need = 0;
  for (int k = 0; k < s->p.dim; k++)
    if (d->dims[k] > 1 && 2 * d->ncell[k] + d->dims[k] + 2 > need)
      need = 2 * d->ncell[k] + d->dims[k] + 2;
  PetscCall(PetscFree(s->bal_scratch));
  PetscCall(PetscMalloc1(need, &s->bal_scratch));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Load balancing at a list build (before the migration): along each dimension with several
 * ranks, the global particle count of every cell column (one allreduce of ncell integers) and
 * cuts that split the prefix sums nearest to equal parts, each part >= min_cells; adopted when
 * the largest part shrinks by more than 1 % of the mean. Every rank computes the same cuts from
 * the same integers. The trajectory does not depend on them (forces are summed in id order). */
static PetscErrorCode balance(SgmAoup s)
{
  SgmDecomp *d = &s->decomp;
  const int dim = s->p.dim;
  int changed = 0;
  PetscFunctionBeginUser;
  for (int k = 0; k < dim; k++) {
    const int np = d->dims[k];
    const int64_t nc = d->ncell[k], minc = d->min_cells[k];
    if (np == 1) continue;
    int64_t *h = s->bal_scratch, *pre = h + nc, *cut = pre + nc + 1;
    memset(h, 0, (size_t)nc * sizeof(int64_t));
    for (int64_t i = 0; i < s->part.nlocal; i++) h[sgm_decomp_cell(d, k, s->part.x[i * dim + k])]++;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, h, (int)nc, MPI_INT64_T, MPI_SUM, s->comm));
    pre[0] = 0;
    for (int64_t c = 0; c < nc; c++) pre[c + 1] = pre[c] + h[c];
    int64_t cur = 0, prop = 0;
    for (int i = 0; i < np; i++) {
      int64_t c0, n0;
      sgm_decomp_range(d, k, i, &c0, &n0);
      if (pre[c0 + n0] - pre[c0] > cur) cur = pre[c0 + n0] - pre[c0];
    }
    cut[0] = 0, cut[np] = nc;
    for (int i = 1; i < np; i++) {
      const double target = (double)pre[nc] * (double)i / (double)np;
      int64_t lo = cut[i - 1] + minc, hi = nc - (int64_t)(np - i) * minc, best = lo;
      for (int64_t c = lo; c <= hi; c++)
        if (fabs((double)pre[c] - target) < fabs((double)pre[best] - target)) best = c;
      cut[i] = best;
    }
    for (int i = 0; i < np; i++)
      if (pre[cut[i + 1]] - pre[cut[i]] > prop) prop = pre[cut[i + 1]] - pre[cut[i]];
    if ((double)(cur - prop) > 0.01 * (double)pre[nc] / (double)np) {
      for (int i = 0; i <= np; i++) s->bal_cut[k][i] = cut[i];
      for (int i = 0; i < np; i++)
        for (int64_t c = cut[i]; c < cut[i + 1]; c++) s->bal_coord[k][c] = i;
      d->cut[k] = s->bal_cut[k], d->coord[k] = s->bal_coord[k];
      changed = 1;
    }
  }
  if (changed) {
    PetscCall(sgm_halo_set_decomp(s->halo, d));
    s->tm.balances++;
    s->nbalances++;
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode build_list(SgmAoup s)
{
  const int dim = s->p.dim;
  SgmParticles *P = &s->part;
  const double rl = s->rc + s->p.skin, rl2 = rl * rl, L = s->p.L;
  const int periodic = s->p.periodic;
  double lo[2] = {0, 0}, hi[2] = {0, 0};

  PetscFunctionBeginUser;
  double t0 = MPI_Wtime(), t1;
  if (periodic) {
    PetscCall(PetscLogEventBegin(ev_migrate, 0, 0, 0, 0));
    if (s->bal_every > 0 && s->nbuilds % s->bal_every == 0) PetscCall(balance(s));
    PetscCall(sgm_halo_migrate(s->halo, P));
    PetscCall(sort_locals(s));
    PetscCall(PetscLogEventEnd(ev_migrate, 0, 0, 0, 0));
  }
  t1 = MPI_Wtime(), s->tm.migrate += t1 - t0, t0 = t1;
  PetscCall(PetscLogEventBegin(ev_halo, 0, 0, 0, 0));
  if (periodic)
    PetscCall(sgm_halo_exchange(s->halo, P));
  else
    PetscCall(ghosts_open(s));
  PetscCall(PetscLogEventEnd(ev_halo, 0, 0, 0, 0));
  t1 = MPI_Wtime(), s->tm.exchange += t1 - t0, t0 = t1;

  PetscCall(PetscLogEventBegin(ev_cells, 0, 0, 0, 0));
  const int64_t ntot = P->nlocal + P->nghost;
  PetscCheck(ntot < ((int64_t)1 << 30), PETSC_COMM_SELF, PETSC_ERR_SUP,
             "%" PRId64
             " particles and ghosts on one rank: lists hold 32-bit indices (use more ranks)",
             ntot);
  if (periodic) {
    double plo[2], phi[2];
    sgm_decomp_patch(&s->decomp, s->rank, plo, phi);
    for (int c = 0; c < dim; c++) lo[c] = plo[c] - rl, hi[c] = phi[c] + rl;
  } else {
    for (int c = 0; c < dim; c++) lo[c] = INFINITY, hi[c] = -INFINITY;
    for (int64_t i = 0; i < ntot; i++)
      for (int c = 0; c < dim; c++) {
        double v = P->xb[i * dim + c];
        if (v < lo[c]) lo[c] = v;
        if (v > hi[c]) hi[c] = v;
      }
    for (int c = 0; c < dim; c++) hi[c] += rl; /* so the top particle is inside */
  }
  /* At most ~4 ntot cells: wider cells stay correct (the 3^d stencil needs width >= rl only),
   * and an escaped particle in an open box cannot blow up the grid. */
  int64_t max_cells = dim == 1 ? 4 * ntot + 3 : 2 * (int64_t)sqrt((double)ntot) + 3;
  PetscCheck(!sgm_cells_build(&s->cells, dim, lo, hi, rl, max_cells, ntot, P->xb), PETSC_COMM_SELF,
             PETSC_ERR_MEM, "cell list allocation failed");
  const SgmCells *C = &s->cells;
  /* positions and ids in cell order: the candidate scan below reads them contiguously */
  if ((size_t)ntot > s->cx_cap) {
    free(s->cx), free(s->cid);
    s->cx_cap = (size_t)ntot + (size_t)ntot / 4 + 16;
    s->cx = malloc(2 * s->cx_cap * sizeof(double));
    s->cid = malloc(s->cx_cap * sizeof(int64_t));
    PetscCheck(s->cx && s->cid, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  }
  for (int64_t q = 0; q < ntot; q++) {
    const int64_t j = C->order[q];
    for (int c = 0; c < dim; c++) s->cx[2 * q + c] = P->x[j * dim + c];
    s->cid[q] = P->id[j];
  }
  const double hL = 0.5 * L;
  if ((size_t)P->nlocal + 1 > s->nl_cap) { /* grows only: no allocation once warm */
    PetscCall(PetscFree(s->nl_start));
    s->nl_cap = (size_t)P->nlocal + 1 + (size_t)P->nlocal / 8;
    PetscCall(PetscMalloc1(s->nl_cap, &s->nl_start));
  }
  s->nl_start[0] = 0;
  size_t nl = 0;
  for (int64_t i = 0; i < P->nlocal; i++) {
    const double *xi = P->x + i * dim;
    const int64_t idi = P->id[i];
    const int64_t ci = C->cell[i], cx = ci % C->nc[0], cy = ci / C->nc[0];
    const int64_t y0 = cy > 0 ? cy - 1 : 0, y1 = cy + 1 < C->nc[1] ? cy + 1 : C->nc[1] - 1;
    const int64_t x0 = cx > 0 ? cx - 1 : 0, x1 = cx + 1 < C->nc[0] ? cx + 1 : C->nc[0] - 1;
    size_t ncand = 0;
    for (int64_t yy = y0; yy <= y1; yy++)
      ncand += (size_t)(C->start[x1 + 1 + yy * C->nc[0]] - C->start[x0 + yy * C->nc[0]]);
    PetscCall(nb_reserve(s, nl + ncand));
    if (ncand + 1 > s->lid_cap) {
      free(s->lid);
      s->lid_cap = 2 * ncand + 1;
      s->lid = malloc(s->lid_cap * sizeof(int64_t));
      PetscCheck(s->lid, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
    }
    const size_t first = nl;
    int32_t *lj = s->nb_id + first;
    int64_t *lq = s->lid;
    size_t m = 0; /* candidates in range: their cell-order positions q in lq[0..m) */
    for (int64_t yy = y0; yy <= y1; yy++) {
      /* the cells x0..x1 of a row are contiguous in the CSR order; appended without branches
       * (about a third of the candidates are in range, unpredictably) */
      const int64_t q0 = C->start[x0 + yy * C->nc[0]], q1 = C->start[x1 + 1 + yy * C->nc[0]];
      for (int64_t q = q0; q < q1; q++) {
        const double *xj = s->cx + 2 * q;
        double r2 = 0;
        for (int c = 0; c < dim; c++) {
          const double e = xi[c] - xj[c];
          /* sgm_min_image for canonical positions (|e| < L), as in the force kernel */
          const double d = periodic ? (e > hL ? e - L : e < -hL ? e + L : e) : e;
          r2 += d * d;
        }
        lq[m] = q;
        m += (size_t)((r2 < rl2) & (s->cid[q] != idi));
      }
    }
    /* sorted by id, a second copy of the same id dropped */
    size_t mm = 0;
    for (size_t t = 0; t < m; t++) {
      const int64_t q = lq[t], idj = s->cid[q];
      size_t v = mm;
      while (v > 0 && s->cid[lq[v - 1]] > idj) v--;
      if (v > 0 && s->cid[lq[v - 1]] == idj) continue;
      for (size_t u = mm; u > v; u--) lq[u] = lq[u - 1];
      lq[v] = q, mm++;
    }
    for (size_t t = 0; t < mm; t++) lj[t] = (int32_t)C->order[lq[t]];
    nl += mm;
    s->nl_start[i + 1] = (int64_t)nl;
  }
  PetscCall(build_sell(s));
  /* reference positions for the displacement criterion */
  if ((size_t)(P->nlocal * dim) > s->xref_cap) {
    PetscCall(PetscFree(s->xref));
    s->xref_cap = (size_t)(P->nlocal * dim) + (size_t)(P->nlocal * dim) / 8 + 16;
    PetscCall(PetscMalloc1(s->xref_cap, &s->xref));
  }
  PetscCall(PetscArraycpy(s->xref, P->x, P->nlocal * dim));
  s->list_valid = 1;
  s->nbuilds++;
  s->tm.lists += MPI_Wtime() - t0;
  s->tm.builds++;
  if (s->tm.builds == 1 || P->nlocal < s->tm.nlocal_min) s->tm.nlocal_min = P->nlocal;
  if (P->nlocal > s->tm.nlocal_max) s->tm.nlocal_max = P->nlocal;
  if (P->nghost > s->tm.nghost_max) s->tm.nghost_max = P->nghost;
  PetscCall(PetscLogEventEnd(ev_cells, 0, 0, 0, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_forces(SgmAoup s)
{
  const int dim = s->p.dim;
  SgmParticles *P = &s->part;
  const double rc = s->rc, rc2 = rc * rc, L = s->p.L;
  const double a = s->p.a, k = s->p.k, beta = s->p.beta, mu = s->p.mu, A = s->p.trap_A;
  const SgmPairForceFn fpair = s->pot->force;
  const int harmonic = fpair == sgm_force_harmonic, periodic = s->p.periodic;

  const int mips = harmonic && periodic && dim == 2 && A == 0.0;
  int inflight = 0;
  PetscFunctionBeginUser;
  /* a lagged reduction (sgm_aoup_set_lagged) travels with the ghost positions below; where no
   * forward runs, an allreduce completes it first */
  if (s->red_pending && !(s->list_valid && periodic)) PetscCall(sgm_aoup_sync(s));
  if (!s->list_valid)
    PetscCall(build_list(s));
  else {
    /* same ghosts as at the last build: forward their current canonical positions; for the MIPS
     * kernel the messages stay in flight while the interior slices are computed */
    const double t0 = MPI_Wtime();
    PetscCall(PetscLogEventBegin(ev_halo, 0, 0, 0, 0));
    if (periodic) {
      if (s->red_pending) PetscCall(sgm_halo_forward_reduce(s->halo, s->red_in));
      PetscCall(sgm_halo_forward_begin(s->halo, P->x, dim));
      inflight = 1;
      if (!mips) {
        PetscCall(sgm_halo_forward_end(s->halo));
        inflight = 0;
        if (s->red_pending) {
          PetscCall(sgm_halo_forward_reduced(s->halo, s->red_out));
          PetscCall(lagged_apply(s));
          if (!s->list_valid) PetscCall(build_list(s)); /* no force computed yet */
        }
      }
    } else
      PetscCall(ghosts_open(s));
    PetscCall(PetscLogEventEnd(ev_halo, 0, 0, 0, 0));
    s->tm.halo += MPI_Wtime() - t0;
  }
  double tf = MPI_Wtime();
  PetscCall(PetscLogEventBegin(ev_forces, 0, 0, 0, 0));
  if (mips) {
    /* The MIPS case, specialised and vectorised (aoup_kernels.c): no function pointer, no trap
     * term, SGM_AOUP_SLICE particles at once over the sliced-ELLPACK lists, each summing its
     * pair terms in list order (then +0 for padding). Same operations in the same order as the
     * general loop below: bitwise the same forces. The slices that read only locals first (the
     * ghost positions may be in flight), then the others: each particle's sum is unchanged. */
    const int64_t nsl = (P->nlocal + SGM_AOUP_SLICE - 1) / SGM_AOUP_SLICE;
    sgm_aoup_kernel_forces_h2p(P->nlocal, P->x, s->sl_perm, s->sl_start, s->sl_w, s->sell,
                               s->sl_list, s->sl_nint, k, 2.0 * a, rc2, L, mu, A, P->f);
    if (inflight) {
      const double t1 = MPI_Wtime();
      PetscCall(sgm_halo_forward_end(s->halo));
      const double t2 = MPI_Wtime();
      s->tm.forces += t1 - tf, s->tm.halo += t2 - t1, tf = t2;
    }
    if (s->red_pending) {
      /* the previous step's Verlet displacement and non-finite flag, arrived with the ghost
       * positions; if the lists are stale every slice is recomputed after the rebuild (the
       * interior ones were computed speculatively with the old lists) */
      PetscCall(sgm_halo_forward_reduced(s->halo, s->red_out));
      PetscCall(lagged_apply(s));
      if (!s->list_valid) {
        PetscCall(PetscLogEventEnd(ev_forces, 0, 0, 0, 0));
        PetscCall(build_list(s));
        PetscCall(PetscLogEventBegin(ev_forces, 0, 0, 0, 0));
        tf = MPI_Wtime();
        const int64_t nall = (P->nlocal + SGM_AOUP_SLICE - 1) / SGM_AOUP_SLICE;
        sgm_aoup_kernel_forces_h2p(P->nlocal, P->x, s->sl_perm, s->sl_start, s->sl_w, s->sell,
                                   s->sl_list, nall, k, 2.0 * a, rc2, L, mu, A, P->f);
        PetscCall(PetscLogEventEnd(ev_forces, 0, 0, 0, 0));
        s->tm.forces += MPI_Wtime() - tf;
        PetscFunctionReturn(PETSC_SUCCESS);
      }
    }
    sgm_aoup_kernel_forces_h2p(P->nlocal, P->x, s->sl_perm, s->sl_start, s->sl_w, s->sell,
                               s->sl_list + s->sl_nint, nsl - s->sl_nint, k, 2.0 * a, rc2, L, mu, A,
                               P->f);
    PetscCall(PetscLogEventEnd(ev_forces, 0, 0, 0, 0));
    s->tm.forces += MPI_Wtime() - tf;
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  for (int64_t i = 0; i < P->nlocal; i++) {
    const double *xi = P->x + i * dim;
    double fs[2] = {0.0, 0.0};
    for (int64_t q = s->nl_start[i]; q < s->nl_start[i + 1]; q++) {
      const double *xj = P->x + s->nb_id[q] * dim;
      double d[2] = {0, 0}, r2 = 0;
      for (int c = 0; c < dim; c++) {
        d[c] = periodic ? sgm_min_image(xi[c] - xj[c], L) : xi[c] - xj[c];
        r2 += d[c] * d[c];
      }
      if (r2 >= rc2 || r2 == 0.0) continue;
      const double r = sqrt(r2);
      const double m = (harmonic ? k * (2.0 * a - r) : fpair(r, a, k, beta)) / r;
      fs[0] += m * d[0];
      fs[1] += m * d[1];
    }
    for (int c = 0; c < dim; c++) P->f[i * dim + c] = mu * fs[c] - mu * A * xi[c];
  }
  PetscCall(PetscLogEventEnd(ev_forces, 0, 0, 0, 0));
  s->tm.forces += MPI_Wtime() - tf;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_step(SgmAoup s)
{
  const int dim = s->p.dim, periodic = s->p.periodic;
  SgmParticles *P = &s->part;
  const double dt = s->p.dt, v0 = s->p.v0, L = s->p.L;
  const double sx = sqrt(2.0 * s->p.eps * dt);
  const double eg = exp(-s->p.gamma * dt);
  const double cg = s->p.g_exact ? eg : 1.0 - s->p.gamma * dt;
  const double sg =
      s->p.g_exact ? sqrt(-expm1(-2.0 * s->p.gamma * dt)) : sqrt(2.0 * s->p.gamma * dt);
  const uint64_t seed = s->p.seed, step = (uint64_t)s->step;
  double maxd2 = 0.0;
  int finite = 1;

  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_forces(s));
  double t0 = MPI_Wtime(), t1;
  PetscCall(PetscLogEventBegin(ev_integrate, 0, 0, 0, 0));
  /* Noise of particle id at this step: one Philox block per quantity, sgm_rng_normal2_batch
   * (the d <= 2 normals; g only when eps = 0), a pure function of (seed, id, step) whichever rank
   * owns the particle. Vectorised with the update, the wrap, the finiteness check and the Verlet
   * displacement in aoup_kernels.c. */
  const SgmAoupStepConst kc = {dim, periodic, dt, v0, L, sx, cg, sg, seed, step};
  sgm_aoup_kernel_integrate(&kc, P->nlocal, P->id, P->x, P->g, P->f, s->xref, &maxd2, &finite);
  PetscCall(PetscLogEventEnd(ev_integrate, 0, 0, 0, 0));
  t1 = MPI_Wtime(), s->tm.integrate += t1 - t0, t0 = t1;
  s->step++;
  s->tm.steps++;
  if (s->lagged) {
    /* the same reduction, carried by the next step's ghost-position messages (or completed by
     * an allreduce in sgm_aoup_sync): same decisions at the same steps, same message */
    s->red_in[0] = isfinite(maxd2) ? maxd2 : 0.0;
    s->red_in[1] = finite ? -INFINITY : -nonfinite_key(s, 0, 3);
    s->red_step = s->step;
    s->red_pending = 1;
    s->tm.reduce += MPI_Wtime() - t0;
  } else {
    /* one allreduce per step: Verlet displacement and the non-finite check (the arrays are
     * scanned to name the particle only when this rank saw a non-finite value) */
    PetscCall(check_finite(s, 0, 3, !finite, &maxd2));
    s->tm.reduce += MPI_Wtime() - t0;
    /* Verlet criterion: pair distances changed by at most 2 max|dx| since the build */
    if (!(2.0 * sqrt(maxd2) < s->p.skin)) s->list_valid = 0;
  }
#if defined(SGM_DEBUG_CHECKS)
  PetscCall(sgm_aoup_check(s));
#endif
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_gather_block_into(SgmAoup s, double *x, double *g)
{
  const int dim = s->p.dim, rec = 1 + 2 * dim, size = s->size;
  const SgmParticles *P = &s->part;
  int *sc, *sd, *rc, *rd;
  double *sb, *rb;
  int64_t start, count;
  char *seen;

  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_sync(s));
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
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_gather_block(SgmAoup s, int64_t *startp, int64_t *countp, double **xp,
                                     double **gp)
{
  PetscFunctionBeginUser;
  sgm_decomp_split(s->p.n, s->size, s->rank, startp, countp);
  PetscCall(PetscMalloc1(*countp * s->p.dim + 1, xp));
  PetscCall(PetscMalloc1(*countp * s->p.dim + 1, gp));
  PetscCall(sgm_aoup_gather_block_into(s, *xp, *gp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_aoup_timers_reset(SgmAoup s)
{
  memset(&s->tm, 0, sizeof s->tm);
}

PetscErrorCode sgm_aoup_timers_log(SgmAoup s, const char *stage)
{
  const SgmAoupTimers *t = &s->tm;
  enum { NP = 8 };
  const char *names[NP] = {"forces",    "integrate",     "halo",  "allreduce",
                           "migration", "ghost rebuild", "lists", "own work"};
  double v[NP] = {t->forces,  t->integrate, t->halo,  t->reduce,
                  t->migrate, t->exchange,  t->lists, 0.0};
  double sum[NP], mx[NP], mn[NP];
  int64_t cnt[5] = {-t->nlocal_min, t->nlocal_max, t->nghost_max, t->balances, s->nbalances},
          cmax[5];
  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_sync(s));
  /* own work: everything but the two phases that wait for other ranks */
  v[7] = t->forces + t->integrate + t->migrate + t->lists;
  PetscCallMPI(MPI_Allreduce(v, sum, NP, MPI_DOUBLE, MPI_SUM, s->comm));
  PetscCallMPI(MPI_Allreduce(v, mx, NP, MPI_DOUBLE, MPI_MAX, s->comm));
  PetscCallMPI(MPI_Allreduce(v, mn, NP, MPI_DOUBLE, MPI_MIN, s->comm));
  PetscCallMPI(MPI_Allreduce(cnt, cmax, 5, MPIU_INT64, MPI_MAX, s->comm));
  if (t->steps == 0) PetscFunctionReturn(PETSC_SUCCESS);
  const double us = 1e6 / (double)t->steps;
  PetscCall(sgm_log(s->comm,
                    "%s: time per step on %d rank(s), microseconds, mean / max over ranks "
                    "(%" PRId64 " steps, %" PRId64 " list builds):\n",
                    stage, s->size, t->steps, t->builds));
  for (int k = 0; k < NP - 1; k++)
    PetscCall(sgm_log(s->comm, "%s:   %-13s %9.2f / %9.2f\n", stage, names[k],
                      sum[k] / s->size * us, mx[k] * us));
  PetscCall(sgm_log(s->comm,
                    "%s:   own work      %9.2f / %9.2f, min %.2f (forces, integrate, migration, "
                    "lists; max - mean = waiting caused by imbalance)\n",
                    stage, sum[7] / s->size * us, mx[7] * us, mn[7] * us));
  PetscCall(sgm_log(s->comm,
                    "%s:   locals per rank at rebuilds %" PRId64 "..%" PRId64
                    ", ghosts per rank up to %" PRId64 "; load balancing moved the cuts %" PRId64
                    " times in these steps, %" PRId64 " since the start (relaxation included)\n",
                    stage, -cmax[0], cmax[1], cmax[2], cmax[3], cmax[4]));
  PetscFunctionReturn(PETSC_SUCCESS);
}
