/* Optimisers, schedules, clipping, EMA and model.h5 (src/nn/optim.c, schedule.c, nn_io.c).
 *
 * Every optimiser is checked against an independent double-precision implementation written here
 * from the published update equations (Kingma & Ba 2015 Alg. 1; Loshchilov & Hutter 2019 Alg. 2;
 * Liu et al. 2020 Alg. 2 with optax's threshold and eps placement), on a quadratic (the gradients
 * are those of the float parameters, fed to both); and against PyTorch 1.13 trajectories stored in
 * tests/data/torch_optim_ref.h5 (tests/torch_ref/make_optim_ref.py). Schedules are checked
 * against values worked out by hand from optax's formulas.
 */
#include "testutil.h"
#include "sgm/nn_io.h"
#include "sgm/nn_optim.h"
#include "sgm/core.h"
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

/* ---- independent double-precision references -------------------------------------------- */

typedef struct {
  int kind; /* 0 adam, 1 adamw, 2 radam (optax), 3 radam (torch) */
  double lr, b1, b2, eps, wd, clip;
} RefOpt;

/* One step of the reference on double arrays (p, m, v of length n), gradient g (copied). */
static void ref_step(const RefOpt *o, int t, int n, double *p, double *m, double *v,
                     const double *g_in)
{
  double *g = malloc(sizeof(double) * (size_t)n), norm = 0;
  for (int i = 0; i < n; i++) norm += g_in[i] * g_in[i];
  norm = sqrt(norm);
  for (int i = 0; i < n; i++) {
    g[i] = g_in[i];
    if (o->clip > 0 && norm >= o->clip) g[i] = g_in[i] / norm * o->clip; /* optax */
    if (o->kind != 1) g[i] += o->wd * p[i];                              /* torch L2 */
  }
  const double rho_inf = 2 / (1 - o->b2) - 1;
  const double rho = rho_inf - 2 * t * pow(o->b2, t) / (1 - pow(o->b2, t));
  for (int i = 0; i < n; i++) {
    m[i] = o->b1 * m[i] + (1 - o->b1) * g[i];
    v[i] = o->b2 * v[i] + (1 - o->b2) * g[i] * g[i];
    const double mhat = m[i] / (1 - pow(o->b1, t));
    const double vhat = v[i] / (1 - pow(o->b2, t));
    if (o->kind == 0) {
      p[i] -= o->lr * mhat / (sqrt(vhat) + o->eps);
    } else if (o->kind == 1) {
      p[i] = p[i] - o->lr * o->wd * p[i] - o->lr * mhat / (sqrt(vhat) + o->eps);
    } else {
      const int rectify = o->kind == 2 ? rho >= 5 : rho > 5;
      if (rectify) {
        const double r =
            sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho));
        const double denom =
            o->kind == 2 ? sqrt(vhat) + o->eps : (sqrt(v[i]) + o->eps) / sqrt(1 - pow(o->b2, t));
        p[i] -= o->lr * r * mhat / denom;
      } else {
        p[i] -= o->lr * mhat;
      }
    }
  }
  free(g);
}

/* Quadratic f = sum_i a_i (p_i - c_i)^2 / 2 with curvatures over 4 decades. */
#define NQ 16
static double qa(int i)
{
  return pow(10.0, -2.0 + 4.0 * i / (NQ - 1));
}
static double qc(int i)
{
  return sin(1.0 + i);
}
static double qp0(int i)
{
  return cos(0.5 + 2.0 * i);
}

