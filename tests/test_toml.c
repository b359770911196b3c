/* Unit tests of the TOML reader (src/core/toml.c).
 *
 * The corpus in tests/data/toml (format: tests/data/toml/README.md) is the main check: every valid
 * document must dump exactly to its hand-written .expect, every invalid one must fail at the
 * expected LINE[:COL] with the expected message substring. The focused tests below check values
 * against C constants (int64 extremes, DBL_MAX-scale floats, NaN sign bits, UTF-8 bytes of
 * escapes), positions, the public lookup, error-buffer handling and scaling on large documents. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"
#include "sgm/toml.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MIN_CORPUS = 45 };

static char *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0, k;
  char *buf = malloc(cap + 1);
  while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap) {
      char *b = realloc(buf, (cap *= 2) + 1);
      if (!b) free(buf);
      buf = b;
    }
  }
  fclose(f);
  if (buf) buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

static int cmp_names(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted base names (without .toml) of the documents in dir; returns the count. */
static size_t list_corpus(const char *dir, char ***names)
{
  DIR *d = opendir(dir);
  size_t n = 0, cap = 0;
  *names = NULL;
  ck_assert_msg(d != NULL, "cannot open corpus directory %s", dir);
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l < 6 || strcmp(e->d_name + l - 5, ".toml") != 0) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      *names = realloc(*names, cap * sizeof **names);
      ck_assert_ptr_nonnull(*names);
    }
    (*names)[n] = malloc(l - 4);
    ck_assert_ptr_nonnull((*names)[n]);
    memcpy((*names)[n], e->d_name, l - 5);
    (*names)[n][l - 5] = '\0';
    n++;
  }
  closedir(d);
  qsort(*names, n, sizeof **names, cmp_names);
  return n;
}

static void free_names(char **names, size_t n)
{
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* One corpus document: 0 when it passes, else 1 (details on stderr). */
typedef size_t (*CorpusCheck)(const char *name, const char *text, size_t len, char *expect);

/* Every <name>.toml of data/toml/<kind> (at least MIN_CORPUS) with its <name>.expect, checked. */
static void run_corpus(const char *kind, CorpusCheck check)
{
  char dir[512], **names, path[1024];
  snprintf(dir, sizeof dir, "%s/toml/%s", SGM_TEST_DATA, kind);
  size_t n = list_corpus(dir, &names), nfail = 0;
  ck_assert_msg(n >= MIN_CORPUS, "only %zu %s documents in %s", n, kind, dir);
  for (size_t i = 0; i < n; i++) {
    size_t len;
    snprintf(path, sizeof path, "%s/%s.toml", dir, names[i]);
    char *text = read_file(path, &len);
    snprintf(path, sizeof path, "%s/%s.expect", dir, names[i]);
    char *expect = read_file(path, NULL);
    ck_assert_msg(text && expect, "%s: missing .toml or .expect", names[i]);
    nfail += check(names[i], text, len, expect);
    free(text);
    free(expect);
  }
  free_names(names, n);
  ck_assert_msg(nfail == 0, "%zu of the %s documents failed (details on stderr)", nfail, kind);
}

/* valid: parsed, and the dump equals the .expect */
static size_t check_valid(const char *name, const char *text, size_t len, char *expect)
{
  size_t nfail = 0;
  SgmTomlValue *root = NULL;
  char err[256];
  if (sgm_toml_parse(text, len, &root, err, sizeof err) != 0) {
    fprintf(stderr, "valid/%s.toml: rejected: %s\n", name, err);
    nfail++;
  } else {
    char *dump = sgm_toml_dump(root);
    ck_assert_ptr_nonnull(dump);
    if (strcmp(dump, expect) != 0) {
      fprintf(stderr, "valid/%s.toml: dump differs from .expect\n--- got\n%s--- expected\n%s", name,
              dump, expect);
      nfail++;
    }
    free(dump);
  }
  sgm_toml_free(root);
  return nfail;
}

START_TEST(corpus_valid)
{
  run_corpus("valid", check_valid);
}
END_TEST

/* invalid: rejected with the .expect position and message */
static size_t check_invalid(const char *name, const char *text, size_t len, char *expect)
{
  size_t nfail = 0;
  /* .expect: first line LINE or LINE:COL, second line a substring of the message. */
  char *nl = strchr(expect, '\n');
  ck_assert_msg(nl != NULL, "%s.expect: needs two lines", name);
  *nl = '\0';
  char *msg = nl + 1, *end = strchr(msg, '\n');
  if (end) *end = '\0';
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s:", expect);
  ck_assert_msg(strlen(msg) > 0, "%s.expect: empty message", name);
  SgmTomlValue *root = (SgmTomlValue *)&root;
  char err[512];
  int rc = sgm_toml_parse(text, len, &root, err, sizeof err);
  if (rc != -1 || root != NULL) {
    fprintf(stderr, "invalid/%s.toml: accepted (rc %d)\n", name, rc);
    nfail++;
    sgm_toml_free(rc == 0 ? root : NULL);
  } else if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, msg)) {
    fprintf(stderr, "invalid/%s.toml: got \"%s\", expected \"%s ...%s...\"\n", name, err, prefix,
            msg);
    nfail++;
  }
  return nfail;
}

