/* XDMF 3 sidecars for H5MD trajectories: ParaView opens trajectory.xdmf as a time series of
 * Polyvertex grids whose coordinates and attributes are hyperslabs of the H5MD value datasets,
 * so nothing is duplicated. Rank 0 reads the frame times from the (closed) HDF5 file. */
#include "sgm/h5md.h"
#include "sgm/core.h"
#include "io_internal.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef PETSC_SUCCESS
#define PETSC_SUCCESS 0
#endif

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
  sgm_xdmf_head(fp, "trajectory");
  char pos[512], zero[] = "parameters/xdmf_zero", id[512], orient[512];
  snprintf(pos, sizeof pos, "particles/%s/position/value", group);
  snprintf(id, sizeof id, "particles/%s/id", group);
  snprintf(orient, sizeof orient, "particles/%s/orientation/value", group);
  for (int64_t t = 0; t < T; t++) {
    sgm_xdmf_frame_head(fp, h5, pos, zero, id, t, times[t], T, n, dim);
    for (int c = 0; c < dim; c++) {
      fprintf(fp, "      <Attribute Name=\"g%c\" AttributeType=\"Scalar\" Center=\"Node\">\n",
              "xy"[c]);
      sgm_xdmf_slab3(fp, h5, orient, t, c, T, n, dim);
      fprintf(fp, "      </Attribute>\n");
    }
    fprintf(fp, "    </Grid>\n");
  }
  free(times);
  return sgm_xdmf_tail(fp);
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
