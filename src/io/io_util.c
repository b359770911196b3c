/* Helpers shared by the HDF5 writers and XDMF sidecars of src/io (declared in io_internal.h). */
#include "io_internal.h"

#include <string.h>

PetscErrorCode sgm_h5_open(MPI_Comm comm, const char *path, unsigned flags, int create, hid_t *f)
{
  hid_t fapl;
  PetscFunctionBeginUser;
  SgmCallH5H(fapl, H5Pcreate(H5P_FILE_ACCESS));
  SgmCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  if (create)
    *f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  else
    *f = H5Fopen(path, flags, fapl);
  SgmCallH5(H5Pclose(fapl));
  PetscCheck(*f >= 0, comm, PETSC_ERR_FILE_OPEN, "cannot %s HDF5 file %s",
             create ? "create" : "open", path);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_attr_str(hid_t obj, const char *name, const char *val)
{
  hid_t t, s, a;
  PetscFunctionBeginUser;
  SgmCallH5H(t, H5Tcopy(H5T_C_S1));
  SgmCallH5(H5Tset_size(t, strlen(val) + 1));
  SgmCallH5(H5Tset_strpad(t, H5T_STR_NULLTERM));
  SgmCallH5H(s, H5Screate(H5S_SCALAR));
  SgmCallH5H(a, H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Awrite(a, t, val));
  SgmCallH5(H5Aclose(a));
  SgmCallH5(H5Sclose(s));
  SgmCallH5(H5Tclose(t));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_attr_num(hid_t obj, const char *name, hid_t type, int n, const void *val)
{
  hid_t s, a;
  hsize_t dims[1] = {(hsize_t)n};
  PetscFunctionBeginUser;
  if (n == 1)
    SgmCallH5H(s, H5Screate(H5S_SCALAR));
  else
    SgmCallH5H(s, H5Screate_simple(1, dims, NULL));
  SgmCallH5H(a, H5Acreate2(obj, name, type, s, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Awrite(a, type, val));
  SgmCallH5(H5Aclose(a));
  SgmCallH5(H5Sclose(s));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Write of the hyperslab (off, cnt) of dset with the given MPI-IO transfer mode; `empty` selects
 * nothing (a collective write in which this rank has no rows). */
static PetscErrorCode write_sel(hid_t dset, hid_t type, int rank_, const hsize_t *off,
                                const hsize_t *cnt, int empty, H5FD_mpio_xfer_t mode,
                                const void *buf)
{
  hid_t fs, ms, x;
  static double dummy[4];
  PetscFunctionBeginUser;
  SgmCallH5H(fs, H5Dget_space(dset));
  if (empty) {
    hsize_t one[1] = {1};
    SgmCallH5(H5Sselect_none(fs));
    SgmCallH5H(ms, H5Screate_simple(1, one, NULL));
    SgmCallH5(H5Sselect_none(ms));
    buf = dummy;
  } else {
    SgmCallH5(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL));
    SgmCallH5H(ms, H5Screate_simple(rank_, cnt, NULL));
  }
  SgmCallH5H(x, H5Pcreate(H5P_DATASET_XFER));
  SgmCallH5(H5Pset_dxpl_mpio(x, mode));
  SgmCallH5(H5Dwrite(dset, type, ms, fs, x, buf));
  SgmCallH5(H5Pclose(x));
  SgmCallH5(H5Sclose(ms));
  SgmCallH5(H5Sclose(fs));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_write_rows(hid_t dset, hid_t type, int rank_, const hsize_t *off,
                                 const hsize_t *cnt, int empty, const void *buf)
{
  PetscFunctionBeginUser;
  PetscCall(write_sel(dset, type, rank_, off, cnt, empty, H5FD_MPIO_COLLECTIVE, buf));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_write_root(hid_t dset, hid_t type, int rank_, const hsize_t *off,
                                 const hsize_t *cnt, int root, const void *buf)
{
  PetscFunctionBeginUser;
  if (root) PetscCall(write_sel(dset, type, rank_, off, cnt, 0, H5FD_MPIO_INDEPENDENT, buf));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_value_frames(MPI_Comm comm, hid_t f, const char *path, const char *p, int dim,
                                   int64_t n, hsize_t *T)
{
  hid_t d, fs;
  hsize_t dims[3];
  PetscFunctionBeginUser;
  SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
  SgmCallH5H(fs, H5Dget_space(d));
  PetscCheck(H5Sget_simple_extent_ndims(fs) == 3, comm, SGM_ERR_USER, "%s:%s is not [T][N][d]",
             path, p);
  SgmCallH5(H5Sget_simple_extent_dims(fs, dims, NULL));
  PetscCheck(dims[1] == (hsize_t)n && dims[2] == (hsize_t)dim, comm, SGM_ERR_USER,
             "%s holds %llu particles in %llu dimensions, the input asks for %lld in %d", path,
             (unsigned long long)dims[1], (unsigned long long)dims[2], (long long)n, dim);
  SgmCallH5(H5Sclose(fs));
  SgmCallH5(H5Dclose(d));
  *T = dims[0];
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_read_slab(hid_t f, const char *p, hid_t type, int rank_, const hsize_t *off,
                                const hsize_t *stride, const hsize_t *cnt, void *buf)
{
  hid_t d, fs, ms;
  PetscFunctionBeginUser;
  SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
  SgmCallH5H(fs, H5Dget_space(d));
  SgmCallH5(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, stride, cnt, NULL));
  SgmCallH5H(ms, H5Screate_simple(rank_, cnt, NULL));
  SgmCallH5(H5Dread(d, type, ms, fs, H5P_DEFAULT, buf));
  SgmCallH5(H5Sclose(ms));
  SgmCallH5(H5Sclose(fs));
  SgmCallH5(H5Dclose(d));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5_xdmf_zero(hid_t parent, int64_t n)
{
  hid_t sp, pl, d;
  hsize_t nn[1] = {(hsize_t)n};
  double zero = 0.0;
  PetscFunctionBeginUser;
  SgmCallH5H(sp, H5Screate_simple(1, nn, NULL));
  SgmCallH5H(pl, H5Pcreate(H5P_DATASET_CREATE));
  SgmCallH5(H5Pset_fill_value(pl, H5T_NATIVE_DOUBLE, &zero));
  SgmCallH5(H5Pset_alloc_time(pl, H5D_ALLOC_TIME_EARLY));
  SgmCallH5(H5Pset_fill_time(pl, H5D_FILL_TIME_ALLOC));
  SgmCallH5H(d,
             H5Dcreate2(parent, "xdmf_zero", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Pclose(pl));
  SgmCallH5(H5Sclose(sp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

void sgm_io_block_rows(int64_t n, PetscMPIInt rank, PetscMPIInt size, int64_t *start,
                       int64_t *count)
{
  const int64_t q = n / size, r = n % size;
  *count = q + (rank < r);
  *start = q * rank + (rank < r ? rank : r);
}

void sgm_xdmf_head(FILE *fp, const char *name)
{
  fprintf(fp,
          "<?xml version=\"1.0\" ?>\n<!DOCTYPE Xdmf SYSTEM \"Xdmf.dtd\" []>\n"
          "<Xdmf Version=\"3.0\">\n  <Domain>\n"
          "    <Grid Name=\"%s\" GridType=\"Collection\" CollectionType=\"Temporal\">\n",
          name);
}

int sgm_xdmf_tail(FILE *fp)
{
  fprintf(fp, "    </Grid>\n  </Domain>\n</Xdmf>\n");
  int bad = ferror(fp);
  bad |= fclose(fp);
  return bad ? -1 : 0;
}

void sgm_xdmf_slab3(FILE *fp, const char *h5, const char *path, int64_t t, int c, int64_t T,
                    int64_t n, int dim)
{
  fprintf(fp,
          "        <DataItem ItemType=\"HyperSlab\" Dimensions=\"%lld\" Type=\"HyperSlab\">\n"
          "          <DataItem Dimensions=\"3 3\" Format=\"XML\">%lld 0 %d 1 1 1 1 %lld "
          "1</DataItem>\n"
          "          <DataItem Dimensions=\"%lld %lld %d\" NumberType=\"Float\" Precision=\"8\" "
          "Format=\"HDF\">%s:/%s</DataItem>\n        </DataItem>\n",
          (long long)n, (long long)t, c, (long long)n, (long long)T, (long long)n, dim, h5, path);
}

void sgm_xdmf_frame_head(FILE *fp, const char *h5, const char *pos, const char *zero,
                         const char *id, int64_t t, double time, int64_t T, int64_t n, int dim)
{
  fprintf(fp, "    <Grid Name=\"frame%lld\" GridType=\"Uniform\">\n", (long long)t);
  fprintf(fp, "      <Time Value=\"%.17g\"/>\n", time);
  fprintf(fp, "      <Topology TopologyType=\"Polyvertex\" NumberOfElements=\"%lld\"/>\n",
          (long long)n);
  if (dim == 2) {
    fprintf(fp,
            "      <Geometry GeometryType=\"XY\">\n"
            "        <DataItem ItemType=\"HyperSlab\" Dimensions=\"%lld 2\" Type=\"HyperSlab\">\n"
            "          <DataItem Dimensions=\"3 3\" Format=\"XML\">%lld 0 0 1 1 1 1 %lld "
            "2</DataItem>\n"
            "          <DataItem Dimensions=\"%lld %lld 2\" NumberType=\"Float\" Precision=\"8\" "
            "Format=\"HDF\">%s:/%s</DataItem>\n        </DataItem>\n",
            (long long)n, (long long)t, (long long)n, (long long)T, (long long)n, h5, pos);
  } else {
    fprintf(fp, "      <Geometry GeometryType=\"X_Y_Z\">\n");
    sgm_xdmf_slab3(fp, h5, pos, t, 0, T, n, dim);
    for (int c = 1; c < 3; c++)
      fprintf(fp,
              "        <DataItem Dimensions=\"%lld\" NumberType=\"Float\" Precision=\"8\" "
              "Format=\"HDF\">%s:/%s</DataItem>\n",
              (long long)n, h5, zero);
  }
  fprintf(fp, "      </Geometry>\n");
  fprintf(fp,
          "      <Attribute Name=\"id\" AttributeType=\"Scalar\" Center=\"Node\">\n"
          "        <DataItem Dimensions=\"%lld\" NumberType=\"Int\" Precision=\"8\" "
          "Format=\"HDF\">%s:/%s</DataItem>\n      </Attribute>\n",
          (long long)n, h5, id);
}
