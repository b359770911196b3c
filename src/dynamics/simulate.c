/* The `simulate` stage: equilibration, then production with a frame every `frame_every` steps.
 *
 * Files: trajectory.h5 is written under its temporary name frame by frame and renamed when the
 * run completes; checkpoint.h5 (tmp + rename) records the state, the step and the number of
 * frames written. A stop signal finishes the step, writes a checkpoint and returns; --restart
 * reads the checkpoint, truncates the temporary trajectory to the recorded frame count and
 * continues, so the interrupted and restarted run writes exactly the bytes of an uninterrupted
 * one (random numbers are counter-based: there is no generator state to lose).
 */
#include "sgm/simulate.h"
#include "sgm/h5md.h"
#include "sgm/core.h"
#include "sgm/observables.h"

#include <string.h>
#include <unistd.h>

static PetscLogEvent ev_write;

PetscErrorCode sgm_system_box_edge(SgmConfig cfg, double *L)
{
  PetscBool set;
  int64_t dim, n;
  double a, phi;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_is_set(cfg, "system.L", &set));
  if (set) {
    PetscCall(sgm_config_get_real(cfg, "system.L", L));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  PetscCall(sgm_config_get_int(cfg, "system.dim", &dim));
  PetscCall(sgm_config_get_int(cfg, "system.n", &n));
  PetscCall(sgm_config_get_real(cfg, "system.a", &a));
  PetscCall(sgm_config_get_real(cfg, "system.phi", &phi));
  *L = dim == 2 ? sqrt((double)n * M_PI * a * a / phi) : 2.0 * (double)n * a / phi;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_aoup_params_from_config(SgmConfig cfg, uint64_t seed, SgmAoupParams *p)
{
  int64_t v;
  const char *s;
  PetscBool set;
  PetscFunctionBeginUser;
  memset(p, 0, sizeof(*p));
  PetscCall(sgm_config_get_int(cfg, "system.dim", &v));
  p->dim = (int)v;
  PetscCall(sgm_config_get_int(cfg, "system.n", &p->n));
  PetscCall(sgm_config_get_string(cfg, "system.boundary", &s));
  p->periodic = !strcmp(s, "periodic");
  PetscCall(sgm_config_get_real(cfg, "system.mu", &p->mu));
  PetscCall(sgm_config_get_real(cfg, "system.v0", &p->v0));
  PetscCall(sgm_config_get_real(cfg, "system.gamma", &p->gamma));
  PetscCall(sgm_config_get_real(cfg, "system.eps", &p->eps));
  PetscCall(sgm_config_get_real(cfg, "system.a", &p->a));
  PetscCall(sgm_config_get_real(cfg, "system.k", &p->k));
  PetscCall(sgm_config_get_real(cfg, "system.beta", &p->beta));
  PetscCall(sgm_config_get_real(cfg, "system.softplus_cut", &p->softplus_cut));
  PetscCall(sgm_config_get_real(cfg, "system.trap_A", &p->trap_A));
  PetscCall(sgm_config_get_string(cfg, "system.potential", &s));
  PetscCall(PetscStrncpy(p->potential, s, sizeof p->potential));
  PetscCall(sgm_system_box_edge(cfg, &p->L));
  PetscCall(sgm_config_get_real(cfg, "simulate.dt", &p->dt));
  PetscCall(sgm_config_get_string(cfg, "simulate.g_update", &s));
  p->g_exact = !strcmp(s, "exact");
  PetscCall(sgm_config_get_real(cfg, "simulate.cell_size", &p->cell_size));
  PetscCall(sgm_config_get_real(cfg, "simulate.skin", &p->skin));
  PetscCall(sgm_config_is_set(cfg, "simulate.grid", &set));
  if (set) {
    int n;
    const int64_t *gr;
    PetscCall(sgm_config_get_int_array(cfg, "simulate.grid", &n, &gr));
    PetscCheck(n == p->dim, PETSC_COMM_SELF, SGM_ERR_USER,
               "[simulate] grid has %d entries, [system] dim is %d", n, p->dim);
    for (int k = 0; k < n; k++) p->grid[k] = (int)gr[k];
  }
  PetscCheck(p->trap_A == 0.0 || !p->periodic, PETSC_COMM_SELF, SGM_ERR_USER,
             "[system] trap_A = %g needs boundary = \"open\" (a trap in a periodic box is not "
             "periodic)",
             p->trap_A);
  p->seed = seed;
  PetscFunctionReturn(PETSC_SUCCESS);
}

typedef struct {
  SgmRun *run;
  SgmAoup s;
  SgmObservablesParams op; /* [analysis]: observables every op.every frames (0: never) */
  SgmObservables obs;
  int64_t nanalysed;
  const char *group;
  char traj_tmp[PETSC_MAX_PATH_LEN];
  int64_t nframes; /* frames taken (written or pending in the buffer) */
  /* frames kept in memory until the next write (frames_per_write): frames [nwritten, nframes) of
   * this rank's id block [bstart, bstart + bcount), x and g [cap][bcount][dim] */
  int64_t cap, nwritten, bstart, bcount;
  int64_t *bstep;
  double *btime, *bx, *bg;
  SgmObservablesRows rows;
  /* frame time split on this rank, over the frames of the step loop: sums and minima (s) of the
   * observables (of which S(k)) and of the gather into the buffer; the writes */
  int64_t ntimed, nobs_timed, nwrites;
  double t_obs, t_sk, t_gather, min_obs, min_sk, min_gather, t_write;
} Sim;

/* The particles in global-id blocks: rank r holds ids [start, start + count) in id order, and
 * start is the MPI_Exscan of the counts, i.e. the row offset of this rank in the files. */
static PetscErrorCode id_blocks(Sim *m, int64_t *start, int64_t *count, double **x, double **g)
{
  int64_t s0, off = 0;
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_gather_block(m->s, &s0, count, x, g));
  PetscCallMPI(MPI_Exscan(count, &off, 1, MPIU_INT64, MPI_SUM, m->run->comm));
  PetscCallMPI(MPI_Comm_rank(m->run->comm, &rank));
  if (rank == 0) off = 0; /* MPI_Exscan leaves rank 0's result undefined */
  PetscCheck(off == s0, PETSC_COMM_SELF, PETSC_ERR_PLIB, "id block offset mismatch");
  *start = off;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Writes the pending frames and their observables (one open and close of the trajectory, one
 * extension and write per dataset) and empties the buffer. Collective. */
static PetscErrorCode flush_frames(Sim *m)
{
  const int64_t nf = m->nframes - m->nwritten;
  int64_t fh;
  PetscFunctionBeginUser;
  if (nf == 0) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(PetscLogEventBegin(ev_write, 0, 0, 0, 0));
  const double t0 = MPI_Wtime();
  PetscCall(sgm_h5md_open_append(m->run->comm, m->traj_tmp, &fh));
  PetscCall(sgm_h5md_append_frames_fh(m->run->comm, fh, m->group, m->nwritten, nf, m->bstep,
                                      m->btime, m->s->p.dim, m->bstart, m->bcount, m->bx, m->bg));
  if (m->rows) PetscCall(sgm_observables_rows_write_fh(m->run->comm, fh, m->rows));
  PetscCall(sgm_h5md_close(fh));
  m->nwritten = m->nframes;
  m->t_write += MPI_Wtime() - t0, m->nwrites++;
  PetscCall(PetscLogEventEnd(ev_write, 0, 0, 0, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The frame buffer's capacity (before any output exists, so a bad value stops the run cleanly):
 * frames_per_write, or 0 = what fits in 16 MiB per rank, at most 256; never more than the run's
 * frames, and at most 4 GiB per rank. Collective only through the error. */
static PetscErrorCode frames_capacity(Sim *m, int64_t per_write, int64_t run_frames)
{
  PetscMPIInt size;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_size(m->run->comm, &size));
  /* the largest id block decides, so every rank buffers the same number of frames */
  const double per_frame = (double)((m->s->p.n + size - 1) / size) *
                           (2.0 * m->s->p.dim * sizeof(double) + (m->op.per_particle ? 16.0 : 0.0));
  int64_t cap =
      per_write > 0 ? per_write : (int64_t)PetscMin(256.0, PetscMax(1.0, 16777216.0 / per_frame));
  cap = PetscMax(1, PetscMin(cap, run_frames));
  PetscCheck(
      (double)cap * per_frame <= 4294967296.0, m->run->comm, SGM_ERR_USER,
      "[simulate] frames_per_write = %lld: %.3g GiB per rank for the frame buffer (at most 4 "
      "GiB); use fewer frames per write (0 = automatic)",
      (long long)per_write, (double)cap * per_frame / 1073741824.0);
  m->cap = cap;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The frame buffer: m->cap frames of this rank's id block and the observables' rows. */
static PetscErrorCode frames_setup(Sim *m)
{
  const int dim = m->s->p.dim;
  PetscMPIInt rank, size;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(m->run->comm, &rank));
  PetscCallMPI(MPI_Comm_size(m->run->comm, &size));
  sgm_decomp_split(m->s->p.n, size, rank, &m->bstart, &m->bcount);
  PetscCall(PetscMalloc4(m->cap, &m->bstep, m->cap, &m->btime, m->cap * m->bcount * dim + 1, &m->bx,
                         m->cap * m->bcount * dim + 1, &m->bg));
  if (m->op.every > 0) PetscCall(sgm_observables_rows_create(m->cap, &m->rows));
  m->nwritten = m->nframes;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode frames_free(Sim *m)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree4(m->bstep, m->btime, m->bx, m->bg));
  PetscCall(sgm_observables_rows_destroy(&m->rows));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Takes a frame (and its observables when due) into the buffer; writes the buffer when full. */
static PetscErrorCode write_frame(Sim *m)
{
  const int dim = m->s->p.dim;
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(ev_write, 0, 0, 0, 0));
  const int analyse = m->op.every > 0 && m->nframes % m->op.every == 0;
  const double time = (double)m->s->step * m->s->p.dt;
  const double t0 = MPI_Wtime();
  if (analyse) PetscCall(sgm_observables_compute(m->s, &m->op, &m->obs));
  const double t1 = MPI_Wtime();
  /* this rank's id block of the frame, gathered straight into its slot of the buffer */
  const int64_t k = m->nframes - m->nwritten, slot = k * m->bcount * dim;
  PetscCall(sgm_aoup_gather_block_into(m->s, m->bx + slot, m->bg + slot));
  m->bstep[k] = m->s->step, m->btime[k] = time;
  if (analyse) {
    PetscCall(
        sgm_observables_rows_push(m->run->comm, m->rows, m->nframes / m->op.every, time, &m->obs));
    m->nanalysed++;
  }
  m->nframes++;
  const double tg = MPI_Wtime() - t1;
  m->t_gather += tg, m->min_gather = m->ntimed ? PetscMin(m->min_gather, tg) : tg, m->ntimed++;
  if (analyse) {
    const double tob = t1 - t0, tsk = m->obs.sk_seconds;
    m->t_obs += tob, m->t_sk += tsk;
    m->min_obs = m->nobs_timed ? PetscMin(m->min_obs, tob) : tob;
    m->min_sk = m->nobs_timed ? PetscMin(m->min_sk, tsk) : tsk;
    m->nobs_timed++;
  }
  PetscCall(PetscLogEventEnd(ev_write, 0, 0, 0, 0));
  if (m->nframes - m->nwritten == m->cap) PetscCall(flush_frames(m));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode write_checkpoint(Sim *m)
{
  int64_t start = 0, count = 0;
  double *x, *g;
  char tmp[PETSC_MAX_PATH_LEN];
  SgmCheckpointHeader h = {m->s->step, m->nframes, m->s->p.seed, m->s->p.dim, m->s->p.n};
  PetscFunctionBeginUser;
  /* the checkpoint's frame count refers to written frames only */
  PetscCall(flush_frames(m));
  PetscCall(PetscLogEventBegin(ev_write, 0, 0, 0, 0));
  /* gather_block checks exactly that every id is present once: conservation at every checkpoint */
  PetscCall(id_blocks(m, &start, &count, &x, &g));
  PetscCall(sgm_run_tmp_path(m->run, "checkpoint.h5", tmp, sizeof tmp));
  PetscCall(sgm_checkpoint_write(m->run->comm, tmp, &h, start, count, x, g,
                                 sgm_config_resolved_toml(m->run->cfg)));
  PetscCall(sgm_run_commit_file(m->run, "checkpoint.h5"));
  PetscCall(PetscFree(x));
  PetscCall(PetscFree(g));
  PetscCall(PetscLogEventEnd(ev_write, 0, 0, 0, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode start_fresh(Sim *m, const SgmH5mdInfo *info)
{
  SgmConfig cfg = m->run->cfg;
  const char *init;
  int64_t relax;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "simulate.init", &init));
  PetscCall(sgm_config_get_int(cfg, "simulate.relax_steps", &relax));
  if (!strcmp(init, "random"))
    PetscCall(sgm_aoup_init_random(m->s, (int)relax));
  else {
    const char *file;
    PetscBool set, exists;
    int64_t frame;
    double *x, *g;
    int64_t *id, step, n = m->s->p.n;
    const int dim = m->s->p.dim;
    PetscCall(sgm_config_is_set(cfg, "simulate.init_file", &set));
    PetscCheck(set, m->run->comm, SGM_ERR_USER, "[simulate] init = \"file\" needs init_file");
    PetscCall(sgm_config_get_string(cfg, "simulate.init_file", &file));
    PetscCall(sgm_config_get_int(cfg, "simulate.init_frame", &frame));
    PetscCall(sgm_file_exists(m->run->comm, file, F_OK, &exists));
    PetscCheck(exists, m->run->comm, SGM_ERR_USER, "[simulate] init_file %s does not exist", file);
    if (m->s->p.periodic) {
      double edges[2];
      PetscCall(sgm_h5md_read_edges(m->run->comm, file, m->group, dim, edges));
      PetscCheck(fabs(edges[0] - m->s->p.L) <= 1e-12 * m->s->p.L, m->run->comm, SGM_ERR_USER,
                 "[simulate] init_file %s has box edge %.17g, this run has L = %.17g", file,
                 edges[0], m->s->p.L);
    }
    PetscCall(PetscMalloc3(n * dim, &x, n * dim, &g, n, &id));
    PetscCall(sgm_h5md_read_frame(m->run->comm, file, m->group, frame, dim, n, x, g, &step));
    for (int64_t i = 0; i < n; i++) id[i] = i;
    PetscCall(sgm_aoup_set_state(m->s, n, id, x, g, 0));
    PetscCall(PetscFree3(x, g, id));
  }
  PetscCall(sgm_h5md_create(m->run->comm, m->traj_tmp, info));
  m->nframes = 0;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode start_restart(Sim *m)
{
  SgmCheckpointHeader h;
  double *x, *g;
  int64_t *id;
  PetscBool exists;
  const SgmAoupParams *p = &m->s->p;
  PetscFunctionBeginUser;
  PetscCall(sgm_file_exists(m->run->comm, m->run->restart, F_OK, &exists));
  PetscCheck(exists, m->run->comm, SGM_ERR_USER, "--restart %s: no such file", m->run->restart);
  PetscCall(sgm_checkpoint_read(m->run->comm, m->run->restart, &h, &x, &g));
  PetscCheck(h.n == p->n && h.dim == p->dim && h.seed == p->seed, m->run->comm, SGM_ERR_USER,
             "%s was written for N = %lld, d = %d, seed = %llu; the input has N = %lld, d = %d, "
             "seed = %llu",
             m->run->restart, (long long)h.n, h.dim, (unsigned long long)h.seed, (long long)p->n,
             p->dim, (unsigned long long)p->seed);
  PetscCall(PetscMalloc1(h.n, &id));
  for (int64_t i = 0; i < h.n; i++) id[i] = i;
  PetscCall(sgm_aoup_set_state(m->s, h.n, id, x, g, h.step));
  PetscCall(PetscFree(id));
  PetscCall(PetscFree(x));
  PetscCall(PetscFree(g));
  PetscCall(sgm_file_exists(m->run->comm, m->traj_tmp, F_OK, &exists));
  PetscCheck(exists, m->run->comm, SGM_ERR_USER,
             "restart: the partial trajectory %s of the interrupted run is missing", m->traj_tmp);
  PetscCall(sgm_h5md_truncate(m->run->comm, m->traj_tmp, m->group, h.nframes));
  m->nframes = h.nframes;
  PetscCall(sgm_log(m->run->comm, "simulate: restarting from %s at step %lld (%lld frames)\n",
                    m->run->restart, (long long)h.step, (long long)h.nframes));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_stage_simulate(SgmRun *run)
{
  SgmConfig cfg = run->cfg;
  SgmAoupParams p;
  Sim m = {0};
  int64_t n_equil, n_steps, frame_every, ckpt_every, stop_after, per_write;
  const char *author;
  static int registered;
  PetscFunctionBeginUser;
  if (!registered) {
    PetscClassId cid;
    PetscCall(PetscClassIdRegister("SGM simulate", &cid));
    PetscCall(PetscLogEventRegister("SgmWrite", cid, &ev_write));
    registered = 1;
  }
  memset(&m, 0, sizeof m);
  m.run = run;
  PetscCall(sgm_aoup_params_from_config(cfg, run->seed, &p));
  PetscCall(sgm_config_get_int(cfg, "simulate.n_equil", &n_equil));
  PetscCall(sgm_config_get_int(cfg, "simulate.n_steps", &n_steps));
  PetscCall(sgm_config_get_int(cfg, "simulate.frame_every", &frame_every));
  PetscCall(sgm_config_get_int(cfg, "simulate.frames_per_write", &per_write));
  PetscCall(sgm_config_get_int(cfg, "simulate.checkpoint_every", &ckpt_every));
  PetscCall(sgm_config_get_int(cfg, "simulate.stop_after", &stop_after));
  PetscCall(sgm_config_get_string(cfg, "simulate.group", &m.group));
  PetscCall(sgm_config_get_string(cfg, "run.name", &author));
  PetscCall(sgm_run_check_writable(run, "trajectory.h5"));
  PetscCall(sgm_run_check_writable(run, "trajectory.xdmf"));
  PetscCall(sgm_run_tmp_path(run, "trajectory.h5", m.traj_tmp, sizeof m.traj_tmp));

  PetscCall(sgm_aoup_create(run->comm, &p, &m.s));
  /* [analysis] observables on frames: a bad setting stops here, before any step */
  PetscCall(sgm_observables_params_from_config(cfg, &m.op));
  PetscCheck(m.op.every == 0 || p.periodic, run->comm, SGM_ERR_USER,
             "[analysis] every = %lld: the observables need a periodic box (boundary = \"open\")",
             (long long)m.op.every);
  if (m.op.every > 0) PetscCall(sgm_observables_check(m.s, &m.op));
  PetscCall(frames_capacity(&m, per_write, n_steps / frame_every + 1));
  /* the S(k) plan and geometry now, not in the first frame of the step loop */
  if (m.op.every > 0) PetscCall(sgm_observables_prepare(m.s, &m.op, &m.obs));
  {
    int64_t bal;
    PetscCall(sgm_config_get_int(cfg, "simulate.balance_every", &bal));
    PetscCall(sgm_aoup_set_balance(m.s, bal,
                                   m.op.every > 0 ? sgm_observables_halo_width(&m.op, p.a) : 0.0));
  }
  const char *pn[] = {"dim", "n", "L", "mu",   "v0",     "gamma",
                      "eps", "a", "k", "beta", "trap_A", "dt"};
  const double pv[] = {p.dim, (double)p.n, p.L, p.mu,   p.v0,     p.gamma,
                       p.eps, p.a,         p.k, p.beta, p.trap_A, p.dt};
  SgmH5mdInfo info = {p.dim, p.n, p.periodic, p.L, m.group, author, sgm_config_resolved_toml(cfg),
                      12,    pn,  pv};
  if (run->restart)
    PetscCall(start_restart(&m));
  else
    PetscCall(start_fresh(&m, &info));
  PetscCall(frames_setup(&m));
  if (p.periodic)
    PetscCall(sgm_log(run->comm,
                      "simulate: N = %lld AOUP in d = %d, periodic L = %g (phi = %.4g), rank grid "
                      "%d x %d, %lld x %lld cells, interaction range %g\n",
                      (long long)p.n, p.dim, p.L,
                      p.dim == 2 ? (double)p.n * M_PI * p.a * p.a / (p.L * p.L)
                                 : 2.0 * (double)p.n * p.a / p.L,
                      m.s->decomp.dims[0], m.s->decomp.dims[1], (long long)m.s->decomp.ncell[0],
                      (long long)m.s->decomp.ncell[1], m.s->rc));
  else
    PetscCall(sgm_log(
        run->comm, "simulate: N = %lld AOUP in d = %d, open space, trap A = %g (replicated mode)\n",
        (long long)p.n, p.dim, p.trap_A));

  const int64_t total = n_equil + n_steps, first = m.s->step;
  SgmProgress prog;
  PetscBool stop = PETSC_FALSE;
  PetscCall(sgm_progress_create(run->comm, "simulate", total - first, (double)p.n, "particle-steps",
                                &prog));
  double t0 = MPI_Wtime(), twrite = 0.0;
  sgm_aoup_timers_reset(m.s);
  m.ntimed = m.nobs_timed = m.nwrites = 0, m.t_obs = m.t_sk = m.t_gather = m.t_write = 0.0;
  /* each step's reduction overlaps the next step's interior forces (sgm_aoup_set_lagged) */
  PetscCall(sgm_aoup_set_lagged(m.s, PETSC_TRUE));
  for (;;) {
    const int64_t st = m.s->step;
    if (st >= n_equil && (st - n_equil) % frame_every == 0 &&
        (st - n_equil) / frame_every == m.nframes) {
      const double tw = MPI_Wtime();
      PetscCall(sgm_aoup_sync(m.s)); /* the last step's non-finite check before the frame */
      PetscCall(write_frame(&m));
      twrite += MPI_Wtime() - tw;
    }
    if (st >= total) break;
    PetscCall(sgm_aoup_step(m.s));
    PetscCall(sgm_progress_update(prog, m.s->step - first));
    if (ckpt_every > 0 && m.s->step % ckpt_every == 0 && m.s->step < total) {
      PetscCall(sgm_aoup_check(m.s));
      PetscCall(write_checkpoint(&m));
    }
    /* the stop flag costs an allreduce: poll it every 16 steps (a signal stops within 16 steps) */
    if ((m.s->step - first) % 16 == 0 || m.s->step >= total)
      PetscCall(sgm_stop_requested(run->comm, &stop));
    if (stop_after > 0 && m.s->step - first >= stop_after && m.s->step < total) {
      stop = PETSC_TRUE;
      run->stopped = PETSC_TRUE; /* as a signal would: the driver runs no later stage */
    }
    if (stop) break;
  }
  PetscCall(sgm_aoup_sync(m.s));
  {
    /* the frames still in the buffer are written inside the timed loop */
    const double tw = MPI_Wtime();
    PetscCall(flush_frames(&m));
    twrite += MPI_Wtime() - tw;
  }
  double wall = MPI_Wtime() - t0;
  PetscCall(sgm_progress_destroy(&prog));
  PetscCall(sgm_aoup_timers_log(m.s, "simulate"));
  PetscCall(sgm_log(run->comm, "simulate:   frames (+analysis) %.3f s of the %.3f s loop\n", twrite,
                    wall));
  if (m.ntimed > 0) {
    char an[160] = "";
    if (m.nobs_timed > 0)
      PetscCall(PetscSNPrintf(an, sizeof an, "observables %.2f / %.2f (S(k) %.2f / %.2f), ",
                              1e3 * m.t_obs / (double)m.nobs_timed, 1e3 * m.min_obs,
                              1e3 * m.t_sk / (double)m.nobs_timed, 1e3 * m.min_sk));
    PetscCall(sgm_log(run->comm,
                      "simulate:   per frame (rank 0, ms, mean / min over %lld frames): %sgather "
                      "%.2f / %.2f; %lld writes of up to %lld frames: %.2f ms per write, %.2f per "
                      "frame\n",
                      (long long)m.ntimed, an, 1e3 * m.t_gather / (double)m.ntimed,
                      1e3 * m.min_gather, (long long)m.nwrites, (long long)m.cap,
                      m.nwrites ? 1e3 * m.t_write / (double)m.nwrites : 0.0,
                      1e3 * m.t_write / (double)m.ntimed));
  }
  const double psteps = (double)(m.s->step - first) * (double)p.n;
  PetscCall(sgm_aoup_check(m.s));
  PetscCall(write_checkpoint(&m));
  if (stop) {
    PetscCall(sgm_log(run->comm,
                      "simulate: stop requested; checkpoint written at step %lld (%lld frames). "
                      "Continue with --restart %s/checkpoint.h5\n",
                      (long long)m.s->step, (long long)m.nframes, run->outdir));
    PetscCall(sgm_metrics_set(run->metrics, "simulate", "interrupted_at_step", (double)m.s->step));
  } else {
    char xtmp[PETSC_MAX_PATH_LEN], tfin[PETSC_MAX_PATH_LEN];
    PetscCall(sgm_run_commit_file(run, "trajectory.h5"));
    PetscCall(sgm_run_path(run, "trajectory.h5", tfin, sizeof tfin));
    PetscCall(sgm_run_tmp_path(run, "trajectory.xdmf", xtmp, sizeof xtmp));
    PetscCall(sgm_xdmf_write_trajectory(run->comm, xtmp, tfin, "trajectory.h5", m.group));
    PetscCall(sgm_run_commit_file(run, "trajectory.xdmf"));
  }
  /* headline numbers: throughput and a physics sanity value (<|g|^2>/d -> 1 at stationarity) */
  double g2 = 0, g2all;
  for (int64_t i = 0; i < m.s->part.nlocal * p.dim; i++) g2 += m.s->part.g[i] * m.s->part.g[i];
  PetscCallMPI(MPI_Allreduce(&g2, &g2all, 1, MPI_DOUBLE, MPI_SUM, run->comm));
  PetscCall(sgm_log(
      run->comm,
      "simulate: %lld steps of %lld particles in %.3f s: %.4g particle-steps/s; %lld frames\n",
      (long long)(m.s->step - first), (long long)p.n, wall, wall > 0 ? psteps / wall : 0.0,
      (long long)m.nframes));
  PetscCall(sgm_metrics_set(run->metrics, "simulate", "particle_steps_per_s",
                            wall > 0 ? psteps / wall : 0.0));
  PetscCall(sgm_metrics_set(run->metrics, "simulate", "steps", (double)m.s->step));
  PetscCall(sgm_metrics_set(run->metrics, "simulate", "frames", (double)m.nframes));
  PetscCall(sgm_metrics_set(run->metrics, "simulate", "n_particles", (double)p.n));
  PetscCall(sgm_metrics_set(run->metrics, "simulate", "box_L", p.L));
  PetscCall(
      sgm_metrics_set(run->metrics, "simulate", "g2_mean_per_dim", g2all / ((double)p.n * p.dim)));
  if (m.nanalysed > 0) PetscCall(sgm_observables_metrics(run->metrics, "simulate", &m.obs));
  PetscCall(sgm_observables_free(&m.obs));
  PetscCall(frames_free(&m));
  PetscCall(sgm_aoup_destroy(&m.s));
  PetscFunctionReturn(PETSC_SUCCESS);
}
