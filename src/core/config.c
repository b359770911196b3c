/* The run configuration: input.toml checked against the registered schema.
 *
 * Owns: reading the file on rank 0, applying --set overrides, validating every key (collecting all
 * problems before reporting, so a user fixes a file in one pass), filling defaults, broadcasting,
 * the typed getters, the [petsc] pass-through into the PETSc options database, and the printout of
 * --check.
 *
 * Trade-offs: the resolved configuration is broadcast as TOML text written by this file (every key
 * with its final value) plus one int per key (was it set, on which line); other ranks parse that
 * text with the same reader. Serialising through TOML keeps one code path for values and makes the
 * resolved text itself the record stored in output files. Lookups are linear scans by "table.key":
 * they happen at set-up, never in a hot loop. The validator is plain C that appends messages to a
 * list; only the public functions speak PETSc.
 */
#include "sgm/config.h"
#include "sgm/core.h"
#include "sgm/run.h"
#include "sgm/schema.h"
#include "sgm/toml.h"

#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  const SgmTableSpec *table;
  const SgmKeySpec *spec; /* NULL for keys of open tables ([petsc]) */
  char *open_key;         /* key name when spec == NULL */
  char *full;             /* "table.key" */
  int set;                /* given in the file or by --set */
  int line;               /* where it was given (0: default or --set) */
  double r;
  int64_t i;
  PetscBool b;
  char *s;
  int n;
  double *ra;
  int64_t *ia;
  char **sa;
} Entry;

struct SgmConfig_ {
  char *source;
  Entry *e;
  int ne;
  char *resolved;
};

/* ---- a growable string and a message list (plain C) ---- */

typedef struct {
  char *p;
  size_t n, cap;
} Str;

static void str_grow(Str *s, size_t add)
{
  if (s->n + add + 1 <= s->cap) return;
  size_t cap = s->cap ? s->cap : 256;
  while (cap < s->n + add + 1) cap *= 2;
  char *p = realloc(s->p, cap);
  if (!p) abort(); /* out of memory while formatting a config: nothing sensible to do */
  s->p = p;
  s->cap = cap;
}

static void str_printf(Str *s, const char *fmt, ...) PETSC_ATTRIBUTE_FORMAT(2, 3);
static void str_printf(Str *s, const char *fmt, ...)
{
  va_list ap, aq;
  va_start(ap, fmt);
  va_copy(aq, ap);
  int k = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  str_grow(s, (size_t)k);
  vsnprintf(s->p + s->n, (size_t)k + 1, fmt, aq);
  va_end(aq);
  s->n += (size_t)k;
}

typedef struct {
  int line;
  char *msg;
} Msg;

typedef struct {
  const char *source;
  Msg *m;
  int n, cap;
} Msgs;

static void msg_add(Msgs *ms, int line, const char *fmt, ...) PETSC_ATTRIBUTE_FORMAT(3, 4);
static void msg_add(Msgs *ms, int line, const char *fmt, ...)
{
  va_list ap, aq;
  if (ms->n == ms->cap) {
    ms->cap = ms->cap ? 2 * ms->cap : 16;
    ms->m = realloc(ms->m, (size_t)ms->cap * sizeof *ms->m);
    if (!ms->m) abort();
  }
  va_start(ap, fmt);
  va_copy(aq, ap);
  int k = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *p = malloc((size_t)k + 1);
  if (!p) abort();
  vsnprintf(p, (size_t)k + 1, fmt, aq);
  va_end(aq);
  ms->m[ms->n].line = line;
  ms->m[ms->n++].msg = p;
}

static int msg_cmp(const void *a, const void *b)
{
  const Msg *x = a, *y = b;
  return (x->line > y->line) - (x->line < y->line);
}

/* ---- helpers ---- */

static char *xstrdup(const char *s)
{
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (!p) abort();
  memcpy(p, s, n);
  return p;
}

