/* MPI tests of the AOUP engine: halo and migration under stress, forces against all pairs,
 * bitwise rank-count invariance against a serial reference computed in the same process, restart
 * identity, and the 1D ring force through the periodic boundary. */
#include "testutil.h"
#include "sgm/aoup.h"
#include "sgm/rng.h"

#include <string.h>

static SgmAoupParams params(int dim, int64_t n, double L, int periodic)
{
  SgmAoupParams p;
  memset(&p, 0, sizeof p);
  p.dim = dim, p.n = n, p.L = L, p.periodic = periodic;
  p.mu = 1.0, p.v0 = 1.0, p.gamma = 1.0, p.eps = 0.1, p.a = 1.0, p.k = 2.5, p.beta = 7.5;
  p.softplus_cut = 16.0, p.dt = 0.01, p.g_exact = 1, p.seed = 12345;
  strcpy(p.potential, "softplus");
  return p;
}

/* Full state in id order on every rank. */
static void gather_full(SgmAoup s, double **x, double **g)
{
  int64_t start, count;
  double *bx, *bg;
  const int dim = s->p.dim;
  ck_assert_int_eq(sgm_aoup_gather_block(s, &start, &count, &bx, &bg), 0);
  int *cnt = malloc(sizeof(int) * (size_t)s->size), *dsp = malloc(sizeof(int) * (size_t)s->size);
  int mine = (int)(count * dim);
  MPI_Allgather(&mine, 1, MPI_INT, cnt, 1, MPI_INT, s->comm);
  for (int r = 0, o = 0; r < s->size; r++) dsp[r] = o, o += cnt[r];
  *x = malloc(sizeof(double) * (size_t)(s->p.n * dim));
  *g = malloc(sizeof(double) * (size_t)(s->p.n * dim));
  MPI_Allgatherv(bx, mine, MPI_DOUBLE, *x, cnt, dsp, MPI_DOUBLE, s->comm);
  MPI_Allgatherv(bg, mine, MPI_DOUBLE, *g, cnt, dsp, MPI_DOUBLE, s->comm);
  PetscFree(bx);
  PetscFree(bg);
  free(cnt), free(dsp);
}

/* Reference force on particle i from the full state: all pairs in id order, minimum image. */
static void ref_force(const SgmAoup s, const double *x, int64_t i, double f[2])
{
  const int dim = s->p.dim;
  double fs[2] = {0, 0};
  for (int64_t j = 0; j < s->p.n; j++) {
    if (j == i) continue;
    double d[2] = {0, 0}, r2 = 0;
    for (int c = 0; c < dim; c++) {
      d[c] = x[i * dim + c] - x[j * dim + c];
      if (s->p.periodic) d[c] = sgm_min_image(d[c], s->p.L);
      r2 += d[c] * d[c];
    }
    if (r2 >= s->rc * s->rc || r2 == 0) continue;
    double r = sqrt(r2), m = s->pot->force(r, s->p.a, s->p.k, s->p.beta) / r;
    fs[0] += m * d[0], fs[1] += m * d[1];
  }
  for (int c = 0; c < dim; c++) f[c] = s->p.mu * fs[c] - s->p.mu * s->p.trap_A * x[i * dim + c];
}

static void check_forces_allpairs(SgmAoup s)
{
  double *x, *g;
  gather_full(s, &x, &g);
  ck_assert_int_eq(sgm_aoup_invalidate(s), 0); /* particles were moved by hand */
  ck_assert_int_eq(sgm_aoup_forces(s), 0);
  for (int64_t i = 0; i < s->part.nlocal; i++) {
    double f[2];
    int64_t id = s->part.id[i];
    ref_force(s, x, id, f);
    for (int c = 0; c < s->p.dim; c++) ck_assert(f[c] == s->part.f[i * s->p.dim + c]);
  }
  /* forwarded payload: ghosts receive the orientation of the particle they copy */
  if (s->halo) {
    ck_assert_int_eq(sgm_halo_forward(s->halo, &s->part, s->part.g, s->p.dim), 0);
    for (int64_t i = s->part.nlocal; i < s->part.nlocal + s->part.nghost; i++)
      for (int c = 0; c < s->p.dim; c++)
        ck_assert(s->part.g[i * s->p.dim + c] == g[s->part.id[i] * s->p.dim + c]);
  }
  free(x), free(g);
}