static void run_quadratic(const char *name, const RefOpt *o, int nsteps)
{
  SgmOptimSettings s;
  SgmOptim opt;
  float p[NQ], g[NQ];
  double pr[NQ], mr[NQ] = {0}, vr[NQ] = {0}, gr[NQ], maxmove = 0, maxerr = 0;
  sgm_optim_settings_default(&s);
  s.beta1 = o->b1;
  s.beta2 = o->b2;
  s.eps = o->eps;
  s.weight_decay = o->wd;
  s.clip_norm = o->clip;
  s.schedule = sgm_optim_schedule_constant(o->lr);
  ck_assert_int_eq(sgm_optim_create(name, NQ, &s, &opt), 0);
  for (int i = 0; i < NQ; i++) pr[i] = p[i] = (float)qp0(i);
  for (int i = 0; i < NQ; i++) pr[i] = p[i]; /* same start, exactly */
  for (int t = 1; t <= nsteps; t++) {
    for (int i = 0; i < NQ; i++) {
      g[i] = (float)(qa(i) * ((double)p[i] - qc(i)));
      gr[i] = g[i]; /* same gradient sequence: differences are the optimiser's own rounding */
    }
    ck_assert_int_eq(sgm_optim_step(opt, p, g, NULL), 0);
    ref_step(o, t, NQ, pr, mr, vr, gr);
    for (int i = 0; i < NQ; i++) {
      const double err = fabs(p[i] - pr[i]);
      /* float state vs double state: rounding of p, m, v (~6e-8 relative) per step, summed
         over <= 40 steps: 2e-6 (1 + |p|). */
      ck_assert_msg(err <= 2e-6 * (1 + fabs(pr[i])), "%s step %d p[%d]: %.9g vs reference %.9g",
                    name, t, i, p[i], pr[i]);
      if (err > maxerr) maxerr = err;
      if (fabs(pr[i] - qp0(i)) > maxmove) maxmove = fabs(pr[i] - qp0(i));
    }
  }
  /* The check means something only if the parameters moved far beyond the tolerance. */
  ck_assert_msg(maxmove > 1e3 * 2e-6, "%s: parameters barely moved (%g)", name, maxmove);
  float *m, *v;
  ck_assert_int_eq(sgm_optim_get_moments(opt, &m, &v, NULL), 0);
  for (int i = 0; i < NQ; i++) {
    /* m sums gradients of both signs, so its error scales with the RMS gradient sqrt(vhat), not
       with |m|; v sums positive terms. */
    ck_assert_msg(fabs(m[i] - mr[i]) <= 1e-5 * sqrt(vr[i] / (1 - pow(o->b2, nsteps))),
                  "%s m[%d]: %.9g vs reference %.9g", name, i, m[i], mr[i]);
    ck_assert_msg(fabs(v[i] - vr[i]) <= 1e-5 * vr[i], "%s v[%d]: %.9g vs reference %.9g", name, i,
                  v[i], vr[i]);
  }
  ck_assert_int_eq(sgm_optim_destroy(&opt), 0);
  ck_assert_ptr_null(opt);
}

START_TEST(test_adam_quadratic)
{
  RefOpt o = {0, 1e-2, 0.9, 0.999, 1e-8, 0, 0};
  run_quadratic("adam", &o, 40);
  RefOpt o2 = {0, 3e-2, 0.8, 0.99, 1e-6, 0.05, 0};
  run_quadratic("adam", &o2, 40);
}
END_TEST

START_TEST(test_adamw_quadratic)
{
  RefOpt o = {1, 1e-2, 0.9, 0.999, 1e-8, 0.1, 0};
  run_quadratic("adamw", &o, 40);
}
END_TEST

START_TEST(test_radam_quadratic)
{
  /* 40 steps cover the unrectified start (t <= 5) and the rectified phase. */
  RefOpt o = {2, 1e-2, 0.9, 0.999, 1e-8, 0, 0};
  run_quadratic("radam", &o, 40);
  RefOpt o2 = {3, 1e-2, 0.9, 0.999, 1e-8, 0.01, 0};
  run_quadratic("radam_torch", &o2, 40);
  /* eps large enough that the placements differ by much more than the tolerance */
  RefOpt o3 = {2, 1e-2, 0.9, 0.999, 1e-1, 0, 0};
  run_quadratic("radam", &o3, 40);
  RefOpt o4 = {3, 1e-2, 0.9, 0.999, 1e-1, 0, 0};
  run_quadratic("radam_torch", &o4, 40);
}
END_TEST

START_TEST(test_clipped_adam_quadratic)
{
  /* The gradient norm of the quadratic starts near 100: clipping at 1 is active. */
  RefOpt o = {0, 1e-2, 0.9, 0.999, 1e-8, 0, 1.0};
  run_quadratic("adam", &o, 40);
  RefOpt o2 = {1, 1e-2, 0.9, 0.999, 1e-8, 0.1, 0.5};
  run_quadratic("adamw", &o2, 40);
}
END_TEST