START_TEST(corpus_invalid)
{
  run_corpus("invalid", check_invalid);
}
END_TEST

static SgmTomlValue *parse_ok(const char *text)
{
  SgmTomlValue *root = NULL;
  char err[256];
  int rc = sgm_toml_parse(text, strlen(text), &root, err, sizeof err);
  ck_assert_msg(rc == 0, "parse failed: %s", err);
  ck_assert_ptr_nonnull(root);
  return root;
}

static const SgmTomlValue *get_typed(const SgmTomlValue *t, const char *key, SgmTomlType type)
{
  const SgmTomlValue *v = sgm_toml_get(t, key);
  ck_assert_msg(v != NULL, "key %s missing", key);
  ck_assert_msg(v->type == type, "key %s is %s, expected %s", key, sgm_toml_type_name(v->type),
                sgm_toml_type_name(type));
  return v;
}

START_TEST(integer_extremes)
{
  SgmTomlValue *r = parse_ok("max = 0x7fffffffffffffff\nmin = -9223372036854775808\n"
                             "dmax = 9223372036854775807\nbmin = 0b0\noct = 0o17\nneg0 = -0\n");
  ck_assert(get_typed(r, "max", SGM_TOML_INTEGER)->u.i == INT64_MAX);
  ck_assert(get_typed(r, "min", SGM_TOML_INTEGER)->u.i == INT64_MIN);
  ck_assert(get_typed(r, "dmax", SGM_TOML_INTEGER)->u.i == INT64_MAX);
  ck_assert(get_typed(r, "bmin", SGM_TOML_INTEGER)->u.i == 0);
  ck_assert(get_typed(r, "oct", SGM_TOML_INTEGER)->u.i == 15);
  ck_assert(get_typed(r, "neg0", SGM_TOML_INTEGER)->u.i == 0);
  sgm_toml_free(r);
}
END_TEST

START_TEST(float_values)
{
  SgmTomlValue *r = parse_ok("big = 1e308\nsmall = 5e-324\npi = 3.141_592_653_589_793\n"
                             "nz = -0.0\npn = +nan\nmn = -nan\nmi = -inf\npi2 = +inf\n"
                             "e = 6.02214076e23\n");
  ck_assert(get_typed(r, "big", SGM_TOML_FLOAT)->u.f == 1e308);
  ck_assert(get_typed(r, "small", SGM_TOML_FLOAT)->u.f == 5e-324);
  ck_assert(get_typed(r, "pi", SGM_TOML_FLOAT)->u.f == 3.141592653589793);
  ck_assert(get_typed(r, "e", SGM_TOML_FLOAT)->u.f == 6.02214076e23);
  double nz = get_typed(r, "nz", SGM_TOML_FLOAT)->u.f;
  ck_assert(nz == 0.0 && signbit(nz));
  double pn = get_typed(r, "pn", SGM_TOML_FLOAT)->u.f;
  double mn = get_typed(r, "mn", SGM_TOML_FLOAT)->u.f;
  ck_assert(isnan(pn) && !signbit(pn));
  ck_assert(isnan(mn) && signbit(mn));
  double mi = get_typed(r, "mi", SGM_TOML_FLOAT)->u.f;
  ck_assert(isinf(mi) && mi < 0);
  ck_assert(isinf(get_typed(r, "pi2", SGM_TOML_FLOAT)->u.f));
  sgm_toml_free(r);
}
END_TEST

