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

/* Row `frame` of the per-frame dataset `name`: shape [T] when ncol == 0, else [T][ncol]. */
static PetscErrorCode put_row(hid_t parent, const char *name, hid_t type, int64_t frame,
                              int64_t ncol, const void *row, int rank)
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
  hsize_t ext[2] = {(hsize_t)frame + 1, (hsize_t)ncol}, off[2] = {(hsize_t)frame, 0};
  hsize_t cnt[2] = {1, (hsize_t)ncol};
  SgmCallH5(H5Dset_extent(d, ext));
  /* global values, known on every rank: rank 0 writes them alone (independent MPI-IO) */
  PetscCall(sgm_h5_write_root(d, type, nd, off, cnt, rank == 0, row));
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
 * count) of row `frame` (every rank selects its block: one collective write). */
static PetscErrorCode put_block(hid_t parent, const char *name, int64_t frame, int64_t n,
                                int64_t start, int64_t count, const int64_t *v)
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
  hsize_t ext[2] = {(hsize_t)frame + 1, (hsize_t)n}, off[2] = {(hsize_t)frame, (hsize_t)start};
  hsize_t cnt[2] = {1, (hsize_t)count};
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
  const hid_t f = (hid_t)fh;
  hid_t g, sub;
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(open_group(f, "observables", &g));
  PetscCall(put_attr_double(g, "r_local", o->r_local));
  PetscCall(put_attr_double(g, "r_contact", o->r_contact));
  PetscCall(put_attr_double(g, "n", (double)o->n));
  PetscCall(put_attr_double(g, "dim", (double)o->dim));
  PetscCall(put_row(g, "step", H5T_NATIVE_INT64, frame, 0, &o->step, rank));
  PetscCall(put_row(g, "time", H5T_NATIVE_DOUBLE, frame, 0, &time, rank));

  PetscCall(open_group(g, "local_density", &sub));
  PetscCall(put_row(sub, "histogram", H5T_NATIVE_INT64, frame, o->nbins, o->hist, rank));
  PetscCall(put_row(sub, "mean", H5T_NATIVE_DOUBLE, frame, 0, &o->nloc_mean, rank));
  PetscCall(put_row(sub, "variance", H5T_NATIVE_DOUBLE, frame, 0, &o->nloc_var, rank));
  PetscCall(put_row(sub, "max", H5T_NATIVE_INT64, frame, 0, &o->nloc_max, rank));
  PetscCall(put_row(sub, "phi_mean", H5T_NATIVE_DOUBLE, frame, 0, &o->phi_mean, rank));
  PetscCall(put_row(sub, "skewness", H5T_NATIVE_DOUBLE, frame, 0, &o->skewness, rank));
  PetscCall(put_row(sub, "kurtosis", H5T_NATIVE_DOUBLE, frame, 0, &o->kurtosis, rank));
  PetscCall(put_row(sub, "bimodality", H5T_NATIVE_DOUBLE, frame, 0, &o->bimodality, rank));
  int64_t start = 0, count = 0, *nb = NULL, *lb = NULL;
  if (o->per_particle) {
    PetscCall(to_id_blocks(comm, o, &start, &count, &nb, &lb));
    PetscCall(put_block(sub, "n", frame, o->n, start, count, nb));
  }
  SgmCallH5(H5Gclose(sub));

  PetscCall(open_group(g, "clusters", &sub));
  int64_t iters = o->label_iterations;
  PetscCall(put_row(sub, "n_clusters", H5T_NATIVE_INT64, frame, 0, &o->n_clusters, rank));
  PetscCall(put_row(sub, "largest_size", H5T_NATIVE_INT64, frame, 0, &o->largest_size, rank));
  PetscCall(
      put_row(sub, "largest_fraction", H5T_NATIVE_DOUBLE, frame, 0, &o->largest_fraction, rank));
  PetscCall(put_row(sub, "largest_label", H5T_NATIVE_INT64, frame, 0, &o->largest_label, rank));
  PetscCall(put_row(sub, "iterations", H5T_NATIVE_INT64, frame, 0, &iters, rank));
  if (o->per_particle) {
    PetscCall(put_block(sub, "label", frame, o->n, start, count, lb));
    PetscCall(PetscFree(nb));
    PetscCall(PetscFree(lb));
  }
  SgmCallH5(H5Gclose(sub));

  if (o->nshell > 0) {
    PetscCall(open_group(g, "structure_factor", &sub));
    PetscCall(put_attr_double(sub, "grid", (double)o->sk_grid));
    PetscCall(put_fixed(sub, "k", H5T_NATIVE_DOUBLE, o->nshell, o->sk_k, rank));
    PetscCall(put_fixed(sub, "modes", H5T_NATIVE_INT64, o->nshell, o->sk_modes, rank));
    PetscCall(put_row(sub, "S", H5T_NATIVE_DOUBLE, frame, o->nshell, o->sk_S, rank));
    PetscCall(put_row(sub, "S_max", H5T_NATIVE_DOUBLE, frame, o->nshell, o->sk_max, rank));
    SgmCallH5(H5Gclose(sub));
  }
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(PETSC_SUCCESS);
}
