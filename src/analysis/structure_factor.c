/* Structure factor S(k) of the particle density with FFTW (MPI slabs in 2D, serial in 1D).
 *
 * Owns: the deposit of the particles on an M^d grid, the transform and the shell average.
 *
 * Deposit: nearest grid point (NGP), X_j = h round(x_j / h), h = L / M. Chosen over cloud-in-cell
 * because the NGP alias sum of the window is exactly one, sum_n |W(k + 2 pi n / h)|^2 = 1, so the
 * shot noise is flat: an ideal gas has <|rho_k|^2> / N = 1 at every grid mode k != 0 with no
 * deconvolution or shot-noise model (CIC would need Jing's correction prod_i (1 - 2/3
 * sin^2(k_i h / 2)) and a division by its window). The price is that correlations are seen
 * through the window sinc^2(k_x h/2) sinc^2(k_y h/2): S(k) - 1 is attenuated by 19% at k =
 * k_Nyquist / 2 and 1% at k_Nyquist / 8, which is why the automatic grid has h <= a/2. Particles on
 * grid nodes (a lattice commensurate with the grid) are deposited exactly: Bragg peaks have height
 * N. We do not deconvolve: the output is |rho_k|^2 / N of the NGP field, as documented.
 *
 * Parallel deposit: FFTW-MPI distributes the first grid index (x) in slabs, which do not match the
 * DMDA patches that own the particles. With NGP each particle touches one node, so each rank sends
 * the flat node index (one int64) of each owned particle to the slab owner of its row (one
 * MPI_Alltoallv): N int64 in all, less than moving a DMDA-aligned grid of M^2 doubles whenever N <
 * M^2, and no halo summation of grid values is needed. Counts are integers, so the deposited grid
 * is the same on any rank count; only FFTW's transposes change the rounding.
 *
 * Shells: s = round(|k| L / 2 pi) for the integer mode vector (i, j), s = 1 .. floor(M/2), decided
 * with integer arithmetic; the r2c half plane stores one of k, -k for 0 < j < M/2, so those modes
 * count twice, and the shell average is over the full plane.
 */
#include "analysis_internal.h"
#include "sgm/core.h"

#include <fftw3-mpi.h>
#include <stdlib.h>
#include <string.h>

