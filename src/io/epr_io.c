/* epr.h5 / fields.h5 with parallel HDF5, and their XDMF sidecars (layout in sgm/epr_io.h and
 * docs/formats.md).
 *
 * Trade-offs: the number of frames is known before the first is written, so every dataset is
 * created at its final shape and the file stays open for the whole stage (no extend per frame);
 * frames are buffered (~8 MiB per rank) and written in blocks, because many small collective
 * writes cost far more than the EPR itself (measured: 16 ms per frame of 64 particles on 2 ranks
 * with per-frame writes); trajectory frames are likewise read in blocks of strided hyperslabs;
 * it is written under a temporary name and renamed by the stage, so a crash never leaves a torn
 * epr.h5. Each rank writes one hyperslab of id-ordered rows per dataset, collectively. Scalars are
 * one [T][N] dataset each (not a [T][N][nq] block) so that ParaView, h5py and the XDMF sidecar
 * address them by name. The fields are small ([ny][nx] per map), reduced onto every rank by the
 * stage and written as row blocks; a 2D CoRectMesh with cell-centred attributes describes them.
 * The HDF5 and XDMF helpers shared with h5md.c and xdmf.c are in io_internal.h.
 */
#include "sgm/epr_io.h"
#include "sgm/epr.h"
#include "sgm/core.h"
#include "io_internal.h"

#include <hdf5.h>
#include <stdio.h>
#include <string.h>

const char *const sgm_epr_vec_names[SGM_EPR_NVEC] = {"position", "orientation", "score_x",
                                                     "score_g",  "velocity_x",  "velocity_g"};

/* Frames are buffered and written in blocks of up to `bmax` frames: one collective write per
 * dataset per block instead of per frame (small collective writes dominate otherwise). */
struct SgmEprFile_ {
  MPI_Comm comm;
  PetscMPIInt rank;
  hid_t f;
  int dim;
  int64_t n, nframes;
  int64_t start, count;   /* this rank's rows (fixed by the first frame) */
  int64_t t0, nbuf, bmax; /* first frame of the buffer, frames buffered, capacity */
  double *vbuf[SGM_EPR_NVEC], *qbuf[SGM_EPR_NQ], *tbuf;
  int nextra; /* extra per-particle scalars (SgmEprFileInfo) */
  char extra[SGM_EPR_MAX_EXTRA][64];
  double *xbuf[SGM_EPR_MAX_EXTRA];
  int64_t *sbuf;
};

