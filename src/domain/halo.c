/* Halo exchange and migration on the rank grid of a SgmDecomp.
 *
 * One face step (dimension k, both directions at once) is a round of nonblocking count messages
 * then a round of payloads with the two neighbours along k (migration, ghost exchange); the
 * forward of a field along a recorded pattern needs no counts and can be left in flight
 * (sgm_halo_forward_begin/end) while the caller works on locals. With one rank along k the
 * neighbour is this rank and the payload is copied. Payloads are flat double records so one set of
 * buffers serves positions, migrating particles and forwarded fields; ids travel bit-cast inside a
 * double (memcpy). Buffers persist in the SgmHalo and only grow.
 */
#include "sgm/halo.h"
#include "sgm/core.h"

#include <stdlib.h>
#include <string.h>

struct SgmHalo_ {
  MPI_Comm comm;
  SgmDecomp d;
  int rank, coords[2], nbr[2][2]; /* nbr[k][0] left, nbr[k][1] right */
  double lo[2], hi[2], w;
  double *sbuf[2], *rbuf;
  size_t scap[2], rcap;
  /* recorded exchange pattern: per face step s = 2k + dir */
  int64_t *slist[4];
  size_t slcap[4];
  int64_t nsend[4], nrecv[4], roff[4];
  int nsteps;
  int64_t nmsg, nbytes;
  /* a forward in flight (sgm_halo_forward_begin): the dimension whose messages are posted (-1:
   * none), the field, its requests */
  int fwd_k, fwd_ncomp;
  double *fwd_field;
  MPI_Request req[4];
  /* a max-reduction carried by the next forward (sgm_halo_forward_reduce): the running max, what
   * was sent and received per direction, their requests */
  int red_on;
  double red[2], red_s[2][2], red_r[2][2];
  MPI_Request rreq[4];
};

