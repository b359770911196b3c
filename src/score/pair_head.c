/* The learned pair term of the full-state score networks (pair_head.h).
 *
 * Divergences. For a row (i, j) with z = (rho, a, b, c) = (r / r_c, g_i.u, g_j.u, g_i.g_j),
 * p = |g_i|^2, q = |g_j|^2 and J_km = d f_k / d z_m (four JVPs of the MLP along its inputs):
 *   grad_{x_i} rho = u / r_c, grad_{x_i} a = (g_i - a u) / r, grad_{x_i} b = (g_j - b u) / r,
 *   grad_{x_i} c = 0, div_{x_i} u = (d - 1) / r, and g_i, g_j do not depend on x_i, so
 *   div_{x_i} (phi f u)   = phi' f + phi J_rho / r_c + phi f (d - 1) / r
 *   div_{x_i} (phi f g_i) = phi' f a + phi (J_rho a / r_c + J_a (p - a^2) / r + J_b (c - a b) / r)
 *   div_{x_i} (phi f g_j) = phi' f b + phi (J_rho b / r_c + J_a (c - a b) / r + J_b (q - b^2) / r);
 *   grad_{g_i} a = u, grad_{g_i} c = g_j (rho and b do not depend on g_i), div_{g_i} g_i = d:
 *   div_{g_i} (phi f u)   = phi (J_a + J_c b)
 *   div_{g_i} (phi f g_i) = phi (J_a a + J_c c + d f)
 *   div_{g_i} (phi f g_j) = phi (J_a b + J_c q).
 * The tangents are one-hot, but with the contact profile e(r) as a fifth input the rho tangent
 * also carries r_c de/dr on it: J_rho / r_c is then the total df/dr and the formulas hold as
 * they are.
 * With gnorm the MLP also sees p and q (the last two inputs), which completes the rotation
 * invariants of a pair ((r, a, b, c, p, q) is the Gram matrix of u, g_i, g_j: it fixes g_i and
 * g_j relative to u up to a reflection, in any dimension). They do not depend on x_i, so the x
 * divergences are unchanged; grad_{g_i} p = 2 g_i and grad_{g_i} q = 0 add, with J_p the fifth JVP
 * (one-hot on p), div_{g_i}: phi J_p 2 a (along u), phi J_p 2 p (along g_i), phi J_p 2 c (along
 * g_j). Rows are built in the order (configuration, i < j) with (i, j) followed by (j, i), the same
 * in every pass, so that the backward's recomputed forward sees the same chunks.
 */
#include "pair_head.h"
#include "sgm/domain.h"

#include <math.h>
#include <string.h>

typedef struct {
  int b, i, j;
  double r, u[3], phi, dphi;
  double dedr; /* de/dr of the contact profile (0 without it) */
} PairRow;

struct SgmPairHead_ {
  SgmPairHeadConfig c;
  SgmNnMlp mlp;
  int no; /* MLP outputs: 6 with learn_x, else 3 */
  int ni; /* MLP inputs: 4, + 1 with the contact profile, + 2 with gnorm */
  int ip; /* input index of p with gnorm, else -1 */
  int nj; /* Jacobian JVPs: 4, or 5 with gnorm (p's) */
  PairRow *rows;
  float *z, *out, *dout, *tz, *tout;
};

typedef struct {
  double *sx, *sg, *divx, *divg; /* eval */
  const double *dsx, *dsg;       /* backward: score cotangents */
  const double *ddx, *ddg;       /* backward: divergence cotangents, or NULL */
} PairCtx;

