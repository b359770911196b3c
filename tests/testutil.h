/* Shared helpers for the check-based tests: MPI/PETSc initialisation around a check suite, and
 * paths of test data. Tests run without fork (CK_FORK=no) because MPI is initialised. */
#ifndef SGM_TESTUTIL_H
#define SGM_TESTUTIL_H

#include <check.h>
#include <petscsys.h>

/// Initialises PETSc (and MPI), registers all schema tables and stages, runs `s` with
/// CK_NORMAL output on rank 0 (CK_SILENT elsewhere), finalises, and returns the exit status
/// (0 when every test passed on every rank).
int sgm_test_main(int argc, char **argv, Suite *s);

/// Communicator of the test (PETSC_COMM_WORLD).
MPI_Comm sgm_test_comm(void);

/// A fresh empty temporary directory (same path on every rank; collective). Caller frees nothing.
const char *sgm_test_tmpdir(const char *tag);

/// The whole file `path` as a NUL-terminated string (caller frees); fails the test if unreadable.
char *sgm_test_slurp(const char *path);

/// The number after "key": in the "section" object of a metrics.json text; fails the test if the
/// key is missing.
double sgm_test_metric(const char *json, const char *section, const char *key);

#endif
