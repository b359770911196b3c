/* checkpoint.h5: everything needed to continue a simulation bit for bit. The random numbers are
 * counter-based (a pure function of seed, id and step), so the state is just positions,
 * orientations, the step counter and the number of trajectory frames already written; no
 * generator state exists to save. Layout: /state attrs step, nframes, seed, dim, n (and the
 * resolved input as "input"); datasets /state/x, /state/g [N][d] in global-id order, written
 * collectively (rank r writes its id block). The caller writes under a temporary name and
 * renames (sgm_run_commit_file), so a crash never leaves a torn checkpoint. */
#include "sgm/simulate.h"
#include "sgm/core.h"
#include "io_internal.h"

#include <hdf5.h>
#include <string.h>

static PetscErrorCode attr_i64(hid_t obj, const char *name, hid_t type, const void *v)
{
  hid_t s, a;
  PetscFunctionBeginUser;
  SgmCallH5H(s, H5Screate(H5S_SCALAR));
  SgmCallH5H(a, H5Acreate2(obj, name, type, s, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Awrite(a, type, v));
  SgmCallH5(H5Aclose(a));
  SgmCallH5(H5Sclose(s));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode read_attr(hid_t obj, const char *name, hid_t type, void *v)
{
  hid_t a;
  PetscFunctionBeginUser;
  SgmCallH5H(a, H5Aopen(obj, name, H5P_DEFAULT));
  SgmCallH5(H5Aread(a, type, v));
  SgmCallH5(H5Aclose(a));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_checkpoint_write(MPI_Comm comm, const char *path, const SgmCheckpointHeader *h,
                                    int64_t start, int64_t count, const double *x, const double *g,
                                    const char *config)
{
  hid_t fapl, f, grp, sp, d;
  PetscFunctionBeginUser;
  SgmCallH5H(fapl, H5Pcreate(H5P_FILE_ACCESS));
  SgmCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  SgmCallH5(H5Pclose(fapl));
  PetscCheck(f >= 0, comm, PETSC_ERR_FILE_OPEN, "cannot create checkpoint %s", path);
  SgmCallH5H(grp, H5Gcreate2(f, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  int dim = h->dim;
  PetscCall(attr_i64(grp, "step", H5T_NATIVE_INT64, &h->step));
  PetscCall(attr_i64(grp, "nframes", H5T_NATIVE_INT64, &h->nframes));
  PetscCall(attr_i64(grp, "seed", H5T_NATIVE_UINT64, &h->seed));
  PetscCall(attr_i64(grp, "dim", H5T_NATIVE_INT, &dim));
  PetscCall(attr_i64(grp, "n", H5T_NATIVE_INT64, &h->n));
  if (config) {
    hid_t t;
    SgmCallH5H(t, H5Tcopy(H5T_C_S1));
    SgmCallH5(H5Tset_size(t, strlen(config) + 1));
    PetscCall(attr_i64(grp, "input", t, config));
    SgmCallH5(H5Tclose(t));
  }
  const char *names[2] = {"x", "g"};
  const double *vals[2] = {x, g};
  hsize_t dims[2] = {(hsize_t)h->n, (hsize_t)h->dim};
  for (int e = 0; e < 2; e++) {
    SgmCallH5H(sp, H5Screate_simple(2, dims, NULL));
    SgmCallH5H(
        d, H5Dcreate2(grp, names[e], H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hsize_t o[2] = {(hsize_t)start, 0}, c[2] = {(hsize_t)count, (hsize_t)h->dim};
    PetscCall(sgm_h5_write_rows(d, H5T_NATIVE_DOUBLE, 2, o, c, count == 0, vals[e]));
    SgmCallH5(H5Dclose(d));
    SgmCallH5(H5Sclose(sp));
  }
  SgmCallH5(H5Gclose(grp));
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_checkpoint_read(MPI_Comm comm, const char *path, SgmCheckpointHeader *h,
                                   double **x, double **g)
{
  hid_t fapl, f, grp, d;
  PetscFunctionBeginUser;
  SgmCallH5H(fapl, H5Pcreate(H5P_FILE_ACCESS));
  SgmCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  H5E_BEGIN_TRY
  {
    f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  }
  H5E_END_TRY;
  SgmCallH5(H5Pclose(fapl));
  PetscCheck(f >= 0, comm, SGM_ERR_USER, "cannot open checkpoint %s", path);
  H5E_BEGIN_TRY
  {
    grp = H5Gopen2(f, "state", H5P_DEFAULT);
  }
  H5E_END_TRY;
  PetscCheck(grp >= 0, comm, SGM_ERR_USER, "%s is not an sgm_hpc simulate checkpoint (no /state)",
             path);
  int dim;
  PetscCall(read_attr(grp, "step", H5T_NATIVE_INT64, &h->step));
  PetscCall(read_attr(grp, "nframes", H5T_NATIVE_INT64, &h->nframes));
  PetscCall(read_attr(grp, "seed", H5T_NATIVE_UINT64, &h->seed));
  PetscCall(read_attr(grp, "dim", H5T_NATIVE_INT, &dim));
  PetscCall(read_attr(grp, "n", H5T_NATIVE_INT64, &h->n));
  h->dim = dim;
  PetscCall(PetscMalloc1(h->n * dim, x));
  PetscCall(PetscMalloc1(h->n * dim, g));
  SgmCallH5H(d, H5Dopen2(grp, "x", H5P_DEFAULT));
  SgmCallH5(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, *x));
  SgmCallH5(H5Dclose(d));
  SgmCallH5H(d, H5Dopen2(grp, "g", H5P_DEFAULT));
  SgmCallH5(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, *g));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Gclose(grp));
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}
