/* Full-state score networks ([model] kind = "mlp" and "transformer"): training, the "model" score
 * provider and the trapped-AOUP validation.
 *  - divergences: the exact per-particle blocks of sgm_full_score_eval against central finite
 *    differences of its own outputs (float network: h = 1e-2, tolerance 2e-2 (1 + |div|));
 *  - losses: the value against the formula of eqs. 22/24/25 recomputed here from the evaluated
 *    score and divergences, and the gradient along a random parameter direction against a central
 *    finite difference of the loss (relative 3e-2), for sm, fpe and composite, both kinds, with and
 *    without the Boltzmann parameterisation (s_g shift; s_x shift [model] boltzmann_x with a smooth
 *    synthetic conservative drift, so the finite differences see the shift's divergence too),
 *    and with [model] x_scale = 3 (the chain-rule factor of the x divergences and their
 *    cotangents);
 *  - the learned pair term ([model] pair_hidden, with and without the contact profile input of
 *    pair_contact): its divergences against finite differences
 *    (open space and a periodic box, tolerance 2e-3 so that a dropped Jacobian term fails), the
 *    gradients of every loss along all parameters and along the pair's alone (for sm, fpe and
 *    composite through its reverse over forward; dropping a term of it fails them), chunked rows
 *    equal to one configuration at a time, provider, rank invariance (transition), restart
 *    identity (online composite), input check; with --trap it must learn the pair score of
 *    interacting AOUPs at v0 = 0 (test_pair_equilibrium);
 *  - the pair term with |g_i|^2 and |g_j|^2 as inputs ([model] pair_gnorm): the same divergence
 *    (2e-3) and gradient checks (MLP open, periodic and with the contact profile; transformer),
 *    provider and refusal of the model by an input without the key, input check;
 *  - separate networks for s_x and s_g ([model] separate): the same divergence and gradient
 *    checks (both kinds, with the shifts and the pair term); the x network's parameters (x.*)
 *    leave s_g and its divergence bit for bit unchanged and move s_x, the g network's (g.*) the
 *    other way round; provider with a separate model and refusal of a joint one on it; rank
 *    invariance (transformer, composite: both networks' reverse over forward through the train
 *    stage) and restart identity (MLP online transition); learn = "g" and the local transformer
 *    are refused;
 *  - the Boltzmann-informed score is exact for trapped non-interacting AOUPs at v0 = 0 with N = 0
 *    (all parameters zero): s, div s, the sm loss against their closed forms (1e-12), FPE
 *    residual 0, v = 0; without the x shift it is not; a missing shift is refused;
 *  - the "model" provider on 1, 2, 4 ranks equals the network evaluated directly (1e-12, both
 *    are the same float network), and a model.h5 of another architecture is refused; with
 *    boltzmann_x and pair forces, the provider's s_x equals N_x plus the forces of the parallel
 *    engine over eps, and a model.h5 trained with the other boltzmann_x is refused;
 *  - rank-count invariance of the `train` stage (all ranks vs rank 0 alone from the same data:
 *    parameters to 1e-5 of the largest, losses to 1e-4) offline (mlp sm, transformer composite)
 *    and online (mlp composite, SDE replicas), and with boltzmann_x (offline composite, online sm);
 *    restart identity (bitwise) online and offline; boltzmann_x with eps = 0 or with the local
 *    transformer is refused by the input check;
 *  - [train] init_model: 0 steps from another run's model.h5 leave its EMA weights (network and
 *    pair term) bit for bit; another architecture or a missing file is refused (exit 2) before
 *    the output directory exists;
 *  - a periodic box given by [system] phi: the MLP's period and the pair term's box are the
 *    resolved edge (model.h5's x_period);
 *  - [train] validate_trajectory: the last validation's score error and sm losses equal the epr
 *    stage's on the same frames (1e-9; MLP with EMA weights, transformer with both Boltzmann
 *    shifts), train_log.h5 has them at the log steps only and restores them on --restart bit
 *    for bit; a missing file and the local transformer are refused before any output;
 *  - the trap check (--trap; non-interacting AOUPs in a harmonic trap, exact Gaussian score,
 *    measured on an independent trajectory of another seed): a short run of input/trap_mlp.toml
 *    must bring the relative L2 error of the learned score below half that of the initial
 *    network and below 0.45; with --long (ctest label `long`) the particle transformer of
 *    input/trap_transformer.toml must reach the targets of issue 4 (error < 5%, total EPR within
 *    5% of the exact value, |E[div v]| within 3 batch-means standard errors of 0, the continuum
 *    value; the composite loss's FPE residual holds the score to the continuum b and D, while
 *    the data's own law, at dt = 0.01, would give -0.0166: printed for reference) and the MLP of
 *    input/trap_mlp.toml an error below 15% (measured 8%: variance-limited at this data budget,
 *    docs/validation.md). */
#include "testutil.h"
#include "train_util.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/nn_io.h"
#include "sgm/score_model.h"
#include "sgm/score_provider.h"
#include "sgm/simulate.h"
#include "sgm/train.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int long_run, trap_run;

static uint64_t lcg = 987654321;
static double urand(void)
{
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(lcg >> 11) / 9007199254740992.0;
}

static double x_scale;  /* [model] x_scale of the next check_model (0: none) */
static int pair_hidden; /* [model] pair_hidden of the next check_model (0: none) */
static double pair_box; /* its periodic box edge (0: open) */
static double pair_cb;  /* its contact profile's beta (0: none; contact distance 1) */
static int separate;    /* [model] separate of the next check_model */
static int pair_gn;     /* [model] pair_gnorm of the next check_model */
static double
    x_period; /* periodic position features ([model] periodic_x) of the next check_model */

static SgmFullScoreConfig small_cfg(SgmScoreKind kind, int n, int learn_x, int boltzmann)
{
  SgmFullScoreConfig c;
  memset(&c, 0, sizeof c);
  c.kind = kind, c.n = n, c.dim = 2, c.learn_x = learn_x, c.boltzmann = boltzmann & 1;
  c.separate = separate && learn_x;
  c.boltzmann_x = (boltzmann >> 1) & 1, c.eps = 0.5, c.x_scale = x_scale, c.x_period = x_period;
  c.max_batch = 3;
  c.max_tan = 5; /* several chunks */
  c.pair_hidden = pair_hidden, c.pair_depth = 2, c.pair_cutoff = 1.7, c.box = pair_box;
  c.pair_contact_beta = pair_cb, c.pair_contact_r = 1.0, c.pair_gnorm = pair_gn;
  c.mlp.hidden = 16, c.mlp.depth = 2, c.mlp.act = SGM_NN_ACT_GELU;
  c.tf.d_model = 8, c.tf.n_layers = 1, c.tf.n_heads = 2, c.tf.mlp_hidden = 16;
  c.tf.embed_hidden = 8, c.tf.embed_depth = 1, c.tf.dec_hidden = 8, c.tf.dec_depth = 1;
  c.tf.act = SGM_NN_ACT_GELU;
  return c;
}

/* per-configuration loss from the evaluated score and divergences (eqs. 22, 24, 25) */
static double loss_formula(const SgmFullLossWeights *w, int n, int B, const double *g,
                           const double *bx, const double *divb, const double *sx, const double *sg,
                           const double *dx, const double *dg)
{
  double tot = 0.0;
  for (int b = 0; b < B; b++) {
    double sm = 0.0, R = divb ? divb[b] : 0.0;
    for (int i = 0; i < n; i++)
      for (int a = 0; a < 2; a++) {
        const int k = (b * n + i) * 2 + a;
        sm += sx[k] * sx[k] + sg[k] * sg[k];
        if (bx)
          R += (bx[k] - w->eps * sx[k]) * sx[k] + (-w->gamma * g[k] - w->gamma * sg[k]) * sg[k];
      }
    for (int i = 0; i < n; i++) {
      sm += 2.0 * (dx[b * n + i] + dg[b * n + i]);
      R -= w->eps * dx[b * n + i] + w->gamma * dg[b * n + i];
    }
    tot += w->w_sm * sm + w->w_fpe * R * R;
  }
  return tot;
}

/* A smooth stand-in for the conservative drift mu F(x) of the Boltzmann-informed x score and its
 * per-particle divergence: fc = -1.3 x + 0.4 sin(2 x) componentwise (n particles, dim 2). */
static void synth_shift(int Bn, const double *x, double *fc, double *dfc)
{
  for (int i = 0; i < Bn; i++) {
    dfc[i] = 0.0;
    for (int a = 0; a < 2; a++) {
      fc[2 * i + a] = -1.3 * x[2 * i + a] + 0.4 * sin(2.0 * x[2 * i + a]);
      dfc[i] += -1.3 + 0.8 * cos(2.0 * x[2 * i + a]);
    }
  }
}

/* boltzmann: bit 0 the g shift (s_g = -g + N_g), bit 1 the x shift (s_x = fc / eps + N_x) */
/* Separate networks: moving every parameter of one network (prefix "x." or "g.") changes that
 * score and its divergence and leaves the other's bit for bit. */
static void check_separation(SgmFullScore fs, int B, const double *x, const double *g,
                             const SgmFullScoreShift *sh)
{
  enum { NMAX = 64 };
  SgmParams *par = sgm_full_score_params(fs);
  float *p0 = malloc(par->nparams * sizeof(float));
  memcpy(p0, par->params, par->nparams * sizeof(float));
  double tsx[NMAX], tsg[NMAX], tdx[NMAX / 2], tdg[NMAX / 2];
  double sx[NMAX], sg[NMAX], dx[NMAX / 2], dg[NMAX / 2];
  const int nv = B * 3 * 2; /* B configurations of N = 3 in d = 2 */
  ck_assert_int_le(nv, NMAX);
  ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, sh, sx, sg, dx, dg), 0);
  for (int side = 0; side < 2; side++) {
    const char *pre = side ? "g." : "x.";
    int nt = 0;
    for (int t = 0; t < par->ntensors; t++)
      if (!strncmp(par->tensors[t].name, pre, 2)) {
        nt++;
        for (size_t k = 0; k < par->tensors[t].size; k++)
          par->params[par->tensors[t].offset + k] *= 1.3f;
      }
    ck_assert_int_gt(nt, 0); /* the tensors carry the network's prefix */
    ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, sh, tsx, tsg, tdx, tdg), 0);
    memcpy(par->params, p0, par->nparams * sizeof(float));
    double moved = 0.0, kept = 0.0;
    for (int k = 0; k < nv; k++) {
      moved = fmax(moved, fabs(side ? tsg[k] - sg[k] : tsx[k] - sx[k]));
      kept = fmax(kept, fabs(side ? tsx[k] - sx[k] : tsg[k] - sg[k]));
    }
    for (int k = 0; k < nv / 2; k++) {
      moved = fmax(moved, fabs(side ? tdg[k] - dg[k] : tdx[k] - dx[k]));
      kept = fmax(kept, fabs(side ? tdx[k] - dx[k] : tdg[k] - dg[k]));
    }
    printf("separate: the %s network's parameters x1.3 move its score by %.3g, the other's by %g\n",
           pre, moved, kept);
    ck_assert_msg(moved > 1e-3 && kept == 0.0, "separate %s: moved %g, kept %g", pre, moved, kept);
  }
  free(p0);
}

