/* bench_nn: single-thread speed of the network building blocks, for comparison with the PyTorch
 * anchor (../shared/anchors/torch) in the same run (bench/nn/run.sh prints the ratios).
 *
 * Measures (a) cblas_sgemm at the local transformer's own shapes (the QKV projection, the
 * out-projection/FFN, the two backward GEMMs, and the 4096x256 @ 256x768 "probe" that bench.py
 * records next to every torch measurement), (b) one optimiser step (Adam, and AdamW with
 * clipping) over the model's parameter count, and (c) a forward pass of the local particle
 * transformer of model.py composed directly from the layers of include/sgm/nn.h (same widths,
 * same post-norm encoder, decoder on the centre token), with model.py's analytic FLOP count.
 * Trade-off: (c) builds the network here from layer calls rather than from a model API, so it
 * measures the layers and the sgemm calls, not a model's buffer management; it is replaced by the
 * model object once one exists. OpenBLAS is pinned to 1 thread (openblas_set_num_threads(1)).
 * Every result is one line "RESULT name key=value ..." (median and best over the repetitions).
 *
 * usage: bench_nn [--config big|small] [--batch B] [--reps R] [--only sgemm,optim,fwd,model]
 *                 [--chunk C]
 * --chunk: centres per divergence call (default 256; bench/epr/run.sh sets [model] max_batch).
 */
#include "sgm/nn.h"
#include "sgm/nn_optim.h"
#ifdef SGM_BENCH_HAVE_TRANSFORMER
#include "sgm/nn_models.h"
#endif
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  const char *name;
  int K, de, emb_hidden, n_layers, n_heads, ff_hidden, dec_hidden;
} Config;

static const Config BIG = {"big", 64, 256, 256, 4, 4, 256, 256};
static const Config SMALL = {"small", 16, 64, 64, 2, 2, 64, 64};

/* Wall clock; BENCH_NN_CPUTIME=1 in the environment switches to this thread's CPU time (A/B
 * comparisons of two builds on a host shared with other jobs: time spent descheduled is not
 * counted). */
static double now(void)
{
  static int cpu = -1;
  struct timespec t;
  if (cpu < 0) cpu = getenv("BENCH_NN_CPUTIME") && atoi(getenv("BENCH_NN_CPUTIME")) != 0;
  clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* " times=t1,t2,..." (seconds, in the order measured) for the driver's pooling over rounds. */
static void print_times(const double *t, int n)
{
  printf(" times=");
  for (int i = 0; i < n; i++) printf("%s%.6f", i ? "," : "", t[i]);
}

/* Median and minimum of the rep times (sorts t). */
static void stats(double *t, int n, double *med, double *best)
{
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  *med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  *best = t[0];
}

static float *randn_buf(size_t n, double scale, unsigned *seed)
{
  float *x = malloc(n * sizeof(float));
  if (!x) {
    fprintf(stderr, "bench_nn: out of memory (%zu floats)\n", n);
    exit(1);
  }
  for (size_t i = 0; i < n; i++) {
    *seed = *seed * 1664525u + 1013904223u;
    x[i] = (float)(scale * (((double)(*seed >> 8) / 16777216.0) * 2.0 - 1.0));
  }
  return x;
}

/* ---- (a) sgemm at the network's shapes ---------------------------------------------------- */

static void bench_sgemm(const char *name, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N,
                        int K, int reps)
{
  unsigned seed = 1;
  float *A = randn_buf((size_t)M * K, 1.0, &seed), *B = randn_buf((size_t)K * N, 1.0, &seed);
  float *C = calloc((size_t)M * N, sizeof(float));
  const int lda = ta == CblasNoTrans ? K : M, ldb = tb == CblasNoTrans ? N : K;
  double *t = malloc(sizeof(double) * (size_t)reps), med, best;
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
    t[r] = now() - t0;
  }
  printf("RESULT sgemm_%s", name);
  print_times(t, reps);
  stats(t, reps, &med, &best);
  const double fl = 2.0 * M * N * K;
  printf(" M=%d N=%d K=%d flops=%.0f median_s=%.6f best_s=%.6f gflops=%.2f gflops_best=%.2f\n", M,
         N, K, fl, med, best, fl / med / 1e9, fl / best / 1e9);
  fflush(stdout);
  free(A);
  free(B);
  free(C);
  free(t);
}

