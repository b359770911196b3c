/* [epr] weights: which parameters of model.h5 the epr stage evaluates (src/epr/epr_weights.c).
 * A local transformer built from [model] is saved with an optimiser whose EMA differs from the
 * parameters (a few Adam steps on fake gradients). Then, on every rank:
 *  - weights = "raw" loads /params exactly, "ema" loads /optimizer/ema exactly, and "auto" the EMA;
 *  - a file saved without EMA: "auto" loads /params, "ema" is an error (nothing loaded silently);
 *  - an unknown value is rejected by the schema. */
#include "testutil.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/nn_io.h"
#include "sgm/nn_optim.h"
#include "sgm/score_model.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *base = "[run]\nname = \"w\"\nstages = []\noutput = \"/tmp\"\n[system]\nn "
                          "= 64\nL = 12.0\n[model]\nd_e = 8\nlayers = 1\nheads = 2\n"
                          "K = 4\nmlp_hidden = 8\nembed_hidden = 8\ndec_hidden = 8\n[epr]\n";

static PetscErrorCode make_cfg(const char *weights, SgmConfig *cfg)
{
  char text[1024];
  PetscFunctionBeginUser;
  snprintf(text, sizeof text, "%sweights = \"%s\"\n", base, weights);
  PetscCall(sgm_config_create_from_string(sgm_test_comm(), "w.toml", text, 0, NULL, cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static void path_for(char *path, size_t n, const char *tag)
{
  int rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  /* one name per communicator size: the 1/2/4-rank tests may run concurrently */
  int size;
  MPI_Comm_size(sgm_test_comm(), &size);
  snprintf(path, n, "test_epr_weights_%s_np%d.h5", tag, size);
}

START_TEST(test_weights_modes)
{
  MPI_Comm comm = sgm_test_comm();
  SgmConfig cfg0, cfg; /* cfg0 outlives a and b: their architecture strings point into it */
  SgmScoreModelSpec a, b;
  char with[256], without[256];
  path_for(with, sizeof with, "ema");
  path_for(without, sizeof without, "noema");
  ck_assert_int_eq(make_cfg("raw", &cfg0), 0);
  ck_assert_int_eq(sgm_score_model_from_config(comm, cfg0, 2, 7, &a), 0);
  ck_assert_int_eq(sgm_score_model_from_config(comm, cfg0, 2, 8, &b), 0);
  SgmParams *pa = sgm_nn_transformer_params(a.m), *pb = sgm_nn_transformer_params(b.m);
  const size_t n = pa->nparams;

  SgmOptimSettings st;
  SgmOptim opt;
  sgm_optim_settings_default(&st);
  st.ema_decay = 0.5;
  ck_assert_int_eq(sgm_optim_create("adam", n, &st, &opt), 0);
  for (int t = 0; t < 4; t++) {
    for (size_t i = 0; i < n; i++) pa->grads[i] = (float)(((i * 7 + (size_t)t) % 13) - 6.0);
    ck_assert_int_eq(sgm_optim_step(opt, pa->params, pa->grads, NULL), 0);
  }
  float *m, *v, *ema;
  ck_assert_int_eq(sgm_optim_get_moments(opt, &m, &v, &ema), 0);
  ck_assert(ema != NULL);
  ck_assert(memcmp(ema, pa->params, n * sizeof(float)) != 0);
  ck_assert_int_eq(sgm_nn_save(comm, with, pa, a.narch, a.arch, 0, NULL, opt), 0);
  ck_assert_int_eq(sgm_nn_save(comm, without, pa, a.narch, a.arch, 0, NULL, NULL), 0);

  /* raw: the parameters */
  ck_assert_int_eq(make_cfg("raw", &cfg), 0);
  ck_assert_int_eq(sgm_epr_load_weights(comm, cfg, with, pb, b.narch, b.arch), 0);
  ck_assert_int_eq(memcmp(pb->params, pa->params, n * sizeof(float)), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  /* ema and auto: the EMA */
  const char *emamodes[2] = {"ema", "auto"};
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(make_cfg(emamodes[k], &cfg), 0);
    memset(pb->params, 0, n * sizeof(float));
    ck_assert_int_eq(sgm_epr_load_weights(comm, cfg, with, pb, b.narch, b.arch), 0);
    ck_assert_int_eq(memcmp(pb->params, ema, n * sizeof(float)), 0);
    ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  }
  /* no EMA in the file: auto takes the parameters, ema is an error */
  ck_assert_int_eq(make_cfg("auto", &cfg), 0);
  memset(pb->params, 0, n * sizeof(float));
  ck_assert_int_eq(sgm_epr_load_weights(comm, cfg, without, pb, b.narch, b.arch), 0);
  ck_assert_int_eq(memcmp(pb->params, pa->params, n * sizeof(float)), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  ck_assert_int_eq(make_cfg("ema", &cfg), 0);
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_ne(sgm_epr_load_weights(comm, cfg, without, pb, b.narch, b.arch), 0);
  PetscPopErrorHandler();
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  /* schema: unknown value */
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_ne(make_cfg("average", &cfg), 0);
  PetscPopErrorHandler();

  ck_assert_int_eq(sgm_optim_destroy(&opt), 0);
  ck_assert_int_eq(sgm_nn_transformer_destroy(&a.m), 0);
  ck_assert_int_eq(sgm_nn_transformer_destroy(&b.m), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg0), 0);
  int rank;
  MPI_Comm_rank(comm, &rank);
  MPI_Barrier(comm);
  if (rank == 0) unlink(with), unlink(without);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("epr_weights");
  TCase *t = tcase_create("core");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, test_weights_modes);
  suite_add_tcase(s, t);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