START_TEST(string_bytes)
{
  SgmTomlValue *r = parse_ok("grin = \"\\U0001F600\"\ne = \"\\u00E9\"\nnul = \"a\\u0000b\"\n"
                             "ml = \"\"\"\r\nx\r\ny\"\"\"\nlit = 'C:\\n'\n\"\" = 1\n");
  const SgmTomlValue *g = get_typed(r, "grin", SGM_TOML_STRING);
  ck_assert_uint_eq(g->u.s.len, 4);
  ck_assert(memcmp(g->u.s.str, "\xF0\x9F\x98\x80", 5) == 0); /* 4 bytes and the terminator */
  const SgmTomlValue *e = get_typed(r, "e", SGM_TOML_STRING);
  ck_assert_uint_eq(e->u.s.len, 2);
  ck_assert(memcmp(e->u.s.str, "\xC3\xA9", 3) == 0);
  const SgmTomlValue *nul = get_typed(r, "nul", SGM_TOML_STRING);
  ck_assert_uint_eq(nul->u.s.len, 3);
  ck_assert(memcmp(nul->u.s.str, "a\0b", 4) == 0);
  /* CRLF inside multi-line strings is normalised to LF; the first newline is trimmed. */
  ck_assert_str_eq(get_typed(r, "ml", SGM_TOML_STRING)->u.s.str, "x\ny");
  ck_assert_str_eq(get_typed(r, "lit", SGM_TOML_STRING)->u.s.str, "C:\\n");
  ck_assert(get_typed(r, "", SGM_TOML_INTEGER)->u.i == 1);
  sgm_toml_free(r);
}
END_TEST

START_TEST(positions)
{
  const char *text = "# comment\n"       /* line 1 */
                     "a = 1\n"           /* line 2 */
                     "  [srv]  \n"       /* line 3: header at col 3 */
                     "port =   8080\n"   /* line 4: value at col 10 */
                     "tag.x = \"s\"\n"   /* line 5: dotted table at col 1, value col 9 */
                     "[[job]]\n"         /* line 6 */
                     "arr = [1,\n  2]\n" /* lines 7-8: array col 7, second item 8:3 */
                     "[x.y]\n"           /* line 9: x implicit at 9:2 */
                     "[x]\n"             /* line 10: x made explicit */
                     "d = 1979-05-27\n"; /* line 11 */
  SgmTomlValue *r = parse_ok(text);
  ck_assert_int_eq(r->line, 1);
  ck_assert_int_eq(r->col, 1);
  const SgmTomlValue *a = get_typed(r, "a", SGM_TOML_INTEGER);
  ck_assert(a->line == 2 && a->col == 5);
  const SgmTomlValue *srv = get_typed(r, "srv", SGM_TOML_TABLE);
  ck_assert(srv->line == 3 && srv->col == 3);
  const SgmTomlValue *port = get_typed(srv, "port", SGM_TOML_INTEGER);
  ck_assert(port->line == 4 && port->col == 10 && port->u.i == 8080);
  ck_assert_int_eq(srv->u.tab.key_line[0], 4);
  const SgmTomlValue *tag = get_typed(srv, "tag", SGM_TOML_TABLE);
  ck_assert(tag->line == 5 && tag->col == 1);
  const SgmTomlValue *x = get_typed(tag, "x", SGM_TOML_STRING);
  ck_assert(x->line == 5 && x->col == 9);
  const SgmTomlValue *job = get_typed(r, "job", SGM_TOML_ARRAY);
  ck_assert(job->line == 6 && job->col == 1 && job->u.arr.n == 1);
  const SgmTomlValue *j0 = job->u.arr.items[0];
  ck_assert(j0->type == SGM_TOML_TABLE && j0->line == 6);
  const SgmTomlValue *arr = get_typed(j0, "arr", SGM_TOML_ARRAY);
  ck_assert(arr->line == 7 && arr->col == 7 && arr->u.arr.n == 2);
  ck_assert(arr->u.arr.items[1]->line == 8 && arr->u.arr.items[1]->col == 3);
  const SgmTomlValue *xt = get_typed(r, "x", SGM_TOML_TABLE);
  ck_assert(xt->line == 10 && xt->col == 1);
  /* Root keys in document order: a, srv, job, x; x's definition line is its explicit header. */
  ck_assert_uint_eq(r->u.tab.n, 4);
  ck_assert_str_eq(r->u.tab.keys[3], "x");
  ck_assert_int_eq(r->u.tab.key_line[3], 10);
  const SgmTomlValue *d = get_typed(xt, "d", SGM_TOML_DATETIME);
  ck_assert_str_eq(d->u.s.str, "1979-05-27");
  ck_assert(d->line == 11 && d->col == 5);
  sgm_toml_free(r);
}
END_TEST

