/* Helpers shared by the HDF5 writers of src/io (h5md.c, epr_io.c) and their XDMF sidecars
 * (xdmf.c, epr_io.c). Internal to src/io: not part of the public headers in include/sgm. */
#ifndef SGM_IO_INTERNAL_H
#define SGM_IO_INTERNAL_H

#include "sgm/core.h"

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>

/* Open (flags, e.g. H5F_ACC_RDWR) or create (truncating) `path` with the MPI-IO driver on comm. */
PetscErrorCode sgm_h5_open(MPI_Comm comm, const char *path, unsigned flags, int create, hid_t *f);
/* Null-terminated string attribute. */
PetscErrorCode sgm_h5_attr_str(hid_t obj, const char *name, const char *val);
/* Numeric attribute: a scalar for n == 1, else a 1-D array of n values. */
PetscErrorCode sgm_h5_attr_num(hid_t obj, const char *name, hid_t type, int n, const void *val);
/* Collective write of the hyperslab (off, cnt) of dset; `empty` ranks select nothing but still
 * take part in the collective call. */
PetscErrorCode sgm_h5_write_rows(hid_t dset, hid_t type, int rank_, const hsize_t *off,
                                 const hsize_t *cnt, int empty, const void *buf);
/* Write of the hyperslab (off, cnt) of dset by the root alone (independent MPI-IO; the other
 * ranks return at once): for global values such as a frame's step and time. The chunks must be
 * allocated already (parallel HDF5 allocates them in the collective H5Dcreate / H5Dset_extent). */
PetscErrorCode sgm_h5_write_root(hid_t dset, hid_t type, int rank_, const hsize_t *off,
                                 const hsize_t *cnt, int root, const void *buf);
/* Checks that dataset p of f (the file `path`, named in messages on comm) is [T][n][dim]; *T its
 * frame count. */
PetscErrorCode sgm_h5_value_frames(MPI_Comm comm, hid_t f, const char *path, const char *p, int dim,
                                   int64_t n, hsize_t *T);
/* Independent read of the hyperslab (off, stride (NULL: 1), cnt) of the rank_-dimensional
 * dataset p of f into buf. */
PetscErrorCode sgm_h5_read_slab(hid_t f, const char *p, hid_t type, int rank_, const hsize_t *off,
                                const hsize_t *stride, const hsize_t *cnt, void *buf);
/* /<parent>/xdmf_zero: n zeros, the y and z coordinates of 1-D Polyvertex geometries. */
PetscErrorCode sgm_h5_xdmf_zero(hid_t parent, int64_t n);
/* The block of `n` rows that `rank` of `size` owns: rows [*start, *start + *count). */
void sgm_io_block_rows(int64_t n, PetscMPIInt rank, PetscMPIInt size, int64_t *start,
                       int64_t *count);

/* XDMF 3 text: the document head up to the opening of the temporal collection `name`. */
void sgm_xdmf_head(FILE *fp, const char *name);
/* Closes the collection and the document, then fp; 0 on success, -1 on any write error. */
int sgm_xdmf_tail(FILE *fp);
/* Component c of frame t of the [T][N][d] dataset h5:/path as an N-vector DataItem. */
void sgm_xdmf_slab3(FILE *fp, const char *h5, const char *path, int64_t t, int c, int64_t T,
                    int64_t n, int dim);
/* Opening of frame t of a particle collection: Grid, Time, Polyvertex topology, the geometry
 * from the [T][N][dim] dataset h5:/pos (padded with h5:/zero in 1-D) and the id attribute
 * h5:/id. The caller adds its attributes and closes the Grid. */
void sgm_xdmf_frame_head(FILE *fp, const char *h5, const char *pos, const char *zero,
                         const char *id, int64_t t, double time, int64_t T, int64_t n, int dim);

#endif
