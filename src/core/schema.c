/* Registries of the input schema (tables of typed keys) and of stages.
 *
 * Fixed-size arrays: the program has a few dozen tables and stages, registration happens once at
 * start-up, and a static array keeps lookup trivial and leak-free. Re-registering the same pointer
 * is a no-op so tests may call sgm_register_all() repeatedly.
 */
#include "sgm/schema.h"
#include "sgm/run.h"

#include <string.h>

#define SGM_MAX_TABLES 64
#define SGM_MAX_STAGES 32

static const SgmTableSpec *tables[SGM_MAX_TABLES];
static int ntables;

static struct {
  const char *table;
  SgmConfigCheckFn fn;
} checks[SGM_MAX_TABLES];
static int nchecks;

static const char *stage_names[SGM_MAX_STAGES];
static const char *stage_docs[SGM_MAX_STAGES];
static SgmStageFn stage_fns[SGM_MAX_STAGES];
static int nstages;

const char *sgm_key_type_name(SgmKeyType t)
{
  static const char *names[] = {
#define SGM_X(e, s) s,
      SGM_KEY_TYPE_LIST(SGM_X)
#undef SGM_X
  };
  return (int)t >= 0 && (size_t)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

PetscErrorCode sgm_schema_register(const SgmTableSpec *table)
{
  PetscFunctionBeginUser;
  for (int i = 0; i < ntables; i++) {
    if (tables[i] == table) PetscFunctionReturn(PETSC_SUCCESS);
    PetscCheck(strcmp(tables[i]->name, table->name), PETSC_COMM_SELF, PETSC_ERR_PLIB,
               "schema table [%s] registered twice", table->name);
  }
  PetscCheck(ntables < SGM_MAX_TABLES, PETSC_COMM_SELF, PETSC_ERR_PLIB, "too many schema tables");
  tables[ntables++] = table;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_schema_tables(int *n, const SgmTableSpec *const **t)
{
  PetscFunctionBeginUser;
  *n = ntables;
  *t = tables;
  PetscFunctionReturn(PETSC_SUCCESS);
}

const SgmTableSpec *sgm_schema_find_table(const char *name)
{
  for (int i = 0; i < ntables; i++)
    if (!strcmp(tables[i]->name, name)) return tables[i];
  return NULL;
}

const SgmKeySpec *sgm_schema_find_key(const char *table, const char *key)
{
  const SgmTableSpec *t = sgm_schema_find_table(table);
  if (!t || !t->keys) return NULL;
  for (const SgmKeySpec *k = t->keys; k->name; k++)
    if (!strcmp(k->name, key)) return k;
  return NULL;
}

PetscErrorCode sgm_schema_register_check(const char *table, SgmConfigCheckFn fn)
{
  PetscFunctionBeginUser;
  for (int i = 0; i < nchecks; i++)
    if (checks[i].fn == fn) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCheck(nchecks < SGM_MAX_TABLES, PETSC_COMM_SELF, PETSC_ERR_PLIB, "too many config checks");
  checks[nchecks].table = table;
  checks[nchecks++].fn = fn;
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Used by config.c: the i-th registered check, or NULL past the end. */
SgmConfigCheckFn sgm_schema_check_at(int i, const char **table)
{
  if (i >= nchecks) return NULL;
  *table = checks[i].table;
  return checks[i].fn;
}

PetscErrorCode sgm_stage_register(const char *name, SgmStageFn fn, const char *doc)
{
  PetscFunctionBeginUser;
  for (int i = 0; i < nstages; i++) {
    if (!strcmp(stage_names[i], name)) {
      PetscCheck(stage_fns[i] == fn, PETSC_COMM_SELF, PETSC_ERR_PLIB, "stage %s registered twice",
                 name);
      PetscFunctionReturn(PETSC_SUCCESS);
    }
  }
  PetscCheck(nstages < SGM_MAX_STAGES, PETSC_COMM_SELF, PETSC_ERR_PLIB, "too many stages");
  stage_names[nstages] = name;
  stage_docs[nstages] = doc;
  stage_fns[nstages++] = fn;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_stage_find(const char *name, SgmStageFn *fn)
{
  PetscFunctionBeginUser;
  *fn = NULL;
  for (int i = 0; i < nstages; i++)
    if (!strcmp(stage_names[i], name)) *fn = stage_fns[i];
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_stage_list(int *n, const char *const **names, const char *const **docs)
{
  PetscFunctionBeginUser;
  *n = nstages;
  *names = stage_names;
  if (docs) *docs = stage_docs;
  PetscFunctionReturn(PETSC_SUCCESS);
}