static int levenshtein(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 1000;
  int d[65][65];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

/* Best match for a misspelt key: in the same table first, then anywhere ("[simulate] dt"). */
static void suggest_key(const char *table, const char *key, char *out, size_t len)
{
  int n, best = 1000;
  const SgmTableSpec *const *t;
  out[0] = '\0';
  sgm_schema_tables(&n, &t);
  int limit = (int)strlen(key) / 3 < 2 ? 2 : (int)strlen(key) / 3;
  for (int pass = 0; pass < 2 && !out[0]; pass++)
    for (int i = 0; i < n; i++) {
      if ((pass == 0) != !strcmp(t[i]->name, table) || !t[i]->keys) continue;
      for (const SgmKeySpec *k = t[i]->keys; k->name; k++) {
        int d = pass == 0 ? levenshtein(key, k->name) : (strcmp(key, k->name) ? 1000 : 0);
        if (d <= limit && d < best) {
          best = d;
          if (pass == 0)
            snprintf(out, len, " (did you mean \"%s\"?)", k->name);
          else
            snprintf(out, len, " (did you mean [%s] %s?)", t[i]->name, k->name);
        }
      }
    }
}

static void suggest_table(const char *table, char *out, size_t len)
{
  int n, best = 1000;
  const SgmTableSpec *const *t;
  out[0] = '\0';
  sgm_schema_tables(&n, &t);
  for (int i = 0; i < n; i++) {
    int d = levenshtein(table, t[i]->name);
    if (d <= 2 && d < best) {
      best = d;
      snprintf(out, len, " (did you mean [%s]?)", t[i]->name);
    }
  }
}

static int choice_ok(const char *choices, const char *v)
{
  size_t lv = strlen(v);
  for (const char *p = choices; *p;) {
    const char *q = strchr(p, '|');
    size_t l = q ? (size_t)(q - p) : strlen(p);
    if (l == lv && !strncmp(p, v, l)) return 1;
    if (!q) break;
    p = q + 1;
  }
  return 0;
}

/* "@stages" in choices means: the registered stage names. */
static int string_choice_ok(const char *choices, const char *v, char *allowed, size_t len)
{
  if (!choices) return 1;
  if (!strcmp(choices, "@stages")) {
    int n;
    const char *const *names;
    size_t o = 0;
    sgm_stage_list(&n, &names, NULL);
    allowed[0] = '\0';
    for (int i = 0; i < n; i++) {
      if (!strcmp(names[i], v)) return 1;
      o += (size_t)snprintf(allowed + o, o < len ? len - o : 0, "%s%s", i ? "|" : "", names[i]);
      if (o >= len) o = len - 1;
    }
    return 0;
  }
  snprintf(allowed, len, "%s", choices);
  return choice_ok(choices, v);
}

static void fmt_real(Str *s, double v)
{
  if (isnan(v))
    str_printf(s, "nan");
  else if (isinf(v))
    str_printf(s, v > 0 ? "inf" : "-inf");
  else {
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    /* integers below 2^53 as such; otherwise the shortest text that reads back exactly */
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
      snprintf(buf, sizeof buf, "%.0f", v);
    else
      for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
      }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    str_printf(s, "%s", buf);
  }
}

static void fmt_string(Str *s, const char *v)
{
  str_printf(s, "\"");
  for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
    switch (*p) {
    case '"':
      str_printf(s, "\\\"");
      break;
    case '\\':
      str_printf(s, "\\\\");
      break;
    case '\n':
      str_printf(s, "\\n");
      break;
    case '\t':
      str_printf(s, "\\t");
      break;
    case '\r':
      str_printf(s, "\\r");
      break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        str_printf(s, "\\u%04x", *p);
      else
        str_printf(s, "%c", *p);
    }
  }
  str_printf(s, "\"");
}

static void fmt_value(Str *s, const Entry *e)
{
  if (!e->spec) {
    fmt_string(s, e->s);
    return;
  }
  switch (e->spec->type) {
  case SGM_KEY_REAL:
    fmt_real(s, e->r);
    break;
  case SGM_KEY_INT:
    str_printf(s, "%" PRId64, e->i);
    break;
  case SGM_KEY_BOOL:
    str_printf(s, "%s", e->b ? "true" : "false");
    break;
  case SGM_KEY_STRING:
    fmt_string(s, e->s);
    break;
  case SGM_KEY_REAL_ARRAY:
  case SGM_KEY_INT_ARRAY:
  case SGM_KEY_STRING_ARRAY:
    str_printf(s, "[");
    for (int k = 0; k < e->n; k++) {
      if (k) str_printf(s, ", ");
      if (e->spec->type == SGM_KEY_REAL_ARRAY)
        fmt_real(s, e->ra[k]);
      else if (e->spec->type == SGM_KEY_INT_ARRAY)
        str_printf(s, "%" PRId64, e->ia[k]);
      else
        fmt_string(s, e->sa[k]);
    }
    str_printf(s, "]");
    break;
  }
}

static void entry_clear_value(Entry *e)
{
  free(e->s);
  free(e->ra);
  free(e->ia);
  for (int k = 0; e->sa && k < e->n; k++) free(e->sa[k]);
  free(e->sa);
  e->s = NULL, e->ra = NULL, e->ia = NULL, e->sa = NULL, e->n = 0;
}

