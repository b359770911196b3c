/* Observables of the particle engine: local density, contact clusters, structure factor.
 *
 * Owns: the [analysis] keys, the per-frame observables of an SgmAoup state and their storage in
 * the /observables group of trajectory.h5 (docs/formats.md). Every quantity is collective over
 * the engine's communicator and independent of the number of ranks: integer results (neighbour
 * counts, histograms, cluster labels and sizes) are bitwise equal on any rank count, S(k) equal
 * to rounding (FFTW's parallel transposes change the summation order).
 *
 * Definitions (a = particle radius, N particles, box [0, L)^d, periodic boxes only):
 *   n_i        = #{ j != i : |x_i - x_j|_minimum-image < r_loc },   r_loc = analysis.r_local * a
 *   phi_i      = n_i a^d / r_loc^d     (= n_i pi a^2 / (pi r_loc^2) in 2D, n_i 2a / (2 r_loc) in
 * 1D) contact    : |x_i - x_j| < 2a (1 + analysis.contact_tol); clusters are the connected
 *                components of the contact graph, labelled by their smallest particle id
 *   S(k)       = |rho_k|^2 / N,  rho_k = sum_j exp(-i k . X_j), X_j the nearest node of a regular
 *                M^d grid (NGP), averaged over the modes of shells |k| in [(s-1/2), (s+1/2)) 2 pi/L
 */
#ifndef SGM_OBSERVABLES_H
#define SGM_OBSERVABLES_H

#include "sgm/aoup.h"
#include "sgm/config.h"
#include "sgm/run.h"
#include "sgm/schema.h"

/// The [analysis] table (src/analysis/analysis_keys.c); register with sgm_schema_register.
extern const SgmTableSpec sgm_table_analysis;

typedef struct {
  double r_local;     /* neighbour radius in units of a (r_loc = r_local * a) */
  int density_bins;   /* histogram bins of n_i: bin b holds n_i = b, the last bin n_i >= bins-1 */
  double contact_tol; /* contact when r < 2a (1 + contact_tol) */
  int sk_grid;        /* grid nodes per dimension M for S(k); 0 = automatic, -1 = no S(k) */
  int64_t every;      /* compute on every `every`-th trajectory frame (read by the caller) */
  int per_particle;   /* 1: the writer also stores n_i and the cluster label of every particle */
} SgmObservablesParams;

typedef struct {
  int dim;
  int64_t n;        /* N */
  int per_particle; /* copied from the parameters: the writer stores the per-particle arrays */
  int64_t step;     /* engine step of the state */
  /* local density */
  double r_local;    /* r_loc (length) */
  int nbins;         /* bins of hist */
  int64_t *hist;     /* [nbins] global histogram of n_i (same on every rank) */
  int64_t nloc_max;  /* max_i n_i */
  double nloc_mean;  /* mean of n_i */
  double nloc_var;   /* population variance of n_i */
  double phi_mean;   /* mean of phi_i (approximates the packing fraction) */
  double skewness;   /* sample skewness G1 of n_i */
  double kurtosis;   /* sample excess kurtosis G2 of n_i */
  double bimodality; /* Sarle's coefficient (G1^2 + 1) / (G2 + 3 (N-1)^2 / ((N-2)(N-3))) */
  /* per particle owned by this rank after the private migration (o->id gives the ids; the order
   * is not the engine's part order) */
  int64_t nlocal;
  int64_t *id;      /* [nlocal] global ids */
  int64_t *nloc;    /* [nlocal] n_i */
  double *phi_loc;  /* [nlocal] phi_i */
  int64_t *cluster; /* [nlocal] cluster label: the smallest id in the particle's cluster */
  /* clusters */
  double r_contact;        /* 2a (1 + tol) */
  int64_t n_clusters;      /* connected components (isolated particles count as clusters) */
  int64_t largest_size;    /* particles in the largest cluster */
  double largest_fraction; /* largest_size / N */
  int64_t largest_label;   /* label of the largest cluster (smallest label on ties) */
  int label_iterations;    /* rounds of min-label propagation over the halo */
  /* structure factor (nshell = 0 when not computed) */
  int sk_grid;       /* M */
  int nshell;        /* shells s = 1 .. nshell = floor(M/2) */
  double *sk_k;      /* [nshell] mean |k| of the modes of the shell */
  double *sk_S;      /* [nshell] shell average of |rho_k|^2 / N over the full k plane */
  double *sk_max;    /* [nshell] largest |rho_k|^2 / N in the shell (Bragg peak height) */
  int64_t *sk_modes; /* [nshell] number of modes (k and -k counted separately) */
  double sk_seconds; /* wall time of the last S(k) on this rank (deposit, transform, shells) */
  void *sk_cache;    /* private: the S(k) FFTW plan, buffers and slab map kept across calls
                        (structure_factor.c); released by sgm_observables_free */
} SgmObservables;

