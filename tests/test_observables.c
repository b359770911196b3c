/* MPI tests of the observables (src/analysis): local density against all pairs with minimum image,
 * clusters against a serial union-find over all pairs (labels = smallest id), both exactly and on
 * every rank count; a ring chain through the periodic and rank boundaries, a serpentine chain that
 * needs several label rounds, many dimers; S(k) of uniform random points (mean 1 within the
 * statistical error), of a square lattice (Bragg shells against hand-counted modes) and against a
 * direct DFT; the halo-width check; the HDF5 writer read back. Every reference is computed inside
 * the test from the full state, which every rank knows. */
#include "testutil.h"
#include "sgm/observables.h"
#include "sgm/rng.h"

#include <hdf5.h>
#include <string.h>

static SgmAoupParams params(int dim, int64_t n, double L)
{
  SgmAoupParams p;
  memset(&p, 0, sizeof p);
  p.dim = dim, p.n = n, p.L = L, p.periodic = 1;
  p.mu = 1.0, p.v0 = 0.0, p.gamma = 1.0, p.a = 1.0, p.k = 1.0, p.beta = 7.5;
  p.softplus_cut = 16.0, p.dt = 0.01, p.seed = 7;
  strcpy(p.potential, "harmonic");
  return p;
}

static SgmAoup engine(int dim, int64_t n, double L, const double *x, const int grid[2])
{
  SgmAoupParams p = params(dim, n, L);
  if (grid) p.grid[0] = grid[0], p.grid[1] = grid[1];
  SgmAoup s;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  int64_t *id = malloc(sizeof(int64_t) * (size_t)n);
  double *g = calloc((size_t)(n * dim), sizeof(double));
  for (int64_t i = 0; i < n; i++) id[i] = i;
  ck_assert_int_eq(sgm_aoup_set_state(s, n, id, x, g, 3), 0);
  free(id), free(g);
  return s;
}

static double *random_points(int dim, int64_t n, double L, uint64_t seed)
{
  double *x = malloc(sizeof(double) * (size_t)(n * dim));
  for (int64_t i = 0; i < n; i++) {
    double u[4];
    sgm_rng_uniform4(seed, SGM_RNG_TEST, (uint64_t)i, 0, 0, u);
    for (int c = 0; c < dim; c++) x[i * dim + c] = L * u[c];
  }
  return x;
}

static double r2_min_image(const double *x, int dim, int64_t i, int64_t j, double L)
{
  double r2 = 0;
  for (int c = 0; c < dim; c++) {
    double d = sgm_min_image(x[i * dim + c] - x[j * dim + c], L);
    r2 += d * d;
  }
  return r2;
}

static int64_t find(int64_t *p, int64_t i)
{
  while (p[i] != i) i = p[i] = p[p[i]];
  return i;
}

typedef struct {
  int64_t *nloc, *label, *size, nclusters, largest, largest_label;
} Ref;

/* All pairs: neighbour counts, and a union-find whose root is the smallest index (= id). */
static Ref reference(const double *x, int dim, int64_t n, double L, double rloc, double rcon)
{
  Ref r;
  r.nloc = calloc((size_t)n, sizeof(int64_t));
  r.label = malloc(sizeof(int64_t) * (size_t)n);
  r.size = calloc((size_t)n, sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) r.label[i] = i;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) {
      double r2 = r2_min_image(x, dim, i, j, L);
      if (r2 < rloc * rloc) r.nloc[i]++, r.nloc[j]++;
      if (r2 < rcon * rcon) {
        int64_t a = find(r.label, i), b = find(r.label, j);
        if (a < b) r.label[b] = a;
        if (b < a) r.label[a] = b;
      }
    }
  r.nclusters = 0, r.largest = 0, r.largest_label = -1;
  for (int64_t i = 0; i < n; i++) r.label[i] = find(r.label, i), r.size[r.label[i]]++;
  for (int64_t i = 0; i < n; i++)
    if (r.size[i]) {
      r.nclusters++;
      if (r.size[i] > r.largest) r.largest = r.size[i], r.largest_label = i;
    }
  return r;
}

static void ref_free(Ref *r)
{
  free(r->nloc), free(r->label), free(r->size);
}

/* Computes the observables and checks every integer result against the serial reference. */
/* Moves every owned particle of s to x_moved[id] without migrating (as between Verlet-list
 * rebuilds of the engine, when locals may sit outside their patch). */
static void move_unmigrated(SgmAoup s, const double *x_moved)
{
  const int dim = s->p.dim;
  for (int64_t i = 0; i < s->part.nlocal; i++)
    for (int c = 0; c < dim; c++) s->part.x[i * dim + c] = x_moved[s->part.id[i] * dim + c];
}

