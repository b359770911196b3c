/* The `train` stage: offline data-parallel training on trajectory frames (include/sgm/train.h).
 *
 * Owns the training loop. Each step picks one frame (a pure function of (seed, step)), sets the
 * particle engine to it (ownership by the same space decomposition as `simulate`), builds the
 * K-nearest-neighbour windows of the owned particles, evaluates the loss of the owned particles
 * that belong to the step's minibatch, sums the gradient slab over ranks with one in-place
 * MPI_Allreduce, divides by the global batch size, and takes the same optimiser step on every
 * rank. Batches never mix frames (App. F.9). Trade-offs:
 *  - Minibatches come from a keyed permutation of the global ids (sgm_train_in_batch), not from
 *    the rank-local particle order: every step has exactly `batch` centres and the same ones on
 *    any number of ranks; only the floating-point summation order of the gradient differs.
 *  - The gradient is reduced in float (the slab's type) and the loss separately in double
 *    (8 bytes); reductions are summed in a rank-count-dependent order, so models trained on
 *    different rank counts agree to rounding, not bitwise (tests/test_train.c states the bound).
 *  - Frames are read from the file when the step's frame differs from the last one (every rank
 *    reads all N rows, as sgm_aoup_set_state takes full arrays; the file stays open for the whole
 *    run, an MPI-IO open per step cost more than the read); for the frame sizes of paper 002
 *    (N <= 32768) this is milliseconds against a training step.
 *  - The windows are searched for the step's minibatch centres only (sgm_windows_build_selected:
 *    batch / N of the search, which was a third of a small model's step); their rows are those of
 *    a full build.
 *  - The RNG position is the step itself (counter-based streams), so a checkpoint is the model,
 *    the optimiser (moments, EMA, step count) and the loss log; a restarted run continues
 *    bit for bit on the same number of ranks.
 *  - Online mode (App. F.2.3) replaces the frame by sde_steps steps of the system's SDE before
 *    every optimiser step; the particle state joins the checkpoint (train_state.h5). The SDE
 *    engine is bitwise rank-count invariant, so online training keeps the offline guarantees.
 * Every rank's parameter hash is compared at every checkpoint and at the end (a mismatch is a hard
 * error). Nothing is allocated inside a step after the first frame (windows and noise arrays grow
 * only when a frame has more locals + ghosts than any before).
 */
#include "sgm/train.h"
#include "sgm/aoup.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/epr_io.h"
#include "sgm/h5md.h"
#include "sgm/losses.h"
#include "sgm/nn_io.h"
#include "sgm/nn_models.h"
#include "sgm/nn_optim.h"
#include "sgm/rng.h"
#include "sgm/simulate.h"
#include "sgm/windows.h"
#include "sgm/score_model.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static PetscLogEvent ev_frame, ev_windows, ev_loss, ev_allreduce, ev_optim;

static PetscErrorCode train_log_init(void)
{
  static int done = 0;
  PetscClassId cid;
  PetscFunctionBeginUser;
  if (done) PetscFunctionReturn(PETSC_SUCCESS);
  done = 1;
  PetscCall(PetscClassIdRegister("SGM train", &cid));
  PetscCall(PetscLogEventRegister("SgmTrainFrame", cid, &ev_frame));
  PetscCall(PetscLogEventRegister("SgmTrainWindows", cid, &ev_windows));
  PetscCall(PetscLogEventRegister("SgmTrainLoss", cid, &ev_loss));
  PetscCall(PetscLogEventRegister("SgmTrainAllreduce", cid, &ev_allreduce));
  PetscCall(PetscLogEventRegister("SgmTrainOptim", cid, &ev_optim));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Feistel bijection on [0, 4^h) with 4 rounds, round keys from Philox. */
static uint64_t feistel(uint64_t seed, uint64_t epoch, int h, uint64_t v)
{
  const uint64_t mask = (1ULL << h) - 1;
  uint64_t l = v >> h, r = v & mask;
  for (uint32_t round = 0; round < 4; round++) {
    uint32_t o[4];
    sgm_rng_u32x4(seed, SGM_RNG_BATCH, r, epoch, round, o);
    const uint64_t f = (((uint64_t)o[1] << 32) | o[0]) & mask;
    const uint64_t t = l ^ f;
    l = r, r = t;
  }
  return (l << h) | r;
}

int sgm_train_in_batch(uint64_t seed, int64_t step, uint64_t id, int64_t n, int64_t batch)
{
  const int64_t nb = n / batch; /* steps per epoch */
  const int64_t epoch = step / nb, j = step % nb;
  int h = 1;
  while ((1ULL << (2 * h)) < (uint64_t)n) h++;
  uint64_t p = id;
  do p = feistel(seed, (uint64_t)epoch, h, p);
  while (p >= (uint64_t)n); /* cycle walking: a bijection of [0, n) */
  return (int64_t)p / batch == j;
}

int64_t sgm_train_frame(uint64_t seed, int64_t step, int64_t nframes)
{
  double u[4];
  sgm_rng_uniform4(seed, SGM_RNG_BATCH, 0, (uint64_t)step, 0x40000000u, u);
  int64_t f = (int64_t)(u[0] * (double)nframes);
  return f < nframes ? f : nframes - 1;
}

uint64_t sgm_train_param_hash(const float *p, size_t n)
{
  const unsigned char *b = (const unsigned char *)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

PetscErrorCode sgm_train_check_params(MPI_Comm comm, const SgmParams *p, uint64_t *hash)
{
  uint64_t h = sgm_train_param_hash(p->params, p->nparams), lo, hi;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, comm));
  PetscCallMPI(MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, comm));
  PetscCheck(lo == hi, comm, PETSC_ERR_PLIB,
             "train: the parameters differ between ranks (hash %016llx vs %016llx)",
             (unsigned long long)lo, (unsigned long long)hi);
  if (hash) *hash = h;
  PetscFunctionReturn(PETSC_SUCCESS);
}

enum { NARCH = 24, NHYPER = 20 };

typedef struct {
  SgmRun *run;
  SgmAoupParams ap;
  SgmAoup s;
  SgmWindows w;
  SgmNnTransformer m;
  SgmParams *par;
  SgmOptim opt;
  SgmLoss loss;
  SgmLossConfig lc;
  int K, max_batch, online;
  int64_t sde_steps;
  int64_t steps, batch, nframes, cur_frame;
  const char *traj, *group;
  char traj_path[PETSC_MAX_PATH_LEN];
  int64_t traj_fh; /* offline local mode: the trajectory, open read-only while training (-1: not) */
  int64_t *ids, *centres, *pairs;
  double *fx, *fg;
  double *log; /* (steps, 3): loss, lr, grad norm */
  /* [train] validate_trajectory (full-state kinds): this rank's nvl of the nv held-out frames,
   * from v0f on, with their drift divergence and (boltzmann_x) conservative drift */
  int validate;
  int64_t nv, v0f, nvl;
  char vpath[PETSC_MAX_PATH_LEN];
  double *vx, *vg, *vfc, *vdfc, *vdivb; /* (nvl, n, dim) x2, (nvl, n, dim), (nvl, n), (nvl) */
  double *vsx, *vsg, *vdx, *vdg;        /* one frame's score (n, dim) x2 and divergences (n) x2 */
  float *vsave;                         /* the raw weights while the EMA ones are evaluated */
  double *vlog; /* (steps, 4): score error, its standard error, sm loss x, sm loss g (NaN: none) */
  /* full-state kinds (mlp, transformer): a batch element is a whole configuration */
  SgmScoreKind kind;
  SgmFullScore fs;
  SgmFullLossWeights fw;
  int need_drift;        /* the loss needs b_x (fpe, composite, transition) */
  int need_divb;         /* and div b (fpe, composite) */
  int64_t j0, nj;        /* this rank's configurations [j0, j0 + nj) of every step */
  double *cx, *cg, *cbx; /* offline cache (nframes, n, dim) of positions, orientations, drift */
  double *cdivb;         /* offline cache (nframes) of div b */
  double *bx, *bg, *bbx; /* batch staging (nj, n, dim) */
  double *bdivb, *dbx;   /* (nj), per-particle drift divergence (n) */
  int need_shift;        /* [model] boltzmann_x: the score needs mu F and its divergence */
  int stage_shift;       /* ... at the staged configurations (not with transition: it needs them
                            at the stepped ones, transition_stage) */
  double *cfc, *cdfc;    /* offline cache (nframes, n, dim), (nframes, n) of mu F, div mu F */
  double *bfc, *bdfc;    /* batch staging (nj, n, dim), (nj, n) */
  SgmAoup *reps;         /* online: this rank's nj replicas (PETSC_COMM_SELF engines) */
  /* loss = "transition" (eq. 88, App. D.3): one Euler-Maruyama step of length tr_dt from each
   * configuration, antithetic pairs when tr_pairs = 2 */
  int transition, tr_pairs;
  double tr_dt;
  SgmAoup tr_e;                      /* PETSC_COMM_SELF engine: canonical r' and mu F(x') */
  double *px, *pg, *pfc, *ptx, *ptg; /* (tr_pairs nj, n, dim) stepped states, drift, targets */
  double *xi;                        /* (2 n dim) noise of one configuration */
  SgmNNAttr arch[NARCH], hyper[NHYPER];
  int narch, nhyper;
} Trainer;

static SgmNnAct act_from_name(const char *act)
{
  return !strcmp(act, "silu")   ? SGM_NN_ACT_SILU
         : !strcmp(act, "relu") ? SGM_NN_ACT_RELU
                                : SGM_NN_ACT_GELU;
}

/* The transformer keys of [model] (both the local and the full-state transformer). */
static PetscErrorCode transformer_keys(SgmConfig cfg, SgmNnTransformerConfig *c)
{
  int64_t v;
  const char *act;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "model.activation", &act));
  c->act = act_from_name(act);
  PetscCall(sgm_config_get_int(cfg, "model.d_e", &v));
  c->d_model = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.layers", &v));
  c->n_layers = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.heads", &v));
  c->n_heads = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.mlp_hidden", &v));
  c->mlp_hidden = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.embed_hidden", &v));
  c->embed_hidden = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.embed_depth", &v));
  c->embed_depth = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.dec_hidden", &v));
  c->dec_hidden = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.dec_depth", &v));
  c->dec_depth = (int)v;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Appends the transformer's architecture attributes d_e ... dec_depth. */