PetscErrorCode sgm_particles_reserve(SgmParticles *p, int64_t n)
{
  PetscFunctionBeginUser;
  if (n <= p->cap) PetscFunctionReturn(PETSC_SUCCESS);
  int64_t c = p->cap ? p->cap : 64;
  while (c < n) c *= 2;
  size_t dd = (size_t)c * (size_t)p->dim * sizeof(double);
  void *a;
  a = realloc(p->id, (size_t)c * sizeof(int64_t));
  PetscCheck(a, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  p->id = a;
  double **arr[4] = {&p->x, &p->g, &p->xb, &p->f};
  for (int i = 0; i < 4; i++) {
    a = realloc(*arr[i], dd);
    PetscCheck(a, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
    *arr[i] = a;
  }
  p->cap = c;
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_particles_free(SgmParticles *p)
{
  free(p->id), free(p->x), free(p->g), free(p->xb), free(p->f);
  int dim = p->dim;
  memset(p, 0, sizeof(*p));
  p->dim = dim;
}

static PetscErrorCode grow(double **b, size_t *cap, size_t need)
{
  PetscFunctionBeginUser;
  if (need <= *cap) PetscFunctionReturn(PETSC_SUCCESS);
  size_t n = *cap ? *cap : 1024;
  while (n < need) n *= 2;
  void *q = realloc(*b, n * sizeof(double));
  PetscCheck(q, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  *b = q;
  *cap = n;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_create(MPI_Comm comm, const SgmDecomp *d, double w, SgmHalo *hout)
{
  SgmHalo h;
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCall(PetscCalloc1(1, &h));
  h->comm = comm;
  h->d = *d;
  h->w = w;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  h->rank = rank;
  h->fwd_k = -1;
  for (int i = 0; i < 4; i++) h->req[i] = h->rreq[i] = MPI_REQUEST_NULL;
  sgm_decomp_coords(d, rank, h->coords);
  sgm_decomp_patch(d, rank, h->lo, h->hi);
  for (int k = 0; k < 2; k++)
    for (int s = 0; s < 2; s++) {
      int c[2] = {h->coords[0], h->coords[1]};
      c[k] += s ? 1 : -1;
      h->nbr[k][s] = sgm_decomp_rank(d, c);
    }
  *hout = h;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_set_decomp(SgmHalo h, const SgmDecomp *d)
{
  PetscFunctionBeginUser;
  PetscCheck(h->fwd_k < 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "a halo forward is in flight");
  PetscCheck(d->dims[0] == h->d.dims[0] && d->dims[1] == h->d.dims[1], PETSC_COMM_SELF,
             PETSC_ERR_ARG_INCOMP, "the rank grid changed");
  h->d = *d;
  sgm_decomp_patch(d, h->rank, h->lo, h->hi);
  h->nsteps = 0; /* the recorded pattern is stale: an exchange must come before a forward */
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_destroy(SgmHalo *hp)
{
  PetscFunctionBeginUser;
  if (!hp || !*hp) PetscFunctionReturn(PETSC_SUCCESS);
  SgmHalo h = *hp;
  free(h->sbuf[0]), free(h->sbuf[1]), free(h->rbuf);
  for (int s = 0; s < 4; s++) free(h->slist[s]);
  PetscCall(PetscFree(h));
  *hp = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_halo_stats(SgmHalo h, int64_t *nmsg, int64_t *nbytes)
{
  *nmsg = h->nmsg;
  *nbytes = h->nbytes;
}

/* Face step along k, both directions at once: sends sbuf[dir] (ns[dir] records of rec doubles)
 * to nbr[k][dir] and receives the opposite neighbour's records into rbuf, those travelling
 * downwards (dir 0) first, nr[0] of them, then nr[1] travelling upwards. Counts then payloads,
 * each as one round of nonblocking messages; dir 0 = towards lower coordinates. With one rank
 * along k the records are copied. */
static PetscErrorCode face_exchange(SgmHalo h, int k, const int64_t ns[2], int rec, int64_t nr[2])
{
  MPI_Request rq[4];
  PetscFunctionBeginUser;
  if (h->nbr[k][0] == h->rank) {
    PetscCall(grow(&h->rbuf, &h->rcap, (size_t)((ns[0] + ns[1]) * rec) + 1));
    for (int dir = 0; dir < 2; dir++) {
      if (ns[dir])
        memcpy(h->rbuf + (dir ? ns[0] * rec : 0), h->sbuf[dir],
               (size_t)(ns[dir] * rec) * sizeof(double));
      nr[dir] = ns[dir];
    }
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  long long cs[2] = {ns[0], ns[1]}, cr[2] = {0, 0};
  for (int dir = 0; dir < 2; dir++) {
    PetscCallMPI(MPI_Irecv(&cr[dir], 1, MPI_LONG_LONG, h->nbr[k][1 - dir], 100 + dir, h->comm,
                           &rq[2 * dir]));
    PetscCallMPI(MPI_Isend(&cs[dir], 1, MPI_LONG_LONG, h->nbr[k][dir], 100 + dir, h->comm,
                           &rq[2 * dir + 1]));
  }
  PetscCallMPI(MPI_Waitall(4, rq, MPI_STATUSES_IGNORE));
  PetscCheck((cs[0] + cs[1]) * rec < INT32_MAX && (cr[0] + cr[1]) * rec < INT32_MAX,
             PETSC_COMM_SELF, PETSC_ERR_SUP, "halo message too large");
  PetscCall(grow(&h->rbuf, &h->rcap, (size_t)((cr[0] + cr[1]) * rec) + 1));
  for (int dir = 0; dir < 2; dir++) {
    PetscCallMPI(MPI_Irecv(h->rbuf + (dir ? cr[0] * rec : 0), (int)(cr[dir] * rec), MPI_DOUBLE,
                           h->nbr[k][1 - dir], 200 + dir, h->comm, &rq[2 * dir]));
    PetscCallMPI(MPI_Isend(h->sbuf[dir], (int)(cs[dir] * rec), MPI_DOUBLE, h->nbr[k][dir],
                           200 + dir, h->comm, &rq[2 * dir + 1]));
    h->nmsg += 2;
    h->nbytes += (int64_t)(cs[dir] * rec) * (int64_t)sizeof(double);
    nr[dir] = cr[dir];
  }
  PetscCallMPI(MPI_Waitall(4, rq, MPI_STATUSES_IGNORE));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static inline double id_to_double(int64_t id)
{
  double v;
  memcpy(&v, &id, sizeof v);
  return v;
}

static inline int64_t double_to_id(double v)
{
  int64_t id;
  memcpy(&id, &v, sizeof id);
  return id;
}

/* Rank coordinate along k that owns wrapped coordinate xk. */
static inline int owner_coord(const SgmDecomp *d, int k, double xk)
{
  return sgm_decomp_coord_of_cell(d, k, sgm_decomp_cell(d, k, xk));
}

PetscErrorCode sgm_halo_migrate(SgmHalo h, SgmParticles *p)
{
  const int dim = p->dim, rec = 1 + 2 * dim;
  PetscFunctionBeginUser;
  p->nghost = 0;
  for (int k = 0; k < dim; k++) {
    const int np = h->d.dims[k], me = h->coords[k];
    if (np == 1) continue;
    /* the patch as a range of x * ncell / L: floor of it in [c0, c1) <=> owned (the coordinates
     * at the ends of the box own the clamped values beyond; a NaN fails and takes the slow path,
     * which gives it to coordinate 0 as sgm_decomp_cell does) */
    int64_t c0, nc;
    sgm_decomp_range(&h->d, k, me, &c0, &nc);
    const double scale = (double)h->d.ncell[k] / h->d.L[k];
    const double vlo = me == 0 ? -INFINITY : (double)c0;
    const double vhi = me == np - 1 ? INFINITY : (double)(c0 + nc);
    int64_t check_from = 0; /* locals before this index are known to be owned along k */
    for (int round = 0;; round++) {
      int64_t ns[2] = {0, 0}, nr[2];
      PetscCall(grow(&h->sbuf[0], &h->scap[0], 64));
      PetscCall(grow(&h->sbuf[1], &h->scap[1], 64));
      for (int64_t i = check_from; i < p->nlocal;) {
        const double v = p->x[i * dim + k] * scale;
        if (v >= vlo && v < vhi) {
          i++;
          continue;
        }
        int oc = owner_coord(&h->d, k, p->x[i * dim + k]);
        if (oc == me) {
          i++;
          continue;
        }
        int delta = ((oc - me) % np + np) % np;
        int dir = (2 * delta <= np) ? 1 : 0; /* shorter way round; ties go up */
        PetscCall(grow(&h->sbuf[dir], &h->scap[dir], (size_t)((ns[dir] + 1) * rec)));
        double *r = h->sbuf[dir] + ns[dir] * rec;
        r[0] = id_to_double(p->id[i]);
        for (int c = 0; c < dim; c++)
          r[1 + c] = p->x[i * dim + c], r[1 + dim + c] = p->g[i * dim + c];
        ns[dir]++;
        /* remove i: move the last local into its slot (order is irrelevant to the physics) */
        int64_t last = --p->nlocal;
        if (i != last) {
          p->id[i] = p->id[last];
          for (int c = 0; c < dim; c++) {
            p->x[i * dim + c] = p->x[last * dim + c];
            p->g[i * dim + c] = p->g[last * dim + c];
          }
        }
      }
      PetscCall(face_exchange(h, k, ns, rec, nr));
      check_from = p->nlocal;
      PetscCall(sgm_particles_reserve(p, p->nlocal + nr[0] + nr[1]));
      for (int64_t j = 0; j < nr[0] + nr[1]; j++) {
        const double *r = h->rbuf + j * rec;
        int64_t i = p->nlocal++;
        p->id[i] = double_to_id(r[0]);
        for (int c = 0; c < dim; c++)
          p->x[i * dim + c] = r[1 + c], p->g[i * dim + c] = r[1 + dim + c];
      }
      /* with at most 3 ranks along k every patch is a neighbour: one round places everything */
      if (np <= 3) break;
      /* only the particles just received can be misplaced */
      int64_t misplaced = 0, total;
      for (int64_t i = check_from; i < p->nlocal; i++)
        if (owner_coord(&h->d, k, p->x[i * dim + k]) != me) misplaced++;
      PetscCallMPI(MPI_Allreduce(&misplaced, &total, 1, MPIU_INT64, MPI_SUM, h->comm));
      if (!total) break;
      PetscCheck(round < 4 * np + 4, h->comm, PETSC_ERR_PLIB, "migration did not converge");
    }
  }
  for (int64_t i = 0; i < p->nlocal * dim; i++) p->xb[i] = p->x[i];
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_exchange(SgmHalo h, SgmParticles *p)
{
  const int dim = p->dim, rec = 1 + 2 * dim;
  PetscFunctionBeginUser;
  PetscCheck(h->fwd_k < 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "a halo forward is in flight");
  p->nghost = 0;
  for (int64_t i = 0; i < p->nlocal * dim; i++) p->xb[i] = p->x[i];
  h->nsteps = 2 * dim;
  for (int k = 0; k < dim; k++) {
    const int np = h->d.dims[k], me = h->coords[k];
    const double L = h->d.L[k];
    /* both directions select from the same candidates: locals and the ghosts of earlier
     * dimensions (corners) */
    const int64_t ncand = p->nlocal + p->nghost;
    int64_t ns[2], nr[2];
    for (int dir = 0; dir < 2; dir++) {
      const int s = 2 * k + dir;
      /* crossing the periodic boundary shifts the image by +L (going down) or -L (going up) */
      const double shift = (dir == 0 && me == 0) ? L : (dir == 1 && me == np - 1) ? -L : 0.0;
      const double edge = dir == 0 ? h->lo[k] + h->w : h->hi[k] - h->w;
      int64_t n = 0;
      if ((size_t)ncand > h->slcap[s]) {
        size_t nc = h->slcap[s] ? 2 * h->slcap[s] : 256;
        while (nc < (size_t)ncand) nc *= 2;
        void *q = realloc(h->slist[s], nc * sizeof(int64_t));
        PetscCheck(q, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
        h->slist[s] = q;
        h->slcap[s] = nc;
      }
      int64_t *sl = h->slist[s];
      for (int64_t i = 0; i < ncand; i++) { /* appended without a branch */
        const double xk = p->xb[i * dim + k];
        sl[n] = i;
        n += dir == 0 ? (xk < edge) : (xk >= edge);
      }
      PetscCall(grow(&h->sbuf[dir], &h->scap[dir], (size_t)(n * rec) + 1));
      for (int64_t j = 0; j < n; j++) {
        int64_t i = sl[j];
        double *r = h->sbuf[dir] + j * rec;
        r[0] = id_to_double(p->id[i]);
        for (int c = 0; c < dim; c++) {
          r[1 + c] = p->x[i * dim + c];
          r[1 + dim + c] = p->xb[i * dim + c] + (c == k ? shift : 0.0);
        }
      }
      ns[dir] = h->nsend[s] = n;
    }
    PetscCall(face_exchange(h, k, ns, rec, nr));
    PetscCall(sgm_particles_reserve(p, p->nlocal + p->nghost + nr[0] + nr[1]));
    for (int dir = 0; dir < 2; dir++) {
      const int s = 2 * k + dir;
      h->nrecv[s] = nr[dir];
      h->roff[s] = p->nlocal + p->nghost;
      for (int64_t j = 0; j < nr[dir]; j++) {
        const double *r = h->rbuf + (j + (dir ? nr[0] : 0)) * rec;
        int64_t i = p->nlocal + p->nghost++;
        p->id[i] = double_to_id(r[0]);
        for (int c = 0; c < dim; c++)
          p->x[i * dim + c] = r[1 + c], p->xb[i * dim + c] = r[1 + dim + c];
      }
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Forward along dimension k: both directions at once. With one rank along k the ghost rows are
 * copied from the field; otherwise the receives go straight into the ghost rows (their counts are
 * known from the exchange, so no count message) and the sends from sbuf[dir]; the requests are
 * left in h->req for fwd_wait. */
static PetscErrorCode fwd_post(SgmHalo h, int k, double *field, int ncomp)
{
  PetscFunctionBeginUser;
  for (int dir = 0; dir < 2; dir++) {
    const int s = 2 * k + dir, to = h->nbr[k][dir], from = h->nbr[k][1 - dir];
    const int64_t ns = h->nsend[s], nr = h->nrecv[s];
    double *dst = field + h->roff[s] * ncomp;
    if (to == h->rank) {
      PetscCheck(nr == ns, PETSC_COMM_SELF, PETSC_ERR_PLIB, "halo pattern changed");
      for (int64_t j = 0; j < ns; j++)
        memcpy(dst + j * ncomp, field + h->slist[s][j] * ncomp, (size_t)ncomp * sizeof(double));
      continue;
    }
    PetscCheck(ns * ncomp < INT32_MAX && nr * ncomp < INT32_MAX, PETSC_COMM_SELF, PETSC_ERR_SUP,
               "halo message too large");
    PetscCallMPI(
        MPI_Irecv(dst, (int)(nr * ncomp), MPI_DOUBLE, from, 300 + dir, h->comm, &h->req[2 * dir]));
    PetscCall(grow(&h->sbuf[dir], &h->scap[dir], (size_t)(ns * ncomp) + 1));
    double *b = h->sbuf[dir];
    if (ncomp == 2)
      for (int64_t j = 0; j < ns; j++) {
        const int64_t i = h->slist[s][j];
        b[2 * j] = field[2 * i], b[2 * j + 1] = field[2 * i + 1];
      }
    else
      for (int64_t j = 0; j < ns; j++)
        memcpy(b + j * ncomp, field + h->slist[s][j] * ncomp, (size_t)ncomp * sizeof(double));
    PetscCallMPI(
        MPI_Isend(b, (int)(ns * ncomp), MPI_DOUBLE, to, 300 + dir, h->comm, &h->req[2 * dir + 1]));
    if (h->red_on) { /* the running max so far (earlier dimensions' included), 16 bytes */
      h->red_s[dir][0] = h->red[0], h->red_s[dir][1] = h->red[1];
      PetscCallMPI(
          MPI_Irecv(h->red_r[dir], 2, MPI_DOUBLE, from, 310 + dir, h->comm, &h->rreq[2 * dir]));
      PetscCallMPI(
          MPI_Isend(h->red_s[dir], 2, MPI_DOUBLE, to, 310 + dir, h->comm, &h->rreq[2 * dir + 1]));
    }
    h->nmsg++;
    h->nbytes += ns * ncomp * (int64_t)sizeof(double);
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Completes the requests of fwd_post(k) and checks the received counts against the pattern. */
static PetscErrorCode fwd_wait(SgmHalo h, int k, int ncomp)
{
  MPI_Status st[4];
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Waitall(4, h->req, st));
  if (h->red_on) {
    PetscCallMPI(MPI_Waitall(4, h->rreq, MPI_STATUSES_IGNORE));
    for (int dir = 0; dir < 2; dir++)
      if (h->nbr[k][dir] != h->rank)
        for (int i = 0; i < 2; i++) h->red[i] = fmax(h->red[i], h->red_r[dir][i]);
  }
  for (int dir = 0; dir < 2; dir++) {
    if (h->nbr[k][dir] == h->rank) continue;
    int cnt;
    PetscCallMPI(MPI_Get_count(&st[2 * dir], MPI_DOUBLE, &cnt));
    PetscCheck(cnt == h->nrecv[2 * k + dir] * ncomp, PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "halo pattern changed");
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_forward_begin(SgmHalo h, double *field, int ncomp)
{
  PetscFunctionBeginUser;
  PetscCheck(h->fwd_k < 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "a halo forward is in flight");
  PetscCheck(h->nsteps > 0, PETSC_COMM_SELF, PETSC_ERR_ORDER,
             "halo forward without a recorded pattern (exchange first)");
  for (int k = 0; k < h->nsteps / 2; k++) {
    PetscCall(fwd_post(h, k, field, ncomp));
    if (h->d.dims[k] > 1) { /* messages posted: the later dimensions forward what they bring */
      h->fwd_k = k, h->fwd_field = field, h->fwd_ncomp = ncomp;
      break;
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_forward_end(SgmHalo h)
{
  PetscFunctionBeginUser;
  if (h->fwd_k < 0) PetscFunctionReturn(PETSC_SUCCESS);
  const int k0 = h->fwd_k, ncomp = h->fwd_ncomp;
  double *field = h->fwd_field;
  h->fwd_k = -1;
  PetscCall(fwd_wait(h, k0, ncomp));
  for (int k = k0 + 1; k < h->nsteps / 2; k++) {
    PetscCall(fwd_post(h, k, field, ncomp));
    if (h->d.dims[k] > 1) PetscCall(fwd_wait(h, k, ncomp));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

int sgm_halo_reduce_covers_all(SgmHalo h)
{
  for (int k = 0; k < h->d.dim; k++)
    if (h->d.dims[k] > 3) return 0;
  return 1;
}

PetscErrorCode sgm_halo_forward_reduce(SgmHalo h, const double in[2])
{
  PetscFunctionBeginUser;
  PetscCheck(h->fwd_k < 0, PETSC_COMM_SELF, PETSC_ERR_ORDER, "a halo forward is in flight");
  PetscCheck(sgm_halo_reduce_covers_all(h), PETSC_COMM_SELF, PETSC_ERR_SUP,
             "the halo's neighbours are not all ranks: use an allreduce");
  h->red_on = 1;
  h->red[0] = in[0], h->red[1] = in[1];
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_forward_reduced(SgmHalo h, double out[2])
{
  PetscFunctionBeginUser;
  PetscCheck(h->red_on && h->fwd_k < 0, PETSC_COMM_SELF, PETSC_ERR_ORDER,
             "no completed forward carried a reduction");
  out[0] = h->red[0], out[1] = h->red[1];
  h->red_on = 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_forward(SgmHalo h, SgmParticles *p, double *field, int ncomp)
{
  PetscFunctionBeginUser;
  (void)p;
  PetscCall(sgm_halo_forward_begin(h, field, ncomp));
  PetscCall(sgm_halo_forward_end(h));
  PetscFunctionReturn(PETSC_SUCCESS);
}
