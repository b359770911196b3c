/* Shared pieces of the train-stage tests (train_util.h). */
#include "train_util.h"
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/epr.h"
#include "sgm/simulate.h"
#include "sgm/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

PetscErrorCode sgm_test_run_text(MPI_Comm comm, const char *name, const char *text,
                                 const char *outdir, const char *stages, int nset,
                                 const char **sets, const char *restart)
{
  SgmConfig cfg;
  SgmRun *run;
  const char *all[32];
  char outset[600], stset[200];
  PetscFunctionBeginUser;
  PetscCheck(nset + 2 <= 32, comm, PETSC_ERR_ARG_SIZ, "too many overrides");
  PetscCall(sgm_schema_register(&sgm_table_system));
  PetscCall(sgm_schema_register(&sgm_table_simulate));
  PetscCall(sgm_schema_register(&sgm_table_model));
  PetscCall(sgm_schema_register(&sgm_table_train));
  PetscCall(sgm_schema_register(&sgm_table_epr));
  PetscCall(sgm_schema_register_check("train", sgm_train_config_check));
  PetscCall(sgm_stage_register("simulate", sgm_stage_simulate, "integrate"));
  PetscCall(sgm_stage_register("train", sgm_stage_train, "train"));
  PetscCall(sgm_stage_register("epr", sgm_stage_epr, "epr"));
  snprintf(outset, sizeof outset, "run.output=\"%s\"", outdir);
  snprintf(stset, sizeof stset, "run.stages=%s", stages);
  all[0] = outset, all[1] = stset;
  for (int i = 0; i < nset; i++) all[2 + i] = sets[i];
  PetscCall(sgm_config_create_from_string(comm, name, text, nset + 2, all, &cfg));
  PetscCall(sgm_run_create(comm, cfg, restart, &run));
  PetscCall(sgm_run_stages(run));
  PetscCall(sgm_run_destroy(&run));
  PetscCall(sgm_config_destroy(&cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

double *sgm_test_read_ds(const char *path, const char *name, size_t *n, hid_t type)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open %s", path);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT), sp = H5Dget_space(d);
  ck_assert_msg(d >= 0, "no %s in %s", name, path);
  *n = (size_t)H5Sget_simple_extent_npoints(sp);
  double *v = malloc(8 * (*n + 1));
  H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  H5Sclose(sp), H5Dclose(d), H5Fclose(f);
  return v;
}

static herr_t read_one(hid_t g, const char *name, const H5L_info_t *info, void *op)
{
  SgmTestParams *b = op;
  (void)info;
  hid_t d = H5Dopen2(g, name, H5P_DEFAULT), sp = H5Dget_space(d);
  size_t m = (size_t)H5Sget_simple_extent_npoints(sp);
  b->v = realloc(b->v, (b->n + m) * sizeof(float));
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b->v + b->n);
  if (b->nt < 64) {
    snprintf(b->names[b->nt], sizeof b->names[0], "%s", name);
    b->off[b->nt++] = b->n;
  }
  b->n += m;
  H5Sclose(sp), H5Dclose(d);
  return 0;
}

SgmTestParams sgm_test_read_params(const char *dir)
{
  char path[1024];
  SgmTestParams b = {0};
  snprintf(path, sizeof path, "%s/model.h5", dir);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open %s", path);
  hid_t g = H5Gopen2(f, "/params", H5P_DEFAULT);
  hsize_t idx = 0;
  H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, read_one, &b);
  H5Gclose(g), H5Fclose(f);
  ck_assert_int_gt(b.n, 0);
  return b;
}

double *sgm_test_read_loss(const char *dir, size_t *n)
{
  char path[1024];
  snprintf(path, sizeof path, "%s/train_log.h5", dir);
  return sgm_test_read_ds(path, "loss", n, H5T_NATIVE_DOUBLE);
}

/* <tmp>_<what>: a fresh temporary directory */
static void tmpdir(char *buf, size_t len, const SgmTrainCase *c, const char *what)
{
  char tag[128];
  snprintf(tag, sizeof tag, "%s_%s", c->tmp, what);
  snprintf(buf, len, "%s", sgm_test_tmpdir(tag));
}

