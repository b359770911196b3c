/* The "model" score provider: a trained network (model.h5 of the `train` stage) as the score of
 * the `epr` stage: the local transformer, or a full-state network ([model] kind = "mlp" or
 * "transformer").
 *
 * Full-state kinds: every rank's owned particles are scattered by global id into a full
 * configuration summed by one MPI_Allreduce (n (2d + 1) doubles, the last column counts owners
 * so that a lost or doubled particle is an error), every rank evaluates the network on it
 * (sgm_full_score_eval: s_x, s_g and the exact per-particle divergence blocks by JVPs) and keeps
 * its own particles' values. Redundant evaluation on every rank costs the same wall time as
 * evaluating on one rank and broadcasting, and needs no second message; these networks are for
 * small systems (n <= 64 in the paper). With [model] boltzmann_x (s_x = mu F / eps + N_x, App.
 * F.3.2) the conservative drift mu F and its per-particle divergence come from a PETSC_COMM_SELF
 * engine holding the gathered configuration (sgm_full_score_drift), exactly as the train stage
 * computes them for its frames and replicas, so both sides evaluate the same s_x.
 *
 * Owns: loading model.h5 ([epr] model, default model.h5 in the output directory) into the network
 * built from the [model] keys by the same function the train stage uses
 * (sgm_score_model_from_config), the K-nearest-neighbour windows of the frame (windows.h, with
 * their own halo grown on demand, so the provider declares range 0 and the stage keeps its
 * interaction-range ghosts), and the batched evaluation of s_g (and s_x when the model learned
 * it, [model] learn = "xg"; otherwise s_x = 0 and ∇_x·s_x = 0, the ε = 0 case of App. F.8) with
 * the exact divergences of the centre outputs from the network's forward-mode JVPs, in chunks of
 * [model] max_batch centres. Boltzmann-informed models output N_g with s_g = -g + N_g, so
 * ∇_g·s_g = ∇_g·N_g - d. Trade-offs: windows are rebuilt from the frame's owned particles at
 * every call, so each eval call is collective (the stage calls it once per frame on every rank);
 * the windows decomposition is the engine's (an engine built from the same [system] keys), and
 * results are then scattered by global id into a per-rank array of N (2d + 2) doubles summed by
 * one MPI_Allreduce, so an owner mismatch between windows and the caller's particles can never
 * lose a particle (cost O(N) per frame, small next to the network).
 */
#include "sgm/score_model.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/windows.h"

#include <string.h>

typedef struct {
  SgmScoreModelSpec ms;
  double *fx, *fg, *fsx, *fsg, *fdx, *fdg; /* full-state kinds: (n, dim) and (n) */
  double *ffc, *fdfc;                      /* boltzmann_x: mu F (n, dim) and div mu F (n) */
  int64_t *fids;                           /* boltzmann_x: 0 .. n-1 */
  SgmAoup feng;                            /* boltzmann_x: all n particles, PETSC_COMM_SELF */
  SgmAoup eng;                             /* owns the decomposition the windows use */
  SgmWindows w;
  float *X, *G, *M, *out, *divx, *divg;
  int64_t *centres;
  double *res; /* (n, 2 dim + 2): sx, sg, divx, divg by global id */
  int64_t n;
} ModelCtx;

