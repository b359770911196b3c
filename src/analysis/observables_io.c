/* The /observables group of trajectory.h5: one row per analysed frame (docs/formats.md).
 *
 * Owns: the HDF5 layout of the observables. Every result is global and already known on every
 * rank, so rank 0 supplies the data and the others select nothing, but the file is opened with
 * the MPI-IO driver and every metadata call is made by all ranks: errors are then raised on every
 * rank alike (a rank-0-only serial write would need its error broadcast by hand) and the writer
 * follows the same open-extend-write-close rhythm as the H5MD frames, so the file is consistent
 * after each frame. Datasets are extensible along the frame axis and resized to frame + 1 on each
 * write, which also drops rows beyond a restart point.
 */
#include "sgm/observables.h"
#include "sgm/core.h"

#include <hdf5.h>

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

/* Collective write of `buf` into the selection of fs (rank 0 only; the others select none). */
static PetscErrorCode write_sel(hid_t d, hid_t type, hid_t fs, int rank, int nd, const hsize_t *off,
                                const hsize_t *cnt, const void *buf)
{
  hid_t ms, x;
  static const double dummy[1] = {0.0};
  hsize_t one[1] = {1};
  PetscFunctionBeginUser;
  if (rank == 0) {
    SgmCallH5(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL));
    SgmCallH5H(ms, H5Screate_simple(nd, cnt, NULL));
  } else {
    SgmCallH5(H5Sselect_none(fs));
    SgmCallH5H(ms, H5Screate_simple(1, one, NULL));
    SgmCallH5(H5Sselect_none(ms));
    buf = dummy;
  }
  SgmCallH5H(x, H5Pcreate(H5P_DATASET_XFER));
  SgmCallH5(H5Pset_dxpl_mpio(x, H5FD_MPIO_COLLECTIVE));
  SgmCallH5(H5Dwrite(d, type, ms, fs, x, buf));
  SgmCallH5(H5Pclose(x));
  SgmCallH5(H5Sclose(ms));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Row `frame` of the per-frame dataset `name`: shape [T] when ncol == 0, else [T][ncol]. */
static PetscErrorCode put_row(hid_t parent, const char *name, hid_t type, int64_t frame,
                              int64_t ncol, const void *row, int rank)
{
  hid_t d, fs;
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
  SgmCallH5H(fs, H5Dget_space(d));
  PetscCall(write_sel(d, type, fs, rank, nd, off, cnt, row));
  SgmCallH5(H5Sclose(fs));
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
  PetscCall(write_sel(d, type, fs, rank, 1, off, dims, v));
  SgmCallH5(H5Sclose(fs));
  SgmCallH5(H5Dclose(d));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode put_attr_double(hid_t obj, const char *name, double v)
{
  hid_t sp, a;
  PetscFunctionBeginUser;
  htri_t e = H5Aexists(obj, name);
  SgmCallH5(e);
  if (e) SgmCallH5(H5Adelete(obj, name));
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
  hid_t fapl, f, g, sub;
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  SgmCallH5H(fapl, H5Pcreate(H5P_FILE_ACCESS));
  SgmCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  f = H5Fopen(path, H5F_ACC_RDWR, fapl);
  SgmCallH5(H5Pclose(fapl));
  PetscCheck(f >= 0, comm, SGM_ERR_USER, "observables: cannot open %s for writing", path);
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
  SgmCallH5(H5Gclose(sub));

  PetscCall(open_group(g, "clusters", &sub));
  int64_t iters = o->label_iterations;
  PetscCall(put_row(sub, "n_clusters", H5T_NATIVE_INT64, frame, 0, &o->n_clusters, rank));
  PetscCall(put_row(sub, "largest_size", H5T_NATIVE_INT64, frame, 0, &o->largest_size, rank));
  PetscCall(
      put_row(sub, "largest_fraction", H5T_NATIVE_DOUBLE, frame, 0, &o->largest_fraction, rank));
  PetscCall(put_row(sub, "largest_label", H5T_NATIVE_INT64, frame, 0, &o->largest_label, rank));
  PetscCall(put_row(sub, "iterations", H5T_NATIVE_INT64, frame, 0, &iters, rank));
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
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}