START_TEST(test_halo_migration_stress)
{
  /* dim 1, dim 2 (softplus: the general force loop), dim 2 harmonic (the vectorised MIPS kernel) */
  for (int cfg = 0; cfg < 3; cfg++) {
    const int dim = cfg == 0 ? 1 : 2;
    SgmAoupParams p = params(dim, dim == 2 ? 800 : 120, dim == 2 ? 30.0 : 100.0, 1);
    if (cfg == 2) strcpy(p.potential, "harmonic");
    p.skin = 0.7;
    SgmAoup s;
    ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
    ck_assert_int_eq(sgm_aoup_init_random(s, 0), 0);
    for (int round = 0; round < 25; round++) {
      /* fast particles: jumps up to 1.5 box lengths, crossing many patches at once */
      for (int64_t i = 0; i < s->part.nlocal; i++) {
        double u[4];
        sgm_rng_uniform4(99, SGM_RNG_TEST, (uint64_t)s->part.id[i], (uint64_t)round, 0, u);
        for (int c = 0; c < dim; c++) {
          double jump = (round % 5 == 0) ? 3.0 * (u[c] - 0.5) * p.L : 0.3 * (u[c] - 0.5);
          s->part.x[i * dim + c] = sgm_wrap(s->part.x[i * dim + c] + jump, p.L);
        }
      }
      ck_assert_int_eq(sgm_halo_migrate(s->halo, &s->part), 0);
      for (int64_t i = 0; i < s->part.nlocal; i++)
        ck_assert_int_eq(sgm_decomp_owner(&s->decomp, &s->part.x[i * dim]), s->rank);
      ck_assert_int_eq(sgm_aoup_check(s), 0);
      if (round % 5 == 0) check_forces_allpairs(s); /* also checks ids exactly */
    }
    sgm_aoup_destroy(&s);
  }
}
END_TEST

static void run_and_compare_mode(SgmAoupParams p, int relax, int nsteps, int lagged,
                                 int64_t *nbuilds)
{
  SgmAoup s, r;
  double *x, *g, *xr, *gr;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, relax), 0);
  /* lagged: each step's reduction completes during the next step's forces (the simulate stage's
   * mode); the same rebuilds at the same steps */
  ck_assert_int_eq(sgm_aoup_set_lagged(s, lagged ? PETSC_TRUE : PETSC_FALSE), 0);
  /* and load balancing at every list build (the simulate stage's default is every 10) */
  ck_assert_int_eq(sgm_aoup_set_balance(s, lagged ? 1 : 0, 0.0), 0);
  for (int t = 0; t < nsteps; t++) ck_assert_int_eq(sgm_aoup_step(s), 0);
  gather_full(s, &x, &g);
  if (lagged)
    ck_assert_int_eq(s->nbuilds, *nbuilds);
  else
    *nbuilds = s->nbuilds;
  /* serial reference, computed by every rank on its own, without Verlet lists (skin 0): the
   * trajectory depends neither on the rank count nor on the skin */
  SgmAoupParams q = p;
  q.skin = 0.0;
  q.grid[0] = q.grid[1] = 0; /* one rank: no rank-grid hint */
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &q, &r), 0);
  ck_assert_int_eq(sgm_aoup_init_random(r, relax), 0);
  for (int t = 0; t < nsteps; t++) ck_assert_int_eq(sgm_aoup_step(r), 0);
  gather_full(r, &xr, &gr);
  int64_t moved = 0;
  for (int64_t i = 0; i < p.n * p.dim; i++) {
    ck_assert_msg(x[i] == xr[i], "x[%lld] differs: %.17g vs %.17g", (long long)i, x[i], xr[i]);
    ck_assert(g[i] == gr[i]);
    moved += isfinite(x[i]);
  }
  ck_assert_int_eq(moved, p.n * p.dim);
  ck_assert_int_eq(s->step, nsteps);
  free(x), free(g), free(xr), free(gr);
  sgm_aoup_destroy(&s);
  sgm_aoup_destroy(&r);
}

