#!/usr/bin/python3
"""Swimmers in a trap: per-particle divergences from score matching in a LINEAR feature class.

An independent, network-free estimate of the per-particle system EPR parts div_x v_x^i and
div_g v_g^i (paper 002, §6.3) from a trajectory alone. The per-particle scores are restricted to

    s_g^i = A g_i + B muF_i + C x_i + c,          s_x^i = P muF_i + Q g_i + R x_i + e,

(the same coefficients for every component; muF_i the pair forces of the potential in run.toml,
the trap -mu A x_i being in the x_i term; without pair forces (k = 0) the muF_i terms are
dropped), and the coefficients minimise the score-matching
loss (eq. 22) E|s|^2 + 2 E[div s]. For a linear class that is a linear least-squares problem
with closed form M w = -h (M the Gram matrix of the features, h the mean divergence of each
feature), with no noise targets and no network. The x coefficients are fitted over all
particle-frames (score matching in x integrates by parts over all of x-space); the g
coefficients also per quintile of the radius |x_i| (trap at the origin): a bin in x is no
boundary for the integration by parts in g, so each bin's g fit is the best such g score there.
(A bin in x would add boundary terms to the x fit: fitted per bin, the x coefficients are wrong
even for free swimmers.) Then, per bin,

    div_g v_g = -gamma d - gamma d A,
    div_x v_x = div muF_i - mu A d - eps (P div muF_i + R d)
                                           (b_x = muF - mu A x + v0 g, D = diag(eps, gamma)).

muF_i carries the contacts (a swimmer's displacement against its neighbours); without it the g
fit is A = -1 / E[g_a^2] in the bin (printed as a control). For non-interacting swimmers in a
harmonic trap the class contains the exact (Gaussian) score. What a linear class cannot capture
stays out of the estimate (docs/validation.md, "64 swimmers: the particle transformer with the
transition loss").

With --pair-basis M (M > 0) a second, richer class is fitted over all particle-frames: the above
plus, for M Gaussian radial basis functions h_m(r) (centres from 0.8 a to 4 a, width 0.2 a), the
pair features of each particle's neighbours j (u_ij the unit vector from j to i)
    s_x: sum_j h_m u_ij,  sum_j h_m (g_i . u_ij) u_ij,  sum_j h_m (g_j . u_ij) u_ij
    s_g: h_m-weighted contact count times g_i,  sum_j h_m (g_i . u_ij) u_ij,  sum_j h_m u_ij,
         sum_j h_m (g_j . u_ij) u_ij
(their exact x or g divergences enter the closed form), and it prints the per-particle
divergences' radial profiles, by number of contacts (neighbours closer than 2.3 a), E[div v], and
the per-particle and 16 x 16 map correlations of div_x v_x with -div_g v_g (as
postprocess/swimmers_spearman.py does for a network).

Usage: /usr/bin/python3 postprocess/swimmers_linear_sm.py TRAJECTORY.h5 RUN.toml [--frames K]
       [--pair-basis M]
(RUN.toml: the input or run.toml of the run that wrote the trajectory; K: use every K-th frame.)
"""
import argparse
import sys
import tomllib

import h5py
import numpy as np
import sgm_cli


def geometry(x):
    """Pair geometry of frames x (T, N, d) in open space: distances r (T, N, N) with 1e300 on the
    diagonal, the same with 1 there (rs, for divisions), unit vectors u from j to i
    (T, N, N, d), and the diagonal mask (1, N, N)."""
    d = x[:, :, None, :] - x[:, None, :, :]  # x_i - x_j
    eye = np.eye(x.shape[1], dtype=bool)[None]
    r = np.where(eye, 1e300, np.sqrt((d**2).sum(-1)))
    rs = np.where(eye, 1.0, r)
    return r, rs, d / rs[..., None], eye


