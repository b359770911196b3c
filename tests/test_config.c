/* The validated configuration: defaults, types, ranges, choices, unknown keys with suggestions,
 * missing required keys, --set overrides, all problems reported at once with line numbers,
 * broadcast to every rank, exact round trip of the resolved text, [petsc] pass-through.
 * Expectations are written by hand from the schema below, not taken from the program's output. */
#include "testutil.h"
#include "sgm/config.h"
#include "sgm/schema.h"
#include "sgm/run.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const SgmKeySpec t_keys[] = {
    {"req", SGM_KEY_INT, NULL, 1, 1, 1000, NULL, "", "a required integer"},
    {"x", SGM_KEY_REAL, "0.1", 0, 0.0, 10.0, NULL, "length", "a real in [0, 10]"},
    {"flag", SGM_KEY_BOOL, "false", 0, -INFINITY, INFINITY, NULL, "", "a boolean"},
    {"mode", SGM_KEY_STRING, "\"exact\"", 0, -INFINITY, INFINITY, "exact|euler", "", "a choice"},
    {"label", SGM_KEY_STRING, "\"\"", 0, -INFINITY, INFINITY, NULL, "", "free text"},
    {"grid", SGM_KEY_INT_ARRAY, "[64, 64]", 0, 1, 4096, NULL, "", "an integer array"},
    {"ws", SGM_KEY_REAL_ARRAY, "[]", 0, -1.0, 1.0, NULL, "", "a real array"},
    {"opt", SGM_KEY_REAL, NULL, 0, -INFINITY, INFINITY, NULL, "", "optional, no default"},
    {"velocity", SGM_KEY_REAL, "1.0", 0, -INFINITY, INFINITY, NULL, "", "for suggestions"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};
static const SgmTableSpec t_table = {"ttest", "test table", t_keys, 0};

static const char *RUN = "[run]\nname = \"t\"\nstages = []\n";

/* Validates text (prefixed by a valid [run] table) and returns the messages. */
static char *check(const char *body, int nset, const char *const *sets, int *nbad)
{
  static char buf[8192];
  char text[4096];
  snprintf(text, sizeof text, "%s%s", RUN, body);
  FILE *f = fmemopen(buf, sizeof buf, "w");
  *nbad = sgm_config_check_text("in.toml", text, strlen(text), nset, sets, f);
  fclose(f);
  return buf;
}

START_TEST(test_defaults_and_values)
{
  SgmConfig cfg;
  double x;
  int64_t req;
  const char *mode;
  const int64_t *grid;
  int n;
  PetscBool set, flag;
  ck_assert_int_eq(sgm_config_create_from_string(sgm_test_comm(), "t.toml",
                                                 "[run]\nname = \"t\"\nstages = []\n"
                                                 "[ttest]\nreq = 12\nflag = true\n",
                                                 0, NULL, &cfg),
                   0);
  ck_assert_int_eq(sgm_config_get_int(cfg, "ttest.req", &req), 0);
  ck_assert_int_eq(req, 12);
  ck_assert_int_eq(sgm_config_get_real(cfg, "ttest.x", &x), 0);
  ck_assert(x == 0.1);
  ck_assert_int_eq(sgm_config_get_bool(cfg, "ttest.flag", &flag), 0);
  ck_assert(flag);
  ck_assert_int_eq(sgm_config_get_string(cfg, "ttest.mode", &mode), 0);
  ck_assert_str_eq(mode, "exact");
  ck_assert_int_eq(sgm_config_get_int_array(cfg, "ttest.grid", &n, &grid), 0);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(grid[0], 64);
  sgm_config_is_set(cfg, "ttest.req", &set);
  ck_assert(set);
  sgm_config_is_set(cfg, "ttest.x", &set);
  ck_assert(!set);
  sgm_config_is_set(cfg, "ttest.opt", &set);
  ck_assert(!set);
  sgm_config_destroy(&cfg);
  ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_all_problems_at_once)
{
  int nbad;
  /* line numbers: [run] takes lines 1-3; [ttest] header is line 4 */
  const char *body = "[ttest]\n"           /* 4 */
                     "x = 11.0\n"          /* 5: out of range */
                     "mode = \"rk4\"\n"    /* 6: not a choice */
                     "flag = 1\n"          /* 7: wrong type */
                     "velocty = 2.0\n"     /* 8: unknown, suggestion */
                     "grid = [64, 0]\n"    /* 9: element out of range */
                     "ws = [0.5, \"a\"]\n" /* 10: element type */
                     "[nosuch]\n"          /* 11: unknown table */
                     "a = 1\n";
  char *msg = check(body, 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 8); /* the 7 above + missing required req */
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:4: [ttest] req: required key missing"));
  ck_assert_ptr_nonnull(
      strstr(msg, "in.toml:5: [ttest] x: value 11.0 is out of range [0.0, 10.0]"));
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:6: [ttest] mode: \"rk4\" is not one of exact|euler"));
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:7: [ttest] flag: expected boolean, got integer"));
  ck_assert_ptr_nonnull(
      strstr(msg, "in.toml:8: [ttest] velocty: unknown key (did you mean \"velocity\"?)"));
  ck_assert_ptr_nonnull(
      strstr(msg, "in.toml:9: [ttest] grid: element 1: value 0.0 is out of range"));
  ck_assert_ptr_nonnull(
      strstr(msg, "in.toml:10: [ttest] ws: element 1: expected float, got string"));
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:11: [nosuch]: unknown table"));
  /* sorted by line */
  ck_assert(strstr(msg, "in.toml:4:") < strstr(msg, "in.toml:11:"));
}
END_TEST