static void run_and_compare(SgmAoupParams p, int relax, int nsteps)
{
  int64_t nbuilds = -1;
  run_and_compare_mode(p, relax, nsteps, 0, &nbuilds);
  run_and_compare_mode(p, relax, nsteps, 1, &nbuilds);
}

START_TEST(test_rank_invariance_2d)
{
  SgmAoupParams p = params(2, 400, sqrt(400 * M_PI / 0.5), 1);
  run_and_compare(p, 20, 150);
  p.skin = 0.4;
  run_and_compare(p, 20, 150);
  p.eps = 0.0, p.g_exact = 0;
  strcpy(p.potential, "harmonic");
  p.dt = 0.05, p.skin = 0.6;
  run_and_compare(p, 20, 300);
  /* all ranks in a column: x is copied locally, the forward of the positions is in flight along
   * y (the first dimension with several ranks); at 4 ranks migration along y needs more than one
   * round (the path with the "anything misplaced?" allreduce) */
  int size;
  MPI_Comm_size(sgm_test_comm(), &size);
  p.grid[0] = 1, p.grid[1] = size;
  run_and_compare(p, 20, 300);
}
END_TEST

/* Load balancing on a lopsided state: two thirds of the particles in a strip x < L/2. The cuts
 * move (several ranks along x), the per-rank counts come within a few cell columns of equal, and
 * the trajectory is bitwise the serial one. */
START_TEST(test_balance_lopsided)
{
  int size;
  MPI_Comm_size(sgm_test_comm(), &size);
  SgmAoupParams p = params(2, 600, 60.0, 1);
  strcpy(p.potential, "harmonic");
  p.eps = 0.0, p.g_exact = 0, p.dt = 0.05, p.skin = 0.6, p.v0 = 0.5;
  p.grid[0] = size, p.grid[1] = 1; /* all ranks along x */
  int64_t *id = malloc(sizeof(int64_t) * (size_t)p.n);
  double *x0 = malloc(sizeof(double) * (size_t)(2 * p.n)),
         *g0 = malloc(sizeof(double) * (size_t)(2 * p.n));
  for (int64_t i = 0; i < p.n; i++) {
    double u[4];
    sgm_rng_uniform4(5, SGM_RNG_TEST, (uint64_t)i, 0, 0, u);
    id[i] = i;
    x0[2 * i] = (i % 3 ? 0.5 * u[0] : u[0]) * p.L;
    x0[2 * i + 1] = u[1] * p.L;
    g0[2 * i] = u[2] - 0.5, g0[2 * i + 1] = u[3] - 0.5;
  }
  SgmAoup s, r;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_set_state(s, p.n, id, x0, g0, 0), 0);
  ck_assert_int_eq(sgm_aoup_set_balance(s, 1, 0.0), 0);
  ck_assert_int_eq(sgm_aoup_set_lagged(s, PETSC_TRUE), 0);
  ck_assert_int_eq(sgm_aoup_step(s), 0);
  /* right after the first build: counts per rank */
  int64_t mine = s->part.nlocal, most, fewest;
  MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, sgm_test_comm());
  MPI_Allreduce(&mine, &fewest, 1, MPI_INT64_T, MPI_MIN, sgm_test_comm());
  if (size > 1) {
    ck_assert_int_ge(s->tm.balances, 1);
    /* uniform cuts would give the first half of the ranks 5/6 of the particles; balanced: within
     * two columns of cells of the mean (a column of the strip holds ~45 particles here) */
    const double mean = (double)p.n / size,
                 col = 5.0 * (double)p.n / 6.0 / (0.5 * (double)s->decomp.ncell[0]);
    ck_assert_msg((double)most <= mean + 2.0 * col, "most %lld, mean %g, column %g",
                  (long long)most, mean, col);
    ck_assert_int_ge(s->decomp.min_cells[0], 1);
  }
  (void)fewest;
  for (int t = 1; t < 200; t++) ck_assert_int_eq(sgm_aoup_step(s), 0);
  SgmAoupParams q = p;
  q.skin = 0.0, q.grid[0] = q.grid[1] = 0;
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &q, &r), 0);
  ck_assert_int_eq(sgm_aoup_set_state(r, p.n, id, x0, g0, 0), 0);
  for (int t = 0; t < 200; t++) ck_assert_int_eq(sgm_aoup_step(r), 0);
  double *x, *g, *xr, *gr;
  gather_full(s, &x, &g);
  gather_full(r, &xr, &gr);
  for (int64_t i = 0; i < 2 * p.n; i++) {
    ck_assert_msg(x[i] == xr[i], "x[%lld] differs: %.17g vs %.17g", (long long)i, x[i], xr[i]);
    ck_assert(g[i] == gr[i]);
  }
  ck_assert_int_eq(sgm_aoup_check(s), 0);
  free(x), free(g), free(xr), free(gr), free(id), free(x0), free(g0);
  sgm_aoup_destroy(&s);
  sgm_aoup_destroy(&r);
}
END_TEST