/* ---- (c) the local particle transformer forward, composed from nn.h layers ---------------- */

/* Time per layer kind inside the composed forward (summed over the timed repetitions; the
   timer calls add ~1 us per layer call). */
enum { PH_LINEAR, PH_ATTENTION, PH_GELU, PH_LAYERNORM, PH_OTHER, NPHASE };
static const char *const phase_names[NPHASE] = {"linear", "attention", "gelu", "layernorm",
                                                "other"};
static double phase_time[NPHASE];
#define TIMED(ph, call)                                                                            \
  do {                                                                                             \
    const double t0_ = now();                                                                      \
    call;                                                                                          \
    phase_time[ph] += now() - t0_;                                                                 \
  } while (0)

typedef struct {
  float *w, *b;
  int in, out;
} Lin;

static Lin lin_make(int in, int out, unsigned *seed)
{
  Lin l = {randn_buf((size_t)in * out, 1.0 / sqrt((double)in), seed),
           randn_buf((size_t)out, 1.0 / sqrt((double)in), seed), in, out};
  return l;
}

typedef struct {
  Lin qkv, proj, ff1, ff2;
  float *ln1w, *ln1b, *ln2w, *ln2b;
} Layer;

typedef struct {
  Config cfg;
  int B, T;
  Lin edx[3], eg[3], dec[3];
  Layer *layers;
  /* activations */
  float *inp_dx, *inp_g, *h1, *h2, *e, *X, *qkv, *att, *ao, *res, *X1, *f1, *f1g, *mean, *rstd;
  float *c, *d1, *d1g, *d2, *d2g, *out;
  size_t nparams;
} Net;

static void net_create(Net *n, const Config *cfg, int B)
{
  unsigned seed = 7;
  const int T = cfg->K + 1, d = cfg->de, BT = B * T;
  memset(n, 0, sizeof *n);
  n->cfg = *cfg;
  n->B = B;
  n->T = T;
  const int eh = cfg->emb_hidden, half = d / 2;
  n->edx[0] = lin_make(2, eh, &seed);
  n->edx[1] = lin_make(eh, eh, &seed);
  n->edx[2] = lin_make(eh, half, &seed);
  n->eg[0] = lin_make(2, eh, &seed);
  n->eg[1] = lin_make(eh, eh, &seed);
  n->eg[2] = lin_make(eh, half, &seed);
  n->dec[0] = lin_make(d, cfg->dec_hidden, &seed);
  n->dec[1] = lin_make(cfg->dec_hidden, cfg->dec_hidden, &seed);
  n->dec[2] = lin_make(cfg->dec_hidden, 2, &seed);
  n->layers = calloc((size_t)cfg->n_layers, sizeof(Layer));
  for (int l = 0; l < cfg->n_layers; l++) {
    Layer *L = &n->layers[l];
    L->qkv = lin_make(d, 3 * d, &seed);
    L->proj = lin_make(d, d, &seed);
    L->ff1 = lin_make(d, cfg->ff_hidden, &seed);
    L->ff2 = lin_make(cfg->ff_hidden, d, &seed);
    L->ln1w = randn_buf((size_t)d, 0.1, &seed);
    L->ln1b = randn_buf((size_t)d, 0.1, &seed);
    L->ln2w = randn_buf((size_t)d, 0.1, &seed);
    L->ln2b = randn_buf((size_t)d, 0.1, &seed);
    for (int i = 0; i < d; i++) L->ln1w[i] += 1.0f, L->ln2w[i] += 1.0f;
  }
  size_t np = 0;
  for (int i = 0; i < 3; i++) {
    np += (size_t)(n->edx[i].in + 1) * n->edx[i].out + (size_t)(n->eg[i].in + 1) * n->eg[i].out;
    np += (size_t)(n->dec[i].in + 1) * n->dec[i].out;
  }
  np += (size_t)cfg->n_layers *
        ((size_t)(d + 1) * 3 * d + (size_t)(d + 1) * d + (size_t)(d + 1) * cfg->ff_hidden +
         (size_t)(cfg->ff_hidden + 1) * d + 4 * (size_t)d);
  n->nparams = np;
  const int wmax = eh > cfg->ff_hidden ? eh : cfg->ff_hidden;
  n->inp_dx = randn_buf((size_t)BT * 2, 3.0, &seed);
  n->inp_g = randn_buf((size_t)BT * 2, 1.0, &seed);
  n->h1 = malloc(sizeof(float) * (size_t)BT * wmax);
  n->h2 = malloc(sizeof(float) * (size_t)BT * wmax);
  n->e = malloc(sizeof(float) * (size_t)BT * half);
  n->X = malloc(sizeof(float) * (size_t)BT * d);
  n->qkv = malloc(sizeof(float) * (size_t)BT * 3 * d);
  n->att = malloc(sizeof(float) * (size_t)B * cfg->n_heads * T * T);
  n->ao = malloc(sizeof(float) * (size_t)BT * d);
  n->res = malloc(sizeof(float) * (size_t)BT * d);
  n->X1 = malloc(sizeof(float) * (size_t)BT * d);
  n->f1 = malloc(sizeof(float) * (size_t)BT * cfg->ff_hidden);
  n->f1g = malloc(sizeof(float) * (size_t)BT * cfg->ff_hidden);
  n->mean = malloc(sizeof(float) * (size_t)BT);
  n->rstd = malloc(sizeof(float) * (size_t)BT);
  n->c = malloc(sizeof(float) * (size_t)B * d);
  n->d1 = malloc(sizeof(float) * (size_t)B * cfg->dec_hidden);
  n->d1g = malloc(sizeof(float) * (size_t)B * cfg->dec_hidden);
  n->d2 = malloc(sizeof(float) * (size_t)B * cfg->dec_hidden);
  n->d2g = malloc(sizeof(float) * (size_t)B * cfg->dec_hidden);
  n->out = malloc(sizeof(float) * (size_t)B * 2);
}