static PetscErrorCode full_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  ModelCtx *c = (ModelCtx *)sp->ctx;
  const int D = P->dim, R = 2 * D + 1;
  PetscFunctionBeginUser;
  PetscCall(PetscArrayzero(c->res, c->n * R));
  for (int64_t i = 0; i < P->nlocal; i++) {
    const int64_t id = P->id[i];
    PetscCheck(id >= 0 && id < c->n, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
               "score \"model\": particle id %lld outside [0, %lld)", (long long)id,
               (long long)c->n);
    double *r = c->res + id * R;
    for (int a = 0; a < D; a++) r[a] = P->x[i * D + a], r[D + a] = P->g[i * D + a];
    r[2 * D] += 1.0;
  }
  PetscCallMPI(
      MPI_Allreduce(MPI_IN_PLACE, c->res, (PetscMPIInt)(c->n * R), MPI_DOUBLE, MPI_SUM, sp->comm));
  for (int64_t id = 0; id < c->n; id++) {
    const double *r = c->res + id * R;
    PetscCheck(r[2 * D] == 1.0, PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "score \"model\": particle %lld is owned by %g ranks", (long long)id, r[2 * D]);
    for (int a = 0; a < D; a++) c->fx[id * D + a] = r[a], c->fg[id * D + a] = r[D + a];
  }
  SgmFullScoreShift sh = {NULL, NULL};
  if (c->ms.boltzmann_x) {
    PetscCall(sgm_aoup_set_state(c->feng, c->n, c->fids, c->fx, c->fg, 0));
    PetscCall(sgm_full_score_drift(c->feng, c->ffc, c->fdfc));
    sh.fc = c->ffc, sh.divfc = c->fdfc;
  }
  PetscCall(sgm_full_score_eval(c->ms.fs, 1, c->fx, c->fg, &sh, c->fsx, c->fsg, c->fdx, c->fdg));
  for (int64_t u = 0; u < count; u++) {
    const int64_t id = P->id[i0 + u];
    for (int a = 0; a < D; a++)
      sx[u * D + a] = c->fsx[id * D + a], sg[u * D + a] = c->fsg[id * D + a];
    divx[u] = c->fdx[id];
    divg[u] = c->fdg[id];
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode model_eval(SgmScoreProvider sp, const SgmParticles *P, int64_t i0,
                                 int64_t count, double *sx, double *sg, double *divx, double *divg)
{
  ModelCtx *c = (ModelCtx *)sp->ctx;
  const int dim = P->dim, R = 2 * dim + 2, od = c->ms.cfg.out_dim;
  const int og = c->ms.learn_x ? dim : 0; /* first s_g component of the output */
  int64_t nc;
  const SgmParticles *wp;
  PetscFunctionBeginUser;
  PetscCall(sgm_windows_build(c->w, P->nlocal, P->id, P->x, P->g));
  PetscCall(sgm_windows_get(c->w, &nc, NULL, NULL, &wp));
  PetscCall(PetscArrayzero(c->res, c->n * R));
  for (int64_t b0 = 0; b0 < nc; b0 += c->ms.max_batch) {
    const int B = (int)PetscMin((int64_t)c->ms.max_batch, nc - b0);
    for (int b = 0; b < B; b++) c->centres[b] = b0 + b;
    PetscCall(sgm_windows_gather(c->w, B, c->centres, NULL, NULL, 0.0, c->X, c->G, c->M));
    PetscCall(sgm_nn_transformer_forward(c->ms.m, c->out, c->X, c->G, c->M, B));
    if (c->ms.learn_x) PetscCall(sgm_nn_transformer_divergence(c->ms.m, SGM_NN_INPUT_X, c->divx));
    PetscCall(sgm_nn_transformer_divergence(c->ms.m, SGM_NN_INPUT_G, c->divg));
    for (int b = 0; b < B; b++) {
      const int64_t i = b0 + b, id = wp->id[i];
      PetscCheck(id >= 0 && id < c->n, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
                 "score \"model\": particle id %lld outside [0, %lld)", (long long)id,
                 (long long)c->n);
      double *r = c->res + id * R;
      const float *o = c->out + (size_t)b * od;
      for (int k = 0; k < dim; k++) {
        r[k] = c->ms.learn_x ? (double)o[k] : 0.0;
        r[dim + k] = (double)o[og + k] - (c->ms.boltzmann ? wp->g[i * dim + k] : 0.0);
      }
      r[2 * dim] = c->ms.learn_x ? (double)c->divx[b] : 0.0;
      r[2 * dim + 1] = (double)c->divg[b] - (c->ms.boltzmann ? (double)dim : 0.0);
    }
  }
  PetscCallMPI(
      MPI_Allreduce(MPI_IN_PLACE, c->res, (PetscMPIInt)(c->n * R), MPI_DOUBLE, MPI_SUM, sp->comm));
  for (int64_t u = 0; u < count; u++) {
    const int64_t id = P->id[i0 + u];
    const double *r = c->res + id * R;
    for (int k = 0; k < dim; k++) sx[u * dim + k] = r[k], sg[u * dim + k] = r[dim + k];
    divx[u] = r[2 * dim];
    divg[u] = r[2 * dim + 1];
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode model_destroy(SgmScoreProvider sp)
{
  ModelCtx *c = (ModelCtx *)sp->ctx;
  PetscFunctionBeginUser;
  if (!c) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_windows_destroy(&c->w));
  PetscCall(sgm_aoup_destroy(&c->eng));
  PetscCall(sgm_aoup_destroy(&c->feng));
  PetscCall(PetscFree3(c->ffc, c->fdfc, c->fids));
  PetscCall(sgm_score_model_spec_destroy(&c->ms));
  PetscCall(PetscFree6(c->X, c->G, c->M, c->out, c->divx, c->divg));
  if (c->fx) {
    PetscCall(PetscFree6(c->fx, c->fg, c->fsx, c->fsg, c->fdx, c->fdg));
    PetscCall(PetscFree(c->res));
  } else if (c->res)
    PetscCall(PetscFree2(c->centres, c->res));
  PetscCall(PetscFree(sp->ctx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_model_create(SgmScoreProvider sp, SgmConfig cfg)
{
  const SgmAoupParams *p = &sp->p;
  ModelCtx *c;
  char path[PETSC_MAX_PATH_LEN];
  PetscBool set;
  double width;
  PetscFunctionBeginUser;
  PetscCheck(cfg, sp->comm, SGM_ERR_USER, "score \"model\" needs the input's [model] keys");
  PetscCall(sgm_config_is_set(cfg, "epr.model", &set));
  if (set) {
    const char *s;
    PetscCall(sgm_config_get_string(cfg, "epr.model", &s));
    PetscCall(PetscStrncpy(path, s, sizeof path));
  } else {
    const char *out;
    PetscCall(sgm_config_get_string(cfg, "run.output", &out));
    PetscCheck((size_t)snprintf(path, sizeof path, "%s/model.h5", out) < sizeof path, sp->comm,
               PETSC_ERR_ARG_SIZ, "path too long: %s/model.h5", out);
  }
  PetscCall(PetscNew(&c));
  sp->ctx = c;
  sp->eval = model_eval;
  sp->destroy = model_destroy;
  sp->range = 0.0; /* the windows grow their own halo */
  c->n = p->n;
  PetscCall(sgm_score_model_build(sp->comm, cfg, p->dim, p->n, p->seed, &c->ms));
  if (c->ms.fs) {
    const size_t nd = (size_t)p->n * p->dim;
    sp->eval = full_eval;
    PetscCall(sgm_epr_load_weights(sp->comm, cfg, path, sgm_score_model_params(&c->ms), c->ms.narch,
                                   c->ms.arch));
    PetscCall(PetscMalloc6(nd, &c->fx, nd, &c->fg, nd, &c->fsx, nd, &c->fsg, (size_t)p->n, &c->fdx,
                           (size_t)p->n, &c->fdg));
    PetscCall(PetscMalloc1((size_t)p->n * (2 * p->dim + 1), &c->res));
    if (c->ms.boltzmann_x) {
      PetscCall(PetscMalloc3(nd, &c->ffc, (size_t)p->n, &c->fdfc, (size_t)p->n, &c->fids));
      for (int64_t i = 0; i < p->n; i++) c->fids[i] = i;
      PetscCall(sgm_aoup_create(PETSC_COMM_SELF, p, &c->feng));
    }
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  PetscCheck(p->periodic, sp->comm, SGM_ERR_USER,
             "score \"model\": windows need a periodic box ([system] boundary = \"periodic\")");
  PetscCheck(c->ms.K < p->n, sp->comm, SGM_ERR_USER,
             "score \"model\": [model] K = %d needs N > K (N = %lld)", c->ms.K, (long long)p->n);
  PetscCall(sgm_epr_load_weights(sp->comm, cfg, path, sgm_nn_transformer_params(c->ms.m),
                                 c->ms.narch, c->ms.arch));
  PetscCall(sgm_aoup_create(sp->comm, p, &c->eng));
  PetscCall(sgm_score_model_window_width(cfg, p, c->ms.K, &width));
  PetscCall(sgm_windows_create(sp->comm, &c->eng->decomp, c->ms.K, width, &c->w));
  const size_t B = (size_t)c->ms.max_batch, T = (size_t)c->ms.K + 1;
  PetscCall(PetscMalloc6(B * T * p->dim, &c->X, B * T * p->dim, &c->G, B * T, &c->M,
                         B * c->ms.cfg.out_dim, &c->out, B, &c->divx, B, &c->divg));
  PetscCall(PetscMalloc2(B, &c->centres, (size_t)p->n * (2 * p->dim + 2), &c->res));
  PetscFunctionReturn(PETSC_SUCCESS);
}
