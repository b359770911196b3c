/* Attention maps and attention rollout (paper 002 eq. 93).
 *  - sgm_nn_transformer_attention on a tiny local transformer (L = 2, 2 heads, K = 5, one masked
 *    neighbour) and a tiny particle transformer: every head-averaged attention probability against
 *    this file's own double-precision forward pass written from the parameter names (1e-5), and
 *    the recomputed outputs against sgm_nn_transformer_forward (1e-5);
 *  - sgm_epr_attention_rollout against the explicit product of the full T x T matrices
 *    ((I + A_L)/2 ⋯ (I + A_1)/2, row of the centre), and its normalisation;
 *  - the epr stage with [epr] attention_ids on a random periodic frame (1, 2, 4 ranks): every
 *    window's neighbour ids are the K nearest by minimum-image distance (brute force), the stored
 *    displacements match, and the stored rollout and maps equal a recomputation from the frame's
 *    g and the stored displacements through the model of model.h5. */
#include "testutil.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/h5md.h"
#include "sgm/nn_io.h"
#include "sgm/score_model.h"
#include "sgm/simulate.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const float *par(SgmNnTransformer m, const char *name)
{
  const SgmParams *p = sgm_nn_transformer_params(m);
  const int i = sgm_nn_params_find(p, name);
  ck_assert_msg(i >= 0, "no %s", name);
  return p->params + p->tensors[i].offset;
}

static void lin(double *y, const double *x, const float *W, const float *b, int R, int Ni, int O)
{
  for (int r = 0; r < R; r++)
    for (int o = 0; o < O; o++) {
      double s = b[o];
      for (int i = 0; i < Ni; i++) s += (double)W[o * Ni + i] * x[r * Ni + i];
      y[r * O + o] = s;
    }
}
static double gelu(double x)
{
  return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}
static void ln(double *y, const double *x, const float *w, const float *b, int R, int C)
{
  for (int r = 0; r < R; r++) {
    double m = 0, v = 0;
    for (int c = 0; c < C; c++) m += x[r * C + c];
    m /= C;
    for (int c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
    v /= C;
    for (int c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - m) / sqrt(v + 1e-5) * w[c] + b[c];
  }
}
/* two-layer MLP prefix.0 -> gelu -> prefix.2 */
static void mlp2(double *y, const double *x, SgmNnTransformer m, const char *pre, int R, int Ni,
                 int Hd, int O)
{
  char n0[64], n1[64], n2[64], n3[64];
  double *h = malloc(sizeof(double) * R * Hd);
  snprintf(n0, 64, "%s.0.weight", pre), snprintf(n1, 64, "%s.0.bias", pre);
  snprintf(n2, 64, "%s.2.weight", pre), snprintf(n3, 64, "%s.2.bias", pre);
  lin(h, x, par(m, n0), par(m, n1), R, Ni, Hd);
  for (int i = 0; i < R * Hd; i++) h[i] = gelu(h[i]);
  lin(y, h, par(m, n2), par(m, n3), R, Hd, O);
  free(h);
}

/* Direct double forward of one window (T tokens): per-layer head-averaged maps A (L,T,T) and the
 * outputs (T, out). Embedding and decoder depth 1, GELU. */
static void direct(SgmNnTransformer m, const SgmNnTransformerConfig *c, int T, const float *x,
                   const float *g, const float *mask, double *A, double *out)
{
  const int C = c->d_model, NH = c->n_heads, hs = C / NH, H = c->mlp_hidden, D = c->dim;
  double *xi = malloc(sizeof(double) * T * D), *gi = malloc(sizeof(double) * T * D);
  double *X = malloc(sizeof(double) * T * C), *ex = malloc(sizeof(double) * T * C);
  double *eg = malloc(sizeof(double) * T * C), *qkv = malloc(sizeof(double) * T * 3 * C);
  double *ay = malloc(sizeof(double) * T * C), *t1 = malloc(sizeof(double) * T * C);
  double *t2 = malloc(sizeof(double) * T * C), *hh = malloc(sizeof(double) * T * H);
  double *P = malloc(sizeof(double) * T);
  for (int i = 0; i < T * D; i++) xi[i] = x[i], gi[i] = g[i];
  mlp2(ex, xi, m, "embed_x", T, D, c->embed_hidden, C / 2);
  mlp2(eg, gi, m, "embed_g", T, D, c->embed_hidden, C / 2);
  for (int t = 0; t < T; t++)
    for (int k = 0; k < C / 2; k++)
      X[t * C + k] = ex[t * C / 2 + k], X[t * C + C / 2 + k] = eg[t * C / 2 + k];
  for (int l = 0; l < c->n_layers; l++) {
    char nm[64];
#define PP(s) (snprintf(nm, 64, "blocks.%d.%s", l, s), par(m, nm))
    lin(qkv, X, PP("attn.in_proj_weight"), PP("attn.in_proj_bias"), T, C, 3 * C);
    for (int i = 0; i < T * T; i++) A[(size_t)l * T * T + i] = 0;
    for (int h = 0; h < NH; h++)
      for (int i = 0; i < T; i++) {
        double mx = -1e300, s = 0;
        for (int j = 0; j < T; j++) {
          double d = 0;
          for (int e = 0; e < hs; e++)
            d += qkv[i * 3 * C + h * hs + e] * qkv[j * 3 * C + C + h * hs + e];
          P[j] = d / sqrt((double)hs);
          if (mask[j] != 0 && P[j] > mx) mx = P[j];
        }
        for (int j = 0; j < T; j++) s += P[j] = mask[j] != 0 ? exp(P[j] - mx) : 0.0;
        for (int e = 0; e < hs; e++) ay[i * C + h * hs + e] = 0;
        for (int j = 0; j < T; j++) {
          P[j] /= s;
          A[((size_t)l * T + i) * T + j] += P[j] / NH;
          for (int e = 0; e < hs; e++)
            ay[i * C + h * hs + e] += P[j] * qkv[j * 3 * C + 2 * C + h * hs + e];
        }
      }
    lin(t1, ay, PP("attn.out_proj.weight"), PP("attn.out_proj.bias"), T, C, C);
    for (int i = 0; i < T * C; i++) t1[i] += X[i];
    ln(t2, t1, PP("norm1.weight"), PP("norm1.bias"), T, C);
    lin(hh, t2, PP("linear1.weight"), PP("linear1.bias"), T, C, H);
    for (int i = 0; i < T * H; i++) hh[i] = gelu(hh[i]);
    lin(t1, hh, PP("linear2.weight"), PP("linear2.bias"), T, H, C);
    for (int i = 0; i < T * C; i++) t1[i] += t2[i];
    ln(X, t1, PP("norm2.weight"), PP("norm2.bias"), T, C);
#undef PP
  }
  mlp2(out, X, m, "decoder", T, C, c->dec_hidden, c->out_dim);
  free(xi), free(gi), free(X), free(ex), free(eg), free(qkv), free(ay), free(t1), free(t2);
  free(hh), free(P);
}

static double urand(uint64_t *s)
{
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) / 9007199254740992.0;
}