static void check_against_reference_moved(int dim, int64_t n, double L, const double *x0,
                                          const double *x, const SgmObservablesParams *op,
                                          int64_t expect_clusters, int64_t expect_largest,
                                          int min_iterations)
{
  SgmAoup s = engine(dim, n, L, x0, NULL);
  if (x != x0) move_unmigrated(s, x);
  SgmObservables o;
  memset(&o, 0, sizeof o);
  ck_assert_int_eq(sgm_observables_compute(s, op, &o), 0);
  Ref r = reference(x, dim, n, L, op->r_local * 1.0, 2.0 * (1.0 + op->contact_tol));
  int64_t nl = o.nlocal, tot;
  MPI_Allreduce(&nl, &tot, 1, MPI_INT64_T, MPI_SUM, sgm_test_comm());
  ck_assert_int_eq(tot, n);
  int bad = 0;
  for (int64_t i = 0; i < o.nlocal; i++) {
    int64_t id = o.id[i];
    if (o.nloc[i] != r.nloc[id] || o.cluster[i] != r.label[id]) bad++;
    ck_assert(o.phi_loc[i] == (double)r.nloc[id] * pow(1.0 / op->r_local, dim));
  }
  int gbad;
  MPI_Allreduce(&bad, &gbad, 1, MPI_INT, MPI_SUM, sgm_test_comm());
  ck_assert_int_eq(gbad, 0);
  /* histogram with the overflow bin, moments, Sarle's coefficient from the per-particle values */
  int64_t *hist = calloc((size_t)op->density_bins, sizeof(int64_t));
  double m2 = 0, m3 = 0, m4 = 0;
  int64_t isum = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t v = r.nloc[i];
    hist[v < op->density_bins - 1 ? v : op->density_bins - 1]++;
    isum += v;
  }
  const double mean = (double)isum / (double)n;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)r.nloc[i] - mean;
    m2 += d * d / n, m3 += d * d * d / n, m4 += d * d * d * d / n;
  }
  for (int b = 0; b < op->density_bins; b++) ck_assert_int_eq(o.hist[b], hist[b]);
  ck_assert_double_eq_tol(o.nloc_mean, mean, 1e-12 * (1 + mean));
  double N = (double)n, g1 = m3 / pow(m2, 1.5) * sqrt(N * (N - 1)) / (N - 2);
  double g2 = (N - 1) / ((N - 2) * (N - 3)) * ((N + 1) * (m4 / (m2 * m2) - 3) + 6);
  double bc = (g1 * g1 + 1) / (g2 + 3 * (N - 1) * (N - 1) / ((N - 2) * (N - 3)));
  if (m2 > 0)
    ck_assert_double_eq_tol(o.bimodality, bc, 1e-9);
  else
    ck_assert(o.bimodality == 0.0); /* undefined for a constant n_i: reported as 0 */
  /* clusters */
  ck_assert_int_eq(o.n_clusters, r.nclusters);
  ck_assert_int_eq(o.largest_size, r.largest);
  ck_assert_int_eq(o.largest_label, r.largest_label);
  ck_assert(o.largest_fraction == (double)r.largest / (double)n);
  if (expect_clusters >= 0) ck_assert_int_eq(o.n_clusters, expect_clusters);
  if (expect_largest >= 0) ck_assert_int_eq(o.largest_size, expect_largest);
  ck_assert_int_ge(o.label_iterations, min_iterations);
  PetscPrintf(sgm_test_comm(), "  N = %lld: %lld clusters, largest %lld, %d label rounds\n",
              (long long)n, (long long)o.n_clusters, (long long)o.largest_size, o.label_iterations);
  free(hist);
  ref_free(&r);
  sgm_observables_free(&o);
  sgm_aoup_destroy(&s);
}

static void check_against_reference(int dim, int64_t n, double L, const double *x,
                                    const SgmObservablesParams *op, int64_t expect_clusters,
                                    int64_t expect_largest, int min_iterations)
{
  check_against_reference_moved(dim, n, L, x, x, op, expect_clusters, expect_largest,
                                min_iterations);
}

static SgmObservablesParams oparams(double r_local, double tol)
{
  SgmObservablesParams op;
  sgm_observables_params_default(&op);
  op.r_local = r_local, op.contact_tol = tol, op.density_bins = 12, op.sk_grid = -1;
  return op;
}

START_TEST(test_random_2d)
{
  /* phi ~ 0.47 of random points: contacts near percolation, clusters of every size */
  const int64_t n = 1500;
  const double L = 100.0;
  for (uint64_t seed = 1; seed <= 3; seed++) {
    double *x = random_points(2, n, L, seed);
    SgmObservablesParams op = oparams(seed == 1 ? 5.0 : 2.5 + seed, 0.1);
    check_against_reference(2, n, L, x, &op, -1, -1, 1);
    free(x);
  }
}
END_TEST

