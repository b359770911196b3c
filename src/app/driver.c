/* The stage driver: output directory, run ownership, and the loop over [run] stages.
 *
 * A directory belongs to the run named in its run.toml. Another run (a different [run] name) may
 * not write there unless [run] overwrite = true, so a typo in `output` cannot clobber a finished
 * week-long simulation. The directory is created only after the configuration validated.
 */
#include "sgm/app.h"
#include "sgm/core.h"
#include "sgm/score_model.h"
#include "sgm/toml.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkdir_p(const char *path)
{
  char buf[PETSC_MAX_PATH_LEN];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0777) && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0777) && errno != EEXIST) return -1;
  struct stat st;
  return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* Name of the run that owns `dir` (from its run.toml), or "" when none. */
/* --restart with the train stage: the network the run continues (train_checkpoint.h5, or a
 * finished model.h5 that the later stages read) must be the one [model] builds. On rank 0 before
 * anything is written: msg gets the difference, empty when none or when there is no such file. */
static PetscErrorCode restart_model_check(SgmConfig cfg, const char *outdir, char *msg, size_t len)
{
  const char *files[2] = {"train_checkpoint.h5", "model.h5"};
  char path[PETSC_MAX_PATH_LEN], which[256], diff[PETSC_MAX_PATH_LEN + 512];
  int differs;
  PetscFunctionBeginUser;
  msg[0] = 0;
  for (int k = 0; k < 2; k++) {
    snprintf(path, sizeof path, "%s/%s", outdir, files[k]);
    if (access(path, R_OK)) continue;
    PetscCall(
        sgm_score_model_file_differs(cfg, path, which, sizeof which, diff, sizeof diff, &differs));
    if (differs > 0)
      snprintf(msg, len,
               "--restart: %s; the run continues that network, so set [model] as in its "
               "run.toml",
               diff);
    break;
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static void owner_of(const char *dir, char *name, size_t len)
{
  char path[PETSC_MAX_PATH_LEN + 16], err[256];
  name[0] = '\0';
  snprintf(path, sizeof path, "%s/run.toml", dir);
  FILE *f = fopen(path, "rb");
  if (!f) return;
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  SgmTomlValue *root;
  if (sgm_toml_parse(buf, n, &root, err, sizeof err)) {
    snprintf(name, len, "(unreadable run.toml)");
    return;
  }
  const SgmTomlValue *run = sgm_toml_get(root, "run");
  const SgmTomlValue *nm = run ? sgm_toml_get(run, "name") : NULL;
  snprintf(name, len, "%s", nm && nm->type == SGM_TOML_STRING ? nm->u.s.str : "(unnamed)");
  sgm_toml_free(root);
}

PetscErrorCode sgm_run_create(MPI_Comm comm, SgmConfig cfg, const char *restart, SgmRun **out)
{
  int rank, status = 0;
  const char *outdir, *name;
  int64_t seed;
  char owner[256] = "", msg[PETSC_MAX_PATH_LEN + 1536] = "";
  PetscFunctionBeginUser;
  SgmRun *run = calloc(1, sizeof *run);
  PetscCheck(run, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  run->comm = comm;
  run->cfg = cfg;
  run->restart = restart;
  PetscCall(sgm_config_get_string(cfg, "run.output", &outdir));
  PetscCall(sgm_config_get_string(cfg, "run.name", &name));
  PetscCall(sgm_config_get_int(cfg, "run.seed", &seed));
  PetscCall(sgm_config_get_bool(cfg, "run.overwrite", &run->overwrite));
  run->seed = (uint64_t)seed;
  {
    double interval;
    PetscCall(sgm_config_get_real(cfg, "run.progress_interval", &interval));
    sgm_progress_set_default_interval(interval);
  }
  snprintf(run->outdir, sizeof run->outdir, "%s", outdir);
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* --restart: the simulate stage continues from the named checkpoint and needs it; train
   * continues from its own train_checkpoint.h5 when there is one (a missing file is not an error
   * there: a complete model.h5 means nothing is left to do) */
  int sim, train; /* >= 0: the simulate / train stage runs */
  PetscCall(sgm_config_stage_order(cfg, "", "simulate", &sim));
  PetscCall(sgm_config_stage_order(cfg, "", "train", &train));
  if (rank == 0) {
    char netmsg[sizeof msg] = "";
    if (restart && train >= 0) PetscCall(restart_model_check(cfg, outdir, netmsg, sizeof netmsg));
    owner_of(outdir, owner, sizeof owner);
    const int missing = restart && access(restart, R_OK);
    if (missing && sim >= 0)
      status = 2, snprintf(msg, sizeof msg, "--restart %s: %s", restart, strerror(errno));
    else if (restart && !missing && H5Fis_hdf5(restart) <= 0)
      status = 2,
      snprintf(msg, sizeof msg,
               "--restart %s: not an HDF5 file (give the checkpoint.h5 or train_checkpoint.h5 "
               "of an earlier run)",
               restart);
    else if (netmsg[0])
      status = 2, snprintf(msg, sizeof msg, "%s", netmsg);
    else if (owner[0] && strcmp(owner, name) && !run->overwrite)
      status = 2,
      snprintf(msg, sizeof msg,
               "%s: output directory %s holds the outputs of run \"%s\"; choose another "
               "[run] output or set [run] overwrite = true",
               sgm_config_source(cfg), outdir, owner);
    else if (mkdir_p(outdir))
      status = 1,
      snprintf(msg, sizeof msg, "cannot create output directory %s: %s", outdir, strerror(errno));
  }
  PetscCallMPI(MPI_Bcast(&status, 1, MPI_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, 0, comm));
  PetscCheck(status == 0, comm, status == 2 ? SGM_ERR_USER : PETSC_ERR_FILE_OPEN, "%s", msg);
  if (rank == 0) {
    char tmp[PETSC_MAX_PATH_LEN + 32], fin[PETSC_MAX_PATH_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s/.run.toml.tmp", outdir);
    snprintf(fin, sizeof fin, "%s/run.toml", outdir);
    FILE *f = fopen(tmp, "w");
    status = !f || fputs(sgm_config_resolved_toml(cfg), f) < 0;
    if (f) status |= fclose(f) != 0;
    status = status || rename(tmp, fin);
  }
  PetscCallMPI(MPI_Bcast(&status, 1, MPI_INT, 0, comm));
  PetscCheck(status == 0, comm, PETSC_ERR_FILE_WRITE, "cannot write %s/run.toml", outdir);
  PetscCall(sgm_metrics_create(comm, outdir, &run->metrics));
  *out = run;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_run_stages(SgmRun *run)
{
  int n;
  const char *const *stages;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string_array(run->cfg, "run.stages", &n, &stages));
  for (int i = 0; i < n; i++) {
    SgmStageFn fn;
    PetscCall(sgm_stage_find(stages[i], &fn));
    PetscCheck(fn, run->comm, SGM_ERR_USER, "unknown stage %s", stages[i]);
    PetscCall(sgm_log(run->comm, "== stage %s (%d/%d) ==\n", stages[i], i + 1, n));
    /* Each stage is a PETSc log stage, so -log_view breaks events down by stage. */
    PetscLogStage logstage;
    PetscCall(PetscLogStageGetId(stages[i], &logstage));
    if (logstage < 0) PetscCall(PetscLogStageRegister(stages[i], &logstage));
    double t0 = MPI_Wtime();
    PetscCall(PetscLogStagePush(logstage));
    PetscCall(fn(run));
    PetscCall(PetscLogStagePop());
    PetscCall(sgm_metrics_set(run->metrics, stages[i], "wall_time_s", MPI_Wtime() - t0));
    PetscCall(sgm_metrics_flush(run->metrics));
    PetscCall(sgm_log(run->comm, "== stage %s done in %.2f s ==\n", stages[i], MPI_Wtime() - t0));
    /* A stage that saw SIGTERM/SIGUSR1 checkpointed and returned early: later stages would read
     * incomplete outputs, so the run ends here (exit 0, for the job script to requeue). */
    PetscBool stop;
    PetscCall(sgm_stop_requested(run->comm, &stop));
    if (stop || run->stopped) {
      if (i + 1 < n)
        PetscCall(sgm_log(run->comm,
                          "stop requested: stages after %s not run; continue with --restart\n",
                          stages[i]));
      break;
    }
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_run_destroy(SgmRun **run)
{
  PetscFunctionBeginUser;
  if (!run || !*run) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_metrics_destroy(&(*run)->metrics));
  free(*run);
  *run = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}