static void check_model(int local)
{
  const SgmNnTransformerConfig c = {2, 2, 2, 8, 2, 2, 12, 6, 1, 6, 1, SGM_NN_ACT_GELU};
  const int K = 5, T = K + 1, B = 3, L = 2;
  SgmNnTransformer m;
  if (local)
    ck_assert_int_eq(sgm_nn_transformer_create_local(&c, K, B, 2, 5, &m), 0);
  else
    ck_assert_int_eq(sgm_nn_transformer_create_particle(&c, T, B, 2, 5, &m), 0);
  /* random weights everywhere (biases and norms included) so nothing is trivially 0 or 1 */
  SgmParams *p = sgm_nn_transformer_params(m);
  uint64_t st = 77;
  for (size_t i = 0; i < p->nparams; i++) p->params[i] = (float)(urand(&st) - 0.5);
  float x[B * T * 2], g[B * T * 2], mask[B * T], att[B * L * T * T], out[B * T * 2], fo[B * T * 2];
  for (int i = 0; i < B * T * 2; i++)
    x[i] = (float)(4 * urand(&st) - 2), g[i] = (float)(2 * urand(&st) - 1);
  for (int b = 0; b < B; b++) {
    if (local) x[b * T * 2] = x[b * T * 2 + 1] = 0.0f;
    for (int j = 0; j < T; j++) mask[b * T + j] = 1.0f;
  }
  mask[1 * T + 3] = 0.0f; /* one absent neighbour in window 1 */
  ck_assert_int_eq(sgm_nn_transformer_attention(m, &c, x, g, mask, B, att, out), 0);
  ck_assert_int_eq(sgm_nn_transformer_forward(m, fo, x, g, mask, B), 0);
  for (int b = 0; b < B; b++) {
    double A[L * T * T], o[T * 2];
    direct(m, &c, T, x + b * T * 2, g + b * T * 2, mask + b * T, A, o);
    for (int e = 0; e < L * T * T; e++)
      ck_assert_msg(fabs(att[b * L * T * T + e] - A[e]) < 1e-5, "att %d %d: %g vs %g", b, e,
                    att[b * L * T * T + e], A[e]);
    for (int t = 0; t < T; t++)
      for (int k = 0; k < 2; k++) {
        ck_assert(fabs(out[(b * T + t) * 2 + k] - o[t * 2 + k]) < 1e-5 * (1 + fabs(o[t * 2 + k])));
        if (!local) ck_assert(fabs(out[(b * T + t) * 2 + k] - fo[(b * T + t) * 2 + k]) < 1e-5);
      }
    if (local)
      for (int k = 0; k < 2; k++) ck_assert(fabs(out[b * T * 2 + k] - fo[b * 2 + k]) < 1e-5);
    if (b == 1)
      for (int l = 0; l < L; l++)
        for (int i = 0; i < T; i++) ck_assert(att[((b * L + l) * T + i) * T + 3] == 0.0f);
    /* rollout against the explicit matrix product, for every row */
    for (int row = 0; row < T; row++) {
      double r[T], M[T][T], N[T][T];
      for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) M[i][j] = i == j;
      for (int l = 0; l < L; l++) /* M <- Ã_l M, so M = Ã_{L-1} ... Ã_0 */
      {
        for (int i = 0; i < T; i++)
          for (int j = 0; j < T; j++) {
            double s = 0;
            for (int k = 0; k < T; k++)
              s += 0.5 * ((i == k) + (double)att[((b * L + l) * T + i) * T + k]) * M[k][j];
            N[i][j] = s;
          }
        memcpy(M, N, sizeof M);
      }
      sgm_epr_attention_rollout(L, T, att + (size_t)b * L * T * T, row, r);
      double sum = 0;
      for (int j = 0; j < T; j++) {
        ck_assert_msg(fabs(r[j] - M[row][j]) < 1e-12, "rollout %d %d: %g vs %g", row, j, r[j],
                      M[row][j]);
        sum += r[j];
      }
      ck_assert(fabs(sum - 1.0) < 1e-6);
    }
  }
  sgm_nn_transformer_destroy(&m);
}