START_TEST(test_registry)
{
  SgmOptimSettings s;
  SgmOptim opt = NULL;
  const SgmOptimKind *k;
  sgm_optim_settings_default(&s);
  ck_assert_int_eq(sgm_optim_find("adamw", &k), 0);
  ck_assert_ptr_nonnull(k);
  ck_assert_str_eq(k->name, "adamw");
  ck_assert_int_eq(sgm_optim_find("sgd_nope", &k), 0);
  ck_assert_ptr_null(k);
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_eq(sgm_optim_create("sgd_nope", 4, &s, &opt), SGM_ERR_USER);
  s.beta2 = 1.0;
  ck_assert_int_eq(sgm_optim_create("adam", 4, &s, &opt), SGM_ERR_USER);
  PetscPopErrorHandler();
  ck_assert_ptr_null(opt);
}
END_TEST

/* ---- schedules --------------------------------------------------------------------------- */

START_TEST(test_schedules)
{
  /* optax.cosine_decay_schedule(1.0, 100, alpha=0.1):
     v(c) = (1 - 0.1) * 0.5 (1 + cos(pi min(c,100)/100)) + 0.1 */
  SgmSchedule c = sgm_optim_schedule_cosine(1.0, 100, 0.1);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&c, 0), 1.0, 1e-15);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&c, 25), 0.9 * 0.853553390593273762 + 0.1,
                          1e-15);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&c, 50), 0.55, 1e-15);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&c, 100), 0.1, 1e-15);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&c, 5000), 0.1, 1e-15);

  /* optax.warmup_cosine_decay_schedule(0, 1e-3, warmup_steps=10, decay_steps=110, 1e-5):
     linear 0 -> 1e-3 over counts 0..10, then cosine over 100 counts to 1e-5
     (alpha = 1e-5/1e-3 = 0.01). */
  SgmSchedule w = sgm_optim_schedule_warmup_cosine(0.0, 1e-3, 10, 110, 1e-5);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 0), 0.0, 1e-18);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 1), 1e-4, 1e-18);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 5), 5e-4, 1e-18);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 9), 9e-4, 1e-18);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 10), 1e-3, 1e-18);
  /* count 60: cosine count 50 of 100 -> 1e-3 * (0.99 * 0.5 + 0.01) = 5.05e-4 */
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 60), 5.05e-4, 1e-18);
  /* count 35: cosine count 25 -> 1e-3 * (0.99 * 0.8535533905932737 + 0.01) */
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 35),
                          1e-3 * (0.99 * 0.853553390593273762 + 0.01), 1e-18);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 110), 1e-5, 1e-18);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w, 100000), 1e-5, 1e-18);
  /* nonzero init_value: linear from 1e-4 to 1e-3 */
  SgmSchedule w2 = sgm_optim_schedule_warmup_cosine(1e-4, 1e-3, 4, 8, 0.0);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w2, 1), 1e-4 + 0.25 * 9e-4, 1e-18);
  /* count 6: cosine count 2 of 4 -> 1e-3 * 0.5 (1 + cos(pi/2)) = 5e-4 */
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w2, 6), 5e-4, 1e-18);
  /* warmup_steps = 0: pure cosine */
  SgmSchedule w0 = sgm_optim_schedule_warmup_cosine(0.0, 2.0, 0, 4, 0.0);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w0, 0), 2.0, 1e-15);
  ck_assert_double_eq_tol(sgm_optim_schedule_value(&w0, 1), 1.0 + cos(PI / 4), 1e-15);

  SgmSchedule k = sgm_optim_schedule_constant(3e-4);
  ck_assert_double_eq(sgm_optim_schedule_value(&k, 123456), 3e-4);

  SgmScheduleKind kind;
  ck_assert_int_eq(sgm_optim_schedule_kind_from_name("warmup_cosine", &kind), 0);
  ck_assert_int_eq(kind, SGM_SCHEDULE_WARMUP_COSINE);
  ck_assert_str_eq(sgm_optim_schedule_name(SGM_SCHEDULE_COSINE), "cosine");
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_eq(sgm_optim_schedule_kind_from_name("linear_nope", &kind), SGM_ERR_USER);
  SgmSchedule bad = sgm_optim_schedule_warmup_cosine(0.0, 1e-3, 10, 10, 0.0);
  ck_assert_int_eq(sgm_optim_schedule_check(&bad), SGM_ERR_USER);
  bad = sgm_optim_schedule_cosine(1.0, 0, 0.0);
  ck_assert_int_eq(sgm_optim_schedule_check(&bad), SGM_ERR_USER);
  PetscPopErrorHandler();
}
END_TEST

