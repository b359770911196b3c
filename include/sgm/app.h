/* The application frame: command line, the stage driver, the [run] and [petsc] tables.
 * main.c is a table of contents over these (prolog, stages, epilog). */
#ifndef SGM_APP_H
#define SGM_APP_H

#include "sgm/run.h"
#include "sgm/schema.h"

extern const SgmTableSpec sgm_table_run;
extern const SgmTableSpec sgm_table_petsc;

/// Parsed command line (not PETSc options: those are passed to PetscInitialize).
typedef struct {
  const char *input; /* input.toml */
  int check;         /* --check */
  int help, version; /* --help, --version */
  int input_doc;     /* --input-doc */
  int nset;          /* --set table.key=value ... */
  const char **sets;
  const char *restart; /* --restart FILE */
  int petsc_argc;      /* argv[0] + the remaining (PETSc) options */
  char **petsc_argv;
  char error[256]; /* non-empty: a usage error */
} SgmArgs;

/// Splits argv into sgm_hpc's own arguments and PETSc's. Not collective; no PETSc needed.
void sgm_args_parse(int argc, char **argv, SgmArgs *args);
void sgm_args_free(SgmArgs *args);

/// Prints --help / --version (rank 0). Collective.
PetscErrorCode sgm_print_help(MPI_Comm comm);
PetscErrorCode sgm_print_version(MPI_Comm comm);
/// Writes the input reference (docs/input.md) from the registered schema. Not collective.
PetscErrorCode sgm_print_input_doc(FILE *fp);

/// Creates the run context from a validated configuration: output directory created (collective),
/// ownership checked against another run's outputs, the resolved configuration saved as run.toml.
PetscErrorCode sgm_run_create(MPI_Comm comm, SgmConfig cfg, const char *restart, SgmRun **run);
/// Runs the stages of [run] stages in order; metrics flushed after each. Collective.
PetscErrorCode sgm_run_stages(SgmRun *run);
PetscErrorCode sgm_run_destroy(SgmRun **run);

#endif
