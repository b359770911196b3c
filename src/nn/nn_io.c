/* model.h5: saving and loading a model's parameters, architecture and optimiser state.
 *
 * Owns: the model.h5 layout (docs/formats.md, "model.h5") and its checks. Trade-offs: parameters
 * are identical on every rank, so rank 0 alone touches the file with HDF5's default (serial) file
 * driver and broadcasts the slabs; a collective write would only add synchronisation for a few
 * MB. Rank 0's outcome (a library error, or a mismatch message) is broadcast before anything else
 * so every rank returns the same error and none waits in a broadcast that never comes. Loading
 * checks everything (architecture attributes, tensor names and shapes, optimiser kind and size)
 * before reading any value, so a refused file leaves the model untouched. Tensors are flat
 * datasets named exactly like the views ("blocks.0.attn.qkv.weight"), which is also how
 * h5py/PyTorch code addresses them: f["params"][name] is state_dict()[name].
 */
#include "sgm/nn_io.h"
#include "sgm/core.h"
#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MSG_LEN            1024
#define ATTR_LEN           256 /* an attribute name */
#define SGM_MODEL_FORMAT   "sgm_hpc model"
#define SGM_MODEL_FORMAT_V 1
#define BCAST_CHUNK        ((size_t)1 << 28)

/* Formats a mismatch message (vsnprintf: truncation of over-long names is acceptable). */
static void msgf(char *msg, const char *fmt, ...) PETSC_ATTRIBUTE_FORMAT(2, 3);
static void msgf(char *msg, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, MSG_LEN, fmt, ap);
  va_end(ap);
}