/* Text of a scalar TOML value for an open table ([petsc]): strings as-is, numbers as written. */
static int open_value_text(const SgmTomlValue *v, char **out)
{
  Str s = {0};
  switch (v->type) {
  case SGM_TOML_STRING:
    str_printf(&s, "%s", v->u.s.str);
    break;
  case SGM_TOML_INTEGER:
    str_printf(&s, "%" PRId64, v->u.i);
    break;
  case SGM_TOML_FLOAT:
    fmt_real(&s, v->u.f);
    break;
  case SGM_TOML_BOOLEAN:
    str_printf(&s, "%s", v->u.b ? "true" : "false");
    break;
  default:
    return -1;
  }
  *out = s.p ? s.p : xstrdup("");
  return 0;
}

static int check_range(const SgmKeySpec *k, double v, char *why, size_t len)
{
  if (isnan(v)) {
    snprintf(why, len, "value is not a number");
    return 0;
  }
  if (!(v >= k->min && v <= k->max)) {
    Str s = {0};
    str_printf(&s, "value ");
    fmt_real(&s, v);
    str_printf(&s, " is out of range [");
    fmt_real(&s, k->min);
    str_printf(&s, ", ");
    fmt_real(&s, k->max);
    str_printf(&s, "]");
    snprintf(why, len, "%s", s.p);
    free(s.p);
    return 0;
  }
  return 1;
}

/* Converts and checks one TOML value against its spec; on failure returns 0 with a reason. */
static int assign(Entry *e, const SgmTomlValue *v, char *why, size_t len)
{
  const SgmKeySpec *k = e->spec;
  SgmKeyType t = k->type;
  char allowed[512];
  entry_clear_value(e);
  switch (t) {
  case SGM_KEY_REAL:
    if (v->type == SGM_TOML_FLOAT)
      e->r = v->u.f;
    else if (v->type == SGM_TOML_INTEGER)
      e->r = (double)v->u.i;
    else
      goto type_error;
    return check_range(k, e->r, why, len);
  case SGM_KEY_INT:
    if (v->type != SGM_TOML_INTEGER) goto type_error;
    e->i = v->u.i;
    return check_range(k, (double)e->i, why, len);
  case SGM_KEY_BOOL:
    if (v->type != SGM_TOML_BOOLEAN) goto type_error;
    e->b = v->u.b ? PETSC_TRUE : PETSC_FALSE;
    return 1;
  case SGM_KEY_STRING:
    if (v->type != SGM_TOML_STRING) goto type_error;
    e->s = xstrdup(v->u.s.str);
    if (!string_choice_ok(k->choices, e->s, allowed, sizeof allowed)) {
      snprintf(why, len, "\"%s\" is not one of %s", e->s, allowed);
      return 0;
    }
    return 1;
  case SGM_KEY_REAL_ARRAY:
  case SGM_KEY_INT_ARRAY:
  case SGM_KEY_STRING_ARRAY: {
    if (v->type != SGM_TOML_ARRAY) goto type_error;
    int n = (int)v->u.arr.n;
    e->n = n;
    if (t == SGM_KEY_REAL_ARRAY) e->ra = calloc((size_t)n + 1, sizeof(double));
    if (t == SGM_KEY_INT_ARRAY) e->ia = calloc((size_t)n + 1, sizeof(int64_t));
    if (t == SGM_KEY_STRING_ARRAY) e->sa = calloc((size_t)n + 1, sizeof(char *));
    for (int j = 0; j < n; j++) {
      const SgmTomlValue *x = v->u.arr.items[j];
      char sub[400];
      if (t == SGM_KEY_REAL_ARRAY) {
        if (x->type == SGM_TOML_FLOAT)
          e->ra[j] = x->u.f;
        else if (x->type == SGM_TOML_INTEGER)
          e->ra[j] = (double)x->u.i;
        else
          goto elem_error;
        if (!check_range(k, e->ra[j], sub, sizeof sub)) {
          snprintf(why, len, "element %d: %s", j, sub);
          return 0;
        }
      } else if (t == SGM_KEY_INT_ARRAY) {
        if (x->type != SGM_TOML_INTEGER) goto elem_error;
        e->ia[j] = x->u.i;
        if (!check_range(k, (double)e->ia[j], sub, sizeof sub)) {
          snprintf(why, len, "element %d: %s", j, sub);
          return 0;
        }
      } else {
        if (x->type != SGM_TOML_STRING) goto elem_error;
        e->sa[j] = xstrdup(x->u.s.str);
        if (!string_choice_ok(k->choices, e->sa[j], allowed, sizeof allowed)) {
          snprintf(why, len, "element %d: \"%s\" is not one of %s", j, e->sa[j], allowed);
          return 0;
        }
      }
      continue;
    elem_error:
      snprintf(why, len, "element %d: expected %s, got %s", j,
               t == SGM_KEY_REAL_ARRAY  ? "float"
               : t == SGM_KEY_INT_ARRAY ? "integer"
                                        : "string",
               sgm_toml_type_name(x->type));
      return 0;
    }
    return 1;
  }
  }
type_error:
  snprintf(why, len, "expected %s, got %s", sgm_key_type_name(t), sgm_toml_type_name(v->type));
  return 0;
}

