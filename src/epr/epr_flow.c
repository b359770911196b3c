/* Probability-flow trajectories of the `epr` stage (paper 002 eq. 7): dR/dt = v(R),
 * v = b - D s, from chosen trajectory frames ([epr] flow_frames), integrated with PETSc TS and
 * an adaptive Runge-Kutta scheme (TSRK with error control; [epr] flow_scheme, flow_rtol,
 * flow_atol; every TS option can be overridden on the command line with the prefix flow_, e.g.
 * -flow_ts_rk_type 3bs -flow_ts_adapt_monitor).
 *
 * Owns: the flow ODE and the flow_f<frame>.h5 files (H5MD layout of the simulate stage's
 * trajectory, written by sgm_h5md_*, with an XDMF sidecar; docs/formats.md).
 *
 * Parallel design (documented choice): the ODE state (x_i, g_i of all N particles) is a PETSc
 * Vec distributed in contiguous id blocks, so TS's norms and step control are collective and
 * identical on every rank. Each right-hand-side evaluation gathers the full state on every rank
 * (MPI_Allgatherv, N·2d doubles), rebuilds the engine state with sgm_aoup_set_state (which
 * recomputes owners and ghosts from the current positions, so particles may move anywhere
 * during the flow, across rank patches and periodic boundaries), evaluates the drift and the
 * score provider on the owned particles, and sums v by id into a full array (MPI_Allreduce) whose
 * id block each rank keeps. Trade-off: O(N) memory and communication per rank per evaluation
 * instead of O(N/P), the same cost the stage already pays for reading a frame; the flow is a
 * diagnostic run for a few frames, and this keeps it exact for any provider (the "model"
 * provider rebuilds its windows from the current positions each call) with no owner bookkeeping.
 * Positions are stored wrapped into the box in periodic systems (as in trajectory.h5); the state
 * itself is continuous.
 */
#include "sgm/epr.h"
#include "sgm/core.h"
#include "sgm/domain.h"
#include "sgm/epr_io.h"
#include "sgm/h5md.h"
#include "sgm/score_provider.h"

#include <math.h>
#include <petscts.h>
#include <string.h>

typedef struct {
  MPI_Comm comm;
  SgmAoup s;
  SgmScoreProvider sp;
  int dim;
  int64_t n, bstart, bcount, step0;
  PetscMPIInt *rc, *rd; /* Allgatherv counts and displacements (doubles) */
  int64_t *ids;
  double *zf, *xf, *gf, *vf; /* full state (n, 2d), x, g (n, d), v (n, 2d) */
  double *sx, *sg, *dsx, *dsg;
  int64_t cap, nrhs;
} Flow;