START_TEST(test_rank_invariance_1d_and_open)
{
  SgmAoupParams p = params(1, 40, 120.0, 1);
  run_and_compare(p, 10, 200);
  p.skin = 1.0;
  run_and_compare(p, 10, 200);
  p = params(2, 64, 12.0, 0); /* trap, replicated mode */
  p.trap_A = 0.05;
  run_and_compare(p, 10, 200);
  p.skin = 0.5;
  run_and_compare(p, 10, 200);
}
END_TEST

START_TEST(test_restart_identity)
{
  SgmAoupParams p = params(2, 300, 40.0, 1);
  p.skin = 0.5;
  SgmAoup a, b;
  double *xa, *ga, *xb, *gb;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &a), 0);
  ck_assert_int_eq(sgm_aoup_init_random(a, 5), 0);
  for (int t = 0; t < 60; t++) ck_assert_int_eq(sgm_aoup_step(a), 0);
  gather_full(a, &xa, &ga);
  for (int t = 0; t < 60; t++) ck_assert_int_eq(sgm_aoup_step(a), 0);
  /* "restart": a fresh engine from the state at step 60 */
  int64_t *id = malloc(sizeof(int64_t) * (size_t)p.n);
  for (int64_t i = 0; i < p.n; i++) id[i] = i;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &b), 0);
  ck_assert_int_eq(sgm_aoup_set_state(b, p.n, id, xa, ga, 60), 0);
  for (int t = 0; t < 60; t++) ck_assert_int_eq(sgm_aoup_step(b), 0);
  free(xa), free(ga);
  gather_full(a, &xa, &ga);
  gather_full(b, &xb, &gb);
  ck_assert(memcmp(xa, xb, sizeof(double) * (size_t)(p.n * 2)) == 0);
  ck_assert(memcmp(ga, gb, sizeof(double) * (size_t)(p.n * 2)) == 0);
  free(xa), free(ga), free(xb), free(gb), free(id);
  sgm_aoup_destroy(&a);
  sgm_aoup_destroy(&b);
}
END_TEST