static PetscErrorCode create_dset(hid_t parent, const char *name, hid_t type, int rank_,
                                  const hsize_t *dims, const hsize_t *chunk)
{
  hid_t sp, pl, d;
  PetscFunctionBeginUser;
  SgmCallH5H(sp, H5Screate_simple(rank_, dims, NULL));
  SgmCallH5H(pl, H5Pcreate(H5P_DATASET_CREATE));
  if (chunk) SgmCallH5(H5Pset_chunk(pl, rank_, chunk));
  SgmCallH5H(d, H5Dcreate2(parent, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Pclose(pl));
  SgmCallH5(H5Sclose(sp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Collective hyperslab write (off, cnt) into dataset `name`; `empty` ranks select nothing. */
static PetscErrorCode write_slab(hid_t f, const char *name, hid_t type, int rank_,
                                 const hsize_t *off, const hsize_t *cnt, int empty, const void *buf)
{
  hid_t d;
  PetscFunctionBeginUser;
  SgmCallH5H(d, H5Dopen2(f, name, H5P_DEFAULT));
  PetscCall(sgm_h5_write_rows(d, type, rank_, off, cnt, empty, buf));
  SgmCallH5(H5Dclose(d));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_file_create(MPI_Comm comm, const char *path, const SgmEprFileInfo *info,
                                   SgmEprFile *out)
{
  SgmEprFile e;
  PetscMPIInt size;
  hid_t g;
  PetscFunctionBeginUser;
  PetscCall(PetscNew(&e));
  e->comm = comm;
  e->dim = info->dim;
  e->n = info->n;
  e->nframes = info->nframes;
  PetscCheck(info->nextra >= 0 && info->nextra <= SGM_EPR_MAX_EXTRA, comm, PETSC_ERR_ARG_SIZ,
             "epr.h5: %d extra quantities (at most %d)", info->nextra, SGM_EPR_MAX_EXTRA);
  e->nextra = info->nextra;
  for (int k = 0; k < e->nextra; k++)
    PetscCall(PetscStrncpy(e->extra[k], info->extra_names[k], sizeof e->extra[k]));
  PetscCallMPI(MPI_Comm_rank(comm, &e->rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(sgm_h5_open(comm, path, 0, 1, &e->f));
  const hsize_t T = (hsize_t)info->nframes, N = (hsize_t)info->n, D = (hsize_t)info->dim;
  const hsize_t cn = N < 65536 ? N : 65536;
  hsize_t d1[1] = {T}, d1n[1] = {N};
  PetscCall(create_dset(e->f, "step", H5T_NATIVE_INT64, 1, d1, NULL));
  PetscCall(create_dset(e->f, "time", H5T_NATIVE_DOUBLE, 1, d1, NULL));
  PetscCall(create_dset(e->f, "id", H5T_NATIVE_INT64, 1, d1n, NULL));
  hsize_t d3[3] = {T, N, D}, c3[3] = {1, cn, D};
  for (int v = 0; v < SGM_EPR_NVEC; v++)
    PetscCall(create_dset(e->f, sgm_epr_vec_names[v], H5T_NATIVE_DOUBLE, 3, d3,
                          T > 0 && N > 0 ? c3 : NULL));
  hsize_t d2[2] = {T, N}, c2[2] = {1, cn};
  for (int q = 0; q < SGM_EPR_NQ; q++)
    PetscCall(create_dset(e->f, sgm_epr_quantity_name(q), H5T_NATIVE_DOUBLE, 2, d2,
                          T > 0 && N > 0 ? c2 : NULL));
  for (int k = 0; k < e->nextra; k++)
    PetscCall(create_dset(e->f, e->extra[k], H5T_NATIVE_DOUBLE, 2, d2, T > 0 && N > 0 ? c2 : NULL));
  SgmCallH5H(g, H5Gcreate2(e->f, "series", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Gclose(g));
  /* zero y and z coordinates for the Polyvertex geometry of the sidecar */
  if (info->dim == 1) PetscCall(sgm_h5_xdmf_zero(e->f, info->n));
  int ival = info->dim;
  PetscCall(sgm_h5_attr_num(e->f, "dim", H5T_NATIVE_INT, 1, &ival));
  PetscCall(sgm_h5_attr_num(e->f, "n", H5T_NATIVE_INT64, 1, &info->n));
  PetscCall(sgm_h5_attr_num(e->f, "nframes", H5T_NATIVE_INT64, 1, &info->nframes));
  PetscCall(sgm_h5_attr_str(e->f, "score", info->score ? info->score : ""));
  if (info->config) PetscCall(sgm_h5_attr_str(e->f, "input", info->config));
  {
    /* ids in the same block split as the rows */
    int64_t s, c;
    sgm_io_block_rows(info->n, e->rank, size, &s, &c);
    int64_t *ids;
    PetscCall(PetscMalloc1(c + 1, &ids));
    for (int64_t i = 0; i < c; i++) ids[i] = s + i;
    hsize_t o[1] = {(hsize_t)s}, cn1[1] = {(hsize_t)c};
    PetscCall(write_slab(e->f, "id", H5T_NATIVE_INT64, 1, o, cn1, c == 0, ids));
    PetscCall(PetscFree(ids));
  }
  *out = e;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode flush(SgmEprFile e)
{
  const int64_t nb = e->nbuf, t0 = e->t0, count = e->count;
  PetscFunctionBeginUser;
  if (nb == 0) PetscFunctionReturn(PETSC_SUCCESS);
  hsize_t o1[1] = {(hsize_t)t0}, c1[1] = {(hsize_t)nb};
  PetscCall(write_slab(e->f, "step", H5T_NATIVE_INT64, 1, o1, c1, e->rank != 0, e->sbuf));
  PetscCall(write_slab(e->f, "time", H5T_NATIVE_DOUBLE, 1, o1, c1, e->rank != 0, e->tbuf));
  hsize_t o3[3] = {(hsize_t)t0, (hsize_t)e->start, 0},
          c3[3] = {(hsize_t)nb, (hsize_t)count, (hsize_t)e->dim};
  for (int v = 0; v < SGM_EPR_NVEC; v++)
    PetscCall(write_slab(e->f, sgm_epr_vec_names[v], H5T_NATIVE_DOUBLE, 3, o3, c3, count == 0,
                         e->vbuf[v]));
  hsize_t o2[2] = {(hsize_t)t0, (hsize_t)e->start}, c2[2] = {(hsize_t)nb, (hsize_t)count};
  for (int k = 0; k < SGM_EPR_NQ; k++)
    PetscCall(write_slab(e->f, sgm_epr_quantity_name(k), H5T_NATIVE_DOUBLE, 2, o2, c2, count == 0,
                         e->qbuf[k]));
  for (int k = 0; k < e->nextra; k++)
    PetscCall(write_slab(e->f, e->extra[k], H5T_NATIVE_DOUBLE, 2, o2, c2, count == 0, e->xbuf[k]));
  e->t0 += nb;
  e->nbuf = 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_file_write_frame(SgmEprFile e, int64_t t, int64_t step, double time,
                                        int64_t start, int64_t count,
                                        const double *const vec[SGM_EPR_NVEC], const double *q,
                                        int nq, const double *extra)
{
  const int dim = e->dim;
  PetscFunctionBeginUser;
  PetscCheck(nq == SGM_EPR_NQ, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "nq = %d, expected %d", nq,
             (int)SGM_EPR_NQ);
  PetscCheck(t == e->t0 + e->nbuf && t < e->nframes, e->comm, PETSC_ERR_ARG_OUTOFRANGE,
             "frame %lld written out of order (expected %lld of %lld)", (long long)t,
             (long long)(e->t0 + e->nbuf), (long long)e->nframes);
  if (!e->tbuf) {
    /* about 8 MiB of buffered rows per rank, at least one frame */
    const double per = (double)(count + 1) * (SGM_EPR_NVEC * dim + SGM_EPR_NQ) * sizeof(double);
    e->bmax = (int64_t)(8.0 * 1024 * 1024 / per);
    if (e->bmax < 1) e->bmax = 1;
    if (e->bmax > e->nframes) e->bmax = e->nframes;
    e->start = start, e->count = count;
    PetscCall(PetscMalloc2(e->bmax, &e->tbuf, e->bmax, &e->sbuf));
    for (int v = 0; v < SGM_EPR_NVEC; v++)
      PetscCall(PetscMalloc1(e->bmax * (count + 1) * dim, &e->vbuf[v]));
    for (int k = 0; k < SGM_EPR_NQ; k++)
      PetscCall(PetscMalloc1(e->bmax * (count + 1), &e->qbuf[k]));
    for (int k = 0; k < e->nextra; k++) PetscCall(PetscMalloc1(e->bmax * (count + 1), &e->xbuf[k]));
  }
  PetscCheck(start == e->start && count == e->count, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
             "the rows of a rank must not change between frames");
  const int64_t b = e->nbuf;
  e->tbuf[b] = time, e->sbuf[b] = step;
  for (int v = 0; v < SGM_EPR_NVEC; v++)
    if (count) memcpy(e->vbuf[v] + b * count * dim, vec[v], sizeof(double) * count * dim);
  for (int k = 0; k < SGM_EPR_NQ; k++)
    for (int64_t i = 0; i < count; i++) e->qbuf[k][b * count + i] = q[i * nq + k];
  PetscCheck(e->nextra == 0 || extra || count == 0, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "epr.h5: extra quantities missing");
  for (int k = 0; k < e->nextra; k++)
    for (int64_t i = 0; i < count; i++) e->xbuf[k][b * count + i] = extra[i * e->nextra + k];
  e->nbuf++;
  if (e->nbuf == e->bmax || t == e->nframes - 1) PetscCall(flush(e));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_file_write_series(SgmEprFile e, const char *name, const double *v)
{
  char p[256];
  hsize_t d1[1] = {(hsize_t)e->nframes}, o[1] = {0};
  PetscFunctionBeginUser;
  PetscCheck((size_t)snprintf(p, sizeof p, "series/%s", name) < sizeof p, e->comm,
             PETSC_ERR_ARG_SIZ, "series name too long");
  PetscCall(create_dset(e->f, p, H5T_NATIVE_DOUBLE, 1, d1, NULL));
  PetscCall(write_slab(e->f, p, H5T_NATIVE_DOUBLE, 1, o, d1, e->rank != 0 || e->nframes == 0, v));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_file_set_attr(SgmEprFile e, const char *name, double v)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_h5_attr_num(e->f, name, H5T_NATIVE_DOUBLE, 1, &v));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_file_close(SgmEprFile *e)
{
  PetscFunctionBeginUser;
  if (!e || !*e) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(flush(*e));
  SgmCallH5(H5Fclose((*e)->f));
  for (int v = 0; v < SGM_EPR_NVEC; v++) PetscCall(PetscFree((*e)->vbuf[v]));
  for (int k = 0; k < SGM_EPR_NQ; k++) PetscCall(PetscFree((*e)->qbuf[k]));
  for (int k = 0; k < (*e)->nextra; k++) PetscCall(PetscFree((*e)->xbuf[k]));
  PetscCall(PetscFree2((*e)->tbuf, (*e)->sbuf));
  PetscCall(PetscFree(*e));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_read_frames(MPI_Comm comm, const char *path, const char *group,
                                   int64_t first, int64_t stride, int64_t nb, int dim, int64_t n,
                                   double *x, double *g, int64_t *step)
{
  char p[512];
  hid_t f;
  const char *elems[2] = {"position", "orientation"};
  double *out[2] = {x, g};
  PetscFunctionBeginUser;
  /* read-only and identical on every rank: independent POSIX reads, no collective open */
  f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  PetscCheck(f >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot open %s", path);
  for (int e = 0; e < 2; e++) {
    if (!out[e]) continue;
    hsize_t T;
    snprintf(p, sizeof p, "/particles/%s/%s/value", group, elems[e]);
    PetscCall(sgm_h5_value_frames(PETSC_COMM_SELF, f, path, p, dim, n, &T));
    PetscCheck(first + (nb - 1) * stride < (int64_t)T, PETSC_COMM_SELF, SGM_ERR_USER,
               "%s has %llu frames, frame %lld requested", path, (unsigned long long)T,
               (long long)(first + (nb - 1) * stride));
    hsize_t o[3] = {(hsize_t)first, 0, 0}, st[3] = {(hsize_t)stride, 1, 1},
            c[3] = {(hsize_t)nb, (hsize_t)n, (hsize_t)dim};
    PetscCall(sgm_h5_read_slab(f, p, H5T_NATIVE_DOUBLE, 3, o, st, c, out[e]));
  }
  if (step) {
    hsize_t o[1] = {(hsize_t)first}, st[1] = {(hsize_t)stride}, c[1] = {(hsize_t)nb};
    snprintf(p, sizeof p, "/particles/%s/position/step", group);
    PetscCall(sgm_h5_read_slab(f, p, H5T_NATIVE_INT64, 1, o, st, c, step));
  }
  SgmCallH5(H5Fclose(f));
  (void)comm;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Row t of /<name> [T][N] as an N-vector. */
static void slab2(FILE *fp, const char *h5, const char *name, int64_t t, int64_t T, int64_t n)
{
  fprintf(fp,
          "        <DataItem ItemType=\"HyperSlab\" Dimensions=\"%lld\" Type=\"HyperSlab\">\n"
          "          <DataItem Dimensions=\"3 2\" Format=\"XML\">%lld 0 1 1 1 %lld</DataItem>\n"
          "          <DataItem Dimensions=\"%lld %lld\" NumberType=\"Float\" Precision=\"8\" "
          "Format=\"HDF\">%s:/%s</DataItem>\n        </DataItem>\n",
          (long long)n, (long long)t, (long long)n, (long long)T, (long long)n, h5, name);
}

static int write_particles_xdmf(const char *path, const char *h5, int dim, int64_t n, int64_t T,
                                const double *times, int nextra, const char *const *extra)
{
  static const char *vshort[SGM_EPR_NVEC] = {"x", "g", "s_x", "s_g", "v_x", "v_g"};
  FILE *fp = fopen(path, "w");
  if (!fp) return -1;
  sgm_xdmf_head(fp, "epr");
  for (int64_t t = 0; t < T; t++) {
    sgm_xdmf_frame_head(fp, h5, "position", "xdmf_zero", "id", t, times[t], T, n, dim);
    for (int v = 1; v < SGM_EPR_NVEC; v++)
      for (int c = 0; c < dim; c++) {
        char an[16];
        snprintf(an, sizeof an, "%s%s", vshort[v], dim > 1 ? (c ? "_y" : "_x") : "");
        fprintf(fp, "      <Attribute Name=\"%s\" AttributeType=\"Scalar\" Center=\"Node\">\n", an);
        sgm_xdmf_slab3(fp, h5, sgm_epr_vec_names[v], t, c, T, n, dim);
        fprintf(fp, "      </Attribute>\n");
      }
    for (int q = 0; q < SGM_EPR_NQ; q++) {
      fprintf(fp, "      <Attribute Name=\"%s\" AttributeType=\"Scalar\" Center=\"Node\">\n",
              sgm_epr_quantity_name(q));
      slab2(fp, h5, sgm_epr_quantity_name(q), t, T, n);
      fprintf(fp, "      </Attribute>\n");
    }
    for (int k = 0; k < nextra; k++) {
      fprintf(fp, "      <Attribute Name=\"%s\" AttributeType=\"Scalar\" Center=\"Node\">\n",
              extra[k]);
      slab2(fp, h5, extra[k], t, T, n);
      fprintf(fp, "      </Attribute>\n");
    }
    fprintf(fp, "    </Grid>\n");
  }
  return sgm_xdmf_tail(fp);
}

PetscErrorCode sgm_epr_xdmf_write(MPI_Comm comm, const char *xdmf_path, const char *h5_ref, int dim,
                                  int64_t n, int64_t nframes, const double *times, int nextra,
                                  const char *const *extra)
{
  PetscMPIInt rank;
  int ok = 1;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0)
    ok = write_particles_xdmf(xdmf_path, h5_ref, dim, n, nframes, times, nextra, extra) == 0;
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  PetscCheck(ok, comm, PETSC_ERR_FILE_WRITE, "cannot write %s", xdmf_path);
  PetscFunctionReturn(PETSC_SUCCESS);
}

static int write_fields_xdmf(const char *path, const char *h5, const SgmFieldsGrid *gr, int nf,
                             const char *const *names)
{
  FILE *fp = fopen(path, "w");
  if (!fp) return -1;
  fprintf(fp,
          "<?xml version=\"1.0\" ?>\n<!DOCTYPE Xdmf SYSTEM \"Xdmf.dtd\" []>\n"
          "<Xdmf Version=\"3.0\">\n  <Domain>\n    <Grid Name=\"fields\" GridType=\"Uniform\">\n"
          "      <Topology TopologyType=\"2DCoRectMesh\" Dimensions=\"%lld %lld\"/>\n"
          "      <Geometry GeometryType=\"ORIGIN_DXDY\">\n"
          "        <DataItem Dimensions=\"2\" NumberType=\"Float\" Precision=\"8\" "
          "Format=\"XML\">%.17g %.17g</DataItem>\n"
          "        <DataItem Dimensions=\"2\" NumberType=\"Float\" Precision=\"8\" "
          "Format=\"XML\">%.17g %.17g</DataItem>\n      </Geometry>\n",
          (long long)gr->ny + 1, (long long)gr->nx + 1, gr->origin[1], gr->origin[0],
          gr->spacing[1], gr->spacing[0]);
  for (int f = 0; f < nf; f++)
    fprintf(fp,
            "      <Attribute Name=\"%s\" AttributeType=\"Scalar\" Center=\"Cell\">\n"
            "        <DataItem Dimensions=\"%lld %lld\" NumberType=\"Float\" Precision=\"8\" "
            "Format=\"HDF\">%s:/%s</DataItem>\n      </Attribute>\n",
            names[f], (long long)gr->ny, (long long)gr->nx, h5, names[f]);
  return sgm_xdmf_tail(fp);
}

PetscErrorCode sgm_epr_fields_write(MPI_Comm comm, const char *h5_path, const char *xdmf_path,
                                    const char *h5_ref, const SgmFieldsGrid *gr, int nf,
                                    const char *const *names, const double *data)
{
  hid_t f;
  PetscMPIInt rank, size;
  int ok = 1;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(sgm_h5_open(comm, h5_path, 0, 1, &f));
  int64_t s, c;
  sgm_io_block_rows(gr->ny, rank, size, &s, &c);
  hsize_t dims[2] = {(hsize_t)gr->ny, (hsize_t)gr->nx}, o[2] = {(hsize_t)s, 0},
          cn[2] = {(hsize_t)c, (hsize_t)gr->nx};
  for (int k = 0; k < nf; k++) {
    PetscCall(create_dset(f, names[k], H5T_NATIVE_DOUBLE, 2, dims, NULL));
    PetscCall(write_slab(f, names[k], H5T_NATIVE_DOUBLE, 2, o, cn, c == 0,
                         data + (size_t)k * gr->nx * gr->ny + (size_t)s * gr->nx));
  }
  int64_t shape[2] = {gr->ny, gr->nx};
  PetscCall(sgm_h5_attr_num(f, "origin", H5T_NATIVE_DOUBLE, 2, gr->origin));
  PetscCall(sgm_h5_attr_num(f, "spacing", H5T_NATIVE_DOUBLE, 2, gr->spacing));
  PetscCall(sgm_h5_attr_num(f, "shape", H5T_NATIVE_INT64, 2, shape));
  PetscCall(sgm_h5_attr_num(f, "nframes", H5T_NATIVE_INT64, 1, &gr->nframes));
  SgmCallH5(H5Fclose(f));
  if (rank == 0) ok = write_fields_xdmf(xdmf_path, h5_ref, gr, nf, names) == 0;
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  PetscCheck(ok, comm, PETSC_ERR_FILE_WRITE, "cannot write %s", xdmf_path);
  PetscFunctionReturn(PETSC_SUCCESS);
}