/* Embedding MLP 2 -> eh -> eh -> d/2 on all BT tokens, written into columns [col, col + d/2)
   of X. */
static void embed(Net *n, const Lin *m, const float *inp, int col)
{
  const int BT = n->B * n->T, eh = n->cfg.emb_hidden, half = n->cfg.de / 2, d = n->cfg.de;
  TIMED(PH_LINEAR, sgm_nn_linear_forward(n->h1, inp, m[0].w, m[0].b, BT, 2, eh));
  TIMED(PH_GELU, sgm_nn_gelu_forward(n->h1, n->h1, BT * eh));
  TIMED(PH_LINEAR, sgm_nn_linear_forward(n->h2, n->h1, m[1].w, m[1].b, BT, eh, eh));
  TIMED(PH_GELU, sgm_nn_gelu_forward(n->h2, n->h2, BT * eh));
  TIMED(PH_LINEAR, sgm_nn_linear_forward(n->e, n->h2, m[2].w, m[2].b, BT, eh, half));
  for (int r = 0; r < BT; r++)
    memcpy(n->X + (size_t)r * d + col, n->e + (size_t)r * half, sizeof(float) * (size_t)half);
}

static void net_forward(Net *n)
{
  const Config *cfg = &n->cfg;
  const int B = n->B, T = n->T, BT = B * T, d = cfg->de, f = cfg->ff_hidden;
  embed(n, n->edx, n->inp_dx, 0);
  embed(n, n->eg, n->inp_g, d / 2);
  for (int l = 0; l < cfg->n_layers; l++) {
    const Layer *L = &n->layers[l];
    /* X <- LN(X + MHSA(X)); X <- LN(X + FFN(X))   (post-norm, as model.py) */
    TIMED(PH_LINEAR, sgm_nn_linear_forward(n->qkv, n->X, L->qkv.w, L->qkv.b, BT, d, 3 * d));
    TIMED(PH_ATTENTION, sgm_nn_attention_forward(n->ao, n->att, n->qkv, n->qkv + d, n->qkv + 2 * d,
                                                 NULL, B, T, T, d, cfg->n_heads, 3 * d, 3 * d));
    TIMED(PH_LINEAR, sgm_nn_linear_forward(n->res, n->ao, L->proj.w, L->proj.b, BT, d, d));
    TIMED(PH_OTHER, sgm_nn_residual_forward(n->res, n->res, n->X, BT * d));
    TIMED(PH_LAYERNORM,
          sgm_nn_layernorm_forward(n->X1, n->mean, n->rstd, n->res, L->ln1w, L->ln1b, BT, d));
    TIMED(PH_LINEAR, sgm_nn_linear_forward(n->f1, n->X1, L->ff1.w, L->ff1.b, BT, d, f));
    TIMED(PH_GELU, sgm_nn_gelu_forward(n->f1g, n->f1, BT * f));
    TIMED(PH_LINEAR, sgm_nn_linear_forward(n->res, n->f1g, L->ff2.w, L->ff2.b, BT, f, d));
    TIMED(PH_OTHER, sgm_nn_residual_forward(n->res, n->res, n->X1, BT * d));
    TIMED(PH_LAYERNORM,
          sgm_nn_layernorm_forward(n->X, n->mean, n->rstd, n->res, L->ln2w, L->ln2b, BT, d));
  }
  for (int b = 0; b < B; b++)
    memcpy(n->c + (size_t)b * d, n->X + (size_t)b * T * d, sizeof(float) * (size_t)d);
  const int dh = cfg->dec_hidden;
  TIMED(PH_LINEAR, sgm_nn_linear_forward(n->d1, n->c, n->dec[0].w, n->dec[0].b, B, d, dh));
  TIMED(PH_GELU, sgm_nn_gelu_forward(n->d1g, n->d1, B * dh));
  TIMED(PH_LINEAR, sgm_nn_linear_forward(n->d2, n->d1g, n->dec[1].w, n->dec[1].b, B, dh, dh));
  TIMED(PH_GELU, sgm_nn_gelu_forward(n->d2g, n->d2, B * dh));
  TIMED(PH_LINEAR, sgm_nn_linear_forward(n->out, n->d2g, n->dec[2].w, n->dec[2].b, B, dh, 2));
}

