/* A run: the context every stage receives, the stage registry, metrics.json, progress lines,
 * output files written atomically, and the stop-signal flag used by long loops.
 *
 * Stages are registered by name (sgm_stage_register); `[run] stages` lists them in order and the
 * driver (src/app/driver.c) calls each with the same SgmRun. Every stage appends its headline
 * numbers to metrics.json with sgm_metrics_set and sgm_metrics_flush.
 */
#ifndef SGM_RUN_H
#define SGM_RUN_H

#include <petscsys.h>
#include <signal.h>
#include "sgm/config.h"

typedef struct SgmMetrics_ *SgmMetrics;

typedef struct {
  MPI_Comm comm; /* all ranks of the run */
  SgmConfig cfg; /* resolved configuration (same on every rank) */
  char outdir[PETSC_MAX_PATH_LEN];
  uint64_t seed;       /* [run] seed */
  PetscBool overwrite; /* [run] overwrite */
  const char *restart; /* --restart FILE, or NULL */
  SgmMetrics metrics;  /* rank 0 holds the values; other ranks' calls are no-ops */
  PetscBool stopped;   /* set by a stage that returned early (signal, stop_after): no later
                          stage runs */
} SgmRun;

typedef PetscErrorCode (*SgmStageFn)(SgmRun *run);

/// Registers a stage (name, function, one-line description). Not collective.
PetscErrorCode sgm_stage_register(const char *name, SgmStageFn fn, const char *doc);
/// Looks up a stage; *fn = NULL when unknown.
PetscErrorCode sgm_stage_find(const char *name, SgmStageFn *fn);
/// Registered stages in order (for --help and validation).
PetscErrorCode sgm_stage_list(int *n, const char *const **names, const char *const **docs);

/// Metrics: stage -> name -> value, merged into <outdir>/metrics.json (existing entries of other
/// stages are kept). Values set on rank 0 only; flush is collective and atomic (tmp + rename).
PetscErrorCode sgm_metrics_create(MPI_Comm comm, const char *outdir, SgmMetrics *m);
PetscErrorCode sgm_metrics_set(SgmMetrics m, const char *stage, const char *name, double value);
PetscErrorCode sgm_metrics_flush(SgmMetrics m);
PetscErrorCode sgm_metrics_destroy(SgmMetrics *m);

/// Throttled progress reporter for long loops (rank 0 prints at most every `interval` seconds:
/// done/total, rate in `unit`/s, elapsed, ETA).
typedef struct SgmProgress_ *SgmProgress;
PetscErrorCode sgm_progress_create(MPI_Comm comm, const char *label, int64_t total,
                                   double units_per_item, const char *unit, SgmProgress *p);
PetscErrorCode sgm_progress_update(SgmProgress p, int64_t done);
/// Interval of the reporters created from now on ([run] progress_interval, set by the driver;
/// the PETSc option -sgm_progress_interval overrides it).
void sgm_progress_set_default_interval(double seconds);
/// Prints the final line (total time, mean rate) and frees.
PetscErrorCode sgm_progress_destroy(SgmProgress *p);

/// Output files: path of `name` in the output directory, and the temporary name it is written
/// under before the rename.
PetscErrorCode sgm_run_path(const SgmRun *run, const char *name, char *path, size_t len);
PetscErrorCode sgm_run_tmp_path(const SgmRun *run, const char *name, char *path, size_t len);
/// Collective: rank 0 renames tmp -> final (atomic on POSIX), then everyone synchronises.
PetscErrorCode sgm_run_commit_file(const SgmRun *run, const char *name);
/// Collective: error (SGM_ERR_USER) if `name` exists in the output directory and neither
/// [run] overwrite nor a restart allows replacing it.
PetscErrorCode sgm_run_check_writable(const SgmRun *run, const char *name);
/// Collective: rank 0 tests access(path, amode) (F_OK: exists, R_OK: readable) and broadcasts
/// the answer, so every rank takes the same branch.
PetscErrorCode sgm_file_exists(MPI_Comm comm, const char *path, int amode, PetscBool *exists);

/// Stop requests: SIGTERM and SIGUSR1 set a flag (installed by main). Long loops call
/// sgm_stop_requested (collective: an allreduce, so all ranks stop at the same step).
PetscErrorCode sgm_signals_install(void);
PetscErrorCode sgm_stop_requested(MPI_Comm comm, PetscBool *stop);

#endif
