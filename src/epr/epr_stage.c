/* The `epr` stage: per-frame score, velocity field, per-particle EPR, diagnostics and maps.
 *
 * Owns: the [epr] keys, the frame loop and the statistics. Each selected frame of trajectory.h5
 * is read by every rank (H5MD rows are in id order), the engine state is rebuilt with
 * sgm_aoup_set_state (so each rank owns exactly the particles it would own while simulating, with
 * their ghosts, and a score provider sees the same neighbourhood a network would during training),
 * the drift and its divergence come from the engine, the score from the provider, and
 * sgm_epr_particle does the rest. Records are then sent to id blocks (one MPI_Alltoallv) so that
 * epr.h5 rows are in id order like the trajectory. Trade-off: reading the whole frame on every
 * rank costs N d doubles per rank per frame, negligible next to a score network, and keeps the
 * stage independent of how the trajectory was decomposed.
 *
 * Statistics: every diagnostic is a per-frame value normalised by N (paper Fig. 18); its mean and
 * standard deviation are over frames and its standard error comes from batch means over
 * contiguous blocks of frames ([epr] batches), which accounts for the correlation between frames
 * when a batch is longer than the correlation time; the lag-1 autocorrelation of the EPR batch
 * means is reported (epr_batch_lag1) and a warning printed when it says the batches are too short.
 * The global EPR (eq. 21) is N times the mean per-particle total EPR.
 *
 * Maps (§6.4): per-particle quantities are binned by position, summed over frames and divided by
 * the counts; periodic boxes use the engine's DMDA cell grid (or [epr] grid), open boxes a square
 * centred on the trap that covers the placement square and every particle of the selected frames
 * (or [epr] map_extent). Each rank bins its own particles into a full-grid buffer, then one
 * MPI_Allreduce sums them: the grids are small (cells >= the interaction range).
 */
#include "sgm/epr.h"
#include "sgm/epr_io.h"
#include "sgm/score_provider.h"
#include "sgm/score_model.h"
#include "sgm/simulate.h"
#include "sgm/h5md.h"
#include "sgm/observables.h"
#include "sgm/core.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

static const SgmKeySpec epr_keys[] = {
    {"score", SGM_KEY_STRING, "\"exact_trap\"", 0, -INFINITY, INFINITY, NULL, "",
     "score provider (registry name): \"exact_trap\" = exact Gaussian score of non-interacting "
     "AOUPs in a harmonic trap; \"fpe_pair\" = two interacting AOUPs in d = 1 (ring or trap) "
     "or d = 2 (trap) "
     "from their stationary Fokker-Planck equation solved on a grid; \"model\" = a trained "
     "network"},
    {"fpe_dr", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "length",
     "score = \"fpe_pair\": grid spacing in the separation r = x1 - x2 (d = 2: in |r| through "
     "the interaction range and one radius beyond, then growing 5 % per cell up to 25 fpe_dr; "
     "0 = 0.02 in d = 1, 0.04 in d = 2)"},
    {"fpe_nh", SGM_KEY_INT, "0", 0, 0, 1e6, NULL, "cells",
     "score = \"fpe_pair\": grid cells in h = (g1 - g2)/2: over [-fpe_hmax, fpe_hmax] in d = 1, "
     "in |h| over [0, fpe_hmax] in d = 2 (0 = 240 in d = 1, 28 in d = 2; else >= 8)"},
    {"fpe_nphi", SGM_KEY_INT, "96", 0, 8, 1e5, NULL, "cells",
     "score = \"fpe_pair\" in d = 2: grid cells in the angle between r and h over [0, pi]"},
    {"fpe_hmax", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "",
     "score = \"fpe_pair\": extent of the grid in h, |h| <= fpe_hmax (stationary std of each "
     "component 1/sqrt(2); 0 = 3.5 in d = 1, 4 in d = 2, where the tail of |h| is heavier)"},
    {"fpe_rmax", SGM_KEY_REAL, "0.0", 0, 0, INFINITY, NULL, "length",
     "score = \"fpe_pair\" in a trap: half-width of the grid in r (0 = 2a + 7 standard "
     "deviations of a free pair's r)"},
    {"model", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "",
     "score = \"model\": model.h5 to load (default: model.h5 in the output directory)"},
    {"weights", SGM_KEY_STRING, "\"auto\"", 0, -INFINITY, INFINITY, "auto|ema|raw", "",
     "score = \"model\": weights of model.h5 evaluated: the EMA of training ([train] ema > 0), the "
     "raw trained parameters, or auto = the EMA when the file holds one"},
    {"trajectory", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "",
     "H5MD trajectory to analyse (default: trajectory.h5 in the output directory)"},
    {"group", SGM_KEY_STRING, "\"all\"", 0, -INFINITY, INFINITY, NULL, "",
     "particle group of the trajectory"},
    {"first", SGM_KEY_INT, "0", 0, 0, INFINITY, NULL, "frames", "first trajectory frame analysed"},
    {"last", SGM_KEY_INT, "-1", 0, -1, INFINITY, NULL, "frames",
     "last trajectory frame analysed (-1 = the last frame of the file)"},
    {"stride", SGM_KEY_INT, "1", 0, 1, INFINITY, NULL, "frames", "analyse every stride-th frame"},
    {"batches", SGM_KEY_INT, "10", 0, 2, INFINITY, NULL, "",
     "number of batches of consecutive frames for the batch-means standard errors"},
    {"grid", SGM_KEY_INT_ARRAY, "[0, 0]", 0, 0, 1e6, NULL, "cells",
     "cells of the maps per dimension (0 = the engine's DMDA grid for periodic boxes, 32 for open "
     "boxes)"},
    {"map_extent", SGM_KEY_REAL, "0.0", 0, 0, INFINITY, NULL, "length",
     "open boxes: half-width of the square map centred on the trap (0 = cover the placement "
     "square and every particle of the selected frames)"},
    {"write_particles", SGM_KEY_BOOL, "true", 0, -INFINITY, INFINITY, NULL, "",
     "write per-particle values to epr.h5 + epr.xdmf"},
    {"write_fields", SGM_KEY_BOOL, "true", 0, -INFINITY, INFINITY, NULL, "",
     "write the spatial maps to fields.h5 + fields.xdmf"},
    {"classify", SGM_KEY_BOOL, "true", 0, -INFINITY, INFINITY, NULL, "",
     "periodic boxes: classify every particle of every frame as dilute / interface / dense bulk "
     "by its local packing fraction phi_i (observables.h), store phi_local and phase_class in "
     "epr.h5 and the count, mean |v_g|^2 and mean total EPR of each class in metrics.json "
     "(ignored for open boxes)"},
    {"local_radius", SGM_KEY_REAL, "5.0", 0, 1e-9, INFINITY, NULL, "a",
     "radius r of the local density for classify, in units of the particle radius a: phi_i = "
     "n_i (a/r)^d with n_i the other particles within r (minimum image)"},
    {"phi_dilute", SGM_KEY_REAL, "0.3", 0, 0, INFINITY, NULL, "",
     "classify: phi_i below this is dilute (gas)"},
    {"phi_dense", SGM_KEY_REAL, "0.6", 0, 0, INFINITY, NULL, "",
     "classify: phi_i at or above this is dense bulk; in between is interface (must be >= "
     "phi_dilute)"},
    {"attention_ids", SGM_KEY_INT_ARRAY, "[]", 0, 0, INFINITY, NULL, "",
     "global ids of particles whose attention rollout (eq. 93) of the local transformer of "
     "model.h5 ([model], [epr] model) is written with their neighbour ids to attention.h5 "
     "(empty: none; needs a periodic box)"},
    {"attention_frames", SGM_KEY_INT_ARRAY, "[]", 0, 0, INFINITY, NULL, "frames",
     "trajectory frames of the attention rollout (empty: [epr] first)"},
    {"flow_frames", SGM_KEY_INT_ARRAY, "[]", 0, 0, INFINITY, NULL, "frames",
     "trajectory frames from which probability-flow trajectories dR/dt = v(R) (eq. 7) are "
     "integrated into flow_f<frame>.h5 (empty: none)"},
    {"flow_time", SGM_KEY_REAL, "1.0", 0, 1e-300, INFINITY, NULL, "time",
     "flow time of each probability-flow trajectory"},
    {"flow_outputs", SGM_KEY_INT, "20", 0, 1, 1e7, NULL, "",
     "snapshots written after the initial one, equally spaced in flow time"},
    {"flow_scheme", SGM_KEY_STRING, "\"5dp\"", 0, -INFINITY, INFINITY, "3bs|5f|5dp|5bs|6vr|7vr|8vr",
     "",
     "embedded Runge-Kutta pair of PETSc TSRK for the flow (error-controlled; "
     "-flow_ts_rk_type overrides)"},
    {"flow_rtol", SGM_KEY_REAL, "1e-6", 0, 0, INFINITY, NULL, "",
     "relative tolerance of the flow's local error control (-flow_ts_rtol overrides)"},
    {"flow_atol", SGM_KEY_REAL, "1e-8", 0, 0, INFINITY, NULL, "length",
     "absolute tolerance of the flow's local error control (-flow_ts_atol overrides)"},
    {"flow_dt", SGM_KEY_REAL, "0.0", 0, 0, INFINITY, NULL, "time",
     "initial flow step (0 = flow_time / 1000; adapted afterwards)"},
    {"flow_max_steps", SGM_KEY_INT, "1000000", 0, 1, INFINITY, NULL, "",
     "most Runge-Kutta steps per flow trajectory (an error beyond)"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL}};