void sgm_test_train_rank_invariance(const SgmTrainCase *c, const char *tag, int nx,
                                    const char **extra, int d_e, size_t nlog)
{
  MPI_Comm comm = sgm_test_comm();
  PetscMPIInt rank, size;
  MPI_Comm_rank(comm, &rank), MPI_Comm_size(comm, &size);
  char sim[512], par[512], ser[512], traj[600];
  ck_assert_int_le(nx, 8);
  tmpdir(sim, sizeof sim, c, "sim");
  tmpdir(par, sizeof par, c, "par");
  tmpdir(ser, sizeof ser, c, "ser");
  ck_assert_int_eq(sgm_test_run_text(comm, c->name, c->text, sim, "[\"simulate\"]", 0, NULL, NULL),
                   0);
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", sim);
  const char *sets[9] = {traj};
  for (int i = 0; i < nx; i++) sets[1 + i] = extra[i];
  ck_assert_int_eq(
      sgm_test_run_text(comm, c->name, c->text, par, "[\"train\"]", 1 + nx, sets, NULL), 0);
  /* rank 0 compares; the verdict is broadcast so that a failure cannot strand the other ranks */
  char msg[256] = "";
  if (rank == 0) {
    ck_assert_int_eq(sgm_test_run_text(PETSC_COMM_SELF, c->name, c->text, ser, "[\"train\"]",
                                       1 + nx, sets, NULL),
                     0);
    SgmTestParams a = sgm_test_read_params(par), b = sgm_test_read_params(ser);
    double pmax = 0, dmax = 0;
    for (size_t i = 0; i < a.n && a.n == b.n; i++) {
      int k = 0;
      while (k + 1 < a.nt && a.off[k + 1] <= i) k++;
      /* the key slice of in_proj_bias (see train_util.h) */
      if (strstr(a.names[k], "in_proj_bias") && i - a.off[k] >= (size_t)d_e &&
          i - a.off[k] < 2 * (size_t)d_e)
        continue;
      pmax = fmax(pmax, fabs(b.v[i]));
      dmax = fmax(dmax, fabs((double)a.v[i] - b.v[i]));
    }
    printf("%s: rank invariance on %d ranks: max |dp| %.3g, max |p| %.3g\n", tag, size, dmax, pmax);
    size_t n1, n2;
    double *l1 = sgm_test_read_loss(par, &n1), *l2 = sgm_test_read_loss(ser, &n2);
    if (a.n != b.n || n1 != nlog || n2 != nlog)
      snprintf(msg, sizeof msg, "%s: sizes differ", tag);
    else if (!(dmax <= 1e-5 * pmax))
      snprintf(msg, sizeof msg, "%s: params differ by %g (max |p| %g)", tag, dmax, pmax);
    for (size_t i = 0; i < n1 && i < n2 && !msg[0]; i++)
      if (!(fabs(l1[i] - l2[i]) <= 1e-4 * fabs(l2[i]) + 1e-6))
        snprintf(msg, sizeof msg, "%s: loss %zu: %g vs %g", tag, i, l1[i], l2[i]);
    free(a.v), free(b.v), free(l1), free(l2);
  }
  MPI_Bcast(msg, sizeof msg, MPI_CHAR, 0, comm);
  ck_assert_msg(!msg[0], "%s", msg);
  MPI_Barrier(comm);
}

void sgm_test_train_restart_identity(const SgmTrainCase *c, const char *tag, int nx,
                                     const char **extra, int restarts)
{
  MPI_Comm comm = sgm_test_comm();
  PetscMPIInt rank;
  MPI_Comm_rank(comm, &rank);
  char sim[512], full[512], part[512], traj[600], restart[700];
  ck_assert_int_le(nx, 7);
  tmpdir(sim, sizeof sim, c, "rsim");
  tmpdir(full, sizeof full, c, "full");
  tmpdir(part, sizeof part, c, "part");
  ck_assert_int_eq(sgm_test_run_text(comm, c->name, c->text, sim, "[\"simulate\"]", 0, NULL, NULL),
                   0);
  snprintf(traj, sizeof traj, "train.trajectory=\"%s/trajectory.h5\"", sim);
  const char *sets[10] = {traj, "train.steps=10"};
  for (int i = 0; i < nx; i++) sets[2 + i] = extra[i];
  sets[2 + nx] = "train.stop_after=4";
  const int n = 2 + nx;
  ck_assert_int_eq(sgm_test_run_text(comm, c->name, c->text, full, "[\"train\"]", n, sets, NULL),
                   0);
  ck_assert_int_eq(
      sgm_test_run_text(comm, c->name, c->text, part, "[\"train\"]", n + 1, sets, NULL), 0);
  snprintf(restart, sizeof restart, "%s/train_checkpoint.h5", part);
  /* a second restart finds a complete model.h5 and no checkpoint: nothing to do, model kept */
  for (int r = 0; r < restarts; r++)
    ck_assert_int_eq(
        sgm_test_run_text(comm, c->name, c->text, part, "[\"train\"]", n, sets, restart), 0);
  int ok = 1;
  if (rank == 0) {
    SgmTestParams a = sgm_test_read_params(full), b = sgm_test_read_params(part);
    ok = a.n == b.n && memcmp(a.v, b.v, a.n * sizeof(float)) == 0;
    size_t n1, n2;
    double *l1 = sgm_test_read_loss(full, &n1), *l2 = sgm_test_read_loss(part, &n2);
    ok = ok && n1 == 10 && n2 == 10 && memcmp(l1, l2, n1 * sizeof(double)) == 0;
    free(a.v), free(b.v), free(l1), free(l2);
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  ck_assert_msg(ok, "%s: restarted model or loss log differs from the uninterrupted run", tag);
  MPI_Barrier(comm);
}