START_TEST(test_unmigrated)
{
  /* the engine's locals moved by up to 1.5 per component after the state was distributed (a
   * Verlet step without migration): the observables must migrate their copy first */
  const int64_t n = 1500;
  const double L = 100.0;
  double *x0 = random_points(2, n, L, 21), *x = malloc(sizeof(double) * (size_t)(2 * n));
  for (int64_t i = 0; i < n; i++) {
    double u[4];
    sgm_rng_uniform4(22, SGM_RNG_TEST, (uint64_t)i, 0, 0, u);
    for (int c = 0; c < 2; c++) x[2 * i + c] = sgm_wrap(x0[2 * i + c] + 3.0 * (u[c] - 0.5), L);
  }
  SgmObservablesParams op = oparams(5.0, 0.1);
  check_against_reference_moved(2, n, L, x0, x, &op, -1, -1, 1);
  free(x), free(x0);
}
END_TEST

START_TEST(test_after_dynamics)
{
  /* a real engine state: random start, overlap relaxation, 30 active steps with a Verlet skin
   * (ghosts kept, locals not migrated between rebuilds); reference from the gathered state */
  SgmAoupParams p = params(2, 1200, 60.0);
  p.v0 = 1.0, p.eps = 0.1, p.dt = 0.02, p.skin = 0.6;
  SgmAoup s;
  ck_assert_int_eq(sgm_aoup_create(sgm_test_comm(), &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_init_random(s, 20), 0);
  for (int i = 0; i < 30; i++) ck_assert_int_eq(sgm_aoup_step(s), 0);
  int64_t start, count;
  double *bx, *bg;
  ck_assert_int_eq(sgm_aoup_gather_block(s, &start, &count, &bx, &bg), 0);
  int size = s->size, *cnt = malloc(sizeof(int) * (size_t)size),
      *dsp = malloc(sizeof(int) * (size_t)size), mine = (int)(2 * count);
  MPI_Allgather(&mine, 1, MPI_INT, cnt, 1, MPI_INT, s->comm);
  for (int r = 0, o = 0; r < size; r++) dsp[r] = o, o += cnt[r];
  double *x = malloc(sizeof(double) * 2 * 1200);
  MPI_Allgatherv(bx, mine, MPI_DOUBLE, x, cnt, dsp, MPI_DOUBLE, s->comm);
  SgmObservablesParams op = oparams(5.0, 0.1);
  SgmObservables o;
  memset(&o, 0, sizeof o);
  ck_assert_int_eq(sgm_observables_compute(s, &op, &o), 0);
  Ref r = reference(x, 2, 1200, 60.0, 5.0, 2.2);
  int bad = 0, gbad;
  for (int64_t i = 0; i < o.nlocal; i++)
    bad += o.nloc[i] != r.nloc[o.id[i]] || o.cluster[i] != r.label[o.id[i]];
  MPI_Allreduce(&bad, &gbad, 1, MPI_INT, MPI_SUM, s->comm);
  ck_assert_int_eq(gbad, 0);
  ck_assert_int_eq(o.n_clusters, r.nclusters);
  ck_assert_int_eq(o.largest_size, r.largest);
  /* the engine keeps stepping after the analysis (its ghosts and halo pattern untouched) */
  ck_assert_int_eq(sgm_aoup_step(s), 0);
  ref_free(&r);
  sgm_observables_free(&o);
  PetscFree(bx), PetscFree(bg);
  free(cnt), free(dsp), free(x);
  sgm_aoup_destroy(&s);
}
END_TEST

START_TEST(test_random_1d)
{
  const int64_t n = 400;
  const double L = 700.0;
  double *x = random_points(1, n, L, 11);
  SgmObservablesParams op = oparams(6.0, 0.2);
  check_against_reference(1, n, L, x, &op, -1, -1, 1);
  free(x);
}
END_TEST

START_TEST(test_chain_ring)
{
  /* a closed chain along y = 37.3 through both periodic x edges and the rank boundaries (spacing
   * 2, contact below 2.2; the wrap gap 0.5 + 1.5 = 2), a second open chain along x = 61.7 that
   * crosses y rank boundaries, and isolated particles far from both (x and y coordinates on a
   * spacing of 10 away from the chains) */
  const double L = 100.0;
  const int64_t nring = 50, nopen = 30, niso = 40, n = nring + nopen + niso;
  double *x = malloc(sizeof(double) * (size_t)(2 * n));
  int64_t k = 0;
  /* ids interleaved so that the smallest id of each cluster is not at an end */
  for (int64_t i = 0; i < niso; i++, k++) {
    static const double ys[4] = {5.0, 15.0, 85.0, 95.0};
    x[2 * k] = 5.0 + 10.0 * (double)(i % 10), x[2 * k + 1] = ys[i / 10];
  }
  for (int64_t i = 0; i < nring; i++, k++)
    x[2 * k] = 2.0 * (double)((i * 7) % nring) + 0.5, x[2 * k + 1] = 37.3;
  for (int64_t i = 0; i < nopen; i++, k++)
    x[2 * k] = 61.7, x[2 * k + 1] = 20.0 + 2.0 * (double)((i * 11) % nopen);
  SgmObservablesParams op = oparams(3.0, 0.1);
  /* the open chain (x = 61.7, y in [20, 78]) touches the ring bead (60.5, 37.3) at distance
   * 1.39: one cluster of 80, and the 40 isolated particles */
  check_against_reference(2, n, L, x, &op, niso + 1, nring + nopen, 1);
  free(x);
}
END_TEST

START_TEST(test_serpentine)
{
  /* one chain winding through 8 rows that cross the x rank boundary 8 times; its smallest id sits
   * at the far end, so the label must travel along the whole chain: several rounds on > 1 rank */
  const double L = 80.0, sp = 2.0;
  const int rows = 8, per = 36; /* x from 4 to 74 */
  const int64_t n = rows * per + 2 * (rows - 1);
  double *x = malloc(sizeof(double) * (size_t)(2 * n));
  int64_t k = n - 1;
  for (int r = 0; r < rows; r++) {
    const double y = 4.0 + 6.0 * r;
    for (int i = 0; i < per; i++, k--) {
      int ii = (r % 2 == 0) ? i : per - 1 - i;
      x[2 * k] = 4.0 + sp * ii, x[2 * k + 1] = y;
    }
    if (r < rows - 1) /* two links to the next row (6 above) at the turning end, spacing 2 */
      for (int j = 1; j <= 2; j++, k--) {
        x[2 * k] = (r % 2 == 0) ? 4.0 + sp * (per - 1) : 4.0;
        x[2 * k + 1] = y + 2.0 * j;
      }
  }
  ck_assert_int_eq(k, -1);
  SgmObservablesParams op = oparams(2.5, 0.1);
  int size;
  MPI_Comm_size(sgm_test_comm(), &size);
  check_against_reference(2, n, L, x, &op, 1, n, size > 1 ? 3 : 1);
  free(x);
}
END_TEST

START_TEST(test_dimers)
{
  /* 400 dimers (bond 1.9) on a 20 x 20 lattice of spacing 5: 400 clusters of 2 */
  const double L = 100.0;
  const int64_t n = 800;
  double *x = malloc(sizeof(double) * (size_t)(2 * n));
  for (int64_t d = 0; d < 400; d++) {
    double cx = 5.0 * (double)(d % 20) + 1.3, cy = 5.0 * (double)(d / 20) + 2.1;
    x[4 * d] = cx, x[4 * d + 1] = cy;
    x[4 * d + 2] = cx + 1.9 * 0.6, x[4 * d + 3] = cy + 1.9 * 0.8;
  }
  SgmObservablesParams op = oparams(4.0, 0.1);
  check_against_reference(2, n, L, x, &op, 400, 2, 1);
  free(x);
}
END_TEST

START_TEST(test_lattice_ties)
{
  /* square lattice of spacing 2.5 (exact doubles): pair distances hit r_local = 5 and the contact
   * distance 2 (1 + 0.25) = 2.5 exactly, and both tests are strict: every particle has the 8
   * neighbours at 2.5 and 3.54 (not the 4 at exactly 5) and no contact, so 1600 clusters of 1 */
  const double L = 100.0;
  const int64_t n = 1600;
  double *x = malloc(sizeof(double) * (size_t)(2 * n));
  for (int64_t i = 0; i < n; i++)
    x[2 * i] = 1.25 + 2.5 * (double)(i % 40), x[2 * i + 1] = 1.25 + 2.5 * (double)(i / 40);
  SgmObservablesParams op = oparams(5.0, 0.25);
  check_against_reference(2, n, L, x, &op, n, 1, 1);
  SgmAoup s = engine(2, n, L, x, NULL);
  SgmObservables o;
  memset(&o, 0, sizeof o);
  ck_assert_int_eq(sgm_observables_compute(s, &op, &o), 0);
  ck_assert_int_eq(o.hist[8], n);
  for (int64_t i = 0; i < o.nlocal; i++) ck_assert_int_eq(o.nloc[i], 8);
  sgm_observables_free(&o);
  sgm_aoup_destroy(&s);
  free(x);
}
END_TEST

static SgmObservables sk_of(int dim, int64_t n, double L, const double *x, int M)
{
  SgmAoup s = engine(dim, n, L, x, NULL);
  SgmObservables o;
  memset(&o, 0, sizeof o);
  SgmObservablesParams op = oparams(2.5, 0.1);
  op.sk_grid = M;
  ck_assert_int_eq(sgm_observables_compute(s, &op, &o), 0);
  sgm_aoup_destroy(&s);
  return o;
}

/* S(k) into an existing o (its cached plan, shells and |k| sums are reused or rebuilt). */
static void sk_into(int dim, int64_t n, double L, const double *x, int M, SgmObservables *o)
{
  SgmAoup s = engine(dim, n, L, x, NULL);
  SgmObservablesParams op = oparams(2.5, 0.1);
  op.sk_grid = M;
  ck_assert_int_eq(sgm_observables_compute(s, &op, o), 0);
  sgm_aoup_destroy(&s);
}

static void assert_sk_same(const SgmObservables *a, const SgmObservables *b, const char *what)
{
  ck_assert_msg(a->nshell == b->nshell && a->sk_grid == b->sk_grid, "%s: shells differ", what);
  const size_t len = (size_t)a->nshell * sizeof(double);
  ck_assert_msg(!memcmp(a->sk_S, b->sk_S, len), "%s: S differs from a fresh computation", what);
  ck_assert_msg(!memcmp(a->sk_max, b->sk_max, len), "%s: S_max differs", what);
  ck_assert_msg(!memcmp(a->sk_k, b->sk_k, len), "%s: k differs", what);
  ck_assert_msg(!memcmp(a->sk_modes, b->sk_modes, (size_t)a->nshell * sizeof(int64_t)),
                "%s: mode counts differ", what);
}

START_TEST(test_sk_reuse)
{
  /* one SgmObservables through several frames (the simulate stage's use): every result equals,
   * bit for bit, that of a fresh SgmObservables, also when M or L changes (cache rebuilt) */
  const int64_t n = 3000;
  const double L = 100.0, L2 = 120.0;
  double *x = random_points(2, n, L, 11), *y = random_points(2, n, L, 12);
  double *z = random_points(2, n, L2, 13);
  SgmObservables r, f;
  memset(&r, 0, sizeof r);
  sk_into(2, n, L, x, 64, &r);
  sk_into(2, n, L, y, 64, &r);
  f = sk_of(2, n, L, y, 64);
  assert_sk_same(&r, &f, "second frame");
  sgm_observables_free(&f);
  sk_into(2, n, L, x, 32, &r);
  f = sk_of(2, n, L, x, 32);
  assert_sk_same(&r, &f, "new grid");
  sgm_observables_free(&f);
  sk_into(2, n, L2, z, 32, &r);
  f = sk_of(2, n, L2, z, 32);
  assert_sk_same(&r, &f, "new box");
  sgm_observables_free(&f);
  sgm_observables_free(&r);
  ck_assert_ptr_null(r.sk_cache);
  /* prepared before the first frame (sgm_observables_prepare, as simulate does): same bits */
  {
    SgmAoup s = engine(2, n, L, x, NULL);
    SgmObservablesParams op = oparams(2.5, 0.1);
    op.sk_grid = 64;
    ck_assert_int_eq(sgm_observables_prepare(s, &op, &r), 0);
    ck_assert_ptr_nonnull(r.sk_cache);
    ck_assert_int_eq(sgm_observables_compute(s, &op, &r), 0);
    sgm_aoup_destroy(&s);
    f = sk_of(2, n, L, x, 64);
    assert_sk_same(&r, &f, "prepared");
    sgm_observables_free(&f);
    sgm_observables_free(&r);
  }
  free(x), free(y), free(z);
}
END_TEST

START_TEST(test_sk_ideal_gas)
{
  /* |rho_k|^2 / N of NGP-deposited uniform points has mean 1 at every k != 0 and is ~exponential
   * (variance 1); k and -k are the same mode, so a shell mean over m counted modes has standard
   * error ~ 1/sqrt(m/2). Tolerance: 5 standard errors. */
  const int64_t n = 4000;
  const double L = 100.0;
  const int M = 64;
  double *x = random_points(2, n, L, 99);
  SgmObservables o = sk_of(2, n, L, x, M);
  ck_assert_int_eq(o.nshell, M / 2);
  double sum = 0, m = 0;
  for (int s = M / 4; s <= M / 2; s++)
    sum += o.sk_S[s - 1] * o.sk_modes[s - 1], m += o.sk_modes[s - 1];
  double mean = sum / m, se = 1.0 / sqrt(m / 2);
  PetscPrintf(sgm_test_comm(), "  2D ideal gas: high-k mean S = %.4f (standard error %.4f)\n", mean,
              se);
  ck_assert_msg(fabs(mean - 1.0) < 5 * se, "S high-k mean %g, expected 1 +- %g", mean, 5 * se);
  /* every shell of the whole range within 6 standard errors of 1 */
  for (int s = 1; s <= M / 2; s++)
    ck_assert_msg(fabs(o.sk_S[s - 1] - 1.0) < 6.0 / sqrt(o.sk_modes[s - 1] / 2.0 + 0.5) + 1e-12,
                  "shell %d: S = %g over %lld modes", s, o.sk_S[s - 1],
                  (long long)o.sk_modes[s - 1]);
  /* 1D: the same statistics */
  double *x1 = random_points(1, 3000, 500.0, 5);
  SgmObservables o1 = sk_of(1, 3000, 500.0, x1, 1024);
  sum = 0, m = 0;
  for (int s = 128; s <= 512; s++)
    sum += o1.sk_S[s - 1] * o1.sk_modes[s - 1], m += o1.sk_modes[s - 1];
  mean = sum / m, se = 1.0 / sqrt(m / 2);
  PetscPrintf(sgm_test_comm(), "  1D ideal gas: high-k mean S = %.4f (standard error %.4f)\n", mean,
              se);
  ck_assert_msg(fabs(mean - 1.0) < 5 * se, "1D S high-k mean %g +- %g", mean, 5 * se);
  sgm_observables_free(&o1);
  sgm_observables_free(&o);
  free(x1);
  free(x);
}
END_TEST

/* Counted modes (i, j) in (-M/2, M/2]^2 of shell s: (2s-1)^2 <= 4 q < (2s+1)^2. */
static int64_t shell_modes(int M, int s)
{
  int64_t c = 0;
  for (int i = -M / 2 + 1; i <= M / 2; i++)
    for (int j = -M / 2 + 1; j <= M / 2; j++) {
      int64_t q4 = 4 * (int64_t)(i * i + j * j);
      if (q4 && (2 * s - 1) * (2 * s - 1) <= q4 && q4 < (2 * s + 1) * (2 * s + 1)) c++;
    }
  return c;
}

START_TEST(test_sk_lattice)
{
  /* square lattice, spacing b = 4 = 4 grid spacings, 10 x 10 in L = 40: rho_k = N exactly at the
   * reciprocal vectors 2 pi / b (m, n) and 0 elsewhere. Shell 10 holds (+-10, 0), (0, +-10):
   * S_10 = 4 N / modes(10), S_max = N; shell 14 holds (+-10, +-10): S_14 = 4 N / modes(14). */
  const int nl = 10, M = 40;
  const double L = 40.0, b = L / nl;
  const int64_t n = nl * nl;
  double *x = malloc(sizeof(double) * (size_t)(2 * n));
  for (int64_t i = 0; i < n; i++)
    x[2 * i] = b * (double)(i % nl), x[2 * i + 1] = b * (double)(i / nl);
  SgmObservables o = sk_of(2, n, L, x, M);
  ck_assert_int_eq(o.sk_modes[9], shell_modes(M, 10));
  ck_assert_double_eq_tol(o.sk_max[9], (double)n, 1e-9 * n);
  ck_assert_double_eq_tol(o.sk_S[9], 4.0 * n / (double)shell_modes(M, 10), 1e-9 * n);
  ck_assert_double_eq_tol(o.sk_S[13], 4.0 * n / (double)shell_modes(M, 14), 1e-9 * n);
  ck_assert_double_eq_tol(o.sk_k[9], 2.0 * PETSC_PI / b, 0.5 * 2.0 * PETSC_PI / L);
  for (int s = 1; s <= M / 2; s++)
    if (s != 10 && s != 14 && s != 20) ck_assert_double_le(o.sk_max[s - 1], 1e-9 * n);
  sgm_observables_free(&o);
  free(x);
}
END_TEST

START_TEST(test_sk_direct_dft)
{
  /* the FFT pipeline against a direct sum over particles of exp(-i k . X_j), X_j the nearest node
   * (computed here from the positions), shell by shell over (-M/2, M/2]^2; a power of two and two
   * grids with factors 3 and 5 (what the automatic grid picks) */
  const int64_t n = 300;
  const int Ms[3] = {16, 18, 30};
  const double L = 40.0;
  double *x = random_points(2, n, L, 3);
  for (int t = 0; t < 3; t++) {
    const int M = Ms[t];
    const double h = L / M;
    SgmObservables o = sk_of(2, n, L, x, M);
    double sum[15] = {0}, mx[15] = {0};
    int64_t cnt[15] = {0};
    for (int i = -M / 2 + 1; i <= M / 2; i++)
      for (int j = -M / 2 + 1; j <= M / 2; j++) {
        int64_t q4 = 4 * (int64_t)(i * i + j * j);
        int s = (int)floor(sqrt((double)(i * i + j * j)) + 0.5);
        if (!q4 || s > M / 2) continue;
        double re = 0, im = 0;
        for (int64_t p = 0; p < n; p++) {
          double nx = floor(x[2 * p] / h + 0.5), ny = floor(x[2 * p + 1] / h + 0.5);
          double ph = -2.0 * PETSC_PI * (i * nx + j * ny) / M;
          re += cos(ph), im += sin(ph);
        }
        double v = (re * re + im * im) / n;
        sum[s - 1] += v, cnt[s - 1]++;
        if (v > mx[s - 1]) mx[s - 1] = v;
      }
    ck_assert_int_eq(o.nshell, M / 2);
    for (int s = 0; s < M / 2; s++) {
      ck_assert_int_eq(o.sk_modes[s], cnt[s]);
      ck_assert_double_eq_tol(o.sk_S[s], sum[s] / cnt[s], 1e-9);
      ck_assert_double_eq_tol(o.sk_max[s], mx[s], 1e-9);
    }
    sgm_observables_free(&o);
  }
  free(x);
}
END_TEST

START_TEST(test_sk_auto_grid)
{
  /* sk_grid = 0: the smallest even M >= 16 without prime factors above 5 and L / M <= a / 2
   * (a = 1 here), at most 2048 */
  const double Ls[6] = {13.1, 40.0, 100.0, 160.4, 453.7, 1100.0}; /* 26.2 -> 30 skips 26, 28 */
  const int expect[6] = {30, 80, 200, 324, 960, 2048};
  for (int t = 0; t < 6; t++) {
    const int64_t n = 50;
    double *x = random_points(2, n, Ls[t], 5);
    SgmObservables o = sk_of(2, n, Ls[t], x, 0);
    ck_assert_msg(o.sk_grid == expect[t], "L = %g: automatic grid %d, expected %d", Ls[t],
                  o.sk_grid, expect[t]);
    ck_assert_int_eq(o.nshell, expect[t] / 2);
    sgm_observables_free(&o);
    free(x);
  }
}
END_TEST

START_TEST(test_halo_width_check)
{
  /* a rank grid of size x 1 over L = 100: patches are 100 / size wide; r_local = 30 fits on 1
   * and 2 ranks (< L/2 = 50 and <= 50), not on 4 (patch 25): a clear error, not wrong counts */
  int size;
  MPI_Comm_size(sgm_test_comm(), &size);
  const int grid[2] = {size, 1};
  double *x = random_points(2, 200, 100.0, 4);
  SgmAoup s = engine(2, 200, 100.0, x, grid);
  SgmObservables o;
  memset(&o, 0, sizeof o);
  SgmObservablesParams op = oparams(30.0, 0.1);
  /* errors returned quietly (the traceback handler ends ranks other than 0 on collective errors) */
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  PetscErrorCode ierr = sgm_observables_compute(s, &op, &o);
  if (size >= 4)
    ck_assert_int_ne(ierr, 0);
  else
    ck_assert_int_eq(ierr, 0);
  op.r_local = 60.0; /* beyond L/2 on any rank count */
  ierr = sgm_observables_compute(s, &op, &o);
  PetscPopErrorHandler();
  ck_assert_int_ne(ierr, 0);
  sgm_observables_free(&o);
  sgm_aoup_destroy(&s);
  free(x);
}
END_TEST

static void read_ds(hid_t f, const char *name, hid_t type, void *buf, hsize_t *dims)
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  ck_assert_int_ge(d, 0);
  hid_t sp = H5Dget_space(d);
  H5Sget_simple_extent_dims(sp, dims, NULL);
  ck_assert_int_ge(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
  H5Sclose(sp), H5Dclose(d);
}

START_TEST(test_writer)
{
  const char *dir = sgm_test_tmpdir("observables_writer");
  char path[1024];
  snprintf(path, sizeof path, "%s/trajectory.h5", dir);
  int rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  if (!rank) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    H5Fclose(f);
  }
  MPI_Barrier(sgm_test_comm());
  const int64_t n = 500;
  double *x = random_points(2, n, 50.0, 8);
  SgmAoup s = engine(2, n, 50.0, x, NULL);
  SgmObservables o;
  memset(&o, 0, sizeof o);
  SgmObservablesParams op = oparams(3.0, 0.1);
  op.sk_grid = 32;
  op.per_particle = 1;
  ck_assert_int_eq(sgm_observables_compute(s, &op, &o), 0);
  /* frames 0, 1, 2, then frame 1 again (a restart): 2 rows remain */
  for (int f = 0; f < 3; f++)
    ck_assert_int_eq(sgm_observables_write(s->comm, path, f, 0.5 * f, &o), 0);
  ck_assert_int_eq(sgm_observables_write(s->comm, path, 1, 0.5, &o), 0);
  MPI_Barrier(sgm_test_comm());
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_int_ge(f, 0);
  hsize_t dims[2];
  int64_t hist[2 * 12];
  double t[4], frac[4], S[2 * 16], k[16];
  read_ds(f, "/observables/time", H5T_NATIVE_DOUBLE, t, dims);
  ck_assert_int_eq(dims[0], 2);
  ck_assert(t[0] == 0.0 && t[1] == 0.5);
  read_ds(f, "/observables/local_density/histogram", H5T_NATIVE_INT64, hist, dims);
  ck_assert_int_eq(dims[0], 2);
  ck_assert_int_eq(dims[1], 12);
  for (int b = 0; b < 12; b++) ck_assert_int_eq(hist[12 + b], o.hist[b]);
  read_ds(f, "/observables/clusters/largest_fraction", H5T_NATIVE_DOUBLE, frac, dims);
  ck_assert(frac[1] == o.largest_fraction);
  read_ds(f, "/observables/structure_factor/S", H5T_NATIVE_DOUBLE, S, dims);
  ck_assert_int_eq(dims[1], 16);
  read_ds(f, "/observables/structure_factor/k", H5T_NATIVE_DOUBLE, k, dims);
  for (int i = 0; i < 16; i++) ck_assert(S[16 + i] == o.sk_S[i] && k[i] == o.sk_k[i]);
  /* per-particle rows in id order against the all-pairs reference */
  int64_t *nn = malloc(sizeof(int64_t) * 2 * n), *lab = malloc(sizeof(int64_t) * 2 * n);
  read_ds(f, "/observables/local_density/n", H5T_NATIVE_INT64, nn, dims);
  ck_assert_int_eq(dims[0], 2);
  ck_assert_int_eq(dims[1], n);
  read_ds(f, "/observables/clusters/label", H5T_NATIVE_INT64, lab, dims);
  Ref r = reference(x, 2, n, 50.0, 3.0, 2.2);
  for (int64_t i = 0; i < n; i++) {
    ck_assert_int_eq(nn[n + i], r.nloc[i]);
    ck_assert_int_eq(lab[n + i], r.label[i]);
  }
  ref_free(&r);
  free(nn), free(lab);
  H5Fclose(f);
  sgm_observables_free(&o);
  sgm_aoup_destroy(&s);
  free(x);
}
END_TEST