/* model.py flops_forward(cfg)["total_matmul"]: matmul FLOPs per centre particle. */
static double flops_forward(const Config *c)
{
  const double T = c->K + 1, d = c->de, h = c->n_heads, dh = d / h, half = d / 2;
  const double emb_tok = 2 * (2.0 * 2 * c->emb_hidden + 2.0 * c->emb_hidden * c->emb_hidden +
                              2.0 * c->emb_hidden * half);
  const double layer = T * 2 * d * 3 * d + T * 2 * d * d +
                       T * (2 * d * c->ff_hidden + 2.0 * c->ff_hidden * d) +
                       h * (2 * T * T * dh) * 2;
  const double dec =
      2 * d * c->dec_hidden + 2.0 * c->dec_hidden * c->dec_hidden + 2.0 * c->dec_hidden * 2;
  return T * emb_tok + c->n_layers * layer + dec;
}

static void bench_forward(const Config *cfg, int B, int reps, size_t *nparams)
{
  Net n;
  net_create(&n, cfg, B);
  *nparams = n.nparams;
  double *t = malloc(sizeof(double) * (size_t)reps), med, best;
  net_forward(&n); /* warm-up: page faults of the activations */
  memset(phase_time, 0, sizeof phase_time);
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    net_forward(&n);
    t[r] = now() - t0;
  }
  stats(t, reps, &med, &best);
  printf("RESULT fwd_layers_breakdown");
  for (int ph = 0; ph < NPHASE; ph++) printf(" %s_s=%.6f", phase_names[ph], phase_time[ph] / reps);
  printf("\n");
  const double fl = flops_forward(cfg) * B;
  double chk = 0;
  for (int i = 0; i < 2 * B; i++) chk += fabs(n.out[i]);
  printf("RESULT fwd_layers config=%s B=%d nparams=%zu median_s=%.6f best_s=%.6f "
         "particles_per_s=%.2f particles_per_s_best=%.2f gflops=%.2f gflops_best=%.2f "
         "checksum=%.6g\n",
         cfg->name, B, n.nparams, med, best, B / med, B / best, fl / med / 1e9, fl / best / 1e9,
         chk);
  fflush(stdout);
  free(t);
  /* the process exits right after; the OS reclaims the buffers */
}