/* The rate of update t is schedule(t - 1) (optax): with a warmup from 0, update 1 moves nothing,
   and update 2 uses schedule(1). */
START_TEST(test_schedule_in_optimizer)
{
  SgmOptimSettings s;
  SgmOptim opt;
  float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, -0.25f};
  double lr;
  sgm_optim_settings_default(&s);
  s.schedule = sgm_optim_schedule_warmup_cosine(0.0, 1e-2, 10, 100, 0.0);
  ck_assert_int_eq(sgm_optim_create("adam", 2, &s, &opt), 0);
  ck_assert_int_eq(sgm_optim_get_lr(opt, &lr), 0);
  ck_assert_double_eq(lr, 0.0);
  ck_assert_int_eq(sgm_optim_step(opt, p, g, NULL), 0);
  ck_assert_float_eq(p[0], 1.0f);
  ck_assert_float_eq(p[1], -2.0f);
  ck_assert_int_eq(sgm_optim_get_lr(opt, &lr), 0);
  ck_assert_double_eq_tol(lr, 1e-3, 1e-18);
  /* update 2 with constant g: mhat/(sqrt(vhat)+eps) = sign(g) (to 1e-7): step of lr = 1e-3 */
  ck_assert_int_eq(sgm_optim_step(opt, p, g, NULL), 0);
  ck_assert_float_eq_tol(p[0], 1.0f - 1e-3f, 1e-6f);
  ck_assert_float_eq_tol(p[1], -2.0f + 1e-3f, 1e-6f);
  ck_assert_int_eq(sgm_optim_destroy(&opt), 0);
}
END_TEST

/* ---- clipping and EMA -------------------------------------------------------------------- */

START_TEST(test_clip)
{
  float g[2] = {3.0f, 4.0f};
  ck_assert_double_eq(sgm_optim_clip_global_norm(g, 2, 10.0), 5.0);
  ck_assert_float_eq(g[0], 3.0f);
  ck_assert_float_eq(g[1], 4.0f);
  ck_assert_double_eq(sgm_optim_clip_global_norm(g, 2, 1.0), 5.0);
  ck_assert_float_eq_tol(g[0], 0.6f, 1e-7f);
  ck_assert_float_eq_tol(g[1], 0.8f, 1e-7f);
  /* optax clips when norm >= max_norm: at equality the result is g / norm * max_norm == g */
  float h[2] = {3.0f, 4.0f};
  ck_assert_double_eq(sgm_optim_clip_global_norm(h, 2, 5.0), 5.0);
  ck_assert_float_eq_tol(h[0], 3.0f, 1e-7f);

  /* The norm is accumulated in double: 4M equal entries give sqrt(n) * x to 1e-9 relative
     (n u / 2 = 2e-10 bounds the summation error), where a float accumulator stagnates and is off
     by percents. */
  const size_t n = (size_t)4 << 20;
  float *big = malloc(n * sizeof(float));
  const float x = 0.1f;
  for (size_t i = 0; i < n; i++) big[i] = x;
  const double want = sqrt((double)n) * (double)x;
  ck_assert_double_eq_tol(sgm_optim_global_norm(big, n), want, 1e-9 * want);
  free(big);
}
END_TEST

START_TEST(test_ema)
{
  SgmOptimSettings s;
  SgmOptim opt;
  float p[NQ], g[NQ], *ema;
  double er[NQ];
  const double d = 0.9;
  sgm_optim_settings_default(&s);
  s.ema_decay = d;
  s.schedule = sgm_optim_schedule_constant(1e-2);
  ck_assert_int_eq(sgm_optim_create("adamw", NQ, &s, &opt), 0);
  for (int i = 0; i < NQ; i++) er[i] = p[i] = (float)qp0(i); /* EMA starts at the weights */
  for (int t = 1; t <= 30; t++) {
    for (int i = 0; i < NQ; i++) g[i] = (float)(qa(i) * ((double)p[i] - qc(i)));
    ck_assert_int_eq(sgm_optim_step(opt, p, g, NULL), 0);
    for (int i = 0; i < NQ; i++) er[i] = d * er[i] + (1 - d) * p[i];
  }
  ck_assert_int_eq(sgm_optim_get_moments(opt, NULL, NULL, &ema), 0);
  ck_assert_ptr_nonnull(ema);
  for (int i = 0; i < NQ; i++) {
    ck_assert_msg(fabs(ema[i] - er[i]) <= 1e-6 * (1 + fabs(er[i])), "ema[%d]", i);
    ck_assert_msg(fabs(ema[i] - p[i]) > 1e-4, "ema[%d] equals the weights: no averaging", i);
  }
  ck_assert_int_eq(sgm_optim_destroy(&opt), 0);
}
END_TEST

