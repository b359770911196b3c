/* The [run] table (what to run, where, with which seed) and the open [petsc] table, whose keys go
 * to the PETSc options database unchanged ([petsc] log_view = "" is -log_view). */
#include "sgm/app.h"

#include <math.h>

static const SgmKeySpec run_keys[] = {
    {"name", SGM_KEY_STRING, NULL, 1, -INFINITY, INFINITY, NULL, "",
     "Name of the run; recorded in every output file and in run.toml"},
    {"output", SGM_KEY_STRING, "\"out\"", 0, -INFINITY, INFINITY, NULL, "path",
     "Output directory (created if missing); relative paths are relative to the working directory"},
    {"seed", SGM_KEY_INT, "1", 0, 0, 9223372036854775807.0, NULL, "",
     "Seed of the counter-based random streams (docs/rng.md)"},
    {"stages", SGM_KEY_STRING_ARRAY, NULL, 1, -INFINITY, INFINITY, "@stages", "",
     "Stages to run, in order"},
    {"overwrite", SGM_KEY_BOOL, "false", 0, -INFINITY, INFINITY, NULL, "",
     "Allow replacing outputs of an earlier run in the output directory"},
    {"progress_interval", SGM_KEY_REAL, "5.0", 0, 0.0, INFINITY, NULL, "s",
     "Minimum wall time between two progress lines of a long loop"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

const SgmTableSpec sgm_table_run = {"run", "What to run, where, and with which seed", run_keys, 0};

const SgmTableSpec sgm_table_petsc = {
    "petsc", "PETSc options, inserted into the options database (key = option without '-')", NULL,
    1};