/* ---- (d) the model object of include/sgm/nn_models.h, when the library has it -------------- */

#ifdef SGM_BENCH_HAVE_TRANSFORMER
/* Standard normal from the LCG (Box-Muller); only the timing depends on these values. */
static double randn(unsigned *seed)
{
  *seed = *seed * 1664525u + 1013904223u;
  const double u1 = ((double)(*seed >> 8) + 1.0) / 16777217.0;
  *seed = *seed * 1664525u + 1013904223u;
  const double u2 = (double)(*seed >> 8) / 16777216.0;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void report_model(const char *name, const Config *cfg, int B, size_t np, double *t, int reps,
                         double flop_mult)
{
  double med, best;
  printf("RESULT %s", name);
  print_times(t, reps);
  stats(t, reps, &med, &best);
  const double fl = flop_mult * flops_forward(cfg) * B;
  printf(" config=%s B=%d nparams=%zu median_s=%.6f best_s=%.6f particles_per_s=%.2f "
         "particles_per_s_best=%.2f gflops=%.2f gflops_best=%.2f\n",
         cfg->name, B, np, med, best, B / med, B / best, fl / med / 1e9, fl / best / 1e9);
  fflush(stdout);
}

/* model.py's LocalParticleTransformer through sgm_nn_transformer_*: forward (centre-only last
   block, and full), a DSM training step as bench.py's train() (noise, forward, loss gradient,
   zero_grad, backward, Adam), and the divergence d s / d g_centre (forward + 2 JVPs; torch: 1
   forward + 2 backward). FLOP multipliers as in bench.py (forward F, train 3F, divergence 3F). */
/* BENCH_NN_PARTS (environment, for profiling one part): comma list of fwd, train, div; all if
   unset. */
static int want_part(const char *part)
{
  const char *w = getenv("BENCH_NN_PARTS");
  return !w || strstr(w, part) != NULL;
}

static void bench_model(const Config *cfg, int B, int reps, int chunk)
{
  const int T = cfg->K + 1;
  const double sigma = 0.01;
  SgmNnTransformerConfig tc = {.dim = 2,
                               .gdim = 2,
                               .out_dim = 2,
                               .d_model = cfg->de,
                               .n_layers = cfg->n_layers,
                               .n_heads = cfg->n_heads,
                               .mlp_hidden = cfg->ff_hidden,
                               .embed_hidden = cfg->emb_hidden,
                               .embed_depth = 2,
                               .dec_hidden = cfg->dec_hidden,
                               .dec_depth = 2,
                               .act = SGM_NN_ACT_GELU};
  SgmNnTransformer m;
  SgmOptim opt;
  SgmOptimSettings os;
  unsigned seed = 11;
  /* plain training and forward: max_tan = 0 (no tangent memory); the divergence model below */
  if (sgm_nn_transformer_create_local(&tc, cfg->K, B, 0, 1234, &m)) exit(1);
  printf("RESULT mem_train config=%s B=%d max_tan=0 bytes=%zu bytes_per_centre=%.0f\n", cfg->name,
         B, sgm_nn_transformer_memory(m), (double)sgm_nn_transformer_memory(m) / B);
  fflush(stdout);
  SgmParams *p = sgm_nn_transformer_params(m);
  sgm_optim_settings_default(&os);
  os.schedule = sgm_optim_schedule_constant(1e-4);
  if (sgm_optim_create("adam", p->nparams, &os, &opt)) exit(1);
  const size_t nt = (size_t)B * T * 2;
  float *dx = malloc(nt * sizeof(float)), *g = malloc(nt * sizeof(float));
  float *dxn = malloc(nt * sizeof(float)), *gn = malloc(nt * sizeof(float));
  float *out = malloc((size_t)B * 2 * sizeof(float)), *dout = malloc((size_t)B * 2 * sizeof(float));
  float *xi = malloc((size_t)B * 4 * sizeof(float)), *div = malloc((size_t)B * sizeof(float));
  for (int b = 0; b < B; b++)
    for (int j = 0; j < T; j++) {
      const double th =
          6.283185307179586 * (double)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0;
      float *x = dx + ((size_t)b * T + j) * 2, *o = g + ((size_t)b * T + j) * 2;
      x[0] = j ? (float)(3.0 * randn(&seed)) : 0.0f;
      x[1] = j ? (float)(3.0 * randn(&seed)) : 0.0f;
      o[0] = (float)cos(th);
      o[1] = (float)sin(th);
    }
  double *t = malloc(sizeof(double) * (size_t)reps);
  for (int full = 0; full < 2 && want_part("fwd"); full++) {
    sgm_nn_transformer_set_centre_only(m, !full);
    sgm_nn_transformer_forward(m, out, dx, g, NULL, B);
    for (int r = 0; r < reps; r++) {
      const double t0 = now();
      sgm_nn_transformer_forward(m, out, dx, g, NULL, B);
      t[r] = now() - t0;
    }
    report_model(full ? "fwd_model_full" : "fwd_model", cfg, B, p->nparams, t, reps, 1.0);
  }
  sgm_nn_transformer_set_centre_only(m, 1);
  for (int r = -1; r < reps && want_part("train"); r++) {
    const double t0 = now();
    for (int i = 0; i < 4 * B; i++) xi[i] = (float)randn(&seed); /* xi_g (B,2) | xi_x (B,2) */
    memcpy(gn, g, nt * sizeof(float));
    for (int b = 0; b < B; b++) {
      gn[(size_t)b * T * 2] += (float)(sigma * xi[2 * b]);
      gn[(size_t)b * T * 2 + 1] += (float)(sigma * xi[2 * b + 1]);
      for (int j = 0; j < T; j++)
        for (int a = 0; a < 2; a++)
          dxn[((size_t)b * T + j) * 2 + a] =
              j ? dx[((size_t)b * T + j) * 2 + a] - (float)(sigma * xi[2 * B + 2 * b + a]) : 0.0f;
    }
    sgm_nn_transformer_forward(m, out, dxn, gn, NULL, B);
    for (int i = 0; i < 2 * B; i++) dout[i] = (float)(2.0 * (out[i] + xi[i] / sigma) / B);
    sgm_nn_params_zero_grad(p);
    sgm_nn_transformer_backward(m, dout);
    sgm_optim_step(opt, p->params, p->grads, NULL);
    if (r >= 0) t[r] = now() - t0;
  }
  if (want_part("train")) report_model("train_model", cfg, B, p->nparams, t, reps, 3.0);
  /* divergence (and reverse-over-forward) need tangents: a second model with max_tan = 2 and the
     same parameters, created after the first is gone so the peak stays one arena */
  float *psave = malloc(p->nparams * sizeof(float));
  memcpy(psave, p->params, p->nparams * sizeof(float));
  sgm_nn_transformer_destroy(&m);
  /* ... in chunks of at most `chunk` (256) centres (windows are independent): 16 MB/centre at
     paper size */
  const int Bd = B < chunk ? B : chunk;
  if (sgm_nn_transformer_create_local(&tc, cfg->K, Bd, 2, 1234, &m)) exit(1);
  printf("RESULT mem_div config=%s B=%d max_tan=2 bytes=%zu bytes_per_centre=%.0f\n", cfg->name, Bd,
         sgm_nn_transformer_memory(m), (double)sgm_nn_transformer_memory(m) / Bd);
  fflush(stdout);
  p = sgm_nn_transformer_params(m);
  memcpy(p->params, psave, p->nparams * sizeof(float));
  free(psave);
  for (int r = -1; r < reps && want_part("div"); r++) {
    const double t0 = now();
    for (int b0 = 0; b0 < B; b0 += Bd) {
      const int nb = B - b0 < Bd ? B - b0 : Bd;
      sgm_nn_transformer_forward(m, out + 2 * b0, dx + (size_t)b0 * T * 2, g + (size_t)b0 * T * 2,
                                 NULL, nb);
      sgm_nn_transformer_divergence(m, SGM_NN_INPUT_G, div + b0);
    }
    if (r >= 0) t[r] = now() - t0;
  }
  if (want_part("div")) report_model("div_model", cfg, B, p->nparams, t, reps, 3.0);
  sgm_optim_destroy(&opt);
  sgm_nn_transformer_destroy(&m);
  free(dx), free(g), free(dxn), free(gn), free(out), free(dout), free(xi), free(div), free(t);
}
#endif

/* ---- (b) optimiser step over nparams ------------------------------------------------------ */

static void bench_optim(const char *kind, size_t n, double clip, int reps)
{
  unsigned seed = 3;
  float *p = randn_buf(n, 1.0, &seed), *g = randn_buf(n, 1.0, &seed);
  SgmOptimSettings s;
  SgmOptim opt;
  sgm_optim_settings_default(&s);
  s.clip_norm = clip;
  s.schedule = sgm_optim_schedule_constant(1e-4);
  if (sgm_optim_create(kind, n, &s, &opt)) exit(1);
  double *t = malloc(sizeof(double) * (size_t)reps), med, best;
  sgm_optim_step(opt, p, g, NULL);
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    sgm_optim_step(opt, p, g, NULL);
    t[r] = now() - t0;
  }
  printf("RESULT optim_%s%s", kind, clip > 0 ? "_clip" : "");
  print_times(t, reps);
  stats(t, reps, &med, &best);
  /* bytes touched per step: read g, read+write p, m, v */
  const double bytes = 7.0 * 4.0 * (double)n;
  printf(" nparams=%zu median_s=%.6f best_s=%.6f gbytes_per_s=%.2f gbytes_per_s_best=%.2f\n", n,
         med, best, bytes / med / 1e9, bytes / best / 1e9);
  fflush(stdout);
  sgm_optim_destroy(&opt);
  free(p);
  free(g);
  free(t);
}