def drift(x, a, k, beta, mu, pot):
    """Pair forces mu F_i (T, N, d) and the diagonal d(mu F_i,c)/dx_i,c (T, N, d) of frames x."""
    r, rs, u, eye = geometry(x)
    if k == 0.0:
        return np.zeros_like(x), np.zeros_like(x)
    if pot == "softplus":
        y = beta * (2 * a - r)
        f = k * np.where(y > 0, y + np.log1p(np.exp(-np.abs(y))), np.log1p(np.exp(np.minimum(y, 50)))) / beta
        fp = -k / (1 + np.exp(-np.clip(y, -700, 700)))
    elif pot == "harmonic":
        f = np.where(r < 2 * a, k * (2 * a - r), 0.0)
        fp = np.where(r < 2 * a, -k, 0.0)
    else:
        raise SystemExit(f"potential {pot!r}: only softplus and harmonic are implemented here")
    f = np.where(eye, 0.0, f)
    fp = np.where(eye, 0.0, fp)
    F = mu * (f[..., None] * u).sum(2)
    # d/dx_i,c of f(r) u_c = f'(r) u_c^2 + f(r)/r (1 - u_c^2)
    H = mu * (fp[..., None] * u**2 + (f / rs)[..., None] * (1 - u**2)).sum(2)
    return F, H


def pair_features(x, g, a, F, H, M):
    """The --pair-basis class of frames x, g (T, N, d): x features and their x divergences, g
    features and their g divergences, each (T * N * d, k), one row per particle component."""
    D = x.shape[2]
    r, rs, u, eye = geometry(x)
    gi = np.broadcast_to(g[:, :, None, :], u.shape)
    gj = np.broadcast_to(g[:, None, :, :], u.shape)
    one = np.ones(x.size)
    zero = np.zeros(x.size)
    xf, xd = [g.ravel(), x.ravel(), one], [zero, one, zero]
    gf, gd = [g.ravel(), x.ravel(), one], [one, zero, zero]
    if np.any(F):  # the pair forces (none without a potential)
        xf.append(F.ravel()), xd.append(H.ravel()), gf.append(F.ravel()), gd.append(zero)
    w = 0.2 * a
    for rm in np.linspace(0.8 * a, 4.0 * a, M):
        with np.errstate(over="ignore", under="ignore"):
            h = np.where(eye, 0.0, np.exp(-((r - rm) ** 2) / (2 * w * w)))
        hp = np.where(eye, 0.0, -(r - rm) / (w * w) * h)
        # sum_j h u: d/dx_i,c = h' u_c^2 + h/r (1 - u_c^2)
        xf.append(np.einsum("tij,tijc->tic", h, u).ravel())
        xd.append((hp[..., None] * u**2 + (h / rs)[..., None] * (1 - u**2)).sum(2).ravel())
        for vec in (gi, gj):  # sum_j h (vec . u) u, vec independent of x
            av = (vec * u).sum(-1)
            term = hp[..., None] * av[..., None] * u**2 + h[..., None] * (
                (vec - av[..., None] * u) * u / rs[..., None] + av[..., None] * (1 - u**2) / rs[..., None])
            xf.append(np.einsum("tij,tijc->tic", h * av, u).ravel())
            xd.append(term.sum(2).ravel())
        hs = h.sum(2)
        gf.append((g * hs[..., None]).ravel())
        gd.append(np.repeat(hs[..., None], D, -1).ravel())
        gf.append(np.einsum("tij,tijc->tic", h * (gi * u).sum(-1), u).ravel())
        gd.append(np.einsum("tij,tijc->tic", h, u**2).ravel())
        gf.append(np.einsum("tij,tijc->tic", h, u).ravel())
        gd.append(zero)
        gf.append(np.einsum("tij,tijc->tic", h * (gj * u).sum(-1), u).ravel())
        gd.append(zero)
    return np.stack(xf, 1), np.stack(xd, 1), np.stack(gf, 1), np.stack(gd, 1)