START_TEST(test_config_keys)
{
  /* the [analysis] table parses with its defaults and with every key set; bad values stop */
  SgmConfig cfg;
  SgmObservablesParams p, d;
  ck_assert_int_eq(sgm_schema_register(&sgm_table_analysis), 0);
  ck_assert_int_eq(sgm_config_create_from_string(sgm_test_comm(), "a.toml",
                                                 "[run]\nname = \"t\"\nstages = []\n", 0, NULL,
                                                 &cfg),
                   0);
  ck_assert_int_eq(sgm_observables_params_from_config(cfg, &p), 0);
  sgm_observables_params_default(&d);
  ck_assert(p.r_local == d.r_local && p.density_bins == d.density_bins &&
            p.contact_tol == d.contact_tol && p.sk_grid == d.sk_grid && p.every == d.every &&
            p.per_particle == d.per_particle);
  sgm_config_destroy(&cfg);
  ck_assert_int_eq(sgm_config_create_from_string(
                       sgm_test_comm(), "b.toml",
                       "[run]\nname = \"t\"\nstages = []\n[analysis]\nr_local = 3.5\n"
                       "density_bins = 20\ncontact_tol = 0.05\nsk_grid = 128\nevery = 4\n"
                       "per_particle = true\n",
                       0, NULL, &cfg),
                   0);
  ck_assert_int_eq(sgm_observables_params_from_config(cfg, &p), 0);
  ck_assert(p.r_local == 3.5 && p.density_bins == 20 && p.contact_tol == 0.05 && p.sk_grid == 128 &&
            p.every == 4 && p.per_particle == 1);
  sgm_config_destroy(&cfg);
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  PetscErrorCode ierr = sgm_config_create_from_string(
      sgm_test_comm(), "c.toml", "[run]\nname = \"t\"\nstages = []\n[analysis]\ndensity_bins = 1\n",
      0, NULL, &cfg);
  PetscPopErrorHandler();
  ck_assert_int_ne(ierr, 0);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("observables");
  TCase *t = tcase_create("observables");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, test_random_2d);
  tcase_add_test(t, test_unmigrated);
  tcase_add_test(t, test_random_1d);
  tcase_add_test(t, test_after_dynamics);
  tcase_add_test(t, test_chain_ring);
  tcase_add_test(t, test_serpentine);
  tcase_add_test(t, test_dimers);
  tcase_add_test(t, test_lattice_ties);
  tcase_add_test(t, test_sk_ideal_gas);
  tcase_add_test(t, test_sk_reuse);
  tcase_add_test(t, test_sk_lattice);
  tcase_add_test(t, test_sk_direct_dft);
  tcase_add_test(t, test_sk_auto_grid);
  tcase_add_test(t, test_halo_width_check);
  tcase_add_test(t, test_writer);
  tcase_add_test(t, test_config_keys);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