static void expect_error(const char *text, size_t len, const char *prefix, const char *msg)
{
  SgmTomlValue *r = (SgmTomlValue *)&r;
  char err[256];
  ck_assert_int_eq(sgm_toml_parse(text, len, &r, err, sizeof err), -1);
  ck_assert_ptr_null(r);
  ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, msg),
                "error \"%s\", expected prefix \"%s\" and \"%s\"", err, prefix, msg);
}

START_TEST(errors)
{
  /* The error examples of include/sgm/toml.h's documentation. */
  expect_error("a = 1\n\nfoo 1\n", 13, "3:5: ", "expected '=' after key \"foo\"");
  expect_error("a = 1\nbar = 2\nc = 3\nbar = 4\n", 28,
               "4:1: ", "duplicate key \"bar\" (first defined at line 2)");
  expect_error("s = \"ab\\qc\"\n", 12, "1:8: ", "invalid escape '\\q' in basic string");
  /* Lines count CRLF once; columns count bytes (the UTF-8 'é' is 2 bytes). */
  expect_error("a = 1\r\n\"é\" = 1 2\r\n", 19, "2:10: ", "expected newline or comment");
  /* Not NUL-terminated: the parser must stop at len (here the document is "a = 1"). */
  const char buf[6] = {'a', ' ', '=', ' ', '1', 'x'};
  SgmTomlValue *r = NULL;
  ck_assert_int_eq(sgm_toml_parse(buf, 5, &r, NULL, 0), 0);
  ck_assert(get_typed(r, "a", SGM_TOML_INTEGER)->u.i == 1);
  sgm_toml_free(r);
  expect_error(buf, 6, "1:6: ", "expected newline or comment after value");
  /* Truncated error buffers stay terminated; no buffer at all is allowed. */
  char small[5];
  memset(small, 'z', sizeof small);
  ck_assert_int_eq(sgm_toml_parse("= 1", 3, &r, small, sizeof small), -1);
  ck_assert_str_eq(small, "1:1:");
  ck_assert_int_eq(sgm_toml_parse("= 1", 3, &r, NULL, 0), -1);
  ck_assert_ptr_null(r);
  /* An empty or NULL document is an empty table. */
  ck_assert_int_eq(sgm_toml_parse(NULL, 0, &r, small, sizeof small), 0);
  ck_assert(r->type == SGM_TOML_TABLE && r->u.tab.n == 0);
  sgm_toml_free(r);
  sgm_toml_free(NULL);
}
END_TEST

START_TEST(lookup_and_names)
{
  SgmTomlValue *r = parse_ok("[t]\nk = 1\n");
  const SgmTomlValue *t = get_typed(r, "t", SGM_TOML_TABLE);
  ck_assert_ptr_null(sgm_toml_get(r, "k"));   /* single keys only, no recursive search */
  ck_assert_ptr_null(sgm_toml_get(r, "t.k")); /* not dotted */
  ck_assert_ptr_null(sgm_toml_get(sgm_toml_get(t, "k"), "x")); /* not a table */
  ck_assert_ptr_null(sgm_toml_get(NULL, "x"));
  ck_assert_ptr_nonnull(sgm_toml_get(t, "k"));
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_STRING), "string");
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_INTEGER), "integer");
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_FLOAT), "float");
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_BOOLEAN), "boolean");
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_DATETIME), "datetime");
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_ARRAY), "array");
  ck_assert_str_eq(sgm_toml_type_name(SGM_TOML_TABLE), "table");
  sgm_toml_free(r);
}
END_TEST