static void check_model(SgmScoreKind kind, int learn_x, int boltzmann)
{
  enum { N = 3, B = 4, D = 2 };
  SgmFullScoreConfig c = small_cfg(kind, N, learn_x, boltzmann);
  SgmFullScore fs;
  ck_assert_int_eq(sgm_full_score_create(&c, 5, &fs), 0);
  if (c.pair_hidden > 0) { /* a pair term as large as the network's output (init gives ~0.2) */
    SgmParams *pp = sgm_full_score_params(fs);
    for (int t = 0; t < 2; t++) {
      const int it = sgm_nn_params_find(pp, t ? "pair.net.4.bias" : "pair.net.4.weight");
      ck_assert_int_ge(it, 0);
      for (size_t k = 0; k < pp->tensors[it].size; k++) pp->params[pp->tensors[it].offset + k] *= 5;
    }
  }
  double fc[B * N * D], dfc[B * N];
  const SgmFullScoreShift shv = {fc, dfc}, *sh = c.boltzmann_x ? &shv : NULL;
  double x[B * N * D], g[B * N * D], bx[B * N * D], divb[B];
  double sx[B * N * D], sg[B * N * D], dx[B * N], dg[B * N];
  double sxp[B * N * D], sgp[B * N * D], sxm[B * N * D], sgm_[B * N * D], t1[B * N], t2[B * N];
  for (int k = 0; k < B * N * D; k++)
    x[k] = 2.0 * urand() - 1.0, g[k] = 2.0 * urand() - 1.0, bx[k] = 2.0 * urand() - 1.0;
  for (int b = 0; b < B; b++) divb[b] = -3.0 + urand();
  synth_shift(B * N, x, fc, dfc);
  ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, sh, sx, sg, dx, dg), 0);
  /* divergences against central differences (a float network: h = 1e-2) */
  const double h = c.pair_hidden > 0 ? 4e-3 : 1e-2; /* the pair term's 1/r geometry is curved */
  double err = 0.0;
  for (int part = learn_x ? 0 : 1; part < 2; part++)
    for (int i = 0; i < N; i++) {
      double fd[B] = {0};
      for (int a = 0; a < D; a++) {
        double *v = part ? g : x;
        for (int b = 0; b < B; b++) v[(b * N + i) * D + a] += h;
        synth_shift(B * N, x, fc, dfc);
        ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, sh, sxp, sgp, t1, t2), 0);
        for (int b = 0; b < B; b++) v[(b * N + i) * D + a] -= 2 * h;
        synth_shift(B * N, x, fc, dfc);
        ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, sh, sxm, sgm_, t1, t2), 0);
        for (int b = 0; b < B; b++) v[(b * N + i) * D + a] += h;
        synth_shift(B * N, x, fc, dfc);
        for (int b = 0; b < B; b++) {
          const int k = (b * N + i) * D + a;
          fd[b] += part ? (sgp[k] - sgm_[k]) / (2 * h) : (sxp[k] - sxm[k]) / (2 * h);
        }
      }
      for (int b = 0; b < B; b++) {
        const double d = part ? dg[b * N + i] : dx[b * N + i];
        err = fmax(err, fabs(d - fd[b]) / (1.0 + fabs(d)));
      }
    }
  if (!learn_x && !c.boltzmann_x)
    for (int k = 0; k < B * N; k++) ck_assert(dx[k] == 0.0 && sx[2 * k] == 0.0);
  if (!learn_x && c.boltzmann_x) /* s_x is the shift alone */
    for (int k = 0; k < B * N; k++)
      ck_assert(dx[k] == dfc[k] / c.eps && sx[2 * k] == fc[2 * k] / c.eps);
  printf("kind %d learn_x %d boltzmann %d pair %d box %g contact %g gnorm %d separate %d: "
         "divergence vs FD %.3g\n",
         (int)kind, learn_x, boltzmann, c.pair_hidden, c.box, c.pair_contact_beta, c.pair_gnorm,
         c.separate, err);
  if (c.separate) check_separation(fs, B, x, g, sh);
  /* the pair term's own finite-difference error is ~1e-4 here; 2e-2 would hide a missing term */
  ck_assert_msg(err < (c.pair_hidden > 0 ? 2e-3 : 2e-2),
                "kind %d learn_x %d boltzmann %d pair %d: divergence vs FD %g", (int)kind, learn_x,
                boltzmann, c.pair_hidden, err);

  /* losses: value against the formula, gradient along a random direction against FD */
  SgmParams *par = sgm_full_score_params(fs);
  float *p0 = malloc(par->nparams * sizeof(float)), *dir = malloc(par->nparams * sizeof(float));
  memcpy(p0, par->params, par->nparams * sizeof(float));
  for (size_t k = 0; k < par->nparams; k++) dir[k] = (float)(2.0 * urand() - 1.0);
  const SgmFullLossWeights ws[3] = {
      {1.0, 0.0, 0.5, 1.0}, {0.0, 1.0, 0.5, 1.0}, {0.7, 0.4, 0.3, 2.0}};
  /* with a pair term also along its parameters alone (its reverse over forward) */
  const int ipair = sgm_nn_params_find(par, "pair.net.0.weight");
  float *dirp = malloc(par->nparams * sizeof(float));
  for (size_t k = 0; k < par->nparams; k++)
    dirp[k] = ipair >= 0 && k >= par->tensors[ipair].offset ? dir[k] : 0.0f;
  for (int wi = 0; wi < (learn_x ? 3 : 1); wi++)
    for (int pass = 0; pass < (ipair >= 0 ? 2 : 1); pass++) {
      const SgmFullLossWeights *w = &ws[wi];
      const float *dv = pass ? dirp : dir;
      const int fpe = w->w_fpe != 0.0;
      double L;
      sgm_nn_params_zero_grad(par);
      ck_assert_int_eq(
          sgm_full_score_loss(fs, w, B, x, g, fpe ? bx : NULL, fpe ? divb : NULL, sh, &L), 0);
      const double Lf =
          loss_formula(w, N, B, g, fpe ? bx : NULL, fpe ? divb : NULL, sx, sg, dx, dg);
      ck_assert_msg(fabs(L - Lf) <= 1e-9 * (1.0 + fabs(Lf)), "loss %g vs formula %g", L, Lf);
      double gd = 0.0, dn = 0.0;
      for (size_t k = 0; k < par->nparams; k++)
        gd += (double)par->grads[k] * dv[k], dn += dv[k] * dv[k];
      /* the transformer is strongly curved along a random direction: a smaller step (observed:
       * FD 0.0540 at 1e-3, 0.0543 at 3e-4 against 0.0546; -0.009 at 1e-2), along the pair's
       * parameters too (composite loss with the contact profile, another draw: FD -1.174 at 3e-3,
       * -0.871 at 3e-4 against -0.874) */
      const double eh = (kind == SGM_SCORE_MLP ? 3e-3 : 3e-4) / sqrt(dn / (double)par->nparams);
      double Lp, Lm;
      for (size_t k = 0; k < par->nparams; k++) par->params[k] = p0[k] + (float)(eh * dv[k]);
      ck_assert_int_eq(
          sgm_full_score_loss(fs, w, B, x, g, fpe ? bx : NULL, fpe ? divb : NULL, sh, &Lp), 0);
      for (size_t k = 0; k < par->nparams; k++) par->params[k] = p0[k] - (float)(eh * dv[k]);
      ck_assert_int_eq(
          sgm_full_score_loss(fs, w, B, x, g, fpe ? bx : NULL, fpe ? divb : NULL, sh, &Lm), 0);
      memcpy(par->params, p0, par->nparams * sizeof(float));
      const double fd = (Lp - Lm) / (2 * eh);
      printf("kind %d learn_x %d boltzmann %d pair %d loss %d (%s): grad.dir %.6g, FD %.6g\n",
             (int)kind, learn_x, boltzmann, c.pair_hidden, wi, pass ? "pair" : "all", gd, fd);
      ck_assert_msg(fabs(gd - fd) <= 3e-2 * fabs(fd) + 1e-3 * (1.0 + fabs(L)),
                    "kind %d loss %d: gradient %g vs FD %g", (int)kind, wi, gd, fd);
      ck_assert(!pass || fabs(fd) > 1e-3 * (1.0 + fabs(L))); /* the pair term matters */
    }
  free(dirp);
  /* the transition loss (eq. 88, App. D.3): per configuration sum |s|^2 - 2 s.t over the learned
   * parts, weight w; value against the formula from the evaluated score, gradient against FD */
  {
    double tx[B * N * D], tg[B * N * D], L, Lp, Lm, Lf = 0.0;
    const double wt = 0.5;
    for (int k = 0; k < B * N * D; k++) tx[k] = 3.0 * urand() - 1.5, tg[k] = 3.0 * urand() - 1.5;
    for (int k = 0; k < B * N * D; k++) {
      if (learn_x) Lf += sx[k] * sx[k] - 2.0 * sx[k] * tx[k];
      Lf += sg[k] * sg[k] - 2.0 * sg[k] * tg[k];
    }
    Lf *= wt;
    sgm_nn_params_zero_grad(par);
    ck_assert_int_eq(sgm_full_score_loss_targets(fs, B, x, g, c.boltzmann_x ? fc : NULL,
                                                 learn_x ? tx : NULL, tg, wt, &L),
                     0);
    ck_assert_msg(fabs(L - Lf) <= 1e-9 * (1.0 + fabs(Lf)), "transition loss %g vs formula %g", L,
                  Lf);
    /* along a random direction of all parameters, then (pair term) of the pair's alone */
    const int ip = sgm_nn_params_find(par, "pair.net.0.weight");
    ck_assert_int_eq(ip >= 0, c.pair_hidden > 0);
    for (int pass = 0; pass < (ip >= 0 ? 2 : 1); pass++) {
      if (pass == 1) { /* the gradient again: the FD evaluations accumulated into it */
        for (size_t k = 0; k < par->tensors[ip].offset; k++) dir[k] = 0.0f;
        sgm_nn_params_zero_grad(par);
        ck_assert_int_eq(sgm_full_score_loss_targets(fs, B, x, g, c.boltzmann_x ? fc : NULL,
                                                     learn_x ? tx : NULL, tg, wt, &L),
                         0);
      }
      double gd = 0.0, dn = 0.0;
      for (size_t k = 0; k < par->nparams; k++)
        gd += (double)par->grads[k] * dir[k], dn += dir[k] * dir[k];
      const double eh =
          (kind == SGM_SCORE_MLP || pass ? 3e-3 : 3e-4) / sqrt(dn / (double)par->nparams);
      for (size_t k = 0; k < par->nparams; k++) par->params[k] = p0[k] + (float)(eh * dir[k]);
      ck_assert_int_eq(sgm_full_score_loss_targets(fs, B, x, g, c.boltzmann_x ? fc : NULL,
                                                   learn_x ? tx : NULL, tg, wt, &Lp),
                       0);
      for (size_t k = 0; k < par->nparams; k++) par->params[k] = p0[k] - (float)(eh * dir[k]);
      ck_assert_int_eq(sgm_full_score_loss_targets(fs, B, x, g, c.boltzmann_x ? fc : NULL,
                                                   learn_x ? tx : NULL, tg, wt, &Lm),
                       0);
      memcpy(par->params, p0, par->nparams * sizeof(float));
      const double fd = (Lp - Lm) / (2 * eh);
      printf("kind %d learn_x %d boltzmann %d pair %d transition (%s): grad.dir %.6g, FD %.6g\n",
             (int)kind, learn_x, boltzmann, c.pair_hidden, pass ? "pair" : "all", gd, fd);
      ck_assert_msg(fabs(gd - fd) <= 3e-2 * fabs(fd) + 1e-3 * (1.0 + fabs(L)),
                    "kind %d transition: gradient %g vs FD %g", (int)kind, gd, fd);
      ck_assert(!pass || fabs(fd) > 1e-3 * (1.0 + fabs(L))); /* the pair term matters */
    }
  }
  /* the FPE residual without s_x is refused */
  if (!learn_x) {
    double L;
    ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
    PetscErrorCode ierr = sgm_full_score_loss(fs, &ws[1], B, x, g, bx, divb, sh, &L);
    ck_assert_int_eq(PetscPopErrorHandler(), 0);
    ck_assert_int_eq(ierr, SGM_ERR_USER);
  }
  free(p0), free(dir);
  ck_assert_int_eq(sgm_full_score_destroy(&fs), 0);
}

