/* Optimisers and learning-rate schedules over flat parameter slabs.
 *
 * Owns: the optimiser registry (name -> update kernel), the optimiser object (one slab of moments,
 * the step count, the settings), global-norm gradient clipping, an EMA of the weights, and the
 * learning-rate schedules (src/nn/schedule.c). Every optimiser is one loop over the `n` floats of
 * SgmParams.params / .grads (include/sgm/nn_params.h); state is float, arithmetic inside a step is
 * double. Nothing here communicates: in data-parallel training every rank calls sgm_optim_step
 * with identical (allreduced) gradients and so keeps identical parameters.
 *
 * Semantics follow optax and PyTorch exactly (docs/formats.md lists the equations):
 *   adam        torch.optim.Adam == optax.adam (eps outside the root); weight_decay is the coupled
 *               L2 term of torch (g += wd p), optax has none.
 *   adamw       torch.optim.AdamW == optax.adamw: p <- p (1 - lr wd) - lr mhat / (sqrt(vhat) +
 * eps). radam       optax.radam: rectified update when rho_t >= 5, eps added to sqrt(vhat).
 *   radam_torch torch.optim.RAdam (1.13): rectified when rho_t > 5, eps added to sqrt(v) before
 *               the bias correction (i.e. eps / sqrt(1 - b2^t) relative to optax). The two differ
 *               only through eps; with eps << sqrt(vhat) they agree to float rounding.
 * The learning rate of update t (t = 1, 2, ...) is schedule(t - 1), as optax's scale_by_schedule
 * evaluates its schedule at the count before incrementing it.
 */
#ifndef SGM_NN_OPTIM_H
#define SGM_NN_OPTIM_H

#include <petscsys.h>
#include <stddef.h>
#include <stdint.h>

#define SGM_SCHEDULE_LIST(X)                                                                       \
  X(CONSTANT, "constant")                                                                          \
  X(COSINE, "cosine")                                                                              \
  X(WARMUP_COSINE, "warmup_cosine")

typedef enum {
#define SGM_X(e, s) SGM_SCHEDULE_##e,
  SGM_SCHEDULE_LIST(SGM_X)
#undef SGM_X
      SGM_SCHEDULE_NKINDS
} SgmScheduleKind;

/// A learning-rate schedule: a pure function of the update count, so its whole state is the
/// optimiser's step count. Fields used per kind:
///   constant:      init_value
///   cosine:        init_value, decay_steps, alpha, exponent  (optax.cosine_decay_schedule)
///   warmup_cosine: init_value, peak_value, warmup_steps, decay_steps (INCLUDING the warmup),
///                  end_value, exponent (optax.warmup_cosine_decay_schedule)
typedef struct {
  SgmScheduleKind kind;
  double init_value, peak_value, end_value, alpha, exponent;
  int64_t warmup_steps, decay_steps;
} SgmSchedule;

/// Constant learning rate `value`.
SgmSchedule sgm_optim_schedule_constant(double value);
/// optax.cosine_decay_schedule(init_value, decay_steps, alpha, exponent=1).
SgmSchedule sgm_optim_schedule_cosine(double init_value, int64_t decay_steps, double alpha);
/// optax.warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
/// end_value, exponent=1): linear from init_value to peak_value over warmup_steps, then cosine
/// from peak_value to end_value over decay_steps - warmup_steps, then end_value.
SgmSchedule sgm_optim_schedule_warmup_cosine(double init_value, double peak_value,
                                             int64_t warmup_steps, int64_t decay_steps,
                                             double end_value);
/// Value of the schedule at `count` (0-based; the rate of update t is the value at t - 1).
/// Computed in double with optax's formulas. Pure.
double sgm_optim_schedule_value(const SgmSchedule *s, int64_t count);
/// Checks the fields (decay_steps > 0 for cosine, decay_steps > warmup_steps >= 0 for
/// warmup_cosine, finite values); SGM_ERR_USER with the offending field otherwise. Not collective.
PetscErrorCode sgm_optim_schedule_check(const SgmSchedule *s);
/// Name of a kind ("constant", "cosine", "warmup_cosine").
const char *sgm_optim_schedule_name(SgmScheduleKind kind);
/// Kind from its name; SGM_ERR_USER listing the known names when unknown. Not collective.
PetscErrorCode sgm_optim_schedule_kind_from_name(const char *name, SgmScheduleKind *kind);