static PetscErrorCode bcast_floats(float *x, size_t n, MPI_Comm comm)
{
  PetscFunctionBeginUser;
  for (size_t off = 0; off < n; off += BCAST_CHUNK) {
    const size_t c = n - off < BCAST_CHUNK ? n - off : BCAST_CHUNK;
    PetscCallMPI(MPI_Bcast(x + off, (int)c, MPI_FLOAT, 0, comm));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode write_attr(hid_t obj, const SgmNNAttr *a)
{
  hid_t space, type = -1, attr;
  PetscFunctionBeginUser;
  SgmCallH5H(space, H5Screate(H5S_SCALAR));
  switch (a->type) {
  case SGM_NN_ATTR_STRING: {
    const char *s = a->s ? a->s : "";
    SgmCallH5H(type, H5Tcopy(H5T_C_S1));
    SgmCallH5(H5Tset_size(type, H5T_VARIABLE));
    SgmCallH5(H5Tset_cset(type, H5T_CSET_UTF8));
    SgmCallH5H(attr, H5Acreate2(obj, a->key, type, space, H5P_DEFAULT, H5P_DEFAULT));
    SgmCallH5(H5Awrite(attr, type, &s));
    SgmCallH5(H5Tclose(type));
  } break;
  case SGM_NN_ATTR_INT:
    SgmCallH5H(attr, H5Acreate2(obj, a->key, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT));
    SgmCallH5(H5Awrite(attr, H5T_NATIVE_INT64, &a->i));
    break;
  case SGM_NN_ATTR_REAL:
    SgmCallH5H(attr, H5Acreate2(obj, a->key, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT));
    SgmCallH5(H5Awrite(attr, H5T_NATIVE_DOUBLE, &a->r));
    break;
  default:
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "attribute '%s': unknown type %d", a->key,
            (int)a->type);
  }
  SgmCallH5(H5Aclose(attr));
  SgmCallH5(H5Sclose(space));
  PetscFunctionReturn(0);
}

static PetscErrorCode write_attrs(hid_t obj, int n, const SgmNNAttr *a)
{
  PetscFunctionBeginUser;
  for (int k = 0; k < n; k++) PetscCall(write_attr(obj, &a[k]));
  PetscFunctionReturn(0);
}

/* One float32 dataset per view of p, values taken from src (nparams floats). */
static PetscErrorCode write_tensors(hid_t file, const char *group, const SgmParams *p,
                                    const float *src)
{
  hid_t g;
  PetscFunctionBeginUser;
  SgmCallH5H(g, H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  for (int k = 0; k < p->ntensors; k++) {
    const SgmTensorView *t = &p->tensors[k];
    hsize_t dims[SGM_NN_MAX_DIMS];
    hid_t space, d;
    PetscCheck(!strchr(t->name, '/') && t->name[0], PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG,
               "tensor name '%s' is empty or contains '/'", t->name);
    for (int j = 0; j < t->ndim; j++) dims[j] = (hsize_t)t->shape[j];
    if (t->ndim > 0)
      SgmCallH5H(space, H5Screate_simple(t->ndim, dims, NULL));
    else
      SgmCallH5H(space, H5Screate(H5S_SCALAR));
    SgmCallH5H(
        d, H5Dcreate2(g, t->name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    SgmCallH5(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, src + t->offset));
    SgmCallH5(H5Dclose(d));
    SgmCallH5(H5Sclose(space));
  }
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(0);
}

static PetscErrorCode write_optimizer(hid_t file, const SgmParams *p, SgmOptim opt)
{
  SgmOptimSettings s;
  const char *name;
  int64_t step;
  size_t n;
  double lr;
  float *m, *v, *ema;
  hid_t g;
  PetscFunctionBeginUser;
  PetscCall(sgm_optim_get_settings(opt, &s));
  PetscCall(sgm_optim_get_name(opt, &name));
  PetscCall(sgm_optim_get_step(opt, &step));
  PetscCall(sgm_optim_get_size(opt, &n));
  PetscCall(sgm_optim_get_lr(opt, &lr));
  PetscCall(sgm_optim_get_moments(opt, &m, &v, &ema));
  PetscCheck(n == p->nparams, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ,
             "optimiser holds %zu parameters, the model %zu", n, p->nparams);
  const SgmNNAttr attrs[] = {
      SGM_NN_ATTR_S("name", name),
      SGM_NN_ATTR_I("step", step),
      SGM_NN_ATTR_I("nparams", (int64_t)n),
      SGM_NN_ATTR_R("beta1", s.beta1),
      SGM_NN_ATTR_R("beta2", s.beta2),
      SGM_NN_ATTR_R("eps", s.eps),
      SGM_NN_ATTR_R("weight_decay", s.weight_decay),
      SGM_NN_ATTR_R("clip_norm", s.clip_norm),
      SGM_NN_ATTR_R("ema_decay", s.ema_decay),
      SGM_NN_ATTR_S("schedule", sgm_optim_schedule_name(s.schedule.kind)),
      SGM_NN_ATTR_R("schedule_init_value", s.schedule.init_value),
      SGM_NN_ATTR_R("schedule_peak_value", s.schedule.peak_value),
      SGM_NN_ATTR_R("schedule_end_value", s.schedule.end_value),
      SGM_NN_ATTR_R("schedule_alpha", s.schedule.alpha),
      SGM_NN_ATTR_R("schedule_exponent", s.schedule.exponent),
      SGM_NN_ATTR_I("schedule_warmup_steps", s.schedule.warmup_steps),
      SGM_NN_ATTR_I("schedule_decay_steps", s.schedule.decay_steps),
      SGM_NN_ATTR_R("lr_next", lr),
  };
  SgmCallH5H(g, H5Gcreate2(file, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscCall(write_attrs(g, (int)(sizeof attrs / sizeof attrs[0]), attrs));
  PetscCall(write_tensors(g, "m", p, m));
  PetscCall(write_tensors(g, "v", p, v));
  /* before the first update the average of the weights is the weights (the optimiser fills its
   * EMA at the first step): a model saved after 0 steps loads the same with either weights */
  if (ema) PetscCall(write_tensors(g, "ema", p, step == 0 ? p->params : ema));
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(0);
}

static PetscErrorCode save_rank0(const char *path, const SgmParams *p, int narch,
                                 const SgmNNAttr *arch, int nhyper, const SgmNNAttr *hyper,
                                 SgmOptim opt)
{
  char tmp[PETSC_MAX_PATH_LEN];
  hid_t f, g;
  PetscFunctionBeginUser;
  PetscCall(PetscSNPrintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()));
  SgmCallH5H(f, H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  const SgmNNAttr root[] = {
      SGM_NN_ATTR_S("format", SGM_MODEL_FORMAT),
      SGM_NN_ATTR_I("format_version", SGM_MODEL_FORMAT_V),
      SGM_NN_ATTR_I("nparams", (int64_t)p->nparams),
      SGM_NN_ATTR_I("ntensors", p->ntensors),
  };
  PetscCall(write_attrs(f, (int)(sizeof root / sizeof root[0]), root));
  SgmCallH5H(g, H5Gcreate2(f, "architecture", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscCall(write_attrs(g, narch, arch));
  SgmCallH5(H5Gclose(g));
  SgmCallH5H(g, H5Gcreate2(f, "hyperparameters", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  PetscCall(write_attrs(g, nhyper, hyper));
  SgmCallH5(H5Gclose(g));
  PetscCall(write_tensors(f, "params", p, p->params));
  if (opt) PetscCall(write_optimizer(f, p, opt));
  SgmCallH5(H5Fclose(f));
  PetscCheck(!rename(tmp, path), PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE,
             "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_nn_save(MPI_Comm comm, const char *path, const SgmParams *p, int narch,
                           const SgmNNAttr *arch, int nhyper, const SgmNNAttr *hyper, SgmOptim opt)
{
  PetscMPIInt rank;
  int ierr = 0;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) ierr = (int)save_rank0(path, p, narch, arch, nhyper, hyper, opt);
  PetscCallMPI(MPI_Bcast(&ierr, 1, MPI_INT, 0, comm));
  PetscCheck(!ierr, comm, PETSC_ERR_FILE_WRITE, "could not write model file %s", path);
  PetscFunctionReturn(0);
}

/* Reads a scalar attribute into `out` (type taken from the file). *found = 0 when absent. */
static PetscErrorCode read_attr(hid_t obj, const char *key, SgmNNAttr *out, char *sbuf, size_t slen,
                                int *found)
{
  hid_t attr, type;
  htri_t ex;
  PetscFunctionBeginUser;
  memset(out, 0, sizeof *out);
  out->key = key;
  SgmCallH5H(ex, H5Aexists(obj, key));
  *found = ex > 0;
  if (!*found) PetscFunctionReturn(0);
  SgmCallH5H(attr, H5Aopen(obj, key, H5P_DEFAULT));
  SgmCallH5H(type, H5Aget_type(attr));
  switch (H5Tget_class(type)) {
  case H5T_STRING:
    out->type = SGM_NN_ATTR_STRING;
    out->s = sbuf;
    sbuf[0] = '\0';
    if (H5Tis_variable_str(type) > 0) {
      char *s = NULL;
      hid_t mt;
      SgmCallH5H(mt, H5Tcopy(type)); /* same character set: HDF5 does not convert ASCII/UTF-8 */
      SgmCallH5(H5Aread(attr, mt, &s));
      if (s) PetscCall(PetscStrncpy(sbuf, s, slen));
      if (s) H5free_memory(s);
      SgmCallH5(H5Tclose(mt));
    } else {
      const size_t sz = H5Tget_size(type);
      char *tmp;
      PetscCall(PetscCalloc1(sz + 1, &tmp));
      SgmCallH5(H5Aread(attr, type, tmp));
      PetscCall(PetscStrncpy(sbuf, tmp, slen));
      PetscCall(PetscFree(tmp));
    }
    break;
  case H5T_INTEGER:
    out->type = SGM_NN_ATTR_INT;
    SgmCallH5(H5Aread(attr, H5T_NATIVE_INT64, &out->i));
    break;
  case H5T_FLOAT:
    out->type = SGM_NN_ATTR_REAL;
    SgmCallH5(H5Aread(attr, H5T_NATIVE_DOUBLE, &out->r));
    break;
  default:
    *found = -1; /* present but of a class we do not write */
  }
  SgmCallH5(H5Tclose(type));
  SgmCallH5(H5Aclose(attr));
  PetscFunctionReturn(0);
}

static const char *attr_type_name(SgmNNAttrType t)
{
  return t == SGM_NN_ATTR_STRING ? "a string" : t == SGM_NN_ATTR_INT ? "an integer" : "a float";
}

static void attr_value_str(const SgmNNAttr *a, char *buf, size_t len)
{
  if (a->type == SGM_NN_ATTR_STRING)
    snprintf(buf, len, "\"%s\"", a->s ? a->s : "");
  else if (a->type == SGM_NN_ATTR_INT)
    snprintf(buf, len, "%" PRId64, a->i);
  else
    snprintf(buf, len, "%.17g", a->r);
}

typedef struct {
  int n;
  const SgmNNAttr *a;
  char extra[ATTR_LEN];
} ExtraAttrCtx;

static herr_t find_extra_attr(hid_t loc, const char *name, const H5A_info_t *info, void *vctx)
{
  ExtraAttrCtx *ctx = (ExtraAttrCtx *)vctx;
  (void)loc;
  (void)info;
  for (int k = 0; k < ctx->n; k++)
    if (!strcmp(ctx->a[k].key, name)) return 0;
  snprintf(ctx->extra, sizeof ctx->extra, "%s", name);
  return 1; /* stop */
}

/* The first difference between the file's /architecture and arch, as a message in msg (empty:
 * none) naming the attribute, which also goes to which[ATTR_LEN] (may be NULL). */
static PetscErrorCode check_arch(hid_t file, const char *path, int narch, const SgmNNAttr *arch,
                                 char *msg, char *which)
{
  hid_t g;
  htri_t ex;
  PetscFunctionBeginUser;
  SgmCallH5H(ex, H5Lexists(file, "architecture", H5P_DEFAULT));
  if (which) which[0] = 0;
  if (!ex) {
    if (narch > 0)
      msgf(msg, "%s has no /architecture group, the model has %d attributes", path, narch);
    PetscFunctionReturn(0);
  }
  SgmCallH5H(g, H5Gopen2(file, "architecture", H5P_DEFAULT));
  for (int k = 0; k < narch && !msg[0]; k++) {
    const SgmNNAttr *want = &arch[k];
    SgmNNAttr got;
    char sbuf[512], a[600], b[600];
    int found;
    PetscCall(read_attr(g, want->key, &got, sbuf, sizeof sbuf, &found));
    if (found == 0) {
      msgf(msg,
           "%s: architecture attribute '%s' is missing in the file (the model built from the "
           "input has it)",
           path, want->key);
    } else if (found < 0 || got.type != want->type) {
      msgf(msg,
           "%s: architecture attribute '%s' is %s in the file but %s in the model built "
           "from the input",
           path, want->key, found < 0 ? "of an unsupported type" : attr_type_name(got.type),
           attr_type_name(want->type));
    } else {
      const int same = want->type == SGM_NN_ATTR_STRING ? !strcmp(got.s, want->s ? want->s : "")
                       : want->type == SGM_NN_ATTR_INT  ? got.i == want->i
                                                        : got.r == want->r;
      if (!same) {
        attr_value_str(&got, a, sizeof a);
        attr_value_str(want, b, sizeof b);
        msgf(msg,
             "%s: architecture attribute '%s' is %s in the file but %s in the model built "
             "from the input",
             path, want->key, a, b);
      }
    }
    if (msg[0] && which) snprintf(which, ATTR_LEN, "%s", want->key);
  }
  if (!msg[0]) {
    ExtraAttrCtx ctx = {narch, arch, ""};
    hsize_t idx = 0;
    SgmCallH5(H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, find_extra_attr, &ctx));
    if (ctx.extra[0])
      msgf(msg,
           "%s: the file has architecture attribute '%s' that the model built from the input "
           "does not have",
           path, ctx.extra);
    if (ctx.extra[0] && which) snprintf(which, ATTR_LEN, "%s", ctx.extra);
  }
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(0);
}

int sgm_nn_arch_differs(const char *path, int narch, const SgmNNAttr *arch, char *which,
                        size_t wlen, char *msg, size_t len)
{
  char m[MSG_LEN] = "", w[ATTR_LEN] = "";
  int r = -1;
  H5E_auto2_t fn;
  void *data;
  H5Eget_auto2(H5E_DEFAULT, &fn, &data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0)
    snprintf(m, sizeof m, "%s cannot be opened as an HDF5 file", path);
  else {
    /* a damaged file makes check_arch return an error: say so, print nothing */
    (void)PetscPushErrorHandler(PetscReturnErrorHandler, NULL);
    const PetscErrorCode ierr = check_arch(f, path, narch, arch, m, w);
    (void)PetscPopErrorHandler();
    if (ierr)
      snprintf(m, sizeof m, "%s: its /architecture attributes cannot be read", path);
    else
      r = m[0] != 0;
    H5Fclose(f);
  }
  H5Eset_auto2(H5E_DEFAULT, fn, data);
  snprintf(msg, len, "%s", m);
  snprintf(which, wlen, "%s", r == 1 ? w : "");
  return r;
}

typedef struct {
  const SgmParams *p;
  char extra[256];
} ExtraLinkCtx;

static herr_t find_extra_link(hid_t loc, const char *name, const H5L_info_t *info, void *vctx)
{
  ExtraLinkCtx *ctx = (ExtraLinkCtx *)vctx;
  (void)loc;
  (void)info;
  for (int k = 0; k < ctx->p->ntensors; k++)
    if (!strcmp(ctx->p->tensors[k].name, name)) return 0;
  snprintf(ctx->extra, sizeof ctx->extra, "%s", name);
  return 1;
}

static void shape_str(int ndim, const hsize_t *dims, char *buf, size_t len)
{
  size_t o = (size_t)snprintf(buf, len, "[");
  for (int j = 0; j < ndim && o < len; j++)
    o += (size_t)snprintf(buf + o, len - o, j ? ", %llu" : "%llu", (unsigned long long)dims[j]);
  if (o < len) snprintf(buf + o, len - o, "]");
}

/* The group `group` must hold exactly p's tensors, with p's shapes. */
static PetscErrorCode check_tensors(hid_t file, const char *path, const char *group,
                                    const SgmParams *p, char *msg)
{
  hid_t g;
  htri_t ex;
  H5G_info_t info;
  PetscFunctionBeginUser;
  SgmCallH5H(ex, H5Lexists(file, group, H5P_DEFAULT));
  if (ex > 0) SgmCallH5H(ex, H5Oexists_by_name(file, group, H5P_DEFAULT));
  if (!ex) {
    msgf(msg, "%s has no /%s group", path, group);
    PetscFunctionReturn(0);
  }
  SgmCallH5H(g, H5Gopen2(file, group, H5P_DEFAULT));
  for (int k = 0; k < p->ntensors && !msg[0]; k++) {
    const SgmTensorView *t = &p->tensors[k];
    hsize_t want[SGM_NN_MAX_DIMS], got[H5S_MAX_RANK];
    char a[128], b[128];
    hid_t d, space;
    int nd;
    SgmCallH5H(ex, H5Lexists(g, t->name, H5P_DEFAULT));
    if (!ex) {
      msgf(msg, "%s: tensor '%s' of the model built from the input is missing in /%s", path,
           t->name, group);
      break;
    }
    SgmCallH5H(d, H5Dopen2(g, t->name, H5P_DEFAULT));
    SgmCallH5H(space, H5Dget_space(d));
    SgmCallH5H(nd, H5Sget_simple_extent_ndims(space));
    SgmCallH5(H5Sget_simple_extent_dims(space, got, NULL));
    for (int j = 0; j < t->ndim; j++) want[j] = (hsize_t)t->shape[j];
    int same = nd == t->ndim;
    for (int j = 0; same && j < nd; j++) same = got[j] == want[j];
    if (!same) {
      shape_str(nd, got, a, sizeof a);
      shape_str(t->ndim, want, b, sizeof b);
      msgf(msg, "%s: tensor '%s' has shape %s in /%s but %s in the model built from the input",
           path, t->name, a, group, b);
    }
    SgmCallH5(H5Sclose(space));
    SgmCallH5(H5Dclose(d));
  }
  if (!msg[0]) {
    SgmCallH5(H5Gget_info(g, &info));
    if (info.nlinks != (hsize_t)p->ntensors) {
      ExtraLinkCtx ctx = {p, ""};
      hsize_t idx = 0;
      SgmCallH5(H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, find_extra_link, &ctx));
      msgf(msg, "%s: /%s has %llu tensors, the model built from the input %d (extra: '%s')", path,
           group, (unsigned long long)info.nlinks, p->ntensors, ctx.extra);
    }
  }
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(0);
}

static PetscErrorCode read_tensors(hid_t file, const char *group, const SgmParams *p, float *dst)
{
  hid_t g;
  PetscFunctionBeginUser;
  SgmCallH5H(g, H5Gopen2(file, group, H5P_DEFAULT));
  for (int k = 0; k < p->ntensors; k++) {
    hid_t d;
    SgmCallH5H(d, H5Dopen2(g, p->tensors[k].name, H5P_DEFAULT));
    SgmCallH5(
        H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst + p->tensors[k].offset));
    SgmCallH5(H5Dclose(d));
  }
  SgmCallH5(H5Gclose(g));
  PetscFunctionReturn(0);
}

/* Checks the /optimizer group against opt; *step receives the stored step, *has_ema whether
 * /optimizer/ema exists. */
static PetscErrorCode check_optimizer(hid_t file, const char *path, const SgmParams *p,
                                      SgmOptim opt, int need_ema, int64_t *step, int *has_ema,
                                      char *msg)
{
  hid_t g;
  htri_t ex;
  SgmNNAttr a;
  char sbuf[256];
  int found;
  PetscFunctionBeginUser;
  SgmCallH5H(ex, H5Lexists(file, "optimizer", H5P_DEFAULT));
  if (!ex) {
    msgf(msg, "%s has no /optimizer group (saved without optimiser state)", path);
    PetscFunctionReturn(0);
  }
  SgmCallH5H(g, H5Gopen2(file, "optimizer", H5P_DEFAULT));
  SgmCallH5H(ex, H5Lexists(g, "ema", H5P_DEFAULT));
  *has_ema = ex > 0;
  if (need_ema && !*has_ema)
    msgf(msg, "%s has no EMA weights (/optimizer/ema): trained without ema_decay", path);
  if (opt && !msg[0]) {
    const char *name;
    size_t n;
    PetscCall(sgm_optim_get_name(opt, &name));
    PetscCall(sgm_optim_get_size(opt, &n));
    PetscCall(read_attr(g, "name", &a, sbuf, sizeof sbuf, &found));
    if (found <= 0 || a.type != SGM_NN_ATTR_STRING || strcmp(a.s, name))
      msgf(msg, "%s: optimiser is '%s' in the file but '%s' in the input", path,
           found > 0 && a.type == SGM_NN_ATTR_STRING ? a.s : "?", name);
    if (!msg[0]) {
      PetscCall(read_attr(g, "nparams", &a, sbuf, sizeof sbuf, &found));
      if (found <= 0 || a.type != SGM_NN_ATTR_INT || a.i != (int64_t)n)
        msgf(msg, "%s: optimiser holds %" PRId64 " parameters, the model %zu", path,
             found > 0 && a.type == SGM_NN_ATTR_INT ? a.i : (int64_t)-1, n);
    }
    if (!msg[0]) {
      PetscCall(read_attr(g, "step", &a, sbuf, sizeof sbuf, &found));
      if (found <= 0 || a.type != SGM_NN_ATTR_INT || a.i < 0)
        msgf(msg, "%s: /optimizer has no valid integer attribute 'step'", path);
      else
        *step = a.i;
    }
  }
  SgmCallH5(H5Gclose(g));
  if (opt && !msg[0]) PetscCall(check_tensors(file, path, "optimizer/m", p, msg));
  if (opt && !msg[0]) PetscCall(check_tensors(file, path, "optimizer/v", p, msg));
  if (*has_ema && (need_ema || opt) && !msg[0])
    PetscCall(check_tensors(file, path, "optimizer/ema", p, msg));
  PetscFunctionReturn(0);
}

static PetscErrorCode load_rank0(const char *path, SgmParams *p, int narch, const SgmNNAttr *arch,
                                 SgmOptim opt, int ema_weights, int64_t *step, char *msg)
{
  hid_t f;
  htri_t ish5;
  int has_ema = 0;
  PetscFunctionBeginUser;
  if (access(path, R_OK)) {
    msgf(msg, "cannot read model file %s: %s", path, strerror(errno));
    PetscFunctionReturn(0);
  }
  ish5 = H5Fis_hdf5(path);
  if (ish5 <= 0) {
    msgf(msg, "%s is not an HDF5 file", path);
    PetscFunctionReturn(0);
  }
  SgmCallH5H(f, H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT));
  PetscCall(check_arch(f, path, narch, arch, msg, NULL));
  if (!msg[0]) PetscCall(check_tensors(f, path, "params", p, msg));
  if (!msg[0] && (opt || ema_weights))
    PetscCall(check_optimizer(f, path, p, opt, ema_weights, step, &has_ema, msg));
  if (!msg[0]) {
    PetscCall(read_tensors(f, ema_weights ? "optimizer/ema" : "params", p, p->params));
    if (opt) {
      float *m, *v, *ema;
      PetscCall(sgm_optim_get_moments(opt, &m, &v, &ema));
      PetscCall(read_tensors(f, "optimizer/m", p, m));
      PetscCall(read_tensors(f, "optimizer/v", p, v));
      /* A file without EMA restarting a run with EMA: the EMA starts from the loaded weights. */
      if (ema && has_ema)
        PetscCall(read_tensors(f, "optimizer/ema", p, ema));
      else if (ema)
        PetscCall(PetscArraycpy(ema, p->params, p->nparams));
      PetscCall(sgm_optim_set_step(opt, *step));
    }
  }
  SgmCallH5(H5Fclose(f));
  PetscFunctionReturn(0);
}

static PetscErrorCode load(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                           const SgmNNAttr *arch, SgmOptim opt, int ema_weights)
{
  PetscMPIInt rank;
  int ierr = 0;
  int64_t step = 0;
  char msg[MSG_LEN] = "";
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (opt) {
    size_t n;
    PetscCall(sgm_optim_get_size(opt, &n));
    PetscCheck(n == p->nparams, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ,
               "optimiser holds %zu parameters, the model %zu", n, p->nparams);
  }
  if (rank == 0) ierr = (int)load_rank0(path, p, narch, arch, opt, ema_weights, &step, msg);
  PetscCallMPI(MPI_Bcast(&ierr, 1, MPI_INT, 0, comm));
  PetscCheck(!ierr, comm, PETSC_ERR_FILE_READ, "could not read model file %s", path);
  PetscCallMPI(MPI_Bcast(msg, MSG_LEN, MPI_CHAR, 0, comm));
  PetscCheck(!msg[0], comm, SGM_ERR_USER, "%s", msg);
  PetscCall(bcast_floats(p->params, p->nparams, comm));
  if (opt) {
    float *m, *v, *ema;
    PetscCall(sgm_optim_get_moments(opt, &m, &v, &ema));
    PetscCall(bcast_floats(m, p->nparams, comm));
    PetscCall(bcast_floats(v, p->nparams, comm));
    if (ema) PetscCall(bcast_floats(ema, p->nparams, comm));
    PetscCallMPI(MPI_Bcast(&step, 1, MPI_INT64_T, 0, comm));
    PetscCall(sgm_optim_set_step(opt, step));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_nn_load(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                           const SgmNNAttr *arch, SgmOptim opt)
{
  PetscFunctionBeginUser;
  PetscCall(load(comm, path, p, narch, arch, opt, 0));
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_nn_load_ema(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                               const SgmNNAttr *arch)
{
  PetscFunctionBeginUser;
  PetscCall(load(comm, path, p, narch, arch, NULL, 1));
  PetscFunctionReturn(0);
}

/* *has = 1 if path is an HDF5 file with /optimizer/ema, else 0 (also when it cannot be opened:
 * the load then reports why). Rank 0 looks; collective on comm. */
static PetscErrorCode has_ema(MPI_Comm comm, const char *path, int *has)
{
  PetscMPIInt rank;
  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  *has = 0;
  if (rank == 0 && access(path, R_OK) == 0) {
    H5E_auto2_t fn;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &fn, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0) {
      *has = H5Lexists(f, "optimizer", H5P_DEFAULT) > 0 &&
             H5Lexists(f, "optimizer/ema", H5P_DEFAULT) > 0;
      H5Fclose(f);
    }
    H5Eset_auto2(H5E_DEFAULT, fn, data);
  }
  PetscCallMPI(MPI_Bcast(has, 1, MPI_INT, 0, comm));
  PetscFunctionReturn(0);
}

PetscErrorCode sgm_nn_load_auto(MPI_Comm comm, const char *path, SgmParams *p, int narch,
                                const SgmNNAttr *arch, int *ema)
{
  int has;
  PetscFunctionBeginUser;
  PetscCall(has_ema(comm, path, &has));
  PetscCall(load(comm, path, p, narch, arch, NULL, has));
  if (ema) *ema = has;
  PetscFunctionReturn(0);
}
