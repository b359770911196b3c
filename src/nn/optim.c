/* Optimisers over flat slabs: Adam, AdamW, RAdam (optax and torch flavours), global-norm clipping
 * and an EMA of the weights, behind a name -> kernel registry.
 *
 * Owns: the registry, the SgmOptim object (settings, step count, one slab holding m, v and the
 * optional EMA) and the update kernels. Trade-offs: moments are stored in float (half the memory
 * and bandwidth of double, and what PyTorch keeps), but every element's update is evaluated in
 * double from those floats and rounded once when stored, so the only float error per step is the
 * final rounding; the bias corrections and the global norm are double. The kernels are one pass
 * over the slab each (clipping folds into the kernel as a scale factor instead of rewriting the
 * gradients), so a step costs one read of grads, one read+write of params, m, v. The rectification
 * of RAdam depends on t only, so it is computed once per step, not per element.
 */
#include "sgm/nn_optim.h"
#include "sgm/core.h"
#include <inttypes.h>
#include <math.h>
#include <string.h>

struct SgmOptim_ {
  const SgmOptimKind *kind;
  SgmOptimSettings s;
  size_t n;
  float *slab; /* m | v | ema */
  float *m, *v, *ema;
  int64_t step;
};

/* torch.optim.Adam / optax.adam; weight decay as torch's coupled L2 term. */
static void adam_update(float *params, const float *grads, float *m, float *v, size_t n,
                        const SgmOptimCoeffs *c)
{
  const double b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay, gs = c->gscale;
  const double step_size = c->lr / (1.0 - pow(b1, (double)c->t));
  const double inv_sqrt_bc2 = 1.0 / sqrt(1.0 - pow(b2, (double)c->t));
  for (size_t i = 0; i < n; i++) {
    const double p = params[i];
    const double g = gs * grads[i] + wd * p;
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = (float)mi;
    v[i] = (float)vi;
    params[i] = (float)(p - step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps));
  }
}

/* torch.optim.AdamW / optax.adamw: decoupled decay p (1 - lr wd), applied to the old p. */
static void adamw_update(float *params, const float *grads, float *m, float *v, size_t n,
                         const SgmOptimCoeffs *c)
{
  const double b1 = c->beta1, b2 = c->beta2, eps = c->eps, gs = c->gscale;
  const double decay = 1.0 - c->lr * c->weight_decay;
  const double step_size = c->lr / (1.0 - pow(b1, (double)c->t));
  const double inv_sqrt_bc2 = 1.0 / sqrt(1.0 - pow(b2, (double)c->t));
  for (size_t i = 0; i < n; i++) {
    const double g = gs * grads[i];
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = (float)mi;
    v[i] = (float)vi;
    params[i] = (float)(decay * params[i] - step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps));
  }
}

/* Length of the approximated SMA (Liu et al. 2020, eq. 4 ff.) and the rectification r_t. */
static double radam_rho(double b2, int64_t t)
{
  const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
  const double b2t = pow(b2, (double)t);
  return rho_inf - 2.0 * (double)t * b2t / (1.0 - b2t);
}

static double radam_rect(double b2, double rho)
{
  const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
  return sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho));
}

/* Shared RAdam loop. torch_eps: eps added to sqrt(v) and then divided by sqrt(bc2) (torch), else
 * eps added to sqrt(vhat) (optax). rectified: whether this step takes the adaptive branch. */
static void radam_loop(float *params, const float *grads, float *m, float *v, size_t n,
                       const SgmOptimCoeffs *c, int rectified, int torch_eps)
{
  const double b1 = c->beta1, b2 = c->beta2, wd = c->weight_decay, gs = c->gscale;
  const double bc1 = 1.0 - pow(b1, (double)c->t), bc2 = 1.0 - pow(b2, (double)c->t);
  const double rect = rectified ? radam_rect(b2, radam_rho(b2, c->t)) : 0.0;
  const double sqrt_bc2 = sqrt(bc2);
  /* optax: sqrt(v/bc2) + eps; torch: (sqrt(v) + eps)/sqrt(bc2). Both as sqrt(v)/sqrt(bc2) + e. */
  const double e = torch_eps ? c->eps / sqrt_bc2 : c->eps;
  const double lr_m = c->lr / bc1;
  for (size_t i = 0; i < n; i++) {
    const double p = params[i];
    const double g = gs * grads[i] + wd * p;
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = (float)mi;
    v[i] = (float)vi;
    const double u = rectified ? rect * mi / (sqrt(vi) / sqrt_bc2 + e) : mi;
    params[i] = (float)(p - lr_m * u);
  }
}

