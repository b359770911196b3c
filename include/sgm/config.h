/* The run configuration: a TOML document checked against the typed schema.
 *
 * Owns: reading input.toml on rank 0, applying --set overrides, validating every key against the
 * schema (include/sgm/schema.h), filling defaults, broadcasting the resolved configuration, and
 * typed getters. After sgm_config_create succeeds every declared key has a value, so getters
 * cannot fail for a key the schema declares; asking for an undeclared key is a programming error.
 */
#ifndef SGM_CONFIG_H
#define SGM_CONFIG_H

#include <petscsys.h>

typedef struct SgmConfig_ *SgmConfig;

/// Collective on comm. Rank 0 reads `path`, applies the `nset` overrides "table.key=value",
/// validates; on any problem all messages are printed (file:line: [table] key: message) and the
/// call returns SGM_ERR_USER on every rank. On success every rank holds the same configuration.
PetscErrorCode sgm_config_create(MPI_Comm comm, const char *path, int nset, const char *const *sets,
                                 SgmConfig *cfg);

/// Parses a configuration from a string (tests; `name` is used in messages). Collective.
PetscErrorCode sgm_config_create_from_string(MPI_Comm comm, const char *name, const char *text,
                                             int nset, const char *const *sets, SgmConfig *cfg);

/// Validates `len` bytes of TOML text with overrides, writing every problem to errfp exactly as
/// sgm_config_create reports them. Returns the number of problems. Not collective (no MPI).
int sgm_config_check_text(const char *name, const char *text, size_t len, int nset,
                          const char *const *sets, FILE *errfp);

/// Frees; accepts NULL and NULLs the handle. Not collective.
PetscErrorCode sgm_config_destroy(SgmConfig *cfg);

/// Typed getters; `key` is "table.key". Not collective.
PetscErrorCode sgm_config_get_real(SgmConfig cfg, const char *key, double *v);
PetscErrorCode sgm_config_get_int(SgmConfig cfg, const char *key, int64_t *v);
PetscErrorCode sgm_config_get_bool(SgmConfig cfg, const char *key, PetscBool *v);
/// The returned string is owned by cfg.
PetscErrorCode sgm_config_get_string(SgmConfig cfg, const char *key, const char **v);
/// Arrays: *n elements; the returned buffer is owned by cfg.
PetscErrorCode sgm_config_get_real_array(SgmConfig cfg, const char *key, int *n, const double **v);
PetscErrorCode sgm_config_get_int_array(SgmConfig cfg, const char *key, int *n, const int64_t **v);
PetscErrorCode sgm_config_get_string_array(SgmConfig cfg, const char *key, int *n,
                                           const char *const **v);

/// PETSC_TRUE when the key was given in the file or by --set (not a default).
PetscErrorCode sgm_config_is_set(SgmConfig cfg, const char *key, PetscBool *set);

/// Name of the input (file path) for messages.
const char *sgm_config_source(SgmConfig cfg);

/// Prints the resolved configuration (every key, value, default or set) on rank 0 of comm.
PetscErrorCode sgm_config_print(SgmConfig cfg, MPI_Comm comm, FILE *fp);

/// The resolved configuration as TOML text (stored as an attribute in output files).
/// The returned string is owned by cfg.
const char *sgm_config_resolved_toml(SgmConfig cfg);

#endif