static PetscErrorCode fftw_mpi_once(void)
{
  static int done = 0;
  PetscFunctionBeginUser;
  if (!done) fftw_mpi_init();
  done = 1;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Shell of the integer mode vector with squared length q (> 0): s with (s - 1/2)^2 <= q < (s +
 * 1/2)^2, i.e. (2s - 1)^2 <= 4q < (2s + 1)^2. */
static int64_t shell_of(int64_t q)
{
  int64_t s = (int64_t)floor(sqrt((double)q) + 0.5);
  while (s > 0 && (2 * s - 1) * (2 * s - 1) > 4 * q) s--;
  while ((2 * s + 1) * (2 * s + 1) <= 4 * q) s++;
  return s;
}

/* Nearest node index along one dimension of a wrapped coordinate. */
static inline int64_t node_of(double x, double inv_h, int64_t M)
{
  int64_t i = (int64_t)floor(x * inv_h + 0.5);
  return ((i % M) + M) % M;
}

/* Accumulates the modes of an r2c output row into shell sums. kx: signed mode index along x (0 in
 * 1D); out[2*nj]: modes j = 0 .. nj-1 along the last dimension as (re, im) pairs (read as doubles:
 * fftw_complex is a C99 complex or a double[2] depending on the include order). */
static void shell_accumulate(double *sum, double *ksum, double *smax, int64_t *modes,
                             const double *out, int64_t nj, int64_t kx, int64_t M, double dk,
                             double N)
{
  for (int64_t j = 0; j < nj; j++) {
    const int64_t q = kx * kx + j * j;
    if (q == 0) continue;
    const int64_t s = shell_of(q);
    if (s > M / 2) continue;
    const int64_t w = (j == 0 || (M % 2 == 0 && j == M / 2)) ? 1 : 2;
    const double p = (out[2 * j] * out[2 * j] + out[2 * j + 1] * out[2 * j + 1]) / N;
    sum[s - 1] += (double)w * p;
    ksum[s - 1] += (double)w * dk * sqrt((double)q);
    modes[s - 1] += w;
    if (p > smax[s - 1]) smax[s - 1] = p;
  }
}

static PetscErrorCode sk_1d(SgmAoup s, int64_t M, double *sum, double *ksum, double *smax,
                            int64_t *modes)
{
  const double L = s->p.L, inv_h = (double)M / L;
  double *grid, *gsum;
  fftw_complex *out;
  PetscFunctionBeginUser;
  /* 1D grids are small: sum the counts on every rank and transform redundantly (no broadcast) */
  PetscCall(PetscCalloc2(M, &grid, M, &gsum));
  for (int64_t i = 0; i < s->part.nlocal; i++) grid[node_of(s->part.x[i], inv_h, M)] += 1.0;
  PetscCallMPI(MPI_Allreduce(grid, gsum, (int)M, MPI_DOUBLE, MPI_SUM, s->comm));
  out = fftw_alloc_complex((size_t)(M / 2 + 1));
  PetscCheck(out, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  fftw_plan plan = fftw_plan_dft_r2c_1d((int)M, gsum, out, FFTW_ESTIMATE);
  PetscCheck(plan, PETSC_COMM_SELF, PETSC_ERR_LIB, "FFTW: no 1D r2c plan of size %" PRId64, M);
  fftw_execute(plan);
  shell_accumulate(sum, ksum, smax, modes, (const double *)out, M / 2 + 1, 0, M, 2.0 * PETSC_PI / L,
                   (double)s->p.n);
  fftw_destroy_plan(plan);
  fftw_free(out);
  PetscCall(PetscFree2(grid, gsum));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The 2D plan, its in-place buffer and the row -> slab owner map depend only on (comm, M): they
 * are made on the first call and kept in o->sk_cache until sgm_observables_free (the plan and the
 * transform are those of a fresh FFTW_ESTIMATE plan on a buffer of the same alignment, so the
 * output does not change; only the per-frame planning and allocation go). */
typedef struct {
  MPI_Comm comm; /* a duplicate of the communicator of the plan */
  int size;
  int64_t M;
  ptrdiff_t alloc, local_n0, local_0; /* input slab: rows [local_0, local_0 + local_n0) of x */
  ptrdiff_t local_n1, local_1;        /* transposed output: modes j of [local_1, + local_n1) */
  double *field;
  fftw_plan plan;
  int *row_owner;
  double L;         /* box length of the shell geometry below */
  int32_t *code;    /* [local_n1 * M] per local mode: -1 (not in a shell) or 2 (s - 1) + (w - 1) */
  double *ksum_g;   /* [M/2] reduced sum of w |k| per shell (same every frame) */
  int64_t *modes_g; /* [M/2] reduced mode count per shell; NULL until the first reduction */
} SkCache;

void sgm_observables_sk_free(SgmObservables *o)
{
  SkCache *c = o->sk_cache;
  if (!c) return;
  if (c->plan) fftw_destroy_plan(c->plan);
  fftw_free(c->field);
  free(c->row_owner);
  free(c->code);
  free(c->ksum_g);
  free(c->modes_g);
  if (c->comm != MPI_COMM_NULL) MPI_Comm_free(&c->comm);
  free(c);
  o->sk_cache = NULL;
}

static PetscErrorCode sk_cache_get(SgmAoup s, int64_t M, SgmObservables *o, SkCache **out)
{
  SkCache *c = o->sk_cache;
  const int size = s->size;
  const int64_t nj = M / 2 + 1;
  PetscFunctionBeginUser;
  int same = MPI_UNEQUAL;
  if (c && c->M == M && c->size == size && c->L == s->p.L)
    PetscCallMPI(MPI_Comm_compare(c->comm, s->comm, &same));
  if (same == MPI_IDENT || same == MPI_CONGRUENT) {
    *out = c;
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  sgm_observables_sk_free(o);
  PetscCall(fftw_mpi_once());
  c = calloc(1, sizeof *c);
  PetscCheck(c, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  o->sk_cache = c;
  c->comm = MPI_COMM_NULL, c->size = size, c->M = M, c->L = s->p.L;
  PetscCallMPI(MPI_Comm_dup(s->comm, &c->comm)); /* kept to recognise the group on later calls */
  c->alloc = fftw_mpi_local_size_2d_transposed((ptrdiff_t)M, (ptrdiff_t)nj, s->comm, &c->local_n0,
                                               &c->local_0, &c->local_n1, &c->local_1);
  /* in place: the real field is padded to [local_n0][2 (M/2 + 1)]; the output is transposed,
   * [local_n1][M] (modes j = local_1 .. local_1 + local_n1 - 1 of the last dimension, every kx):
   * FFTW_MPI_TRANSPOSED_OUT skips the transpose back, one of the two all-to-all exchanges (the
   * shell sums do not care about the layout) */
  c->field = fftw_alloc_real((size_t)(2 * c->alloc + 2));
  PetscCheck(c->field, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  memset(c->field, 0, (size_t)(2 * c->alloc + 2) * sizeof(double));
  c->plan = fftw_mpi_plan_dft_r2c_2d((ptrdiff_t)M, (ptrdiff_t)M, c->field, (fftw_complex *)c->field,
                                     s->comm, FFTW_ESTIMATE | FFTW_MPI_TRANSPOSED_OUT);
  PetscCheck(c->plan, PETSC_COMM_SELF, PETSC_ERR_LIB, "FFTW: no 2D MPI r2c plan of size %" PRId64,
             M);
  /* row -> slab owner */
  long long mine[2] = {(long long)c->local_0, (long long)c->local_n0}, *all;
  PetscCall(PetscMalloc1(2 * size, &all));
  PetscCallMPI(MPI_Allgather(mine, 2, MPI_LONG_LONG, all, 2, MPI_LONG_LONG, s->comm));
  c->row_owner = malloc((size_t)M * sizeof *c->row_owner);
  PetscCheck(c->row_owner, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  for (int r = 0; r < size; r++)
    for (long long i = all[2 * r]; i < all[2 * r] + all[2 * r + 1]; i++) c->row_owner[i] = r;
  PetscCall(PetscFree(all));
  *out = c;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The shell of every local mode (c->code), and this rank's |k| sums and mode counts added to
 * ksum, modes (the same loop order as shell_accumulate, so the same sums). Once per cache. */
static PetscErrorCode sk_geometry(SkCache *c, double *ksum, int64_t *modes)
{
  const int64_t M = c->M;
  const double L = c->L;
  PetscFunctionBeginUser;
  c->code = malloc((size_t)(c->local_n1 * M + 1) * sizeof *c->code);
  PetscCheck(c->code, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  for (ptrdiff_t r = 0; r < c->local_n1; r++) {
    const int64_t j = (int64_t)(c->local_1 + r);
    for (int64_t i = 0; i < M; i++) {
      const int64_t kx = i <= M / 2 ? i : i - M, q = kx * kx + j * j;
      int32_t code = -1;
      if (q != 0) {
        const int64_t sh = shell_of(q);
        if (sh <= M / 2) {
          const int64_t w = (j == 0 || (M % 2 == 0 && j == M / 2)) ? 1 : 2;
          ksum[sh - 1] += (double)w * (2.0 * PETSC_PI / L) * sqrt((double)q);
          modes[sh - 1] += w;
          code = (int32_t)(2 * (sh - 1) + (w - 1));
        }
      }
      c->code[r * M + i] = code;
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The reduced |k| sums and mode counts are geometry: reduced once, kept, reused bit for bit. */
static PetscErrorCode sk_geometry_reduce(SgmAoup s, SkCache *c, int ns, double *ksum,
                                         int64_t *modes)
{
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, ksum, ns, MPI_DOUBLE, MPI_SUM, s->comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, modes, ns, MPI_INT64_T, MPI_SUM, s->comm));
  c->ksum_g = malloc((size_t)(ns + 1) * sizeof *c->ksum_g);
  c->modes_g = malloc((size_t)(ns + 1) * sizeof *c->modes_g);
  PetscCheck(c->ksum_g && c->modes_g, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  memcpy(c->ksum_g, ksum, (size_t)ns * sizeof *ksum);
  memcpy(c->modes_g, modes, (size_t)ns * sizeof *modes);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_sk_prepare(SgmAoup s, int M, SgmObservables *o)
{
  SkCache *c = NULL;
  const int ns = M / 2;
  double *ksum;
  int64_t *modes;
  PetscFunctionBeginUser;
  if (s->p.dim != 2 || M < 2) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sk_cache_get(s, M, o, &c));
  if (c->modes_g) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(PetscCalloc2(ns, &ksum, ns, &modes));
  if (!c->code) PetscCall(sk_geometry(c, ksum, modes));
  PetscCall(sk_geometry_reduce(s, c, ns, ksum, modes));
  PetscCall(PetscFree2(ksum, modes));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode sk_2d(SgmAoup s, int64_t M, SgmObservables *o, double *sum, double *ksum,
                            double *smax, int64_t *modes)
{
  const double L = s->p.L, inv_h = (double)M / L;
  const int size = s->size;
  const int64_t nj = M / 2 + 1, pad = 2 * nj;
  SkCache *c = NULL;
  PetscFunctionBeginUser;
  PetscCall(sk_cache_get(s, M, o, &c));
  const ptrdiff_t local_n0 = c->local_n0, local_0 = c->local_0;
  double *field = c->field;
  const int *row_owner = c->row_owner;
  memset(field, 0, (size_t)(2 * c->alloc + 2) * sizeof(double));

  int *sc, *sd, *rc, *rd, *cur;
  int64_t *sbuf, *rbuf;
  PetscCall(PetscCalloc5(size, &sc, size, &sd, size, &rc, size, &rd, size, &cur));
  const int64_t nlocal = s->part.nlocal;
  PetscCall(PetscMalloc1(nlocal + 1, &sbuf));
  for (int64_t i = 0; i < nlocal; i++) sc[row_owner[node_of(s->part.x[2 * i], inv_h, M)]]++;
  PetscCallMPI(MPI_Alltoall(sc, 1, MPI_INT, rc, 1, MPI_INT, s->comm));
  int64_t ts = 0, tr = 0;
  for (int r = 0; r < size; r++)
    sd[r] = (int)ts, cur[r] = (int)ts, ts += sc[r], rd[r] = (int)tr, tr += rc[r];
  for (int64_t i = 0; i < nlocal; i++) {
    const int64_t ix = node_of(s->part.x[2 * i], inv_h, M);
    const int64_t iy = node_of(s->part.x[2 * i + 1], inv_h, M);
    sbuf[cur[row_owner[ix]]++] = ix * M + iy;
  }
  PetscCall(PetscMalloc1(tr + 1, &rbuf));
  PetscCallMPI(MPI_Alltoallv(sbuf, sc, sd, MPI_INT64_T, rbuf, rc, rd, MPI_INT64_T, s->comm));
  for (int64_t q = 0; q < tr; q++) {
    const int64_t ix = rbuf[q] / M, iy = rbuf[q] % M;
    PetscCheck(ix >= local_0 && ix < local_0 + local_n0, PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "S(k): grid row %" PRId64 " sent to the wrong slab", ix);
    field[(ix - local_0) * pad + iy] += 1.0;
  }
  fftw_execute(c->plan);
  const double *out = field; /* in place, transposed: (re, im) pairs, rows of M modes kx */
  if (!c->code) PetscCall(sk_geometry(c, ksum, modes));
  /* |rho_k|^2 / N into the shell sums and maxima (what shell_accumulate does for S) */
  const double N = (double)s->p.n;
  for (ptrdiff_t r = 0; r < c->local_n1; r++) {
    const double *row = out + 2 * r * M;
    const int32_t *code = c->code + r * M;
    for (int64_t i = 0; i < M; i++) {
      if (code[i] < 0) continue;
      const int32_t sh = code[i] >> 1;
      const int64_t w = (code[i] & 1) + 1;
      const double p = (row[2 * i] * row[2 * i] + row[2 * i + 1] * row[2 * i + 1]) / N;
      sum[sh] += (double)w * p;
      if (p > smax[sh]) smax[sh] = p;
    }
  }
  PetscCall(PetscFree(rbuf));
  PetscCall(PetscFree(sbuf));
  PetscCall(PetscFree5(sc, sd, rc, rd, cur));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_sk(SgmAoup s, int M, SgmObservables *o)
{
  const int ns = M / 2;
  double *sum, *ksum, *smax;
  int64_t *modes;
  PetscFunctionBeginUser;
  PetscCheck(M >= 2, s->comm, SGM_ERR_USER, "analysis: sk_grid = %d must be >= 2 (or 0 = auto)", M);
  PetscCheck(s->p.dim == 2 || s->p.dim == 1, s->comm, PETSC_ERR_SUP, "S(k) in 1D or 2D only");
  PetscCall(PetscCalloc4(ns, &sum, ns, &ksum, ns, &smax, ns, &modes));
  if (s->p.dim == 1)
    PetscCall(sk_1d(s, M, sum, ksum, smax, modes));
  else
    PetscCall(sk_2d(s, M, o, sum, ksum, smax, modes));
  if (s->p.dim == 2) {
    SkCache *c = o->sk_cache;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, sum, ns, MPI_DOUBLE, MPI_SUM, s->comm));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, smax, ns, MPI_DOUBLE, MPI_MAX, s->comm));
    if (!c->modes_g)
      PetscCall(sk_geometry_reduce(s, c, ns, ksum, modes));
    else {
      memcpy(ksum, c->ksum_g, (size_t)ns * sizeof *ksum);
      memcpy(modes, c->modes_g, (size_t)ns * sizeof *modes);
    }
  }
  void *q[4] = {o->sk_k, o->sk_S, o->sk_max, o->sk_modes};
  for (int t = 0; t < 4; t++) {
    q[t] = realloc(q[t], (size_t)(ns ? ns : 1) * 8);
    PetscCheck(q[t], PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  }
  o->sk_k = q[0], o->sk_S = q[1], o->sk_max = q[2], o->sk_modes = q[3];
  for (int t = 0; t < ns; t++) {
    o->sk_modes[t] = modes[t];
    o->sk_k[t] = modes[t] ? ksum[t] / (double)modes[t] : 2.0 * PETSC_PI / s->p.L * (t + 1);
    o->sk_S[t] = modes[t] ? sum[t] / (double)modes[t] : 0.0;
    o->sk_max[t] = smax[t];
  }
  o->nshell = ns;
  o->sk_grid = M;
  PetscCall(PetscFree4(sum, ksum, smax, modes));
  PetscFunctionReturn(PETSC_SUCCESS);
}