START_TEST(test_more_problems)
{
  int nbad;
  char *msg = check("[ttest]\nreq = 2.5\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:5: [ttest] req: expected integer, got float"));
  msg = check("[ttest]\nreq = 1\nx = nan\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:6: [ttest] x: value is not a number"));
  msg = check("[ttest]\nreq = 1\n[ttest.sub]\na = 1\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(strstr(msg, "[ttest] sub: unknown key"));
  msg = check("[ttest]\nreq = 1\ndt = 0.1\n", 0, NULL, &nbad); /* no such key anywhere */
  ck_assert_int_eq(nbad, 1);
  /* a syntax error stops at the parser with line:col */
  msg = check("[ttest]\nreq = = 1\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:5:"));
  /* top-level key outside tables */
  char text[] = "stray = 1\n[run]\nname = \"t\"\nstages = []\n[ttest]\nreq = 1\n";
  char buf[1024];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  nbad = sgm_config_check_text("in.toml", text, strlen(text), 0, NULL, f);
  fclose(f);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(strstr(buf, "in.toml:1: stray: key outside any table"));
  /* unknown stage */
  char text2[] = "[run]\nname = \"t\"\nstages = [\"simulat\"]\n[ttest]\nreq = 1\n";
  f = fmemopen(buf, sizeof buf, "w");
  nbad = sgm_config_check_text("in.toml", text2, strlen(text2), 0, NULL, f);
  fclose(f);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(
      strstr(buf, "in.toml:3: [run] stages: element 0: \"simulat\" is not one of"));
}
END_TEST

START_TEST(test_overrides)
{
  int nbad;
  const char *sets[] = {"ttest.req=7", "ttest.mode=euler", "ttest.x=2e-3", "ttest.grid=[8,16]"};
  SgmConfig cfg;
  int64_t req;
  const char *mode;
  double x;
  check("[ttest]\nreq = 1\n", 4, sets, &nbad);
  ck_assert_int_eq(nbad, 0);
  ck_assert_int_eq(sgm_config_create_from_string(
                       sgm_test_comm(), "t.toml",
                       "[run]\nname = \"t\"\nstages = []\n[ttest]\nreq = 1\n", 4, sets, &cfg),
                   0);
  sgm_config_get_int(cfg, "ttest.req", &req);
  sgm_config_get_string(cfg, "ttest.mode", &mode);
  sgm_config_get_real(cfg, "ttest.x", &x);
  ck_assert_int_eq(req, 7);
  ck_assert_str_eq(mode, "euler");
  ck_assert(x == 2e-3);
  sgm_config_destroy(&cfg);
  /* overrides are validated like the file */
  const char *bad[] = {"ttest.x=20", "ttest.nope=1", "nosuch.k=1", "novalue", "ttest.req=abc"};
  char *msg = check("[ttest]\nreq = 1\n", 5, bad, &nbad);
  ck_assert_int_eq(nbad, 5);
  ck_assert_ptr_nonnull(strstr(msg, "--set ttest.x: [ttest] x: value 20.0 is out of range"));
  ck_assert_ptr_nonnull(strstr(msg, "--set ttest.nope: [ttest] nope: unknown key"));
  ck_assert_ptr_nonnull(strstr(msg, "--set nosuch.k: unknown table [nosuch]"));
  ck_assert_ptr_nonnull(strstr(msg, "--set novalue: expected table.key=value"));
  ck_assert_ptr_nonnull(strstr(msg, "--set ttest.req: value \"abc\" is not a TOML value"));
}
END_TEST

