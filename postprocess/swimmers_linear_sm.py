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

Usage: /usr/bin/python3 postprocess/swimmers_linear_sm.py TRAJECTORY.h5 RUN.toml [--frames K]
(RUN.toml: the input or run.toml of the run that wrote the trajectory; K: use every K-th frame.)
"""
import argparse
import sys
import tomllib

import h5py
import numpy as np


def drift(x, a, k, beta, mu, pot):
    """Pair forces mu F_i (T, N, d) and the diagonal d(mu F_i,c)/dx_i,c (T, N, d) of frames x."""
    d = x[:, :, None, :] - x[:, None, :, :]  # x_i - x_j
    r = np.sqrt((d**2).sum(-1))
    n = x.shape[1]
    eye = np.eye(n, dtype=bool)[None]
    r = np.where(eye, 1e300, r)
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
    rs = np.where(eye, 1.0, r)
    u = d / rs[..., None]
    F = mu * (f[..., None] * u).sum(2)
    # d/dx_i,c of f(r) u_c = f'(r) u_c^2 + f(r)/r (1 - u_c^2)
    H = mu * (fp[..., None] * u**2 + (f / rs)[..., None] * (1 - u**2)).sum(2)
    return F, H


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


if __name__ == "__main__":
    sys.exit(main())
