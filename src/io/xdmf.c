/* XDMF 3 sidecars for H5MD trajectories: ParaView opens trajectory.xdmf as a time series of
 * Polyvertex grids whose coordinates and attributes are hyperslabs of the H5MD value datasets,
 * so nothing is duplicated. Rank 0 reads the frame times from the (closed) HDF5 file. */
#include "sgm/h5md.h"
#include "sgm/core.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef PETSC_SUCCESS
#define PETSC_SUCCESS 0
#endif

/* One component c of frame t of /particles/<g>/<elem>/value [T][N][d] as an N-vector. */
static void slab(FILE *fp, const char *h5, const char *group, const char *elem, int64_t t, int c,
                 int64_t T, int64_t n, int dim)
{
  fprintf(
      fp,
      "        <DataItem ItemType=\"HyperSlab\" Dimensions=\"%lld\" Type=\"HyperSlab\">\n"
      "          <DataItem Dimensions=\"3 3\" Format=\"XML\">%lld 0 %d 1 1 1 1 %lld 1</DataItem>\n"
      "          <DataItem Dimensions=\"%lld %lld %d\" NumberType=\"Float\" Precision=\"8\" "
      "Format=\"HDF\">%s:/particles/%s/%s/value</DataItem>\n"
      "        </DataItem>\n",
      (long long)n, (long long)t, c, (long long)n, (long long)T, (long long)n, dim, h5, group,
      elem);
}

static int write_xdmf(const char *xdmf_path, const char *h5_path, const char *h5, const char *group)
{
  char p[512];
  hid_t f = H5Fopen(h5_path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return -1;
  snprintf(p, sizeof p, "/particles/%s/position/value", group);
  hid_t d = H5Dopen2(f, p, H5P_DEFAULT), sp = H5Dget_space(d);
  hsize_t dims[3] = {0, 0, 0};
  H5Sget_simple_extent_dims(sp, dims, NULL);
  H5Sclose(sp);
  H5Dclose(d);
  const int64_t T = (int64_t)dims[0], n = (int64_t)dims[1];
  const int dim = (int)dims[2];
  double *times = malloc(sizeof(double) * (size_t)(T + 1));
  snprintf(p, sizeof p, "/particles/%s/position/time", group);
  d = H5Dopen2(f, p, H5P_DEFAULT);
  if (T > 0) H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, times);
  H5Dclose(d);
  H5Fclose(f);
  FILE *fp = fopen(xdmf_path, "w");
  if (!fp) {
    free(times);
    return -1;
  }
  fprintf(fp,
          "<?xml version=\"1.0\" ?>\n<!DOCTYPE Xdmf SYSTEM \"Xdmf.dtd\" []>\n"
          "<Xdmf Version=\"3.0\">\n  <Domain>\n"
          "    <Grid Name=\"trajectory\" GridType=\"Collection\" CollectionType=\"Temporal\">\n");
  for (int64_t t = 0; t < T; t++) {
    fprintf(fp, "    <Grid Name=\"frame%lld\" GridType=\"Uniform\">\n", (long long)t);
    fprintf(fp, "      <Time Value=\"%.17g\"/>\n", times[t]);
    fprintf(fp, "      <Topology TopologyType=\"Polyvertex\" NumberOfElements=\"%lld\"/>\n",
            (long long)n);
    if (dim == 2) {
      fprintf(fp,
              "      <Geometry GeometryType=\"XY\">\n"
              "        <DataItem ItemType=\"HyperSlab\" Dimensions=\"%lld 2\" Type=\"HyperSlab\">\n"
              "          <DataItem Dimensions=\"3 3\" Format=\"XML\">%lld 0 0 1 1 1 1 %lld "
              "2</DataItem>\n"
              "          <DataItem Dimensions=\"%lld %lld 2\" NumberType=\"Float\" Precision=\"8\" "
              "Format=\"HDF\">%s:/particles/%s/position/value</DataItem>\n"
              "        </DataItem>\n",
              (long long)n, (long long)t, (long long)n, (long long)T, (long long)n, h5, group);
    } else {
      fprintf(fp, "      <Geometry GeometryType=\"X_Y_Z\">\n");
      slab(fp, h5, group, "position", t, 0, T, n, dim);
      for (int c = 1; c < 3; c++)
        fprintf(fp,
                "        <DataItem Dimensions=\"%lld\" NumberType=\"Float\" Precision=\"8\" "
                "Format=\"HDF\">%s:/parameters/xdmf_zero</DataItem>\n",
                (long long)n, h5);
    }
    fprintf(fp, "      </Geometry>\n");
    fprintf(fp,
            "      <Attribute Name=\"id\" AttributeType=\"Scalar\" Center=\"Node\">\n"
            "        <DataItem Dimensions=\"%lld\" NumberType=\"Int\" Precision=\"8\" "
            "Format=\"HDF\">%s:/particles/%s/id</DataItem>\n      </Attribute>\n",
            (long long)n, h5, group);
    for (int c = 0; c < dim; c++) {
      fprintf(fp, "      <Attribute Name=\"g%c\" AttributeType=\"Scalar\" Center=\"Node\">\n",
              "xy"[c]);
      slab(fp, h5, group, "orientation", t, c, T, n, dim);
      fprintf(fp, "      </Attribute>\n");
    }
    fprintf(fp, "    </Grid>\n");
  }
  fprintf(fp, "    </Grid>\n  </Domain>\n</Xdmf>\n");
  int bad = ferror(fp);
  bad |= fclose(fp);
  free(times);
  return bad ? -1 : 0;
}

PetscErrorCode sgm_xdmf_write_trajectory(MPI_Comm comm, const char *xdmf_path, const char *h5_path,
                                         const char *h5_ref, const char *group)
{
  PetscMPIInt rank;
  int ok = 1;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Barrier(comm));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) ok = write_xdmf(xdmf_path, h5_path, h5_ref, group) == 0;
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  PetscCheck(ok, comm, PETSC_ERR_FILE_WRITE, "cannot write %s", xdmf_path);
  PetscFunctionReturn(PETSC_SUCCESS);
}