int main(int argc, char **argv)
{
  const Config *cfg = &BIG;
  int B = 256, reps = 5, chunk = 256;
  const char *only = "sgemm,optim,fwd,model";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--config") && i + 1 < argc) {
      i++;
      cfg = !strcmp(argv[i], "small") ? &SMALL : &BIG;
    } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
      B = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) {
      chunk = atoi(argv[++i]);
    } else {
      fprintf(
          stderr,
          "usage: %s [--config big|small] [--batch B] [--reps R] [--only sgemm,optim,fwd,model] "
          "[--chunk C]\n",
          argv[0]);
      return 2;
    }
  }
  if (B < 1 || reps < 1 || chunk < 1) return 2;
  openblas_set_num_threads(1);
  printf("bench_nn: config %s (d_e=%d, L=%d, heads=%d, K=%d), B=%d, %d reps, 1 thread (%s)\n",
         cfg->name, cfg->de, cfg->n_layers, cfg->n_heads, cfg->K, B, reps, openblas_get_config());
  const int N = B * (cfg->K + 1), d = cfg->de;
  if (strstr(only, "sgemm")) {
    bench_sgemm("probe", CblasNoTrans, CblasNoTrans, 4096, 768, 256, reps);
    bench_sgemm("qkv_fwd", CblasNoTrans, CblasTrans, N, 3 * d, d, reps);
    bench_sgemm("proj_fwd", CblasNoTrans, CblasTrans, N, d, d, reps);
    bench_sgemm("qkv_bwd_input", CblasNoTrans, CblasNoTrans, N, d, 3 * d, reps);
    bench_sgemm("qkv_bwd_weight", CblasTrans, CblasNoTrans, 3 * d, d, N, reps);
  }
  size_t nparams = 0;
  if (strstr(only, "fwd")) bench_forward(cfg, B, reps, &nparams);
#ifdef SGM_BENCH_HAVE_TRANSFORMER
  if (strstr(only, "model")) bench_model(cfg, B, reps, chunk);
#else
  if (strstr(only, "model"))
    printf("bench_nn: no local transformer in this library: model skipped\n");
#endif
  if (!nparams) nparams = cfg == &BIG ? 1914114 : 71746; /* model.py n_params */
  if (strstr(only, "optim")) {
    bench_optim("adam", nparams, 0.0, reps * 4);
    bench_optim("adamw", nparams, 1.0, reps * 4);
  }
  return 0;
}
