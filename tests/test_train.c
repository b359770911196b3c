/* MPI tests of the `train` stage and its data-parallel pieces:
 *  - minibatch selection: exactly `batch` ids per step, no id twice in an epoch, frames in range;
 *  - the parameter hash check (equal on every rank; a perturbed rank is a hard error);
 *  - rank-count invariance: a model trained for 20 steps on all ranks of the test equals the model
 *    trained on rank 0 alone (PETSC_COMM_SELF, in the same process) from the same trajectory to
 *    relative 1e-5 of the largest parameter, losses to 1e-4 (only the float summation order of
 *    the gradient allreduce and of the micro-batches differs; observed 1.2e-7 on 2 and 4 ranks).
 *    Excluded: the attention key bias, whose exact gradient is zero (see the comment there);
 *  - restart identity: 4 steps, stop, --restart, 6 more steps gives bitwise the parameters and
 *    the loss log of 10 uninterrupted steps;
 *  - both again in online mode (SDE steps between optimiser steps, particle state checkpointed);
 *  - cross-key configuration checks;
 *  - [train] init_model for the local transformer: 0 steps from a model.h5 without EMA weights
 *    leave its trained parameters bit for bit. */
#include "testutil.h"
#include "train_util.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/simulate.h"
#include "sgm/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char base[] =
    "[run]\nname = \"train_test\"\nseed = 11\nstages = [\"simulate\"]\noverwrite = true\n"
    "[system]\ndim = 2\nn = 256\nphi = 0.4\nv0 = 1.0\ngamma = 1.0\neps = 0.1\nk = 2.5\n"
    "potential = \"softplus\"\n"
    "[simulate]\ndt = 0.01\nn_equil = 20\nn_steps = 100\nframe_every = 20\nrelax_steps = 10\n"
    "[model]\nd_e = 16\nlayers = 1\nheads = 2\nK = 8\nmlp_hidden = 32\nembed_hidden = 16\n"
    "embed_depth = 1\ndec_hidden = 16\ndec_depth = 1\nmax_batch = 24\n"
    "[train]\nloss = \"denoise\"\nsigma = 0.05\nsteps = 20\nbatch = 64\noptimizer = \"adam\"\n"
    "lr = 1e-3\nschedule = \"warmup_cosine\"\nwarmup = 5\nlog_every = 5\n";

static const SgmTrainCase tcase = {"train_test.toml", base, "train"};

static PetscErrorCode run_stages(MPI_Comm comm, const char *outdir, const char *stages, int nset,
                                 const char **sets, const char *restart)
{
  return sgm_test_run_text(comm, tcase.name, tcase.text, outdir, stages, nset, sets, restart);
}

START_TEST(test_batches)
{
  const int64_t n = 1000, batch = 96, nb = n / batch;
  char *seen = calloc((size_t)n, 1);
  for (int64_t step = 0; step < 2 * nb + 3; step++) {
    if (step % nb == 0) memset(seen, 0, (size_t)n);
    int64_t cnt = 0;
    for (int64_t id = 0; id < n; id++)
      if (sgm_train_in_batch(5, step, (uint64_t)id, n, batch)) {
        ck_assert_msg(!seen[id], "id %lld twice in an epoch", (long long)id);
        seen[id] = 1, cnt++;
      }
    ck_assert_int_eq(cnt, batch);
    int64_t f = sgm_train_frame(5, step, 7);
    ck_assert(f >= 0 && f < 7);
  }
  /* a different epoch permutes differently */
  int same = 1;
  for (int64_t id = 0; id < n; id++)
    same &= sgm_train_in_batch(5, 0, (uint64_t)id, n, batch) ==
            sgm_train_in_batch(5, nb, (uint64_t)id, n, batch);
  ck_assert(!same);
  free(seen);
}
END_TEST

START_TEST(test_hash)
{
  MPI_Comm comm = sgm_test_comm();
  PetscMPIInt rank, size;
  MPI_Comm_rank(comm, &rank), MPI_Comm_size(comm, &size);
  float v[64];
  for (int i = 0; i < 64; i++) v[i] = (float)i * 0.25f;
  SgmParams p = {.params = v, .grads = NULL, .nparams = 64, .ntensors = 0, .tensors = NULL};
  uint64_t h;
  ck_assert_int_eq(sgm_train_check_params(comm, &p, &h), 0);
  ck_assert(h == sgm_train_param_hash(v, 64));
  if (size > 1) {
    if (rank == size - 1) v[3] = nextafterf(v[3], 10.0f);
    ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
    PetscErrorCode ierr = sgm_train_check_params(comm, &p, NULL);
    ck_assert_int_eq(PetscPopErrorHandler(), 0);
    ck_assert_int_ne(ierr, 0);
  }
}
END_TEST