const SgmTableSpec sgm_table_epr = {
    "epr", "entropy production: score, velocity field, per-particle EPR, diagnostics, maps",
    epr_keys, 0};

PetscErrorCode sgm_epr_config_check(SgmConfig cfg, SgmProblems pb)
{
  int nst;
  const char *const *st;
  const char *score;
  PetscBool epr = PETSC_FALSE;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string_array(cfg, "run.stages", &nst, &st));
  for (int i = 0; i < nst; i++)
    if (!strcmp(st[i], "epr")) epr = PETSC_TRUE;
  PetscCall(sgm_config_get_string(cfg, "epr.score", &score));
  if (!epr) PetscFunctionReturn(PETSC_SUCCESS);
  if (!strcmp(score, "fpe_pair")) {
    SgmAoupParams p;
    char why[256];
    int64_t nh;
    PetscCall(sgm_aoup_params_from_config(cfg, 0, &p));
    PetscCall(sgm_score_fpe_pair_requirements(&p, why, sizeof why));
    if (why[0]) sgm_config_problem(pb, "epr.score", "score \"fpe_pair\" %s", why);
    PetscCall(sgm_config_get_int(cfg, "epr.fpe_nh", &nh));
    if (nh != 0 && nh < 8)
      sgm_config_problem(pb, "epr.fpe_nh", "must be 0 (the default grid) or >= 8 (got %lld)",
                         (long long)nh);
  }
  double lo, hi;
  PetscCall(sgm_config_get_real(cfg, "epr.phi_dilute", &lo));
  PetscCall(sgm_config_get_real(cfg, "epr.phi_dense", &hi));
  if (lo > hi)
    sgm_config_problem(pb, "epr.phi_dilute", "%g must not exceed [epr] phi_dense = %g", lo, hi);
  /* the files it reads, unless an earlier stage of this run writes them */
  PetscCall(sgm_h5md_check_input(cfg, pb, "epr.trajectory", "epr.group", "epr"));
  int nid;
  const int64_t *ids;
  PetscCall(sgm_config_get_int_array(cfg, "epr.attention_ids", &nid, &ids));
  if (nid > 0) { /* the rollout of the local transformer, whatever the score */
    const char *kind, *bnd;
    int64_t n;
    PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
    PetscCall(sgm_config_get_string(cfg, "system.boundary", &bnd));
    PetscCall(sgm_config_get_int(cfg, "system.n", &n));
    if (strcmp(kind, "local_transformer") || strcmp(bnd, "periodic"))
      sgm_config_problem(pb, "epr.attention_ids",
                         "the attention rollout is of the local transformer in a periodic box "
                         "([model] kind is \"%s\", [system] boundary \"%s\")",
                         kind, bnd);
    for (int k = 0; k < nid; k++)
      if (ids[k] < 0 || ids[k] >= n) {
        sgm_config_problem(pb, "epr.attention_ids", "id %lld is outside [0, %lld) ([system] n)",
                           (long long)ids[k], (long long)n);
        break;
      }
  }
  if (!strcmp(score, "model") || nid > 0) {
    char path[PETSC_MAX_PATH_LEN];
    PetscCall(sgm_config_check_input_file(cfg, pb, "epr.model", "model.h5", "epr", "train", path,
                                          sizeof path));
    if (path[0]) PetscCall(sgm_score_model_check_file(cfg, pb, "epr.model", path));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Quantities mapped onto the grid (after the count). */
static const int map_q[] = {SGM_EPR_Q_TOT, SGM_EPR_Q_TOT_X, SGM_EPR_Q_TOT_G,
                            SGM_EPR_Q_SYS, SGM_EPR_Q_SYS_X, SGM_EPR_Q_SYS_G};
#define NMAP ((int)(sizeof map_q / sizeof map_q[0]))

static PetscLogEvent ev_epr, ev_write;

const char *const sgm_epr_class_names[SGM_EPR_NCLASS] = {"dilute", "interface", "dense"};

typedef struct {
  int64_t nx, ny;
  double origin[2], h[2];
  double *acc; /* [(1 + NMAP)][ny][nx]: count, then sums */
  int64_t outside;
} Maps;

static void block_of(int64_t n, int size, int rank, int64_t *start, int64_t *count)
{
  const int64_t q = n / size, r = n % size;
  *count = q + (rank < r);
  *start = q * rank + (rank < r ? rank : r);
}

static int owner_of(int64_t n, int size, int64_t id)
{
  const int64_t q = n / size, r = n % size;
  return id < r * (q + 1) ? (int)(id / (q + 1)) : (int)(r + (id - r * (q + 1)) / q);
}

/* Sends records of R doubles (first slot: the id's bytes) to the ranks owning their id block and
 * returns this rank's block sorted by id in *out (count = block size). */
static PetscErrorCode to_id_blocks(MPI_Comm comm, int64_t n, int R, int64_t nrec, const double *rec,
                                   double *out)
{
  PetscMPIInt size, rank;
  int *sc, *sd, *rc, *rd;
  double *sbuf, *rbuf;
  int64_t start, count;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  block_of(n, size, rank, &start, &count);
  PetscCall(PetscCalloc4(size, &sc, size + 1, &sd, size, &rc, size + 1, &rd));
  for (int64_t i = 0; i < nrec; i++) {
    int64_t id;
    memcpy(&id, &rec[i * R], sizeof id);
    sc[owner_of(n, size, id)] += R;
  }
  for (int r = 0; r < size; r++) sd[r + 1] = sd[r] + sc[r];
  PetscCallMPI(MPI_Alltoall(sc, 1, MPI_INT, rc, 1, MPI_INT, comm));
  for (int r = 0; r < size; r++) rd[r + 1] = rd[r] + rc[r];
  PetscCheck(rd[size] == count * R, comm, PETSC_ERR_PLIB, "id block of rank %d: %d of %lld rows",
             rank, rd[size] / R, (long long)count);
  PetscCall(PetscMalloc2(sd[size] + 1, &sbuf, rd[size] + 1, &rbuf));
  {
    int *pos;
    PetscCall(PetscMalloc1(size, &pos));
    for (int r = 0; r < size; r++) pos[r] = sd[r];
    for (int64_t i = 0; i < nrec; i++) {
      int64_t id;
      memcpy(&id, &rec[i * R], sizeof id);
      const int o = owner_of(n, size, id);
      memcpy(&sbuf[pos[o]], &rec[i * R], sizeof(double) * (size_t)R);
      pos[o] += R;
    }
    PetscCall(PetscFree(pos));
  }
  PetscCallMPI(MPI_Alltoallv(sbuf, sc, sd, MPI_DOUBLE, rbuf, rc, rd, MPI_DOUBLE, comm));
  for (int64_t i = 0; i < count; i++) {
    int64_t id;
    memcpy(&id, &rbuf[i * R], sizeof id);
    PetscCheck(id >= start && id < start + count, PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "id %lld outside the block [%lld, %lld)", (long long)id, (long long)start,
               (long long)(start + count));
    memcpy(&out[(id - start) * R], &rbuf[i * R], sizeof(double) * (size_t)R);
  }
  PetscCall(PetscFree2(sbuf, rbuf));
  PetscCall(PetscFree4(sc, sd, rc, rd));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Mean, standard deviation over frames and batch-means standard error of v[T]; *r1 (may be
 * NULL) is the lag-1 autocorrelation of the batch means: well above 0 means the batches are not
 * longer than the correlation time and the standard error is underestimated. */
static void frame_stats(const double *v, int64_t T, int64_t nb, double *mean, double *sd,
                        double *se, double *r1)
{
  if (r1) *r1 = NAN;
  double m = 0, s = 0;
  for (int64_t t = 0; t < T; t++) m += v[t];
  m = T > 0 ? m / (double)T : NAN;
  for (int64_t t = 0; t < T; t++) s += (v[t] - m) * (v[t] - m);
  *mean = m;
  *sd = T > 1 ? sqrt(s / (double)(T - 1)) : NAN;
  if (nb > T) nb = T;
  if (nb < 2) {
    *se = NAN;
    return;
  }
  /* batches of consecutive frames; the first T % nb batches take one frame more */
  double bm = 0, bs = 0, *b = malloc(sizeof(double) * (size_t)nb);
  int64_t t = 0;
  for (int64_t k = 0; k < nb; k++) {
    const int64_t len = T / nb + (k < T % nb);
    double acc = 0;
    for (int64_t u = 0; u < len; u++) acc += v[t++];
    b[k] = acc / (double)len;
    bm += b[k];
  }
  bm /= (double)nb;
  double c1 = 0;
  for (int64_t k = 0; k < nb; k++) bs += (b[k] - bm) * (b[k] - bm);
  for (int64_t k = 0; k + 1 < nb; k++) c1 += (b[k] - bm) * (b[k + 1] - bm);
  if (r1 && bs > 0) *r1 = c1 / bs;
  free(b);
  *se = sqrt(bs / (double)(nb - 1) / (double)nb);
}

/* Trajectory frames read per block: about 16 MiB of x and g, at least one frame. */
static int64_t frames_per_block(int64_t n, int dim, int64_t T)
{
  int64_t b = (int64_t)(16.0 * 1024 * 1024 / (16.0 * (double)(n * dim) + 1.0));
  return b < 1 ? 1 : (b > T ? T : b);
}

static PetscErrorCode maps_setup(SgmRun *run, SgmAoup s, const char *traj, const char *group,
                                 int64_t first, int64_t stride, int64_t T, Maps *m)
{
  const SgmAoupParams *p = &s->p;
  int ng;
  const int64_t *gr;
  double ext;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_int_array(run->cfg, "epr.grid", &ng, &gr));
  PetscCall(sgm_config_get_real(run->cfg, "epr.map_extent", &ext));
  int64_t want[2] = {ng > 0 ? gr[0] : 0, ng > 1 ? gr[1] : (ng > 0 ? gr[0] : 0)};
  if (p->dim == 1) want[1] = 1;
  if (p->periodic) {
    for (int k = 0; k < 2; k++) {
      if (want[k] == 0) want[k] = k < p->dim ? s->decomp.ncell[k] : 1;
      m->origin[k] = 0.0;
      m->h[k] = (k < p->dim ? p->L : 1.0) / (double)want[k];
    }
  } else {
    double half = ext;
    if (half == 0.0) {
      /* cover the placement square and every particle of the selected frames */
      double *x, mx = 0.5 * p->L;
      const int64_t B = frames_per_block(p->n, p->dim, T);
      PetscCall(PetscMalloc1(B * p->n * p->dim, &x));
      for (int64_t t = 0; t < T; t += B) {
        const int64_t nb = PetscMin(B, T - t);
        PetscCall(sgm_epr_read_frames(run->comm, traj, group, first + t * stride, stride, nb,
                                      p->dim, p->n, x, NULL, NULL));
        for (int64_t i = 0; i < nb * p->n * p->dim; i++) mx = PetscMax(mx, fabs(x[i]));
      }
      PetscCall(PetscFree(x));
      half = mx * (1.0 + 1e-9) + 1e-12;
    }
    for (int k = 0; k < 2; k++) {
      if (want[k] == 0) want[k] = k < p->dim ? 32 : 1;
      m->origin[k] = k < p->dim ? -half : -0.5;
      m->h[k] = (k < p->dim ? 2.0 * half : 1.0) / (double)want[k];
    }
  }
  m->nx = want[0];
  m->ny = want[1];
  PetscCall(PetscCalloc1((size_t)(1 + NMAP) * m->nx * m->ny, &m->acc));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static void maps_add(Maps *m, int dim, int periodic, double L, const double *x, const double *q)
{
  int64_t c[2] = {0, 0}, nc[2] = {m->nx, m->ny};
  for (int k = 0; k < dim; k++) {
    const double u = periodic ? sgm_wrap(x[k], L) : x[k];
    c[k] = (int64_t)floor((u - m->origin[k]) / m->h[k]);
    if (periodic && c[k] >= nc[k]) c[k] = nc[k] - 1; /* round-off at the upper edge */
    if (c[k] < 0 || c[k] >= nc[k]) {
      m->outside++;
      return;
    }
  }
  const int64_t cell = c[0] + c[1] * m->nx, nn = m->nx * m->ny;
  m->acc[cell] += 1.0;
  for (int f = 0; f < NMAP; f++) m->acc[(1 + f) * nn + cell] += q[map_q[f]];
}

static PetscErrorCode maps_write(SgmRun *run, Maps *m, int64_t T, int dim)
{
  const int64_t nn = m->nx * m->ny;
  double *all;
  char tmp[PETSC_MAX_PATH_LEN], xtmp[PETSC_MAX_PATH_LEN];
  const char *names[2 + NMAP];
  int64_t outside;
  PetscFunctionBeginUser;
  PetscCall(PetscMalloc1((size_t)(2 + NMAP) * nn, &all));
  PetscCallMPI(
      MPI_Allreduce(m->acc, all + nn, (int)((1 + NMAP) * nn), MPI_DOUBLE, MPI_SUM, run->comm));
  PetscCallMPI(MPI_Allreduce(&m->outside, &outside, 1, MPI_INT64_T, MPI_SUM, run->comm));
  /* layout of `all`: density, count, then the mean of each mapped quantity */
  const double area = m->h[0] * (dim > 1 ? m->h[1] : 1.0);
  names[0] = "density";
  names[1] = "count";
  for (int64_t c = 0; c < nn; c++) {
    const double cnt = all[nn + c];
    all[c] = T > 0 ? cnt / ((double)T * area) : 0.0;
    for (int f = 0; f < NMAP; f++)
      all[(2 + f) * nn + c] = cnt > 0 ? all[(2 + f) * nn + c] / cnt : 0;
  }
  for (int f = 0; f < NMAP; f++) names[2 + f] = sgm_epr_quantity_name(map_q[f]);
  SgmFieldsGrid g = {m->nx, m->ny, {m->origin[0], m->origin[1]}, {m->h[0], m->h[1]}, T};
  PetscCall(sgm_run_tmp_path(run, "fields.h5", tmp, sizeof tmp));
  PetscCall(sgm_run_tmp_path(run, "fields.xdmf", xtmp, sizeof xtmp));
  PetscCall(sgm_epr_fields_write(run->comm, tmp, xtmp, "fields.h5", &g, 2 + NMAP, names, all));
  PetscCall(sgm_run_commit_file(run, "fields.h5"));
  PetscCall(sgm_run_commit_file(run, "fields.xdmf"));
  if (outside)
    PetscCall(sgm_log(run->comm, "epr: %lld particle-frames outside the map (map_extent)\n",
                      (long long)outside));
  PetscCall(PetscFree(all));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_stage_epr(SgmRun *run)
{
  SgmConfig cfg = run->cfg;
  SgmAoupParams p;
  SgmAoup s = NULL;
  SgmScoreProvider sp = NULL;
  SgmEprFile ef = NULL;
  const char *score, *group;
  char traj[PETSC_MAX_PATH_LEN];
  int64_t first, last, stride, nb, nfile;
  PetscBool set, exists, wpart, wfields, classify;
  double rloc_a, phi_lo, phi_hi;
  PetscMPIInt rank, size;
  Maps maps;
  static int registered;
  PetscFunctionBeginUser;
  if (!registered) {
    PetscClassId cid;
    PetscCall(PetscClassIdRegister("SGM epr", &cid));
    PetscCall(PetscLogEventRegister("SgmEpr", cid, &ev_epr));
    PetscCall(PetscLogEventRegister("SgmEprWrite", cid, &ev_write));
    registered = 1;
  }
  memset(&maps, 0, sizeof maps);
  PetscCallMPI(MPI_Comm_rank(run->comm, &rank));
  PetscCallMPI(MPI_Comm_size(run->comm, &size));
  PetscCall(sgm_aoup_params_from_config(cfg, run->seed, &p));
  PetscCall(sgm_config_get_string(cfg, "epr.score", &score));
  PetscCall(sgm_config_get_string(cfg, "epr.group", &group));
  PetscCall(sgm_config_get_int(cfg, "epr.first", &first));
  PetscCall(sgm_config_get_int(cfg, "epr.last", &last));
  PetscCall(sgm_config_get_int(cfg, "epr.stride", &stride));
  PetscCall(sgm_config_get_int(cfg, "epr.batches", &nb));
  PetscCall(sgm_config_get_bool(cfg, "epr.write_particles", &wpart));
  PetscCall(sgm_config_get_bool(cfg, "epr.write_fields", &wfields));
  PetscCall(sgm_config_get_bool(cfg, "epr.classify", &classify));
  PetscCall(sgm_config_get_real(cfg, "epr.local_radius", &rloc_a));
  PetscCall(sgm_config_get_real(cfg, "epr.phi_dilute", &phi_lo));
  PetscCall(sgm_config_get_real(cfg, "epr.phi_dense", &phi_hi));
  /* phi_dilute <= phi_dense: the input check (sgm_epr_config_check) */
  PetscCall(sgm_config_is_set(cfg, "epr.trajectory", &set));
  if (set) {
    const char *t;
    PetscCall(sgm_config_get_string(cfg, "epr.trajectory", &t));
    PetscCall(PetscStrncpy(traj, t, sizeof traj));
  } else
    PetscCall(sgm_run_path(run, "trajectory.h5", traj, sizeof traj));
  PetscCall(sgm_file_exists(run->comm, traj, F_OK, &exists));
  PetscCheck(exists, run->comm, SGM_ERR_USER,
             "epr: trajectory %s does not exist (run the simulate stage first or set [epr] "
             "trajectory)",
             traj);
  PetscCall(sgm_h5md_nframes(run->comm, traj, group, &nfile));
  if (last < 0) last = nfile - 1;
  PetscCheck(first <= last && last < nfile, run->comm, SGM_ERR_USER,
             "epr: frames [%lld, %lld] requested, %s has %lld", (long long)first, (long long)last,
             traj, (long long)nfile);
  const int64_t T = (last - first) / stride + 1, n = p.n;
  const int dim = p.dim;
  if (wpart) {
    PetscCall(sgm_run_check_writable(run, "epr.h5"));
    PetscCall(sgm_run_check_writable(run, "epr.xdmf"));
  }
  if (wfields) {
    PetscCall(sgm_run_check_writable(run, "fields.h5"));
    PetscCall(sgm_run_check_writable(run, "fields.xdmf"));
  }

  PetscCall(sgm_score_provider_create(run->comm, score, &p, cfg, &sp));
  PetscCall(sgm_aoup_create(run->comm, &p, &s));
  if (p.periodic && sp->range > s->rc + p.skin) {
    /* the provider sees neighbours up to sp->range (e.g. an attention window): widen the ghost
     * layer through the Verlet skin, which only enlarges the halo for a static frame */
    p.skin = sp->range - s->rc;
    PetscCall(sgm_aoup_destroy(&s));
    PetscCall(sgm_aoup_create(run->comm, &p, &s));
  }
  /* interface analysis (MIPS): local packing fraction from the observables module */
  const int do_cls = classify && p.periodic;
  SgmObservablesParams op;
  SgmObservables obs;
  memset(&obs, 0, sizeof obs);
  static const char *const cls_names[2] = {"phi_local", "phase_class"};
  if (do_cls) {
    sgm_observables_params_default(&op);
    op.r_local = rloc_a;
    op.sk_grid = -1;
    PetscCheck(rloc_a * p.a < 0.5 * p.L, run->comm, SGM_ERR_USER,
               "[epr] local_radius = %g (r = %g) must be below L/2 = %g", rloc_a, rloc_a * p.a,
               0.5 * p.L);
    PetscCall(sgm_observables_check(s, &op));
  }
  if (wfields) PetscCall(maps_setup(run, s, traj, group, first, stride, T, &maps));
  if (wpart) {
    char tmp[PETSC_MAX_PATH_LEN];
    SgmEprFileInfo info = {dim,      n, T, score, sgm_config_resolved_toml(cfg), do_cls ? 2 : 0,
                           cls_names};
    PetscCall(sgm_run_tmp_path(run, "epr.h5", tmp, sizeof tmp));
    PetscCall(sgm_epr_file_create(run->comm, tmp, &info, &ef));
  }
  PetscCall(sgm_log(run->comm,
                    "epr: score \"%s\", %lld frames (%lld..%lld step %lld) of %s, N = %lld, d = "
                    "%d, %d ranks\n",
                    score, (long long)T, (long long)first, (long long)last, (long long)stride, traj,
                    (long long)n, dim, size));

  /* record: id, x, g, sx, sg, vx, vg (dim each), q[NQ] */
  const int R = 1 + SGM_EPR_NVEC * dim + SGM_EPR_NQ;
  int64_t bstart, bcount;
  block_of(n, size, rank, &bstart, &bcount);
  double *x, *g, *series, *times, *blk, *vec[SGM_EPR_NVEC], *qb;
  int64_t *ids, *steps;
  const int64_t B = frames_per_block(n, dim, T);
  PetscCall(PetscMalloc4(B * n * dim, &x, B * n * dim, &g, n, &ids,
                         (size_t)(SGM_EPR_NQ + SGM_EPR_NSM) * T + 1, &series));
  double *serr; /* the per-frame score-error series (after the loop) */
  PetscCall(PetscMalloc1(T + 1, &serr));
  PetscCall(PetscMalloc4(T + 1, &times, (bcount + 1) * R, &blk, (bcount + 1) * SGM_EPR_NQ, &qb, B,
                         &steps));
  for (int v = 0; v < SGM_EPR_NVEC; v++) PetscCall(PetscMalloc1((bcount + 1) * dim, &vec[v]));
  for (int64_t i = 0; i < n; i++) ids[i] = i;
  double *sx = NULL, *sg = NULL, *dsx = NULL, *dsg = NULL, *dbx = NULL, *rec = NULL;
  int64_t cap = 0;
  /* classes: (id, phi) records of the observables' particles, their id block, the extra
   * per-particle outputs (phi, class) and the sums per class: count, |v_g|², total EPR, and the
   * summand of the exact score's |v_g|² lower bound */
  double *orec = NULL, *oblk = NULL, *xtra = NULL, csum[SGM_EPR_NCLASS][4] = {{0}};
  int64_t ocap = 0;
  if (do_cls) PetscCall(PetscMalloc2(2 * (bcount + 1), &oblk, 2 * (bcount + 1), &xtra));

  SgmProgress prog;
  PetscCall(sgm_progress_create(run->comm, "epr", T, (double)n, "particle-frames", &prog));
  const double t0 = MPI_Wtime();
  for (int64_t t = 0; t < T; t++) {
    const int64_t b = t % B;
    if (b == 0)
      PetscCall(sgm_epr_read_frames(run->comm, traj, group, first + t * stride, stride,
                                    PetscMin(B, T - t), dim, n, x, g, steps));
    const int64_t step = steps[b];
    times[t] = (double)step * p.dt;
    PetscCall(PetscLogEventBegin(ev_epr, 0, 0, 0, 0));
    PetscCall(sgm_aoup_set_state(s, n, ids, x + b * n * dim, g + b * n * dim, step));
    PetscCall(sgm_aoup_forces(s));
    const SgmParticles *P = &s->part;
    const int64_t nl = P->nlocal;
    if (nl > cap) {
      PetscCall(PetscFree6(sx, sg, dsx, dsg, dbx, rec));
      cap = nl;
      PetscCall(PetscMalloc6(cap * dim, &sx, cap * dim, &sg, cap, &dsx, cap, &dsg, cap, &dbx,
                             cap * R, &rec));
    }
    PetscCall(sgm_epr_drift_divergence(s, dbx));
    PetscCall(sgm_score_provider_eval(sp, P, 0, nl, sx, sg, dsx, dsg));
    const SgmEprCoeffs co = {p.v0, p.gamma, p.eps};
    /* frame sums: the NQ quantities, then the NSM score-matching terms */
    double qsum[SGM_EPR_NQ + SGM_EPR_NSM] = {0};
    for (int64_t i = 0; i < nl; i++) {
      double *r = rec + i * R, *q = r + 1 + SGM_EPR_NVEC * dim;
      memcpy(r, &P->id[i], sizeof(int64_t));
      memcpy(r + 1, P->x + i * dim, sizeof(double) * dim);
      memcpy(r + 1 + dim, P->g + i * dim, sizeof(double) * dim);
      memcpy(r + 1 + 2 * dim, sx + i * dim, sizeof(double) * dim);
      memcpy(r + 1 + 3 * dim, sg + i * dim, sizeof(double) * dim);
      sgm_epr_particle(&co, dim, P->g + i * dim, P->f + i * dim, sx + i * dim, sg + i * dim, dsx[i],
                       dsg[i], dbx[i], r + 1 + 4 * dim, r + 1 + 5 * dim, q);
      for (int k = 0; k < SGM_EPR_NQ; k++) {
        PetscCheck(isfinite(q[k]), PETSC_COMM_SELF, PETSC_ERR_FP,
                   "epr: %s of particle %lld is not finite at step %lld", sgm_epr_quantity_name(k),
                   (long long)P->id[i], (long long)step);
        qsum[k] += q[k];
      }
      double tsm[SGM_EPR_NSM];
      sgm_epr_score_terms(&co, dim, sx + i * dim, sg + i * dim, dsx[i], dsg[i], dbx[i], tsm);
      for (int k = 0; k < SGM_EPR_NSM; k++) qsum[SGM_EPR_NQ + k] += tsm[k];
      if (wfields) maps_add(&maps, dim, p.periodic, p.L, P->x + i * dim, q);
    }
    double qall[SGM_EPR_NQ + SGM_EPR_NSM];
    PetscCallMPI(
        MPI_Allreduce(qsum, qall, SGM_EPR_NQ + SGM_EPR_NSM, MPI_DOUBLE, MPI_SUM, run->comm));
    for (int k = 0; k < SGM_EPR_NQ + SGM_EPR_NSM; k++) series[k * T + t] = qall[k] / (double)n;
    PetscCall(PetscLogEventEnd(ev_epr, 0, 0, 0, 0));
    if (wpart || do_cls) PetscCall(to_id_blocks(run->comm, n, R, nl, rec, blk));
    if (do_cls) {
      PetscCall(sgm_observables_compute(s, &op, &obs));
      if (obs.nlocal > ocap) {
        PetscCall(PetscFree(orec));
        ocap = obs.nlocal;
        PetscCall(PetscMalloc1(2 * ocap, &orec));
      }
      for (int64_t k = 0; k < obs.nlocal; k++) {
        memcpy(&orec[2 * k], &obs.id[k], sizeof(int64_t));
        orec[2 * k + 1] = obs.phi_loc[k];
      }
      PetscCall(to_id_blocks(run->comm, n, 2, obs.nlocal, orec, oblk));
      for (int64_t i = 0; i < bcount; i++) {
        const double phi = oblk[2 * i + 1], *r = blk + i * R;
        const int c = sgm_epr_phase_class(phi, phi_lo, phi_hi);
        const double *gi = r + 1 + dim, *vgi = r + 1 + 5 * dim, *q = r + 1 + SGM_EPR_NVEC * dim;
        double vg2 = 0, gv = 0;
        for (int k = 0; k < dim; k++) vg2 += vgi[k] * vgi[k], gv += gi[k] * vgi[k];
        xtra[2 * i] = phi;
        xtra[2 * i + 1] = (double)c;
        csum[c][0] += 1.0;
        csum[c][1] += vg2;
        csum[c][2] += q[SGM_EPR_Q_TOT];
        /* the summand of the lower bound on the exact score's class mean of |v_g|^2
         * (docs/derivations.md, "A lower bound on the exact score's |v_g|^2 by class") */
        csum[c][3] += 2.0 * p.gamma * (q[SGM_EPR_Q_SYS_G] - gv) - vg2;
      }
    }
    if (wpart) {
      PetscCall(PetscLogEventBegin(ev_write, 0, 0, 0, 0));
      for (int64_t i = 0; i < bcount; i++) {
        for (int v = 0; v < SGM_EPR_NVEC; v++)
          memcpy(vec[v] + i * dim, blk + i * R + 1 + v * dim, sizeof(double) * dim);
        memcpy(qb + i * SGM_EPR_NQ, blk + i * R + 1 + SGM_EPR_NVEC * dim,
               sizeof(double) * SGM_EPR_NQ);
      }
      PetscCall(sgm_epr_file_write_frame(ef, t, step, times[t], bstart, bcount,
                                         (const double *const *)vec, qb, SGM_EPR_NQ,
                                         do_cls ? xtra : NULL));
      PetscCall(PetscLogEventEnd(ev_write, 0, 0, 0, 0));
    }
    PetscCall(sgm_progress_update(prog, t + 1));
  }
  const double wall = MPI_Wtime() - t0;
  PetscCall(sgm_progress_destroy(&prog));

  /* statistics over frames */
  double mean[SGM_EPR_NQ], sd[SGM_EPR_NQ], se[SGM_EPR_NQ];
  double r1;
  for (int k = 0; k < SGM_EPR_NQ; k++)
    frame_stats(series + k * T, T, nb, &mean[k], &sd[k], &se[k], k == SGM_EPR_Q_TOT ? &r1 : NULL);
  SgmMetrics M = run->metrics;
  const double N = (double)n;
  PetscCall(sgm_metrics_set(M, "epr", "frames", (double)T));
  PetscCall(sgm_metrics_set(M, "epr", "epr_global", N * mean[SGM_EPR_Q_TOT]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_global_se", N * se[SGM_EPR_Q_TOT]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_batch_lag1", r1));
  if (r1 > 0.3)
    PetscCall(
        sgm_log(run->comm,
                "epr: warning: the batch means of the EPR are correlated (lag-1 %.2f with %lld "
                "batches): batches are not much longer than the correlation time and the "
                "standard errors are underestimated; use more frames or fewer batches\n",
                r1, (long long)PetscMin(nb, T)));
  PetscCall(sgm_metrics_set(M, "epr", "epr_per_particle", mean[SGM_EPR_Q_TOT]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_per_particle_se", se[SGM_EPR_Q_TOT]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_x_per_particle", mean[SGM_EPR_Q_TOT_X]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_g_per_particle", mean[SGM_EPR_Q_TOT_G]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_system_x_per_particle", mean[SGM_EPR_Q_SYS_X]));
  PetscCall(sgm_metrics_set(M, "epr", "epr_system_g_per_particle", mean[SGM_EPR_Q_SYS_G]));
  const struct {
    const char *name;
    int q;
  } diag[] = {{"div_v", SGM_EPR_Q_SYS},
              {"fpe_residual", SGM_EPR_Q_FPE},
              {"score_ibp", SGM_EPR_Q_SCORE_IBP},
              {"v_dot_s", SGM_EPR_Q_VS}};
  for (int k = 0; k < 4; k++) {
    char nm[64];
    const int q = diag[k].q;
    snprintf(nm, sizeof nm, "%s_mean", diag[k].name);
    PetscCall(sgm_metrics_set(M, "epr", nm, mean[q]));
    snprintf(nm, sizeof nm, "%s_std", diag[k].name);
    PetscCall(sgm_metrics_set(M, "epr", nm, sd[q]));
    snprintf(nm, sizeof nm, "%s_se", diag[k].name);
    PetscCall(sgm_metrics_set(M, "epr", nm, se[q]));
  }
  /* the score's squared error from stationarity (sgm_epr_score_terms): per frame
   * t0 + t1 - t2 = [|s|²_D + 2 ∇·(D s) - ∇·b] per particle; its mean is E|s - s_exact|²_D */
  const double *tsm = series + (size_t)SGM_EPR_NQ * T;
  for (int64_t t = 0; t < T; t++) serr[t] = tsm[t] + tsm[T + t] - tsm[2 * T + t];
  double em, esd, ese, lx, lxsd, lxse, lg, lgsd, lgse, db, dbsd, dbse;
  frame_stats(serr, T, nb, &em, &esd, &ese, NULL);
  frame_stats(tsm, T, nb, &lx, &lxsd, &lxse, NULL);
  frame_stats(tsm + T, T, nb, &lg, &lgsd, &lgse, NULL);
  frame_stats(tsm + 2 * T, T, nb, &db, &dbsd, &dbse, NULL);
  const double energy = -db, rel = em > 0 && energy > 0 ? sqrt(em / energy) : 0.0;
  PetscCall(sgm_metrics_set(M, "epr", "score_error_mean", em));
  PetscCall(sgm_metrics_set(M, "epr", "score_error_std", esd));
  PetscCall(sgm_metrics_set(M, "epr", "score_error_se", ese));
  PetscCall(sgm_metrics_set(M, "epr", "score_energy", energy));
  PetscCall(sgm_metrics_set(M, "epr", "score_error_rel", rel));
  PetscCall(sgm_metrics_set(M, "epr", "sm_loss_x_mean", lx));
  PetscCall(sgm_metrics_set(M, "epr", "sm_loss_x_se", lxse));
  PetscCall(sgm_metrics_set(M, "epr", "sm_loss_g_mean", lg));
  PetscCall(sgm_metrics_set(M, "epr", "sm_loss_g_se", lgse));
  PetscCall(sgm_metrics_set(M, "epr", "particle_frames_per_s", wall > 0 ? N * T / wall : 0.0));
  SgmTrapExact ex;
  const int have_exact = !p.periodic && p.k == 0.0 && sgm_score_trap_exact(&p, &ex) == 0;
  if (have_exact) {
    PetscCall(sgm_metrics_set(M, "epr", "epr_exact_per_particle", ex.tot));
    PetscCall(sgm_metrics_set(M, "epr", "epr_exact_global", N * ex.tot));
  }
  PetscCall(sgm_log(
      run->comm, "epr: global EPR %.6g +- %.2g (%.6g +- %.2g per particle; x %.4g, g %.4g)%s",
      N * mean[SGM_EPR_Q_TOT], N * se[SGM_EPR_Q_TOT], mean[SGM_EPR_Q_TOT], se[SGM_EPR_Q_TOT],
      mean[SGM_EPR_Q_TOT_X], mean[SGM_EPR_Q_TOT_G], have_exact ? "" : "\n"));
  if (have_exact) PetscCall(sgm_log(run->comm, "; exact trap value %.6g per particle\n", ex.tot));
  if (do_cls) {
    double call[SGM_EPR_NCLASS][4], vg2[SGM_EPR_NCLASS], lb[SGM_EPR_NCLASS];
    PetscCallMPI(MPI_Allreduce(csum, call, 4 * SGM_EPR_NCLASS, MPI_DOUBLE, MPI_SUM, run->comm));
    for (int c = 0; c < SGM_EPR_NCLASS; c++) {
      char nm[64];
      const double cnt = call[c][0];
      vg2[c] = cnt > 0 ? call[c][1] / cnt : NAN;
      snprintf(nm, sizeof nm, "class_count_%s", sgm_epr_class_names[c]);
      PetscCall(sgm_metrics_set(M, "epr", nm, cnt / (double)T));
      snprintf(nm, sizeof nm, "vg2_%s", sgm_epr_class_names[c]);
      PetscCall(sgm_metrics_set(M, "epr", nm, vg2[c]));
      snprintf(nm, sizeof nm, "epr_total_%s", sgm_epr_class_names[c]);
      PetscCall(sgm_metrics_set(M, "epr", nm, cnt > 0 ? call[c][2] / cnt : NAN));
      lb[c] = cnt > 0 ? call[c][3] / cnt : NAN;
      snprintf(nm, sizeof nm, "vg2_exact_lower_%s", sgm_epr_class_names[c]);
      PetscCall(sgm_metrics_set(M, "epr", nm, lb[c]));
    }
    const double rb = vg2[SGM_EPR_CLASS_INTERFACE] / vg2[SGM_EPR_CLASS_DENSE];
    const double rd = vg2[SGM_EPR_CLASS_INTERFACE] / vg2[SGM_EPR_CLASS_DILUTE];
    PetscCall(sgm_metrics_set(M, "epr", "vg2_ratio_interface_dense", rb));
    PetscCall(sgm_metrics_set(M, "epr", "vg2_ratio_interface_dilute", rd));
    PetscCall(sgm_log(run->comm,
                      "epr: classes by phi_local (r = %g a; dilute < %g <= interface < %g <= "
                      "dense): particles per frame %.1f / %.1f / %.1f, mean |v_g|^2 %.4g / %.4g / "
                      "%.4g; interface/dense %.3g, interface/dilute %.3g; the exact score's mean "
                      "|v_g|^2 is at least %.4g / %.4g / %.4g (on frames the model did not train "
                      "on)\n",
                      rloc_a, phi_lo, phi_hi, call[0][0] / (double)T, call[1][0] / (double)T,
                      call[2][0] / (double)T, vg2[0], vg2[1], vg2[2], rb, rd, lb[0], lb[1], lb[2]));
  }
  for (int k = 0; k < 4; k++)
    PetscCall(sgm_log(run->comm, "epr: %-13s mean %+.3e  std %.3e  se %.2e\n", diag[k].name,
                      mean[diag[k].q], sd[diag[k].q], se[diag[k].q]));
  PetscCall(sgm_log(run->comm,
                    "epr: score error E|s - s_exact|^2_D %+.4g +- %.2g per particle (relative "
                    "%.3g of E|s|^2_D = -E[div b] = %.4g); held-out D-weighted sm loss x %+.4g, "
                    "g %+.4g\n",
                    em, ese, rel, energy, lx, lg));
  if (em < -3.0 * ese)
    PetscCall(sgm_log(run->comm,
                      "epr: warning: the score error estimate is negative beyond 3 standard "
                      "errors: the frames are not samples of the stationary law of this SDE "
                      "(burn-in left in, another time step or other [system] parameters)\n"));
  PetscCall(sgm_log(run->comm,
                    "epr: %lld frames of %lld particles in %.3f s: %.4g particle-frames/s\n",
                    (long long)T, (long long)n, wall, wall > 0 ? N * T / wall : 0.0));

  if (wpart) {
    char fin[PETSC_MAX_PATH_LEN], xtmp[PETSC_MAX_PATH_LEN];
    for (int k = 0; k < SGM_EPR_NQ; k++)
      PetscCall(sgm_epr_file_write_series(ef, sgm_epr_quantity_name(k), series + k * T));
    static const char *const smn[SGM_EPR_NSM] = {"sm_loss_x", "sm_loss_g", "div_b"};
    for (int k = 0; k < SGM_EPR_NSM; k++)
      PetscCall(sgm_epr_file_write_series(ef, smn[k], tsm + k * T));
    PetscCall(sgm_epr_file_write_series(ef, "score_error", serr));
    PetscCall(sgm_epr_file_set_attr(ef, "epr_global", N * mean[SGM_EPR_Q_TOT]));
    PetscCall(sgm_epr_file_set_attr(ef, "epr_global_se", N * se[SGM_EPR_Q_TOT]));
    PetscCall(sgm_epr_file_close(&ef));
    PetscCall(sgm_run_commit_file(run, "epr.h5"));
    PetscCall(sgm_run_path(run, "epr.h5", fin, sizeof fin));
    PetscCall(sgm_run_tmp_path(run, "epr.xdmf", xtmp, sizeof xtmp));
    PetscCall(
        sgm_epr_xdmf_write(run->comm, xtmp, "epr.h5", dim, n, T, times, do_cls ? 2 : 0, cls_names));
    PetscCall(sgm_run_commit_file(run, "epr.xdmf"));
  }
  if (wfields) PetscCall(maps_write(run, &maps, T, dim));
  PetscCall(sgm_epr_attention_stage(run, s, traj, group, first));
  PetscCall(sgm_epr_flow_stage(run, s, sp, traj, group));

  PetscCall(PetscFree6(sx, sg, dsx, dsg, dbx, rec));
  for (int v = 0; v < SGM_EPR_NVEC; v++) PetscCall(PetscFree(vec[v]));
  PetscCall(PetscFree4(times, blk, qb, steps));
  PetscCall(PetscFree4(x, g, ids, series));
  PetscCall(PetscFree(serr));
  PetscCall(PetscFree(maps.acc));
  PetscCall(PetscFree(orec));
  PetscCall(PetscFree2(oblk, xtra));
  PetscCall(sgm_observables_free(&obs));
  PetscCall(sgm_score_provider_destroy(&sp));
  PetscCall(sgm_aoup_destroy(&s));
  PetscFunctionReturn(PETSC_SUCCESS);
}
