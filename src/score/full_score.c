/* Full-state score networks: an MLP on all N particles' (x, g) and the particle transformer over
 * N tokens (include/sgm/score_model.h, paper 002 eqs. 22, 24-26, App. E and F.2-F.6).
 *
 * Owns the float staging of a batch of configurations, the exact per-particle divergence blocks
 * and the per-configuration losses (score matching, FPE residual, composite) with their cotangents.
 * Trade-offs:
 *  - The MLP sees d n inputs, so its divergence blocks div_{x_i} s_x^i need the one-hot tangents
 *    of particle i's own coordinates only: d n JVP directions per learned part (not the (2 d n)^2
 *    Jacobian), run in chunks of max_tan directions through sgm_nn_mlp_jvp; the loss gradient
 *    recomputes each chunk's JVP and calls sgm_nn_mlp_jvp_backward with the diagonal cotangents
 *    (reverse-over-forward), the primal cotangent entering with the first chunk only. The FPE
 *    residual needs every divergence before any cotangent is known, so the JVPs run twice; for
 *    the small systems these networks are meant for (n <= 64) that is cheap next to its clarity.
 *  - The particle transformer's divergence API already returns the per-particle blocks (B, n).
 *  - Boltzmann-informed parameterisation (App. F.3.2): s_g = -g + N_g and s_x = mu F / eps + N_x
 *    with the conservative drift mu F (pair forces and trap) supplied by the caller with its
 *    per-particle divergence (SgmFullScoreShift); the shifts are added in double after the float
 *    network, so the O(k / eps) Boltzmann part is never rounded to float, and they do not depend
 *    on the parameters (the cotangents are those of the full score).
 *  - Input scale ([model] x_scale): the network sees x / x_scale, so that positions spread over
 *    a trap or box of size ~x_scale enter at O(1); the x divergences and their cotangents carry
 *    the chain-rule factor 1 / x_scale (the network's own JVPs are in its input units).
 *  - Periodic boxes ([model] periodic_x, MLP): each position coordinate enters as
 *    (cos 2πx/L, sin 2πx/L), so the network is a function on the torus; on raw wrapped positions
 *    it jumps where a particle crosses the box edge, and its divergence misses that jump (the
 *    ring's score error and the stage's score-error estimate disagreed by 0.23 per particle,
 *    docs/validation.md). The x tangent of the divergence is then k(-sin, cos) at the two feature
 *    slots instead of a one-hot.
 *  - Pair term ([model] pair_hidden > 0, pair_head.h): a learned function of each close pair's
 *    geometry added to both scores in double, with its exact divergences; its parameters follow
 *    the network's in one slab (tensors pair.net.*, sgm_nn_params_rebind), so the optimiser, the
 *    gradient allreduce and model.h5 see one model. Every loss trains it (the divergence losses
 *    through the pair head's reverse-over-forward).
 *  - Separate networks ([model] separate, learn = "xg"): s_x and s_g from two networks of the same
 *    architecture (the paper's choice, App. F.2.3 and F.3: "we learn s_x and s_g separately"),
 *    each with a per-particle output of width dim; the x network's divergence differentiates its
 *    x inputs, the g network's its g inputs. Their outputs are interleaved into the joint layout
 *    [s_x | s_g] after the forward and their cotangents split before the backward, so everything
 *    downstream is the same code. Parameters: x.*, g.* (then pair.*), one slab.
 *  - Losses are formed in double from the float outputs, summed over particles (eq. 26 sums the
 *    full vector), and returned as sums over configurations; the caller divides by the global
 *    batch size after the gradient allreduce.
 */
#include "sgm/score_model.h"
#include "pair_head.h"
#include "sgm/core.h"
#include "sgm/epr.h"

#include <math.h>
#include <string.h>

