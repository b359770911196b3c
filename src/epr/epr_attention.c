/* Attention rollout of the learned local transformer for chosen particles (paper 002 App. E.3,
 * eq. 93), part of the `epr` stage ([epr] attention_ids, attention_frames).
 *
 * Owns: the rollout of per-layer attention maps and the attention.h5 file (docs/formats.md).
 * For each chosen trajectory frame the engine state is set from the frame, the K-nearest-neighbour
 * windows are built exactly as the "model" score provider builds them (windows.h over the
 * engine's decomposition, the [model] window width), and the rank that owns a chosen centre
 * gathers its window and recomputes the network's forward pass with every block's head-averaged
 * attention (sgm_nn_transformer_attention). The rollout of the centre token is
 *   r = e_0ᵀ Ã_L Ã_{L-1} ⋯ Ã_1,   Ã_l = (I + A_l) / 2,
 * i.e. eq. 93 with the product ordered from the last block (whose centre row is read) down to the
 * first (whose columns are the input tokens); r is a probability vector over the K + 1 tokens.
 * Results of the chosen particles (a few) are summed onto rank 0 with one MPI_Reduce per frame
 * (each is computed by exactly one rank) and rank 0 writes the file with serial HDF5. The network
 * is the one of model.h5 ([epr] model), built from [model] as the train stage builds it.
 */
#include "sgm/epr.h"
#include "sgm/core.h"
#include "sgm/epr_io.h"
#include "sgm/h5md.h"
#include "sgm/score_model.h"
#include "sgm/windows.h"

#include <hdf5.h>
#include <math.h>
#include <string.h>

void sgm_epr_attention_rollout(int L, int T, const float *A, int row, double *r)
{
  double *v = r, tmp[1024];
  double *w = T <= 1024 ? tmp : malloc(sizeof(double) * (size_t)T);
  for (int j = 0; j < T; j++) v[j] = j == row ? 1.0 : 0.0;
  for (int l = L - 1; l >= 0; l--) {
    const float *Al = A + (size_t)l * T * T;
    for (int j = 0; j < T; j++) w[j] = 0.5 * v[j];
    for (int i = 0; i < T; i++) {
      if (v[i] == 0.0) continue;
      for (int j = 0; j < T; j++) w[j] += 0.5 * v[i] * (double)Al[(size_t)i * T + j];
    }
    for (int j = 0; j < T; j++) v[j] = w[j];
  }
  if (w != tmp) free(w);
}