/* ---- PyTorch reference trajectories ------------------------------------------------------ */

static void read_ds(hid_t f, const char *name, float *buf)
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  ck_assert_msg(d >= 0, "dataset %s missing in torch_optim_ref.h5", name);
  ck_assert_int_ge(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
  H5Dclose(d);
}

static double read_attr_d(hid_t f, const char *obj, const char *name)
{
  double v = NAN;
  hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
  ck_assert_int_ge(a, 0);
  ck_assert_int_ge(H5Aread(a, H5T_NATIVE_DOUBLE, &v), 0);
  H5Aclose(a);
  return v;
}

#define TSTEPS 12
#define TN     24

/* Replays the stored gradients through our optimiser `kind`; returns the largest parameter
   difference to torch over all steps, relative to 1 + |p|. Moments are checked when check_mv. */
static double replay_torch(hid_t f, const char *casename, const char *kind, int check_mv)
{
  float p0[TN], grads[TSTEPS * TN], tp[TSTEPS * TN], tm[TSTEPS * TN], tv[TSTEPS * TN];
  float p[TN], g[TN], *m, *v;
  char path[128];
  SgmOptimSettings s;
  SgmOptim opt;
  double worst = 0;
  read_ds(f, "p0", p0);
  read_ds(f, "grads", grads);
  snprintf(path, sizeof path, "%s/params", casename);
  read_ds(f, path, tp);
  snprintf(path, sizeof path, "%s/exp_avg", casename);
  read_ds(f, path, tm);
  snprintf(path, sizeof path, "%s/exp_avg_sq", casename);
  read_ds(f, path, tv);
  sgm_optim_settings_default(&s);
  s.beta1 = read_attr_d(f, casename, "beta1");
  s.beta2 = read_attr_d(f, casename, "beta2");
  s.eps = read_attr_d(f, casename, "eps");
  s.weight_decay = read_attr_d(f, casename, "weight_decay");
  s.schedule = sgm_optim_schedule_constant(read_attr_d(f, casename, "lr"));
  const float gs = (float)read_attr_d(f, casename, "grad_scale");
  ck_assert_int_eq(sgm_optim_create(kind, TN, &s, &opt), 0);
  ck_assert_int_eq(sgm_optim_get_moments(opt, &m, &v, NULL), 0);
  memcpy(p, p0, sizeof p);
  for (int k = 0; k < TSTEPS; k++) {
    for (int i = 0; i < TN; i++) g[i] = grads[k * TN + i] * gs; /* float product, as numpy */
    ck_assert_int_eq(sgm_optim_step(opt, p, g, NULL), 0);
    for (int i = 0; i < TN; i++) {
      const double pt = tp[k * TN + i];
      const double e = fabs(p[i] - pt) / (1 + fabs(pt));
      if (e > worst) worst = e;
      if (check_mv) {
        /* torch rounds every float32 op, we round once: a few ulps (1e-6 relative) apart */
        const double mt = tm[k * TN + i], vt = tv[k * TN + i];
        /* m sums gradients of both signs: its rounding error scales with the RMS gradient
           sqrt(vhat), not with |m| */
        ck_assert_msg(fabs(m[i] - mt) <= 2e-6 * sqrt(vt / (1 - pow(s.beta2, k + 1))),
                      "%s step %d m[%d]: %.9g vs %.9g", casename, k + 1, i, m[i], mt);
        ck_assert_msg(fabs(v[i] - vt) <= 2e-6 * vt, "%s step %d v[%d]: %.9g vs %.9g", casename,
                      k + 1, i, v[i], vt);
      }
    }
  }
  /* make sure the comparison is not vacuous: the parameters moved */
  double moved = 0;
  for (int i = 0; i < TN; i++) moved = fmax(moved, fabs(p[i] - p0[i]));
  ck_assert_msg(moved > 1e-4, "%s: parameters moved only %g", casename, moved);
  ck_assert_int_eq(sgm_optim_destroy(&opt), 0);
  return worst;
}