START_TEST(test_mlp_grad)
{
  check_model(SGM_SCORE_MLP, 1, 0);
  check_model(SGM_SCORE_MLP, 1, 1);
  check_model(SGM_SCORE_MLP, 0, 0);
  check_model(SGM_SCORE_MLP, 1, 3); /* Boltzmann-informed s_x and s_g */
  check_model(SGM_SCORE_MLP, 0, 2); /* s_x = fc / eps, learned s_g */
  x_scale = 3.0;                    /* positions enter as x / 3: the x divergences carry 1/3 */
  check_model(SGM_SCORE_MLP, 1, 3);
  check_model(SGM_SCORE_MLP, 1, 0);
  x_scale = 0.0;
  pair_hidden = 12; /* the learned pair term: open space, then a periodic box of edge 2.5 */
  check_model(SGM_SCORE_MLP, 1, 3);
  check_model(SGM_SCORE_MLP, 0, 1);
  pair_box = 2.5;
  check_model(SGM_SCORE_MLP, 1, 0);
  pair_cb = 6.0; /* the contact profile sigma(6 (1 - r)) as a fifth input, periodic and open */
  check_model(SGM_SCORE_MLP, 1, 3);
  pair_box = 0.0;
  check_model(SGM_SCORE_MLP, 1, 1);
  pair_cb = 0.0, pair_gn = 1; /* |g_i|^2, |g_j|^2 as inputs: periodic, then open with profile */
  pair_box = 2.5;
  check_model(SGM_SCORE_MLP, 1, 3);
  check_model(SGM_SCORE_MLP, 0, 1);
  pair_box = 0.0, pair_cb = 6.0;
  check_model(SGM_SCORE_MLP, 1, 0);
  pair_hidden = 0, pair_box = 0.0, pair_cb = 0.0, pair_gn = 0;
  separate = 1; /* separate networks for s_x and s_g */
  check_model(SGM_SCORE_MLP, 1, 0);
  check_model(SGM_SCORE_MLP, 1, 3);
  pair_hidden = 12;
  check_model(SGM_SCORE_MLP, 1, 3);
  pair_hidden = 0, separate = 0;
}
END_TEST

/* Last in the suite (the tests share one random stream): periodic position features. */
START_TEST(test_periodic_x)
{
  x_period = 2.5; /* divergences and loss gradients: the x tangent is k(-sin, cos), not one-hot */
  check_model(SGM_SCORE_MLP, 1, 0);
  check_model(SGM_SCORE_MLP, 1, 3);
  check_model(SGM_SCORE_MLP, 0, 1);
  separate = 1;
  check_model(SGM_SCORE_MLP, 1, 3);
  separate = 0, pair_hidden = 12, pair_box = 2.5, pair_gn = 1;
  check_model(SGM_SCORE_MLP, 1, 3);
  pair_hidden = 0, pair_box = 0.0, pair_gn = 0, x_period = 0.0;
  /* with x_period the MLP is a function on the torus: moving one particle by a period changes
   * nothing but the float round-off of cos and sin; without it the score jumps */
  enum { N = 3, B = 2, D = 2 };
  const double L = 2.5;
  double x[B * N * D], g[B * N * D], sx[2][B * N * D], sg[2][B * N * D], dx[2][B * N], dg[2][B * N];
  for (int k = 0; k < B * N * D; k++) x[k] = L * urand(), g[k] = 2.0 * urand() - 1.0;
  for (int per = 1; per >= 0; per--) {
    x_period = per ? L : 0.0;
    SgmFullScoreConfig c = small_cfg(SGM_SCORE_MLP, N, 1, 1);
    SgmFullScore fs;
    ck_assert_int_eq(sgm_full_score_create(&c, 9, &fs), 0);
    ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, NULL, sx[0], sg[0], dx[0], dg[0]), 0);
    x[2] += L, x[B * N * D - 1] -= L; /* particle 1's x of configuration 0, the last y */
    ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, NULL, sx[1], sg[1], dx[1], dg[1]), 0);
    x[2] -= L, x[B * N * D - 1] += L;
    double dmax = 0.0;
    for (int k = 0; k < B * N * D; k++)
      dmax = fmax(dmax, fmax(fabs(sx[1][k] - sx[0][k]), fabs(sg[1][k] - sg[0][k])));
    for (int k = 0; k < B * N; k++)
      dmax = fmax(dmax, fmax(fabs(dx[1][k] - dx[0][k]), fabs(dg[1][k] - dg[0][k])));
    if (per)
      ck_assert_msg(dmax < 1e-4, "periodic features: a period changes the score by %g", dmax);
    else
      ck_assert_msg(dmax > 1e-2, "raw positions: a period changes the score by only %g", dmax);
    sgm_full_score_destroy(&fs);
  }
  /* the particle transformer does not implement them: refused */
  x_period = L;
  SgmFullScoreConfig c = small_cfg(SGM_SCORE_TRANSFORMER, N, 1, 0);
  SgmFullScore fs = NULL;
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_eq(sgm_full_score_create(&c, 9, &fs), SGM_ERR_USER);
  PetscPopErrorHandler();
  x_period = 0.0;
}
END_TEST

START_TEST(test_transformer_grad)
{
  check_model(SGM_SCORE_TRANSFORMER, 1, 0);
  check_model(SGM_SCORE_TRANSFORMER, 0, 1);
  check_model(SGM_SCORE_TRANSFORMER, 1, 3);
  x_scale = 3.0;
  check_model(SGM_SCORE_TRANSFORMER, 1, 3);
  x_scale = 0.0;
  pair_hidden = 12;
  check_model(SGM_SCORE_TRANSFORMER, 1, 3);
  pair_cb = 6.0;
  check_model(SGM_SCORE_TRANSFORMER, 1, 0);
  pair_cb = 0.0, pair_gn = 1;
  check_model(SGM_SCORE_TRANSFORMER, 1, 3);
  pair_hidden = 0, pair_gn = 0;
  separate = 1;
  check_model(SGM_SCORE_TRANSFORMER, 1, 0);
  pair_hidden = 12;
  check_model(SGM_SCORE_TRANSFORMER, 1, 3);
  pair_hidden = 0, separate = 0;
}
END_TEST

/* The pair term in chunks: 4 configurations of 40 particles, all pairs within the cutoff, are
 * 6240 rows, two chunks of at most 4096 (SGM_PAIR_ROWS), the first ending inside the third
 * configuration; the scores, divergences and transition-loss gradient of the batch must equal
 * those of the configurations one at a time (single chunks), up to float GEMM blocking. */