/// Defaults of the [analysis] table (r_local 5, density_bins 64, contact_tol 0.1, sk_grid 0,
/// every 0, per_particle 0). Not collective.
void sgm_observables_params_default(SgmObservablesParams *p);
/// Reads the [analysis] table. Not collective (the configuration is the same on every rank).
PetscErrorCode sgm_observables_params_from_config(SgmConfig cfg, SgmObservablesParams *p);

/// Collective on s->comm: checks that p is usable on the decomposition of s (periodic box; halo
/// width max(r_local a, 2a(1+contact_tol)) below L/2 and not wider than the narrowest rank patch,
/// since the halo engine exchanges one hop per face). Call it before a run so that a bad
/// [analysis] setting stops the run before any work (SGM_ERR_USER).
PetscErrorCode sgm_observables_check(SgmAoup s, const SgmObservablesParams *p);
/// The halo width the observables need: max(r_local a, 2a (1 + contact_tol)). Pure.
double sgm_observables_halo_width(const SgmObservablesParams *p, double a);
/// Collective on s->comm: computes every observable of the current state of s (periodic boxes
/// only). Works on a migrated copy of the owned particles with its own halo of width max(r_loc,
/// r_contact), so the engine's particles, ghosts and halo pattern are untouched. Arrays in *o are
/// (re)allocated; o must be zero-initialised before the first call and released with
/// sgm_observables_free.
PetscErrorCode sgm_observables_compute(SgmAoup s, const SgmObservablesParams *p, SgmObservables *o);
/// Collective: the set-up the first sgm_observables_compute would do (the S(k) FFTW plan, its
/// buffers and shell geometry), done now, e.g. before a timed loop. Optional; same results.
PetscErrorCode sgm_observables_prepare(SgmAoup s, const SgmObservablesParams *p, SgmObservables *o);
/// Frees the arrays of o and zeroes it. Not collective.
PetscErrorCode sgm_observables_free(SgmObservables *o);

/// Not collective (values are set on rank 0 of the run; other ranks' calls are no-ops): the
/// headline numbers under `stage`: obs_largest_cluster_fraction, obs_n_clusters,
/// obs_local_density_mean, obs_local_density_bimodality, obs_phi_local_mean, obs_sk_peak_k,
/// obs_sk_peak (the largest shell S(k) above the first shell; absent without S(k)).
PetscErrorCode sgm_observables_metrics(SgmMetrics m, const char *stage, const SgmObservables *o);

/// Collective on comm: writes o as frame `frame` (0-based) of the /observables group of the HDF5
/// file at path (which must exist and be closed elsewhere), creating the group on frame 0 and
/// resizing every per-frame dataset to frame + 1 rows (so a restart that rewrites frame f drops
/// later rows). Layout in docs/formats.md. time is the physical time of the frame.
PetscErrorCode sgm_observables_write(MPI_Comm comm, const char *path, int64_t frame, double time,
                                     const SgmObservables *o);
/// sgm_observables_write on a file that is already open: fh is the HDF5 file id (hid_t) of
/// sgm_h5md_open_append (include/sgm/h5md.h), so a frame and its observables share one open.
PetscErrorCode sgm_observables_write_fh(MPI_Comm comm, int64_t fh, int64_t frame, double time,
                                        const SgmObservables *o);

/// Rows of observables kept in memory and written together (the simulate stage buffers several
/// frames per file open): one array per dataset, made on the first push.
typedef struct SgmObservablesRows_ *SgmObservablesRows;
/// Not collective: an empty buffer for up to cap rows.
PetscErrorCode sgm_observables_rows_create(int64_t cap, SgmObservablesRows *r);
/// Collective on comm when o->per_particle (the per-particle arrays move to the id blocks, as the
/// writer stores them), else local: appends o as row `frame` (rows are consecutive frames).
PetscErrorCode sgm_observables_rows_push(MPI_Comm comm, SgmObservablesRows r, int64_t frame,
                                         double time, const SgmObservables *o);
/// Rows buffered (0 for NULL). Not collective.
int64_t sgm_observables_rows_count(SgmObservablesRows r);
/// Collective: writes the buffered rows to the open file fh (one extension and one write per
/// dataset, as sgm_observables_write_fh does for one row) and empties the buffer.
PetscErrorCode sgm_observables_rows_write_fh(MPI_Comm comm, int64_t fh, SgmObservablesRows r);
/// Not collective.
PetscErrorCode sgm_observables_rows_destroy(SgmObservablesRows *r);

#endif