static Entry *find_entry(Entry *e, int ne, const char *table, const char *key)
{
  for (int i = 0; i < ne; i++) {
    if (strcmp(e[i].table->name, table)) continue;
    const char *name = e[i].spec ? e[i].spec->name : e[i].open_key;
    if (!strcmp(name, key)) return &e[i];
  }
  return NULL;
}

/* One entry per declared key, with defaults parsed by the same TOML reader. */
static int build_entries(Entry **pe, int *pne, int *cap, Msgs *ms)
{
  int n;
  const SgmTableSpec *const *t;
  sgm_schema_tables(&n, &t);
  int ne = 0;
  for (int i = 0; i < n; i++)
    for (const SgmKeySpec *k = t[i]->keys; k && k->name; k++) ne++;
  *cap = ne + 16;
  Entry *e = calloc((size_t)*cap, sizeof *e);
  if (!e) abort();
  ne = 0;
  for (int i = 0; i < n; i++)
    for (const SgmKeySpec *k = t[i]->keys; k && k->name; k++) {
      Entry *x = &e[ne++];
      Str full = {0};
      str_printf(&full, "%s.%s", t[i]->name, k->name);
      x->table = t[i];
      x->spec = k;
      x->full = full.p;
      if (k->def) {
        Str doc = {0};
        char err[256], why[512];
        SgmTomlValue *root;
        str_printf(&doc, "v = %s\n", k->def);
        if (sgm_toml_parse(doc.p, doc.n, &root, err, sizeof err)) {
          msg_add(ms, 0, "internal: default of [%s] %s does not parse: %s", t[i]->name, k->name,
                  err);
        } else {
          if (!assign(x, sgm_toml_get(root, "v"), why, sizeof why))
            msg_add(ms, 0, "internal: default of [%s] %s: %s", t[i]->name, k->name, why);
          sgm_toml_free(root);
        }
        free(doc.p);
      }
    }
  *pe = e;
  *pne = ne;
  return 0;
}

static Entry *add_open_entry(Entry **pe, int *pne, int *cap, const SgmTableSpec *t, const char *key)
{
  if (*pne == *cap) {
    *cap *= 2;
    *pe = realloc(*pe, (size_t)*cap * sizeof **pe);
    if (!*pe) abort();
  }
  Entry *x = &(*pe)[(*pne)++];
  memset(x, 0, sizeof *x);
  Str full = {0};
  str_printf(&full, "%s.%s", t->name, key);
  x->table = t;
  x->open_key = xstrdup(key);
  x->full = full.p;
  return x;
}

/* Applies one table of the document (or an override) to the entries. */
static void apply_value(Entry **pe, int *pne, int *cap, const SgmTableSpec *t, const char *key,
                        const SgmTomlValue *v, int line, const char *where, Msgs *ms)
{
  char why[600], sug[160];
  if (t->open) {
    Entry *x = find_entry(*pe, *pne, t->name, key);
    if (!x) x = add_open_entry(pe, pne, cap, t, key);
    free(x->s);
    x->s = NULL;
    if (open_value_text(v, &x->s)) {
      msg_add(ms, line, "%s[%s] %s: expected a string, number or boolean, got %s", where, t->name,
              key, sgm_toml_type_name(v->type));
      x->s = xstrdup("");
    }
    x->set = 1;
    x->line = line;
    return;
  }
  Entry *x = find_entry(*pe, *pne, t->name, key);
  if (!x) {
    suggest_key(t->name, key, sug, sizeof sug);
    msg_add(ms, line, "%s[%s] %s: unknown key%s", where, t->name, key, sug);
    return;
  }
  if (!assign(x, v, why, sizeof why)) {
    msg_add(ms, line, "%s[%s] %s: %s", where, t->name, key, why);
    x->set = 1; /* given, though invalid: not also "required key missing" */
    return;
  }
  x->set = 1;
  x->line = line;
}