static PetscErrorCode flow_rhs(TS ts, PetscReal t, Vec Z, Vec F, void *ctx)
{
  Flow *c = (Flow *)ctx;
  const int dim = c->dim, w = 2 * dim;
  const SgmAoupParams *p = &c->s->p;
  const PetscScalar *z;
  PetscScalar *f;
  PetscFunctionBeginUser;
  (void)ts, (void)t;
  PetscCall(VecGetArrayRead(Z, &z));
  PetscCallMPI(MPI_Allgatherv(z, (PetscMPIInt)(c->bcount * w), MPI_DOUBLE, c->zf, c->rc, c->rd,
                              MPI_DOUBLE, c->comm));
  PetscCall(VecRestoreArrayRead(Z, &z));
  for (int64_t i = 0; i < c->n; i++)
    for (int k = 0; k < dim; k++) {
      c->xf[i * dim + k] = c->zf[i * w + k];
      c->gf[i * dim + k] = c->zf[i * w + dim + k];
    }
  PetscCall(sgm_aoup_set_state(c->s, c->n, c->ids, c->xf, c->gf, c->step0));
  PetscCall(sgm_aoup_forces(c->s));
  const SgmParticles *P = &c->s->part;
  const int64_t nl = P->nlocal;
  if (nl > c->cap) {
    PetscCall(PetscFree4(c->sx, c->sg, c->dsx, c->dsg));
    c->cap = nl;
    PetscCall(PetscMalloc4(nl * dim, &c->sx, nl * dim, &c->sg, nl, &c->dsx, nl, &c->dsg));
  }
  PetscCall(sgm_score_provider_eval(c->sp, P, 0, nl, c->sx, c->sg, c->dsx, c->dsg));
  PetscCall(PetscArrayzero(c->vf, c->n * w));
  for (int64_t i = 0; i < nl; i++) {
    double *v = c->vf + P->id[i] * w;
    const double *g = P->g + i * dim;
    for (int k = 0; k < dim; k++) {
      v[k] = P->f[i * dim + k] + p->v0 * g[k] - p->eps * c->sx[i * dim + k];
      v[dim + k] = -p->gamma * g[k] - p->gamma * c->sg[i * dim + k];
    }
  }
  PetscCallMPI(
      MPI_Allreduce(MPI_IN_PLACE, c->vf, (PetscMPIInt)(c->n * w), MPI_DOUBLE, MPI_SUM, c->comm));
  PetscCall(VecGetArray(F, &f));
  memcpy(f, c->vf + c->bstart * w, sizeof(double) * (size_t)(c->bcount * w));
  PetscCall(VecRestoreArray(F, &f));
  c->nrhs++;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* This rank's rows of the full (n, 2d) state as x and g arrays (wrapped in periodic boxes). */
static void split_block(const Flow *c, const double *z, double *x, double *g)
{
  const int dim = c->dim;
  const SgmAoupParams *p = &c->s->p;
  for (int64_t i = 0; i < c->bcount; i++)
    for (int k = 0; k < dim; k++) {
      const double u = z[i * 2 * dim + k];
      x[i * dim + k] = p->periodic ? sgm_wrap(u, p->L) : u;
      g[i * dim + k] = z[i * 2 * dim + dim + k];
    }
}

PetscErrorCode sgm_epr_flow_stage(SgmRun *run, SgmAoup s, SgmScoreProvider sp, const char *traj,
                                  const char *group)
{
  SgmConfig cfg = run->cfg;
  const SgmAoupParams *p = &s->p;
  int nfr;
  const int64_t *frv;
  int64_t nout, nfile, maxsteps;
  double tflow, rtol, atol, dt0;
  const char *scheme;
  PetscMPIInt rank, size;
  Flow c;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_int_array(cfg, "epr.flow_frames", &nfr, &frv));
  if (nfr == 0) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_config_get_real(cfg, "epr.flow_time", &tflow));
  PetscCall(sgm_config_get_int(cfg, "epr.flow_outputs", &nout));
  PetscCall(sgm_config_get_real(cfg, "epr.flow_rtol", &rtol));
  PetscCall(sgm_config_get_real(cfg, "epr.flow_atol", &atol));
  PetscCall(sgm_config_get_real(cfg, "epr.flow_dt", &dt0));
  PetscCall(sgm_config_get_int(cfg, "epr.flow_max_steps", &maxsteps));
  PetscCall(sgm_config_get_string(cfg, "epr.flow_scheme", &scheme));
  PetscCall(sgm_h5md_nframes(run->comm, traj, group, &nfile));
  for (int k = 0; k < nfr; k++)
    PetscCheck(frv[k] >= 0 && frv[k] < nfile, run->comm, SGM_ERR_USER,
               "[epr] flow_frames: frame %lld outside the %lld frames of %s", (long long)frv[k],
               (long long)nfile, traj);
  PetscCallMPI(MPI_Comm_rank(run->comm, &rank));
  PetscCallMPI(MPI_Comm_size(run->comm, &size));
  memset(&c, 0, sizeof c);
  c.comm = run->comm;
  c.s = s;
  c.sp = sp;
  c.dim = p->dim;
  c.n = p->n;
  const int dim = p->dim, w = 2 * dim;
  const int64_t n = p->n;
  {
    const int64_t q = n / size, r = n % size;
    c.bcount = q + (rank < r);
    c.bstart = q * rank + (rank < r ? rank : r);
  }
  PetscCall(PetscMalloc2(size, &c.rc, size + 1, &c.rd));
  c.rd[0] = 0;
  for (int r = 0; r < size; r++) {
    const int64_t q = n / size, cnt = q + (r < n % size);
    c.rc[r] = (PetscMPIInt)(cnt * w);
    c.rd[r + 1] = c.rd[r] + c.rc[r];
  }
  PetscCall(PetscMalloc5(n, &c.ids, n * w, &c.zf, n * dim, &c.xf, n * dim, &c.gf, n * w, &c.vf));
  for (int64_t i = 0; i < n; i++) c.ids[i] = i;
  double *bx, *bg;
  PetscCall(PetscMalloc2(c.bcount * dim + 1, &bx, c.bcount * dim + 1, &bg));

  Vec Z;
  TS ts;
  TSAdapt adapt;
  PetscCall(VecCreateMPI(run->comm, (PetscInt)(c.bcount * w), (PetscInt)(n * w), &Z));
  PetscCall(TSCreate(run->comm, &ts));
  PetscCall(TSSetProblemType(ts, TS_NONLINEAR));
  PetscCall(TSSetType(ts, TSRK));
  PetscCall(TSRKSetType(ts, scheme));
  PetscCall(TSSetRHSFunction(ts, NULL, flow_rhs, &c));
  PetscCall(TSSetTolerances(ts, atol, NULL, rtol, NULL));
  PetscCall(TSGetAdapt(ts, &adapt));
  PetscCall(TSAdaptSetType(adapt, TSADAPTBASIC));
  PetscCall(TSSetExactFinalTime(ts, TS_EXACTFINALTIME_MATCHSTEP));
  PetscCall(TSSetMaxSteps(ts, (PetscInt)maxsteps));
  PetscCall(TSSetOptionsPrefix(ts, "flow_"));
  PetscCall(TSSetFromOptions(ts));
  {
    TSType tt;
    PetscCall(TSGetType(ts, &tt));
    PetscCheck(!strcmp(tt, TSRK), run->comm, SGM_ERR_USER,
               "-flow_ts_type %s: the probability flow uses an explicit adaptive Runge-Kutta "
               "scheme (TSRK); choose the tableau with [epr] flow_scheme or -flow_ts_rk_type",
               tt);
  }

  int64_t tot_steps = 0, tot_rej = 0;
  for (int k = 0; k < nfr; k++) {
    char name[64], xname[64], tmp[PETSC_MAX_PATH_LEN], xtmp[PETSC_MAX_PATH_LEN];
    PetscScalar *z;
    PetscInt steps, rej;
    const int64_t fr = frv[k];
    snprintf(name, sizeof name, "flow_f%lld.h5", (long long)fr);
    snprintf(xname, sizeof xname, "flow_f%lld.xdmf", (long long)fr);
    PetscCall(sgm_run_check_writable(run, name));
    PetscCall(sgm_run_check_writable(run, xname));
    PetscCall(sgm_epr_read_frames(run->comm, traj, group, fr, 1, 1, dim, n, c.xf, c.gf, &c.step0));
    PetscCall(VecGetArray(Z, &z));
    for (int64_t i = 0; i < c.bcount; i++)
      for (int a = 0; a < dim; a++) {
        z[i * w + a] = c.xf[(c.bstart + i) * dim + a];
        z[i * w + dim + a] = c.gf[(c.bstart + i) * dim + a];
      }
    PetscCall(VecRestoreArray(Z, &z));
    PetscCall(sgm_run_tmp_path(run, name, tmp, sizeof tmp));
    const char *pn[5] = {"flow_time", "flow_rtol", "flow_atol", "source_frame", "source_step"};
    const double pv[5] = {tflow, rtol, atol, (double)fr, (double)c.step0};
    const char *rname;
    PetscCall(sgm_config_get_string(cfg, "run.name", &rname));
    SgmH5mdInfo info = {dim, n,  p->periodic, p->L, "all", rname, sgm_config_resolved_toml(cfg),
                        5,   pn, pv};
    PetscCall(sgm_h5md_create(run->comm, tmp, &info));
    PetscCall(TSSetTime(ts, 0.0));
    PetscCall(TSSetStepNumber(ts, 0));
    PetscCall(TSSetTimeStep(ts, dt0 > 0 ? dt0 : 1e-3 * tflow));
    c.nrhs = 0;
    for (int64_t o = 0; o <= nout; o++) {
      const double to = tflow * (double)o / (double)nout;
      if (o > 0) {
        PetscCall(TSSetMaxTime(ts, to));
        PetscCall(TSSolve(ts, Z));
        TSConvergedReason why;
        PetscReal tn;
        PetscCall(TSGetConvergedReason(ts, &why));
        PetscCall(TSGetTime(ts, &tn));
        PetscCheck(why > 0 && fabs(tn - to) <= 1e-10 * (1.0 + fabs(to)), run->comm,
                   PETSC_ERR_NOT_CONVERGED,
                   "epr flow from frame %lld stopped at t = %g of %g (%s); raise [epr] "
                   "flow_max_steps or loosen the tolerances",
                   (long long)fr, (double)tn, to, TSConvergedReasons[why]);
      }
      const PetscScalar *zr;
      PetscCall(VecGetArrayRead(Z, &zr));
      split_block(&c, zr, bx, bg);
      PetscCall(VecRestoreArrayRead(Z, &zr));
      PetscCall(sgm_h5md_append(run->comm, tmp, "all", o, o, to, dim, c.bstart, c.bcount, bx, bg));
    }
    PetscCall(TSGetStepNumber(ts, &steps));
    PetscCall(TSGetStepRejections(ts, &rej));
    tot_steps += steps;
    tot_rej += rej;
    PetscCall(sgm_run_commit_file(run, name));
    {
      char fin[PETSC_MAX_PATH_LEN];
      PetscCall(sgm_run_path(run, name, fin, sizeof fin));
      PetscCall(sgm_run_tmp_path(run, xname, xtmp, sizeof xtmp));
      PetscCall(sgm_xdmf_write_trajectory(run->comm, xtmp, fin, name, "all"));
      PetscCall(sgm_run_commit_file(run, xname));
    }
    PetscCall(sgm_log(run->comm,
                      "epr: probability flow from frame %lld over t = %g: %lld RK steps (%lld "
                      "rejected), %lld evaluations of v -> %s\n",
                      (long long)fr, tflow, (long long)steps, (long long)rej, (long long)c.nrhs,
                      name));
  }
  PetscCall(sgm_metrics_set(run->metrics, "epr", "flow_steps", (double)tot_steps));
  PetscCall(sgm_metrics_set(run->metrics, "epr", "flow_rejected_steps", (double)tot_rej));
  PetscCall(TSDestroy(&ts));
  PetscCall(VecDestroy(&Z));
  PetscCall(PetscFree2(bx, bg));
  PetscCall(PetscFree5(c.ids, c.zf, c.xf, c.gf, c.vf));
  PetscCall(PetscFree4(c.sx, c.sg, c.dsx, c.dsg));
  PetscCall(PetscFree2(c.rc, c.rd));
  PetscFunctionReturn(PETSC_SUCCESS);
}