struct SgmFullScore_ {
  SgmFullScoreConfig c;
  SgmNnMlp mlp, mlp2; /* mlp2, tf2: the g network when separate (mlp, tf: the x one) */
  SgmNnTransformer tf, tf2;
  SgmParams *par;
  float *out1, *out2; /* separate: the two networks' outputs / cotangents (mb, n, dim) */
  int od;             /* per-particle output width: dim (learn_x + 1) */
  int din;            /* MLP input width n pw */
  int pw, goff;       /* MLP inputs per particle (2 dim, or 3 dim with x_period) and g's offset */
  double kper;        /* 2π / x_period (0: positions as they are) */
  int ntan;           /* MLP directions per chunk */
  int B;              /* configurations of the last forward */
  double ixs;         /* 1 / x_scale */
  float *in;          /* MLP (mb, din) or transformer X (mb, n, dim) */
  float *gin;         /* transformer G (mb, n, dim) */
  float *out, *dout;
  float *tx, *tout, *dtout; /* MLP chunk tangents */
  float *fdx, *fdg;         /* transformer divergences / divergence cotangents (mb, n) */
  double *divx, *divg;      /* network divergences (mb, n), no Boltzmann term */
  SgmPairHead ph;           /* pair term, or NULL */
  SgmParams cat;            /* the network's tensors (x.*, g.* if separate), then pair.net.* */
  double *psx, *psg;        /* pair terms of the last forward (mb, n, dim) */
  double *pdx, *pdg;        /* their divergences (mb, n) */
  double *dsx, *dsg;        /* score cotangents for the pair term's backward (mb, n, dim) */
  double *ddx, *ddg;        /* divergence cotangents for it (mb, n) */
};

/* One slab for the models' tables: cat holds them all in order, each name prefixed (the
 * single network's without a prefix, so that its files keep their names), offsets one after the
 * other, and every model is rebound into it. */