/* d_e = 16, 20 logged losses; extra: further --set overrides (online mode) */
static void rank_invariance(const char *tag, int nx, const char **extra)
{
  sgm_test_train_rank_invariance(&tcase, tag, nx, extra, 16, 20);
}

START_TEST(test_rank_invariance)
{
  rank_invariance("train offline", 0, NULL);
}
END_TEST

START_TEST(test_rank_invariance_online)
{
  const char *extra[2] = {"train.mode=\"online\"", "train.sde_steps=5"};
  rank_invariance("train online", 2, extra);
}
END_TEST

/* two restarts: the second finds a complete model.h5 and no checkpoint (nothing to do) */
static void restart_identity(const char *tag, int nx, const char **extra)
{
  sgm_test_train_restart_identity(&tcase, tag, nx, extra, 2);
}

START_TEST(test_restart_identity)
{
  restart_identity("train offline", 0, NULL);
}
END_TEST

START_TEST(test_restart_identity_online)
{
  const char *extra[2] = {"train.mode=\"online\"", "train.sde_steps=3"};
  restart_identity("train online", 2, extra);
}
END_TEST

START_TEST(test_config_check)
{
  /* heads not dividing d_e and a batch beyond N are reported before any work (exit status 2) */
  char dir[512];
  snprintf(dir, sizeof dir, "%s", sgm_test_tmpdir("train_check"));
  const char *sets[2] = {"model.heads=3", "train.batch=300"};
  ck_assert_int_eq(PetscPushErrorHandler(PetscReturnErrorHandler, NULL), 0);
  /* simulate first: the trajectory train would read is then not a problem too */
  PetscErrorCode ierr =
      run_stages(sgm_test_comm(), dir, "[\"simulate\", \"train\"]", 2, sets, NULL);
  ck_assert_int_eq(PetscPopErrorHandler(), 0);
  ck_assert_int_eq(ierr, SGM_ERR_USER);
}
END_TEST

START_TEST(test_init_model)
{
  MPI_Comm comm = sgm_test_comm();
  char sim[512], a[512], b[512], traj[600], init[700];
  snprintf(sim, sizeof sim, "%s", sgm_test_tmpdir("train_init_sim"));
  snprintf(a, sizeof a, "%s", sgm_test_tmpdir("train_init_a"));
  snprintf(b, sizeof b, "%s", sgm_test_tmpdir("train_init_b"));
  ck_assert_int_eq(run_stages(comm, sim, "[\"simulate\"]", 0, NULL, NULL), 0);
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", sim);
  snprintf(init, sizeof init, "train.init_model=\"%s/model.h5\"", a);
  const char *sa[1] = {traj};
  ck_assert_int_eq(run_stages(comm, a, "[\"train\"]", 1, sa, NULL), 0);
  const char *sb[3] = {traj, init, "train.steps=0"};
  ck_assert_int_eq(run_stages(comm, b, "[\"train\"]", 3, sb, NULL), 0);
  SgmTestParams pa = sgm_test_read_params(a), pb = sgm_test_read_params(b);
  ck_assert_uint_eq(pa.n, pb.n);
  for (size_t i = 0; i < pa.n; i++)
    ck_assert_msg(pa.v[i] == pb.v[i], "parameter %zu: %g vs %g", i, (double)pa.v[i],
                  (double)pb.v[i]);
  free(pa.v), free(pb.v);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("train");
  TCase *tc = tcase_create("train");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_batches);
  tcase_add_test(tc, test_hash);
  tcase_add_test(tc, test_config_check);
  tcase_add_test(tc, test_rank_invariance);
  tcase_add_test(tc, test_restart_identity);
  tcase_add_test(tc, test_rank_invariance_online);
  tcase_add_test(tc, test_restart_identity_online);
  tcase_add_test(tc, test_init_model);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, suite());
}
