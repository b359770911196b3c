/* Command-line parsing: sgm_hpc's own arguments are taken out before PETSc sees argv, so PETSc
 * never mistakes --check for an option of its own and -log_view etc. keep working unchanged. */
#include "sgm/app.h"

#include <stdlib.h>
#include <string.h>

void sgm_args_parse(int argc, char **argv, SgmArgs *a)
{
  memset(a, 0, sizeof *a);
  a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
  a->petsc_argv = calloc((size_t)argc + 1, sizeof *a->petsc_argv);
  if (!a->sets || !a->petsc_argv) {
    snprintf(a->error, sizeof a->error, "out of memory");
    return;
  }
  a->petsc_argv[a->petsc_argc++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (!strcmp(s, "--check"))
      a->check = 1;
    else if (!strcmp(s, "--help") || !strcmp(s, "-h"))
      a->help = 1;
    else if (!strcmp(s, "--version"))
      a->version = 1;
    else if (!strcmp(s, "--input-doc"))
      a->input_doc = 1;
    else if (!strcmp(s, "--set") || !strcmp(s, "--restart")) {
      if (i + 1 >= argc) {
        snprintf(a->error, sizeof a->error, "%s needs an argument", s);
        return;
      }
      if (!strcmp(s, "--set"))
        a->sets[a->nset++] = argv[++i];
      else
        a->restart = argv[++i];
    } else if (!strncmp(s, "--set=", 6))
      a->sets[a->nset++] = s + 6;
    else if (!strncmp(s, "--restart=", 10))
      a->restart = s + 10;
    else if (!strncmp(s, "--", 2) && s[2]) {
      snprintf(a->error, sizeof a->error, "unknown option %s (see --help)", s);
      return;
    } else if (s[0] != '-' && !a->input)
      a->input = s;
    else {
      /* A PETSc option and its value (a following word that is not an option and comes after
       * the input file belongs to the option). */
      a->petsc_argv[a->petsc_argc++] = argv[i];
      if (i + 1 < argc && argv[i + 1][0] != '-' && a->input)
        a->petsc_argv[a->petsc_argc++] = argv[++i];
    }
  }
  if (!a->input && !a->help && !a->version && !a->input_doc)
    snprintf(a->error, sizeof a->error,
             "no input file given (usage: sgm_hpc [options] input.toml)");
}

void sgm_args_free(SgmArgs *a)
{
  free(a->sets);
  free(a->petsc_argv);
  memset(a, 0, sizeof *a);
}