START_TEST(test_broadcast_and_round_trip)
{
  SgmConfig cfg, cfg2;
  double x, x2;
  const double *ws;
  int n, rank;
  const char *label;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  /* Values that need all 17 digits, and a string with escapes. */
  ck_assert_int_eq(
      sgm_config_create_from_string(
          sgm_test_comm(), "t.toml",
          "[run]\nname = \"t\"\nstages = []\n[ttest]\nreq = 3\nx = 0.30000000000000004\n"
          "ws = [-1e-300, 0.1, 1]\nlabel = \"a\\\"b\\\\c\\td\"\n",
          0, NULL, &cfg),
      0);
  sgm_config_get_real(cfg, "ttest.x", &x);
  ck_assert(x == 0.30000000000000004);
  sgm_config_get_real_array(cfg, "ttest.ws", &n, &ws);
  ck_assert_int_eq(n, 3);
  ck_assert(ws[0] == -1e-300 && ws[1] == 0.1 && ws[2] == 1.0);
  sgm_config_get_string(cfg, "ttest.label", &label);
  ck_assert_str_eq(label, "a\"b\\c\td");
  /* The same on every rank: compare rank 0's bits with everyone's. */
  double x0 = x;
  MPI_Bcast(&x0, 1, MPI_DOUBLE, 0, sgm_test_comm());
  ck_assert(memcmp(&x0, &x, sizeof x) == 0);
  /* The resolved text reads back to the same configuration. */
  ck_assert_int_eq(sgm_config_create_from_string(sgm_test_comm(), "resolved",
                                                 sgm_config_resolved_toml(cfg), 0, NULL, &cfg2),
                   0);
  sgm_config_get_real(cfg2, "ttest.x", &x2);
  ck_assert(x2 == x);
  ck_assert_str_eq(sgm_config_resolved_toml(cfg), sgm_config_resolved_toml(cfg2));
  sgm_config_destroy(&cfg);
  sgm_config_destroy(&cfg2);
}
END_TEST

START_TEST(test_petsc_table)
{
  SgmConfig cfg;
  PetscBool flg;
  PetscInt v;
  ck_assert_int_eq(
      sgm_config_create_from_string(
          sgm_test_comm(), "t.toml",
          "[run]\nname = \"t\"\nstages = []\n[ttest]\nreq = 1\n[petsc]\nsgm_test_opt = 42\n", 0,
          NULL, &cfg),
      0);
  ck_assert_int_eq(PetscOptionsGetInt(NULL, NULL, "-sgm_test_opt", &v, &flg), 0);
  ck_assert(flg);
  ck_assert_int_eq(v, 42);
  sgm_config_destroy(&cfg);
}
END_TEST

START_TEST(test_error_returns_user_code_everywhere)
{
  SgmConfig cfg = NULL;
  /* Messages go to rank 0's stderr; every rank gets the same code and no configuration. */
  PetscErrorCode ierr = sgm_config_create_from_string(sgm_test_comm(), "bad.toml",
                                                      "[run]\nname = 1\n", 0, NULL, &cfg);
  ck_assert_int_eq(ierr, PETSC_ERR_USER_INPUT);
  ck_assert_ptr_null(cfg);
  ierr = sgm_config_create(sgm_test_comm(), "/nonexistent/in.toml", 0, NULL, &cfg);
  ck_assert_int_eq(ierr, PETSC_ERR_USER_INPUT);
}
END_TEST