PetscErrorCode sgm_pair_head_create(const SgmPairHeadConfig *c, uint64_t seed, SgmPairHead *out)
{
  SgmPairHead ph;
  PetscFunctionBeginUser;
  PetscCheck(c->cutoff > 0.0 && isfinite(c->cutoff), PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "pair head: cutoff %g must be positive", c->cutoff);
  PetscCheck(c->dim >= 1 && c->dim <= 3 && c->hidden >= 1 && c->depth >= 1, PETSC_COMM_SELF,
             PETSC_ERR_ARG_OUTOFRANGE, "pair head: dim, hidden, depth out of range");
  PetscCall(PetscNew(&ph));
  ph->c = *c;
  PetscCheck(!(c->contact_beta > 0.0) || isfinite(c->contact_beta * c->contact_r), PETSC_COMM_SELF,
             PETSC_ERR_ARG_OUTOFRANGE, "pair head: contact profile beta %g, r %g", c->contact_beta,
             c->contact_r);
  ph->no = c->learn_x ? 6 : 3;
  ph->ni = c->contact_beta > 0.0 ? 5 : 4;
  ph->ip = c->gnorm ? ph->ni : -1;
  if (c->gnorm) ph->ni += 2;
  ph->nj = c->gnorm ? 5 : 4;
  SgmNnMlpConfig mc = {0};
  mc.in_dim = ph->ni, mc.out_dim = ph->no, mc.hidden = c->hidden, mc.depth = c->depth,
  mc.act = c->act;
  PetscCall(sgm_nn_mlp_create(&mc, SGM_PAIR_ROWS, ph->nj, seed, &ph->mlp));
  const size_t R = SGM_PAIR_ROWS;
  PetscCall(PetscMalloc1(R, &ph->rows));
  PetscCall(PetscMalloc5(R * ph->ni, &ph->z, R * ph->no, &ph->out, R * ph->no, &ph->dout,
                         ph->nj * R * ph->ni, &ph->tz, ph->nj * R * ph->no, &ph->tout));
  *out = ph;
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_pair_head_destroy(SgmPairHead *p)
{
  PetscFunctionBeginUser;
  if (!p || !*p) PetscFunctionReturn(PETSC_SUCCESS);
  SgmPairHead ph = *p;
  PetscCall(sgm_nn_mlp_destroy(&ph->mlp));
  PetscCall(PetscFree(ph->rows));
  PetscCall(PetscFree5(ph->z, ph->out, ph->dout, ph->tz, ph->tout));
  PetscCall(PetscFree(ph));
  *p = NULL;
  PetscFunctionReturn(PETSC_SUCCESS);
}

SgmParams *sgm_pair_head_params(SgmPairHead ph)
{
  return sgm_nn_mlp_params(ph->mlp);
}

static inline double dot(const double *a, const double *b, int D)
{
  double s = 0.0;
  for (int k = 0; k < D; k++) s += a[k] * b[k];
  return s;
}

/* The row geometry: a = g_i.u, b = g_j.u, c = g_i.g_j, p = |g_i|^2, q = |g_j|^2. */
typedef struct {
  const double *gi, *gj;
  double a, b, c, p, q;
} RowGeom;

static RowGeom row_geom(const SgmPairHead ph, const PairRow *w, const double *g)
{
  const int n = ph->c.n, D = ph->c.dim;
  RowGeom s;
  s.gi = g + ((size_t)w->b * n + w->i) * D;
  s.gj = g + ((size_t)w->b * n + w->j) * D;
  s.a = dot(s.gi, w->u, D), s.b = dot(s.gj, w->u, D), s.c = dot(s.gi, s.gj, D);
  s.p = dot(s.gi, s.gi, D), s.q = dot(s.gj, s.gj, D);
  return s;
}

/* The contact profile e(r) = sigma(beta_c (r_0 - r)) and its derivative de/dr. */
static inline double contact_profile(const SgmPairHeadConfig *c, double r, double *dedr)
{
  const double e = 1.0 / (1.0 + exp(-c->contact_beta * (c->contact_r - r)));
  *dedr = -c->contact_beta * e * (1.0 - e);
  return e;
}

/* The MLP's forward pass on nr rows and, with jac, its JVPs along the tangents of its four
 * geometric inputs and, with gnorm, of p (the Jacobian J_km into ph->tout; the rho tangent
 * carries r_c de/dr on the contact profile's input). */
static PetscErrorCode chunk_forward(SgmPairHead ph, int nr, int jac)
{
  const int ni = ph->ni, nj = ph->nj;
  PetscFunctionBeginUser;
  PetscCall(sgm_nn_mlp_forward(ph->mlp, ph->out, ph->z, NULL, NULL, nr));
  if (!jac) PetscFunctionReturn(PETSC_SUCCESS);
  memset(ph->tz, 0, (size_t)nj * nr * ni * sizeof(float));
  for (int m = 0; m < nj; m++)
    for (int w = 0; w < nr; w++) ph->tz[((size_t)m * nr + w) * ni + (m < 4 ? m : ph->ip)] = 1.0f;
  if (ph->c.contact_beta > 0.0)
    for (int w = 0; w < nr; w++)
      ph->tz[(size_t)w * ni + 4] = (float)(ph->c.cutoff * ph->rows[w].dedr);
  PetscCall(sgm_nn_mlp_jvp(ph->mlp, ph->tout, ph->tz, NULL, NULL, nj));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Eval of one chunk of nr rows: forward (and the Jacobian JVPs when divergences are wanted). */
static PetscErrorCode chunk_eval(SgmPairHead ph, int nr, const double *g, PairCtx *cx)
{
  const int n = ph->c.n, D = ph->c.dim, no = ph->no, go = ph->c.learn_x ? 3 : 0;
  const double rc = ph->c.cutoff;
  PetscFunctionBeginUser;
  PetscCall(chunk_forward(ph, nr, cx->divx != NULL));
  for (int w = 0; w < nr; w++) {
    const PairRow *pr = &ph->rows[w];
    const RowGeom s = row_geom(ph, pr, g);
    const float *o = ph->out + (size_t)w * no;
    const size_t k = (size_t)pr->b * n + pr->i;
    const double phi = pr->phi, *u = pr->u;
    if (ph->c.learn_x)
      for (int e = 0; e < D; e++)
        cx->sx[k * D + e] += phi * (o[0] * u[e] + o[1] * s.gi[e] + o[2] * s.gj[e]);
    for (int e = 0; e < D; e++)
      cx->sg[k * D + e] += phi * (o[go] * u[e] + o[go + 1] * s.gi[e] + o[go + 2] * s.gj[e]);
    if (!cx->divx) continue;
#define J(q, m) ((double)ph->tout[((size_t)(m)*nr + w) * no + (q)])
    const double r = pr->r, dphi = pr->dphi;
    if (ph->c.learn_x) {
      double dx = dphi * o[0] + phi * (J(0, 0) / rc + o[0] * (D - 1) / r);
      dx += dphi * o[1] * s.a + phi * (J(1, 0) * s.a / rc + J(1, 1) * (s.p - s.a * s.a) / r +
                                       J(1, 2) * (s.c - s.a * s.b) / r);
      dx += dphi * o[2] * s.b + phi * (J(2, 0) * s.b / rc + J(2, 1) * (s.c - s.a * s.b) / r +
                                       J(2, 2) * (s.q - s.b * s.b) / r);
      cx->divx[k] += dx;
    }
    cx->divg[k] += phi * (J(go, 1) + J(go, 3) * s.b + J(go + 1, 1) * s.a + J(go + 1, 3) * s.c +
                          D * o[go + 1] + J(go + 2, 1) * s.b + J(go + 2, 3) * s.q);
    if (ph->nj == 5)
      cx->divg[k] += 2.0 * phi * (J(go, 4) * s.a + J(go + 1, 4) * s.p + J(go + 2, 4) * s.c);
#undef J
  }
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* Backward of one chunk: forward again, the cotangents of the MLP outputs, backward. With
 * divergence cotangents the divergences' dependence on the outputs o_k (phi', (d - 1) / r, d) adds
 * to the primal cotangents and their dependence on the Jacobian J_km gives the tangent
 * cotangents of the four one-hot JVPs (the formulas of the file comment), backward through the
 * JVP (reverse over forward). */
static PetscErrorCode chunk_backward(SgmPairHead ph, int nr, const double *g, PairCtx *cx)
{
  const int n = ph->c.n, D = ph->c.dim, no = ph->no, go = ph->c.learn_x ? 3 : 0;
  const double rc = ph->c.cutoff;
  PetscFunctionBeginUser;
  PetscCall(chunk_forward(ph, nr, cx->ddg != NULL));
  if (cx->ddg) {
    memset(ph->tout, 0, (size_t)ph->nj * nr * no * sizeof(float)); /* reused: tangent cotangents */
  }
  for (int w = 0; w < nr; w++) {
    const PairRow *pr = &ph->rows[w];
    const RowGeom s = row_geom(ph, pr, g);
    const size_t k = ((size_t)pr->b * n + pr->i) * D;
    float *d = ph->dout + (size_t)w * no;
    if (ph->c.learn_x) {
      const double *c = cx->dsx + k;
      d[0] = (float)(pr->phi * dot(c, pr->u, D));
      d[1] = (float)(pr->phi * dot(c, s.gi, D));
      d[2] = (float)(pr->phi * dot(c, s.gj, D));
    }
    const double *c = cx->dsg + k;
    d[go] = (float)(pr->phi * dot(c, pr->u, D));
    d[go + 1] = (float)(pr->phi * dot(c, s.gi, D));
    d[go + 2] = (float)(pr->phi * dot(c, s.gj, D));
    if (!cx->ddg) continue;
    const size_t kp = (size_t)pr->b * n + pr->i;
    const double phi = pr->phi, dphi = pr->dphi, r = pr->r;
#define T(q, m) ph->tout[((size_t)(m)*nr + w) * no + (q)]
    if (ph->c.learn_x) {
      const double cq = cx->ddx[kp], pp = cq * phi;
      d[0] += (float)(cq * (dphi + phi * (D - 1) / r));
      d[1] += (float)(cq * dphi * s.a);
      d[2] += (float)(cq * dphi * s.b);
      T(0, 0) = (float)(pp / rc);
      T(1, 0) = (float)(pp * s.a / rc), T(1, 1) = (float)(pp * (s.p - s.a * s.a) / r);
      T(1, 2) = (float)(pp * (s.c - s.a * s.b) / r);
      T(2, 0) = (float)(pp * s.b / rc), T(2, 1) = (float)(pp * (s.c - s.a * s.b) / r);
      T(2, 2) = (float)(pp * (s.q - s.b * s.b) / r);
    }
    const double pg = cx->ddg[kp] * phi;
    d[go + 1] += (float)(pg * D);
    T(go, 1) = (float)pg, T(go, 3) = (float)(pg * s.b);
    T(go + 1, 1) = (float)(pg * s.a), T(go + 1, 3) = (float)(pg * s.c);
    T(go + 2, 1) = (float)(pg * s.b), T(go + 2, 3) = (float)(pg * s.q);
    if (ph->nj == 5) {
      T(go, 4) = (float)(2.0 * pg * s.a), T(go + 1, 4) = (float)(2.0 * pg * s.p);
      T(go + 2, 4) = (float)(2.0 * pg * s.c);
    }
#undef T
  }
  if (cx->ddg)
    PetscCall(sgm_nn_mlp_jvp_backward(ph->mlp, ph->dout, ph->tout));
  else
    PetscCall(sgm_nn_mlp_backward(ph->mlp, NULL, ph->dout));
  PetscFunctionReturn(PETSC_SUCCESS);
}

/* The MLP input of a row (and the row's de/dr for the Jacobian tangents). */
static void row_input(const SgmPairHead ph, int w, const double *g)
{
  PairRow *pr = &ph->rows[w];
  const RowGeom s = row_geom(ph, pr, g);
  float *z = ph->z + (size_t)w * ph->ni;
  z[0] = (float)(pr->r / ph->c.cutoff), z[1] = (float)s.a, z[2] = (float)s.b, z[3] = (float)s.c;
  pr->dedr = 0.0;
  if (ph->c.contact_beta > 0.0) z[4] = (float)contact_profile(&ph->c, pr->r, &pr->dedr);
  if (ph->ip >= 0) z[ph->ip] = (float)s.p, z[ph->ip + 1] = (float)s.q;
}

/* Runs fn on every chunk of rows of the B configurations. */
static PetscErrorCode for_chunks(SgmPairHead ph, int B, const double *x, const double *g,
                                 PetscErrorCode (*fn)(SgmPairHead, int, const double *, PairCtx *),
                                 PairCtx *cx)
{
  const int n = ph->c.n, D = ph->c.dim;
  const double rc = ph->c.cutoff, L = ph->c.box;
  int nr = 0;
  PetscFunctionBeginUser;
  for (int b = 0; b < B; b++)
    for (int i = 0; i < n; i++)
      for (int j = i + 1; j < n; j++) {
        const double *xi = x + ((size_t)b * n + i) * D, *xj = x + ((size_t)b * n + j) * D;
        double d[3], r2 = 0.0;
        for (int e = 0; e < D; e++) {
          d[e] = L > 0.0 ? sgm_min_image(xi[e] - xj[e], L) : xi[e] - xj[e];
          r2 += d[e] * d[e];
        }
        if (!(r2 < rc * rc) || r2 == 0.0) continue;
        if (nr + 2 > SGM_PAIR_ROWS) {
          PetscCall(fn(ph, nr, g, cx));
          nr = 0;
        }
        const double r = sqrt(r2), t = M_PI * r / rc;
        for (int s = 0; s < 2; s++) {
          PairRow *w = &ph->rows[nr];
          w->b = b, w->i = s ? j : i, w->j = s ? i : j, w->r = r;
          for (int e = 0; e < D; e++) w->u[e] = (s ? -d[e] : d[e]) / r;
          w->phi = 0.5 * (1.0 + cos(t));
          w->dphi = -0.5 * M_PI / rc * sin(t);
          row_input(ph, nr, g);
          nr++;
        }
      }
  if (nr > 0) PetscCall(fn(ph, nr, g, cx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_pair_head_eval(SgmPairHead ph, int B, const double *x, const double *g,
                                  double *sx, double *sg, double *divx, double *divg)
{
  const size_t nb = (size_t)B * ph->c.n, nd = nb * ph->c.dim;
  PairCtx cx = {sx, sg, divx, divg, NULL, NULL, NULL, NULL};
  PetscFunctionBeginUser;
  if (ph->c.learn_x)
    for (size_t k = 0; k < nd; k++) sx[k] = 0.0;
  for (size_t k = 0; k < nd; k++) sg[k] = 0.0;
  if (divx)
    for (size_t k = 0; k < nb; k++) divx[k] = divg[k] = 0.0;
  PetscCall(for_chunks(ph, B, x, g, chunk_eval, &cx));
  PetscFunctionReturn(PETSC_SUCCESS);
}

PetscErrorCode sgm_pair_head_backward(SgmPairHead ph, int B, const double *x, const double *g,
                                      const double *dsx, const double *dsg, const double *ddx,
                                      const double *ddg)
{
  PairCtx cx = {NULL, NULL, NULL, NULL, dsx, dsg, ddx, ddg};
  PetscFunctionBeginUser;
  PetscCheck(!ph->c.learn_x || (dsx && (!ddg || ddx)), PETSC_COMM_SELF, PETSC_ERR_ARG_NULL,
             "pair head: learned s_x needs its cotangents");
  PetscCall(for_chunks(ph, B, x, g, chunk_backward, &cx));
  PetscFunctionReturn(PETSC_SUCCESS);
}