static int transformer_arch(const SgmNnTransformerConfig *c, SgmNNAttr *arch, int n)
{
  arch[n++] = SGM_NN_ATTR_I("d_e", c->d_model);
  arch[n++] = SGM_NN_ATTR_I("layers", c->n_layers);
  arch[n++] = SGM_NN_ATTR_I("heads", c->n_heads);
  arch[n++] = SGM_NN_ATTR_I("mlp_hidden", c->mlp_hidden);
  arch[n++] = SGM_NN_ATTR_I("embed_hidden", c->embed_hidden);
  arch[n++] = SGM_NN_ATTR_I("embed_depth", c->embed_depth);
  arch[n++] = SGM_NN_ATTR_I("dec_hidden", c->dec_hidden);
  arch[n++] = SGM_NN_ATTR_I("dec_depth", c->dec_depth);
  return n;
}

/* The local transformer's configuration (ms->cfg, K, max_batch, learn_x, boltzmann) and
 * architecture attributes from the [model] keys, checking nothing and building nothing. */
static PetscErrorCode local_spec(SgmConfig cfg, int dim, SgmScoreModelSpec *ms)
{
  int64_t v;
  const char *s, *act;
  PetscBool b;
  SgmNnTransformerConfig *c = &ms->cfg;
  PetscFunctionBeginUser;
  memset(ms, 0, sizeof *ms);
  c->dim = dim, c->gdim = dim;
  PetscCall(sgm_config_get_string(cfg, "model.learn", &s));
  ms->learn_x = !strcmp(s, "xg");
  c->out_dim = c->dim * (ms->learn_x + 1);
  PetscCall(transformer_keys(cfg, c));
  PetscCall(sgm_config_get_int(cfg, "model.K", &v));
  ms->K = (int)v;
  PetscCall(sgm_config_get_int(cfg, "model.max_batch", &v));
  ms->max_batch = (int)v;
  PetscCall(sgm_config_get_bool(cfg, "model.boltzmann", &b));
  ms->boltzmann = (int)b;
  PetscCall(sgm_config_get_string(cfg, "model.activation", &act));
  int n = 0;
  ms->arch[n++] = SGM_NN_ATTR_S("kind", "local_transformer");
  ms->arch[n++] = SGM_NN_ATTR_I("dim", c->dim);
  ms->arch[n++] = SGM_NN_ATTR_I("gdim", c->gdim);
  ms->arch[n++] = SGM_NN_ATTR_I("out_dim", c->out_dim);
  n = transformer_arch(c, ms->arch, n);
  ms->arch[n++] = SGM_NN_ATTR_S("activation", act);
  ms->arch[n++] = SGM_NN_ATTR_I("K", ms->K);
  ms->arch[n++] = SGM_NN_ATTR_S("learn", ms->learn_x ? "xg" : "g");
  ms->arch[n++] = SGM_NN_ATTR_I("boltzmann", ms->boltzmann);
  ms->narch = n;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_model_from_config(MPI_Comm comm, SgmConfig cfg, int dim, uint64_t seed,
                                           SgmScoreModelSpec *ms)
{
  const char *s;
  PetscBool b;
  PetscFunctionBeginUser;
  memset(ms, 0, sizeof *ms);
  PetscCall(sgm_config_get_string(cfg, "model.kind", &s));
  PetscCheck(!strcmp(s, "local_transformer"), comm, SGM_ERR_USER,
             "[model] kind = \"%s\": this needs the local transformer (kind = "
             "\"local_transformer\")",
             s);
  PetscCall(local_spec(cfg, dim, ms));
  PetscCall(sgm_config_get_bool(cfg, "model.boltzmann_x", &b));
  PetscCheck(!b, comm, SGM_ERR_USER,
             "[model] boltzmann_x = true is implemented for the full-state kinds (kind = \"mlp\" "
             "or \"transformer\") only (docs/training.md)");
  const SgmNnTransformerConfig *c = &ms->cfg;
  PetscCheck(c->d_model % 2 == 0, comm, SGM_ERR_USER, "[model] d_e must be even (got %d)",
             c->d_model);
  PetscCheck(c->d_model % c->n_heads == 0, comm, SGM_ERR_USER,
             "[model] heads = %d must divide d_e = %d", c->n_heads, c->d_model);
  PetscCall(sgm_nn_transformer_create_local(c, ms->K, ms->max_batch, c->dim, seed, &ms->m));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* A full-state network's configuration (fc) and the spec's architecture attributes from the
 * [model] keys, checking nothing and building nothing. */
static PetscErrorCode full_spec(SgmConfig cfg, const char *kind, int dim, int64_t n,
                                SgmScoreModelSpec *ms, SgmFullScoreConfig *fc)
{
  const char *learn, *act, *bnd;
  int64_t v;
  PetscBool b;
  PetscFunctionBeginUser;
  memset(ms, 0, sizeof *ms);
  memset(fc, 0, sizeof *fc);
  fc->n = (int)n, fc->dim = dim;
  PetscCall(sgm_config_get_string(cfg, "model.learn", &learn));
  fc->learn_x = ms->learn_x = !strcmp(learn, "xg");
  PetscCall(sgm_config_get_bool(cfg, "model.boltzmann", &b));
  fc->boltzmann = ms->boltzmann = (int)b;
  PetscCall(sgm_config_get_bool(cfg, "model.boltzmann_x", &b));
  fc->boltzmann_x = ms->boltzmann_x = (int)b;
  PetscCall(sgm_config_get_real(cfg, "system.eps", &fc->eps));
  PetscCall(sgm_config_get_real(cfg, "model.x_scale", &fc->x_scale));
  PetscCall(sgm_config_get_int(cfg, "model.max_batch", &v));
  fc->max_batch = ms->max_batch = (int)v;
  PetscCall(sgm_config_get_string(cfg, "model.activation", &act));
  PetscCall(sgm_config_get_string(cfg, "system.boundary", &bnd));
  int na = 0;
  ms->arch[na++] = SGM_NN_ATTR_S("kind", kind);
  ms->arch[na++] = SGM_NN_ATTR_I("dim", dim);
  ms->arch[na++] = SGM_NN_ATTR_I("n", n);
  ms->arch[na++] = SGM_NN_ATTR_S("activation", act);
  ms->arch[na++] = SGM_NN_ATTR_S("learn", ms->learn_x ? "xg" : "g");
  ms->arch[na++] = SGM_NN_ATTR_I("boltzmann", ms->boltzmann);
  /* written only when set, so that model files from before the key (no attribute) still load
   * into boltzmann_x = false; a mismatch either way is refused by the architecture check */
  if (ms->boltzmann_x) ms->arch[na++] = SGM_NN_ATTR_I("boltzmann_x", 1);
  PetscCall(sgm_config_get_bool(cfg, "model.separate", &b));
  fc->separate = (int)b; /* with learn = "g" refused by the input check and by the create */
  if (fc->separate) ms->arch[na++] = SGM_NN_ATTR_I("separate", 1); /* likewise, only when set */
  /* periodic position features (MLP in a periodic box): the period, written only when in use */
  PetscCall(sgm_config_get_bool(cfg, "model.periodic_x", &b));
  if (b && !strcmp(bnd, "periodic")) {
    PetscCall(sgm_system_box_edge(cfg, &fc->x_period));
    ms->arch[na++] = SGM_NN_ATTR_R("x_period", fc->x_period);
  }
  /* likewise x_scale, written only when it is not 1 (and not used with x_period) */
  if (fc->x_scale != 1.0 && fc->x_period == 0.0)
    ms->arch[na++] = SGM_NN_ATTR_R("x_scale", fc->x_scale);
  PetscCall(sgm_config_get_int(cfg, "model.pair_hidden", &v));
  fc->pair_hidden = (int)v;
  if (fc->pair_hidden > 0) {
    double a;
    PetscCall(sgm_config_get_int(cfg, "model.pair_depth", &v));
    fc->pair_depth = (int)v;
    PetscCall(sgm_config_get_real(cfg, "model.pair_cutoff", &fc->pair_cutoff));
    PetscCall(sgm_config_get_real(cfg, "system.a", &a));
    if (fc->pair_cutoff <= 0.0) fc->pair_cutoff = 4.0 * a;
    if (!strcmp(bnd, "periodic")) PetscCall(sgm_system_box_edge(cfg, &fc->box));
    ms->arch[na++] = SGM_NN_ATTR_I("pair_hidden", fc->pair_hidden);
    ms->arch[na++] = SGM_NN_ATTR_I("pair_depth", fc->pair_depth);
    ms->arch[na++] = SGM_NN_ATTR_R("pair_cutoff", fc->pair_cutoff);
    PetscBool contact;
    PetscCall(sgm_config_get_bool(cfg, "model.pair_contact", &contact));
    if (contact) { /* written only when on: pair models from before the key load unchanged */
      PetscCall(sgm_config_get_real(cfg, "system.beta", &fc->pair_contact_beta));
      fc->pair_contact_r = 2.0 * a;
      ms->arch[na++] = SGM_NN_ATTR_R("pair_contact_beta", fc->pair_contact_beta);
      ms->arch[na++] = SGM_NN_ATTR_R("pair_contact_r", fc->pair_contact_r);
    }
    PetscBool gn;
    PetscCall(sgm_config_get_bool(cfg, "model.pair_gnorm", &gn));
    fc->pair_gnorm = (int)gn;
    if (gn) ms->arch[na++] = SGM_NN_ATTR_I("pair_gnorm", 1); /* likewise, only when on */
  }
  if (!strcmp(kind, "mlp")) {
    ms->kind = fc->kind = SGM_SCORE_MLP;
    fc->mlp.act = act_from_name(act);
    PetscCall(sgm_config_get_int(cfg, "model.hidden", &v));
    fc->mlp.hidden = (int)v;
    PetscCall(sgm_config_get_int(cfg, "model.depth", &v));
    fc->mlp.depth = (int)v;
    ms->arch[na++] = SGM_NN_ATTR_I("hidden", fc->mlp.hidden);
    ms->arch[na++] = SGM_NN_ATTR_I("depth", fc->mlp.depth);
  } else {
    ms->kind = fc->kind = SGM_SCORE_TRANSFORMER;
    PetscCall(transformer_keys(cfg, &fc->tf));
    na = transformer_arch(&fc->tf, ms->arch, na);
    ms->cfg = fc->tf;
  }
  ms->narch = na;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_model_build(MPI_Comm comm, SgmConfig cfg, int dim, int64_t n,
                                     uint64_t seed, SgmScoreModelSpec *ms)
{
  const char *kind;
  SgmFullScoreConfig fc;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
  if (!strcmp(kind, "local_transformer")) {
    PetscCall(sgm_score_model_from_config(comm, cfg, dim, seed, ms));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  PetscCheck(n >= 1 && n <= 1 << 20, comm, SGM_ERR_USER,
             "[model] kind = \"%s\" works on the full state: N = %lld is out of range", kind,
             (long long)n);
  PetscCall(full_spec(cfg, kind, dim, n, ms, &fc));
  PetscCheck(!fc.boltzmann_x || fc.eps > 0.0, comm, SGM_ERR_USER,
             "[model] boltzmann_x = true (s_x = mu F / eps + N_x) needs [system] eps > 0");
  PetscCheck(fc.x_period == 0.0 || fc.kind == SGM_SCORE_MLP, comm, SGM_ERR_USER,
             "[model] periodic_x: periodic position features are implemented for kind = "
             "\"mlp\"; set periodic_x = false for the %s (raw positions)",
             kind);
  PetscCheck(fc.pair_hidden <= 0 || fc.pair_cutoff > 0.0, comm, SGM_ERR_USER,
             "[model] pair_cutoff: the default 4 a needs [system] a > 0");
  if (fc.kind == SGM_SCORE_TRANSFORMER) {
    PetscCheck(fc.tf.d_model % 2 == 0, comm, SGM_ERR_USER, "[model] d_e must be even (got %d)",
               fc.tf.d_model);
    PetscCheck(fc.tf.d_model % fc.tf.n_heads == 0, comm, SGM_ERR_USER,
               "[model] heads = %d must divide d_e = %d", fc.tf.n_heads, fc.tf.d_model);
  }
  PetscCall(sgm_full_score_create(&fc, seed, &ms->fs));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_model_arch(SgmConfig cfg, int dim, int64_t n, SgmScoreModelSpec *ms)
{
  const char *kind;
  SgmFullScoreConfig fc;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
  if (!strcmp(kind, "local_transformer"))
    PetscCall(local_spec(cfg, dim, ms));
  else
    PetscCall(full_spec(cfg, kind, dim, n, ms, &fc));
  PetscFunctionReturn(PETSC_SUCCESS);
}

SgmParams *sgm_score_model_params(SgmScoreModelSpec *ms)
{
  return ms->fs ? sgm_full_score_params(ms->fs) : sgm_nn_transformer_params(ms->m);
}

PetscErrorCode sgm_score_model_spec_destroy(SgmScoreModelSpec *ms)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_full_score_destroy(&ms->fs));
  PetscCall(sgm_nn_transformer_destroy(&ms->m));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_model_window_width(SgmConfig cfg, const SgmAoupParams *ap, int K,
                                            double *width)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_real(cfg, "model.window_width", width));
  if (*width <= 0) {
    const double rho = (double)ap->n / pow(ap->L, ap->dim);
    *width = ap->dim == 2 ? 1.5 * sqrt((K + 1) / (M_PI * rho)) : 1.5 * (K + 1) / (2 * rho);
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode model_from_config(Trainer *t)
{
  SgmScoreModelSpec ms;
  PetscFunctionBeginUser;
  PetscCall(
      sgm_score_model_build(t->run->comm, t->run->cfg, t->ap.dim, t->ap.n, t->run->seed, &ms));
  t->kind = ms.kind;
  t->m = ms.m;
  t->fs = ms.fs;
  t->par = sgm_score_model_params(&ms);
  t->K = ms.K;
  t->max_batch = ms.max_batch;
  t->lc.learn_x = ms.learn_x, t->lc.learn_g = 1;
  t->lc.boltzmann_g = ms.boltzmann;
  t->need_shift = ms.boltzmann_x;
  for (int i = 0; i < ms.narch; i++) t->arch[i] = ms.arch[i];
  t->narch = ms.narch;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode optim_from_config(Trainer *t)
{
  SgmConfig cfg = t->run->cfg;
  SgmOptimSettings os;
  const char *name, *sched;
  double lr, lr_init, lr_end;
  int64_t warmup;
  PetscFunctionBeginUser;
  sgm_optim_settings_default(&os);
  PetscCall(sgm_config_get_string(cfg, "train.optimizer", &name));
  PetscCall(sgm_config_get_string(cfg, "train.schedule", &sched));
  PetscCall(sgm_config_get_real(cfg, "train.lr", &lr));
  PetscCall(sgm_config_get_real(cfg, "train.lr_init", &lr_init));
  PetscCall(sgm_config_get_real(cfg, "train.lr_end", &lr_end));
  PetscCall(sgm_config_get_int(cfg, "train.warmup", &warmup));
  PetscCall(sgm_config_get_real(cfg, "train.beta1", &os.beta1));
  PetscCall(sgm_config_get_real(cfg, "train.beta2", &os.beta2));
  PetscCall(sgm_config_get_real(cfg, "train.eps", &os.eps));
  PetscCall(sgm_config_get_real(cfg, "train.weight_decay", &os.weight_decay));
  PetscCall(sgm_config_get_real(cfg, "train.clip", &os.clip_norm));
  PetscCall(sgm_config_get_real(cfg, "train.ema", &os.ema_decay));
  const int64_t decay = t->steps > warmup ? t->steps : warmup + 1;
  if (!strcmp(sched, "constant"))
    os.schedule = sgm_optim_schedule_constant(lr);
  else if (!strcmp(sched, "cosine"))
    os.schedule = sgm_optim_schedule_cosine(lr, decay, lr > 0 ? lr_end / lr : 0.0);
  else
    os.schedule = sgm_optim_schedule_warmup_cosine(lr_init, lr, warmup, decay, lr_end);
  PetscCall(sgm_optim_create(name, t->par->nparams, &os, &t->opt));
  int n = 0;
  t->hyper[n++] = SGM_NN_ATTR_S("loss", sgm_loss_name(t->lc.kind));
  t->hyper[n++] = SGM_NN_ATTR_R("sigma", t->lc.sigma);
  t->hyper[n++] = SGM_NN_ATTR_I("noise_x", t->lc.noise_x);
  t->hyper[n++] = SGM_NN_ATTR_I("antithetic", t->lc.antithetic);
  t->hyper[n++] = SGM_NN_ATTR_R("lambda1", t->lc.lambda1);
  t->hyper[n++] = SGM_NN_ATTR_R("lambda2", t->lc.lambda2);
  t->hyper[n++] = SGM_NN_ATTR_I("steps", t->steps);
  t->hyper[n++] = SGM_NN_ATTR_I("batch", t->batch);
  t->hyper[n++] = SGM_NN_ATTR_S("optimizer", name);
  t->hyper[n++] = SGM_NN_ATTR_S("schedule", sched);
  t->hyper[n++] = SGM_NN_ATTR_R("lr", lr);
  t->hyper[n++] = SGM_NN_ATTR_I("warmup", warmup);
  t->hyper[n++] = SGM_NN_ATTR_R("clip", os.clip_norm);
  t->hyper[n++] = SGM_NN_ATTR_R("ema", os.ema_decay);
  t->hyper[n++] = SGM_NN_ATTR_I("seed", (int64_t)t->run->seed);
  t->nhyper = n;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The centres of step `step`'s minibatch (sgm_windows_build_selected). */
typedef struct {
  uint64_t seed;
  int64_t step, n, batch;
} BatchSel;

static int in_step_batch(void *ctx, int64_t id)
{
  const BatchSel *b = (const BatchSel *)ctx;
  return sgm_train_in_batch(b->seed, b->step, (uint64_t)id, b->n, b->batch);
}

/* The windows of step `step`'s minibatch centres in the engine's current state. */
static PetscErrorCode build_windows(Trainer *t, int64_t step)
{
  BatchSel sel = {t->run->seed, step, t->ap.n, t->batch};
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(ev_windows, 0, 0, 0, 0));
  const SgmParticles *p = &t->s->part;
  PetscCall(
      sgm_windows_build_selected(t->w, p->nlocal, p->id, p->x, p->g, in_step_batch, (void *)&sel));
  PetscCall(PetscLogEventEnd(ev_windows, 0, 0, 0, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Sets the engine to frame f (read unless it is the current one) and builds the windows of step
 * `step`'s minibatch. */
static PetscErrorCode load_frame(Trainer *t, int64_t f, int64_t step)
{
  int64_t fstep;
  PetscFunctionBeginUser;
  if (f != t->cur_frame) {
    PetscCall(PetscLogEventBegin(ev_frame, 0, 0, 0, 0));
    if (t->traj_fh < 0) PetscCall(sgm_h5md_open_read(t->run->comm, t->traj_path, &t->traj_fh));
    PetscCall(sgm_h5md_read_frame_fh(t->run->comm, t->traj_fh, t->traj_path, t->group, f, t->ap.dim,
                                     t->ap.n, t->fx, t->fg, &fstep));
    PetscCall(sgm_aoup_set_state(t->s, t->ap.n, t->ids, t->fx, t->fg, fstep));
    PetscCall(PetscLogEventEnd(ev_frame, 0, 0, 0, 0));
    t->cur_frame = f;
  }
  PetscCall(build_windows(t, step));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* train_log.h5 columns: the per-step log (n, 3) and the validation's (n, 4; NaN at steps
 * without one) */
static const char *const lnames[3] = {"loss", "lr", "grad_norm"};
static const char *const vnames[4] = {"validation_score_error", "validation_score_error_se",
                                      "validation_sm_loss_x", "validation_sm_loss_g"};

/* Writes the ncol columns of tab (n, ncol) as datasets names[c] of space sp; col: scratch (n).
 * Returns 1 on success. */
static int log_write_cols(hid_t f, hid_t sp, int64_t n, int ncol, const char *const *names,
                          const double *tab, double *col)
{
  int ok = 1;
  for (int c = 0; c < ncol && ok; c++) {
    for (int64_t i = 0; i < n; i++) col[i] = tab[ncol * i + c];
    hid_t d = H5Dcreate2(f, names[c], H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ok = d >= 0 && H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, col) >= 0;
    if (d >= 0) H5Dclose(d);
  }
  return ok;
}

/* Reads the first n entries of dataset `name` into col. Returns 1 on success, 0 when the dataset
 * is missing, shorter or unreadable. */
static int log_read_col(hid_t f, const char *name, int64_t n, double *col)
{
  if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return 0;
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return 0;
  hid_t sp = H5Dget_space(d);
  hsize_t have = 0;
  H5Sget_simple_extent_dims(sp, &have, NULL);
  int ok = (int64_t)have >= n;
  if (ok) {
    hsize_t start[1] = {0}, cnt[1] = {(hsize_t)n};
    hid_t ms = H5Screate_simple(1, cnt, NULL);
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    ok = H5Dread(d, H5T_NATIVE_DOUBLE, ms, sp, H5P_DEFAULT, col) >= 0;
    H5Sclose(ms);
  }
  H5Sclose(sp), H5Dclose(d);
  return ok;
}

/* train_log.h5 (rank 0, tmp + rename): step (n) int64, loss, lr, grad_norm (n) double, and the
 * validation columns when there is a validation. */

static PetscErrorCode write_log(Trainer *t, int64_t n)
{
  PetscMPIInt rank;
  char tmp[PETSC_MAX_PATH_LEN];
  int ok = 1;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(t->run->comm, &rank));
  PetscCall(sgm_run_tmp_path(t->run, "train_log.h5", tmp, sizeof tmp));
  if (rank == 0) {
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ok = f >= 0;
    hsize_t dims[1] = {(hsize_t)n};
    double *col = NULL;
    int64_t *st = NULL;
    if (ok) {
      PetscCall(PetscMalloc2(n + 1, &col, n + 1, &st));
      for (int64_t i = 0; i < n; i++) st[i] = i + 1;
      hid_t sp = H5Screate_simple(1, dims, NULL);
      hid_t d = H5Dcreate2(f, "step", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      ok = ok && d >= 0 && H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, st) >= 0;
      if (d >= 0) H5Dclose(d);
      ok = ok && log_write_cols(f, sp, n, 3, lnames, t->log, col);
      ok = ok && (!t->validate || log_write_cols(f, sp, n, 4, vnames, t->vlog, col));
      H5Sclose(sp);
      H5Fclose(f);
      PetscCall(PetscFree2(col, st));
    }
  }
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, t->run->comm));
  PetscCheck(ok, t->run->comm, PETSC_ERR_FILE_WRITE, "train: cannot write %s", tmp);
  PetscCall(sgm_run_commit_file(t->run, "train_log.h5"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Reads the first n entries of train_log.h5 (restart) on rank 0 and broadcasts. */
static PetscErrorCode read_log(Trainer *t, int64_t n)
{
  PetscMPIInt rank;
  char path[PETSC_MAX_PATH_LEN];
  int ok = 1;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(t->run->comm, &rank));
  PetscCall(sgm_run_path(t->run, "train_log.h5", path, sizeof path));
  if (rank == 0 && n > 0) {
    double *col;
    PetscCall(PetscMalloc1(n, &col));
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ok = f >= 0;
    for (int c = 0; c < 3 && ok; c++) {
      ok = log_read_col(f, lnames[c], n, col);
      for (int64_t i = 0; i < n && ok; i++) t->log[3 * i + c] = col[i];
    }
    /* the validation columns, when the interrupted run had them (else they stay NaN) */
    for (int c = 0; c < 4 && ok && t->validate; c++)
      if (log_read_col(f, vnames[c], n, col))
        for (int64_t i = 0; i < n; i++) t->vlog[4 * i + c] = col[i];
    if (f >= 0) H5Fclose(f);
    PetscCall(PetscFree(col));
  }
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, t->run->comm));
  PetscCheck(ok, t->run->comm, SGM_ERR_USER, "train restart: %s lacks the first %lld steps", path,
             (long long)n);
  if (n > 0) PetscCallMPI(MPI_Bcast(t->log, (int)(3 * n), MPI_DOUBLE, 0, t->run->comm));
  if (n > 0 && t->validate)
    PetscCallMPI(MPI_Bcast(t->vlog, (int)(4 * n), MPI_DOUBLE, 0, t->run->comm));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Online mode: the particle state (train_state.h5, the layout of checkpoint.h5). */
static PetscErrorCode save_state(Trainer *t)
{
  int64_t s0, count, off = 0;
  double *x, *g;
  char tmp[PETSC_MAX_PATH_LEN];
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_gather_block(t->s, &s0, &count, &x, &g));
  PetscCallMPI(MPI_Exscan(&count, &off, 1, MPIU_INT64, MPI_SUM, t->run->comm));
  PetscCallMPI(MPI_Comm_rank(t->run->comm, &rank));
  if (rank == 0) off = 0;
  PetscCheck(off == s0, PETSC_COMM_SELF, PETSC_ERR_PLIB, "id block offset mismatch");
  SgmCheckpointHeader h = {t->s->step, 0, t->ap.seed, t->ap.dim, t->ap.n};
  PetscCall(sgm_run_tmp_path(t->run, "train_state.h5", tmp, sizeof tmp));
  PetscCall(sgm_checkpoint_write(t->run->comm, tmp, &h, off, count, x, g,
                                 sgm_config_resolved_toml(t->run->cfg)));
  PetscCall(sgm_run_commit_file(t->run, "train_state.h5"));
  PetscCall(PetscFree(x));
  PetscCall(PetscFree(g));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Online mode: the starting state (restart, last trajectory frame, or random + equilibration). */
static PetscErrorCode online_start(Trainer *t, PetscBool resume)
{
  SgmConfig cfg = t->run->cfg;
  PetscFunctionBeginUser;
  if (resume) {
    char path[PETSC_MAX_PATH_LEN];
    SgmCheckpointHeader h;
    double *x, *g;
    PetscCall(sgm_run_path(t->run, "train_state.h5", path, sizeof path));
    PetscCall(sgm_checkpoint_read(t->run->comm, path, &h, &x, &g));
    PetscCheck(h.n == t->ap.n && h.dim == t->ap.dim, t->run->comm, SGM_ERR_USER,
               "train restart: %s holds another system", path);
    PetscCall(sgm_aoup_set_state(t->s, t->ap.n, t->ids, x, g, h.step));
    PetscCall(PetscFree(x));
    PetscCall(PetscFree(g));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  const char *init;
  PetscCall(sgm_config_get_string(cfg, "train.online_init", &init));
  if (!strcmp(init, "trajectory")) {
    int64_t fstep;
    PetscCall(sgm_h5md_read_frame(t->run->comm, t->traj_path, t->group, -1, t->ap.dim, t->ap.n,
                                  t->fx, t->fg, &fstep));
    PetscCall(sgm_aoup_set_state(t->s, t->ap.n, t->ids, t->fx, t->fg, fstep));
  } else {
    int64_t relax, equil;
    PetscCall(sgm_config_get_int(cfg, "simulate.relax_steps", &relax));
    PetscCall(sgm_config_get_int(cfg, "train.online_equil", &equil));
    PetscCall(sgm_aoup_init_random(t->s, (int)relax));
    for (int64_t i = 0; i < equil; i++) PetscCall(sgm_aoup_step(t->s));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Online mode: sde_steps SDE steps, then the windows of step `step`'s minibatch. */
static PetscErrorCode online_advance(Trainer *t, int64_t step)
{
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(ev_frame, 0, 0, 0, 0));
  for (int64_t i = 0; i < t->sde_steps; i++) PetscCall(sgm_aoup_step(t->s));
  PetscCall(PetscLogEventEnd(ev_frame, 0, 0, 0, 0));
  PetscCall(build_windows(t, step));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* ---- Full-state kinds: a batch element is a whole configuration. ----
 * Configuration j of step `step` is, offline, the frame sgm_train_frame(seed, step * batch + j)
 * and, online, replica j (an independent copy of the system on PETSC_COMM_SELF with its own noise
 * seed, advanced sde_steps steps before every optimiser step); rank r evaluates the configurations
 * of its block [j0, j0 + nj) of [0, batch), so the global batch does not depend on the number of
 * ranks (only the float summation order of the gradient does). */

static void block_of(int64_t n, int size, int rank, int64_t *start, int64_t *count)
{
  const int64_t q = n / size, r = n % size;
  *start = rank * q + (rank < r ? rank : r);
  *count = q + (rank < r ? 1 : 0);
}

/* Noise seed of replica j: a bijective mix of (seed, j). */
static uint64_t replica_seed(uint64_t seed, int64_t j)
{
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (uint64_t)(j + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Positions (canonical) and orientations of the engine's state, in global-id order, and each of
 * the optional outputs that is not NULL: the drift b_x = mu F - mu A x + v0 g (bx), div b (divb),
 * and the conservative drift fc = mu F (forces and trap) with its per-particle divergence dfc
 * (sgm_full_score_drift, the function the epr provider uses; [model] boltzmann_x). */
static PetscErrorCode full_extract(Trainer *t, SgmAoup e, double *x, double *g, double *bx,
                                   double *divb, double *fc, double *dfc)
{
  const int D = t->ap.dim;
  const SgmParticles *P = &e->part;
  PetscFunctionBeginUser;
  PetscCheck(P->nlocal == t->ap.n, PETSC_COMM_SELF, PETSC_ERR_PLIB, "replica holds %lld of %lld",
             (long long)P->nlocal, (long long)t->ap.n);
  if (bx || divb) PetscCall(sgm_aoup_forces(e));
  if (divb) PetscCall(sgm_epr_drift_divergence(e, t->dbx));
  if (fc) PetscCall(sgm_full_score_drift(e, fc, dfc));
  double db = -t->ap.gamma * D * (double)t->ap.n;
  for (int64_t i = 0; i < P->nlocal; i++) {
    const int64_t id = P->id[i];
    for (int a = 0; a < D; a++) {
      x[id * D + a] = P->x[i * D + a];
      g[id * D + a] = P->g[i * D + a];
      if (bx) bx[id * D + a] = P->f[i * D + a] + t->ap.v0 * P->g[i * D + a];
    }
    if (divb) db += t->dbx[i];
  }
  if (divb) *divb = db;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Offline: every frame (canonical positions, and the drift when needed) in memory on every rank. */
static PetscErrorCode full_cache_frames(Trainer *t)
{
  const int D = t->ap.dim;
  const int64_t n = t->ap.n, F = t->nframes, blk = 64;
  const size_t row = (size_t)n * D;
  SgmAoup e;
  double *x, *g;
  int64_t *st;
  PetscFunctionBeginUser;
  const double bytes = (double)F * (double)row * 8.0 *
                       (2 + (t->need_drift ? 1 : 0) + (t->stage_shift ? 1.0 + 1.0 / D : 0));
  PetscCheck(bytes < 4e9, t->run->comm, SGM_ERR_USER,
             "train: full-state kinds keep the %lld frames in memory (%.3g GB); use fewer frames",
             (long long)F, bytes / 1e9);
  PetscCall(PetscMalloc2(F * row, &t->cx, F * row, &t->cg));
  if (t->need_drift) PetscCall(PetscMalloc2(F * row, &t->cbx, F, &t->cdivb));
  if (t->stage_shift) PetscCall(PetscMalloc2(F * row, &t->cfc, F * n, &t->cdfc));
  PetscCall(PetscMalloc3(blk * row, &x, blk * row, &g, blk, &st));
  PetscCall(sgm_aoup_create(PETSC_COMM_SELF, &t->ap, &e));
  for (int64_t f0 = 0; f0 < F; f0 += blk) {
    const int64_t nb = PetscMin(blk, F - f0);
    PetscCall(sgm_epr_read_frames(t->run->comm, t->traj_path, t->group, f0, 1, nb, D, n, x, g, st));
    for (int64_t k = 0; k < nb; k++) {
      const int64_t f = f0 + k;
      PetscCall(sgm_aoup_set_state(e, n, t->ids, x + k * row, g + k * row, st[k]));
      PetscCall(full_extract(
          t, e, t->cx + f * row, t->cg + f * row, t->need_drift ? t->cbx + f * row : NULL,
          t->need_divb ? t->cdivb + f : NULL, t->stage_shift ? t->cfc + f * row : NULL,
          t->stage_shift ? t->cdfc + f * n : NULL));
    }
  }
  PetscCall(sgm_aoup_destroy(&e));
  PetscCall(PetscFree3(x, g, st));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Online: this rank's replicas, from train_state.h5 (resume), from frames of the trajectory, or
 * from random placements followed by online_equil steps. */
static PetscErrorCode full_online_start(Trainer *t, PetscBool resume)
{
  SgmConfig cfg = t->run->cfg;
  const int D = t->ap.dim;
  const int64_t n = t->ap.n, row = n * D;
  const char *init;
  double *x = NULL, *g = NULL;
  SgmCheckpointHeader h;
  PetscFunctionBeginUser;
  PetscCall(PetscCalloc1(t->nj + 1, &t->reps));
  PetscCall(sgm_config_get_string(cfg, "train.online_init", &init));
  if (resume) {
    char path[PETSC_MAX_PATH_LEN];
    PetscCall(sgm_run_path(t->run, "train_state.h5", path, sizeof path));
    PetscCall(sgm_checkpoint_read(t->run->comm, path, &h, &x, &g));
    PetscCheck(h.n == t->batch * n && h.dim == D, t->run->comm, SGM_ERR_USER,
               "train restart: %s holds another set of replicas", path);
  } else if (!strcmp(init, "trajectory")) {
    PetscCall(PetscMalloc2(row, &x, row, &g));
  }
  for (int64_t u = 0; u < t->nj; u++) {
    const int64_t j = t->j0 + u;
    SgmAoupParams ap = t->ap;
    ap.seed = replica_seed(t->ap.seed, j);
    PetscCall(sgm_aoup_create(PETSC_COMM_SELF, &ap, &t->reps[u]));
    if (resume) {
      PetscCall(sgm_aoup_set_state(t->reps[u], n, t->ids, x + j * row, g + j * row, h.step));
    } else if (!strcmp(init, "trajectory")) {
      int64_t fstep;
      const int64_t f = sgm_train_frame(t->run->seed, j, t->nframes);
      PetscCall(sgm_epr_read_frames(PETSC_COMM_SELF, t->traj_path, t->group, f, 1, 1, D, n, x, g,
                                    &fstep));
      /* step 0: every replica's step counter is the same (train_state.h5 stores one) */
      (void)fstep;
      PetscCall(sgm_aoup_set_state(t->reps[u], n, t->ids, x, g, 0));
    } else {
      int64_t relax, equil;
      PetscCall(sgm_config_get_int(cfg, "simulate.relax_steps", &relax));
      PetscCall(sgm_config_get_int(cfg, "train.online_equil", &equil));
      PetscCall(sgm_aoup_init_random(t->reps[u], (int)relax));
      for (int64_t i = 0; i < equil; i++) PetscCall(sgm_aoup_step(t->reps[u]));
    }
  }
  if (resume) {
    PetscCall(PetscFree(x));
    PetscCall(PetscFree(g));
  } else if (x)
    PetscCall(PetscFree2(x, g));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Online: the replicas' states as one checkpoint of batch * n rows (replica j: rows j n ...). */
static PetscErrorCode full_save_state(Trainer *t)
{
  const int D = t->ap.dim;
  const int64_t n = t->ap.n, row = n * D;
  char tmp[PETSC_MAX_PATH_LEN];
  int64_t step = 0;
  PetscFunctionBeginUser;
  for (int64_t u = 0; u < t->nj; u++) {
    const SgmParticles *P = &t->reps[u]->part;
    step = t->reps[u]->step;
    for (int64_t i = 0; i < P->nlocal; i++)
      for (int a = 0; a < D; a++) {
        t->bx[u * row + P->id[i] * D + a] = P->x[i * D + a];
        t->bg[u * row + P->id[i] * D + a] = P->g[i * D + a];
      }
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &step, 1, MPIU_INT64, MPI_MAX, t->run->comm));
  SgmCheckpointHeader h = {step, 0, t->ap.seed, D, t->batch * n};
  PetscCall(sgm_run_tmp_path(t->run, "train_state.h5", tmp, sizeof tmp));
  PetscCall(sgm_checkpoint_write(t->run->comm, tmp, &h, t->j0 * n, t->nj * n, t->bx, t->bg,
                                 sgm_config_resolved_toml(t->run->cfg)));
  PetscCall(sgm_run_commit_file(t->run, "train_state.h5"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode full_setup(Trainer *t, PetscBool resume)
{
  PetscMPIInt rank, size;
  const int64_t row = t->ap.n * t->ap.dim;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(t->run->comm, &rank));
  PetscCallMPI(MPI_Comm_size(t->run->comm, &size));
  block_of(t->batch, size, rank, &t->j0, &t->nj);
  t->need_divb = t->fw.w_fpe != 0.0;
  t->need_drift = t->need_divb || t->transition;
  t->stage_shift = t->need_shift && !t->transition;
  PetscCall(
      PetscMalloc3(t->nj * row + 1, &t->bx, t->nj * row + 1, &t->bg, t->nj * row + 1, &t->bbx));
  PetscCall(PetscMalloc2(t->nj + 1, &t->bdivb, t->ap.n, &t->dbx));
  if (t->stage_shift)
    PetscCall(PetscMalloc2(t->nj * row + 1, &t->bfc, t->nj * t->ap.n + 1, &t->bdfc));
  if (t->transition) {
    const int64_t nv = t->tr_pairs * t->nj;
    PetscCall(PetscMalloc5(nv * row + 1, &t->px, nv * row + 1, &t->pg, nv * row + 1, &t->pfc,
                           nv * row + 1, &t->ptx, nv * row + 1, &t->ptg));
    PetscCall(PetscMalloc1(2 * row, &t->xi));
    PetscCall(sgm_aoup_create(PETSC_COMM_SELF, &t->ap, &t->tr_e));
  }
  if (t->online)
    PetscCall(full_online_start(t, resume));
  else
    PetscCall(full_cache_frames(t));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The transition loss's configurations of this rank for step `step`: from each staged r = (x, g)
 * with its drift b_x (bx), one Euler-Maruyama step
 *   x' = x + dt b_x + s sqrt(2 dt eps) xi_x,   g' = c g + s sigma_g xi_g,
 * with c = 1 - gamma dt, sigma_g^2 = 2 gamma dt (Euler-Maruyama) or, as the engine steps g with
 * [simulate] g_update = "exact", c = exp(-gamma dt), sigma_g^2 = 1 - exp(-2 gamma dt): with
 * transition_dt = [simulate] dt, r' follows the very chain that made the data, whose stationary
 * law the minimiser's score is. s = +1 (and -1 for the antithetic partner), xi a pure function of
 * (seed, SGM_RNG_DENOISE, configuration index j, step), so the global batch does not depend on
 * the number of ranks; the targets are the transition scores of eq. (87), t_x = -s xi_x /
 * sqrt(2 dt eps) and t_g = -s xi_g / sigma_g. r' goes through the engine, which wraps x' into
 * a periodic box and, with [model] boltzmann_x, gives mu F(x'). */
static PetscErrorCode transition_stage(Trainer *t, int64_t step)
{
  const int D = t->ap.dim;
  const int64_t n = t->ap.n, row = n * D;
  const double dt = t->tr_dt, eps = t->ap.eps, gam = t->ap.gamma;
  /* g as the engine steps it ([simulate] g_update): exact OU or Euler-Maruyama */
  const double cg = t->ap.g_exact ? exp(-gam * dt) : 1.0 - gam * dt;
  const double sx = sqrt(2.0 * dt * eps),
               sg = t->ap.g_exact ? sqrt(-expm1(-2.0 * gam * dt)) : sqrt(2.0 * dt * gam);
  PetscFunctionBeginUser;
  for (int64_t u = 0; u < t->nj; u++) {
    const double *x = t->bx + u * row, *g = t->bg + u * row, *b = t->bbx + u * row;
    sgm_rng_normals(t->run->seed, SGM_RNG_DENOISE, (uint64_t)(t->j0 + u), (uint64_t)step,
                    (int)(2 * row), t->xi);
    for (int p = 0; p < t->tr_pairs; p++) {
      const double sgn = p ? -1.0 : 1.0;
      const int64_t v = t->tr_pairs * u + p;
      double *xp = t->px + v * row, *gp = t->pg + v * row, *tx = t->ptx + v * row,
             *tg = t->ptg + v * row;
      for (int64_t k = 0; k < row; k++) {
        const double zx = t->xi[k], zg = t->xi[row + k];
        xp[k] = x[k] + dt * b[k] + sgn * sx * zx;
        gp[k] = cg * g[k] + sgn * sg * zg;
        tx[k] = eps > 0.0 ? -sgn * zx / sx : 0.0;
        tg[k] = -sgn * zg / sg;
      }
      PetscCall(sgm_aoup_set_state(t->tr_e, n, t->ids, xp, gp, 0));
      const SgmParticles *P = &t->tr_e->part;
      if (t->need_shift) PetscCall(sgm_aoup_forces(t->tr_e));
      for (int64_t i = 0; i < P->nlocal; i++)
        for (int a = 0; a < D; a++) {
          xp[P->id[i] * D + a] = P->x[i * D + a];
          if (t->need_shift) t->pfc[v * row + P->id[i] * D + a] = P->f[i * D + a];
        }
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* One step's configurations of this rank and their loss and gradient. */
static PetscErrorCode full_step(Trainer *t, int64_t step, double *lsum)
{
  const int64_t row = t->ap.n * t->ap.dim;
  PetscFunctionBeginUser;
  PetscCall(PetscLogEventBegin(ev_frame, 0, 0, 0, 0));
  for (int64_t u = 0; u < t->nj; u++) {
    if (t->online) {
      for (int64_t i = 0; i < t->sde_steps; i++) PetscCall(sgm_aoup_step(t->reps[u]));
      PetscCall(full_extract(
          t, t->reps[u], t->bx + u * row, t->bg + u * row, t->need_drift ? t->bbx + u * row : NULL,
          t->need_divb ? t->bdivb + u : NULL, t->stage_shift ? t->bfc + u * row : NULL,
          t->stage_shift ? t->bdfc + u * t->ap.n : NULL));
    } else {
      const int64_t f = sgm_train_frame(t->run->seed, step * t->batch + t->j0 + u, t->nframes);
      PetscCall(PetscArraycpy(t->bx + u * row, t->cx + f * row, row));
      PetscCall(PetscArraycpy(t->bg + u * row, t->cg + f * row, row));
      if (t->need_drift) PetscCall(PetscArraycpy(t->bbx + u * row, t->cbx + f * row, row));
      if (t->need_divb) t->bdivb[u] = t->cdivb[f];
      if (t->stage_shift) {
        PetscCall(PetscArraycpy(t->bfc + u * row, t->cfc + f * row, row));
        PetscCall(PetscArraycpy(t->bdfc + u * t->ap.n, t->cdfc + f * t->ap.n, t->ap.n));
      }
    }
  }
  PetscCall(PetscLogEventEnd(ev_frame, 0, 0, 0, 0));
  *lsum = 0.0;
  if (t->transition) {
    PetscCall(PetscLogEventBegin(ev_frame, 0, 0, 0, 0));
    PetscCall(transition_stage(t, step));
    PetscCall(PetscLogEventEnd(ev_frame, 0, 0, 0, 0));
    if (t->nj > 0)
      PetscCall(sgm_full_score_loss_targets(
          t->fs, (int)(t->tr_pairs * t->nj), t->px, t->pg, t->need_shift ? t->pfc : NULL,
          t->lc.learn_x ? t->ptx : NULL, t->ptg, 1.0 / t->tr_pairs, lsum));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  const SgmFullScoreShift sh = {t->bfc, t->bdfc};
  if (t->nj > 0)
    PetscCall(sgm_full_score_loss(t->fs, &t->fw, (int)t->nj, t->bx, t->bg,
                                  t->need_drift ? t->bbx : NULL, t->need_divb ? t->bdivb : NULL,
                                  &sh, lsum));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* [train] validate_trajectory: this rank's block of validate_frames frames evenly spaced over
 * the file, in global-id order, each with div b = sum_i div_{x_i} b_x^i - gamma d n and, with
 * boltzmann_x, the conservative drift mu F and its divergence (the shift of the score). */
static PetscErrorCode validate_setup(Trainer *t)
{
  SgmConfig cfg = t->run->cfg;
  PetscMPIInt rank, size;
  float *m, *v, *ema;
  PetscFunctionBeginUser;
  if (!t->validate) PetscFunctionReturn(PETSC_SUCCESS);
  const char *vp;
  int64_t want, nfile;
  PetscCall(sgm_config_get_string(cfg, "train.validate_trajectory", &vp));
  PetscCall(PetscStrncpy(t->vpath, vp, sizeof t->vpath));
  PetscCall(sgm_config_get_int(cfg, "train.validate_frames", &want));
  PetscCall(sgm_h5md_nframes(t->run->comm, t->vpath, t->group, &nfile));
  PetscCheck(nfile >= 2, t->run->comm, SGM_ERR_USER,
             "train: validate_trajectory %s has %lld frames; it needs at least 2", t->vpath,
             (long long)nfile);
  PetscCallMPI(MPI_Comm_rank(t->run->comm, &rank));
  PetscCallMPI(MPI_Comm_size(t->run->comm, &size));
  t->nv = PetscMin(want, nfile);
  block_of(t->nv, size, rank, &t->v0f, &t->nvl);
  const int D = t->ap.dim;
  const int64_t n = t->ap.n, row = n * D;
  PetscCall(PetscMalloc5(t->nvl * row + 1, &t->vx, t->nvl * row + 1, &t->vg, t->nvl * row + 1,
                         &t->vfc, t->nvl * n + 1, &t->vdfc, t->nvl + 1, &t->vdivb));
  PetscCall(PetscMalloc5(row, &t->vsx, row, &t->vsg, n, &t->vdx, n, &t->vdg, t->par->nparams + 1,
                         &t->vsave));
  double *x, *g;
  PetscCall(PetscMalloc2(row, &x, row, &g));
  SgmAoup e;
  PetscCall(sgm_aoup_create(PETSC_COMM_SELF, &t->ap, &e));
  for (int64_t u = 0; u < t->nvl; u++) {
    const int64_t f = (t->v0f + u) * (nfile - 1) / (t->nv - 1);
    int64_t st;
    PetscCall(sgm_epr_read_frames(PETSC_COMM_SELF, t->vpath, t->group, f, 1, 1, D, n, x, g, &st));
    PetscCall(sgm_aoup_set_state(e, n, t->ids, x, g, st));
    PetscCall(full_extract(t, e, t->vx + u * row, t->vg + u * row, NULL, t->vdivb + u,
                           t->need_shift ? t->vfc + u * row : NULL,
                           t->need_shift ? t->vdfc + u * n : NULL));
  }
  PetscCall(sgm_aoup_destroy(&e));
  PetscCall(PetscFree2(x, g));
  PetscCall(sgm_optim_get_moments(t->opt, &m, &v, &ema));
  PetscCall(sgm_log(t->run->comm,
                    "train: validation on %lld frames of %s (the score's D-weighted squared "
                    "error, %s weights)\n",
                    (long long)t->nv, t->vpath, ema ? "EMA" : "trained"));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Collective: the score error E|s - s_exact|^2_D per particle on the validation frames (the
 * estimate of the epr stage, docs/derivations.md), with the EMA weights when there are any,
 * into row step - 1 of vlog, and logged. */
static PetscErrorCode validate_eval(Trainer *t, int64_t step)
{
  const int D = t->ap.dim;
  const int64_t n = t->ap.n, row = n * D;
  const size_t np = t->par->nparams;
  const SgmEprCoeffs co = {t->ap.v0, t->ap.gamma, t->ap.eps};
  float *m, *v, *ema;
  double acc[4] = {0, 0, 0, 0};
  PetscFunctionBeginUser;
  if (!t->validate) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_optim_get_moments(t->opt, &m, &v, &ema));
  if (ema) {
    memcpy(t->vsave, t->par->params, np * sizeof(float));
    memcpy(t->par->params, ema, np * sizeof(float));
  }
  for (int64_t u = 0; u < t->nvl; u++) {
    const SgmFullScoreShift sh = {t->vfc + u * row, t->vdfc + u * n};
    PetscCall(sgm_full_score_eval(t->fs, 1, t->vx + u * row, t->vg + u * row,
                                  t->need_shift ? &sh : NULL, t->vsx, t->vsg, t->vdx, t->vdg));
    double smx = 0, smg = 0, tsm[SGM_EPR_NSM];
    for (int64_t i = 0; i < n; i++) { /* the epr stage's terms (div b is the frame's total) */
      sgm_epr_score_terms(&co, D, t->vsx + i * D, t->vsg + i * D, t->vdx[i], t->vdg[i], 0.0, tsm);
      smx += tsm[0], smg += tsm[1];
    }
    const double err = (smx + smg - t->vdivb[u]) / (double)n;
    acc[0] += err, acc[1] += err * err, acc[2] += smx / (double)n, acc[3] += smg / (double)n;
  }
  if (ema) memcpy(t->par->params, t->vsave, np * sizeof(float));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, acc, 4, MPI_DOUBLE, MPI_SUM, t->run->comm));
  const double nv = (double)t->nv, mean = acc[0] / nv;
  const double var = PetscMax(0.0, (acc[1] - nv * mean * mean) / (nv - 1.0));
  double *r = t->vlog + 4 * (step - 1);
  r[0] = mean, r[1] = sqrt(var / nv), r[2] = acc[2] / nv, r[3] = acc[3] / nv;
  PetscCall(sgm_log(t->run->comm,
                    "train: step %lld validation: score error %.5g +- %.2g per particle; sm loss "
                    "x %.5g, g %.5g\n",
                    (long long)step, r[0], r[1], r[2], r[3]));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode full_destroy(Trainer *t)
{
  PetscFunctionBeginUser;
  PetscCall(sgm_full_score_destroy(&t->fs));
  if (t->reps)
    for (int64_t u = 0; u < t->nj; u++) PetscCall(sgm_aoup_destroy(&t->reps[u]));
  PetscCall(PetscFree(t->reps));
  PetscCall(PetscFree2(t->cx, t->cg));
  PetscCall(PetscFree2(t->cbx, t->cdivb));
  PetscCall(PetscFree3(t->bx, t->bg, t->bbx));
  PetscCall(PetscFree2(t->bdivb, t->dbx));
  PetscCall(PetscFree2(t->cfc, t->cdfc));
  PetscCall(PetscFree2(t->bfc, t->bdfc));
  PetscCall(PetscFree5(t->px, t->pg, t->pfc, t->ptx, t->ptg));
  PetscCall(PetscFree(t->xi));
  PetscCall(sgm_aoup_destroy(&t->tr_e));
  PetscCall(PetscFree5(t->vx, t->vg, t->vfc, t->vdfc, t->vdivb));
  PetscCall(PetscFree5(t->vsx, t->vsg, t->vdx, t->vdg, t->vsave));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode save(Trainer *t, const char *name, int64_t nlog)
{
  char path[PETSC_MAX_PATH_LEN];
  uint64_t h;
  PetscFunctionBeginUser;
  PetscCall(sgm_train_check_params(t->run->comm, t->par, &h));
  PetscCall(sgm_run_path(t->run, name, path, sizeof path));
  PetscCall(
      sgm_nn_save(t->run->comm, path, t->par, t->narch, t->arch, t->nhyper, t->hyper, t->opt));
  PetscCall(write_log(t, nlog));
  if (t->online && t->fs)
    PetscCall(full_save_state(t));
  else if (t->online)
    PetscCall(save_state(t));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static int cmp_id(const void *a, const void *b)
{
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static PetscErrorCode trainer_destroy(Trainer *t)
{
  PetscFunctionBeginUser;
  if (t->traj_fh >= 0) PetscCall(sgm_h5md_close(t->traj_fh));
  t->traj_fh = -1;
  PetscCall(sgm_loss_destroy(&t->loss));
  PetscCall(sgm_optim_destroy(&t->opt));
  PetscCall(full_destroy(t));
  PetscCall(sgm_nn_transformer_destroy(&t->m));
  PetscCall(sgm_windows_destroy(&t->w));
  PetscCall(sgm_aoup_destroy(&t->s));
  PetscCall(PetscFree4(t->ids, t->centres, t->fx, t->fg));
  PetscCall(PetscFree(t->pairs));
  PetscCall(PetscFree(t->log));
  PetscCall(PetscFree(t->vlog));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_stage_train(SgmRun *run)
{
  Trainer t;
  SgmConfig cfg = run->cfg;
  MPI_Comm comm = run->comm;
  const char *lname;
  PetscBool b, set;
  int64_t ckpt_every, log_every, stop_after, start = 0;
  int need_traj, full;
  double width;
  PetscFunctionBeginUser;
  PetscCall(train_log_init());
  memset(&t, 0, sizeof t);
  t.run = run;
  t.cur_frame = -1;
  t.traj_fh = -1;
  PetscCall(sgm_aoup_params_from_config(cfg, run->seed, &t.ap));
  {
    const char *kind;
    PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
    full = strcmp(kind, "local_transformer") != 0;
  }
  PetscCheck(full || t.ap.periodic, comm, SGM_ERR_USER,
             "train: windows need a periodic box ([system] boundary = \"periodic\")");
  PetscCall(sgm_config_get_string(cfg, "train.loss", &lname));
  PetscCall(sgm_loss_kind_from_name(lname, &t.lc.kind));
  PetscCall(sgm_config_get_real(cfg, "train.sigma", &t.lc.sigma));
  PetscCall(sgm_config_get_bool(cfg, "train.noise_x", &b));
  t.lc.noise_x = (int)b;
  PetscCall(sgm_config_get_bool(cfg, "train.antithetic", &b));
  t.lc.antithetic = (int)b;
  PetscCall(sgm_config_get_real(cfg, "train.lambda1", &t.lc.lambda1));
  PetscCall(sgm_config_get_real(cfg, "train.lambda2", &t.lc.lambda2));
  PetscCall(sgm_config_get_int(cfg, "train.steps", &t.steps));
  PetscCall(sgm_config_get_int(cfg, "train.batch", &t.batch));
  PetscCall(sgm_config_get_int(cfg, "train.checkpoint_every", &ckpt_every));
  PetscCall(sgm_config_get_int(cfg, "train.log_every", &log_every));
  PetscCall(sgm_config_get_int(cfg, "train.stop_after", &stop_after));
  PetscCall(sgm_config_get_string(cfg, "train.group", &t.group));
  PetscCall(sgm_config_get_real(cfg, "model.window_width", &width));
  {
    const char *mode, *init;
    PetscCall(sgm_config_get_string(cfg, "train.mode", &mode));
    PetscCall(sgm_config_get_string(cfg, "train.online_init", &init));
    PetscCall(sgm_config_get_int(cfg, "train.sde_steps", &t.sde_steps));
    t.online = !strcmp(mode, "online");
    need_traj = !t.online || !strcmp(init, "trajectory");
  }
  t.lc.dim = t.ap.dim;
  t.lc.seed = run->seed;
  PetscCheck(full || t.batch <= t.ap.n, comm, SGM_ERR_USER, "[train] batch = %lld exceeds N = %lld",
             (long long)t.batch, (long long)t.ap.n);
  PetscCheck(!full || t.lc.kind != SGM_LOSS_DENOISE, comm, SGM_ERR_USER,
             "train: the full-state kinds (mlp, transformer) take loss = \"sm\", \"fpe\", "
             "\"composite\" or \"transition\", not \"denoise\"");
  PetscCheck(full || t.lc.kind != SGM_LOSS_TRANSITION, comm, SGM_ERR_USER,
             "train: loss = \"transition\" steps the whole system: it needs a full-state model "
             "([model] kind = \"mlp\" or \"transformer\")");
  t.transition = t.lc.kind == SGM_LOSS_TRANSITION;
  t.tr_pairs = t.lc.antithetic ? 2 : 1;
  PetscCall(sgm_config_get_real(cfg, "train.transition_dt", &t.tr_dt));
  if (!(t.tr_dt > 0.0)) t.tr_dt = t.ap.dt;
  t.fw.eps = t.ap.eps, t.fw.gamma = t.ap.gamma;
  t.fw.w_sm = t.lc.kind == SGM_LOSS_SM ? 1.0 : t.lc.kind == SGM_LOSS_COMPOSITE ? t.lc.lambda1 : 0.0;
  t.fw.w_fpe = t.lc.kind == SGM_LOSS_FPE || t.lc.kind == SGM_LOSS_COMPOSITE ? t.lc.lambda2 : 0.0;
  PetscCall(sgm_config_is_set(cfg, "train.trajectory", &set));
  if (set) {
    PetscCall(sgm_config_get_string(cfg, "train.trajectory", &t.traj));
    PetscCall(PetscStrncpy(t.traj_path, t.traj, sizeof t.traj_path));
  } else
    PetscCall(sgm_run_path(run, "trajectory.h5", t.traj_path, sizeof t.traj_path));
  if (need_traj) PetscCall(sgm_file_exists(comm, t.traj_path, R_OK, &b));
  PetscCheck(!need_traj || b, comm, SGM_ERR_USER,
             "train: no trajectory %s (run `simulate` first or set [train] "
             "trajectory)",
             t.traj_path);
  if (need_traj) {
    PetscCall(sgm_h5md_nframes(comm, t.traj_path, t.group, &t.nframes));
    PetscCheck(t.nframes > 0, comm, SGM_ERR_USER, "train: %s has no frames", t.traj_path);
  }

  /* restart: continue from train_checkpoint.h5 when --restart is given and it exists */
  char ckpt[PETSC_MAX_PATH_LEN];
  PetscBool resume = PETSC_FALSE;
  PetscCall(sgm_run_path(run, "train_checkpoint.h5", ckpt, sizeof ckpt));
  if (run->restart) PetscCall(sgm_file_exists(comm, ckpt, R_OK, &resume));
  if (run->restart && !resume) {
    char mpath[PETSC_MAX_PATH_LEN];
    PetscBool done_before;
    PetscCall(sgm_run_path(run, "model.h5", mpath, sizeof mpath));
    PetscCall(sgm_file_exists(comm, mpath, R_OK, &done_before));
    if (done_before) { /* the interrupted job had finished training: nothing to continue */
      PetscCall(sgm_log(comm, "train: restart: %s is complete (no train_checkpoint.h5), skipping\n",
                        mpath));
      PetscFunctionReturn(PETSC_SUCCESS);
    }
  }
  if (!resume) {
    PetscCall(sgm_run_check_writable(run, "model.h5"));
    PetscCall(sgm_run_check_writable(run, "train_log.h5"));
  }

  PetscCall(model_from_config(&t));
  PetscCall(optim_from_config(&t));
  PetscCheck(!t.transition || !t.lc.learn_x || t.ap.eps > 0.0, comm, SGM_ERR_USER,
             "train: loss = \"transition\" learns s_x from the translational noise: [system] eps "
             "must be > 0 with learn = \"xg\"");
  PetscCheck(!full || t.lc.learn_x || t.fw.w_fpe == 0.0, comm, SGM_ERR_USER,
             "train: loss \"%s\" needs s_x: set [model] learn = \"xg\"", lname);
  if (!full) {
    PetscCall(sgm_loss_create(&t.lc, t.m, t.K, t.max_batch, &t.loss));
    PetscCall(sgm_aoup_create(comm, &t.ap, &t.s));
    PetscCall(sgm_score_model_window_width(cfg, &t.ap, t.K, &width));
    PetscCall(sgm_windows_create(comm, &t.s->decomp, t.K, width, &t.w));
  }
  PetscCall(PetscMalloc4(t.ap.n, &t.ids, t.ap.n, &t.centres, t.ap.n * t.ap.dim, &t.fx,
                         t.ap.n * t.ap.dim, &t.fg));
  PetscCall(PetscMalloc1(2 * t.ap.n, &t.pairs));
  for (int64_t i = 0; i < t.ap.n; i++) t.ids[i] = i;
  PetscCall(PetscCalloc1(3 * (t.steps + 1), &t.log));
  PetscCall(PetscMalloc1(4 * (t.steps + 1), &t.vlog));
  for (int64_t i = 0; i < 4 * (t.steps + 1); i++) t.vlog[i] = NAN;
  PetscBool vset;
  PetscCall(sgm_config_is_set(cfg, "train.validate_trajectory", &vset));
  t.validate = full && vset;
  PetscBool init_set;
  PetscCall(sgm_config_is_set(cfg, "train.init_model", &init_set));
  if (init_set && !resume) { /* start from another run's weights; the optimiser starts afresh */
    const char *init;
    int ema;
    PetscCall(sgm_config_get_string(cfg, "train.init_model", &init));
    PetscCall(sgm_nn_load_auto(comm, init, t.par, t.narch, t.arch, &ema));
    PetscCall(sgm_log(comm, "train: starting from the %s weights of %s\n",
                      ema ? "EMA" : "trained (raw)", init));
  }
  if (resume) {
    PetscCall(sgm_nn_load(comm, ckpt, t.par, t.narch, t.arch, t.opt));
    PetscCall(sgm_optim_get_step(t.opt, &start));
    PetscCheck(start <= t.steps, comm, SGM_ERR_USER,
               "train restart: checkpoint at step %lld beyond [train] steps = %lld",
               (long long)start, (long long)t.steps);
    PetscCall(read_log(&t, start));
    PetscCall(sgm_log(comm, "train: restarting from %s at step %lld\n", ckpt, (long long)start));
  }
  if (full) {
    PetscCall(full_setup(&t, resume));
    PetscCall(validate_setup(&t));
  } else if (t.online)
    PetscCall(online_start(&t, resume));
  PetscCall(sgm_train_check_params(comm, t.par, NULL));
  if (full)
    PetscCall(sgm_log(comm,
                      "train: %s, %s loss, full-state %s over N = %lld, %zu parameters, %lld steps "
                      "of %lld configurations%s\n",
                      t.online ? "online" : "offline", lname,
                      t.kind == SGM_SCORE_MLP ? "MLP" : "particle transformer", (long long)t.ap.n,
                      t.par->nparams, (long long)t.steps, (long long)t.batch,
                      t.online ? " (SDE replicas)" : " (stored frames)"));
  else if (t.online)
    PetscCall(
        sgm_log(comm,
                "train: online, %s loss, local transformer K = %d, %zu parameters, %lld steps "
                "of %lld centres, %lld SDE steps before each\n",
                lname, t.K, t.par->nparams, (long long)t.steps, (long long)t.batch,
                (long long)t.sde_steps));
  else
    PetscCall(sgm_log(comm,
                      "train: %s loss, local transformer K = %d, %zu parameters, %lld steps of "
                      "%lld centres from %lld frames of %s\n",
                      lname, t.K, t.par->nparams, (long long)t.steps, (long long)t.batch,
                      (long long)t.nframes, t.traj_path));

  SgmProgress prog;
  const double per_step = full ? (double)t.batch * (double)t.ap.n : (double)t.batch;
  PetscCall(sgm_progress_create(comm, "train", t.steps - start, per_step, "particles", &prog));
  double t_total = 0, t_allreduce = 0, loss = NAN;
  PetscBool stop = PETSC_FALSE;
  int64_t step = start, done = 0;
  const int64_t nparams = (int64_t)t.par->nparams;
  while (step < t.steps) {
    const double t0 = MPI_Wtime();
    double lsum;
    sgm_nn_params_zero_grad(t.par);
    if (full) {
      PetscCall(PetscLogEventBegin(ev_loss, 0, 0, 0, 0));
      PetscCall(full_step(&t, step, &lsum));
      PetscCall(PetscLogEventEnd(ev_loss, 0, 0, 0, 0));
    } else {
      if (t.online)
        PetscCall(online_advance(&t, step));
      else
        PetscCall(load_frame(&t, sgm_train_frame(run->seed, step, t.nframes), step));
      const SgmParticles *p;
      PetscCall(sgm_windows_get(t.w, NULL, NULL, NULL, &p));
      int64_t nb = 0;
      for (int64_t a = 0; a < p->nlocal; a++)
        if (sgm_train_in_batch(run->seed, step, (uint64_t)p->id[a], t.ap.n, t.batch)) {
          t.pairs[2 * nb] = p->id[a], t.pairs[2 * nb + 1] = a;
          nb++;
        }
      /* centres in global-id order: the gradient sums do not depend on the local particle order
       * (which migration history sets in online mode) */
      qsort(t.pairs, (size_t)nb, 2 * sizeof(int64_t), cmp_id);
      for (int64_t c = 0; c < nb; c++) t.centres[c] = t.pairs[2 * c + 1];
      PetscCall(PetscLogEventBegin(ev_loss, 0, 0, 0, 0));
      PetscCall(sgm_loss_eval(t.loss, t.w, nb, t.centres, step, &lsum));
      PetscCall(PetscLogEventEnd(ev_loss, 0, 0, 0, 0));
    }
    PetscCall(PetscLogEventBegin(ev_allreduce, 0, 0, 0, 0));
    const double ta = MPI_Wtime();
    PetscCallMPI(
        MPI_Allreduce(MPI_IN_PLACE, t.par->grads, (PetscMPIInt)nparams, MPI_FLOAT, MPI_SUM, comm));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &lsum, 1, MPI_DOUBLE, MPI_SUM, comm));
    t_allreduce += MPI_Wtime() - ta;
    PetscCall(PetscLogEventEnd(ev_allreduce, 0, 0, 0, 0));
    loss = lsum / (double)t.batch;
    PetscCheck(isfinite(loss), comm, PETSC_ERR_FP, "train: non-finite loss at step %lld",
               (long long)step);
    const float scale = (float)(1.0 / (double)t.batch);
    for (int64_t i = 0; i < nparams; i++) t.par->grads[i] *= scale;
    double lr, gnorm;
    PetscCall(sgm_optim_get_lr(t.opt, &lr));
    PetscCall(PetscLogEventBegin(ev_optim, 0, 0, 0, 0));
    PetscCall(sgm_optim_step(t.opt, t.par->params, t.par->grads, &gnorm));
    PetscCall(PetscLogEventEnd(ev_optim, 0, 0, 0, 0));
    t.log[3 * step] = loss, t.log[3 * step + 1] = lr, t.log[3 * step + 2] = gnorm;
    step++, done++;
    t_total += MPI_Wtime() - t0;
    if (step % log_every == 0 || step == t.steps) {
      PetscCall(sgm_log(comm, "train: step %lld loss %.6g lr %.3g |grad| %.3g\n", (long long)step,
                        loss, lr, gnorm));
      PetscCall(validate_eval(&t, step));
    }
    PetscCall(sgm_progress_update(prog, done));
    if (ckpt_every > 0 && step % ckpt_every == 0 && step < t.steps)
      PetscCall(save(&t, "train_checkpoint.h5", step));
    PetscCall(sgm_stop_requested(comm, &stop));
    if (stop_after > 0 && done >= stop_after) stop = PETSC_TRUE;
    if (stop && step < t.steps) break;
    stop = PETSC_FALSE;
  }
  PetscCall(sgm_progress_destroy(&prog));
  const double rate = t_total > 0 ? (double)done * per_step / t_total : 0.0;
  if (stop) {
    PetscCall(save(&t, "train_checkpoint.h5", step));
    PetscCall(sgm_log(comm,
                      "train: stopped at step %lld; continue with --restart (train_checkpoint.h5 "
                      "in %s)\n",
                      (long long)step, run->outdir));
    PetscCall(sgm_metrics_set(run->metrics, "train", "interrupted_at_step", (double)step));
  } else {
    PetscCall(save(&t, "model.h5", t.steps));
    PetscMPIInt rank;
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    if (rank == 0) (void)remove(ckpt); /* a finished run has nothing to resume */
    double w = 0.0;
    int64_t ngrow = 0;
    if (t.w) sgm_windows_width(t.w, &w, &ngrow);
    PetscCall(sgm_log(comm,
                      "train: done, final loss %.6g, %.4g particles/s, allreduce %.1f%%, "
                      "window halo %.3g (grown %lld times)\n",
                      loss, rate, t_total > 0 ? 100 * t_allreduce / t_total : 0.0, w,
                      (long long)ngrow));
    PetscCall(sgm_metrics_set(run->metrics, "train", "steps", (double)t.steps));
  }
  if (done > 0) PetscCall(sgm_metrics_set(run->metrics, "train", "final_loss", loss));
  for (int64_t i = step; t.validate && i >= 1; i--) /* the last validation */
    if (!isnan(t.vlog[4 * (i - 1)])) {
      for (int c = 0; c < 4; c++) /* metrics keys = the train_log.h5 column names */
        PetscCall(sgm_metrics_set(run->metrics, "train", vnames[c], t.vlog[4 * (i - 1) + c]));
      PetscCall(sgm_metrics_set(run->metrics, "train", "validation_step", (double)i));
      break;
    }
  PetscCall(sgm_metrics_set(run->metrics, "train", "particles_per_s", rate));
  PetscCall(sgm_metrics_set(run->metrics, "train", "allreduce_fraction",
                            t_total > 0 ? t_allreduce / t_total : 0.0));
  PetscCall(sgm_metrics_set(run->metrics, "train", "n_params", (double)nparams));
  PetscCall(sgm_metrics_flush(run->metrics));
  PetscCall(trainer_destroy(&t));
  PetscFunctionReturn(PETSC_SUCCESS);
}
