/* Run services: metrics.json merges across stages and jobs, files appear only when committed,
 * existing outputs are protected, a directory owned by another run is refused. */
#include "testutil.h"
#include "sgm/app.h"
#include "sgm/config.h"
#include "sgm/run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *slurp(const char *path)
{
  static char buf[8192];
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

START_TEST(test_metrics_merge)
{
  const char *dir = sgm_test_tmpdir("metrics");
  char path[600];
  SgmMetrics m;
  snprintf(path, sizeof path, "%s/metrics.json", dir);
  ck_assert_int_eq(sgm_metrics_create(sgm_test_comm(), dir, &m), 0);
  sgm_metrics_set(m, "simulate", "throughput", 1.5e6);
  sgm_metrics_set(m, "simulate", "bad", NAN);
  ck_assert_int_eq(sgm_metrics_flush(m), 0);
  sgm_metrics_destroy(&m);
  /* A later job: new object, other stage, and an update of an old entry. */
  ck_assert_int_eq(sgm_metrics_create(sgm_test_comm(), dir, &m), 0);
  sgm_metrics_set(m, "train", "loss", 0.25);
  sgm_metrics_set(m, "simulate", "bad", 3.0);
  ck_assert_int_eq(sgm_metrics_flush(m), 0);
  sgm_metrics_destroy(&m);
  int rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  if (rank == 0) {
    char *s = slurp(path);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "\"simulate\": {"));
    ck_assert_ptr_nonnull(strstr(s, "\"throughput\": 1500000"));
    ck_assert_ptr_nonnull(strstr(s, "\"bad\": 3"));
    ck_assert_ptr_nonnull(strstr(s, "\"train\": {"));
    ck_assert_ptr_nonnull(strstr(s, "\"loss\": 0.25"));
    /* valid JSON as far as Python is concerned, when an interpreter with json exists */
    char cmd[800];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; d=json.load(open(\"%s\")); "
             "sys.exit(0 if d[\"train\"][\"loss\"]==0.25 and d[\"simulate\"][\"bad\"]==3 else 1)'",
             path);
    ck_assert_int_eq(system(cmd), 0);
  }
}
END_TEST

static SgmRun *make_run(const char *dir, const char *name, int overwrite)
{
  char text[1024];
  SgmConfig cfg;
  SgmRun *run;
  snprintf(text, sizeof text,
           "[run]\nname = \"%s\"\noutput = \"%s\"\nstages = []\noverwrite = %s\n", name, dir,
           overwrite ? "true" : "false");
  if (sgm_config_create_from_string(sgm_test_comm(), "t.toml", text, 0, NULL, &cfg)) return NULL;
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  PetscErrorCode ierr = sgm_run_create(sgm_test_comm(), cfg, NULL, &run);
  PetscPopErrorHandler();
  if (ierr) {
    sgm_config_destroy(&cfg);
    return NULL;
  }
  return run;
}

static void free_run(SgmRun *run)
{
  SgmConfig cfg = run->cfg;
  sgm_run_destroy(&run);
  sgm_config_destroy(&cfg);
}

START_TEST(test_commit_and_protect)
{
  char base[600], dir[700], tmp[800], fin[800];
  int rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  snprintf(base, sizeof base, "%s", sgm_test_tmpdir("run"));
  snprintf(dir, sizeof dir, "%s/a/b", base); /* nested, created on demand */
  SgmRun *run = make_run(dir, "first", 0);
  ck_assert_ptr_nonnull(run);
  ck_assert_int_eq(sgm_run_tmp_path(run, "x.h5", tmp, sizeof tmp), 0);
  ck_assert_int_eq(sgm_run_path(run, "x.h5", fin, sizeof fin), 0);
  if (rank == 0) {
    FILE *f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs("data", f);
    fclose(f);
  }
  MPI_Barrier(sgm_test_comm());
  ck_assert_int_ne(access(fin, F_OK), 0); /* not visible before the commit */
  ck_assert_int_eq(sgm_run_check_writable(run, "x.h5"), 0);
  ck_assert_int_eq(sgm_run_commit_file(run, "x.h5"), 0);
  ck_assert_int_eq(access(fin, F_OK), 0);
  ck_assert_int_ne(access(tmp, F_OK), 0);
  /* existing output is protected */
  PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
  ck_assert_int_eq(sgm_run_check_writable(run, "x.h5"), PETSC_ERR_USER_INPUT);
  PetscPopErrorHandler();
  run->overwrite = PETSC_TRUE;
  ck_assert_int_eq(sgm_run_check_writable(run, "x.h5"), 0);
  free_run(run);
  /* the same run may come back (a later stage); another run may not, unless overwrite */
  run = make_run(dir, "first", 0);
  ck_assert_ptr_nonnull(run);
  free_run(run);
  ck_assert_ptr_null(make_run(dir, "second", 0));
  run = make_run(dir, "second", 1);
  ck_assert_ptr_nonnull(run);
  free_run(run);
}
END_TEST

START_TEST(test_stop_flag)
{
  PetscBool stop;
  ck_assert_int_eq(sgm_signals_install(), 0);
  ck_assert_int_eq(sgm_stop_requested(sgm_test_comm(), &stop), 0);
  ck_assert(!stop);
  int rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  /* a signal on one rank stops every rank */
  if (rank == 0) raise(SIGUSR1);
  ck_assert_int_eq(sgm_stop_requested(sgm_test_comm(), &stop), 0);
  ck_assert(stop);
}
END_TEST

int main(int argc, char **argv)
{
  Suite *s = suite_create("run_services");
  TCase *tc = tcase_create("run");
  tcase_add_test(tc, test_metrics_merge);
  tcase_add_test(tc, test_commit_and_protect);
  tcase_add_test(tc, test_stop_flag);
  suite_add_tcase(s, tc);
  return sgm_test_main(argc, argv, s);
}