START_TEST(test_pair_chunks)
{
  enum { N = 40, B = 4, D = 2 };
  x_scale = 0.0, pair_hidden = 8, pair_box = 0.0;
  SgmFullScoreConfig c = small_cfg(SGM_SCORE_MLP, N, 1, 1);
  c.pair_cutoff = 100.0, c.max_batch = B;
  pair_hidden = 0;
  SgmFullScore fs;
  ck_assert_int_eq(sgm_full_score_create(&c, 9, &fs), 0);
  SgmParams *par = sgm_full_score_params(fs);
  static double x[B * N * D], g[B * N * D], tx[B * N * D], tg[B * N * D];
  static double sx[B * N * D], sg[B * N * D], dx[B * N], dg[B * N];
  static double sx1[N * D], sg1[N * D], dx1[N], dg1[N];
  for (int k = 0; k < B * N * D; k++) {
    x[k] = 6.0 * urand() - 3.0, g[k] = 2.0 * urand() - 1.0;
    tx[k] = 2.0 * urand() - 1.0, tg[k] = 2.0 * urand() - 1.0;
  }
  ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, NULL, sx, sg, dx, dg), 0);
  double err = 0.0, L, L1, Lsum = 0.0;
  for (int b = 0; b < B; b++) {
    const size_t o = (size_t)b * N * D;
    ck_assert_int_eq(sgm_full_score_eval(fs, 1, x + o, g + o, NULL, sx1, sg1, dx1, dg1), 0);
    for (int k = 0; k < N * D; k++)
      err = fmax(err, fmax(fabs(sx1[k] - sx[o + k]), fabs(sg1[k] - sg[o + k])) /
                          (1.0 + fabs(sx[o + k]) + fabs(sg[o + k])));
    for (int i = 0; i < N; i++)
      err = fmax(err, fmax(fabs(dx1[i] - dx[b * N + i]), fabs(dg1[i] - dg[b * N + i])) /
                          (1.0 + fabs(dx[b * N + i]) + fabs(dg[b * N + i])));
  }
  printf("pair chunks: batch vs one at a time %.3g\n", err);
  ck_assert_msg(err < 1e-5, "pair chunks: batch vs one at a time %g", err);
  float *g1 = malloc(par->nparams * sizeof(float));
  sgm_nn_params_zero_grad(par);
  for (int b = 0; b < B; b++) {
    const size_t o = (size_t)b * N * D;
    ck_assert_int_eq(
        sgm_full_score_loss_targets(fs, 1, x + o, g + o, NULL, tx + o, tg + o, 1.0, &L1), 0);
    Lsum += L1;
  }
  memcpy(g1, par->grads, par->nparams * sizeof(float));
  sgm_nn_params_zero_grad(par);
  ck_assert_int_eq(sgm_full_score_loss_targets(fs, B, x, g, NULL, tx, tg, 1.0, &L), 0);
  double gerr = 0.0, gmax = 0.0;
  for (size_t k = 0; k < par->nparams; k++)
    gerr = fmax(gerr, fabs((double)par->grads[k] - g1[k])), gmax = fmax(gmax, fabs(g1[k]));
  printf("pair chunks: loss %.10g vs %.10g, gradient %.3g of %.3g\n", L, Lsum, gerr, gmax);
  ck_assert(fabs(L - Lsum) <= 1e-6 * (1.0 + fabs(L)));
  ck_assert_msg(gerr <= 1e-4 * gmax, "pair chunks: gradient %g of %g", gerr, gmax);
  free(g1);
  ck_assert_int_eq(sgm_full_score_destroy(&fs), 0);
}
END_TEST

/* ---- the Boltzmann-informed x score against the exact score ----
 * Non-interacting AOUPs in a harmonic trap at v0 = 0 are in equilibrium: s_x = -mu A x / eps and
 * s_g = -g exactly. With every parameter zero the networks output N = 0 (all layers end in a zero
 * Linear), so the Boltzmann-informed score (boltzmann = boltzmann_x = true) must be exact: s, div s
 * and the sm loss equal their closed forms, the FPE residual is 0 and v = b - D s = 0. */
static void exact_case(SgmScoreKind kind)
{
  enum { N = 5, B = 3, D = 2 };
  const double mu = 0.8, A = 1.5, eps = 0.25, gam = 0.7;
  SgmFullScoreConfig c = small_cfg(kind, N, 1, 3);
  c.eps = eps;
  SgmFullScore fs;
  ck_assert_int_eq(sgm_full_score_create(&c, 9, &fs), 0);
  SgmParams *par = sgm_full_score_params(fs);
  memset(par->params, 0, par->nparams * sizeof(float));
  double x[B * N * D], g[B * N * D], fc[B * N * D], dfc[B * N], bx[B * N * D], divb[B];
  double sx[B * N * D], sg[B * N * D], dx[B * N], dg[B * N];
  for (int k = 0; k < B * N * D; k++) {
    x[k] = 4.0 * urand() - 2.0, g[k] = 2.0 * urand() - 1.0;
    fc[k] = -mu * A * x[k], bx[k] = fc[k]; /* v0 = 0: b_x = mu F */
  }
  for (int k = 0; k < B * N; k++) dfc[k] = -mu * A * D;
  for (int b = 0; b < B; b++) divb[b] = N * (-mu * A * D - gam * D);
  const SgmFullScoreShift sh = {fc, dfc};
  ck_assert_int_eq(sgm_full_score_eval(fs, B, x, g, &sh, sx, sg, dx, dg), 0);
  double err = 0.0, L_sm = 0.0;
  for (int k = 0; k < B * N * D; k++) {
    err = fmax(err, fabs(sx[k] + mu * A * x[k] / eps) + fabs(sg[k] + g[k]));
    /* v = b - D s, per component (sgm_epr_particle's formula) */
    err = fmax(err, fabs(bx[k] - eps * sx[k]) + fabs(-gam * g[k] - gam * sg[k]));
    L_sm += pow(mu * A * x[k] / eps, 2) + g[k] * g[k];
  }
  for (int k = 0; k < B * N; k++) err = fmax(err, fabs(dx[k] + mu * A * D / eps) + fabs(dg[k] + D));
  L_sm += 2.0 * B * N * (-mu * A * D / eps - D);
  ck_assert_msg(err <= 1e-12, "kind %d: exact Boltzmann score, max deviation %g", (int)kind, err);
  const SgmFullLossWeights wsm = {1.0, 0.0, eps, gam}, wfpe = {0.0, 1.0, eps, gam};
  double L, R2;
  sgm_nn_params_zero_grad(par);
  ck_assert_int_eq(sgm_full_score_loss(fs, &wsm, B, x, g, NULL, NULL, &sh, &L), 0);
  ck_assert_msg(fabs(L - L_sm) <= 1e-12 * fabs(L_sm), "kind %d: sm loss %.15g vs exact %.15g",
                (int)kind, L, L_sm);
  ck_assert_int_eq(sgm_full_score_loss(fs, &wfpe, B, x, g, bx, divb, &sh, &R2), 0);
  ck_assert_msg(R2 <= 1e-20, "kind %d: FPE residual^2 of the exact score %g", (int)kind, R2);
  /* without the x shift the same network is not exact (the test can fail) */
  c.boltzmann_x = 0;
  SgmFullScore fs0;
  ck_assert_int_eq(sgm_full_score_create(&c, 9, &fs0), 0);
  memset(sgm_full_score_params(fs0)->params, 0, par->nparams * sizeof(float));
  ck_assert_int_eq(sgm_full_score_eval(fs0, B, x, g, NULL, sx, sg, dx, dg), 0);
  ck_assert(fabs(sx[0] + mu * A * x[0] / eps) > 1e-3);
  ck_assert_int_eq(sgm_full_score_destroy(&fs0), 0);
  /* a missing shift is refused */
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  PetscErrorCode ierr = sgm_full_score_eval(fs, B, x, g, NULL, sx, sg, dx, dg);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  ck_assert_int_ne(ierr, 0);
  ck_assert_int_eq(sgm_full_score_destroy(&fs), 0);
}

START_TEST(test_boltzmann_x_exact)
{
  exact_case(SGM_SCORE_MLP);
  exact_case(SGM_SCORE_TRANSFORMER);
}
END_TEST

/* ---- the "model" provider ---- */

static const char *model_toml(const char *kind, const char *dir, const char *path, int hidden)
{
  static char text[12288];
  snprintf(text, sizeof text,
           "[run]\nname = \"t\"\noutput = \"%s\"\nseed = 7\nstages = []\n"
           "[system]\nkind = \"aoup\"\ndim = 2\nn = 5\nL = 4.0\nmu = 1.0\nv0 = 1.0\n"
           "gamma = 1.0\neps = 0.5\na = 0.6\nk = 0.0\npotential = \"harmonic\"\ntrap_A = 1.0\n"
           "boundary = \"open\"\n"
           "[model]\nkind = \"%s\"\nlearn = \"xg\"\nhidden = %d\ndepth = 2\nd_e = 8\nlayers = 1\n"
           "heads = 2\nmlp_hidden = 16\nembed_hidden = 8\nembed_depth = 1\ndec_hidden = 8\n"
           "dec_depth = 1\nmax_batch = 2\n"
           "[epr]\nscore = \"model\"\nmodel = \"%s\"\n",
           dir, kind, hidden, path);
  return text;
}

/* boltzmann_x: [model] boltzmann_x = true with pair forces ([system] k = 3): the provider's s_x
 * must equal the network's N_x plus the conservative drift of the PARALLEL engine (forces and
 * drift divergence computed on all ranks with ghosts, gathered by id) over eps: an independent
 * path from the provider's and the train stage's (sgm_full_score_drift on a PETSC_COMM_SELF
 * engine). */