START_TEST(test_ring_force)
{
  /* two disks on a ring of length 10 at 0.5 and 9.7: distance 0.8 through the boundary */
  SgmAoupParams p = params(1, 2, 10.0, 1);
  strcpy(p.potential, "harmonic");
  p.k = 1.0;
  SgmAoup s;
  int64_t id[2] = {0, 1};
  double x[2] = {0.5, 9.7}, g[2] = {0, 0};
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_set_state(s, 2, id, x, g, 0), 0);
  ck_assert_int_eq(sgm_aoup_forces(s), 0);
  for (int64_t i = 0; i < s->part.nlocal; i++) {
    double expect = (s->part.id[i] == 0 ? 1.0 : -1.0) * (2.0 - 0.8);
    ck_assert_double_eq_tol(s->part.f[i], expect, 1e-12);
  }
  /* softplus: k softplus(2a - r) */
  sgm_aoup_destroy(&s);
  strcpy(p.potential, "softplus");
  p.L = 20.0, x[1] = 19.7; /* the softplus range 2a + 16/beta needs a longer ring */
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_set_state(s, 2, id, x, g, 0), 0);
  ck_assert_int_eq(sgm_aoup_forces(s), 0);
  for (int64_t i = 0; i < s->part.nlocal; i++) {
    double expect = (s->part.id[i] == 0 ? 1.0 : -1.0) * log1p(exp(7.5 * 1.2)) / 7.5;
    ck_assert_double_eq_tol(s->part.f[i], expect, 1e-12);
  }
  sgm_aoup_destroy(&s);
}
END_TEST

/* One step against the plain scalar update of every local particle: forces from the engine (the
 * pair sums are checked above), noise from the scalar reference sgm_rng_normal2_poly, then
 * x + dt (f + v0 g) + sqrt(2 eps dt) zx wrapped with sgm_wrap, and cg g + sg zg, bit for bit. This
 * pins the vectorised step kernel (aoup_kernels.c) to its definition, including particles that
 * jump by more than a box length (the kernel's general-wrap path). */
static void check_step_scalar(SgmAoupParams p, int jumpers)
{
  SgmAoup s;
  const int dim = p.dim;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, 10), 0);
  for (int t = 0; t < 5; t++) ck_assert_int_eq(sgm_aoup_step(s), 0);
  if (jumpers) /* |v0 dt g| = 2.3 L for every 7th id */
    for (int64_t i = 0; i < s->part.nlocal; i++)
      if (s->part.id[i] % 7 == 0)
        s->part.g[i * dim] = (s->part.id[i] % 2 ? 2.3 : -2.3) * p.L / (p.v0 * p.dt);
  ck_assert_int_eq(sgm_aoup_forces(s), 0); /* builds the lists if due: no migration in the step */
  const int64_t n = s->part.nlocal, step = s->step;
  int64_t *id = malloc(sizeof(int64_t) * (size_t)(n + 1));
  double *x = malloc(sizeof(double) * (size_t)(n * dim + 1));
  double *g = malloc(sizeof(double) * (size_t)(n * dim + 1));
  double *f = malloc(sizeof(double) * (size_t)(n * dim + 1));
  memcpy(id, s->part.id, sizeof(int64_t) * (size_t)n);
  memcpy(x, s->part.x, sizeof(double) * (size_t)(n * dim));
  memcpy(g, s->part.g, sizeof(double) * (size_t)(n * dim));
  memcpy(f, s->part.f, sizeof(double) * (size_t)(n * dim));
  ck_assert_int_eq(sgm_aoup_step(s), 0);
  ck_assert_int_eq(s->part.nlocal, n);
  const double sx = sqrt(2.0 * p.eps * p.dt);
  const double cg = p.g_exact ? exp(-p.gamma * p.dt) : 1.0 - p.gamma * p.dt;
  const double sg = p.g_exact ? sqrt(-expm1(-2.0 * p.gamma * p.dt)) : sqrt(2.0 * p.gamma * p.dt);
  int64_t wrapped = 0;
  for (int64_t i = 0; i < n; i++) {
    double zx[2] = {0, 0}, zg[2];
    ck_assert_int_eq(s->part.id[i], id[i]);
    if (sx > 0.0)
      sgm_rng_normal2_poly(p.seed, SGM_RNG_NOISE_X, (uint64_t)id[i], (uint64_t)step, 0, zx);
    sgm_rng_normal2_poly(p.seed, SGM_RNG_NOISE_G, (uint64_t)id[i], (uint64_t)step, 0, zg);
    for (int c = 0; c < dim; c++) {
      const int64_t e = i * dim + c;
      double xn = x[e] + p.dt * (f[e] + p.v0 * g[e]) + sx * zx[c];
      if (p.periodic && !(xn >= 0.0 && xn < p.L)) xn = sgm_wrap(xn, p.L), wrapped++;
      const double gn = cg * g[e] + sg * zg[c];
      ck_assert_msg(s->part.x[e] == xn, "x of id %lld: %.17g vs %.17g", (long long)id[i],
                    s->part.x[e], xn);
      ck_assert(s->part.g[e] == gn);
    }
  }
  int64_t wsum = 0;
  MPI_Allreduce(&wrapped, &wsum, 1, MPI_INT64_T, MPI_SUM, s->comm);
  if (p.periodic && jumpers) ck_assert_int_ge(wsum, p.n / 7);
  free(id), free(x), free(g), free(f);
  sgm_aoup_destroy(&s);
}