START_TEST(nesting_limit)
{
  /* Depth counts the root table as 0: `a = [[...]]` with k brackets reaches depth k. */
  size_t k = SGM_TOML_MAX_DEPTH, len = 4 + 2 * (k + 1) + 1;
  char *s = malloc(len + 1);
  ck_assert_ptr_nonnull(s);
  for (int pass = 0; pass < 2; pass++) {
    size_t nb = k + (size_t)pass, o = 0;
    memcpy(s, "a = ", 4);
    o = 4;
    for (size_t i = 0; i < nb; i++) s[o++] = '[';
    for (size_t i = 0; i < nb; i++) s[o++] = ']';
    s[o++] = '\n';
    SgmTomlValue *r = NULL;
    char err[256];
    int rc = sgm_toml_parse(s, o, &r, err, sizeof err);
    if (pass == 0) {
      ck_assert_msg(rc == 0, "depth %zu rejected: %s", nb, err);
      sgm_toml_free(r);
    } else {
      ck_assert_int_eq(rc, -1);
      ck_assert_msg(strstr(err, "nesting too deep"), "%s", err);
    }
  }
  free(s);
  /* Inline tables and dotted keys count too: 300 nested inline tables fail. */
  char *t = malloc(4 + 300 * 6 + 300 + 2);
  ck_assert_ptr_nonnull(t);
  size_t o = 0;
  memcpy(t, "a = ", 4);
  o = 4;
  for (int i = 0; i < 300; i++) memcpy(t + o, "{ b = ", 6), o += 6;
  t[o++] = '1';
  for (int i = 0; i < 300; i++) t[o++] = '}';
  char err[256];
  SgmTomlValue *r = NULL;
  ck_assert_int_eq(sgm_toml_parse(t, o, &r, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "nesting too deep"), "%s", err);
  free(t);
}
END_TEST

/* 100k keys in one table and 100k [tables]: the duplicate checks must stay near-linear. */
START_TEST(large_documents)
{
  const size_t n = 100000;
  char *s = malloc(n * 32);
  ck_assert_ptr_nonnull(s);
  for (int kind = 0; kind < 2; kind++) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
      o += (size_t)sprintf(s + o, kind ? "[t%zu]\nv = %zu\n" : "key%zu = %zu\n", i, i);
    clock_t c0 = clock();
    SgmTomlValue *r = NULL;
    char err[256];
    ck_assert_msg(sgm_toml_parse(s, o, &r, err, sizeof err) == 0, "%s", err);
    double sec = (double)(clock() - c0) / CLOCKS_PER_SEC;
    ck_assert_uint_eq(r->u.tab.n, n);
    const SgmTomlValue *last = sgm_toml_get(r, kind ? "t99999" : "key99999");
    ck_assert_ptr_nonnull(last);
    if (kind) last = get_typed(last, "v", SGM_TOML_INTEGER);
    ck_assert(last->u.i == 99999);
    /* A quadratic scan would take ~5e9 key comparisons (tens of seconds); linear is ~0.1 s.
     * The bound leaves room for sanitizer builds on a loaded machine. */
    ck_assert_msg(sec < 10.0, "parsing %zu keys took %.2f s", n, sec);
    sgm_toml_free(r);
  }
  /* A duplicate at the very end is still found through the hash index. */
  size_t o = 0;
  for (size_t i = 0; i < 1000; i++) o += (size_t)sprintf(s + o, "key%zu = 1\n", i);
  o += (size_t)sprintf(s + o, "key500 = 2\n");
  expect_error(s, o, "1001:1: ", "duplicate key \"key500\" (first defined at line 501)");
  free(s);
}
END_TEST

static Suite *toml_suite(void)
{
  Suite *s = suite_create("toml");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, corpus_valid);
  tcase_add_test(tc, corpus_invalid);
  tcase_add_test(tc, integer_extremes);
  tcase_add_test(tc, float_values);
  tcase_add_test(tc, string_bytes);
  tcase_add_test(tc, positions);
  tcase_add_test(tc, errors);
  tcase_add_test(tc, lookup_and_names);
  tcase_add_test(tc, nesting_limit);
  tcase_add_test(tc, large_documents);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  return sgm_test_main(argc, argv, toml_suite());
}