static void apply_document(Entry **pe, int *pne, int *cap, const SgmTomlValue *root, Msgs *ms)
{
  char sug[160];
  for (size_t i = 0; i < root->u.tab.n; i++) {
    const char *tname = root->u.tab.keys[i];
    const SgmTomlValue *tv = root->u.tab.vals[i];
    int tline = root->u.tab.key_line ? root->u.tab.key_line[i] : tv->line;
    const SgmTableSpec *t = sgm_schema_find_table(tname);
    if (tv->type != SGM_TOML_TABLE) {
      msg_add(ms, tline, "%s: key outside any table (put it under a [table] header)", tname);
      continue;
    }
    if (!t) {
      suggest_table(tname, sug, sizeof sug);
      msg_add(ms, tline, "[%s]: unknown table%s", tname, sug);
      continue;
    }
    for (size_t j = 0; j < tv->u.tab.n; j++) {
      const char *key = tv->u.tab.keys[j];
      const SgmTomlValue *v = tv->u.tab.vals[j];
      int line = tv->u.tab.key_line ? tv->u.tab.key_line[j] : v->line;
      if (v->type == SGM_TOML_TABLE && !t->open) {
        char sug2[160];
        suggest_key(tname, key, sug2, sizeof sug2);
        msg_add(ms, line, "[%s] %s: unknown key (a sub-table; [%s] takes plain keys)%s", tname, key,
                tname, sug2);
        continue;
      }
      apply_value(pe, pne, cap, t, key, v, line, "", ms);
    }
  }
}

/* --set table.key=value: the value is TOML; a bare word is taken as a string for string keys. */
static void apply_override(Entry **pe, int *pne, int *cap, const char *set, Msgs *ms)
{
  char sug[160], err[256];
  const char *eq = strchr(set, '=');
  const char *dot = strchr(set, '.');
  if (!eq || !dot || dot > eq) {
    msg_add(ms, 0, "--set %s: expected table.key=value", set);
    return;
  }
  char table[128], key[128];
  snprintf(table, sizeof table, "%.*s", (int)(dot - set), set);
  snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
  const char *val = eq + 1;
  const SgmTableSpec *t = sgm_schema_find_table(table);
  char where[300];
  snprintf(where, sizeof where, "--set %s.%s: ", table, key);
  if (!t) {
    suggest_table(table, sug, sizeof sug);
    msg_add(ms, 0, "--set %s.%s: unknown table [%s]%s", table, key, table, sug);
    return;
  }
  Str doc = {0};
  SgmTomlValue *root = NULL;
  str_printf(&doc, "v = %s\n", val);
  if (sgm_toml_parse(doc.p, doc.n, &root, err, sizeof err)) {
    const SgmKeySpec *k = sgm_schema_find_key(table, key);
    if ((k && (k->type == SGM_KEY_STRING)) || (t->open && !k)) {
      doc.n = 0;
      str_printf(&doc, "v = ");
      Str q = {0};
      fmt_string(&q, val);
      str_printf(&doc, "%s\n", q.p);
      free(q.p);
      if (sgm_toml_parse(doc.p, doc.n, &root, err, sizeof err)) root = NULL;
    }
    if (!root) {
      msg_add(ms, 0, "%svalue \"%s\" is not a TOML value (%s)", where, val, err);
      free(doc.p);
      return;
    }
  }
  apply_value(pe, pne, cap, t, key, sgm_toml_get(root, "v"), 0, where, ms);
  sgm_toml_free(root);
  free(doc.p);
}

SgmConfigCheckFn sgm_schema_check_at(int i, const char **table);

struct SgmProblems_ {
  Msgs *ms;
  Entry *e;
  int ne;
};

void sgm_config_problem(SgmProblems pb, const char *key, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int line = 0;
  for (int i = 0; i < pb->ne; i++)
    if (!strcmp(pb->e[i].full, key)) line = pb->e[i].line;
  const char *dot = strchr(key, '.');
  msg_add(pb->ms, line, "[%.*s] %s: %s", dot ? (int)(dot - key) : 0, key, dot ? dot + 1 : key, msg);
}