START_TEST(test_every_default_is_valid)
{
  /* Every registered key's default parses and satisfies its own type and range: a document with
   * only the required keys of every table validates. build_entries reports a broken default as an
   * internal problem, which would make nbad > 0 here. */
  int n, nbad;
  const SgmTableSpec *const *t;
  char text[65536];
  size_t o = 0;
  sgm_schema_tables(&n, &t);
  for (int i = 0; i < n; i++) {
    o += (size_t)snprintf(text + o, sizeof text - o, "[%s]\n", t[i]->name);
    for (const SgmKeySpec *k = t[i]->keys; k && k->name; k++) {
      if (!k->required) continue;
      const char *v = k->type == SGM_KEY_STRING
                          ? (k->choices && k->choices[0] != '@' ? NULL : "\"x\"")
                      : k->type == SGM_KEY_STRING_ARRAY                               ? "[]"
                      : k->type == SGM_KEY_BOOL                                       ? "true"
                      : k->type == SGM_KEY_REAL_ARRAY || k->type == SGM_KEY_INT_ARRAY ? "[]"
                                                                                      : NULL;
      char num[64];
      if (!v && (k->type == SGM_KEY_REAL || k->type == SGM_KEY_INT)) {
        double x = isfinite(k->min) ? k->min : isfinite(k->max) ? k->max : 1;
        if (k->type == SGM_KEY_INT)
          snprintf(num, sizeof num, "%lld", (long long)ceil(x));
        else
          snprintf(num, sizeof num, "%.17g", x);
        v = num;
      }
      if (!v) { /* a required choice: take the first */
        snprintf(num, sizeof num, "\"%.*s\"", (int)strcspn(k->choices, "|"), k->choices);
        v = num;
      }
      o += (size_t)snprintf(text + o, sizeof text - o, "%s = %s\n", k->name, v);
    }
  }
  FILE *f = fopen("/dev/null", "w");
  nbad = sgm_config_check_text("defaults", text, o, 0, NULL, f);
  fclose(f);
  if (nbad) sgm_config_check_text("defaults", text, o, 0, NULL, stderr);
  ck_assert_int_eq(nbad, 0);
}
END_TEST

/* A cross-key rule: the Euler mode needs x <= 5. */
static PetscErrorCode t_check(SgmConfig cfg, SgmProblems pb)
{
  const char *mode;
  double x;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_string(cfg, "ttest.mode", &mode));
  PetscCall(sgm_config_get_real(cfg, "ttest.x", &x));
  if (!strcmp(mode, "euler") && x > 5)
    sgm_config_problem(pb, "ttest.x", "x = %g needs mode = \"exact\"", x);
  PetscFunctionReturn(PETSC_SUCCESS);
}

START_TEST(test_cross_key_check)
{
  int nbad;
  char *msg = check("[ttest]\nreq = 1\nmode = \"euler\"\nx = 6\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 1);
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:7: [ttest] x: x = 6 needs mode = \"exact\""));
  check("[ttest]\nreq = 1\nmode = \"euler\"\nx = 4\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 0);
  /* checks run only on an otherwise valid file: no cascade of messages */
  check("[ttest]\nmode = \"euler\"\nx = 6\n", 0, NULL, &nbad);
  ck_assert_int_eq(nbad, 1);
}
END_TEST

/* A stage's input file (sgm_config_check_input_file): "consume" reads ftest.file, or data.h5 in
 * [run] output, which "make" writes. */
