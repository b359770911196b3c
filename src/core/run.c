/* The run context's services: metrics.json, progress lines, atomic output files, stop signals.
 *
 * metrics.json is merged, not overwritten: stages may run in separate jobs against the same output
 * directory, so flush reads the existing file (a two-level object of numbers this file writes),
 * updates the current stage's entries and writes tmp + rename. Non-finite values are written as
 * null, which JSON readers accept. Only rank 0 touches the file; the flush ends with a barrier so
 * no rank races ahead of a file another stage will read.
 */
#include "sgm/core.h"
#include "sgm/run.h"

#include <ctype.h>
#include <inttypes.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  char stage[64], name[96];
  double v;
} Metric;

struct SgmMetrics_ {
  MPI_Comm comm;
  char path[PETSC_MAX_PATH_LEN];
  Metric *m;
  int n, cap;
};

static Metric *metric_slot(SgmMetrics m, const char *stage, const char *name)
{
  for (int i = 0; i < m->n; i++)
    if (!strcmp(m->m[i].stage, stage) && !strcmp(m->m[i].name, name)) return &m->m[i];
  if (m->n == m->cap) {
    m->cap = m->cap ? 2 * m->cap : 32;
    m->m = realloc(m->m, (size_t)m->cap * sizeof *m->m);
    if (!m->m) return NULL;
  }
  Metric *x = &m->m[m->n++];
  snprintf(x->stage, sizeof x->stage, "%s", stage);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->v = NAN;
  return x;
}

/* Reads a JSON string at *p (no escapes other than \" and \\ are produced by this writer). */
static int json_string(const char **p, char *out, size_t len)
{
  const char *s = *p;
  size_t k = 0;
  if (*s != '"') return -1;
  for (s++; *s && *s != '"'; s++) {
    if (*s == '\\' && s[1]) s++;
    if (k + 1 < len) out[k++] = *s;
  }
  if (*s != '"') return -1;
  out[k] = '\0';
  *p = s + 1;
  return 0;
}

static void skip_ws(const char **p)
{
  while (isspace((unsigned char)**p)) (*p)++;
}

/* Loads entries of other stages from an existing metrics.json; entries already held win. */
static void metrics_load(SgmMetrics m)
{
  FILE *f = fopen(m->path, "rb");
  if (!f) return;
  char *buf = NULL;
  size_t n = 0, cap = 0, k;
  char chunk[4096];
  while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (n + k + 1 > cap) {
      cap = 2 * (n + k + 1);
      char *b = realloc(buf, cap);
      if (!b) break;
      buf = b;
    }
    memcpy(buf + n, chunk, k);
    n += k;
  }
  fclose(f);
  if (!buf) return;
  buf[n] = '\0';
  const char *p = buf;
  char stage[64], name[96];
  skip_ws(&p);
  if (*p++ != '{') goto done;
  for (;;) {
    skip_ws(&p);
    if (*p == '}' || json_string(&p, stage, sizeof stage)) break;
    skip_ws(&p);
    if (*p++ != ':') break;
    skip_ws(&p);
    if (*p++ != '{') break;
    for (;;) {
      skip_ws(&p);
      if (*p == '}') {
        p++;
        break;
      }
      if (json_string(&p, name, sizeof name)) goto done;
      skip_ws(&p);
      if (*p++ != ':') goto done;
      skip_ws(&p);
      double v;
      if (!strncmp(p, "null", 4))
        v = NAN, p += 4;
      else {
        char *end;
        v = strtod(p, &end);
        if (end == p) goto done;
        p = end;
      }
      int have = 0;
      for (int i = 0; i < m->n; i++)
        if (!strcmp(m->m[i].stage, stage) && !strcmp(m->m[i].name, name)) have = 1;
      if (!have) {
        Metric *x = metric_slot(m, stage, name);
        if (x) x->v = v;
      }
      skip_ws(&p);
      if (*p == ',') p++;
    }
    skip_ws(&p);
    if (*p == ',') p++;
  }
done:
  free(buf);
}

