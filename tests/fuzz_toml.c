/* libFuzzer target for the TOML reader (src/core/toml.c); commands and results in
 * docs/fuzzing.md. Parses the input; on success walks the tree checking invariants (positions,
 * string termination, key lookup finds every key, depth bound) and dumps it; on failure checks
 * the "LINE:COL: message" form and that truncated error buffers stay terminated.
 *
 * Built with -DSGM_FUZZ_REPLAY it gets a main() that feeds every file of the directories or files
 * named on the command line through the same checks, so ctest replays the corpus in the normal
 * (gcc, optionally ASan) build without libFuzzer. */
#define _POSIX_C_SOURCE 200809L
#include "sgm/toml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_toml: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static void walk(const SgmTomlValue *v, int depth)
{
  CHECK(depth <= SGM_TOML_MAX_DEPTH + 1);
  CHECK(v->line >= 1 && v->col >= 1);
  switch (v->type) {
  case SGM_TOML_STRING:
  case SGM_TOML_DATETIME:
    CHECK(v->u.s.str != NULL);
    CHECK(v->u.s.str[v->u.s.len] == '\0');
    if (v->type == SGM_TOML_DATETIME) CHECK(v->u.s.len >= 8 && strlen(v->u.s.str) == v->u.s.len);
    break;
  case SGM_TOML_BOOLEAN:
    CHECK(v->u.b == 0 || v->u.b == 1);
    break;
  case SGM_TOML_ARRAY:
    CHECK(v->u.arr.n == 0 || v->u.arr.items != NULL);
    for (size_t i = 0; i < v->u.arr.n; i++) walk(v->u.arr.items[i], depth + 1);
    break;
  case SGM_TOML_TABLE:
    for (size_t i = 0; i < v->u.tab.n; i++) {
      CHECK(v->u.tab.key_line[i] >= 1);
      /* The public lookup finds this value (keys are unique), except for a key holding an
       * escaped NUL: a C string lookup then sees only its prefix, which names another key or
       * none. */
      const SgmTomlValue *g = sgm_toml_get(v, v->u.tab.keys[i]);
      if (g != v->u.tab.vals[i] && g != NULL) {
        size_t j = 0;
        while (j < v->u.tab.n && v->u.tab.vals[j] != g) j++;
        CHECK(j < v->u.tab.n && j != i && strcmp(v->u.tab.keys[j], v->u.tab.keys[i]) == 0);
      }
      walk(v->u.tab.vals[i], depth + 1);
    }
    break;
  case SGM_TOML_INTEGER:
  case SGM_TOML_FLOAT:
    break;
  default:
    CHECK(0);
  }
}

static void check_error(const char *err, size_t cap)
{
  CHECK(memchr(err, '\0', cap) != NULL);
  if (cap < 64) return;
  int line = 0, col = 0, n = 0;
  CHECK(sscanf(err, "%d:%d: %n", &line, &col, &n) == 2 && n > 0);
  CHECK(line >= 1 && col >= 1);
  CHECK(err[n] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[256];
  SgmTomlValue *root = (SgmTomlValue *)&root; /* must be overwritten */
  int rc = sgm_toml_parse((const char *)data, size, &root, err, sizeof err);
  if (rc == 0) {
    CHECK(root != NULL && root->type == SGM_TOML_TABLE);
    CHECK(err[0] == '\0');
    walk(root, 0);
    char *d = sgm_toml_dump(root);
    CHECK(d != NULL);
    /* One line per leaf: every line holds " = " and ends with a newline. */
    size_t dl = strlen(d);
    CHECK(dl == 0 || d[dl - 1] == '\n');
    free(d);
    sgm_toml_free(root);
    /* A second parse of the same bytes gives the same dump (no hidden state). */
    SgmTomlValue *again = NULL;
    CHECK(sgm_toml_parse((const char *)data, size, &again, NULL, 0) == 0 && again != NULL);
    sgm_toml_free(again);
  } else {
    CHECK(rc == -1);
    CHECK(root == NULL);
    check_error(err, sizeof err);
    /* Tiny and absent error buffers must be handled. */
    char small[7];
    SgmTomlValue *r2 = NULL;
    CHECK(sgm_toml_parse((const char *)data, size, &r2, small, sizeof small) == -1 && !r2);
    check_error(small, sizeof small);
    CHECK(sgm_toml_parse((const char *)data, size, &r2, NULL, 0) == -1 && !r2);
  }
  return 0;
}

#ifdef SGM_FUZZ_REPLAY
#include <dirent.h>
#include <sys/stat.h>

static int replay_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "fuzz_toml: cannot open %s\n", path);
    return 1;
  }
  size_t cap = 4096, n = 0, k;
  char *buf = malloc(cap);
  while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap) {
      char *b = realloc(buf, cap *= 2);
      if (!b) free(buf);
      buf = b;
    }
  }
  fclose(f);
  if (!buf) return 1;
  LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
  free(buf);
  return 0;
}

int main(int argc, char **argv)
{
  int bad = 0, count = 0;
  for (int a = 1; a < argc; a++) {
    struct stat st;
    if (stat(argv[a], &st) != 0) {
      fprintf(stderr, "fuzz_toml: no such path %s\n", argv[a]);
      bad++;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      bad += replay_file(argv[a]);
      count++;
      continue;
    }
    DIR *d = opendir(argv[a]);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      size_t l = strlen(e->d_name);
      if (l < 5 || strcmp(e->d_name + l - 5, ".toml") != 0) continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
      bad += replay_file(path);
      count++;
    }
    if (d) closedir(d);
  }
  printf("fuzz_toml replay: %d inputs, %d unreadable\n", count, bad);
  return bad || count == 0 ? 1 : 0;
}
#endif