def pair_class(X, G, F, H, a, M, eps, gam, mu, A, chunk=256):
    """Fits the --pair-basis class (two passes over frame chunks) and returns the per-particle
    div_x v_x, div_g v_g and |v_g|^2 (T, N)."""
    T, N, D = X.shape
    Mx = Mg = hx = hg = None
    for t0 in range(0, T, chunk):
        sl = slice(t0, t0 + chunk)
        px, dx, pg, dg = pair_features(X[sl], G[sl], a, F[sl], H[sl], M)
        if Mx is None:
            Mx, Mg = np.zeros((px.shape[1],) * 2), np.zeros((pg.shape[1],) * 2)
            hx, hg = np.zeros(px.shape[1]), np.zeros(pg.shape[1])
        Mx += px.T @ px
        Mg += pg.T @ pg
        hx += dx.sum(0)
        hg += dg.sum(0)
    wx, wg = np.linalg.solve(Mx, -hx), np.linalg.solve(Mg, -hg)
    dxv, dgv, vg2 = np.empty((T, N)), np.empty((T, N)), np.empty((T, N))
    for t0 in range(0, T, chunk):
        sl = slice(t0, t0 + chunk)
        px, dx, pg, dg = pair_features(X[sl], G[sl], a, F[sl], H[sl], M)
        n = X[sl].shape[0]
        dsx = (dx @ wx).reshape(n, N, D).sum(-1)
        dsg = (dg @ wg).reshape(n, N, D).sum(-1)
        dxv[sl] = H[sl].sum(-1) - mu * A * D - eps * dsx
        dgv[sl] = -gam * D - gam * dsg
        vg2[sl] = ((gam * (G[sl] + (pg @ wg).reshape(n, N, D))) ** 2).sum(-1)
    return dxv, dgv, vg2


def map_means(pos, a, b, bins=16, min_count=50):
    """Means of a and b (per particle-frame, flattened like pos[..., 0]) in the cells of a bins x
    bins grid over the central square holding 95% of the particle-frames, for the cells with at
    least min_count particle-frames (the frame-averaged spatial maps of Fig. 17)."""
    h = float(np.quantile(np.abs(pos).max(axis=2), 0.95))
    edges = np.linspace(-h, h, bins + 1)
    ix = np.digitize(pos[..., 0].ravel(), edges) - 1
    iy = np.digitize(pos[..., 1].ravel(), edges) - 1
    ok = (ix >= 0) & (ix < bins) & (iy >= 0) & (iy < bins)
    cell = (ix * bins + iy)[ok]
    cnt = np.bincount(cell, minlength=bins * bins)
    use = cnt >= min_count
    ma = np.bincount(cell, weights=np.ravel(a)[ok], minlength=bins * bins)[use] / cnt[use]
    mb = np.bincount(cell, weights=np.ravel(b)[ok], minlength=bins * bins)[use] / cnt[use]
    return ma, mb