START_TEST(test_attention_local)
{
  check_model(1);
}
END_TEST
START_TEST(test_attention_particle)
{
  check_model(0);
}
END_TEST

#define NP 48
START_TEST(test_attention_stage)
{
  MPI_Comm comm = sgm_test_comm();
  const char *dir = sgm_test_tmpdir("epr_attention");
  char text[8192], mpath[1024], path[1024];
  const int K = 6, ids[3] = {0, 17, 47};
  PetscMPIInt rank;
  SgmConfig cfg;
  SgmRun *run;
  SgmAoupParams ap;
  SgmScoreModelSpec ms;
  MPI_Comm_rank(comm, &rank);
  snprintf(mpath, sizeof mpath, "%s/tiny.h5", dir);
  /* the model is built and saved from a configuration without the epr stage (the input check
   * refuses an epr stage whose model and trajectory are not there yet); the run's is made below,
   * once they are */
  snprintf(text, sizeof text,
           "[run]\nname = \"att\"\noutput = \"%s\"\nseed = 7\nstages = []\n"
           "overwrite = true\n"
           "[system]\nkind = \"aoup\"\ndim = 2\nn = %d\nphi = 0.4\nmu = 1.0\nv0 = 0.5\n"
           "gamma = 1.0\neps = 0.0\na = 1.0\nk = 1.0\nboundary = \"periodic\"\n"
           "[model]\nd_e = 8\nlayers = 2\nheads = 2\nK = %d\nmlp_hidden = 16\n"
           "embed_hidden = 8\nembed_depth = 1\ndec_hidden = 8\ndec_depth = 1\n"
           "learn = \"g\"\nmax_batch = 8\n"
           "[epr]\nscore = \"model\"\nmodel = \"%s\"\nbatches = 2\nwrite_fields = false\n"
           "attention_ids = [%d, %d, %d]\nattention_frames = [1]\n",
           dir, NP, K, mpath, ids[0], ids[1], ids[2]);
  ck_assert_int_eq(sgm_config_create_from_string(comm, "att.toml", text, 0, NULL, &cfg), 0);
  ck_assert_int_eq(sgm_aoup_params_from_config(cfg, 7, &ap), 0);
  ck_assert_int_eq(sgm_score_model_from_config(comm, cfg, 2, 11, &ms), 0);
  SgmParams *pp = sgm_nn_transformer_params(ms.m);
  uint64_t st = 5;
  for (size_t i = 0; i < pp->nparams; i++) pp->params[i] = (float)(urand(&st) - 0.5);
  ck_assert_int_eq(sgm_nn_save(comm, mpath, pp, ms.narch, ms.arch, 0, NULL, NULL), 0);
  /* two random frames */
  double x[2][NP * 2], g[2][NP * 2];
  for (int f = 0; f < 2; f++)
    for (int i = 0; i < NP * 2; i++) x[f][i] = urand(&st) * ap.L, g[f][i] = 2 * urand(&st) - 1;
  snprintf(path, sizeof path, "%s/trajectory.h5", dir);
  SgmH5mdInfo info = {2, NP, 1, ap.L, "all", "test", NULL, 0, NULL, NULL};
  ck_assert_int_eq(sgm_h5md_create(comm, path, &info), 0);
  for (int f = 0; f < 2; f++)
    ck_assert_int_eq(
        sgm_h5md_append(comm, path, "all", f, 10 * f, (double)f, 2, 0, rank ? 0 : NP, x[f], g[f]),
        0);
  SgmConfig rcfg;
  const char *const set_stages[1] = {"run.stages=[\"epr\"]"};
  ck_assert_int_eq(sgm_config_create_from_string(comm, "att.toml", text, 1, set_stages, &rcfg), 0);
  ck_assert_int_eq(sgm_run_create(comm, rcfg, NULL, &run), 0);
  ck_assert_int_eq(sgm_run_stages(run), 0);
  sgm_run_destroy(&run);

  snprintf(path, sizeof path, "%s/attention.h5", dir);
  hid_t fh = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_int_ge(fh, 0);
  const int T = K + 1, L = 2;
  int64_t nid[3 * 7], fr;
  double disp[3 * 7 * 2], roll[3 * 7], att[3 * 2 * 7 * 7];
  hid_t d;
  d = H5Dopen2(fh, "neighbour_id", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, nid), H5Dclose(d);
  d = H5Dopen2(fh, "frame", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &fr), H5Dclose(d);
  d = H5Dopen2(fh, "displacement", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, disp), H5Dclose(d);
  d = H5Dopen2(fh, "rollout", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, roll), H5Dclose(d);
  d = H5Dopen2(fh, "attention", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, att), H5Dclose(d);
  H5Fclose(fh);
  ck_assert_int_eq(fr, 1);
  const double *X = x[1], *G = g[1];
  for (int k = 0; k < 3; k++) {
    const int c = ids[k];
    double dist[NP];
    for (int j = 0; j < NP; j++) {
      double r2 = 0;
      for (int a = 0; a < 2; a++) {
        double u = X[2 * j + a] - X[2 * c + a];
        u -= ap.L * round(u / ap.L);
        r2 += u * u;
      }
      dist[j] = j == c ? -1.0 : r2;
    }
    /* K-th smallest distance among the others */
    double kth = 0;
    {
      double s[NP];
      memcpy(s, dist, sizeof s);
      for (int a = 0; a <= K; a++)
        for (int b = a + 1; b < NP; b++)
          if (s[b] < s[a]) {
            double t = s[a];
            s[a] = s[b], s[b] = t;
          }
      kth = s[K];
    }
    ck_assert_int_eq(nid[k * T], c);
    float fx[7 * 2], fg[7 * 2], fm[7], A[2 * 7 * 7];
    for (int j = 0; j < T; j++) {
      const int64_t q = nid[k * T + j];
      ck_assert(q >= 0 && q < NP);
      if (j > 0)
        ck_assert_msg(dist[q] <= kth * (1 + 1e-12), "neighbour %lld of %d too far", (long long)q,
                      c);
      for (int j2 = 0; j2 < j; j2++) ck_assert(nid[k * T + j2] != q);
      for (int a = 0; a < 2; a++) {
        double u = X[2 * q + a] - X[2 * c + a];
        u -= ap.L * round(u / ap.L);
        ck_assert(fabs(disp[(k * T + j) * 2 + a] - u) < 1e-12);
        fx[j * 2 + a] = (float)u, fg[j * 2 + a] = (float)G[2 * q + a];
      }
      fm[j] = 1.0f;
    }
    double r[7];
    ck_assert_int_eq(sgm_nn_transformer_attention(ms.m, &ms.cfg, fx, fg, fm, 1, A, NULL), 0);
    sgm_epr_attention_rollout(L, T, A, 0, r);
    for (int j = 0; j < T; j++) ck_assert(fabs(r[j] - roll[k * T + j]) < 1e-6);
    for (int e = 0; e < L * T * T; e++) ck_assert(fabs(A[e] - att[k * L * T * T + e]) < 1e-6);
  }
  sgm_nn_transformer_destroy(&ms.m);
  sgm_config_destroy(&cfg);
  sgm_config_destroy(&rcfg);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("epr_attention");
  TCase *t = tcase_create("attention");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, test_attention_local);
  tcase_add_test(t, test_attention_particle);
  tcase_add_test(t, test_attention_stage);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
