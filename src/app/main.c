/* sgm_hpc: simulate stochastic particle systems, learn their scores, use them.
 *
 * main is a table of contents: prolog (arguments, PETSc, registries, configuration), the stages,
 * epilog (report, destroy in reverse order, finalise). Exit status: 0 success, 2 invalid input
 * (reported before anything is written), 1 any other error.
 */
#include "sgm/app.h"
#include "sgm/config.h"
#include "sgm/core.h"
#include "sgm/schema.h"

#include <stdio.h>
#include <string.h>

/* User errors (bad input, existing outputs) get one clean line instead of a PETSc traceback;
 * everything else goes to PETSc's traceback handler. */
static PetscErrorCode error_handler(MPI_Comm comm, int line, const char *fun, const char *file,
                                    PetscErrorCode n, PetscErrorType p, const char *mess, void *ctx)
{
  (void)ctx;
  if (n == SGM_ERR_USER) {
    if (p == PETSC_ERROR_INITIAL) {
      int rank;
      MPI_Comm_rank(comm, &rank);
      if (rank == 0 || comm == PETSC_COMM_SELF) fprintf(stderr, "sgm_hpc: error: %s\n", mess);
      fflush(stderr);
    }
    return n;
  }
  return PetscTraceBackErrorHandler(comm, line, fun, file, n, p, mess, NULL);
}

static int exit_status(PetscErrorCode ierr)
{
  return ierr == PETSC_SUCCESS ? 0 : ierr == SGM_ERR_USER ? 2 : 1;
}

static PetscErrorCode run_program(const SgmArgs *args, PetscErrorCode *status)
{
  SgmConfig cfg = NULL;
  SgmRun *run = NULL;
  MPI_Comm comm = PETSC_COMM_WORLD;
  PetscErrorCode ierr;

  PetscFunctionBeginUser;
  PetscCall(sgm_register_all());
  if (args->input_doc) {
    int rank;
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    if (rank == 0) PetscCall(sgm_print_input_doc(stdout));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  if (args->help || args->version) {
    if (args->version) PetscCall(sgm_print_version(comm));
    if (args->help) PetscCall(sgm_print_help(comm));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  ierr = sgm_config_create(comm, args->input, args->nset, args->sets, &cfg);
  if (ierr == SGM_ERR_USER) {
    *status = ierr; /* all problems already printed; nothing created */
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  PetscCall(ierr);
  if (args->check) {
    PetscCall(sgm_config_print(cfg, comm, stdout));
    PetscCall(sgm_config_destroy(&cfg));
    PetscFunctionReturn(PETSC_SUCCESS);
  }
  PetscCall(sgm_signals_install());
  PetscCall(sgm_run_create(comm, cfg, args->restart, &run));
  PetscCall(sgm_run_stages(run));
  PetscCall(sgm_run_destroy(&run));
  PetscCall(sgm_config_destroy(&cfg));
  PetscFunctionReturn(PETSC_SUCCESS);
}

int main(int argc, char **argv)
{
  SgmArgs args;
  PetscErrorCode ierr, status = PETSC_SUCCESS;

  sgm_args_parse(argc, argv, &args);
  if (args.error[0]) {
    fprintf(stderr, "sgm_hpc: %s\n", args.error);
    sgm_args_free(&args);
    return 2;
  }
  ierr = PetscInitialize(&args.petsc_argc, &args.petsc_argv, NULL,
                         "sgm_hpc: score-based modelling of stochastic particle systems\n");
  if (ierr) return 1;
  PetscCall(PetscPushErrorHandler(error_handler, NULL));
  ierr = run_program(&args, &status);
  if (ierr == PETSC_SUCCESS) ierr = status;
  PetscCall(PetscPopErrorHandler());
  if (ierr != PETSC_SUCCESS && ierr != SGM_ERR_USER) {
    /* A failure that is not a (collectively checked) input error may have happened on some
     * ranks only (an I/O error of a rank-0 write, a non-finite state on the rank that owns the
     * particle): the others may be waiting in a collective, so end the whole job instead of
     * finalising (MPI_Finalize would wait for them). Files are written to temporary names and
     * renamed, so what is on disk stays consistent. */
    int rank, size;
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
    MPI_Comm_size(PETSC_COMM_WORLD, &size);
    fprintf(stderr, "sgm_hpc: [rank %d] stopped with error %d\n", rank, (int)ierr);
    fflush(stderr);
    if (size > 1) MPI_Abort(PETSC_COMM_WORLD, exit_status(ierr));
  }
  int code = exit_status(ierr);
  PetscFinalize();
  sgm_args_free(&args);
  return code;
}