PetscErrorCode sgm_config_stage_order(SgmConfig cfg, const char *maker, const char *stage,
                                      int *order)
{
  int nst, i, made = 0;
  const char *const *st;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string_array(cfg, "run.stages", &nst, &st));
  for (i = 0; i < nst && strcmp(st[i], stage); i++)
    if (!strcmp(st[i], maker)) made = 1;
  *order = i == nst ? -1 : made;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_check_input_file(SgmConfig cfg, SgmProblems pb, const char *key,
                                           const char *name, const char *stage, const char *maker,
                                           char *there, size_t len)
{
  PetscBool set;
  const char *path, *out, *dot = strchr(key, '.');
  char def[PETSC_MAX_PATH_LEN];
  int made;
  PetscFunctionBeginUser;
  if (there && len) there[0] = 0;
  PetscCall(sgm_config_stage_order(cfg, maker, stage, &made));
  if (made < 0) PetscFunctionReturn(PETSC_SUCCESS); /* the stage does not run */
  PetscCall(sgm_config_get_string(cfg, "run.output", &out));
  snprintf(def, sizeof def, "%s/%s", out, name);
  PetscCall(sgm_config_is_set(cfg, key, &set));
  path = set ? NULL : def;
  if (set) PetscCall(sgm_config_get_string(cfg, key, &path));
  /* the file the earlier stage writes: nothing to read yet */
  if (made && !strcmp(path, def)) PetscFunctionReturn(PETSC_SUCCESS);
  if (!set && !dot) PetscFunctionReturn(PETSC_SUCCESS);
  if (access(path, R_OK)) {
    if (set)
      sgm_config_problem(pb, key, "cannot read %s: %s", path, strerror(errno));
    else
      sgm_config_problem(pb, key,
                         "unset, so the %s stage reads %s, which cannot be read (%s): run the %s "
                         "stage before it or set [%.*s] %s",
                         stage, def, strerror(errno), maker, (int)(dot - key), key, dot + 1);
  } else if (H5Fis_hdf5(path) <= 0) {
    if (set)
      sgm_config_problem(pb, key, "%s is not an HDF5 file", path);
    else
      sgm_config_problem(pb, key, "unset, so the %s stage reads %s, which is not an HDF5 file",
                         stage, def);
  } else if (there && len)
    snprintf(there, len, "%s", path);
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Cross-key checks of registered tables, on a well-typed configuration. */
static void run_checks(const char *source, Entry *e, int ne, Msgs *ms)
{
  struct SgmConfig_ view = {(char *)source, e, ne, NULL};
  struct SgmProblems_ pb = {ms, e, ne};
  const char *table;
  SgmConfigCheckFn fn;
  for (int i = 0; (fn = sgm_schema_check_at(i, &table)); i++) {
    PetscErrorCode ierr = fn(&view, &pb);
    if (ierr) msg_add(ms, 0, "internal: the checks of [%s] failed with error %d", table, (int)ierr);
  }
}

static void check_required(Entry *e, int ne, const SgmTomlValue *root, Msgs *ms)
{
  for (int i = 0; i < ne; i++) {
    if (!e[i].spec || !e[i].spec->required || e[i].set) continue;
    const SgmTomlValue *tv = root ? sgm_toml_get(root, e[i].table->name) : NULL;
    if (tv)
      msg_add(ms, tv->line, "[%s] %s: required key missing", e[i].table->name, e[i].spec->name);
    else
      msg_add(ms, 1, "[%s] %s: required key missing (and there is no [%s] table)", e[i].table->name,
              e[i].spec->name, e[i].table->name);
  }
}

static char *resolved_text(const Entry *e, int ne)
{
  Str s = {0};
  const SgmTableSpec *cur = NULL;
  str_printf(&s, "# resolved configuration written by sgm_hpc %s\n", sgm_version());
  for (int i = 0; i < ne; i++) {
    if (!e[i].spec && !e[i].set) continue;
    if (e[i].spec && !e[i].spec->def && !e[i].set) continue; /* optional and unset */
    if (e[i].table != cur) {
      cur = e[i].table;
      str_printf(&s, "\n[%s]\n", cur->name);
    }
    const char *name = e[i].spec ? e[i].spec->name : e[i].open_key;
    if (e[i].spec)
      str_printf(&s, "%s = ", name);
    else {
      Str q = {0};
      fmt_string(&q, name);
      str_printf(&s, "%s = ", q.p);
      free(q.p);
    }
    fmt_value(&s, &e[i]);
    str_printf(&s, "\n");
  }
  return s.p;
}

static void free_entries(Entry *e, int ne)
{
  for (int i = 0; e && i < ne; i++) {
    entry_clear_value(&e[i]);
    free(e[i].full);
    free(e[i].open_key);
  }
  free(e);
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  Str s = {0};
  char buf[65536];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
    str_grow(&s, k);
    memcpy(s.p + s.n, buf, k);
    s.n += k;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    snprintf(err, errlen, "%s: read error", path);
    free(s.p);
    return NULL;
  }
  str_grow(&s, 0);
  s.p[s.n] = '\0';
  *len = s.n;
  return s.p;
}

/* Rank-0 work: everything from text to entries or messages. Returns number of problems. */
static int resolve(const char *source, const char *text, size_t len, int nset,
                   const char *const *sets, Entry **pe, int *pne, FILE *errfp)
{
  Msgs ms = {source, NULL, 0, 0};
  char err[512];
  int cap;
  SgmTomlValue *root = NULL;
  build_entries(pe, pne, &cap, &ms);
  if (sgm_toml_parse(text, len, &root, err, sizeof err)) {
    /* err is "LINE:COL: message" */
    fprintf(errfp, "%s:%s\n", source, err);
    free_entries(*pe, *pne);
    *pe = NULL;
    for (int i = 0; i < ms.n; i++) free(ms.m[i].msg);
    free(ms.m);
    return 1;
  }
  apply_document(pe, pne, &cap, root, &ms);
  for (int i = 0; i < nset; i++) apply_override(pe, pne, &cap, sets[i], &ms);
  check_required(*pe, *pne, root, &ms);
  if (ms.n == 0) run_checks(source, *pe, *pne, &ms);
  sgm_toml_free(root);
  if (ms.n) qsort(ms.m, (size_t)ms.n, sizeof *ms.m, msg_cmp);
  for (int i = 0; i < ms.n; i++) {
    if (ms.m[i].line > 0)
      fprintf(errfp, "%s:%d: %s\n", source, ms.m[i].line, ms.m[i].msg);
    else
      fprintf(errfp, "%s: %s\n", source, ms.m[i].msg);
    free(ms.m[i].msg);
  }
  free(ms.m);
  int nbad = ms.n;
  if (nbad) {
    fprintf(errfp,
            "%s: %d problem%s in the configuration; nothing was run "
            "(docs/input.md lists every key)\n",
            source, nbad, nbad == 1 ? "" : "s");
    free_entries(*pe, *pne);
    *pe = NULL;
  }
  return nbad;
}

