/* The [model] and [train] tables of the score module (documented in docs/input.md through the
 * schema registry). [model] fixes the architecture (stored as /architecture in model.h5 and
 * checked on load); [train] the loss, optimiser and loop. */
#include "sgm/train.h"
#include "sgm/h5md.h"
#include "sgm/nn_io.h"
#include "sgm/score_model.h"

#include <math.h>
#include <string.h>

static const SgmKeySpec model_keys[] = {
    {"kind", SGM_KEY_STRING, "\"local_transformer\"", 0, -INFINITY, INFINITY,
     "local_transformer|mlp|transformer", "",
     "Score network: the per-particle transformer over K-nearest-neighbour windows (App. F.6); "
     "an MLP on the full state of all N particles (App. F.2, keys hidden, depth); or the particle "
     "transformer over all N particles (App. E/F.5, keys d_e ... dec_depth). The full-state kinds "
     "train on whole configurations ([train] batch counts configurations) and allow open "
     "boundaries"},
    {"hidden", SGM_KEY_INT, "256", 0, 1, 1 << 20, NULL, "",
     "kind = \"mlp\": width of each hidden layer"},
    {"depth", SGM_KEY_INT, "4", 0, 1, 1024, NULL, "", "kind = \"mlp\": number of hidden layers"},
    {"d_e", SGM_KEY_INT, "256", 0, 2, 65536, NULL, "", "Embedding width d_e (even)"},
    {"layers", SGM_KEY_INT, "4", 0, 1, 1024, NULL, "", "Encoder blocks L"},
    {"heads", SGM_KEY_INT, "4", 0, 1, 1024, NULL, "", "Attention heads (divide d_e)"},
    {"K", SGM_KEY_INT, "64", 0, 1, 65536, NULL, "", "Neighbours per window (window of K + 1)"},
    {"mlp_hidden", SGM_KEY_INT, "256", 0, 1, 1 << 20, NULL, "",
     "Hidden width of the MLP psi inside each encoder block"},
    {"embed_hidden", SGM_KEY_INT, "256", 0, 1, 1 << 20, NULL, "",
     "Hidden width of the position and orientation embedding MLPs"},
    {"embed_depth", SGM_KEY_INT, "2", 0, 0, 64, NULL, "",
     "Hidden layers of each embedding MLP (0: one Linear)"},
    {"dec_hidden", SGM_KEY_INT, "256", 0, 1, 1 << 20, NULL, "", "Hidden width of the decoder MLP"},
    {"dec_depth", SGM_KEY_INT, "2", 0, 0, 64, NULL, "",
     "Hidden layers of the decoder (0: one Linear)"},
    {"activation", SGM_KEY_STRING, "\"gelu\"", 0, -INFINITY, INFINITY, "gelu|silu|relu", "",
     "Activation of every MLP"},
    {"learn", SGM_KEY_STRING, "\"g\"", 0, -INFINITY, INFINITY, "g|xg", "",
     "Scores the network outputs: s_g only (App. F.8) or s_x and s_g ([s_x | s_g])"},
    {"boltzmann", SGM_KEY_BOOL, "false", 0, 0, 0, NULL, "",
     "Boltzmann-informed parameterisation of the g score, s_g = -g + N_g (App. F.3.2)"},
    {"separate", SGM_KEY_BOOL, "false", 0, 0, 0, NULL, "",
     "Full-state kinds with learn = \"xg\": s_x and s_g from two networks of this architecture "
     "(the paper's choice for the ring and the 64 swimmers, App. F.2.3, F.3) instead of one with "
     "both outputs; twice the parameters (docs/training.md)"},
    {"x_scale", SGM_KEY_REAL, "1.0", 0, 1e-300, INFINITY, NULL, "length",
     "Full-state kinds (mlp, transformer): positions enter the network as x / x_scale (e.g. the "
     "trap or box size, so that they are O(1)); divergences carry the chain-rule factor"},
    {"periodic_x", SGM_KEY_BOOL, "true", 0, 0, 0, NULL, "",
     "Full-state MLP in a periodic box: each position coordinate enters as (cos 2 pi x/L, "
     "sin 2 pi x/L), so that the network is continuous where a particle crosses the box edge "
     "(x_scale unused); no effect in open boxes; the particle transformer needs false there "
     "(docs/training.md)"},
    {"pair_hidden", SGM_KEY_INT, "0", 0, 0, 1 << 16, NULL, "",
     "Full-state kinds: > 0 adds a learned pair term of this MLP width to both scores: for each "
     "pair closer than pair_cutoff, f(r, g_i.u, g_j.u, g_i.g_j) along u = (x_i - x_j)/r, g_i and "
     "g_j with a smooth cutoff, exact divergences (docs/training.md); 0: none"},
    {"pair_depth", SGM_KEY_INT, "2", 0, 1, 64, NULL, "", "Hidden layers of the pair-term MLP"},
    {"pair_cutoff", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "length",
     "Cutoff radius of the pair term (0: 4 a, twice the contact distance 2 a)"},
    {"pair_contact", SGM_KEY_BOOL, "false", 0, 0, 0, NULL, "",
     "With pair_hidden > 0: the pair MLP also sees the contact profile sigma(beta (2 a - r)) "
     "([system] beta and a: the stiffness profile of the softplus force), so that score terms "
     "that switch on within a contact are cheap to learn; stored with the model "
     "(docs/training.md)"},
    {"pair_gnorm", SGM_KEY_BOOL, "false", 0, 0, 0, NULL, "",
     "With pair_hidden > 0: the pair MLP also sees |g_i|^2 and |g_j|^2, which with r, g_i.u, "
     "g_j.u and g_i.g_j are all the rotation invariants of a pair (without them the part of each "
     "g across the contact normal is known only through g_i.g_j); stored with the model "
     "(docs/training.md)"},
    {"boltzmann_x", SGM_KEY_BOOL, "false", 0, 0, 0, NULL, "",
     "Boltzmann-informed parameterisation of the x score, s_x^i = mu F_i / eps + N_x^i with mu F_i "
     "the conservative drift (pair forces and trap; App. F.3.2: -grad Phi / eps), exact with N = 0 "
     "at v0 = 0 (with boltzmann = true). Full-state kinds (mlp, transformer) only; needs [system] "
     "eps > 0. With learn = \"g\", s_x = mu F / eps"},
    {"max_batch", SGM_KEY_INT, "32", 0, 1, 1 << 20, NULL, "",
     "Centres per forward pass (micro-batch). Sets the activation arena: about 25 MB per centre "
     "at d_e = 256, 4 layers, K = 64 (see nn_models.h)"},
    {"window_width", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "length",
     "Initial halo width of the windows (0: 1.5x the K-th neighbour distance at mean density); "
     "grown automatically when a window needs more"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

static const SgmKeySpec train_keys[] = {
    {"mode", SGM_KEY_STRING, "\"offline\"", 0, -INFINITY, INFINITY, "offline|online", "",
     "offline: a random stored frame per step; online: sde_steps steps of the system's SDE "
     "([system], [simulate] dt) between optimiser steps (App. F.2.3)"},
    {"sde_steps", SGM_KEY_INT, "10", 0, 1, 2.8e14, NULL, "steps",
     "Online: SDE steps before each optimiser step"},
    {"online_init", SGM_KEY_STRING, "\"trajectory\"", 0, -INFINITY, INFINITY, "trajectory|random",
     "",
     "Online: start from the last frame of the trajectory (full-state kinds: replica j from the "
     "frame sgm_train_frame(seed, j)), or from a random placement "
     "([simulate] relax_steps) followed by online_equil steps"},
    {"online_equil", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps",
     "Online with online_init = \"random\": SDE steps before the first optimiser step"},
    {"trajectory", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "path",
     "H5MD file of training frames (unset: trajectory.h5 in the output directory)"},
    {"group", SGM_KEY_STRING, "\"all\"", 0, -INFINITY, INFINITY, NULL, "",
     "H5MD particle group of the frames"},
    {"loss", SGM_KEY_STRING, "\"denoise\"", 0, -INFINITY, INFINITY,
     "denoise|sm|fpe|composite|transition", "",
     "Denoising loss (eq. 88 as in App. F.8; local_transformer only), score matching (eq. 22, "
     "exact divergences), the stationary FPE residual (eq. 24, v = b - D s; full-state kinds with "
     "learn = \"xg\"), the composite lambda1 sm + lambda2 fpe (eq. 25), or the transition loss "
     "(eq. 88 as in App. D.3; full-state kinds): one Euler-Maruyama step of transition_dt from "
     "each configuration, target -(2 dt D)^(-1/2) xi, no divergences (antithetic pairs with "
     "antithetic = true)"},
    {"transition_dt", SGM_KEY_REAL, "0", 0, 0.0, INFINITY, NULL, "time",
     "Transition loss: step of the Euler-Maruyama transition (0: [simulate] dt, the step that "
     "made the data, whose stationary law the loss then targets exactly)"},
    {"lambda1", SGM_KEY_REAL, "1.0", 0, 0.0, INFINITY, NULL, "",
     "Composite loss: weight of the score-matching term (eq. 25)"},
    {"lambda2", SGM_KEY_REAL, "1.0", 0, 0.0, INFINITY, NULL, "",
     "Composite and fpe losses: weight of the FPE-residual term (eq. 25)"},
    {"sigma", SGM_KEY_REAL, "0.01", 0, 1e-300, INFINITY, NULL, "length",
     "Denoising noise standard deviation (on x in length units, on g dimensionless)"},
    {"noise_x", SGM_KEY_BOOL, "true", 0, 0, 0, NULL, "",
     "Denoising: perturb positions as well as orientations (App. F.8)"},
    {"antithetic", SGM_KEY_BOOL, "true", 0, 0, 0, NULL, "",
     "Denoising and transition losses: +- pairs of the same noise"},
    {"steps", SGM_KEY_INT, "1000", 0, 0, 2.8e14, NULL, "steps", "Optimiser steps"},
    {"init_model", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "path",
     "model.h5 whose weights start the training instead of the random initialisation (its EMA "
     "weights when it holds them, as [epr] weights = \"auto\"): fine-tuning, or continuing with "
     "another loss or schedule. Its architecture must equal [model] (checked as on load); the "
     "optimiser's moments and step start afresh. Ignored on --restart from train_checkpoint.h5"},
    {"validate_trajectory", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "path",
     "Full-state kinds: H5MD file of held-out frames of the same system. At every log_every step "
     "and at the end, the score's D-weighted squared error E|s - s_exact|^2_D per particle is "
     "estimated on validate_frames of them with the exact divergences (as the epr stage's "
     "score_error: docs/derivations.md), with the EMA weights when ema > 0, and logged, written "
     "to train_log.h5 and metrics.json. Unset: no validation"},
    {"validate_frames", SGM_KEY_INT, "32", 0, 2, 1 << 20, NULL, "frames",
     "Frames of validate_trajectory used, evenly spaced over the file (at most all of them)"},
    {"batch", SGM_KEY_INT, "1024", 0, 1, 4294967295.0, NULL, "particles",
     "Global minibatch: centre particles of one frame per step (<= N); for the full-state kinds "
     "(mlp, transformer) whole configurations per step (stored frames, or SDE replicas online)"},
    {"optimizer", SGM_KEY_STRING, "\"radam\"", 0, -INFINITY, INFINITY,
     "adam|adamw|radam|radam_torch", "", "Optimiser (include/sgm/nn_optim.h)"},
    {"lr", SGM_KEY_REAL, "1e-4", 0, 0.0, INFINITY, NULL, "",
     "Learning rate (peak rate of warmup_cosine, initial rate of cosine)"},
    {"schedule", SGM_KEY_STRING, "\"warmup_cosine\"", 0, -INFINITY, INFINITY,
     "constant|cosine|warmup_cosine", "", "Learning-rate schedule (optax semantics)"},
    {"warmup", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps", "Warmup steps of warmup_cosine"},
    {"lr_init", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "", "Rate at step 0 of warmup_cosine"},
    {"lr_end", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "",
     "Final rate of warmup_cosine; cosine ends at lr_end/lr (alpha)"},
    {"beta1", SGM_KEY_REAL, "0.9", 0, 0.0, 1.0, NULL, "", "First-moment decay"},
    {"beta2", SGM_KEY_REAL, "0.999", 0, 0.0, 1.0, NULL, "", "Second-moment decay"},
    {"eps", SGM_KEY_REAL, "1e-8", 0, 0.0, INFINITY, NULL, "", "Optimiser epsilon"},
    {"weight_decay", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "", "Weight decay"},
    {"clip", SGM_KEY_REAL, "0.0", 0, 0.0, INFINITY, NULL, "",
     "Global-norm gradient clipping threshold (0: none)"},
    {"ema", SGM_KEY_REAL, "0.0", 0, 0.0, 0.999999999, NULL, "",
     "Decay of an exponential moving average of the weights (0: none); stored in model.h5"},
    {"checkpoint_every", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps",
     "Write train_checkpoint.h5 every this many steps (0: only on SIGTERM/SIGUSR1 and stop_after)"},
    {"log_every", SGM_KEY_INT, "10", 0, 1, 2.8e14, NULL, "steps",
     "Print the loss every this many steps"},
    {"stop_after", SGM_KEY_INT, "0", 0, 0, 2.8e14, NULL, "steps",
     "Stop as on SIGTERM (checkpoint, return) after this many steps of this invocation; 0 = run to "
     "the end"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

const SgmTableSpec sgm_table_model = {
    "model", "Score-network architecture (stored in model.h5 and checked on load)", model_keys, 0};
const SgmTableSpec sgm_table_train = {
    "train", "Offline data-parallel training of the score network on trajectory frames", train_keys,
    0};

/* The input key an architecture attribute of model.h5 comes from (NULL: none). */
static const char *arch_key(const char *attr, char *buf, size_t len)
{
  static const char *const derived[][2] = {{"dim", "system.dim"},
                                           {"gdim", "system.dim"},
                                           {"n", "system.n"},
                                           {"out_dim", "model.learn"},
                                           {"x_period", "model.periodic_x"},
                                           {"pair_contact_beta", "model.pair_contact"},
                                           {"pair_contact_r", "model.pair_contact"}};
  for (size_t k = 0; k < sizeof derived / sizeof derived[0]; k++)
    if (!strcmp(attr, derived[k][0])) return derived[k][1];
  for (const SgmKeySpec *k = model_keys; k->name; k++)
    if (!strcmp(attr, k->name)) {
      snprintf(buf, len, "model.%s", attr);
      return buf;
    }
  return NULL;
}

PetscErrorCode sgm_score_model_file_differs(SgmConfig cfg, const char *path, char *which,
                                            size_t wlen, char *msg, size_t len, int *differs)
{
  SgmScoreModelSpec ms;
  int64_t n, dim;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_int(cfg, "system.n", &n));
  PetscCall(sgm_config_get_int(cfg, "system.dim", &dim));
  PetscCall(sgm_score_model_arch(cfg, (int)dim, n, &ms));
  *differs = sgm_nn_arch_differs(path, ms.narch, ms.arch, which, wlen, msg, len);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_score_model_check_file(SgmConfig cfg, SgmProblems pb, const char *key,
                                          const char *path)
{
  char which[256], msg[1024], kbuf[sizeof which + 8];
  const char *dot = strchr(key, '.');
  int r;
  PetscFunctionBeginUser;
  PetscCall(sgm_score_model_file_differs(cfg, path, which, sizeof which, msg, sizeof msg, &r));
  if (r < 0)
    sgm_config_problem(pb, key, "%s", msg);
  else if (r > 0) {
    const size_t lp = strlen(path);
    const char *what = !strncmp(msg, path, lp) && msg[lp] == ':' ? msg + lp + 2 : msg;
    const char *at = arch_key(which, kbuf, sizeof kbuf);
    sgm_config_problem(pb, at ? at : key,
                       "%s ([%.*s] %s) was trained as another network: %s; set [model] (and "
                       "[system]) as in the input that trained it (run.toml beside its run's "
                       "outputs)",
                       path, (int)(dot - key), key, dot + 1, what);
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* A [model] key that is on (set) but implemented for the full-state kinds only: a problem
 * "key: <what> ... only<tail>" when kind = "local_transformer". Returns whether it was one. */
static PetscErrorCode local_refused(SgmConfig cfg, SgmProblems pb, PetscBool set, const char *key,
                                    const char *what, const char *tail, PetscBool *refused)
{
  const char *kind;
  PetscFunctionBeginUser;
  *refused = PETSC_FALSE;
  if (!set) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
  if (!strcmp(kind, "local_transformer")) {
    sgm_config_problem(pb, key,
                       "%s implemented for the full-state kinds (kind = \"mlp\" or "
                       "\"transformer\") only%s",
                       what, tail);
    *refused = PETSC_TRUE;
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* A pair-term option (key) that is on without the pair term. */
static void needs_pair(SgmProblems pb, PetscBool on, int64_t pair_hidden, const char *key,
                       const char *what)
{
  if (on && pair_hidden <= 0)
    sgm_config_problem(pb, key, "%s of the pair term: set [model] pair_hidden > 0", what);
}

PetscErrorCode sgm_train_config_check(SgmConfig cfg, SgmProblems pb)
{
  int nst;
  const char *const *st;
  PetscBool train = PETSC_FALSE;
  int64_t de, heads, batch, n, K;
  const char *learn, *loss, *kind;
  PetscBool noise_x;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string_array(cfg, "run.stages", &nst, &st));
  for (int i = 0; i < nst; i++)
    if (!strcmp(st[i], "train")) train = PETSC_TRUE;
  PetscBool bx;
  PetscCall(sgm_config_get_bool(cfg, "model.boltzmann_x", &bx));
  PetscBool refused;
  /* The local transformer's denoising target is the score of the sigma-smoothed density, its
   * inputs are windows, and the systems it is meant for (MIPS) run at eps -> 0, where a mu F /
   * eps term makes the loss poorly conditioned (paper 002, App. F.8): not supported there. */
  PetscCall(local_refused(cfg, pb, bx, "model.boltzmann_x", "the Boltzmann-informed x score is",
                          ", not for the local transformer (docs/training.md)", &refused));
  if (bx) {
    double eps;
    PetscCall(sgm_config_get_real(cfg, "system.eps", &eps));
    if (!(eps > 0.0))
      sgm_config_problem(pb, "model.boltzmann_x",
                         "s_x = mu F / eps + N_x needs translational noise: [system] eps = %g must "
                         "be > 0",
                         eps);
  }
  int64_t ph;
  PetscCall(sgm_config_get_int(cfg, "model.pair_hidden", &ph));
  PetscCall(local_refused(cfg, pb, ph > 0, "model.pair_hidden", "the pair term is", "", &refused));
  PetscBool sep;
  PetscCall(sgm_config_get_bool(cfg, "model.separate", &sep));
  PetscCall(local_refused(cfg, pb, sep, "model.separate", "separate s_x and s_g networks are",
                          "; the local transformer learns s_g alone", &refused));
  if (sep && !refused) {
    const char *l;
    PetscCall(sgm_config_get_string(cfg, "model.learn", &l));
    if (strcmp(l, "xg"))
      sgm_config_problem(pb, "model.separate",
                         "separate networks for s_x and s_g need both scores: set [model] learn = "
                         "\"xg\" (learn = \"%s\" has one network already)",
                         l);
  }
  PetscBool px;
  PetscCall(sgm_config_get_bool(cfg, "model.periodic_x", &px));
  {
    const char *bnd, *kd;
    PetscCall(sgm_config_get_string(cfg, "system.boundary", &bnd));
    PetscCall(sgm_config_get_string(cfg, "model.kind", &kd));
    if (px && !strcmp(bnd, "periodic") && !strcmp(kd, "transformer"))
      sgm_config_problem(pb, "model.periodic_x",
                         "periodic position features are implemented for kind = \"mlp\"; set "
                         "periodic_x = false to give the particle transformer raw positions (it "
                         "is then discontinuous where a particle crosses the box edge)");
  }
  PetscBool pc, gnm;
  PetscCall(sgm_config_get_bool(cfg, "model.pair_contact", &pc));
  needs_pair(pb, pc, ph, "model.pair_contact", "the contact profile is an input");
  PetscCall(sgm_config_get_bool(cfg, "model.pair_gnorm", &gnm));
  needs_pair(pb, gnm, ph, "model.pair_gnorm", "|g_i|^2 and |g_j|^2 are inputs");
  if (!train) PetscFunctionReturn(PETSC_SUCCESS);
  {
    const char *mode, *init;
    PetscCall(sgm_config_get_string(cfg, "train.mode", &mode));
    PetscCall(sgm_config_get_string(cfg, "train.online_init", &init));
    if (strcmp(mode, "online") || !strcmp(init, "trajectory")) /* as the stage (train.c) */
      PetscCall(sgm_h5md_check_input(cfg, pb, "train.trajectory", "train.group", "train"));
  }
  PetscBool init_set;
  PetscCall(sgm_config_is_set(cfg, "train.init_model", &init_set));
  if (init_set) { /* no stage writes it: readable HDF5 now, and the network [model] builds */
    char path[PETSC_MAX_PATH_LEN];
    PetscCall(sgm_config_check_input_file(cfg, pb, "train.init_model", "", "train", "", path,
                                          sizeof path));
    if (path[0]) PetscCall(sgm_score_model_check_file(cfg, pb, "train.init_model", path));
  }
  PetscBool val_set;
  PetscCall(sgm_config_is_set(cfg, "train.validate_trajectory", &val_set));
  if (val_set) {
    PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
    if (!strcmp(kind, "local_transformer"))
      sgm_config_problem(
          pb, "train.validate_trajectory",
          "validation is implemented for the full-state kinds (kind = \"mlp\" or "
          "\"transformer\"); for the local transformer run the epr stage on held-out "
          "frames (its score_error_* and sm_loss_* metrics)");
    else
      PetscCall(sgm_h5md_check_input(cfg, pb, "train.validate_trajectory", "train.group", "train"));
  }
  PetscCall(sgm_config_get_int(cfg, "model.d_e", &de));
  PetscCall(sgm_config_get_int(cfg, "model.heads", &heads));
  PetscCall(sgm_config_get_int(cfg, "model.K", &K));
  PetscCall(sgm_config_get_int(cfg, "train.batch", &batch));
  PetscCall(sgm_config_get_int(cfg, "system.n", &n));
  PetscCall(sgm_config_get_string(cfg, "model.learn", &learn));
  PetscCall(sgm_config_get_string(cfg, "train.loss", &loss));
  PetscCall(sgm_config_get_bool(cfg, "train.noise_x", &noise_x));
  PetscCall(sgm_config_get_string(cfg, "model.kind", &kind));
  const int full = strcmp(kind, "local_transformer") != 0;
  const int fpe = !strcmp(loss, "fpe") || !strcmp(loss, "composite");
  if (full && !strcmp(loss, "denoise"))
    sgm_config_problem(pb, "train.loss",
                       "kind = \"%s\" trains with loss = \"sm\", \"fpe\", \"composite\" or "
                       "\"transition\"",
                       kind);
  if (!full && fpe)
    sgm_config_problem(pb, "train.loss",
                       "loss = \"%s\" needs a full-state model (kind = \"mlp\" or \"transformer\")",
                       loss);
  if (!full && !strcmp(loss, "transition"))
    sgm_config_problem(pb, "train.loss",
                       "loss = \"transition\" steps the whole system: it needs a full-state model "
                       "(kind = \"mlp\" or \"transformer\")");
  if (full && !strcmp(loss, "transition") && !strcmp(learn, "xg")) {
    double eps;
    PetscCall(sgm_config_get_real(cfg, "system.eps", &eps));
    if (!(eps > 0.0))
      sgm_config_problem(pb, "model.learn",
                         "loss = \"transition\" learns s_x from the translational noise: learn = "
                         "\"xg\" needs [system] eps > 0 (got %g)",
                         eps);
  }
  if (full && fpe && strcmp(learn, "xg"))
    sgm_config_problem(pb, "model.learn", "loss = \"%s\" needs s_x: learn = \"xg\"", loss);
  if (full && !strcmp(kind, "mlp")) PetscFunctionReturn(PETSC_SUCCESS);
  if (de % 2) sgm_config_problem(pb, "model.d_e", "d_e = %lld must be even", (long long)de);
  if (de % heads)
    sgm_config_problem(pb, "model.heads", "heads = %lld must divide d_e = %lld", (long long)heads,
                       (long long)de);
  if (full) PetscFunctionReturn(PETSC_SUCCESS);
  if (batch > n)
    sgm_config_problem(pb, "train.batch", "batch = %lld exceeds the %lld particles of a frame",
                       (long long)batch, (long long)n);
  if (K >= n)
    sgm_config_problem(pb, "model.K", "K = %lld needs more than K particles (N = %lld)",
                       (long long)K, (long long)n);
  /* Score matching (eq. 22) rests on an integration by parts that needs s_x continuous in x. The
   * K-nearest windows jump when the neighbour set changes, and the exact divergence sees only the
   * smooth part, so the loss of s_x has no lower bound (the network learns to exploit the jumps:
   * docs/training.md). s_g is safe (windows do not depend on g); denoising is safe. */
  if (!strcmp(loss, "sm") && !strcmp(learn, "xg"))
    sgm_config_problem(pb, "train.loss",
                       "score matching of s_x (learn = \"xg\") with the local transformer is "
                       "unbounded below (its K-nearest windows jump in x); use loss = \"denoise\" "
                       "or learn = \"g\"");
  if (!strcmp(loss, "denoise") && !strcmp(learn, "xg") && !noise_x)
    sgm_config_problem(pb, "train.noise_x", "denoising s_x (learn = \"xg\") needs noise_x = true");
  PetscFunctionReturn(PETSC_SUCCESS);
}