START_TEST(test_torch_reference)
{
  char path[1024];
  snprintf(path, sizeof path, "%s/torch_optim_ref.h5", SGM_TEST_DATA);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open %s", path);
  /* Tolerance on parameters: 1e-6 (1 + |p|) per element over 12 steps. Each step of torch rounds
     the update several times in float32 (|update| <= lr = 1e-2, so ~1e-9) and both round p to
     float (6e-8 relative); 1e-6 leaves room for a few such roundings to accumulate. */
  const double tol = 1e-6;
  const struct {
    const char *casename, *kind;
  } cases[] = {
      {"adam", "adam"},         {"adam_l2", "adam"},         {"adamw", "adamw"},
      {"radam", "radam_torch"}, {"radam_l2", "radam_torch"}, {"radam_big_eps", "radam_torch"},
      {"radam", "radam"},       {"radam_l2", "radam"}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const double worst = replay_torch(f, cases[c].casename, cases[c].kind, 1);
    ck_assert_msg(worst <= tol, "%s with our %s: max |dp|/(1+|p|) = %.3g > %.1g", cases[c].casename,
                  cases[c].kind, worst, tol);
  }
  /* optax's eps placement differs from torch's: with eps = 1e-3 and gradients ~1e-3 the two
     RAdams part by far more than the tolerance (the documented semantic difference). */
  const double worst = replay_torch(f, "radam_big_eps", "radam", 1);
  ck_assert_msg(worst > 100 * tol, "optax-RAdam unexpectedly equals torch-RAdam (%.3g)", worst);
  H5Fclose(f);
}
END_TEST

/* ---- model.h5 ---------------------------------------------------------------------------- */

typedef struct {
  SgmParams p;
  SgmTensorView views[4];
} TinyModel;

/* A model with 4 views; `hidden` changes the shapes (to build a mismatching one). */
static void tiny_model(TinyModel *t, int hidden, unsigned seed)
{
  const struct {
    const char *name;
    int ndim, s0, s1;
  } spec[4] = {{"emb.0.weight", 2, hidden, 2},
               {"emb.0.bias", 1, hidden, 0},
               {"blocks.0.attn.qkv.weight", 2, 3 * hidden, hidden},
               {"dec.2.bias", 1, 2, 0}};
  size_t off = 0;
  memset(t, 0, sizeof *t);
  for (int k = 0; k < 4; k++) {
    SgmTensorView *v = &t->views[k];
    snprintf(v->name, sizeof v->name, "%s", spec[k].name);
    v->ndim = spec[k].ndim;
    v->shape[0] = spec[k].s0;
    v->shape[1] = spec[k].s1;
    v->size = (size_t)spec[k].s0 * (spec[k].ndim == 2 ? (size_t)spec[k].s1 : 1);
    v->offset = off;
    off += v->size;
  }
  t->p.nparams = off;
  t->p.ntensors = 4;
  t->p.tensors = t->views;
  t->p.params = calloc(off, sizeof(float));
  t->p.grads = calloc(off, sizeof(float));
  srand(seed);
  for (size_t i = 0; i < off; i++) t->p.params[i] = (float)rand() / RAND_MAX - 0.5f;
}

static void tiny_free(TinyModel *t)
{
  free(t->p.params);
  free(t->p.grads);
}

static void fake_grads(TinyModel *t, int step)
{
  for (size_t i = 0; i < t->p.nparams; i++)
    t->p.grads[i] = (float)sin(0.1 * (double)i + step) + 0.1f * t->p.params[i];
}