/// Coefficients of one update, computed by sgm_optim_step and passed to the kernel.
typedef struct {
  int64_t t; /* 1-based number of this update */
  double lr; /* learning rate of this update: schedule(t - 1) */
  double beta1, beta2, eps, weight_decay;
  double gscale; /* factor on the gradients (global-norm clipping); 1 when not clipped */
} SgmOptimCoeffs;

/// An update kernel: one loop over n elements. params (n) updated in place; grads (n) read only;
/// m, v (n each) the optimiser's moments. Plain C, no allocation.
typedef void (*SgmOptimUpdateFn)(float *params, const float *grads, float *m, float *v, size_t n,
                                 const SgmOptimCoeffs *c);

/// A registered optimiser kind.
typedef struct {
  const char *name; /* "adam", ... */
  const char *doc;  /* one line */
  SgmOptimUpdateFn update;
} SgmOptimKind;

/// Registers a kind (the built-ins adam, adamw, radam, radam_torch are always present). The
/// struct must outlive the program (static storage). A second kind of the same name is an error.
/// Not collective.
PetscErrorCode sgm_optim_register(const SgmOptimKind *kind);
/// Finds a kind by name; *kind = NULL when unknown. Not collective.
PetscErrorCode sgm_optim_find(const char *name, const SgmOptimKind **kind);

/// Settings of an optimiser. sgm_optim_settings_default gives PyTorch's defaults: beta1 0.9,
/// beta2 0.999, eps 1e-8, weight_decay 0, no clipping, no EMA, constant rate 1e-3.
typedef struct {
  double beta1, beta2, eps, weight_decay;
  double clip_norm; /* > 0: optax.clip_by_global_norm(clip_norm) before the update */
  double ema_decay; /* in (0, 1): keep ema <- d ema + (1 - d) params after every update */
  SgmSchedule schedule;
} SgmOptimSettings;

/// Fills `s` with the defaults listed above.
void sgm_optim_settings_default(SgmOptimSettings *s);

typedef struct SgmOptim_ *SgmOptim;

/// Creates an optimiser of kind `name` for n parameters. The moments (m, v, and the EMA when
/// ema_decay > 0) live in one slab of 2n (3n) floats owned by the optimiser, zero-initialised;
/// the EMA is initialised from the parameters at the first step. Unknown names and invalid
/// settings are SGM_ERR_USER. Not collective.
PetscErrorCode sgm_optim_create(const char *name, size_t n, const SgmOptimSettings *s,
                                SgmOptim *opt);
/// Frees; accepts NULL and NULLs the handle. Not collective.
PetscErrorCode sgm_optim_destroy(SgmOptim *opt);

/// One update: t <- t + 1, lr <- schedule(t - 1), optional clipping of the gradients by their
/// global norm (accumulated in double; grads themselves are not modified), the kind's update of
/// params (n) and moments, then the EMA. *gnorm (may be NULL) receives the unclipped global norm
/// of grads (computed only when clipping or when gnorm != NULL). Not collective.
PetscErrorCode sgm_optim_step(SgmOptim opt, float *params, const float *grads, double *gnorm);

/// Accessors (not collective). The moment slab: m and v (n floats each), ema (n floats or NULL).
PetscErrorCode sgm_optim_get_moments(SgmOptim opt, float **m, float **v, float **ema);
PetscErrorCode sgm_optim_get_step(SgmOptim opt, int64_t *step);
/// Sets the step count (restart). The EMA counts as initialised when step > 0.
PetscErrorCode sgm_optim_set_step(SgmOptim opt, int64_t step);
PetscErrorCode sgm_optim_get_size(SgmOptim opt, size_t *n);
PetscErrorCode sgm_optim_get_name(SgmOptim opt, const char **name);
PetscErrorCode sgm_optim_get_settings(SgmOptim opt, SgmOptimSettings *s);
/// Learning rate the next update will use: schedule(step).
PetscErrorCode sgm_optim_get_lr(SgmOptim opt, double *lr);

/// Global L2 norm of g (n floats), accumulated in double. Pure.
double sgm_optim_global_norm(const float *g, size_t n);
/// optax.clip_by_global_norm in place: when norm >= max_norm, g <- g / norm * max_norm.
/// Returns the norm before clipping. Pure.
double sgm_optim_clip_global_norm(float *g, size_t n, double max_norm);
/// ema <- decay * ema + (1 - decay) * params over n floats, in double. Pure.
void sgm_optim_ema_update(float *ema, const float *params, size_t n, double decay);

#endif
