/* Learning-rate schedules: constant, cosine decay and linear warmup + cosine decay, with optax's
 * formulas (optax.cosine_decay_schedule, optax.warmup_cosine_decay_schedule).
 *
 * Owns: the schedule values and their validation. Trade-offs: a schedule is a pure function of the
 * update count, so it has no state beyond the optimiser's step (a restart restores the step and
 * gets the same rates); values are evaluated in double (optax evaluates in float32, so the two
 * agree to about 1e-7 relative). warmup_cosine follows optax exactly: decay_steps counts the
 * warmup, the cosine part lasts decay_steps - warmup_steps, and its alpha is end_value/peak_value.
 */
#include "sgm/nn_optim.h"
#include "sgm/core.h"
#include <inttypes.h>
#include <math.h>
#include <string.h>

#define SGM_PI 3.14159265358979323846

static const char *const schedule_names[] = {
#define SGM_X(e, s) s,
    SGM_SCHEDULE_LIST(SGM_X)
#undef SGM_X
};

const char *sgm_optim_schedule_name(SgmScheduleKind kind)
{
  return (kind >= 0 && kind < SGM_SCHEDULE_NKINDS) ? schedule_names[kind] : "unknown";
}

PetscErrorCode sgm_optim_schedule_kind_from_name(const char *name, SgmScheduleKind *kind)
{
  PetscFunctionBeginUser;
  for (int k = 0; k < SGM_SCHEDULE_NKINDS; k++) {
    if (!strcmp(schedule_names[k], name)) {
      *kind = (SgmScheduleKind)k;
      PetscFunctionReturn(0);
    }
  }
  SETERRQ(PETSC_COMM_SELF, SGM_ERR_USER,
          "unknown learning-rate schedule '%s' (known: constant, cosine, warmup_cosine)", name);
}

SgmSchedule sgm_optim_schedule_constant(double value)
{
  SgmSchedule s = {.kind = SGM_SCHEDULE_CONSTANT, .init_value = value, .exponent = 1.0};
  return s;
}

SgmSchedule sgm_optim_schedule_cosine(double init_value, int64_t decay_steps, double alpha)
{
  SgmSchedule s = {.kind = SGM_SCHEDULE_COSINE,
                   .init_value = init_value,
                   .decay_steps = decay_steps,
                   .alpha = alpha,
                   .exponent = 1.0};
  return s;
}

SgmSchedule sgm_optim_schedule_warmup_cosine(double init_value, double peak_value,
                                             int64_t warmup_steps, int64_t decay_steps,
                                             double end_value)
{
  SgmSchedule s = {.kind = SGM_SCHEDULE_WARMUP_COSINE,
                   .init_value = init_value,
                   .peak_value = peak_value,
                   .end_value = end_value,
                   .warmup_steps = warmup_steps,
                   .decay_steps = decay_steps,
                   .exponent = 1.0};
  return s;
}

/* optax.cosine_decay_schedule(init_value, decay_steps, alpha, exponent) at count. */
static double cosine_value(double init_value, int64_t decay_steps, double alpha, double exponent,
                           int64_t count)
{
  const double c = (double)(count < decay_steps ? count : decay_steps);
  const double cosine = 0.5 * (1.0 + cos(SGM_PI * c / (double)decay_steps));
  return init_value * ((1.0 - alpha) * pow(cosine, exponent) + alpha);
}

/* optax.linear_schedule(init_value, end_value, transition_steps) at count. */
static double linear_value(double init_value, double end_value, int64_t steps, int64_t count)
{
  if (steps <= 0) return init_value;
  const double c = (double)(count < 0 ? 0 : (count > steps ? steps : count));
  return (init_value - end_value) * (1.0 - c / (double)steps) + end_value;
}

double sgm_optim_schedule_value(const SgmSchedule *s, int64_t count)
{
  switch (s->kind) {
  case SGM_SCHEDULE_CONSTANT:
    return s->init_value;
  case SGM_SCHEDULE_COSINE:
    return cosine_value(s->init_value, s->decay_steps, s->alpha, s->exponent, count);
  case SGM_SCHEDULE_WARMUP_COSINE: {
    /* optax.join_schedules([linear, cosine], [warmup_steps]) */
    if (count < s->warmup_steps)
      return linear_value(s->init_value, s->peak_value, s->warmup_steps, count);
    const double alpha = s->peak_value == 0.0 ? 0.0 : s->end_value / s->peak_value;
    return cosine_value(s->peak_value, s->decay_steps - s->warmup_steps, alpha, s->exponent,
                        count - s->warmup_steps);
  }
  default:
    return NAN;
  }
}

PetscErrorCode sgm_optim_schedule_check(const SgmSchedule *s)
{
  PetscFunctionBeginUser;
  PetscCheck(s->kind >= 0 && s->kind < SGM_SCHEDULE_NKINDS, PETSC_COMM_SELF, SGM_ERR_USER,
             "unknown learning-rate schedule kind %d", (int)s->kind);
  PetscCheck(isfinite(s->init_value) && isfinite(s->peak_value) && isfinite(s->end_value) &&
                 isfinite(s->alpha) && isfinite(s->exponent),
             PETSC_COMM_SELF, SGM_ERR_USER, "learning-rate schedule '%s': non-finite value",
             sgm_optim_schedule_name(s->kind));
  if (s->kind == SGM_SCHEDULE_COSINE)
    PetscCheck(s->decay_steps > 0, PETSC_COMM_SELF, SGM_ERR_USER,
               "learning-rate schedule 'cosine': decay_steps = %" PRId64 " must be > 0",
               s->decay_steps);
  if (s->kind == SGM_SCHEDULE_WARMUP_COSINE) {
    PetscCheck(s->warmup_steps >= 0, PETSC_COMM_SELF, SGM_ERR_USER,
               "learning-rate schedule 'warmup_cosine': warmup_steps = %" PRId64 " must be >= 0",
               s->warmup_steps);
    PetscCheck(s->decay_steps > s->warmup_steps, PETSC_COMM_SELF, SGM_ERR_USER,
               "learning-rate schedule 'warmup_cosine': decay_steps = %" PRId64
               " must exceed warmup_steps = %" PRId64 " (decay_steps includes the warmup)",
               s->decay_steps, s->warmup_steps);
  }
  PetscFunctionReturn(0);
}