START_TEST(test_save_load_roundtrip)
{
  MPI_Comm comm = sgm_test_comm();
  char path[1024];
  TinyModel a, b;
  SgmOptimSettings s;
  SgmOptim oa, ob;
  int64_t step;
  float *ma, *va, *ea, *mb, *vb, *eb;
  const SgmNNAttr arch[] = {SGM_NN_ATTR_S("model", "tiny"), SGM_NN_ATTR_I("hidden", 8),
                            SGM_NN_ATTR_R("sigma", 0.01)};
  const SgmNNAttr hyper[] = {SGM_NN_ATTR_R("lr", 1e-3), SGM_NN_ATTR_I("batch", 256),
                             SGM_NN_ATTR_S("loss", "dsm")};
  snprintf(path, sizeof path, "%s/model.h5", sgm_test_tmpdir("nn_io"));
  tiny_model(&a, 8, 1);
  tiny_model(&b, 8, 2);
  sgm_optim_settings_default(&s);
  s.weight_decay = 0.01;
  s.ema_decay = 0.99;
  s.clip_norm = 1.0;
  s.schedule = sgm_optim_schedule_warmup_cosine(0, 1e-2, 2, 20, 1e-4);
  ck_assert_int_eq(sgm_optim_create("adamw", a.p.nparams, &s, &oa), 0);
  ck_assert_int_eq(sgm_optim_create("adamw", b.p.nparams, &s, &ob), 0);
  for (int t = 0; t < 5; t++) {
    fake_grads(&a, t);
    ck_assert_int_eq(sgm_optim_step(oa, a.p.params, a.p.grads, NULL), 0);
  }
  ck_assert_int_eq(sgm_nn_save(comm, path, &a.p, 3, arch, 3, hyper, oa), 0);
  /* arch attributes in another order are the same architecture */
  const SgmNNAttr arch2[] = {arch[2], arch[0], arch[1]};
  ck_assert_int_eq(sgm_nn_load(comm, path, &b.p, 3, arch2, ob), 0);
  ck_assert_int_eq(memcmp(a.p.params, b.p.params, a.p.nparams * sizeof(float)), 0);
  ck_assert_int_eq(sgm_optim_get_moments(oa, &ma, &va, &ea), 0);
  ck_assert_int_eq(sgm_optim_get_moments(ob, &mb, &vb, &eb), 0);
  ck_assert_int_eq(memcmp(ma, mb, a.p.nparams * sizeof(float)), 0);
  ck_assert_int_eq(memcmp(va, vb, a.p.nparams * sizeof(float)), 0);
  ck_assert_int_eq(memcmp(ea, eb, a.p.nparams * sizeof(float)), 0);
  ck_assert_int_eq(sgm_optim_get_step(ob, &step), 0);
  ck_assert_int_eq(step, 5);
  /* the restarted optimiser continues bit for bit */
  for (int t = 5; t < 8; t++) {
    fake_grads(&a, t);
    fake_grads(&b, t);
    ck_assert_int_eq(sgm_optim_step(oa, a.p.params, a.p.grads, NULL), 0);
    ck_assert_int_eq(sgm_optim_step(ob, b.p.params, b.p.grads, NULL), 0);
  }
  ck_assert_int_eq(memcmp(a.p.params, b.p.params, a.p.nparams * sizeof(float)), 0);
  ck_assert_int_eq(memcmp(ea, eb, a.p.nparams * sizeof(float)), 0);

  /* EMA weights into a model */
  TinyModel c;
  tiny_model(&c, 8, 3);
  ck_assert_int_eq(sgm_nn_save(comm, path, &a.p, 3, arch, 0, NULL, oa), 0);
  ck_assert_int_eq(sgm_nn_load_ema(comm, path, &c.p, 3, arch), 0);
  ck_assert_int_eq(memcmp(c.p.params, ea, a.p.nparams * sizeof(float)), 0);
  /* saved before the first step: the EMA weights are the weights (not the zeroed average) */
  {
    SgmOptim o0;
    TinyModel d;
    tiny_model(&d, 8, 4);
    ck_assert_int_eq(sgm_optim_create("adamw", a.p.nparams, &s, &o0), 0);
    ck_assert_int_eq(sgm_nn_save(comm, path, &a.p, 3, arch, 0, NULL, o0), 0);
    ck_assert_int_eq(sgm_nn_load_ema(comm, path, &d.p, 3, arch), 0);
    ck_assert_int_eq(memcmp(d.p.params, a.p.params, a.p.nparams * sizeof(float)), 0);
    ck_assert_int_eq(sgm_optim_destroy(&o0), 0);
    tiny_free(&d);
  }
  /* weights only, no optimiser in the file: loading without optimiser works */
  ck_assert_int_eq(sgm_nn_save(comm, path, &a.p, 3, arch, 0, NULL, NULL), 0);
  ck_assert_int_eq(sgm_nn_load(comm, path, &c.p, 3, arch, NULL), 0);
  ck_assert_int_eq(memcmp(c.p.params, a.p.params, a.p.nparams * sizeof(float)), 0);
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_eq(sgm_nn_load(comm, path, &c.p, 3, arch, ob), SGM_ERR_USER);
  PetscPopErrorHandler();
  tiny_free(&c);

  ck_assert_int_eq(sgm_optim_destroy(&oa), 0);
  ck_assert_int_eq(sgm_optim_destroy(&ob), 0);
  tiny_free(&a);
  tiny_free(&b);
}
END_TEST