def fit(phi, dphi):
    """Score matching in the linear class s = sum_k w_k phi_k: M w = -h."""
    M = np.einsum("sk,sl->kl", phi, phi) / phi.shape[0]
    h = dphi.mean(0)
    return np.linalg.solve(M, -h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trajectory")
    ap.add_argument("toml")
    ap.add_argument("--frames", type=int, default=1, help="use every K-th frame")
    ap.add_argument("--pair-basis", type=int, default=0, help="radial basis functions of the pair class (0: none)")
    args = ap.parse_args()
    with open(args.toml, "rb") as fh:
        cfg = tomllib.load(fh)
    sy = cfg["system"]
    eps, gam, mu, v0 = float(sy["eps"]), float(sy["gamma"]), float(sy.get("mu", 1.0)), float(sy["v0"])
    a, k, beta = float(sy.get("a", 1.0)), float(sy.get("k", 0.0)), float(sy.get("beta", 1.0))
    A, pot = float(sy.get("trap_A", 0.0)), sy.get("potential", "harmonic")
    with h5py.File(args.trajectory, "r") as f:
        X = f["particles/all/position/value"][:: args.frames]
        G = f["particles/all/orientation/value"][:: args.frames]
    T, N, D = X.shape
    Fs, Hs = [], []
    for t0 in range(0, T, 256):
        F, H = drift(X[t0 : t0 + 256], a, k, beta, mu, pot)
        Fs.append(F), Hs.append(H)
    F, H = np.concatenate(Fs), np.concatenate(Hs)
    divF = H.sum(-1)
    r = np.sqrt((X**2).sum(-1))
    q = np.quantile(r, np.linspace(0, 1, 6))
    b = np.clip(np.searchsorted(q, r, side="right") - 1, 0, 4)
    print(f"{args.trajectory}: v0 = {v0:g}, {T} frames x {N} particles, eps {eps:g}, gamma {gam:g}")
    pair = k != 0.0
    print("  radius quintile (edges): A (g slope), control A with g and 1 only; div_x v_x, "
          "div_g v_g, sum")
    # x part, all particle-frames: [g_c, x_c, 1, muF_c], d/dx_c = [0, 1, 0, dF_c/dx_c]
    one = np.ones(G.size)
    phx = np.stack([G.ravel(), X.ravel(), one] + ([F.ravel()] if pair else []), 1)
    dphx = np.stack([0 * one, one, 0 * one] + ([H.ravel()] if pair else []), 1)
    wx = fit(phx, dphx)
    P = wx[3] if pair else 0.0
    print(f"  x fit (all particle-frames): Q {wx[0]:+.4f}, R {wx[1]:+.4f}, P eps {P * eps:+.4f}")
    tot = []
    for j in range(5):
        m = b == j
        g, Fm, Hm, x = G[m], F[m], H[m], X[m]  # (S, D)
        S = g.shape[0]
        one = np.ones(S * D)
        zero = 0 * one
        # g part: features per component [g_c, x_c, 1, muF_c], d/dg_c = [1, 0, 0, 0]
        phi = np.stack([g.ravel(), x.ravel(), one] + ([Fm.ravel()] if pair else []), 1)
        dphi = np.stack([one, zero, zero] + ([zero] if pair else []), 1)
        wg = fit(phi, dphi)
        w0 = fit(phi[:, [0, 2]], dphi[:, [0, 2]])
        dgv = -gam * D - gam * D * wg[0]
        dxv = divF[m].mean() - mu * A * D - eps * (P * divF[m].mean() + wx[1] * D)
        tot.append((dxv, dgv, m.sum()))
        print(f"  q{j} ({q[j]:.1f}-{q[j + 1]:.1f}): A {wg[0]:+.3f} (control {w0[0]:+.3f}), "
              f"C {wg[1]:+.4f}; P eps {P * eps:+.3f}, R {wx[1]:+.4f}; div_x v_x {dxv:+.3f}, "
              f"div_g v_g {dgv:+.3f}, sum {dxv + dgv:+.3f}")
    w = np.array([t[2] for t in tot], float)
    ex = sum(t[0] * t[2] for t in tot) / w.sum()
    eg = sum(t[1] * t[2] for t in tot) / w.sum()
    print(f"  all: div_x v_x {ex:+.3f}, div_g v_g {eg:+.3f}, E[div v] {ex + eg:+.3f}")
    if args.pair_basis > 0:
        dxv, dgv, vg2 = pair_class(X, G, F, H, a, args.pair_basis, eps, gam, mu, A)
        print(f"  pair class ({args.pair_basis} radial basis functions), by radius quintile:")
        print("    div_x v_x " + " ".join(f"{dxv[b == j].mean():+.3f}" for j in range(5))
              + "; div_g v_g " + " ".join(f"{dgv[b == j].mean():+.3f}" for j in range(5)))
        print("    |v_g|^2 " + " ".join(f"{vg2[b == j].mean():.4g}" for j in range(5)))
        nc = np.concatenate([(geometry(X[t0 : t0 + 256])[0] < 2.3 * a).sum(-1)
                             for t0 in range(0, T, 256)])
        cls = [nc == 0, nc == 1, nc == 2, nc >= 3]
        print("    by number of contacts (r < 2.3 a) 0 / 1 / 2 / 3+: share "
              + " ".join(f"{m.mean():.2f}" for m in cls) + "; div_x v_x "
              + " ".join(f"{dxv[m].mean():+.3f}" if m.any() else "nan" for m in cls) + "; div_g v_g "
              + " ".join(f"{dgv[m].mean():+.3f}" if m.any() else "nan" for m in cls))
        mx, mg = map_means(X, dxv, -dgv)
        print(f"    all: div_x v_x {dxv.mean():+.3f}, div_g v_g {dgv.mean():+.3f}, "
              f"E[div v] {(dxv + dgv).mean():+.3f}; div_x v_x vs -div_g v_g: per particle-frame "
              f"Pearson {np.corrcoef(dxv.ravel(), -dgv.ravel())[0, 1]:+.3f}, maps ({mx.size} "
              f"cells) {np.corrcoef(mx, mg)[0, 1]:+.3f}")


if __name__ == "__main__":
    sys.exit(sgm_cli.run(main))