static void radam_update(float *params, const float *grads, float *m, float *v, size_t n,
                         const SgmOptimCoeffs *c)
{
  radam_loop(params, grads, m, v, n, c, radam_rho(c->beta2, c->t) >= 5.0, 0);
}

static void radam_torch_update(float *params, const float *grads, float *m, float *v, size_t n,
                               const SgmOptimCoeffs *c)
{
  radam_loop(params, grads, m, v, n, c, radam_rho(c->beta2, c->t) > 5.0, 1);
}

static const SgmOptimKind builtin_kinds[] = {
    {"adam", "Adam (torch.optim.Adam == optax.adam; weight_decay = coupled L2)", adam_update},
    {"adamw", "AdamW, decoupled weight decay (torch.optim.AdamW == optax.adamw)", adamw_update},
    {"radam", "Rectified Adam, optax.radam semantics (rho_t >= 5, eps on sqrt(vhat))",
     radam_update},
    {"radam_torch", "Rectified Adam, torch.optim.RAdam semantics (rho_t > 5, eps on sqrt(v))",
     radam_torch_update},
};
#define NBUILTIN  ((int)(sizeof builtin_kinds / sizeof builtin_kinds[0]))
#define MAX_EXTRA 16
static const SgmOptimKind *extra_kinds[MAX_EXTRA];
static int nextra;