static void provider_case(const char *kind, int boltzmann_x, int pair)
{
  MPI_Comm comm = sgm_test_comm();
  enum { N = 5, D = 2 };
  char path[PETSC_MAX_PATH_LEN];
  const char *dir = sgm_test_tmpdir("full_provider");
  SgmConfig cfg, bad;
  SgmAoupParams p;
  SgmScoreModelSpec ms;
  SgmScoreProvider sp;
  SgmAoup s;
  snprintf(path, sizeof path, "%s/%s_model%d%d.h5", dir, kind, boltzmann_x, pair);
  const char *bset[4] = {"model.boltzmann_x=true", "system.k=3.0", "model.pair_hidden=6",
                         "model.pair_cutoff=2.5"};
  /* pair = 2: with the contact profile input ([model] pair_contact, [system] beta and a) */
  const char *pset[3] = {"model.pair_hidden=6", "model.pair_cutoff=2.5", "model.pair_contact=true"};
  /* pair = 3: separate networks for s_x and s_g, without the pair term; pair = 4: the pair term
   * with |g_i|^2 and |g_j|^2 as inputs */
  const char *sset[1] = {"model.separate=true"};
  const char *gset[3] = {"model.pair_hidden=6", "model.pair_cutoff=2.5", "model.pair_gnorm=true"};
  ck_assert_int_eq(sgm_config_create_from_string(comm, "full.toml", model_toml(kind, dir, path, 16),
                                                 pair == 4     ? 3
                                                 : pair == 3   ? 1
                                                 : boltzmann_x ? 2 + 2 * pair
                                                 : pair        ? 1 + pair
                                                               : 0,
                                                 pair == 4     ? gset
                                                 : pair == 3   ? sset
                                                 : boltzmann_x ? bset
                                                               : pset,
                                                 &cfg),
                   0);
  ck_assert_int_eq(sgm_aoup_params_from_config(cfg, 7, &p), 0);
  ck_assert_int_eq(sgm_score_model_build(comm, cfg, D, N, 11, &ms), 0);
  ck_assert_int_eq(
      sgm_nn_save(comm, path, sgm_score_model_params(&ms), ms.narch, ms.arch, 0, NULL, NULL), 0);
  double x[N * D], g[N * D], sx[N * D], sg[N * D], dx[N], dg[N];
  int64_t ids[N];
  for (int k = 0; k < N * D; k++) x[k] = 4.0 * urand() - 2.0, g[k] = 2.0 * urand() - 1.0;
  MPI_Bcast(x, N * D, MPI_DOUBLE, 0, comm);
  MPI_Bcast(g, N * D, MPI_DOUBLE, 0, comm);
  for (int i = 0; i < N; i++) ids[i] = i;
  ck_assert_int_eq(sgm_score_provider_create(comm, "model", &p, cfg, &sp), 0);
  ck_assert_int_eq(sgm_aoup_create(comm, &p, &s), 0);
  ck_assert_int_eq(sgm_aoup_set_state(s, N, ids, x, g, 0), 0);
  const SgmParticles *P = &s->part;
  double fc[N * D] = {0}, dfc[N] = {0}, ldiv[N];
  if (boltzmann_x) {
    ck_assert_int_eq(sgm_aoup_forces(s), 0);
    ck_assert_int_eq(sgm_epr_drift_divergence(s, ldiv), 0);
    for (int64_t u = 0; u < P->nlocal; u++) {
      for (int a = 0; a < D; a++) fc[P->id[u] * D + a] = P->f[u * D + a];
      dfc[P->id[u]] = ldiv[u];
    }
    MPI_Allreduce(MPI_IN_PLACE, fc, N * D, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, dfc, N, MPI_DOUBLE, MPI_SUM, comm);
    /* the pair forces matter here (the test is not the trap alone) */
    double fpair = 0.0;
    for (int k = 0; k < N * D; k++) fpair = fmax(fpair, fabs(fc[k] + x[k]));
    ck_assert_msg(fpair > 0.1, "no pair force in the provider test (%g)", fpair);
  }
  const SgmFullScoreShift shv = {fc, dfc};
  ck_assert_int_eq(sgm_full_score_eval(ms.fs, 1, x, g, boltzmann_x ? &shv : NULL, sx, sg, dx, dg),
                   0);
  double px[N * D], pg[N * D], pdx[N], pdg[N];
  ck_assert_int_eq(sgm_score_provider_eval(sp, P, 0, P->nlocal, px, pg, pdx, pdg), 0);
  double err = 0.0;
  for (int64_t u = 0; u < P->nlocal; u++) {
    const int64_t id = P->id[u];
    for (int a = 0; a < D; a++)
      err = fmax(err,
                 fmax(fabs(px[u * D + a] - sx[id * D + a]), fabs(pg[u * D + a] - sg[id * D + a])));
    err = fmax(err, fmax(fabs(pdx[u] - dx[id]), fabs(pdg[u] - dg[id])));
  }
  ck_assert_msg(err <= 1e-12, "%s (boltzmann_x %d) provider vs direct: %g", kind, boltzmann_x, err);
  ck_assert_int_eq(sgm_score_provider_destroy(&sp), 0);
  /* a model.h5 of another architecture is refused (with the contact profile: the same pair
   * term without it) */
  if (pair == 2)
    ck_assert_int_eq(sgm_config_create_from_string(comm, "bad.toml",
                                                   model_toml(kind, dir, path, 24), 2, pset, &bad),
                     0);
  else if (pair == 4) /* the same pair term without the two inputs */
    ck_assert_int_eq(sgm_config_create_from_string(comm, "bad.toml",
                                                   model_toml(kind, dir, path, 16), 2, gset, &bad),
                     0);
  else if (pair == 3) /* the same network, joint: it must not load the separate model */
    ck_assert_int_eq(sgm_config_create_from_string(comm, "bad.toml",
                                                   model_toml(kind, dir, path, 16), 0, NULL, &bad),
                     0);
  else
    ck_assert_int_eq(
        sgm_config_create_from_string(comm, "bad.toml", model_toml(kind, dir, path, 24), 1,
                                      (const char *[]){boltzmann_x ? "model.boltzmann_x=false"
                                                       : !strcmp(kind, "mlp") ? "model.depth=3"
                                                                              : "model.d_e=12"},
                                      &bad),
        0);
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  PetscErrorCode ierr = sgm_score_provider_create(comm, "model", &p, bad, &sp);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  ck_assert_int_ne(ierr, 0);
  ck_assert_int_eq(sgm_score_provider_destroy(&sp), 0);
  ck_assert_int_eq(sgm_config_destroy(&bad), 0);
  ck_assert_int_eq(sgm_aoup_destroy(&s), 0);
  ck_assert_int_eq(sgm_score_model_spec_destroy(&ms), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
}

START_TEST(test_provider)
{
  lcg = 20261206; /* its own draw, whatever the tests before it drew (no fork under MPI) */
  provider_case("mlp", 0, 0);
  provider_case("transformer", 0, 0);
  provider_case("mlp", 1, 0);
  provider_case("transformer", 1, 0);
  provider_case("mlp", 0, 1);         /* with the pair term (its tensors in model.h5) */
  provider_case("transformer", 0, 2); /* and its contact profile input */
  provider_case("transformer", 1, 1);
  provider_case("transformer", 0, 3); /* separate networks for s_x and s_g */
  provider_case("mlp", 0, 3);
  provider_case("transformer", 0, 4); /* the pair term with |g_i|^2, |g_j|^2 */
}
END_TEST

/* ---- the train stage ---- */

static const char base[] =
    "[run]\nname = \"train_full\"\nseed = 5\nstages = [\"simulate\"]\noverwrite = true\n"
    "[system]\ndim = 2\nn = 4\nL = 6.0\nmu = 1.0\nv0 = 1.0\ngamma = 1.0\neps = 0.5\nk = 0.0\n"
    "potential = \"harmonic\"\ntrap_A = 1.0\nboundary = \"open\"\n"
    "[simulate]\ndt = 0.01\nn_equil = 200\nn_steps = 400\nframe_every = 10\nrelax_steps = 0\n"
    "[model]\nkind = \"mlp\"\nlearn = \"xg\"\nhidden = 16\ndepth = 2\nd_e = 8\nlayers = 1\n"
    "heads = 2\nmlp_hidden = 16\nembed_hidden = 8\nembed_depth = 1\ndec_hidden = 8\n"
    "dec_depth = 1\nmax_batch = 3\n"
    "[train]\nloss = \"sm\"\nsteps = 12\nbatch = 7\noptimizer = \"adam\"\nlr = 1e-3\n"
    "schedule = \"warmup_cosine\"\nwarmup = 3\nlog_every = 4\nonline_init = \"trajectory\"\n";

static const SgmTrainCase tcase = {"train_full.toml", base, "full"};

static PetscErrorCode run_text(MPI_Comm comm, const char *text, const char *outdir,
                               const char *stages, int nset, const char **sets, const char *restart)
{
  return sgm_test_run_text(comm, tcase.name, text, outdir, stages, nset, sets, restart);
}

/* A train run of base + sets that the input check must refuse (SGM_ERR_USER) before `dir`
 * (which must not exist yet) is created. */
static void expect_refused(const char *dir, int nset, const char **sets)
{
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  PetscErrorCode ierr = run_text(sgm_test_comm(), base, dir, "[\"train\"]", nset, sets, NULL);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  ck_assert_int_eq(ierr, SGM_ERR_USER);
  ck_assert_int_ne(access(dir, F_OK), 0);
}

/* d_e = 8, 12 logged losses */
static void rank_invariance(const char *tag, int nx, const char **extra)
{
  sgm_test_train_rank_invariance(&tcase, tag, nx, extra, 8, 12);
}

START_TEST(test_rank_invariance_mlp)
{
  static struct {
    const char *tag;
    int n;
    const char *set[4];
  } cases[] = {
      {"mlp offline sm", 0, {NULL}},
      {"mlp online composite",
       3,
       {"train.mode=\"online\"", "train.sde_steps=4", "train.loss=\"composite\""}},
      {"mlp offline composite boltzmann_x",
       3,
       {"model.boltzmann_x=true", "model.boltzmann=true", "train.loss=\"composite\""}},
      {"mlp online sm boltzmann_x",
       4,
       {"model.boltzmann_x=true", "train.mode=\"online\"", "train.sde_steps=4",
        "train.loss=\"sm\""}},
      {"mlp offline transition boltzmann_x",
       3,
       {"model.boltzmann_x=true", "model.boltzmann=true", "train.loss=\"transition\""}},
      {"mlp online transition",
       4,
       {"train.mode=\"online\"", "train.sde_steps=4", "train.loss=\"transition\"",
        "train.antithetic=false"}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    rank_invariance(cases[c].tag, cases[c].n, cases[c].n ? cases[c].set : NULL);
}
END_TEST

START_TEST(test_rank_invariance_transformer)
{
  const char *extra[2] = {"model.kind=\"transformer\"", "train.loss=\"composite\""};
  rank_invariance("transformer offline composite", 2, extra);
  const char *tr[3] = {"model.kind=\"transformer\"", "train.loss=\"transition\"",
                       "model.boltzmann_x=true"};
  rank_invariance("transformer offline transition boltzmann_x", 3, tr);
  const char *pr[4] = {"model.kind=\"transformer\"", "train.loss=\"transition\"",
                       "model.pair_hidden=8", "model.pair_cutoff=3.0"};
  rank_invariance("transformer offline transition pair", 4, pr);
  const char *sr[3] = {"model.kind=\"transformer\"", "train.loss=\"composite\"",
                       "model.separate=true"};
  rank_invariance("transformer offline composite separate", 3, sr);
}
END_TEST

static void restart_identity(const char *tag, int nx, const char **extra)
{
  sgm_test_train_restart_identity(&tcase, tag, nx, extra, 1);
}

START_TEST(test_restart_identity)
{
  const char *online[3] = {"train.mode=\"online\"", "train.sde_steps=3", "train.loss=\"fpe\""};
  restart_identity("mlp online fpe", 3, online);
  const char *tf[1] = {"model.kind=\"transformer\""};
  restart_identity("transformer offline sm", 1, tf);
  const char *tr[2] = {"train.loss=\"transition\"", "model.boltzmann_x=true"};
  restart_identity("mlp offline transition", 2, tr);
  const char *pr[4] = {"train.loss=\"composite\"", "train.mode=\"online\"", "model.pair_hidden=8",
                       "model.pair_cutoff=3.0"};
  restart_identity("mlp online composite pair", 4, pr);
  const char *sr[4] = {"train.loss=\"transition\"", "train.mode=\"online\"", "train.sde_steps=3",
                       "model.separate=true"};
  restart_identity("mlp online transition separate", 4, sr);
}
END_TEST

START_TEST(test_config_check)
{
  /* the FPE residual needs s_x; denoising is for the local transformer only */
  char dir[512];
  snprintf(dir, sizeof dir, "%s", sgm_test_tmpdir("full_check"));
  /* the transition loss: full-state kinds only; learning s_x from it needs eps > 0 */
  const char *bad[6][2] = {{"train.loss=\"fpe\"", "model.learn=\"g\""},
                           {"train.loss=\"denoise\"", "model.learn=\"xg\""},
                           {"model.boltzmann_x=true", "system.eps=0.0"},
                           {"model.boltzmann_x=true", "model.kind=\"local_transformer\""},
                           {"train.loss=\"transition\"", "model.kind=\"local_transformer\""},
                           {"train.loss=\"transition\"", "system.eps=0.0"}};
  for (int c = 0; c < 6; c++) {
    ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
    /* with simulate first, so that the trajectory train reads is not a problem too */
    PetscErrorCode ierr =
        run_text(sgm_test_comm(), base, dir, "[\"simulate\", \"train\"]", 2, bad[c], NULL);
    ck_assert_int_eq(PetscPopErrorHandler(), 0);
    ck_assert_int_eq(ierr, SGM_ERR_USER);
  }
  /* the pair term: full-state kinds only, refused by the input check whatever the stages; its
   * contact profile needs it */
  const char *pbad[5][2] = {{"model.pair_hidden=8", "model.kind=\"local_transformer\""},
                            {"model.pair_contact=true", "model.pair_hidden=0"},
                            {"model.separate=true", "model.learn=\"g\""},
                            {"model.separate=true", "model.kind=\"local_transformer\""},
                            {"model.pair_gnorm=true", "model.pair_hidden=0"}};
  for (int c = 0; c < 5; c++) {
    ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
    PetscErrorCode ierr = run_text(sgm_test_comm(), base, dir, "[\"simulate\"]", 2, pbad[c], NULL);
    ck_assert_int_eq(PetscPopErrorHandler(), 0);
    ck_assert_int_eq(ierr, SGM_ERR_USER);
  }
  /* periodic position features: the particle transformer in a periodic box needs
   * periodic_x = false (refused with the default, accepted with it) */
  const char *per[5] = {"system.boundary=\"periodic\"", "system.trap_A=0.0", "system.L=12.0",
                        "model.kind=\"transformer\"", "model.periodic_x=false"};
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  PetscErrorCode ierr = run_text(sgm_test_comm(), base, dir, "[\"simulate\"]", 4, per, NULL);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  ck_assert_int_eq(ierr, SGM_ERR_USER);
  ck_assert_int_eq(run_text(sgm_test_comm(), base, dir, "[\"simulate\"]", 5, per, NULL), 0);
}
END_TEST

/* [train] init_model: the EMA weights of another run's model.h5 (network and pair term in one
 * slab) start the training; 0 steps from them leave exactly those weights in the new model.h5.
 * Another architecture, or a file that is not there, is an input error (exit 2) caught before
 * the output directory is created. */
START_TEST(test_init_model)
{
  MPI_Comm comm = sgm_test_comm();
  char sim[512], a[512], b[512], bad[512], traj[600], init[700], mpath[600];
  snprintf(sim, sizeof sim, "%s", sgm_test_tmpdir("full_init_sim"));
  snprintf(a, sizeof a, "%s", sgm_test_tmpdir("full_init_a"));
  snprintf(b, sizeof b, "%s", sgm_test_tmpdir("full_init_b"));
  snprintf(bad, sizeof bad, "%s", sgm_test_tmpdir("full_init_bad"));
  ck_assert_int_eq(run_text(comm, base, sim, "[\"simulate\"]", 0, NULL, NULL), 0);
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", sim);
  snprintf(mpath, sizeof mpath, "%s/model.h5", a);
  snprintf(init, sizeof init, "train.init_model=\"%s\"", mpath);
  const char *sa[5] = {traj, "train.ema=0.9", "model.pair_hidden=8", "model.pair_cutoff=3.0",
                       "train.loss=\"composite\""};
  ck_assert_int_eq(run_text(comm, base, a, "[\"train\"]", 5, sa, NULL), 0);
  const char *sb[6] = {traj,
                       init,
                       "model.pair_hidden=8",
                       "model.pair_cutoff=3.0",
                       "train.steps=0",
                       "train.loss=\"sm\""};
  ck_assert_int_eq(run_text(comm, base, b, "[\"train\"]", 6, sb, NULL), 0);
  SgmTestParams pa = sgm_test_read_params(a), pb = sgm_test_read_params(b);
  ck_assert_int_eq(pa.nt, pb.nt);
  ck_assert_uint_eq(pa.n, pb.n);
  int npair = 0;
  size_t differ = 0;
  for (int k = 0; k < pa.nt; k++) {
    char ds[128];
    size_t m;
    ck_assert_str_eq(pa.names[k], pb.names[k]);
    npair += !strncmp(pa.names[k], "pair.", 5);
    snprintf(ds, sizeof ds, "optimizer/ema/%s", pa.names[k]);
    double *ema = sgm_test_read_ds(mpath, ds, &m, H5T_NATIVE_FLOAT);
    const float *e = (const float *)ema;
    ck_assert_uint_eq(m, (k + 1 < pa.nt ? pa.off[k + 1] : pa.n) - pa.off[k]);
    for (size_t i = 0; i < m; i++) {
      ck_assert_msg(pb.v[pb.off[k] + i] == e[i], "%s[%zu]: %g, EMA %g", pa.names[k], i,
                    (double)pb.v[pb.off[k] + i], (double)e[i]);
      differ += pa.v[pa.off[k] + i] != e[i];
    }
    free(ema);
  }
  ck_assert_int_gt(npair, 0);   /* the pair term's tensors came along */
  ck_assert_uint_gt(differ, 0); /* the EMA, not the raw weights, were taken */
  free(pa.v), free(pb.v);
  /* another architecture (the pair cutoff): refused by the input check, nothing created */
  char fresh[600], missing[700];
  snprintf(fresh, sizeof fresh, "%s/not_created", bad);
  const char *sc[4] = {traj, init, "model.pair_hidden=8", "model.pair_cutoff=2.0"};
  expect_refused(fresh, 4, sc);
  /* a file that is not there: refused by the input check, nothing created */
  snprintf(missing, sizeof missing, "train.init_model=\"%s/no_such_model.h5\"", a);
  const char *sd[2] = {traj, missing};
  expect_refused(fresh, 2, sd);
}
END_TEST

/* [train] validate_trajectory: the validation's score error and sm losses after training equal
 * those of the epr stage on the same frames with the same (EMA or raw) weights; train_log.h5 has
 * them at the log steps only; a missing file and the local transformer are refused. */
static void validate_case(const char *tag, int nx, const char **extra)
{
  MPI_Comm comm = sgm_test_comm();
  char sim[512], a[512], e[512], traj[600], vt[600], model[700], path[700];
  snprintf(sim, sizeof sim, "%s", sgm_test_tmpdir("full_val_sim"));
  snprintf(a, sizeof a, "%s/%s", sgm_test_tmpdir("full_val"), tag);
  snprintf(e, sizeof e, "%s/%s", sgm_test_tmpdir("full_val_epr"), tag);
  ck_assert_int_eq(run_text(comm, base, sim, "[\"simulate\"]", 0, NULL, NULL), 0);
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", sim);
  snprintf(vt, sizeof vt, "train.validate_trajectory=\"%s/trajectory.h5\"", sim);
  /* 41 frames: 11 evenly spaced ones are every 4th, as [epr] stride = 4 */
  const char *sa[12] = {traj, vt, "train.validate_frames=11"};
  for (int i = 0; i < nx; i++) sa[3 + i] = extra[i];
  ck_assert_int_eq(run_text(comm, base, a, "[\"train\"]", 3 + nx, sa, NULL), 0);
  snprintf(model, sizeof model, "epr.model=\"%s/model.h5\"", a);
  char et[600];
  snprintf(et, sizeof et, "epr.trajectory=\"%s/trajectory.h5\"", sim);
  const char *sb[16] = {model, et, "epr.stride=4", "epr.write_fields=false", "epr.score=\"model\""};
  for (int i = 0; i < nx; i++) sb[5 + i] = extra[i];
  ck_assert_int_eq(run_text(comm, base, e, "[\"epr\"]", 5 + nx, sb, NULL), 0);
  snprintf(path, sizeof path, "%s/metrics.json", a);
  char *ja = sgm_test_slurp(path);
  snprintf(path, sizeof path, "%s/metrics.json", e);
  char *je = sgm_test_slurp(path);
  const char *kt[3] = {"validation_score_error", "validation_sm_loss_x", "validation_sm_loss_g"};
  const char *ke[3] = {"score_error_mean", "sm_loss_x_mean", "sm_loss_g_mean"};
  double vals[3];
  for (int k = 0; k < 3; k++) {
    const double vt_ = sgm_test_metric(ja, "train", kt[k]), ve = sgm_test_metric(je, "epr", ke[k]);
    PetscPrintf(comm, "validate %s: %s %.10g, epr %s %.10g\n", tag, kt[k], vt_, ke[k], ve);
    ck_assert_msg(fabs(vt_ - ve) <= 1e-9 * (1 + fabs(ve)), "%s %g vs epr %g", kt[k], vt_, ve);
    vals[k] = vt_;
  }
  ck_assert_double_eq(sgm_test_metric(ja, "train", "validation_step"), 12.0);
  free(ja), free(je);
  /* train_log.h5: finite at the log steps 4, 8, 12 only; the last row is the metric */
  snprintf(path, sizeof path, "%s/train_log.h5", a);
  size_t m;
  double *col = sgm_test_read_ds(path, "validation_score_error", &m, H5T_NATIVE_DOUBLE);
  ck_assert_uint_eq(m, 12);
  for (size_t i = 0; i < m; i++)
    ck_assert_msg(((i + 1) % 4 == 0) == !isnan(col[i]), "step %zu: %g", i + 1, col[i]);
  ck_assert_double_eq(col[11], vals[0]);
  /* interrupted after step 6 and restarted: the validation columns come back bit for bit */
  char p2[600], ck[700];
  snprintf(p2, sizeof p2, "%s/%s", sgm_test_tmpdir("full_val_part"), tag);
  sa[3 + nx] = "train.stop_after=6";
  ck_assert_int_eq(run_text(comm, base, p2, "[\"train\"]", 4 + nx, sa, NULL), 0);
  snprintf(ck, sizeof ck, "%s/train_checkpoint.h5", p2);
  ck_assert_int_eq(run_text(comm, base, p2, "[\"train\"]", 3 + nx, sa, ck), 0);
  snprintf(path, sizeof path, "%s/train_log.h5", p2);
  const char *cols[4] = {"validation_score_error", "validation_score_error_se",
                         "validation_sm_loss_x", "validation_sm_loss_g"};
  for (int c = 0; c < 4; c++) {
    size_t m1, m2;
    char pa[700];
    snprintf(pa, sizeof pa, "%s/train_log.h5", a);
    double *c1 = sgm_test_read_ds(pa, cols[c], &m1, H5T_NATIVE_DOUBLE);
    double *c2 = sgm_test_read_ds(path, cols[c], &m2, H5T_NATIVE_DOUBLE);
    ck_assert_uint_eq(m1, m2);
    ck_assert_msg(!memcmp(c1, c2, m1 * sizeof(double)), "%s: restarted %s differs", tag, cols[c]);
    free(c1), free(c2);
  }
  free(col);
}

START_TEST(test_validate)
{
  /* the MLP with EMA weights; the transformer with the Boltzmann shifts and raw weights */
  const char *mlp[2] = {"train.ema=0.9", "train.loss=\"composite\""};
  validate_case("mlp", 2, mlp);
  const char *tf[5] = {"model.kind=\"transformer\"", "model.boltzmann=true",
                       "model.boltzmann_x=true", "train.ema=0.0", "train.loss=\"sm\""};
  validate_case("transformer", 5, tf);
  /* refused by the input check before the output directory exists */
  char dir[600], missing[700];
  snprintf(dir, sizeof dir, "%s/not_created", sgm_test_tmpdir("full_val_bad"));
  snprintf(missing, sizeof missing, "train.validate_trajectory=\"%s/no_such.h5\"", dir);
  const char *sc[2] = {missing, "train.trajectory=\"unused.h5\""};
  expect_refused(dir, 2, sc);
  snprintf(missing, sizeof missing, "train.validate_trajectory=\"%s/test_train_full.c\"",
           SGM_SOURCE_DIR "/tests");
  const char *sd[2] = {missing, "model.kind=\"local_transformer\""};
  expect_refused(dir, 2, sd);
}
END_TEST

/* ---- trapped AOUPs: the learned score against the exact Gaussian score ---- */

typedef struct {
  double rel_err, epr, epr_exact, divv, divv_se, divv_dt;
} TrapResult;

/* E[div v] per particle under the stationary law of the SIMULATED scheme (x Euler-Maruyama with
 * g_n, g exact OU or Euler), with b and D of the continuum: the score of the data, whose
 * covariance differs from the continuum Lyapunov one by O(dt) (0.4 % at dt = 0.01), gives
 * E[div v] = d (-mu A - gamma + eps (S^-1)_xx + gamma (S^-1)_gg) = -0.0166 there, not 0
 * (docs/validation.md); printed beside the measured value. S solves S = M S M^T + Q (iterated to
 * convergence). */
static double divv_discrete(const SgmAoupParams *p)
{
  const double a = p->mu * p->trap_A, dt = p->dt, ga = p->gamma;
  const double cg = p->g_exact ? exp(-ga * dt) : 1.0 - ga * dt;
  const double qg = p->g_exact ? -expm1(-2.0 * ga * dt) : 2.0 * ga * dt;
  const double M[2][2] = {{1.0 - a * dt, p->v0 * dt}, {0.0, cg}}, Q[2] = {2.0 * p->eps * dt, qg};
  double S[2][2] = {{1, 0}, {0, 1}};
  for (int it = 0; it < 2000000; it++) {
    double T[2][2], N[2][2];
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++) T[i][j] = M[i][0] * S[0][j] + M[i][1] * S[1][j];
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++)
        N[i][j] = T[i][0] * M[j][0] + T[i][1] * M[j][1] + (i == j ? Q[i] : 0);
    const double d = fabs(N[0][0] - S[0][0]) + fabs(N[0][1] - S[0][1]) + fabs(N[1][1] - S[1][1]);
    memcpy(S, N, sizeof S);
    if (d < 1e-15) break;
  }
  const double det = S[0][0] * S[1][1] - S[0][1] * S[1][0];
  return p->dim * (-a - ga + p->eps * S[1][1] / det + ga * S[0][0] / det);
}

static TrapResult trap_measure(const char *dir, const SgmAoupParams *p)
{
  char path[1024];
  size_t nx, ng, nsx, nsg, ntot, nsys;
  TrapResult r;
  snprintf(path, sizeof path, "%s/epr.h5", dir);
  double *x = sgm_test_read_ds(path, "position", &nx, H5T_NATIVE_DOUBLE);
  double *g = sgm_test_read_ds(path, "orientation", &ng, H5T_NATIVE_DOUBLE);
  double *sx = sgm_test_read_ds(path, "score_x", &nsx, H5T_NATIVE_DOUBLE);
  double *sg = sgm_test_read_ds(path, "score_g", &nsg, H5T_NATIVE_DOUBLE);
  double *tot = sgm_test_read_ds(path, "epr_total", &ntot, H5T_NATIVE_DOUBLE);
  double *sys = sgm_test_read_ds(path, "series/epr_system", &nsys, H5T_NATIVE_DOUBLE);
  SgmTrapExact ex;
  ck_assert_int_eq(sgm_score_trap_exact(p, &ex), 0);
  double e2 = 0, s2 = 0;
  for (size_t k = 0; k < nx; k++) {
    /* s = -Σ⁻¹ z per component, Σ⁻¹ = [[cgg, -cxg], [-cxg, cxx]] / det */
    const double ex_x = -(ex.cgg * x[k] - ex.cxg * g[k]) / ex.det;
    const double ex_g = -(-ex.cxg * x[k] + ex.cxx * g[k]) / ex.det;
    e2 += (sx[k] - ex_x) * (sx[k] - ex_x) + (sg[k] - ex_g) * (sg[k] - ex_g);
    s2 += ex_x * ex_x + ex_g * ex_g;
  }
  r.rel_err = sqrt(e2 / s2);
  double m = 0;
  for (size_t k = 0; k < ntot; k++) m += tot[k];
  r.epr = m / (double)ntot, r.epr_exact = ex.tot;
  /* E[div v] per particle (frame means) with a 10-batch-means standard error */
  const size_t T = nsys, nb = 10, bl = T / nb;
  double bm[10], mean = 0;
  for (size_t b = 0; b < nb; b++) {
    bm[b] = 0;
    for (size_t t = b * bl; t < (b + 1) * bl; t++) bm[b] += sys[t];
    bm[b] /= (double)bl;
    mean += bm[b] / (double)nb;
  }
  double var = 0;
  for (size_t b = 0; b < nb; b++) var += (bm[b] - mean) * (bm[b] - mean);
  r.divv = mean, r.divv_se = sqrt(var / (double)(nb - 1) / (double)nb);
  r.divv_dt = divv_discrete(p);
  free(x), free(g), free(sx), free(sg), free(tot), free(sys);
  return r;
}

/* Trains with the input (plus overrides), then measures on an INDEPENDENT trajectory (another
 * seed, `test_steps` steps): the learned model and, for reference, the initial network (0 steps).
 */
static void trap_case(const char *input, int nshort, const char **shortset, const char *test_steps,
                      double max_err, int full_targets, char *msg)
{
  MPI_Comm comm = sgm_test_comm();
  char *text = sgm_test_slurp(input);
  char dir[512], dir0[512], dirt[512], traj[700], model[700], ttraj[760];
  snprintf(dir, sizeof dir, "%s", sgm_test_tmpdir("trap_learned"));
  snprintf(dir0, sizeof dir0, "%s", sgm_test_tmpdir("trap_initial"));
  snprintf(dirt, sizeof dirt, "%s", sgm_test_tmpdir("trap_testset"));
  const char *sets[24];
  for (int i = 0; i < nshort; i++) sets[i] = shortset[i];
  sets[nshort] = "run.overwrite=true";
  ck_assert_int_eq(
      run_text(comm, text, dir, "[\"simulate\",\"train\",\"epr\"]", nshort + 1, sets, NULL), 0);
  /* the independent test trajectory, evaluated with the trained model */
  snprintf(model, sizeof model, "epr.model=\"%s/model.h5\"", dir);
  sets[nshort + 1] = "run.seed=1001";
  sets[nshort + 2] = test_steps;
  sets[nshort + 3] = model;
  ck_assert_int_eq(run_text(comm, text, dirt, "[\"simulate\",\"epr\"]", nshort + 4, sets, NULL), 0);
  /* the initial network: 0 training steps, evaluated on the test trajectory */
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", dir);
  snprintf(ttraj, sizeof ttraj, "epr.trajectory=\"%s/trajectory.h5\"", dirt);
  sets[nshort + 1] = "train.steps=0";
  sets[nshort + 2] = traj;
  sets[nshort + 3] = ttraj;
  ck_assert_int_eq(run_text(comm, text, dir0, "[\"train\",\"epr\"]", nshort + 4, sets, NULL), 0);
  SgmConfig cfg;
  SgmAoupParams p;
  ck_assert_int_eq(sgm_config_create_from_string(comm, "trap.toml", text, 0, NULL, &cfg), 0);
  ck_assert_int_eq(sgm_aoup_params_from_config(cfg, 1, &p), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  PetscMPIInt rank;
  MPI_Comm_rank(comm, &rank);
  msg[0] = 0;
  if (rank == 0) {
    TrapResult rtr = trap_measure(dir, &p), r = trap_measure(dirt, &p), r0 = trap_measure(dir0, &p);
    printf("trap %s: training trajectory: relative L2 score error %.4g, EPR per particle %.5g, "
           "E[div v] %.3g +- %.2g\n",
           input, rtr.rel_err, rtr.epr, rtr.divv, rtr.divv_se);
    printf("trap %s: test trajectory: relative L2 score error %.4g (initial network %.4g); EPR "
           "per particle %.5g (exact %.5g, %+.2f%%); E[div v] %.4g +- %.2g (se; %.4g under the "
           "simulated scheme's stationary law)\n",
           input, r.rel_err, r0.rel_err, r.epr, r.epr_exact, 100 * (r.epr / r.epr_exact - 1),
           r.divv, r.divv_se, r.divv_dt);
    if (!(r.rel_err < max_err && r.rel_err < 0.5 * r0.rel_err))
      snprintf(msg, 256, "%s: score error %g (initial %g, bound %g)", input, r.rel_err, r0.rel_err,
               max_err);
    else if (full_targets && !(fabs(r.epr / r.epr_exact - 1) < 0.05))
      snprintf(msg, 256, "%s: EPR %g vs exact %g", input, r.epr, r.epr_exact);
    else if (full_targets && !(fabs(r.divv) < 3 * r.divv_se))
      snprintf(msg, 256, "%s: E[div v] %g beyond 3 se %g of 0", input, r.divv, r.divv_se);
  }
  MPI_Bcast(msg, 256, MPI_CHAR, 0, comm);
  free(text);
}

START_TEST(test_trap)
{
  char m1[256], m2[256];
  if (long_run) {
    /* the inputs as they are; independent test trajectory of 2 x 10^5 steps (T = 2000). Both
     * run before the verdict. Issue 4's targets for the transformer (error < 5 %, EPR within 5 %,
     * |E[div v]| within 3 se of 0); an error below 15 % for the MLP. */
    trap_case(SGM_SOURCE_DIR "/input/trap_transformer.toml", 0, NULL, "simulate.n_steps=200000",
              0.05, 1, m1);
    trap_case(SGM_SOURCE_DIR "/input/trap_mlp.toml", 0, NULL, "simulate.n_steps=200000", 0.15, 0,
              m2);
    ck_assert_msg(!m1[0] && !m2[0], "%s %s", m1, m2);
    return;
  }
  /* short: T = 200 (2001 frames), a small MLP, 400 steps; test trajectory T = 200 */
  const char *shortset[] = {"simulate.n_steps=20000", "model.hidden=32",    "train.steps=400",
                            "train.warmup=20",        "train.batch=64",     "train.ema=0",
                            "train.lr=3e-3",          "train.log_every=100"};
  trap_case(SGM_SOURCE_DIR "/input/trap_mlp.toml", 8, shortset, "simulate.n_steps=20000", 0.45, 0,
            m1);
  /* the transition loss (eq. 88 as in App. D.3: no divergences) on the input's T = 10^4 (100001
   * frames): on the 2001 frames above it memorises them (its empirical minimiser is the score of
   * a kernel density of width sqrt(2 dt D) around the stored frames; measured: error 0.54 after
   * 400 steps, 1.27 after 2000 of 256); here 0.118 (bound 0.2) */
  const char *trset[] = {
      "model.hidden=32", "train.steps=2000", "train.warmup=100",    "train.batch=256",
      "train.ema=0",     "train.lr=3e-3",    "train.log_every=500", "train.loss=\"transition\"",
      "epr.stride=5"};
  trap_case(SGM_SOURCE_DIR "/input/trap_mlp.toml", 9, trset, "simulate.n_steps=20000", 0.2, 0, m2);
  ck_assert_msg(!m1[0] && !m2[0], "%s %s", m1, m2);
}
END_TEST

/* The pair term learns a pair score. Interacting AOUPs in the trap of `base` at v0 = 0 (N = 4,
 * harmonic repulsion k = 3 at contact 2a = 1.2: the particles overlap often) are in equilibrium,
 * with s_x = mu F / eps (pair forces and trap) and s_g = -g exactly. The same small MLP learns s_x
 * from nothing (boltzmann_x = false; s_g shifted) with the transition loss online, with and
 * without the pair term; on an independent trajectory the relative L2 error of s_x must be below
 * 0.25 with it and below half of the error without it. */
static double pair_eq_error(const char *dir)
{
  char path[1024];
  size_t nx, nsx;
  snprintf(path, sizeof path, "%s/epr.h5", dir);
  double *x = sgm_test_read_ds(path, "position", &nx, H5T_NATIVE_DOUBLE);
  double *sx = sgm_test_read_ds(path, "score_x", &nsx, H5T_NATIVE_DOUBLE);
  enum { N = 4, D = 2 };
  const double k = 3.0, a = 0.6, A = 1.0, eps = 0.5; /* mu = 1 */
  double e2 = 0.0, s2 = 0.0;
  ck_assert(nx == nsx && nx % (N * D) == 0);
  for (size_t f = 0; f < nx / (N * D); f++) {
    const double *xf = x + f * N * D, *sf = sx + f * N * D;
    for (int i = 0; i < N; i++) {
      double F[D];
      for (int c = 0; c < D; c++) F[c] = -A * xf[i * D + c];
      for (int j = 0; j < N; j++) {
        if (j == i) continue;
        const double dx = xf[i * D] - xf[j * D], dy = xf[i * D + 1] - xf[j * D + 1];
        const double r = sqrt(dx * dx + dy * dy), fm = sgm_force_harmonic(r, a, k, 0.0);
        F[0] += fm * dx / r, F[1] += fm * dy / r;
      }
      for (int c = 0; c < D; c++) {
        const double ex = F[c] / eps;
        e2 += (sf[i * D + c] - ex) * (sf[i * D + c] - ex), s2 += ex * ex;
      }
    }
  }
  free(x), free(sx);
  return sqrt(e2 / s2);
}

START_TEST(test_pair_equilibrium)
{
  MPI_Comm comm = sgm_test_comm();
  char dt[512], dp[512], dn[512], traj[700], etraj[700];
  snprintf(dt, sizeof dt, "%s", sgm_test_tmpdir("pair_eq_test"));
  snprintf(dp, sizeof dp, "%s", sgm_test_tmpdir("pair_eq_pair"));
  snprintf(dn, sizeof dn, "%s", sgm_test_tmpdir("pair_eq_nopair"));
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", dp);
  snprintf(etraj, sizeof etraj, "epr.trajectory=\"%s/trajectory.h5\"", dt);
  enum { NC = 17 }; /* settings common to the three runs */
  const char *common[NC] = {"system.v0=0.0",
                            "system.k=3.0",
                            "system.a=0.6",
                            "model.boltzmann=true",
                            "train.loss=\"transition\"",
                            "train.mode=\"online\"",
                            "train.sde_steps=10",
                            "train.steps=1500",
                            "train.batch=32",
                            "train.warmup=50",
                            "train.lr=3e-3",
                            "train.ema=0",
                            "train.log_every=500",
                            "model.hidden=32",
                            "simulate.n_steps=4000",
                            "run.overwrite=true",
                            "epr.score=\"model\""};
  const char *sets[NC + 3];
  memcpy(sets, common, sizeof common);
  /* the independent test trajectory (seed 1001) */
  sets[NC] = "run.seed=1001";
  ck_assert_int_eq(run_text(comm, base, dt, "[\"simulate\"]", NC + 1, sets, NULL), 0);
  /* with the pair term; its own trajectory (seed 5) gives the replicas' initial frames */
  sets[NC] = etraj, sets[NC + 1] = "model.pair_hidden=16";
  ck_assert_int_eq(run_text(comm, base, dp, "[\"simulate\",\"train\",\"epr\"]", NC + 2, sets, NULL),
                   0);
  /* without it, from the same initial frames */
  sets[NC + 1] = traj;
  ck_assert_int_eq(run_text(comm, base, dn, "[\"train\",\"epr\"]", NC + 2, sets, NULL), 0);
  PetscMPIInt rank;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    const double ep = pair_eq_error(dp), en = pair_eq_error(dn);
    printf("pair equilibrium: relative L2 error of s_x with the pair term %.4g, without %.4g\n", ep,
           en);
    ck_assert_msg(ep < 0.25 && ep < 0.5 * en, "pair term: s_x error %g (without %g)", ep, en);
  }
}
END_TEST

/* A periodic box given by [system] phi (L unset): the MLP's periodic position features and the
 * pair term's box take the edge the engine resolves, sqrt(pi n a^2 / phi) (the model once read
 * the unset L and stopped with an internal error). */
START_TEST(test_box_from_phi)
{
  MPI_Comm comm = sgm_test_comm();
  char text[sizeof base + 64], dir[512], path[600];
  const char *from[2] = {"L = 6.0\n", "trap_A = 1.0\nboundary = \"open\"\n"};
  const char *to[2] = {"phi = 0.2\n", "boundary = \"periodic\"\n"};
  snprintf(text, sizeof text, "%s", base);
  for (int k = 0; k < 2; k++) {
    char *at = strstr(text, from[k]), rest[sizeof base];
    ck_assert_ptr_nonnull(at);
    snprintf(rest, sizeof rest, "%s", at + strlen(from[k]));
    snprintf(at, sizeof text - (size_t)(at - text), "%s%s", to[k], rest);
  }
  snprintf(dir, sizeof dir, "%s", sgm_test_tmpdir("full_phi"));
  const char *sets[3] = {"model.pair_hidden=8", "model.pair_cutoff=2.0", "train.steps=2"};
  ck_assert_int_eq(run_text(comm, text, dir, "[\"simulate\", \"train\"]", 3, sets, NULL), 0);
  int rank;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    double L = 0.0;
    snprintf(path, sizeof path, "%s/model.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t a = H5Aopen_by_name(f, "architecture", "x_period", H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(H5Aread(a, H5T_NATIVE_DOUBLE, &L), 0);
    H5Aclose(a);
    H5Fclose(f);
    ck_assert_double_eq_tol(L, sqrt(M_PI * 4.0 / 0.2), 1e-12);
  }
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("train_full");
  TCase *tc = tcase_create("train_full");
  tcase_set_timeout(tc, long_run ? 3000 : 240);
  if (!long_run && !trap_run) {
    tcase_add_test(tc, test_mlp_grad);
    tcase_add_test(tc, test_transformer_grad);
    tcase_add_test(tc, test_pair_chunks);
    tcase_add_test(tc, test_boltzmann_x_exact);
    tcase_add_test(tc, test_provider);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_rank_invariance_mlp);
    tcase_add_test(tc, test_rank_invariance_transformer);
    tcase_add_test(tc, test_restart_identity);
    tcase_add_test(tc, test_init_model);
    tcase_add_test(tc, test_validate);
    tcase_add_test(tc, test_periodic_x);
    tcase_add_test(tc, test_box_from_phi);
  } else {
    tcase_add_test(tc, test_trap);
    if (!long_run) tcase_add_test(tc, test_pair_equilibrium);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--long"))
      long_run = 1;
    else if (!strcmp(argv[i], "--trap"))
      trap_run = 1;
  return sgm_test_main(argc, argv, suite());
}