int sgm_config_check_text(const char *name, const char *text, size_t len, int nset,
                          const char *const *sets, FILE *errfp)
{
  Entry *e = NULL;
  int ne = 0;
  int bad = resolve(name, text, len, nset, sets, &e, &ne, errfp);
  free_entries(e, ne);
  return bad;
}

static PetscErrorCode insert_petsc_options(SgmConfig cfg)
{
  PetscFunctionBeginUser;
  for (int i = 0; i < cfg->ne; i++) {
    Entry *x = &cfg->e[i];
    if (x->spec || !x->table->open || strcmp(x->table->name, "petsc")) continue;
    char opt[256];
    snprintf(opt, sizeof opt, "-%s", x->open_key[0] == '-' ? x->open_key + 1 : x->open_key);
    PetscCall(PetscOptionsSetValue(NULL, opt, x->s[0] ? x->s : NULL));
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode config_from_text(MPI_Comm comm, const char *source, const char *text,
                                       size_t len, const char *readerr, int nset,
                                       const char *const *sets, SgmConfig *out)
{
  int rank, ok = 0;
  Entry *e = NULL;
  int ne = 0;
  char *resolved = NULL;
  int64_t rlen = 0;
  int *flags = NULL;

  PetscFunctionBeginUser;
  *out = NULL;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    if (readerr)
      fprintf(stderr, "%s\n", readerr);
    else if (resolve(source, text, len, nset, sets, &e, &ne, stderr) == 0) {
      resolved = resolved_text(e, ne);
      rlen = (int64_t)strlen(resolved) + 1;
      ok = 1;
    }
    fflush(stderr);
  }
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  if (!ok) PetscFunctionReturn(SGM_ERR_USER); /* messages printed; main exits with status 2 */
  PetscCallMPI(MPI_Bcast(&rlen, 1, MPI_INT64_T, 0, comm));
  if (rank != 0) {
    resolved = malloc((size_t)rlen);
    PetscCheck(resolved, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  }
  PetscCallMPI(MPI_Bcast(resolved, (int)rlen, MPI_CHAR, 0, comm));
  if (rank != 0) {
    /* The resolved text is valid by construction; parse it the same way. */
    char *rerr = NULL;
    int bad = resolve(source, resolved, (size_t)rlen - 1, 0, NULL, &e, &ne, stderr);
    PetscCheck(!bad, PETSC_COMM_SELF, PETSC_ERR_PLIB, "resolved configuration did not re-parse%s",
               rerr ? rerr : "");
  }
  PetscCallMPI(MPI_Bcast(&ne, 1, MPI_INT, 0, comm));
  flags = malloc(2 * (size_t)ne * sizeof(int));
  PetscCheck(flags, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  if (rank == 0)
    for (int i = 0; i < ne; i++) flags[2 * i] = e[i].set, flags[2 * i + 1] = e[i].line;
  PetscCallMPI(MPI_Bcast(flags, 2 * ne, MPI_INT, 0, comm));
  if (rank != 0)
    for (int i = 0; i < ne; i++) e[i].set = flags[2 * i], e[i].line = flags[2 * i + 1];
  free(flags);

  SgmConfig cfg = calloc(1, sizeof *cfg);
  PetscCheck(cfg, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  cfg->source = xstrdup(source);
  cfg->e = e;
  cfg->ne = ne;
  cfg->resolved = resolved;
  PetscCall(insert_petsc_options(cfg));
  *out = cfg;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_create(MPI_Comm comm, const char *path, int nset, const char *const *sets,
                                 SgmConfig *cfg)
{
  int rank;
  char *text = NULL, err[PETSC_MAX_PATH_LEN + 128];
  size_t len = 0;
  PetscErrorCode ierr;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  err[0] = '\0';
  if (rank == 0) text = read_file(path, &len, err, sizeof err);
  ierr = config_from_text(comm, path, text, len, rank == 0 && !text ? err : NULL, nset, sets, cfg);
  free(text);
  PetscFunctionReturn(ierr);
}

PetscErrorCode sgm_config_create_from_string(MPI_Comm comm, const char *name, const char *text,
                                             int nset, const char *const *sets, SgmConfig *cfg)
{
  PetscFunctionBeginUser;
  PetscFunctionReturn(config_from_text(comm, name, text, strlen(text), NULL, nset, sets, cfg));
}

PetscErrorCode sgm_config_destroy(SgmConfig *cfg)
{
  PetscFunctionBeginUser;
  if (!cfg || !*cfg) PetscFunctionReturn(PETSC_SUCCESS);
  free_entries((*cfg)->e, (*cfg)->ne);
  free((*cfg)->source);
  free((*cfg)->resolved);
  free(*cfg);
  *cfg = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode get(SgmConfig cfg, const char *key, SgmKeyType type, Entry **x)
{
  PetscFunctionBeginUser;
  *x = NULL;
  for (int i = 0; i < cfg->ne; i++)
    if (!strcmp(cfg->e[i].full, key)) *x = &cfg->e[i];
  PetscCheck(*x && (*x)->spec, PETSC_COMM_SELF, PETSC_ERR_PLIB, "key %s is not in the schema", key);
  PetscCheck((*x)->spec->type == type, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "key %s is a %s, asked for as %s", key, sgm_key_type_name((*x)->spec->type),
             sgm_key_type_name(type));
  PetscCheck((*x)->set || (*x)->spec->def, PETSC_COMM_SELF, PETSC_ERR_PLIB,
             "optional key %s has no value: check sgm_config_is_set first", key);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_real(SgmConfig cfg, const char *key, double *v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_REAL, &x));
  *v = x->r;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_int(SgmConfig cfg, const char *key, int64_t *v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_INT, &x));
  *v = x->i;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_bool(SgmConfig cfg, const char *key, PetscBool *v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_BOOL, &x));
  *v = x->b;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_string(SgmConfig cfg, const char *key, const char **v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_STRING, &x));
  *v = x->s;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_real_array(SgmConfig cfg, const char *key, int *n, const double **v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_REAL_ARRAY, &x));
  *n = x->n;
  *v = x->ra;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_int_array(SgmConfig cfg, const char *key, int *n, const int64_t **v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_INT_ARRAY, &x));
  *n = x->n;
  *v = x->ia;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_get_string_array(SgmConfig cfg, const char *key, int *n,
                                           const char *const **v)
{
  Entry *x;
  PetscFunctionBeginUser;
  PetscCall(get(cfg, key, SGM_KEY_STRING_ARRAY, &x));
  *n = x->n;
  *v = (const char *const *)x->sa;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_config_is_set(SgmConfig cfg, const char *key, PetscBool *set)
{
  PetscFunctionBeginUser;
  *set = PETSC_FALSE;
  for (int i = 0; i < cfg->ne; i++)
    if (!strcmp(cfg->e[i].full, key)) *set = cfg->e[i].set ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(PETSC_SUCCESS);
}

const char *sgm_config_source(SgmConfig cfg)
{
  return cfg->source;
}

const char *sgm_config_resolved_toml(SgmConfig cfg)
{
  return cfg->resolved;
}

PetscErrorCode sgm_config_print(SgmConfig cfg, MPI_Comm comm, FILE *fp)
{
  int rank;
  const SgmTableSpec *cur = NULL;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank != 0) PetscFunctionReturn(PETSC_SUCCESS);
  fprintf(fp, "# %s: resolved configuration (every key; '# set' = given, '# default' = not)\n",
          cfg->source);
  for (int i = 0; i < cfg->ne; i++) {
    Entry *x = &cfg->e[i];
    if (x->table != cur) {
      cur = x->table;
      fprintf(fp, "\n[%s]\n", cur->name);
    }
    Str s = {0};
    const char *name = x->spec ? x->spec->name : x->open_key;
    if (x->spec && !x->spec->def && !x->set) {
      fprintf(fp, "# %-22s (unset; optional)\n", name);
      continue;
    }
    fmt_value(&s, x);
    char tag[64];
    if (x->set && x->line)
      snprintf(tag, sizeof tag, "set, line %d", x->line);
    else
      snprintf(tag, sizeof tag, "%s", x->set ? "set by --set" : "default");
    const char *unit = x->spec && x->spec->unit && x->spec->unit[0] ? x->spec->unit : NULL;
    fprintf(fp, "%-24s = %-24s # %s%s%s\n", name, s.p, tag, unit ? "; unit: " : "",
            unit ? unit : "");
    free(s.p);
  }
  fflush(fp);
  PetscFunctionReturn(PETSC_SUCCESS);
}
