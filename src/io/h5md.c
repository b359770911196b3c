/* H5MD 1.1 trajectory files with parallel HDF5 (layout in include/sgm/h5md.h).
 *
 * Trade-off: each frame is an open-extend-write-close cycle. It costs a few milliseconds per
 * frame, which is small next to the hundreds of steps between frames, and in exchange the file on
 * disk is always complete up to its last frame: a checkpoint only has to record the frame count,
 * and a restart truncates the datasets back to it. Writes are collective (H5FD_MPIO_COLLECTIVE)
 * hyperslabs, one per rank, in global-id order.
 */
#include "sgm/h5md.h"
#include "sgm/core.h"
#include "io_internal.h"

#include <hdf5.h>
#include <inttypes.h>
#include <string.h>

#ifndef PETSC_SUCCESS
#define PETSC_SUCCESS 0
#endif

/* Time-dependent element: step [T], time [T], value [T][N][d], all extendible along T. */
static PetscErrorCode create_element(hid_t parent, const char *name, int dim, int64_t n)
{
  hid_t g, sp, pl, d;
  PetscFunctionBeginUser;
  SgmCallH5H(g, H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  hsize_t d1[1] = {0}, m1[1] = {H5S_UNLIMITED}, c1[1] = {1024};
  SgmCallH5H(sp, H5Screate_simple(1, d1, m1));
  SgmCallH5H(pl, H5Pcreate(H5P_DATASET_CREATE));
  SgmCallH5(H5Pset_chunk(pl, 1, c1));
  SgmCallH5H(d, H5Dcreate2(g, "step", H5T_NATIVE_INT64, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
  SgmCallH5(H5Dclose(d));
  SgmCallH5H(d, H5Dcreate2(g, "time", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Pclose(pl));
  SgmCallH5(H5Sclose(sp));
  hsize_t d3[3] = {0, (hsize_t)n, (hsize_t)dim}, m3[3] = {H5S_UNLIMITED, (hsize_t)n, (hsize_t)dim};
  hsize_t c3[3] = {1, (hsize_t)(n < 65536 ? n : 65536), (hsize_t)dim};
  SgmCallH5H(sp, H5Screate_simple(3, d3, m3));
  SgmCallH5H(pl, H5Pcreate(H5P_DATASET_CREATE));
  SgmCallH5(H5Pset_chunk(pl, 3, c3));
  SgmCallH5H(d, H5Dcreate2(g, "value", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Pclose(pl));
  SgmCallH5(H5Sclose(sp));
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_create(MPI_Comm comm, const char *path, const SgmH5mdInfo *info)
{
  hid_t f, g, sub, pg, sp, d;
  PetscMPIInt rank, size;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(sgm_h5_open(comm, path, 0, 1, &f));
  /* /h5md */
  SgmCallH5H(g, H5Gcreate2(f, "h5md", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  int ver[2] = {1, 1};
  PetscCall(sgm_h5_attr_num(g, "version", H5T_NATIVE_INT, 2, ver));
  SgmCallH5H(sub, H5Gcreate2(g, "author", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscCall(sgm_h5_attr_str(sub, "name", info->author ? info->author : "sgm_hpc user"));
  SgmCallH5(H5Gclose(sub));
  SgmCallH5H(sub, H5Gcreate2(g, "creator", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscCall(sgm_h5_attr_str(sub, "name", "sgm_hpc"));
  PetscCall(sgm_h5_attr_str(sub, "version", sgm_version()));
  SgmCallH5(H5Gclose(sub));
  SgmCallH5(H5Gclose(g));
  /* /particles/<group> */
  SgmCallH5H(g, H5Gcreate2(f, "particles", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5H(pg, H5Gcreate2(g, info->group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5H(sub, H5Gcreate2(pg, "box", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscCall(sgm_h5_attr_num(sub, "dimension", H5T_NATIVE_INT, 1, &info->dim));
  {
    /* boundary: fixed-length string array, one entry per dimension */
    hid_t t, a;
    hsize_t nd[1] = {(hsize_t)info->dim};
    char b[2][9];
    for (int k = 0; k < info->dim; k++)
      snprintf(b[k], 9, "%s", info->periodic ? "periodic" : "none");
    SgmCallH5H(t, H5Tcopy(H5T_C_S1));
    SgmCallH5(H5Tset_size(t, 9));
    SgmCallH5H(sp, H5Screate_simple(1, nd, NULL));
    SgmCallH5H(a, H5Acreate2(sub, "boundary", t, sp, H5P_DEFAULT, H5P_DEFAULT));
    SgmCallH5(H5Awrite(a, t, b));
    SgmCallH5(H5Aclose(a));
    SgmCallH5(H5Sclose(sp));
    SgmCallH5(H5Tclose(t));
    double edges[2] = {info->L, info->L};
    SgmCallH5H(sp, H5Screate_simple(1, nd, NULL));
    SgmCallH5H(
        d, H5Dcreate2(sub, "edges", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hsize_t o[1] = {0};
    PetscCall(sgm_h5_write_rows(d, H5T_NATIVE_DOUBLE, 1, o, nd, rank != 0, edges));
    SgmCallH5(H5Dclose(d));
    SgmCallH5(H5Sclose(sp));
  }
  SgmCallH5(H5Gclose(sub));
  PetscCall(create_element(pg, "position", info->dim, info->n));
  PetscCall(create_element(pg, "orientation", info->dim, info->n));
  {
    /* ids: row i is particle i (files are written in global-id order) */
    hsize_t nn[1] = {(hsize_t)info->n};
    int64_t s, c;
    sgm_io_block_rows(info->n, rank, size, &s, &c);
    int64_t *ids;
    PetscCall(PetscMalloc1(c + 1, &ids));
    for (int64_t i = 0; i < c; i++) ids[i] = s + i;
    SgmCallH5H(sp, H5Screate_simple(1, nn, NULL));
    SgmCallH5H(d,
               H5Dcreate2(pg, "id", H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hsize_t o[1] = {(hsize_t)s}, cn[1] = {(hsize_t)c};
    PetscCall(sgm_h5_write_rows(d, H5T_NATIVE_INT64, 1, o, cn, c == 0, ids));
    SgmCallH5(H5Dclose(d));
    SgmCallH5(H5Sclose(sp));
    PetscCall(PetscFree(ids));
  }
  SgmCallH5(H5Gclose(pg));
  SgmCallH5(H5Gclose(g));
  /* /parameters */
  SgmCallH5H(g, H5Gcreate2(f, "parameters", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (info->config) PetscCall(sgm_h5_attr_str(g, "input", info->config));
  for (int i = 0; i < info->nparams; i++)
    PetscCall(
        sgm_h5_attr_num(g, info->param_names[i], H5T_NATIVE_DOUBLE, 1, &info->param_values[i]));
  if (info->dim == 1) PetscCall(sgm_h5_xdmf_zero(g, info->n));
  SgmCallH5(H5Gclose(g));
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode element_path(char *buf, size_t len, const char *group, const char *elem,
                                   const char *ds)
{
  PetscFunctionBeginUser;
  PetscCheck((size_t)snprintf(buf, len, "/particles/%s/%s/%s", group, elem, ds) < len,
             PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "group name too long");
  PetscFunctionReturn(PETSC_SUCCESS);
}

_Static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is passed as int64_t");

PetscErrorCode sgm_h5md_open_append(MPI_Comm comm, const char *path, int64_t *fh)
{
  hid_t f;
  PetscFunctionBeginUser;
  PetscCall(sgm_h5_open(comm, path, H5F_ACC_RDWR, 0, &f));
  *fh = (int64_t)f;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_close(int64_t fh)
{
  PetscFunctionBeginUser;
  SgmCallH5(H5Fclose((hid_t)fh));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_append(MPI_Comm comm, const char *path, const char *group, int64_t frame,
                               int64_t step, double time, int dim, int64_t start, int64_t count,
                               const double *x, const double *g)
{
  int64_t fh;
  PetscFunctionBeginUser;
  PetscCall(sgm_h5md_open_append(comm, path, &fh));
  PetscCall(sgm_h5md_append_fh(comm, fh, group, frame, step, time, dim, start, count, x, g));
  PetscCall(sgm_h5md_close(fh));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_append_fh(MPI_Comm comm, int64_t fh, const char *group, int64_t frame,
                                  int64_t step, double time, int dim, int64_t start, int64_t count,
                                  const double *x, const double *g)
{
  PetscFunctionBeginUser;
  PetscCall(
      sgm_h5md_append_frames_fh(comm, fh, group, frame, 1, &step, &time, dim, start, count, x, g));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_append_frames_fh(MPI_Comm comm, int64_t fh, const char *group,
                                         int64_t frame0, int64_t nf, const int64_t *steps,
                                         const double *times, int dim, int64_t start, int64_t count,
                                         const double *x, const double *g)
{
  const hid_t f = (hid_t)fh;
  hid_t d;
  PetscMPIInt rank;
  char p[512];
  const char *elems[2] = {"position", "orientation"};
  const double *vals[2] = {x, g};
  PetscFunctionBeginUser;
  PetscCheck(nf >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "h5md: %" PRId64 " frames", nf);
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  for (int e = 0; e < 2; e++) {
    hsize_t T1[1] = {(hsize_t)(frame0 + nf)}, o1[1] = {(hsize_t)frame0}, c1[1] = {(hsize_t)nf};
    PetscCall(element_path(p, sizeof p, group, elems[e], "step"));
    SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
    SgmCallH5(H5Dset_extent(d, T1));
    PetscCall(sgm_h5_write_root(d, H5T_NATIVE_INT64, 1, o1, c1, rank == 0, steps));
    SgmCallH5(H5Dclose(d));
    PetscCall(element_path(p, sizeof p, group, elems[e], "time"));
    SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
    SgmCallH5(H5Dset_extent(d, T1));
    PetscCall(sgm_h5_write_root(d, H5T_NATIVE_DOUBLE, 1, o1, c1, rank == 0, times));
    SgmCallH5(H5Dclose(d));
    PetscCall(element_path(p, sizeof p, group, elems[e], "value"));
    SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
    hid_t sp;
    hsize_t dims[3];
    SgmCallH5H(sp, H5Dget_space(d));
    SgmCallH5(H5Sget_simple_extent_dims(sp, dims, NULL));
    SgmCallH5(H5Sclose(sp));
    dims[0] = (hsize_t)(frame0 + nf);
    SgmCallH5(H5Dset_extent(d, dims));
    /* frames [frame0, frame0 + nf) x this rank's rows: vals[e] is [nf][count][dim] */
    hsize_t o3[3] = {(hsize_t)frame0, (hsize_t)start, 0};
    hsize_t c3[3] = {(hsize_t)nf, (hsize_t)count, (hsize_t)dim};
    PetscCall(sgm_h5_write_rows(d, H5T_NATIVE_DOUBLE, 3, o3, c3, count == 0, vals[e]));
    SgmCallH5(H5Dclose(d));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode dset_len(hid_t f, const char *p, hsize_t *n)
{
  hid_t d, sp;
  hsize_t dims[3];
  PetscFunctionBeginUser;
  SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
  SgmCallH5H(sp, H5Dget_space(d));
  SgmCallH5(H5Sget_simple_extent_dims(sp, dims, NULL));
  SgmCallH5(H5Sclose(sp));
  SgmCallH5(H5Dclose(d));
  *n = dims[0];
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_nframes(MPI_Comm comm, const char *path, const char *group,
                                int64_t *nframes)
{
  hid_t f;
  char p[512];
  hsize_t n;
  PetscFunctionBeginUser;
  PetscCall(sgm_h5_open(comm, path, H5F_ACC_RDONLY, 0, &f));
  PetscCall(element_path(p, sizeof p, group, "position", "step"));
  PetscCall(dset_len(f, p, &n));
  SgmCallH5(H5Fclose(f));
  *nframes = (int64_t)n;
  PetscFunctionReturn(PETSC_SUCCESS);
}

int sgm_h5md_peek(const char *path, const char *group, int64_t *n, int *dim)
{
  char p[512];
  hsize_t dims[3];
  H5E_auto2_t fn;
  void *data;
  int ok = 0;
  if ((size_t)snprintf(p, sizeof p, "/particles/%s/position/value", group) >= sizeof p) return -1;
  H5Eget_auto2(H5E_DEFAULT, &fn, &data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f >= 0) {
    hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
    if (d >= 0) {
      hid_t fs = H5Dget_space(d);
      ok = fs >= 0 && H5Sget_simple_extent_ndims(fs) == 3 &&
           H5Sget_simple_extent_dims(fs, dims, NULL) == 3;
      if (fs >= 0) H5Sclose(fs);
      H5Dclose(d);
    }
    H5Fclose(f);
  }
  H5Eset_auto2(H5E_DEFAULT, fn, data);
  if (!ok) return -1;
  *n = (int64_t)dims[1], *dim = (int)dims[2];
  return 0;
}

PetscErrorCode sgm_h5md_check_input(SgmConfig cfg, SgmProblems pb, const char *key,
                                    const char *group_key, const char *stage)
{
  const char *group;
  char path[PETSC_MAX_PATH_LEN];
  int dim;
  int64_t n, want_n, want_dim;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_check_input_file(cfg, pb, key, "trajectory.h5", stage, "simulate", path,
                                        sizeof path));
  if (!path[0]) PetscFunctionReturn(PETSC_SUCCESS); /* reported, or written by this run */
  PetscCall(sgm_config_get_string(cfg, group_key, &group));
  PetscCall(sgm_config_get_int(cfg, "system.n", &want_n));
  PetscCall(sgm_config_get_int(cfg, "system.dim", &want_dim));
  if (sgm_h5md_peek(path, group, &n, &dim))
    sgm_config_problem(pb, key,
                       "%s holds no trajectory of particle group \"%s\" (H5MD "
                       "/particles/%s/position/value)",
                       path, group, group);
  else if (n != want_n || dim != want_dim)
    sgm_config_problem(pb, key,
                       "%s holds %lld particles in %d dimensions; [system] n = %lld, dim = %d",
                       path, (long long)n, dim, (long long)want_n, (int)want_dim);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_truncate(MPI_Comm comm, const char *path, const char *group,
                                 int64_t nframes)
{
  hid_t f, d, sp;
  char p[512];
  const char *elems[2] = {"position", "orientation"}, *dss[3] = {"step", "time", "value"};
  PetscFunctionBeginUser;
  PetscCall(sgm_h5_open(comm, path, H5F_ACC_RDWR, 0, &f));
  for (int e = 0; e < 2; e++)
    for (int k = 0; k < 3; k++) {
      hsize_t dims[3];
      PetscCall(element_path(p, sizeof p, group, elems[e], dss[k]));
      SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
      SgmCallH5H(sp, H5Dget_space(d));
      int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
      SgmCallH5(nd);
      SgmCallH5(H5Sclose(sp));
      PetscCheck(dims[0] >= (hsize_t)nframes, comm, SGM_ERR_USER,
                 "%s has %llu frames but the checkpoint expects %lld", path,
                 (unsigned long long)dims[0], (long long)nframes);
      dims[0] = (hsize_t)nframes;
      SgmCallH5(H5Dset_extent(d, dims));
      SgmCallH5(H5Dclose(d));
    }
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_open_read(MPI_Comm comm, const char *path, int64_t *fh)
{
  hid_t f;
  PetscFunctionBeginUser;
  PetscCall(sgm_h5_open(comm, path, H5F_ACC_RDONLY, 0, &f));
  *fh = (int64_t)f;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_read_frame_fh(MPI_Comm comm, int64_t fh, const char *path,
                                      const char *group, int64_t frame, int dim, int64_t n,
                                      double *x, double *g, int64_t *step)
{
  const hid_t f = (hid_t)fh;
  char p[512];
  const char *elems[2] = {"position", "orientation"};
  double *out[2] = {x, g};
  PetscFunctionBeginUser;
  for (int e = 0; e < 2; e++) {
    if (!out[e]) continue;
    hsize_t T;
    PetscCall(element_path(p, sizeof p, group, elems[e], "value"));
    PetscCall(sgm_h5_value_frames(comm, f, path, p, dim, n, &T));
    PetscCheck(T > 0, comm, SGM_ERR_USER, "%s has no frames", path);
    int64_t fr = frame < 0 ? (int64_t)T + frame : frame;
    PetscCheck(fr >= 0 && fr < (int64_t)T, comm, SGM_ERR_USER,
               "%s has %llu frames, frame %lld requested", path, (unsigned long long)T,
               (long long)frame);
    hsize_t o[3] = {(hsize_t)fr, 0, 0}, c[3] = {1, (hsize_t)n, (hsize_t)dim};
    PetscCall(sgm_h5_read_slab(f, p, H5T_NATIVE_DOUBLE, 3, o, NULL, c, out[e]));
    if (e == 0 && step) {
      hsize_t o1[1] = {(hsize_t)fr}, c1[1] = {1};
      PetscCall(element_path(p, sizeof p, group, elems[e], "step"));
      PetscCall(sgm_h5_read_slab(f, p, H5T_NATIVE_INT64, 1, o1, NULL, c1, step));
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_read_frame(MPI_Comm comm, const char *path, const char *group,
                                   int64_t frame, int dim, int64_t n, double *x, double *g,
                                   int64_t *step)
{
  int64_t fh;
  PetscFunctionBeginUser;
  PetscCall(sgm_h5md_open_read(comm, path, &fh));
  PetscCall(sgm_h5md_read_frame_fh(comm, fh, path, group, frame, dim, n, x, g, step));
  PetscCall(sgm_h5md_close(fh));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_h5md_read_edges(MPI_Comm comm, const char *path, const char *group, int dim,
                                   double *edges)
{
  hid_t f, d, sp;
  char p[512];
  PetscFunctionBeginUser;
  PetscCall(sgm_h5_open(comm, path, H5F_ACC_RDONLY, 0, &f));
  PetscCheck((size_t)snprintf(p, sizeof p, "/particles/%s/box/edges", group) < sizeof p,
             PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "group name too long");
  SgmCallH5H(d, H5Dopen2(f, p, H5P_DEFAULT));
  SgmCallH5H(sp, H5Dget_space(d));
  PetscCheck(H5Sget_simple_extent_npoints(sp) == dim, comm, SGM_ERR_USER,
             "%s: box edges have %d entries, expected %d", path,
             (int)H5Sget_simple_extent_npoints(sp), dim);
  SgmCallH5(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, edges));
  SgmCallH5(H5Sclose(sp));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(PETSC_SUCCESS);
}