START_TEST(test_load_mismatch)
{
  MPI_Comm comm = sgm_test_comm();
  char path[1024];
  TinyModel a, wide, same;
  const SgmNNAttr arch[] = {SGM_NN_ATTR_S("model", "tiny"), SGM_NN_ATTR_I("hidden", 8)};
  snprintf(path, sizeof path, "%s/model.h5", sgm_test_tmpdir("nn_io_bad"));
  tiny_model(&a, 8, 1);
  tiny_model(&wide, 16, 2);
  tiny_model(&same, 8, 3);
  float *before = malloc(same.p.nparams * sizeof(float));
  memcpy(before, same.p.params, same.p.nparams * sizeof(float));
  ck_assert_int_eq(sgm_nn_save(comm, path, &a.p, 2, arch, 0, NULL, NULL), 0);

  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  /* a different architecture value */
  const SgmNNAttr arch_wide[] = {SGM_NN_ATTR_S("model", "tiny"), SGM_NN_ATTR_I("hidden", 16)};
  ck_assert_int_eq(sgm_nn_load(comm, path, &same.p, 2, arch_wide, NULL), SGM_ERR_USER);
  /* a different type (float instead of integer) */
  const SgmNNAttr arch_type[] = {SGM_NN_ATTR_S("model", "tiny"), SGM_NN_ATTR_R("hidden", 8.0)};
  ck_assert_int_eq(sgm_nn_load(comm, path, &same.p, 2, arch_type, NULL), SGM_ERR_USER);
  /* a key the file lacks, and a file key the model lacks */
  const SgmNNAttr arch_more[] = {arch[0], arch[1], SGM_NN_ATTR_I("layers", 2)};
  ck_assert_int_eq(sgm_nn_load(comm, path, &same.p, 3, arch_more, NULL), SGM_ERR_USER);
  ck_assert_int_eq(sgm_nn_load(comm, path, &same.p, 1, arch, NULL), SGM_ERR_USER);
  /* same attributes but tensors of other shapes */
  ck_assert_int_eq(sgm_nn_load(comm, path, &wide.p, 2, arch, NULL), SGM_ERR_USER);
  /* a renamed tensor */
  snprintf(same.views[3].name, SGM_NN_NAME_LEN, "dec.3.bias");
  ck_assert_int_eq(sgm_nn_load(comm, path, &same.p, 2, arch, NULL), SGM_ERR_USER);
  snprintf(same.views[3].name, SGM_NN_NAME_LEN, "dec.2.bias");
  /* a missing file and a file that is not HDF5 */
  char bad[1100];
  snprintf(bad, sizeof bad, "%s.nope", path);
  ck_assert_int_eq(sgm_nn_load(comm, bad, &same.p, 2, arch, NULL), SGM_ERR_USER);
  PetscPopErrorHandler();
  /* refused loads leave the model untouched */
  ck_assert_int_eq(memcmp(before, same.p.params, same.p.nparams * sizeof(float)), 0);
  /* and the matching load still works */
  ck_assert_int_eq(sgm_nn_load(comm, path, &same.p, 2, arch, NULL), 0);
  ck_assert_int_eq(memcmp(a.p.params, same.p.params, a.p.nparams * sizeof(float)), 0);
  free(before);
  tiny_free(&a);
  tiny_free(&wide);
  tiny_free(&same);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("nn_optim");
  TCase *tc = tcase_create("optim");
  tcase_add_test(tc, test_adam_quadratic);
  tcase_add_test(tc, test_adamw_quadratic);
  tcase_add_test(tc, test_radam_quadratic);
  tcase_add_test(tc, test_clipped_adam_quadratic);
  tcase_add_test(tc, test_registry);
  tcase_add_test(tc, test_schedules);
  tcase_add_test(tc, test_schedule_in_optimizer);
  tcase_add_test(tc, test_clip);
  tcase_add_test(tc, test_ema);
  tcase_add_test(tc, test_torch_reference);
  tcase_add_test(tc, test_save_load_roundtrip);
  tcase_add_test(tc, test_load_mismatch);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
