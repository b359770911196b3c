/* Halo exchange and migration on the rank grid of a SgmDecomp.
 *
 * One face step (dimension k, direction -1 then +1) is a pair of MPI_Sendrecv calls with the two
 * neighbours along k (counts, then payload); with one rank along k the neighbour is this rank and
 * the payload is copied. Payloads are flat double records so one set of buffers serves positions,
 * migrating particles and forwarded fields; ids travel bit-cast inside a double (memcpy).
 * Buffers persist in the SgmHalo and only grow.
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

/* Sends sbuf[dir] (ns records of rec doubles) to nbr[k][dir] and receives from the opposite
 * neighbour into rbuf; *nr receives the record count. dir 0 = towards lower coordinates. */
static PetscErrorCode face_sendrecv(SgmHalo h, int k, int dir, int64_t ns, int rec, int64_t *nr)
{
  int to = h->nbr[k][dir], from = h->nbr[k][1 - dir];
  PetscFunctionBeginUser;
  if (to == h->rank) {
    PetscCall(grow(&h->rbuf, &h->rcap, (size_t)(ns * rec)));
    if (ns) memcpy(h->rbuf, h->sbuf[dir], (size_t)(ns * rec) * sizeof(double));
    *nr = ns;
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  long long cs = ns, cr = 0;
  PetscCallMPI(MPI_Sendrecv(&cs, 1, MPI_LONG_LONG, to, 100 + dir, &cr, 1, MPI_LONG_LONG, from,
                            100 + dir, h->comm, MPI_STATUS_IGNORE));
  PetscCall(grow(&h->rbuf, &h->rcap, (size_t)(cr * rec) + 1));
  PetscCheck(cs * rec < INT32_MAX && cr * rec < INT32_MAX, PETSC_COMM_SELF, PETSC_ERR_SUP,
             "halo message too large");
  PetscCallMPI(MPI_Sendrecv(h->sbuf[dir], (int)(cs * rec), MPI_DOUBLE, to, 200 + dir, h->rbuf,
                            (int)(cr * rec), MPI_DOUBLE, from, 200 + dir, h->comm,
                            MPI_STATUS_IGNORE));
  h->nmsg += 2;
  h->nbytes += (int64_t)(cs * rec) * (int64_t)sizeof(double);
  *nr = cr;
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
    for (int round = 0;; round++) {
      int64_t ns[2] = {0, 0};
      PetscCall(grow(&h->sbuf[0], &h->scap[0], 64));
      PetscCall(grow(&h->sbuf[1], &h->scap[1], 64));
      for (int64_t i = 0; i < p->nlocal;) {
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
      for (int dir = 0; dir < 2; dir++) {
        int64_t nr;
        PetscCall(face_sendrecv(h, k, dir, ns[dir], rec, &nr));
        PetscCall(sgm_particles_reserve(p, p->nlocal + nr));
        for (int64_t j = 0; j < nr; j++) {
          const double *r = h->rbuf + j * rec;
          int64_t i = p->nlocal++;
          p->id[i] = double_to_id(r[0]);
          for (int c = 0; c < dim; c++)
            p->x[i * dim + c] = r[1 + c], p->g[i * dim + c] = r[1 + dim + c];
        }
      }
      int64_t misplaced = 0, total;
      for (int64_t i = 0; i < p->nlocal; i++)
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
  p->nghost = 0;
  for (int64_t i = 0; i < p->nlocal * dim; i++) p->xb[i] = p->x[i];
  h->nsteps = 2 * dim;
  for (int k = 0; k < dim; k++) {
    const int np = h->d.dims[k], me = h->coords[k];
    const double L = h->d.L[k];
    const int64_t ncand = p->nlocal + p->nghost;
    for (int dir = 0; dir < 2; dir++) {
      const int s = 2 * k + dir;
      /* crossing the periodic boundary shifts the image by +L (going down) or -L (going up) */
      const double shift = (dir == 0 && me == 0) ? L : (dir == 1 && me == np - 1) ? -L : 0.0;
      int64_t ns = 0;
      for (int64_t i = 0; i < ncand; i++) {
        double xk = p->xb[i * dim + k];
        int sel = dir == 0 ? (xk < h->lo[k] + h->w) : (xk >= h->hi[k] - h->w);
        if (!sel) continue;
        if ((size_t)ns + 1 > h->slcap[s]) {
          size_t nc = h->slcap[s] ? 2 * h->slcap[s] : 256;
          void *q = realloc(h->slist[s], nc * sizeof(int64_t));
          PetscCheck(q, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
          h->slist[s] = q;
          h->slcap[s] = nc;
        }
        h->slist[s][ns++] = i;
      }
      PetscCall(grow(&h->sbuf[dir], &h->scap[dir], (size_t)(ns * rec) + 1));
      for (int64_t j = 0; j < ns; j++) {
        int64_t i = h->slist[s][j];
        double *r = h->sbuf[dir] + j * rec;
        r[0] = id_to_double(p->id[i]);
        for (int c = 0; c < dim; c++) {
          r[1 + c] = p->x[i * dim + c];
          r[1 + dim + c] = p->xb[i * dim + c] + (c == k ? shift : 0.0);
        }
      }
      int64_t nr;
      PetscCall(face_sendrecv(h, k, dir, ns, rec, &nr));
      h->nsend[s] = ns;
      h->nrecv[s] = nr;
      h->roff[s] = p->nlocal + p->nghost;
      PetscCall(sgm_particles_reserve(p, p->nlocal + p->nghost + nr));
      for (int64_t j = 0; j < nr; j++) {
        const double *r = h->rbuf + j * rec;
        int64_t i = p->nlocal + p->nghost++;
        p->id[i] = double_to_id(r[0]);
        for (int c = 0; c < dim; c++)
          p->x[i * dim + c] = r[1 + c], p->xb[i * dim + c] = r[1 + dim + c];
      }
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_halo_forward(SgmHalo h, SgmParticles *p, double *field, int ncomp)
{
  PetscFunctionBeginUser;
  for (int s = 0; s < h->nsteps; s++) {
    const int k = s / 2, dir = s % 2;
    const int64_t ns = h->nsend[s];
    PetscCall(grow(&h->sbuf[dir], &h->scap[dir], (size_t)(ns * ncomp) + 1));
    for (int64_t j = 0; j < ns; j++)
      memcpy(h->sbuf[dir] + j * ncomp, field + h->slist[s][j] * ncomp,
             (size_t)ncomp * sizeof(double));
    int64_t nr;
    PetscCall(face_sendrecv(h, k, dir, ns, ncomp, &nr));
    PetscCheck(nr == h->nrecv[s], PETSC_COMM_SELF, PETSC_ERR_PLIB, "halo pattern changed");
    if (nr) memcpy(field + h->roff[s] * ncomp, h->rbuf, (size_t)(nr * ncomp) * sizeof(double));
  }
  (void)p;
  PetscFunctionReturn(PETSC_SUCCESS);
}