static PetscErrorCode h5_write(hid_t f, const char *name, hid_t type, int rank_,
                               const hsize_t *dims, const void *buf)
{
  hid_t sp, d;
  PetscFunctionBeginUser;
  SgmCallH5H(sp, H5Screate_simple(rank_, dims, NULL));
  SgmCallH5H(d, H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
  SgmCallH5(H5Dclose(d));
  SgmCallH5(H5Sclose(sp));
  PetscFunctionReturn(PETSC_SUCCESS);
}

static PetscErrorCode h5_attr(hid_t f, const char *name, hid_t type, const void *v)
{
  hid_t s, a;
  PetscFunctionBeginUser;
  SgmCallH5H(s, H5Screate(H5S_SCALAR));
  SgmCallH5H(a, H5Acreate2(f, name, type, s, H5P_DEFAULT, H5P_DEFAULT));
  SgmCallH5(H5Awrite(a, type, v));
  SgmCallH5(H5Aclose(a));
  SgmCallH5(H5Sclose(s));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_epr_attention_stage(SgmRun *run, SgmAoup s, const char *traj, const char *group,
                                       int64_t default_frame)
{
  SgmConfig cfg = run->cfg;
  const SgmAoupParams *p = &s->p;
  const int dim = p->dim;
  const int64_t n = p->n;
  int nid, nfr;
  const int64_t *idv, *frv;
  int64_t nfile;
  PetscMPIInt rank;
  char mpath[PETSC_MAX_PATH_LEN], tmp[PETSC_MAX_PATH_LEN];
  PetscBool set;
  PetscFunctionBeginUser;
  PetscCall(sgm_config_get_int_array(cfg, "epr.attention_ids", &nid, &idv));
  if (nid == 0) PetscFunctionReturn(PETSC_SUCCESS);
  PetscCall(sgm_config_get_int_array(cfg, "epr.attention_frames", &nfr, &frv));
  PetscCallMPI(MPI_Comm_rank(run->comm, &rank));
  PetscCheck(p->periodic, run->comm, SGM_ERR_USER,
             "[epr] attention_ids: the local transformer's windows need a periodic box");
  PetscCall(sgm_h5md_nframes(run->comm, traj, group, &nfile));
  for (int k = 0; k < nid; k++)
    PetscCheck(idv[k] >= 0 && idv[k] < n, run->comm, SGM_ERR_USER,
               "[epr] attention_ids: id %lld outside [0, %lld)", (long long)idv[k], (long long)n);
  for (int k = 0; k < nfr; k++)
    PetscCheck(frv[k] >= 0 && frv[k] < nfile, run->comm, SGM_ERR_USER,
               "[epr] attention_frames: frame %lld outside the %lld frames of %s",
               (long long)frv[k], (long long)nfile, traj);
  const int F = nfr > 0 ? nfr : 1;
  PetscCall(sgm_config_is_set(cfg, "epr.model", &set));
  if (set) {
    const char *m;
    PetscCall(sgm_config_get_string(cfg, "epr.model", &m));
    PetscCall(PetscStrncpy(mpath, m, sizeof mpath));
  } else
    PetscCall(sgm_run_path(run, "model.h5", mpath, sizeof mpath));
  PetscCall(sgm_run_check_writable(run, "attention.h5"));

  SgmScoreModelSpec ms;
  SgmWindows w;
  double width;
  PetscCall(sgm_score_model_from_config(run->comm, cfg, dim, p->seed, &ms));
  PetscCall(sgm_epr_load_weights(run->comm, cfg, mpath, sgm_nn_transformer_params(ms.m), ms.narch,
                                 ms.arch));
  PetscCheck(ms.K < n, run->comm, SGM_ERR_USER, "[epr] attention_ids: [model] K = %d needs N > K",
             ms.K);
  PetscCall(sgm_score_model_window_width(cfg, p, ms.K, &width));
  PetscCall(sgm_windows_create(run->comm, &s->decomp, ms.K, width, &w));
  const int T = ms.K + 1, L = ms.cfg.n_layers;
  /* per frame and chosen particle: found flag, centre position, neighbour ids, displacements,
   * rollout, per-layer maps (doubles, summed onto rank 0) */
  const size_t per = 1 + (size_t)dim + T + (size_t)T * dim + T + (size_t)L * T * T;
  double *res, *sum = NULL, *x, *g, *times;
  float *X, *G, *M, *A;
  int64_t *ids, *steps, *fidx;
  PetscCall(PetscCalloc1(per * nid * F, &res));
  if (!rank) PetscCall(PetscMalloc1(per * nid * F, &sum));
  PetscCall(PetscMalloc4(n * dim, &x, n * dim, &g, n, &ids, F, &times));
  PetscCall(PetscMalloc2(F, &steps, F, &fidx));
  PetscCall(PetscMalloc4((size_t)T * dim, &X, (size_t)T * dim, &G, T, &M, (size_t)L * T * T, &A));
  for (int64_t i = 0; i < n; i++) ids[i] = i;
  for (int f = 0; f < F; f++) {
    fidx[f] = nfr > 0 ? frv[f] : default_frame;
    PetscCall(sgm_epr_read_frames(run->comm, traj, group, fidx[f], 1, 1, dim, n, x, g, &steps[f]));
    times[f] = (double)steps[f] * p->dt;
    PetscCall(sgm_aoup_set_state(s, n, ids, x, g, steps[f]));
    const SgmParticles *P = &s->part;
    PetscCall(sgm_windows_build(w, P->nlocal, P->id, P->x, P->g));
    int64_t nc;
    const int64_t *nbr, *nbr_id;
    const SgmParticles *wp;
    PetscCall(sgm_windows_get(w, &nc, &nbr, &nbr_id, &wp));
    for (int64_t i = 0; i < nc; i++)
      for (int k = 0; k < nid; k++) {
        if (wp->id[i] != idv[k]) continue;
        double *r = res + per * ((size_t)f * nid + k), *rpos = r + 1, *rid = rpos + dim;
        double *rdx = rid + T, *rroll = rdx + (size_t)T * dim, *ratt = rroll + T;
        PetscCall(sgm_windows_gather(w, 1, &i, NULL, NULL, 0.0, X, G, M));
        PetscCall(sgm_nn_transformer_attention(ms.m, &ms.cfg, X, G, M, 1, A, NULL));
        sgm_epr_attention_rollout(L, T, A, 0, rroll);
        r[0] = 1.0;
        for (int a = 0; a < dim; a++) rpos[a] = wp->x[i * dim + a];
        for (int j = 0; j < T; j++) {
          const int64_t q = nbr[i * T + j];
          rid[j] = (double)nbr_id[i * T + j];
          for (int a = 0; a < dim; a++) {
            double d = wp->x[q * dim + a] - wp->x[i * dim + a];
            d -= p->L * round(d / p->L);
            rdx[j * dim + a] = d;
          }
        }
        for (size_t e = 0; e < (size_t)L * T * T; e++) ratt[e] = (double)A[e];
      }
  }
  PetscCallMPI(
      MPI_Reduce(res, sum, (PetscMPIInt)(per * nid * F), MPI_DOUBLE, MPI_SUM, 0, run->comm));
  int ok = 1;
  if (!rank) {
    for (int e = 0; e < nid * F; e++) ok &= sum[per * e] == 1.0;
    if (ok) {
      hid_t fh;
      const hsize_t P_ = (hsize_t)nid, F_ = (hsize_t)F, T_ = (hsize_t)T, D_ = (hsize_t)dim;
      int64_t *iv;
      double *dv;
      PetscCall(sgm_run_tmp_path(run, "attention.h5", tmp, sizeof tmp));
      fh = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
      PetscCheck(fh >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot create %s", tmp);
      PetscCall(PetscMalloc2(F * nid * T, &iv, per * nid * F, &dv));
      hsize_t d1[1] = {F_}, dp[1] = {P_};
      PetscCall(h5_write(fh, "frame", H5T_NATIVE_INT64, 1, d1, fidx));
      PetscCall(h5_write(fh, "step", H5T_NATIVE_INT64, 1, d1, steps));
      PetscCall(h5_write(fh, "time", H5T_NATIVE_DOUBLE, 1, d1, times));
      PetscCall(h5_write(fh, "id", H5T_NATIVE_INT64, 1, dp, idv));
      /* unpack the records into the datasets */
      const size_t offs[4] = {1, 1 + (size_t)dim + T, 1 + (size_t)dim + T + (size_t)T * dim,
                              1 + (size_t)dim + 2 * (size_t)T + (size_t)T * dim};
      const size_t lens[4] = {(size_t)dim, (size_t)T * dim, (size_t)T, (size_t)L * T * T};
      const char *names[4] = {"position", "displacement", "rollout", "attention"};
      hsize_t shp[4][6] = {
          {F_, P_, D_}, {F_, P_, T_, D_}, {F_, P_, T_}, {F_, P_, (hsize_t)L, T_, T_}};
      const int rk[4] = {3, 4, 3, 5};
      for (int q = 0; q < 4; q++) {
        for (int e = 0; e < nid * F; e++)
          memcpy(dv + lens[q] * e, sum + per * e + offs[q], sizeof(double) * lens[q]);
        PetscCall(h5_write(fh, names[q], H5T_NATIVE_DOUBLE, rk[q], shp[q], dv));
      }
      for (int e = 0; e < nid * F; e++)
        for (int j = 0; j < T; j++) iv[e * T + j] = (int64_t)sum[per * e + 1 + dim + j];
      hsize_t dn[3] = {F_, P_, T_};
      PetscCall(h5_write(fh, "neighbour_id", H5T_NATIVE_INT64, 3, dn, iv));
      int iattr[4] = {dim, L, ms.cfg.n_heads, ms.K};
      const char *an[4] = {"dim", "layers", "heads", "K"};
      for (int q = 0; q < 4; q++) PetscCall(h5_attr(fh, an[q], H5T_NATIVE_INT, &iattr[q]));
      {
        hid_t t;
        SgmCallH5H(t, H5Tcopy(H5T_C_S1));
        SgmCallH5(H5Tset_size(t, strlen(mpath) + 1));
        PetscCall(h5_attr(fh, "model", t, mpath));
        SgmCallH5(H5Tclose(t));
      }
      SgmCallH5(H5Fclose(fh));
      PetscCall(PetscFree2(iv, dv));
    }
  }
  PetscCallMPI(MPI_Bcast(&ok, 1, MPI_INT, 0, run->comm));
  PetscCheck(ok, run->comm, PETSC_ERR_PLIB,
             "epr attention: a chosen particle was not found exactly once among the windows' "
             "centres");
  PetscCall(sgm_run_commit_file(run, "attention.h5"));
  PetscCall(sgm_log(run->comm,
                    "epr: attention rollout of %d particles on %d frames (L = %d, K = %d) -> "
                    "attention.h5\n",
                    nid, F, L, ms.K));
  PetscCall(PetscFree4(X, G, M, A));
  PetscCall(PetscFree2(steps, fidx));
  PetscCall(PetscFree4(x, g, ids, times));
  PetscCall(PetscFree(res));
  PetscCall(PetscFree(sum));
  PetscCall(sgm_windows_destroy(&w));
  PetscCall(sgm_nn_transformer_destroy(&ms.m));
  PetscFunctionReturn(PETSC_SUCCESS);
}
