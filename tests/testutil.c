/* Test harness: PETSc around check. Every rank runs the same suite (collective tests need all
 * ranks); the failure count is reduced so the exit status is non-zero if any rank failed. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "testutil.h"
#include "sgm/schema.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directories sgm_test_tmpdir made (rank 0): removed after a run in which every test passed,
 * kept for inspection otherwise. */
static char *made[256];
static int nmade;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

int sgm_test_main(int argc, char **argv, Suite *s)
{
  int nfailed = 0, total = 0, rank;
  if (PetscInitialize(&argc, &argv, NULL, NULL)) return 1;
  if (sgm_register_all()) return 1;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, rank == 0 ? CK_NORMAL : CK_SILENT);
  nfailed = srunner_ntests_failed(sr);
  if (rank != 0 && nfailed) {
    /* Other ranks are silent; say which rank failed. */
    fprintf(stderr, "[rank %d] %d test(s) failed\n", rank, nfailed);
  }
  srunner_free(sr);
  MPI_Allreduce(&nfailed, &total, 1, MPI_INT, MPI_SUM, PETSC_COMM_WORLD);
  for (int i = 0; i < nmade; i++) {
    if (total == 0) nftw(made[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(made[i]);
  }
  if (rank == 0 && total != 0 && nmade > 0)
    fprintf(stderr, "test directories kept for inspection under %s/sgm_test_*\n",
            getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (PetscFinalize()) return 1;
  return total == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

MPI_Comm sgm_test_comm(void)
{
  return PETSC_COMM_WORLD;
}

const char *sgm_test_tmpdir(const char *tag)
{
  static char path[512];
  int rank;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank == 0) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof path, "%s/sgm_test_%s_XXXXXX", base, tag);
    if (!mkdtemp(path))
      path[0] = '\0';
    else if (nmade < (int)(sizeof made / sizeof made[0]))
      made[nmade++] = strdup(path);
  }
  MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, PETSC_COMM_WORLD);
  return path;
}

char *sgm_test_slurp(const char *path)
{
  FILE *fp = fopen(path, "rb");
  ck_assert_msg(fp != NULL, "cannot open %s", path);
  fseek(fp, 0, SEEK_END);
  long len = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  char *s = malloc((size_t)len + 1);
  ck_assert_int_eq(fread(s, 1, (size_t)len, fp), (size_t)len);
  s[len] = 0;
  fclose(fp);
  return s;
}

double sgm_test_metric(const char *json, const char *section, const char *key)
{
  char sec[128], pat[128];
  snprintf(sec, sizeof sec, "\"%s\"", section);
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *o = strstr(json, sec);
  ck_assert_msg(o, "metrics section %s missing", section);
  const char *p = strstr(o, pat);
  ck_assert_msg(p, "metric %s missing", key);
  return strtod(p + strlen(pat), NULL);
}