static PetscErrorCode concat_params(SgmFullScore fs, int np, SgmParams **parts, const char **pre)
{
  SgmParams *c = &fs->cat;
  PetscFunctionBeginUser;
  c->nparams = 0, c->ntensors = 0;
  for (int q = 0; q < np; q++) c->nparams += parts[q]->nparams, c->ntensors += parts[q]->ntensors;
  PetscCall(PetscCalloc1(c->ntensors, &c->tensors));
  PetscCall(PetscMalloc2(c->nparams, &c->params, c->nparams, &c->grads));
  size_t off = 0;
  int t = 0;
  for (int q = 0; q < np; q++) {
    const SgmParams *b = parts[q];
    for (int k = 0; k < b->ntensors; k++, t++) {
      SgmTensorView *v = &c->tensors[t];
      *v = b->tensors[k];
      const size_t lp = strlen(pre[q]), ln = strlen(b->tensors[k].name);
      PetscCheck(lp + ln < SGM_NN_NAME_LEN, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ,
                 "full score: tensor name %s too long", b->tensors[k].name);
      memcpy(v->name, pre[q], lp);
      memcpy(v->name + lp, b->tensors[k].name, ln + 1);
      v->offset += off;
    }
    off += parts[q]->nparams;
  }
  off = 0;
  for (int q = 0; q < np; q++) {
    const size_t m = parts[q]->nparams;
    PetscCall(sgm_nn_params_rebind(parts[q], c->params + off, c->grads + off));
    off += m;
  }
  fs->par = c;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_full_score_create(const SgmFullScoreConfig *c, uint64_t seed, SgmFullScore *out)
{
  SgmFullScore fs;
  PetscFunctionBeginUser;
  PetscCheck(c->n >= 1 && c->dim >= 1 && c->max_batch >= 1, PETSC_COMM_SELF,
             PETSC_ERR_ARG_OUTOFRANGE, "full score: n, dim, max_batch must be positive");
  PetscCheck(!c->boltzmann_x || c->eps > 0.0, PETSC_COMM_SELF, SGM_ERR_USER,
             "full score: the Boltzmann-informed x score s_x = mu F / eps + N_x needs eps > 0");
  PetscCall(PetscCalloc1(1, &fs));
  fs->c = *c;
  PetscCheck(c->x_scale >= 0.0 && isfinite(c->x_scale), PETSC_COMM_SELF, SGM_ERR_USER,
             "full score: x_scale = %g must be positive", c->x_scale);
  fs->ixs = c->x_scale > 0.0 ? 1.0 / c->x_scale : 1.0;
  PetscCheck(!c->separate || c->learn_x, PETSC_COMM_SELF, SGM_ERR_USER,
             "full score: separate networks for s_x and s_g need learn = \"xg\"");
  const int n = c->n, D = c->dim, mb = c->max_batch;
  fs->od = D * (c->learn_x + 1);
  const int ow1 = c->separate ? D : fs->od; /* per-particle output width of one network */
  PetscCheck(c->x_period >= 0.0 && isfinite(c->x_period), PETSC_COMM_SELF, SGM_ERR_USER,
             "full score: x_period = %g must be >= 0", c->x_period);
  PetscCheck(c->x_period == 0.0 || c->kind == SGM_SCORE_MLP, PETSC_COMM_SELF, SGM_ERR_USER,
             "full score: periodic position features (x_period) are implemented for the MLP only");
  fs->kper = c->x_period > 0.0 ? 2.0 * PETSC_PI / c->x_period : 0.0;
  if (fs->kper > 0.0) fs->ixs = 1.0; /* the features carry their own chain-rule factor */
  fs->pw = (fs->kper > 0.0 ? 3 : 2) * D;
  fs->goff = fs->kper > 0.0 ? 2 * D : D;
  fs->din = fs->pw * n;
  const int ndir = n * D; /* directions of one part */
  /* the g network's own init stream when separate: its tensor k must not repeat the x one's */
  const uint64_t seed2 = seed ^ UINT64_C(0x47534e4554574f52);
  if (c->kind == SGM_SCORE_MLP) {
    SgmNnMlpConfig mc = c->mlp;
    mc.in_dim = fs->din;
    mc.out_dim = n * ow1;
    mc.cond_dim = 0, mc.time_freqs = 0;
    fs->ntan = c->max_tan > 0 ? PetscMin(c->max_tan, ndir) : PetscMin(ndir, 64);
    PetscCall(sgm_nn_mlp_create(&mc, mb, fs->ntan, seed, &fs->mlp));
    if (fs->c.separate) PetscCall(sgm_nn_mlp_create(&mc, mb, fs->ntan, seed2, &fs->mlp2));
    fs->par = sgm_nn_mlp_params(fs->mlp);
    const size_t nt = (size_t)fs->ntan * mb;
    PetscCall(PetscMalloc3(nt * fs->din, &fs->tx, nt * n * fs->od, &fs->tout, nt * n * fs->od,
                           &fs->dtout));
    PetscCall(PetscMalloc1((size_t)mb * fs->din, &fs->in));
  } else if (c->kind == SGM_SCORE_TRANSFORMER) {
    SgmNnTransformerConfig tc = c->tf;
    tc.dim = D, tc.gdim = D, tc.out_dim = ow1;
    const int mt = c->max_tan > 0 ? PetscMin(c->max_tan, ndir) : PetscMin(ndir, 16);
    PetscCall(sgm_nn_transformer_create_particle(&tc, n, mb, mt, seed, &fs->tf));
    if (fs->c.separate)
      PetscCall(sgm_nn_transformer_create_particle(&tc, n, mb, mt, seed2, &fs->tf2));
    fs->par = sgm_nn_transformer_params(fs->tf);
    PetscCall(PetscMalloc2((size_t)mb * n * D, &fs->in, (size_t)mb * n * D, &fs->gin));
  } else
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "full score: unknown kind %d", (int)c->kind);
  PetscCall(PetscMalloc2((size_t)mb * n * fs->od, &fs->out, (size_t)mb * n * fs->od, &fs->dout));
  if (fs->c.separate)
    PetscCall(PetscMalloc2((size_t)mb * n * D, &fs->out1, (size_t)mb * n * D, &fs->out2));
  {
    SgmParams *parts[3];
    const char *pre[3];
    int np = 0;
    if (fs->c.separate) {
      parts[np] = fs->par, pre[np++] = "x.";
      parts[np] = fs->mlp2 ? sgm_nn_mlp_params(fs->mlp2) : sgm_nn_transformer_params(fs->tf2);
      pre[np++] = "g.";
    } else
      parts[np] = fs->par, pre[np++] = "";
    if (c->pair_hidden > 0) {
      const SgmPairHeadConfig pc = {n,
                                    D,
                                    c->learn_x,
                                    c->pair_hidden,
                                    c->pair_depth,
                                    c->kind == SGM_SCORE_MLP ? c->mlp.act : c->tf.act,
                                    c->pair_cutoff,
                                    c->box,
                                    c->pair_contact_beta,
                                    c->pair_contact_r,
                                    c->pair_gnorm};
      /* its own init stream: the pair's tensor k must not repeat the network's tensor k */
      PetscCall(sgm_pair_head_create(&pc, seed ^ UINT64_C(0x5041495248454144), &fs->ph));
      parts[np] = sgm_pair_head_params(fs->ph), pre[np++] = "pair.";
    }
    if (np > 1) PetscCall(concat_params(fs, np, parts, pre));
  }
  PetscCall(PetscMalloc4((size_t)mb * n, &fs->fdx, (size_t)mb * n, &fs->fdg, (size_t)mb * n,
                         &fs->divx, (size_t)mb * n, &fs->divg));
  if (c->pair_hidden > 0) {
    const size_t nd = (size_t)mb * n * D;
    PetscCall(PetscCalloc6(nd, &fs->psx, nd, &fs->psg, (size_t)mb * n, &fs->pdx, (size_t)mb * n,
                           &fs->pdg, nd, &fs->dsx, nd, &fs->dsg));
    PetscCall(PetscCalloc2((size_t)mb * n, &fs->ddx, (size_t)mb * n, &fs->ddg));
  }
  *out = fs;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_full_score_destroy(SgmFullScore *p)
{
  PetscFunctionBeginUser;
  if (!p || !*p) PetscFunctionReturn(PETSC_SUCCESS);
  SgmFullScore fs = *p;
  if (fs->mlp) {
    PetscCall(sgm_nn_mlp_destroy(&fs->mlp));
    PetscCall(sgm_nn_mlp_destroy(&fs->mlp2));
    PetscCall(PetscFree3(fs->tx, fs->tout, fs->dtout));
    PetscCall(PetscFree(fs->in));
  }
  if (fs->tf) {
    PetscCall(sgm_nn_transformer_destroy(&fs->tf));
    PetscCall(sgm_nn_transformer_destroy(&fs->tf2));
    PetscCall(PetscFree2(fs->in, fs->gin));
  }
  PetscCall(PetscFree2(fs->out, fs->dout));
  if (fs->c.separate) PetscCall(PetscFree2(fs->out1, fs->out2));
  if (fs->cat.params) {
    PetscCall(PetscFree2(fs->cat.params, fs->cat.grads));
    PetscCall(PetscFree(fs->cat.tensors));
  }
  PetscCall(PetscFree4(fs->fdx, fs->fdg, fs->divx, fs->divg));
  if (fs->ph) {
    PetscCall(sgm_pair_head_destroy(&fs->ph));
    PetscCall(PetscFree6(fs->psx, fs->psg, fs->pdx, fs->pdg, fs->dsx, fs->dsg));
    PetscCall(PetscFree2(fs->ddx, fs->ddg));
  }
  PetscCall(PetscFree(fs));
  *p = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

SgmParams *sgm_full_score_params(SgmFullScore fs)
{
  return fs->par;
}

/* Float inputs of B configurations and the forward pass. */
static PetscErrorCode forward(SgmFullScore fs, int B, const double *x, const double *g)
{
  const int n = fs->c.n, D = fs->c.dim;
  PetscFunctionBeginUser;
  fs->B = B;
  if (fs->mlp) {
    for (int b = 0; b < B; b++)
      for (int i = 0; i < n; i++)
        for (int a = 0; a < D; a++) {
          const size_t k = ((size_t)b * n + i) * D + a;
          float *in = fs->in + (size_t)b * fs->din + (size_t)fs->pw * i;
          if (fs->kper > 0.0) {
            const double th = fs->kper * x[k];
            in[a] = (float)cos(th), in[D + a] = (float)sin(th);
          } else
            in[a] = (float)(x[k] * fs->ixs);
          in[fs->goff + a] = (float)g[k];
        }
    PetscCall(
        sgm_nn_mlp_forward(fs->mlp, fs->c.separate ? fs->out1 : fs->out, fs->in, NULL, NULL, B));
    if (fs->c.separate) PetscCall(sgm_nn_mlp_forward(fs->mlp2, fs->out2, fs->in, NULL, NULL, B));
  } else {
    for (size_t k = 0; k < (size_t)B * n * D; k++)
      fs->in[k] = (float)(x[k] * fs->ixs), fs->gin[k] = (float)g[k];
    PetscCall(sgm_nn_transformer_forward(fs->tf, fs->c.separate ? fs->out1 : fs->out, fs->in,
                                         fs->gin, NULL, B));
    if (fs->c.separate)
      PetscCall(sgm_nn_transformer_forward(fs->tf2, fs->out2, fs->in, fs->gin, NULL, B));
  }
  if (fs->c.separate) /* the joint layout [s_x | s_g] per particle */
    for (size_t k = 0; k < (size_t)B * n; k++)
      for (int a = 0; a < D; a++)
        fs->out[k * 2 * D + a] = fs->out1[k * D + a],
                            fs->out[k * 2 * D + D + a] = fs->out2[k * D + a];
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Separate networks: splits the joint cotangent dout (B, n, 2 dim) into out1 (x) and out2 (g). */
static void split_cotangent(SgmFullScore fs, const float *dout)
{
  const int D = fs->c.dim;
  for (size_t k = 0; k < (size_t)fs->B * fs->c.n; k++)
    for (int a = 0; a < D; a++)
      fs->out1[k * D + a] = dout[k * 2 * D + a], fs->out2[k * D + a] = dout[k * 2 * D + D + a];
}

/* The pair terms of the last forward's B configurations (and their divergences when div). */
static PetscErrorCode pair_forward(SgmFullScore fs, const double *x, const double *g, int div)
{
  PetscFunctionBeginUser;
  if (fs->ph)
    PetscCall(sgm_pair_head_eval(fs->ph, fs->B, x, g, fs->psx, fs->psg, div ? fs->pdx : NULL,
                                 div ? fs->pdg : NULL));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* One MLP chunk of directions [d0, d0 + nc): the one-hot tangents and their (particle, input
 * offset, output offset, part) bookkeeping. part < 0 (one network): direction d = q n D + i D + a,
 * part q (0 = x when learn_x, else g), particle i, component a. part 0 or 1 (the x or g network
 * of separate ones): d = i D + a of that part, in a network whose output is that part alone. */
static void mlp_dir(const SgmFullScore fs, int part, int d, int *i, int *inoff, int *outoff,
                    int *isx)
{
  const int n = fs->c.n, D = fs->c.dim;
  const int q = part < 0 ? d / (n * D) : part, r = part < 0 ? d % (n * D) : d, a = r % D;
  *i = r / D;
  *isx = part < 0 ? fs->c.learn_x && q == 0 : part == 0;
  *inoff = fs->pw * (*i) + (*isx ? 0 : fs->goff) + a;
  *outoff = part < 0 ? fs->od * (*i) + (fs->c.learn_x ? q * D : 0) + a : D * (*i) + a;
}

/* Divergences (ddx == NULL: accumulated into fs->divx, fs->divg, which the caller zeroes) or
 * their backward (ddx, ddg cotangents (B, n), dout primal cotangent or NULL) of the MLP m, which
 * is the one network (part -1) or the x (0) or g (1) network of separate ones. */
static PetscErrorCode mlp_div(SgmFullScore fs, SgmNnMlp m, int part, const float *dout,
                              const float *ddx, const float *ddg)
{
  const int n = fs->c.n, D = fs->c.dim, B = fs->B, ow = n * (part < 0 ? fs->od : D);
  const int ndir = part < 0 ? n * D * (fs->c.learn_x + 1) : n * D;
  PetscFunctionBeginUser;
  for (int d0 = 0; d0 < ndir; d0 += fs->ntan) {
    const int nc = PetscMin(fs->ntan, ndir - d0);
    memset(fs->tx, 0, (size_t)nc * B * fs->din * sizeof(float));
    for (int k = 0; k < nc; k++) {
      int i, io, oo, isx;
      mlp_dir(fs, part, d0 + k, &i, &io, &oo, &isx);
      if (isx && fs->kper > 0.0) /* d/dx (cos kx, sin kx) = k (-sin kx, cos kx) */
        for (int b = 0; b < B; b++) {
          const float *in = fs->in + (size_t)b * fs->din;
          float *t = fs->tx + ((size_t)k * B + b) * fs->din;
          t[io] = (float)(-fs->kper * in[io + D]), t[io + D] = (float)(fs->kper * in[io]);
        }
      else
        for (int b = 0; b < B; b++) fs->tx[((size_t)k * B + b) * fs->din + io] = 1.0f;
    }
    PetscCall(sgm_nn_mlp_jvp(m, fs->tout, fs->tx, NULL, NULL, nc));
    if (!ddg) {
      for (int k = 0; k < nc; k++) {
        int i, io, oo, isx;
        mlp_dir(fs, part, d0 + k, &i, &io, &oo, &isx);
        double *dv = isx ? fs->divx : fs->divg;
        for (int b = 0; b < B; b++)
          dv[(size_t)b * n + i] += fs->tout[((size_t)k * B + b) * ow + oo];
      }
    } else {
      memset(fs->dtout, 0, (size_t)nc * B * ow * sizeof(float));
      for (int k = 0; k < nc; k++) {
        int i, io, oo, isx;
        mlp_dir(fs, part, d0 + k, &i, &io, &oo, &isx);
        const float *dd = isx ? ddx : ddg;
        for (int b = 0; b < B; b++)
          fs->dtout[((size_t)k * B + b) * ow + oo] = dd[(size_t)b * n + i];
      }
      PetscCall(sgm_nn_mlp_jvp_backward(m, d0 == 0 ? dout : NULL, fs->dtout));
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Network divergences of the last forward into fs->divx, fs->divg (B, n). */
static PetscErrorCode divergences(SgmFullScore fs)
{
  const size_t nb = (size_t)fs->B * fs->c.n;
  PetscFunctionBeginUser;
  if (fs->mlp) {
    for (size_t k = 0; k < nb; k++) fs->divx[k] = fs->divg[k] = 0.0;
    if (fs->c.separate) {
      PetscCall(mlp_div(fs, fs->mlp, 0, NULL, NULL, NULL));
      PetscCall(mlp_div(fs, fs->mlp2, 1, NULL, NULL, NULL));
    } else
      PetscCall(mlp_div(fs, fs->mlp, -1, NULL, NULL, NULL));
  } else {
    if (fs->c.learn_x) {
      PetscCall(sgm_nn_transformer_divergence(fs->tf, SGM_NN_INPUT_X, fs->fdx));
      for (size_t k = 0; k < nb; k++) fs->divx[k] = fs->fdx[k];
    } else
      for (size_t k = 0; k < nb; k++) fs->divx[k] = 0.0;
    PetscCall(
        sgm_nn_transformer_divergence(fs->c.separate ? fs->tf2 : fs->tf, SGM_NN_INPUT_G, fs->fdg));
    for (size_t k = 0; k < nb; k++) fs->divg[k] = fs->fdg[k];
  }
  if (fs->ixs != 1.0)
    for (size_t k = 0; k < nb; k++) fs->divx[k] *= fs->ixs;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Accumulates the parameter gradient for cotangents dout (B, n, od), ddx, ddg (B, n). */
static PetscErrorCode backward(SgmFullScore fs, const float *dout, const float *ddx,
                               const float *ddg)
{
  PetscFunctionBeginUser;
  if (fs->c.separate) { /* each network its own part of the cotangents */
    split_cotangent(fs, dout);
    if (fs->mlp) {
      PetscCall(mlp_div(fs, fs->mlp, 0, fs->out1, ddx, ddg));
      PetscCall(mlp_div(fs, fs->mlp2, 1, fs->out2, ddx, ddg));
    } else {
      /* G last in divergences(): its JVPs are reused when they fit one chunk */
      PetscCall(sgm_nn_transformer_divergence_backward(fs->tf2, SGM_NN_INPUT_G, fs->out2, ddg));
      PetscCall(sgm_nn_transformer_divergence_backward(fs->tf, SGM_NN_INPUT_X, fs->out1, ddx));
    }
  } else if (fs->mlp) {
    PetscCall(mlp_div(fs, fs->mlp, -1, dout, ddx, ddg));
  } else {
    /* G last in divergences(): its JVPs are reused when they fit one chunk */
    PetscCall(sgm_nn_transformer_divergence_backward(fs->tf, SGM_NN_INPUT_G, dout, ddg));
    if (fs->c.learn_x)
      PetscCall(sgm_nn_transformer_divergence_backward(fs->tf, SGM_NN_INPUT_X, NULL, ddx));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Score of particle i of configuration b of the last forward (double, Boltzmann terms added:
 * s_g -= g, s_x += fc / eps; fc points at the chunk's first configuration). */
static void score_of(const SgmFullScore fs, int b, int i, const double *g, const double *fc,
                     double *sx, double *sg)
{
  const int n = fs->c.n, D = fs->c.dim;
  const float *o = fs->out + ((size_t)b * n + i) * fs->od;
  const int og = fs->c.learn_x ? D : 0;
  const size_t k = ((size_t)b * n + i) * D;
  for (int a = 0; a < D; a++) {
    sx[a] =
        (fs->c.learn_x ? (double)o[a] : 0.0) + (fs->c.boltzmann_x ? fc[k + a] / fs->c.eps : 0.0);
    sg[a] = (double)o[og + a] - (fs->c.boltzmann ? g[k + a] : 0.0);
    if (fs->ph) {
      if (fs->c.learn_x) sx[a] += fs->psx[k + a];
      sg[a] += fs->psg[k + a];
    }
  }
}

/* Divergences of particle i of configuration b of the last divergences() call, Boltzmann terms
 * added (divfc points at the chunk's first configuration). */
static void div_of(const SgmFullScore fs, int b, int i, const double *divfc, double *dx, double *dg)
{
  const size_t k = (size_t)b * fs->c.n + i;
  *dx = fs->divx[k] + (fs->c.boltzmann_x ? divfc[k] / fs->c.eps : 0.0);
  *dg = fs->divg[k] - (fs->c.boltzmann ? (double)fs->c.dim : 0.0);
  if (fs->ph) *dx += fs->pdx[k], *dg += fs->pdg[k];
}

static PetscErrorCode check_shift(const SgmFullScore fs, const SgmFullScoreShift *sh)
{
  PetscFunctionBeginUser;
  PetscCheck(!fs->c.boltzmann_x || (sh && sh->fc && sh->divfc), PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "full score: the Boltzmann-informed x score needs the conservative drift");
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_full_score_drift(SgmAoup e, double *fc, double *divfc)
{
  const int D = e->p.dim;
  const SgmParticles *P = &e->part;
  double *dv;
  PetscFunctionBeginUser;
  PetscCall(sgm_aoup_forces(e));
  PetscCall(PetscMalloc1(P->nlocal + 1, &dv));
  PetscCall(sgm_epr_drift_divergence(e, dv));
  for (int64_t i = 0; i < P->nlocal; i++) {
    const int64_t id = P->id[i];
    for (int a = 0; a < D; a++) fc[id * D + a] = P->f[i * D + a];
    divfc[id] = dv[i];
  }
  PetscCall(PetscFree(dv));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_full_score_eval(SgmFullScore fs, int B, const double *x, const double *g,
                                   const SgmFullScoreShift *sh, double *sx, double *sg,
                                   double *divx, double *divg)
{
  const int n = fs->c.n, D = fs->c.dim;
  PetscFunctionBeginUser;
  PetscCall(check_shift(fs, sh));
  for (int b0 = 0; b0 < B; b0 += fs->c.max_batch) {
    const int nb = PetscMin(fs->c.max_batch, B - b0);
    const size_t off = (size_t)b0 * n * D;
    const double *fc = fs->c.boltzmann_x ? sh->fc + off : NULL;
    const double *dfc = fs->c.boltzmann_x ? sh->divfc + (size_t)b0 * n : NULL;
    PetscCall(forward(fs, nb, x + off, g + off));
    PetscCall(pair_forward(fs, x + off, g + off, 1));
    PetscCall(divergences(fs));
    for (int b = 0; b < nb; b++)
      for (int i = 0; i < n; i++) {
        const size_t k = (size_t)(b0 + b) * n + i;
        score_of(fs, b, i, g + off, fc, sx + k * D, sg + k * D);
        div_of(fs, b, i, dfc, divx + k, divg + k);
      }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_full_score_loss(SgmFullScore fs, const SgmFullLossWeights *w, int B,
                                   const double *x, const double *g, const double *bx,
                                   const double *divb, const SgmFullScoreShift *sh,
                                   double *loss_sum)
{
  const int n = fs->c.n, D = fs->c.dim, od = fs->od, lx = fs->c.learn_x;
  const double eps = w->eps, gam = w->gamma;
  double acc = 0.0;
  PetscFunctionBeginUser;
  PetscCheck(w->w_fpe == 0.0 || (lx && bx && divb), PETSC_COMM_SELF, SGM_ERR_USER,
             "the FPE residual loss needs s_x (learn = \"xg\") and the drift");
  PetscCall(check_shift(fs, sh));
  for (int b0 = 0; b0 < B; b0 += fs->c.max_batch) {
    const int nb = PetscMin(fs->c.max_batch, B - b0);
    const size_t off = (size_t)b0 * n * D;
    const double *gb = g + off;
    const double *fc = fs->c.boltzmann_x ? sh->fc + off : NULL;
    const double *dfc = fs->c.boltzmann_x ? sh->divfc + (size_t)b0 * n : NULL;
    PetscCall(forward(fs, nb, x + off, gb));
    PetscCall(pair_forward(fs, x + off, gb, 1));
    PetscCall(divergences(fs));
    for (int b = 0; b < nb; b++) {
      double sm = 0.0, R = 0.0;
      if (w->w_fpe != 0.0) R = divb[b0 + b];
      for (int i = 0; i < n; i++) {
        double sx[3], sg[3];
        const size_t k = (size_t)b * n + i;
        double dgx, dgg;
        score_of(fs, b, i, gb, fc, sx, sg);
        div_of(fs, b, i, dfc, &dgx, &dgg);
        for (int a = 0; a < D; a++) sm += sx[a] * sx[a] + sg[a] * sg[a];
        sm += 2.0 * (dgx + dgg);
        if (w->w_fpe != 0.0) {
          const double *bxi = bx + off + k * D, *gi = gb + k * D;
          R -= eps * dgx + gam * dgg;
          for (int a = 0; a < D; a++)
            R += (bxi[a] - eps * sx[a]) * sx[a] + (-gam * gi[a] - gam * sg[a]) * sg[a];
        }
      }
      acc += w->w_sm * sm + w->w_fpe * R * R;
      /* cotangents: dL/ds = 2 w_sm s + 2 w_fpe R (b - 2 D s); dL/ddiv = 2 w_sm - 2 w_fpe R D */
      const double cr = 2.0 * w->w_fpe * R;
      for (int i = 0; i < n; i++) {
        double sx[3], sg[3];
        const size_t k = (size_t)b * n + i;
        score_of(fs, b, i, gb, fc, sx, sg);
        float *o = fs->dout + k * od;
        for (int a = 0; a < D; a++) {
          if (lx) {
            const double bxa = w->w_fpe != 0.0 ? bx[off + k * D + a] : 0.0;
            const double cx = 2.0 * w->w_sm * sx[a] + cr * (bxa - 2.0 * eps * sx[a]);
            o[a] = (float)cx;
            if (fs->ph) fs->dsx[k * D + a] = cx;
          }
          const double bga = -gam * gb[k * D + a];
          const double cg = 2.0 * w->w_sm * sg[a] + cr * (bga - 2.0 * gam * sg[a]);
          o[(lx ? D : 0) + a] = (float)cg;
          if (fs->ph) fs->dsg[k * D + a] = cg;
        }
        fs->fdx[k] = (float)((2.0 * w->w_sm - cr * eps) * fs->ixs);
        fs->fdg[k] = (float)(2.0 * w->w_sm - cr * gam);
        if (fs->ph) fs->ddx[k] = 2.0 * w->w_sm - cr * eps, fs->ddg[k] = 2.0 * w->w_sm - cr * gam;
      }
    }
    PetscCall(backward(fs, fs->dout, fs->fdx, fs->fdg));
    if (fs->ph)
      PetscCall(
          sgm_pair_head_backward(fs->ph, nb, x + off, gb, fs->dsx, fs->dsg, fs->ddx, fs->ddg));
  }
  *loss_sum = acc;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_full_score_loss_targets(SgmFullScore fs, int B, const double *x, const double *g,
                                           const double *fc, const double *tx, const double *tg,
                                           double weight, double *loss_sum)
{
  const int n = fs->c.n, D = fs->c.dim, od = fs->od, lx = fs->c.learn_x;
  double acc = 0.0;
  PetscFunctionBeginUser;
  PetscCheck(!fs->c.boltzmann_x || fc, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "full score: the Boltzmann-informed x score needs the conservative drift");
  PetscCheck(!lx || tx, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "full score: learned s_x needs its targets");
  for (int b0 = 0; b0 < B; b0 += fs->c.max_batch) {
    const int nb = PetscMin(fs->c.max_batch, B - b0);
    const size_t off = (size_t)b0 * n * D;
    PetscCall(forward(fs, nb, x + off, g + off));
    PetscCall(pair_forward(fs, x + off, g + off, 0));
    for (int b = 0; b < nb; b++)
      for (int i = 0; i < n; i++) {
        double sx[3], sg[3];
        const size_t k = (size_t)b * n + i, kk = off + k * D;
        score_of(fs, b, i, g + off, fs->c.boltzmann_x ? fc + off : NULL, sx, sg);
        float *o = fs->dout + k * od;
        for (int a = 0; a < D; a++) {
          if (lx) {
            acc += sx[a] * sx[a] - 2.0 * sx[a] * tx[kk + a];
            o[a] = (float)(2.0 * weight * (sx[a] - tx[kk + a]));
            if (fs->ph) fs->dsx[k * D + a] = 2.0 * weight * (sx[a] - tx[kk + a]);
          }
          acc += sg[a] * sg[a] - 2.0 * sg[a] * tg[kk + a];
          o[(lx ? D : 0) + a] = (float)(2.0 * weight * (sg[a] - tg[kk + a]));
          if (fs->ph) fs->dsg[k * D + a] = 2.0 * weight * (sg[a] - tg[kk + a]);
        }
      }
    if (fs->ph)
      PetscCall(sgm_pair_head_backward(fs->ph, nb, x + off, g + off, fs->dsx, fs->dsg, NULL, NULL));
    if (fs->c.separate) {
      split_cotangent(fs, fs->dout);
      if (fs->mlp) {
        PetscCall(sgm_nn_mlp_backward(fs->mlp, NULL, fs->out1));
        PetscCall(sgm_nn_mlp_backward(fs->mlp2, NULL, fs->out2));
      } else {
        PetscCall(sgm_nn_transformer_backward(fs->tf, fs->out1));
        PetscCall(sgm_nn_transformer_backward(fs->tf2, fs->out2));
      }
    } else if (fs->mlp)
      PetscCall(sgm_nn_mlp_backward(fs->mlp, NULL, fs->dout));
    else
      PetscCall(sgm_nn_transformer_backward(fs->tf, fs->dout));
  }
  *loss_sum = weight * acc;
  PetscFunctionReturn(PETSC_SUCCESS);
}