PetscErrorCode sgm_metrics_create(MPI_Comm comm, const char *outdir, SgmMetrics *out)
{
  PetscFunctionBeginUser;
  SgmMetrics m = calloc(1, sizeof *m);
  PetscCheck(m, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  m->comm = comm;
  snprintf(m->path, sizeof m->path, "%s/metrics.json", outdir);
  *out = m;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_metrics_set(SgmMetrics m, const char *stage, const char *name, double value)
{
  int rank;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(m->comm, &rank));
  if (rank != 0) PetscFunctionReturn(PETSC_SUCCESS);
  Metric *x = metric_slot(m, stage, name);
  PetscCheck(x, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  x->v = value;
  PetscFunctionReturn(PETSC_SUCCESS);
}

static void json_put_string(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

PetscErrorCode sgm_metrics_flush(SgmMetrics m)
{
  int rank, ok = 1;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(m->comm, &rank));
  if (rank == 0) {
    char tmp[PETSC_MAX_PATH_LEN + 16];
    metrics_load(m);
    snprintf(tmp, sizeof tmp, "%s.tmp", m->path);
    FILE *f = fopen(tmp, "w");
    if (!f)
      ok = 0;
    else {
      /* group by stage in first-seen order */
      fprintf(f, "{");
      int first_stage = 1;
      for (int i = 0; i < m->n; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
          if (!strcmp(m->m[j].stage, m->m[i].stage)) seen = 1;
        if (seen) continue;
        fprintf(f, "%s\n  ", first_stage ? "" : ",");
        first_stage = 0;
        json_put_string(f, m->m[i].stage);
        fprintf(f, ": {");
        int first = 1;
        for (int j = i; j < m->n; j++) {
          if (strcmp(m->m[j].stage, m->m[i].stage)) continue;
          fprintf(f, "%s\n    ", first ? "" : ",");
          first = 0;
          json_put_string(f, m->m[j].name);
          if (isfinite(m->m[j].v))
            fprintf(f, ": %.17g", m->m[j].v);
          else
            fprintf(f, ": null");
        }
        fprintf(f, "\n  }");
      }
      fprintf(f, "\n}\n");
      ok = fclose(f) == 0 && rename(tmp, m->path) == 0;
    }
  }
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, m->comm));
  PetscCheck(ok, m->comm, PETSC_ERR_FILE_WRITE, "cannot write %s", m->path);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_metrics_destroy(SgmMetrics *m)
{
  PetscFunctionBeginUser;
  if (!m || !*m) PetscFunctionReturn(PETSC_SUCCESS);
  free((*m)->m);
  free(*m);
  *m = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

struct SgmProgress_ {
  MPI_Comm comm;
  char label[64], unit[32];
  int64_t total;
  double per_item, t0, tlast, interval;
};

static void fmt_seconds(double s, char *buf, size_t len)
{
  if (!isfinite(s) || s < 0)
    snprintf(buf, len, "?");
  else if (s < 120)
    snprintf(buf, len, "%.1f s", s);
  else if (s < 7200)
    snprintf(buf, len, "%.1f min", s / 60);
  else
    snprintf(buf, len, "%.2f h", s / 3600);
}

static double progress_interval_default = 5.0;

void sgm_progress_set_default_interval(double seconds)
{
  progress_interval_default = seconds;
}

PetscErrorCode sgm_progress_create(MPI_Comm comm, const char *label, int64_t total,
                                   double units_per_item, const char *unit, SgmProgress *out)
{
  PetscFunctionBeginUser;
  SgmProgress p = calloc(1, sizeof *p);
  PetscCheck(p, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory");
  p->comm = comm;
  snprintf(p->label, sizeof p->label, "%s", label);
  snprintf(p->unit, sizeof p->unit, "%s", unit);
  p->total = total;
  p->per_item = units_per_item;
  p->t0 = p->tlast = MPI_Wtime();
  p->interval = progress_interval_default;
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-sgm_progress_interval", &p->interval, NULL));
  *out = p;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_progress_update(SgmProgress p, int64_t done)
{
  PetscFunctionBeginUser;
  double t = MPI_Wtime();
  if (t - p->tlast < p->interval) PetscFunctionReturn(PETSC_SUCCESS);
  p->tlast = t;
  double el = t - p->t0, rate = done > 0 ? (double)done / el : 0;
  char e1[32], e2[32];
  fmt_seconds(el, e1, sizeof e1);
  fmt_seconds(rate > 0 ? (double)(p->total - done) / rate : NAN, e2, sizeof e2);
  PetscCall(
      sgm_log(p->comm, "[%s] %" PRId64 "/%" PRId64 " (%.1f%%)  %.3g %s/s  elapsed %s  ETA %s\n",
              p->label, done, p->total, 100.0 * (double)done / (double)(p->total ? p->total : 1),
              rate * p->per_item, p->unit, e1, e2));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_progress_destroy(SgmProgress *p)
{
  PetscFunctionBeginUser;
  if (!p || !*p) PetscFunctionReturn(PETSC_SUCCESS);
  free(*p);
  *p = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_run_path(const SgmRun *run, const char *name, char *path, size_t len)
{
  PetscFunctionBeginUser;
  PetscCheck((size_t)snprintf(path, len, "%s/%s", run->outdir, name) < len, PETSC_COMM_SELF,
             PETSC_ERR_ARG_SIZ, "path too long: %s/%s", run->outdir, name);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_run_tmp_path(const SgmRun *run, const char *name, char *path, size_t len)
{
  PetscFunctionBeginUser;
  PetscCheck((size_t)snprintf(path, len, "%s/.%s.tmp", run->outdir, name) < len, PETSC_COMM_SELF,
             PETSC_ERR_ARG_SIZ, "path too long: %s/%s", run->outdir, name);
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_run_commit_file(const SgmRun *run, const char *name)
{
  int rank, ok = 1, err = 0;
  char tmp[PETSC_MAX_PATH_LEN], fin[PETSC_MAX_PATH_LEN];
  PetscFunctionBeginUser;
  PetscCall(sgm_run_tmp_path(run, name, tmp, sizeof tmp));
  PetscCall(sgm_run_path(run, name, fin, sizeof fin));
  PetscCallMPI(MPI_Barrier(run->comm)); /* every rank has closed its handle */
  PetscCallMPI(MPI_Comm_rank(run->comm, &rank));
  if (rank == 0 && rename(tmp, fin)) ok = 0, err = errno;
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, run->comm));
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, run->comm));
  PetscCheck(ok, run->comm, PETSC_ERR_FILE_WRITE, "cannot rename %s to %s: %s", tmp, fin,
             strerror(err));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_file_exists(MPI_Comm comm, const char *path, int amode, PetscBool *exists)
{
  PetscMPIInt rank;
  int v = 0;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) v = access(path, amode) == 0;
  PetscCallMPI(MPI_Bcast(&v, 1, MPI_INT, 0, comm));
  *exists = v ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_run_check_writable(const SgmRun *run, const char *name)
{
  PetscBool exists;
  char fin[PETSC_MAX_PATH_LEN];
  PetscFunctionBeginUser;
  PetscCall(sgm_run_path(run, name, fin, sizeof fin));
  PetscCall(sgm_file_exists(run->comm, fin, F_OK, &exists));
  PetscCheck(!exists || run->overwrite || run->restart, run->comm, SGM_ERR_USER,
             "%s exists; set [run] overwrite = true to replace it, or choose another [run] output",
             fin);
  PetscFunctionReturn(PETSC_SUCCESS);
}

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
  (void)sig;
  stop_flag = 1;
}

PetscErrorCode sgm_signals_install(void)
{
  struct sigaction sa;
  PetscFunctionBeginUser;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  PetscCheck(sigaction(SIGTERM, &sa, NULL) == 0 && sigaction(SIGUSR1, &sa, NULL) == 0,
             PETSC_COMM_SELF, PETSC_ERR_SYS, "cannot install signal handlers");
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_stop_requested(MPI_Comm comm, PetscBool *stop)
{
  int mine = stop_flag ? 1 : 0, any = 0;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm));
  *stop = any ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(PETSC_SUCCESS);
}
