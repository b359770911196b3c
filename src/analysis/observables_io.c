/* The /observables group of trajectory.h5: one row per analysed frame (docs/formats.md).
 *
 * Owns: the HDF5 layout of the observables. Every result is global and already known on every
 * rank, so rank 0 writes the data (independent MPI-IO, no collective transfer) while the file is
 * opened with the MPI-IO driver and every metadata call (create, extend, attributes) is made by
 * all ranks: errors of those are raised on every rank alike (a rank-0-only serial write would need
 * its error broadcast by hand) and the writer follows the same open-extend-write-close rhythm as
 * the H5MD frames (the simulate stage shares one open per frame between both), so the file is
 * consistent after each frame. Datasets are extensible along the frame axis and resized to frame +
 * 1 on each write, which also drops rows beyond a restart point. Per-particle arrays (optional) are
 * first moved to the id blocks of the ranks (one Alltoallv) and written as contiguous hyperslabs in
 * id order, like the H5MD positions.
 */
#include "sgm/observables.h"
#include "sgm/core.h"
#include "../io/io_internal.h"

#include <inttypes.h>
#include <hdf5.h>
#include <string.h>

static PetscErrorCode open_group(hid_t parent, const char *name, hid_t *g)
{
  PetscFunctionBeginUser;
  htri_t e = H5Lexists(parent, name, H5P_DEFAULT);
  SgmCallH5(e);
  if (e)
    SgmCallH5H(*g, H5Gopen2(parent, name, H5P_DEFAULT));
  else
    SgmCallH5H(*g, H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Rows [frame0, frame0 + nrows) of the per-frame dataset `name`: shape [T] when ncol == 0, else
 * [T][ncol]; rows holds nrows x max(ncol, 1) values. */
static PetscErrorCode put_rows(hid_t parent, const char *name, hid_t type, int64_t frame0,
                               int64_t nrows, int64_t ncol, const void *rows, int rank)
{
  hid_t d;
  const int nd = ncol ? 2 : 1;
  PetscFunctionBeginUser;
  htri_t e = H5Lexists(parent, name, H5P_DEFAULT);
  SgmCallH5(e);
  if (!e) {
    hsize_t dims[2] = {0, (hsize_t)ncol}, maxd[2] = {H5S_UNLIMITED, (hsize_t)ncol};
    hsize_t chunk[2] = {ncol ? 16 : 256, ncol ? (hsize_t)ncol : 1};
    hid_t sp, pl;
    SgmCallH5H(sp, H5Screate_simple(nd, dims, maxd));
    SgmCallH5H(pl, H5Pcreate(H5P_DATASET_CREATE));
    SgmCallH5(H5Pset_chunk(pl, nd, chunk));
    SgmCallH5H(d, H5Dcreate2(parent, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
    SgmCallH5(H5Pclose(pl));
    SgmCallH5(H5Sclose(sp));
  } else {
    SgmCallH5H(d, H5Dopen2(parent, name, H5P_DEFAULT));
  }
  hsize_t ext[2] = {(hsize_t)(frame0 + nrows), (hsize_t)ncol}, off[2] = {(hsize_t)frame0, 0};
  hsize_t cnt[2] = {(hsize_t)nrows, (hsize_t)ncol};
  SgmCallH5(H5Dset_extent(d, ext));
  /* global values, known on every rank: rank 0 writes them alone (independent MPI-IO) */
  PetscCall(sgm_h5_write_root(d, type, nd, off, cnt, rank == 0, rows));
  SgmCallH5(H5Dclose(d));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* A fixed 1D dataset [n] (created once, rewritten each frame with the same values). */
static PetscErrorCode put_fixed(hid_t parent, const char *name, hid_t type, int64_t n,
                                const void *v, int rank)
{
  hid_t d, fs;
  hsize_t dims[1] = {(hsize_t)n}, off[1] = {0};
  PetscFunctionBeginUser;
  htri_t e = H5Lexists(parent, name, H5P_DEFAULT);
  SgmCallH5(e);
  if (e) {
    SgmCallH5H(d, H5Dopen2(parent, name, H5P_DEFAULT));
    SgmCallH5H(fs, H5Dget_space(d));
    hsize_t cur[1];
    SgmCallH5(H5Sget_simple_extent_dims(fs, cur, NULL));
    PetscCheck(cur[0] == dims[0], PETSC_COMM_SELF, SGM_ERR_USER,
               "observables: dataset %s has %llu entries, this run writes %llu (different "
               "[analysis] settings than the file?)",
               name, (unsigned long long)cur[0], (unsigned long long)dims[0]);
  } else {
    SgmCallH5H(fs, H5Screate_simple(1, dims, NULL));
    SgmCallH5H(d, H5Dcreate2(parent, name, type, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  }
  PetscCall(sgm_h5_write_root(d, type, 1, off, dims, rank == 0, v));
  SgmCallH5(H5Sclose(fs));
  SgmCallH5(H5Dclose(d));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Per-particle rows: [T][N] int64 in global-id order; this rank writes columns [start, start +
 * count) of rows [frame0, frame0 + nrows) from v[nrows][count] (every rank selects its block: one
 * collective write). */
static PetscErrorCode put_block(hid_t parent, const char *name, int64_t frame0, int64_t nrows,
                                int64_t n, int64_t start, int64_t count, const int64_t *v)
{
  hid_t d;
  PetscFunctionBeginUser;
  htri_t e = H5Lexists(parent, name, H5P_DEFAULT);
  SgmCallH5(e);
  if (!e) {
    hsize_t dims[2] = {0, (hsize_t)n}, maxd[2] = {H5S_UNLIMITED, (hsize_t)n};
    hsize_t chunk[2] = {1, (hsize_t)(n < 65536 ? n : 65536)};
    hid_t sp, pl;
    SgmCallH5H(sp, H5Screate_simple(2, dims, maxd));
    SgmCallH5H(pl, H5Pcreate(H5P_DATASET_CREATE));
    SgmCallH5(H5Pset_chunk(pl, 2, chunk));
    SgmCallH5H(d, H5Dcreate2(parent, name, H5T_NATIVE_INT64, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
    SgmCallH5(H5Pclose(pl));
    SgmCallH5(H5Sclose(sp));
  } else {
    SgmCallH5H(d, H5Dopen2(parent, name, H5P_DEFAULT));
  }
  hsize_t ext[2] = {(hsize_t)(frame0 + nrows), (hsize_t)n};
  hsize_t off[2] = {(hsize_t)frame0, (hsize_t)start}, cnt[2] = {(hsize_t)nrows, (hsize_t)count};
  SgmCallH5(H5Dset_extent(d, ext));
  PetscCall(sgm_h5_write_rows(d, H5T_NATIVE_INT64, 2, off, cnt, count == 0, v));
  SgmCallH5(H5Dclose(d));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Rank owning the id block of `id` (PETSc split of n over size). */
static int id_block_owner(int64_t n, int size, int64_t id)
{
  int64_t q = n / size, r = n % size, big = r * (q + 1);
  return id < big ? (int)(id / (q + 1)) : (int)(r + (id - big) / q);
}

/* Collective: n_i and labels of the owned particles moved to the id blocks (one Alltoallv of
 * (id, n_i, label) triples); *nb and *lb hold ids [*start, *start + *count) (PetscFree both). */
static PetscErrorCode to_id_blocks(MPI_Comm comm, const SgmObservables *o, int64_t *start,
                                   int64_t *count, int64_t **nb, int64_t **lb)
{
  PetscMPIInt size, rank;
  int *sc, *sd, *rc, *rd, *cur;
  int64_t *sbuf, *rbuf;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscCalloc5(size, &sc, size, &sd, size, &rc, size, &rd, size, &cur));
  for (int64_t i = 0; i < o->nlocal; i++) sc[id_block_owner(o->n, size, o->id[i])] += 3;
  PetscCallMPI(MPI_Alltoall(sc, 1, MPI_INT, rc, 1, MPI_INT, comm));
  int64_t ts = 0, tr = 0;
  for (int r = 0; r < size; r++)
    sd[r] = cur[r] = (int)ts, ts += sc[r], rd[r] = (int)tr, tr += rc[r];
  PetscCall(PetscMalloc1(ts + 1, &sbuf));
  PetscCall(PetscMalloc1(tr + 1, &rbuf));
  for (int64_t i = 0; i < o->nlocal; i++) {
    int64_t *q = sbuf + cur[id_block_owner(o->n, size, o->id[i])];
    q[0] = o->id[i], q[1] = o->nloc[i], q[2] = o->cluster[i];
    cur[id_block_owner(o->n, size, o->id[i])] += 3;
  }
  PetscCallMPI(MPI_Alltoallv(sbuf, sc, sd, MPI_INT64_T, rbuf, rc, rd, MPI_INT64_T, comm));
  sgm_decomp_split(o->n, size, rank, start, count);
  PetscCheck(tr == 3 * *count, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "observables: %" PRId64 " particles for an id block of %" PRId64, tr / 3, *count);
  PetscCall(PetscMalloc1(*count + 1, nb));
  PetscCall(PetscMalloc1(*count + 1, lb));
  for (int64_t j = 0; j < tr / 3; j++) {
    const int64_t k = rbuf[3 * j] - *start;
    PetscCheck(k >= 0 && k < *count, PETSC_COMM_SELF, PETSC_ERR_PLIB, "observables: id block");
    (*nb)[k] = rbuf[3 * j + 1], (*lb)[k] = rbuf[3 * j + 2];
  }
  PetscCall(PetscFree(rbuf));
  PetscCall(PetscFree(sbuf));
  PetscCall(PetscFree5(sc, sd, rc, rd, cur));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode put_attr_double(hid_t obj, const char *name, double v)
{
  hid_t sp, a;
  PetscFunctionBeginUser;
  htri_t e = H5Aexists(obj, name);
  SgmCallH5(e);
  if (e) {
    /* the same value (every frame after the first): nothing to change in the object header */
    double cur;
    hid_t t;
    SgmCallH5H(a, H5Aopen(obj, name, H5P_DEFAULT));
    SgmCallH5H(t, H5Aget_type(a));
    htri_t same_type = H5Tequal(t, H5T_NATIVE_DOUBLE);
    SgmCallH5(same_type);
    SgmCallH5(H5Tclose(t));
    SgmCallH5H(sp, H5Aget_space(a));
    if (H5Sget_simple_extent_npoints(sp) != 1) same_type = 0;
    SgmCallH5(H5Sclose(sp));
    if (same_type) SgmCallH5(H5Aread(a, H5T_NATIVE_DOUBLE, &cur));
    SgmCallH5(H5Aclose(a));
    if (same_type && memcmp(&cur, &v, sizeof v) == 0) PetscFunctionReturn(PETSC_SUCCESS);
    SgmCallH5(H5Adelete(obj, name));
  }
  SgmCallH5H(sp, H5Screate(H5S_SCALAR));
  SgmCallH5H(a, H5Acreate2(obj, name, H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Awrite(a, H5T_NATIVE_DOUBLE, &v));
  SgmCallH5(H5Aclose(a));
  SgmCallH5(H5Sclose(sp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Rows of observables buffered for one write (sgm_observables_rows_*): one array per dataset. */
struct SgmObservablesRows_ {
  int64_t cap, n, frame0; /* capacity, buffered rows, frame index of row 0 */
  int alloc;              /* arrays made (on the first push: sizes known then) */
  int nbins, nshell, per_particle, dim, sk_grid;
  int64_t N, start, count; /* particles; this rank's id block of the per-particle rows */
  double r_local, r_contact;
  int64_t *step, *hist, *nmax, *ncl, *lsize, *llabel, *iters, *nb, *lb, *modes;
  double *time, *mean, *var, *phi, *skew, *kurt, *bimod, *lfrac, *S, *Smax, *k;
};

PetscErrorCode sgm_observables_rows_create(int64_t cap, SgmObservablesRows *r)
{
  PetscFunctionBeginUser;
  PetscCheck(cap >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "observables: row buffer of %" PRId64 " rows", cap);
  PetscCall(PetscNew(r));
  (*r)->cap = cap;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_rows_destroy(SgmObservablesRows *r)
{
  PetscFunctionBeginUser;
  if (!*r) PetscFunctionReturn(PETSC_SUCCESS);
  SgmObservablesRows b = *r;
  PetscCall(PetscFree5(b->step, b->hist, b->nmax, b->ncl, b->lsize));
  PetscCall(PetscFree5(b->llabel, b->iters, b->nb, b->lb, b->modes));
  PetscCall(PetscFree5(b->time, b->mean, b->var, b->phi, b->skew));
  PetscCall(PetscFree5(b->kurt, b->bimod, b->lfrac, b->S, b->Smax));
  PetscCall(PetscFree(b->k));
  PetscCall(PetscFree(*r));
  PetscFunctionReturn(PETSC_SUCCESS);
}

int64_t sgm_observables_rows_count(SgmObservablesRows r)
{
  return r ? r->n : 0;
}

PetscErrorCode sgm_observables_rows_push(MPI_Comm comm, SgmObservablesRows r, int64_t frame,
                                         double time, const SgmObservables *o)
{
  const int64_t c = r->cap;
  PetscFunctionBeginUser;
  PetscCheck(r->n < r->cap, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "observables: row buffer full (%" PRId64 " rows): write it first", r->cap);
  if (r->n == 0) r->frame0 = frame;
  PetscCheck(frame == r->frame0 + r->n, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "observables: row %" PRId64 " after rows %" PRId64 "..%" PRId64 " (not consecutive)",
             frame, r->frame0, r->frame0 + r->n - 1);
  if (!r->alloc) {
    PetscMPIInt size, rank;
    PetscCallMPI(MPI_Comm_size(comm, &size));
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    r->nbins = o->nbins, r->nshell = o->nshell, r->per_particle = o->per_particle;
    r->dim = o->dim, r->sk_grid = o->sk_grid, r->N = o->n;
    r->count = 0;
    if (o->per_particle) sgm_decomp_split(o->n, size, rank, &r->start, &r->count);
    const int64_t nb = r->nbins, ns = r->nshell, pc = r->count;
    PetscCall(
        PetscMalloc5(c, &r->step, c * nb + 1, &r->hist, c, &r->nmax, c, &r->ncl, c, &r->lsize));
    PetscCall(PetscMalloc5(c, &r->llabel, c, &r->iters, c * pc + 1, &r->nb, c * pc + 1, &r->lb,
                           ns + 1, &r->modes));
    PetscCall(PetscMalloc5(c, &r->time, c, &r->mean, c, &r->var, c, &r->phi, c, &r->skew));
    PetscCall(PetscMalloc5(c, &r->kurt, c, &r->bimod, c, &r->lfrac, c * ns + 1, &r->S, c * ns + 1,
                           &r->Smax));
    PetscCall(PetscMalloc1(ns + 1, &r->k));
    r->alloc = 1;
  }
  /* the shapes are those of the run: fixed by [analysis] and N */
  PetscCheck(o->nbins == r->nbins && o->nshell == r->nshell && o->per_particle == r->per_particle &&
                 o->n == r->N,
             PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "observables: the shape of the rows changed within a run (bins %d/%d, shells %d/%d)",
             o->nbins, r->nbins, o->nshell, r->nshell);
  const int64_t i = r->n;
  r->r_local = o->r_local, r->r_contact = o->r_contact, r->sk_grid = o->sk_grid;
  r->step[i] = o->step, r->time[i] = time;
  if (r->nbins) PetscCall(PetscArraycpy(r->hist + i * r->nbins, o->hist, r->nbins));
  r->mean[i] = o->nloc_mean, r->var[i] = o->nloc_var, r->nmax[i] = o->nloc_max;
  r->phi[i] = o->phi_mean, r->skew[i] = o->skewness, r->kurt[i] = o->kurtosis;
  r->bimod[i] = o->bimodality;
  r->ncl[i] = o->n_clusters, r->lsize[i] = o->largest_size, r->lfrac[i] = o->largest_fraction;
  r->llabel[i] = o->largest_label, r->iters[i] = o->label_iterations;
  if (r->nshell) {
    PetscCall(PetscArraycpy(r->S + i * r->nshell, o->sk_S, r->nshell));
    PetscCall(PetscArraycpy(r->Smax + i * r->nshell, o->sk_max, r->nshell));
    PetscCall(PetscArraycpy(r->k, o->sk_k, r->nshell));
    PetscCall(PetscArraycpy(r->modes, o->sk_modes, r->nshell));
  }
  if (r->per_particle) {
    int64_t start, count, *nb = NULL, *lb = NULL;
    PetscCall(to_id_blocks(comm, o, &start, &count, &nb, &lb));
    PetscCheck(start == r->start && count == r->count, PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "observables: id block moved");
    PetscCall(PetscArraycpy(r->nb + i * count, nb, count));
    PetscCall(PetscArraycpy(r->lb + i * count, lb, count));
    PetscCall(PetscFree(nb));
    PetscCall(PetscFree(lb));
  }
  r->n++;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_rows_write_fh(MPI_Comm comm, int64_t fh, SgmObservablesRows r)
{
  const hid_t f = (hid_t)fh;
  hid_t g, sub;
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  if (r->n == 0) PetscFunctionReturn(PETSC_SUCCESS);
  const int64_t f0 = r->frame0, nr = r->n;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(open_group(f, "observables", &g));
  PetscCall(put_attr_double(g, "r_local", r->r_local));
  PetscCall(put_attr_double(g, "r_contact", r->r_contact));
  PetscCall(put_attr_double(g, "n", (double)r->N));
  PetscCall(put_attr_double(g, "dim", (double)r->dim));
  PetscCall(put_rows(g, "step", H5T_NATIVE_INT64, f0, nr, 0, r->step, rank));
  PetscCall(put_rows(g, "time", H5T_NATIVE_DOUBLE, f0, nr, 0, r->time, rank));

  /* the per-frame scalars of the two groups: (group, dataset, type, rows) */
  const struct {
    const char *group, *name;
    hid_t type;
    const void *v;
  } sc[] = {{"local_density", "mean", H5T_NATIVE_DOUBLE, r->mean},
            {"local_density", "variance", H5T_NATIVE_DOUBLE, r->var},
            {"local_density", "max", H5T_NATIVE_INT64, r->nmax},
            {"local_density", "phi_mean", H5T_NATIVE_DOUBLE, r->phi},
            {"local_density", "skewness", H5T_NATIVE_DOUBLE, r->skew},
            {"local_density", "kurtosis", H5T_NATIVE_DOUBLE, r->kurt},
            {"local_density", "bimodality", H5T_NATIVE_DOUBLE, r->bimod},
            {"clusters", "n_clusters", H5T_NATIVE_INT64, r->ncl},
            {"clusters", "largest_size", H5T_NATIVE_INT64, r->lsize},
            {"clusters", "largest_fraction", H5T_NATIVE_DOUBLE, r->lfrac},
            {"clusters", "largest_label", H5T_NATIVE_INT64, r->llabel},
            {"clusters", "iterations", H5T_NATIVE_INT64, r->iters}};
  const char *groups[2] = {"local_density", "clusters"}, *block_names[2] = {"n", "label"};
  const int64_t *blocks[2] = {r->nb, r->lb};
  for (int q = 0; q < 2; q++) {
    PetscCall(open_group(g, groups[q], &sub));
    if (q == 0)
      PetscCall(put_rows(sub, "histogram", H5T_NATIVE_INT64, f0, nr, r->nbins, r->hist, rank));
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++)
      if (!strcmp(sc[i].group, groups[q]))
        PetscCall(put_rows(sub, sc[i].name, sc[i].type, f0, nr, 0, sc[i].v, rank));
    if (r->per_particle)
      PetscCall(put_block(sub, block_names[q], f0, nr, r->N, r->start, r->count, blocks[q]));
    SgmCallH5(H5Gclose(sub));
  }

  if (r->nshell > 0) {
    PetscCall(open_group(g, "structure_factor", &sub));
    PetscCall(put_attr_double(sub, "grid", (double)r->sk_grid));
    PetscCall(put_fixed(sub, "k", H5T_NATIVE_DOUBLE, r->nshell, r->k, rank));
    PetscCall(put_fixed(sub, "modes", H5T_NATIVE_INT64, r->nshell, r->modes, rank));
    PetscCall(put_rows(sub, "S", H5T_NATIVE_DOUBLE, f0, nr, r->nshell, r->S, rank));
    PetscCall(put_rows(sub, "S_max", H5T_NATIVE_DOUBLE, f0, nr, r->nshell, r->Smax, rank));
    SgmCallH5(H5Gclose(sub));
  }
  SgmCallH5(H5Gclose(g));
  r->n = 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_observables_write(MPI_Comm comm, const char *path, int64_t frame, double time,
                                     const SgmObservables *o)
{
  hid_t fapl, f;
  PetscFunctionBeginUser;
  SgmCallH5H(fapl, H5Pcreate(H5P_FILE_ACCESS));
  SgmCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  f = H5Fopen(path, H5F_ACC_RDWR, fapl);
  SgmCallH5(H5Pclose(fapl));
  PetscCheck(f >= 0, comm, SGM_ERR_USER, "observables: cannot open %s for writing", path);
  PetscCall(sgm_observables_write_fh(comm, (int64_t)f, frame, time, o));
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}

_Static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is passed as int64_t");

PetscErrorCode sgm_observables_write_fh(MPI_Comm comm, int64_t fh, int64_t frame, double time,
                                        const SgmObservables *o)
{
  SgmObservablesRows r = NULL;
  PetscFunctionBeginUser;
  PetscCall(sgm_observables_rows_create(1, &r));
  PetscCall(sgm_observables_rows_push(comm, r, frame, time, o));
  PetscCall(sgm_observables_rows_write_fh(comm, fh, r));
  PetscCall(sgm_observables_rows_destroy(&r));
  PetscFunctionReturn(PETSC_SUCCESS);
}