static const SgmKeySpec f_keys[] = {
    {"file", SGM_KEY_STRING, NULL, 0, -INFINITY, INFINITY, NULL, "path", "an input file"},
    {NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};
static const SgmTableSpec f_table = {"ftest", "input-file test table", f_keys, 0};

static PetscErrorCode f_check(SgmConfig cfg, SgmProblems pb)
{
  PetscFunctionBeginUser;
  PetscCall(
      sgm_config_check_input_file(cfg, pb, "ftest.file", "data.h5", "consume", "make", NULL, 0));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static int check_run(const char *stages, const char *out, const char *file, char *msg, size_t n)
{
  char text[2048];
  int k = snprintf(text, sizeof text, "[run]\nname = \"t\"\nstages = %s\noutput = \"%s\"\n", stages,
                   out);
  if (file) k += snprintf(text + k, sizeof text - (size_t)k, "[ftest]\nfile = \"%s\"\n", file);
  snprintf(text + k, sizeof text - (size_t)k, "[ttest]\nreq = 1\n"); /* its required key */
  FILE *f = fmemopen(msg, n, "w");
  const int nbad = sgm_config_check_text("in.toml", text, strlen(text), 0, NULL, f);
  fclose(f);
  return nbad;
}

START_TEST(test_input_file_check)
{
  char msg[4096], dir[600], path[700];
  int rank;
  MPI_Comm_rank(sgm_test_comm(), &rank);
  /* each rank its own output directory: the files below are made and removed by each */
  snprintf(dir, sizeof dir, "%s/r%d", sgm_test_tmpdir("input_file"), rank);
  ck_assert_int_eq(mkdir(dir, 0755), 0);
  /* unset, nothing makes it, the default is missing: refused, naming the key and the path */
  ck_assert_int_eq(check_run("[\"consume\"]", dir, NULL, msg, sizeof msg), 1);
  snprintf(path, sizeof path, "[ftest] file: unset, so the consume stage reads %s/data.h5", dir);
  ck_assert_ptr_nonnull(strstr(msg, path));
  ck_assert_ptr_nonnull(strstr(msg, "run the make stage before it or set [ftest] file"));
  /* the maker runs before: accepted; after: refused */
  ck_assert_int_eq(check_run("[\"make\", \"consume\"]", dir, NULL, msg, sizeof msg), 0);
  ck_assert_int_eq(check_run("[\"consume\", \"make\"]", dir, NULL, msg, sizeof msg), 1);
  /* a set path that cannot be read: refused on its line, unless it is the file the maker
   * writes and the maker runs before */
  snprintf(path, sizeof path, "%s/none.h5", dir);
  ck_assert_int_eq(check_run("[\"make\", \"consume\"]", dir, path, msg, sizeof msg), 1);
  ck_assert_ptr_nonnull(strstr(msg, "in.toml:6: [ftest] file: cannot read"));
  snprintf(path, sizeof path, "%s/data.h5", dir);
  ck_assert_int_eq(check_run("[\"make\", \"consume\"]", dir, path, msg, sizeof msg), 0);
  ck_assert_int_eq(check_run("[\"consume\"]", dir, path, msg, sizeof msg), 1);
  /* a file that is there but not HDF5: refused, set or by default */
  snprintf(path, sizeof path, "%s/data.h5", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("not hdf5\n", f);
  fclose(f);
  ck_assert_int_eq(check_run("[\"consume\"]", dir, NULL, msg, sizeof msg), 1);
  ck_assert_ptr_nonnull(strstr(msg, "data.h5, which is not an HDF5 file"));
  ck_assert_int_eq(check_run("[\"consume\"]", dir, path, msg, sizeof msg), 1);
  ck_assert_ptr_nonnull(strstr(msg, "data.h5 is not an HDF5 file"));
  /* once it is an HDF5 file: accepted */
  hid_t h = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ck_assert_int_ge(h, 0);
  H5Fclose(h);
  ck_assert_int_eq(check_run("[\"consume\"]", dir, NULL, msg, sizeof msg), 0);
  ck_assert_int_eq(check_run("[\"consume\"]", dir, path, msg, sizeof msg), 0);
  remove(path);
}
END_TEST

static PetscErrorCode no_stage(SgmRun *run)
{
  (void)run;
  return PETSC_SUCCESS;
}

static void register_test_table(void)
{
  sgm_stage_register("make", no_stage, "test stage: writes data.h5");
  sgm_stage_register("consume", no_stage, "test stage: reads data.h5");
  sgm_schema_register(&t_table);
  sgm_schema_register_check("ttest", t_check);
  sgm_schema_register(&f_table);
  sgm_schema_register_check("ftest", f_check);
}

int main(int argc, char **argv)
{
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("config");
  tcase_add_unchecked_fixture(tc, register_test_table, NULL);
  tcase_add_test(tc, test_defaults_and_values);
  tcase_add_test(tc, test_all_problems_at_once);
  tcase_add_test(tc, test_more_problems);
  tcase_add_test(tc, test_overrides);
  tcase_add_test(tc, test_broadcast_and_round_trip);
  tcase_add_test(tc, test_petsc_table);
  tcase_add_test(tc, test_error_returns_user_code_everywhere);
  tcase_add_test(tc, test_every_default_is_valid);
  tcase_add_test(tc, test_cross_key_check);
  tcase_add_test(tc, test_input_file_check);
  suite_add_tcase(s, tc);
  return sgm_test_main(argc, argv, s);
}