PetscErrorCode sgm_optim_find(const char *name, const SgmOptimKind **kind)
{
  PetscFunctionBeginUser;
  *kind = NULL;
  for (int i = 0; i < NBUILTIN && !*kind; i++)
    if (!strcmp(builtin_kinds[i].name, name)) *kind = &builtin_kinds[i];
  for (int i = 0; i < nextra && !*kind; i++)
    if (!strcmp(extra_kinds[i]->name, name)) *kind = extra_kinds[i];
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_register(const SgmOptimKind *kind)
{
  const SgmOptimKind *old;
  PetscFunctionBeginUser;
  PetscCall(sgm_optim_find(kind->name, &old));
  if (old == kind) PetscFunctionReturn(0);
  PetscCheck(!old, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE,
             "optimiser '%s' is already registered", kind->name);
  PetscCheck(nextra < MAX_EXTRA, PETSC_COMM_SELF, PETSC_ERR_MEM, "too many optimiser kinds");
  extra_kinds[nextra++] = kind;
  PetscFunctionReturn(0);
}

void sgm_optim_settings_default(SgmOptimSettings *s)
{
  memset(s, 0, sizeof *s);
  s->beta1 = 0.9;
  s->beta2 = 0.999;
  s->eps = 1e-8;
  s->schedule = sgm_optim_schedule_constant(1e-3);
}

PetscErrorCode sgm_optim_create(const char *name, size_t n, const SgmOptimSettings *s,
                                SgmOptim *opt)
{
  const SgmOptimKind *kind;
  SgmOptim o;
  PetscFunctionBeginUser;
  *opt = NULL;
  PetscCall(sgm_optim_find(name, &kind));
  if (!kind) {
    char known[512] = "";
    for (int i = 0; i < NBUILTIN; i++) {
      PetscCall(PetscStrlcat(known, " ", sizeof known));
      PetscCall(PetscStrlcat(known, builtin_kinds[i].name, sizeof known));
    }
    for (int i = 0; i < nextra; i++) {
      PetscCall(PetscStrlcat(known, " ", sizeof known));
      PetscCall(PetscStrlcat(known, extra_kinds[i]->name, sizeof known));
    }
    SETERRQ(PETSC_COMM_SELF, SGM_ERR_USER, "unknown optimiser '%s' (known:%s)", name, known);
  }
  PetscCheck(s->beta1 >= 0 && s->beta1 < 1, PETSC_COMM_SELF, SGM_ERR_USER,
             "optimiser beta1 = %g must be in [0, 1)", s->beta1);
  PetscCheck(s->beta2 >= 0 && s->beta2 < 1, PETSC_COMM_SELF, SGM_ERR_USER,
             "optimiser beta2 = %g must be in [0, 1)", s->beta2);
  PetscCheck(s->eps >= 0 && isfinite(s->eps), PETSC_COMM_SELF, SGM_ERR_USER,
             "optimiser eps = %g must be finite and >= 0", s->eps);
  PetscCheck(s->weight_decay >= 0 && isfinite(s->weight_decay), PETSC_COMM_SELF, SGM_ERR_USER,
             "optimiser weight_decay = %g must be finite and >= 0", s->weight_decay);
  PetscCheck(s->clip_norm >= 0 && isfinite(s->clip_norm), PETSC_COMM_SELF, SGM_ERR_USER,
             "optimiser clip_norm = %g must be finite and >= 0 (0: no clipping)", s->clip_norm);
  PetscCheck(s->ema_decay >= 0 && s->ema_decay < 1, PETSC_COMM_SELF, SGM_ERR_USER,
             "optimiser ema_decay = %g must be in [0, 1) (0: no EMA)", s->ema_decay);
  PetscCall(sgm_optim_schedule_check(&s->schedule));
  PetscCall(PetscNew(&o));
  o->kind = kind;
  o->s = *s;
  o->n = n;
  const size_t nslab = (s->ema_decay > 0 ? 3 : 2) * n;
  PetscCall(PetscCalloc1(nslab > 0 ? nslab : 1, &o->slab));
  o->m = o->slab;
  o->v = o->slab + n;
  o->ema = s->ema_decay > 0 ? o->slab + 2 * n : NULL;
  *opt = o;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_destroy(SgmOptim *opt)
{
  PetscFunctionBeginUser;
  if (!opt || !*opt) PetscFunctionReturn(0);
  PetscCall(PetscFree((*opt)->slab));
  PetscCall(PetscFree(*opt));
  PetscFunctionReturn(0);
}

double sgm_optim_global_norm(const float *g, size_t n)
{
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
  return sqrt(s);
}

/* optax: trigger = norm < max_norm; otherwise t / norm * max_norm. */
static double clip_scale(double norm, double max_norm)
{
  return norm < max_norm ? 1.0 : max_norm / norm;
}

double sgm_optim_clip_global_norm(float *g, size_t n, double max_norm)
{
  const double norm = sgm_optim_global_norm(g, n);
  if (!(norm < max_norm))
    for (size_t i = 0; i < n; i++) g[i] = (float)((double)g[i] / norm * max_norm);
  return norm;
}

void sgm_optim_ema_update(float *ema, const float *params, size_t n, double decay)
{
  for (size_t i = 0; i < n; i++) ema[i] = (float)(decay * ema[i] + (1.0 - decay) * params[i]);
}

PetscErrorCode sgm_optim_step(SgmOptim opt, float *params, const float *grads, double *gnorm)
{
  SgmOptimCoeffs c;
  PetscFunctionBeginUser;
  c.t = opt->step + 1;
  c.lr = sgm_optim_schedule_value(&opt->s.schedule, opt->step);
  c.beta1 = opt->s.beta1;
  c.beta2 = opt->s.beta2;
  c.eps = opt->s.eps;
  c.weight_decay = opt->s.weight_decay;
  c.gscale = 1.0;
  if (opt->s.clip_norm > 0 || gnorm) {
    const double norm = sgm_optim_global_norm(grads, opt->n);
    if (gnorm) *gnorm = norm;
    if (opt->s.clip_norm > 0) c.gscale = clip_scale(norm, opt->s.clip_norm);
  }
  if (opt->ema && opt->step == 0) PetscCall(PetscArraycpy(opt->ema, params, opt->n));
  opt->kind->update(params, grads, opt->m, opt->v, opt->n, &c);
  if (opt->ema) sgm_optim_ema_update(opt->ema, params, opt->n, opt->s.ema_decay);
  opt->step = c.t;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_get_moments(SgmOptim opt, float **m, float **v, float **ema)
{
  PetscFunctionBeginUser;
  if (m) *m = opt->m;
  if (v) *v = opt->v;
  if (ema) *ema = opt->ema;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_get_step(SgmOptim opt, int64_t *step)
{
  PetscFunctionBeginUser;
  *step = opt->step;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_set_step(SgmOptim opt, int64_t step)
{
  PetscFunctionBeginUser;
  PetscCheck(step >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "negative step %" PRId64, step);
  opt->step = step;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_get_size(SgmOptim opt, size_t *n)
{
  PetscFunctionBeginUser;
  *n = opt->n;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_get_name(SgmOptim opt, const char **name)
{
  PetscFunctionBeginUser;
  *name = opt->kind->name;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_get_settings(SgmOptim opt, SgmOptimSettings *s)
{
  PetscFunctionBeginUser;
  *s = opt->s;
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_optim_get_lr(SgmOptim opt, double *lr)
{
  PetscFunctionBeginUser;
  *lr = sgm_optim_schedule_value(&opt->s.schedule, opt->step);
  PetscFunctionReturn(0);
}
