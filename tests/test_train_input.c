/* End-to-end run of input/mips_small_train.toml (simulate, then train). By default with shortened
 * simulation and training (--set overrides, well under a minute); with the argument "full" the
 * input as written (label long). Checks that model.h5, train_log.h5 and the train metrics exist
 * and that the loss log is finite. */
#include "testutil.h"
#include "sgm/app.h"
#include "sgm/simulate.h"
#include "sgm/train.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int full = 0;

START_TEST(test_input)
{
  MPI_Comm comm = sgm_test_comm();
  char out[600];
  const char *dir = sgm_test_tmpdir("train_input");
  snprintf(out, sizeof out, "run.output=\"%s\"", dir);
  const char *sets[] = {out,
                        "simulate.n_equil=200",
                        "simulate.n_steps=400",
                        "train.steps=10",
                        "train.checkpoint_every=5",
                        "train.log_every=5"};
  const int nset = full ? 1 : 6;
  ck_assert_int_eq(sgm_schema_register(&sgm_table_system), 0);
  ck_assert_int_eq(sgm_schema_register(&sgm_table_simulate), 0);
  ck_assert_int_eq(sgm_schema_register(&sgm_table_model), 0);
  ck_assert_int_eq(sgm_schema_register(&sgm_table_train), 0);
  ck_assert_int_eq(sgm_stage_register("simulate", sgm_stage_simulate, "integrate"), 0);
  ck_assert_int_eq(sgm_stage_register("train", sgm_stage_train, "train"), 0);
  SgmConfig cfg;
  SgmRun *run;
  ck_assert_int_eq(
      sgm_config_create(comm, SGM_SOURCE_DIR "/input/mips_small_train.toml", nset, sets, &cfg), 0);
  ck_assert_int_eq(sgm_run_create(comm, cfg, NULL, &run), 0);
  ck_assert_int_eq(sgm_run_stages(run), 0);
  ck_assert_int_eq(sgm_run_destroy(&run), 0);
  ck_assert_int_eq(sgm_config_destroy(&cfg), 0);
  PetscMPIInt rank;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    char path[800];
    snprintf(path, sizeof path, "%s/train_log.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t d = H5Dopen2(f, "loss", H5P_DEFAULT), sp = H5Dget_space(d);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    ck_assert_int_eq(n, full ? 400 : 10);
    double *v = malloc(sizeof(double) * n);
    ck_assert_int_ge(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    for (size_t i = 0; i < n; i++) ck_assert(isfinite(v[i]));
    printf("mips_small_train: loss %g -> %g over %zu steps\n", v[0], v[n - 1], n);
    free(v);
    H5Sclose(sp), H5Dclose(d), H5Fclose(f);
    snprintf(path, sizeof path, "%s/model.h5", dir);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    H5Fclose(f);
    snprintf(path, sizeof path, "%s/metrics.json", dir);
    FILE *fp = fopen(path, "r");
    ck_assert(fp);
    char buf[8192];
    size_t m = fread(buf, 1, sizeof buf - 1, fp);
    buf[m] = 0;
    fclose(fp);
    ck_assert_msg(strstr(buf, "\"train\"") && strstr(buf, "particles_per_s"), "%s", buf);
  }
  MPI_Barrier(comm);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("train_input");
  TCase *tc = tcase_create("input");
  tcase_set_timeout(tc, full ? 1200 : 60);
  tcase_add_test(tc, test_input);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "full")) full = 1;
  return sgm_test_main(argc, argv, suite());
}