START_TEST(test_step_equals_scalar_update)
{
  SgmAoupParams p = params(2, 400, sqrt(400 * M_PI / 0.5), 1);
  p.skin = 0.5;
  check_step_scalar(p, 0); /* softplus, eps > 0, exact OU */
  check_step_scalar(p, 1);
  p.eps = 0.0, p.g_exact = 0, p.dt = 0.05;
  strcpy(p.potential, "harmonic"); /* the MIPS path */
  check_step_scalar(p, 0);
  check_step_scalar(p, 1);
  p = params(1, 40, 120.0, 1);
  p.skin = 0.5;
  check_step_scalar(p, 1);
  p = params(2, 64, 12.0, 0); /* trap, replicated mode */
  p.trap_A = 0.05;
  check_step_scalar(p, 0);
}
END_TEST

START_TEST(test_nonfinite_stops)
{
  /* an absurd stiffness makes the step overflow. On a communicator of several ranks PETSc 3.18
   * ends the other ranks of a collective error, so the error path is checked on PETSC_COMM_SELF
   * (each rank on its own); the allreduce makes every rank of a real run raise it. */
  SgmAoupParams p = params(2, 2, 20.0, 1);
  strcpy(p.potential, "harmonic");
  p.k = 1e308, p.dt = 10.0;
  SgmAoup s;
  int64_t id[2] = {0, 1};
  double x[4] = {5.0, 5.0, 5.5, 5.0}, g[4] = {0, 0, 0, 0};
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_set_state(s, 2, id, x, g, 0), 0);
  PetscErrorCode e1 = sgm_aoup_step(s);
  PetscErrorCode e2 = e1 ? 0 : sgm_aoup_step(s);
  ck_assert_int_eq(e1 ? e1 : e2, PETSC_ERR_FP);
  sgm_aoup_destroy(&s);
  /* lagged: raised by the next step's forces or by sgm_aoup_sync, naming the step it refers to */
  ck_assert_int_eq(sgm_aoup_create(PETSC_COMM_SELF, &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_set_state(s, 2, id, x, g, 0), 0);
  ck_assert_int_eq(sgm_aoup_set_lagged(s, PETSC_TRUE), 0);
  e1 = sgm_aoup_step(s);
  e2 = e1 ? 0 : sgm_aoup_step(s);
  PetscErrorCode e3 = e1 || e2 ? 0 : sgm_aoup_sync(s);
  ck_assert_int_eq(e1 ? e1 : e2 ? e2 : e3, PETSC_ERR_FP);
  sgm_aoup_destroy(&s);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("aoup_engine");
  TCase *t = tcase_create("engine");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, test_ring_force);
  tcase_add_test(t, test_halo_migration_stress);
  tcase_add_test(t, test_rank_invariance_2d);
  tcase_add_test(t, test_balance_lopsided);
  tcase_add_test(t, test_rank_invariance_1d_and_open);
  tcase_add_test(t, test_restart_identity);
  tcase_add_test(t, test_step_equals_scalar_update);
  tcase_add_test(t, test_nonfinite_stops);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
