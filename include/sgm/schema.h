/* The typed schema of input.toml: every key of every table declared once.
 *
 * Owns: the key specification type and the registry of tables. Each module declares the keys it
 * reads in a static table next to its code (e.g. src/systems/system_keys.c) and registers it once
 * in sgm_register_all() (src/app/register.c): a new module is new files plus one registration
 * line. docs/input.md is checked against the registry by a test, so they cannot diverge.
 */
#ifndef SGM_SCHEMA_H
#define SGM_SCHEMA_H

#include <petscsys.h>
#include "sgm/config.h"

#define SGM_KEY_TYPE_LIST(X)                                                                       \
  X(REAL, "float")                                                                                 \
  X(INT, "integer")                                                                                \
  X(BOOL, "boolean")                                                                               \
  X(STRING, "string")                                                                              \
  X(REAL_ARRAY, "array of floats")                                                                 \
  X(INT_ARRAY, "array of integers")                                                                \
  X(STRING_ARRAY, "array of strings")

typedef enum {
#define SGM_X(e, s) SGM_KEY_##e,
  SGM_KEY_TYPE_LIST(SGM_X)
#undef SGM_X
} SgmKeyType;

/// One key. `def` is the default as a TOML literal ("0.1", "\"exact\"", "[64, 64]") or NULL;
/// `required` keys have no default and must be given; optional keys with def == NULL are unset
/// unless given (sgm_config_is_set tells). Integers accept any TOML integer; floats accept integers
/// too. `min`/`max` bound reals, integers and every array element (use -INFINITY/INFINITY for
/// none); `choices` is "a|b|c" for strings (NULL for free text); `unit` is "" for dimensionless.
typedef struct {
  const char *name;
  SgmKeyType type;
  const char *def;
  int required;
  double min, max;
  const char *choices;
  const char *unit;
  const char *doc;
} SgmKeySpec;

/// A table: its name, a one-line description, and its keys (terminated by a {NULL} entry).
/// `open` tables ([petsc]) accept any key (values are passed through, not validated).
typedef struct {
  const char *name;
  const char *doc;
  const SgmKeySpec *keys;
  int open;
} SgmTableSpec;

/// Registers a table (idempotent for the same pointer; a second table of the same name is an
/// internal error). Not collective.
PetscErrorCode sgm_schema_register(const SgmTableSpec *table);

/// The registered tables in registration order. Not collective.
PetscErrorCode sgm_schema_tables(int *n, const SgmTableSpec *const **tables);

/// Finds a table / a key; NULL when absent.
const SgmTableSpec *sgm_schema_find_table(const char *table);
const SgmKeySpec *sgm_schema_find_key(const char *table, const char *key);

/// Name of a key type ("float", ...).
const char *sgm_key_type_name(SgmKeyType t);

/// Cross-key checks ("trap_A needs boundary = open"): a function registered for a table runs on
/// rank 0 during validation, after every key has passed its own type and range checks, and
/// reports each problem with sgm_config_problem; problems are printed with the others, as
/// `input.toml:LINE: [table] key: message`, and the run stops before any work.
typedef struct SgmProblems_ *SgmProblems;
typedef PetscErrorCode (*SgmConfigCheckFn)(SgmConfig cfg, SgmProblems pb);
PetscErrorCode sgm_schema_register_check(const char *table, SgmConfigCheckFn fn);
/// Reports a problem with `key` ("table.key"; its line is the line where it was given).
void sgm_config_problem(SgmProblems pb, const char *key, const char *fmt, ...)
    PETSC_ATTRIBUTE_FORMAT(3, 4);

/// *order = -1 if `stage` is not in [run] stages, 1 if `maker` runs before it, else 0.
PetscErrorCode sgm_config_stage_order(SgmConfig cfg, const char *maker, const char *stage,
                                      int *order);
/// For a stage that reads a file named by `key` ("table.key"), or when `key` is unset by
/// `name` in [run] output, which the stage `maker` writes: if `stage` is in [run] stages, reports
/// a problem on `key` when the file cannot be read or is not HDF5, unless it is the file `maker`
/// writes and `maker` runs before `stage`. So a missing model or trajectory stops the run before
/// its output directory is touched. `there` (may be NULL) receives the path when the file is
/// there now and HDF5, else "".
PetscErrorCode sgm_config_check_input_file(SgmConfig cfg, SgmProblems pb, const char *key,
                                           const char *name, const char *stage, const char *maker,
                                           char *there, size_t len);

/// Registers every table and every stage of the program (src/app/register.c). Idempotent.
PetscErrorCode sgm_register_all(void);

#endif
