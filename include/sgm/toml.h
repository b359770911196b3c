/* TOML 1.0 reader written for sgm_hpc (Debian packages no C TOML library).
 *
 * Owns: parsing a complete document into an immutable tree of values, and freeing it.
 * Plain C over a byte buffer: no PETSc, no MPI, no global state, so it can be fuzzed on its
 * own (tests/fuzz_toml.c). Every value remembers the line and column where it was defined,
 * so the schema validator can report `input.toml:LINE: [table] key: message`.
 */
#ifndef SGM_TOML_H
#define SGM_TOML_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  SGM_TOML_STRING,
  SGM_TOML_INTEGER,
  SGM_TOML_FLOAT,
  SGM_TOML_BOOLEAN,
  SGM_TOML_DATETIME, /* offset/local date-time, local date, local time; kept as its text */
  SGM_TOML_ARRAY,
  SGM_TOML_TABLE
} SgmTomlType;

typedef struct SgmTomlValue SgmTomlValue;

struct SgmTomlValue {
  SgmTomlType type;
  int line, col; /* 1-based position where the value (or, for tables, the header) starts */
  union {
    struct {
      char *str; /* NUL-terminated UTF-8; may contain embedded NUL via \u0000 */
      size_t len;
    } s;       /* STRING and DATETIME */
    int64_t i; /* INTEGER */
    double f;  /* FLOAT */
    int b;     /* BOOLEAN */
    struct {
      SgmTomlValue **items;
      size_t n;
    } arr; /* ARRAY */
    struct {
      char **keys; /* in document order */
      SgmTomlValue **vals;
      int *key_line; /* line of each key's definition */
      size_t n;
    } tab; /* TABLE */
  } u;
};

/// Parses `len` bytes of `text` (need not be NUL-terminated). On success returns 0 and sets
/// *root to a TABLE owned by the caller (free with sgm_toml_free). On failure returns -1, sets
/// *root to NULL and writes "LINE:COL: message (expected ...)" into errbuf (always terminated).
int sgm_toml_parse(const char *text, size_t len, SgmTomlValue **root, char *errbuf, size_t errlen);

/// Frees a tree from sgm_toml_parse; accepts NULL.
void sgm_toml_free(SgmTomlValue *v);

/// Looks up `key` (a single key, not dotted) in a TABLE; NULL when absent or not a table.
const SgmTomlValue *sgm_toml_get(const SgmTomlValue *table, const char *key);

/// Name of a type, for messages ("string", "integer", ...).
const char *sgm_toml_type_name(SgmTomlType t);

/// Deepest nesting of tables and arrays (dotted-key parts, headers, inline tables, arrays) that
/// sgm_toml_parse accepts; deeper documents fail with an error instead of exhausting the stack.
#define SGM_TOML_MAX_DEPTH 256

/// Canonical text form of a tree (format: tests/data/toml/README.md): one line per leaf in
/// document order, `dotted.key[0] = type:value`. Returns a malloc'd NUL-terminated string the
/// caller frees ("" for an empty table), or NULL when out of memory. Used by tests and fuzzing.
char *sgm_toml_dump(const SgmTomlValue *root);

#endif
