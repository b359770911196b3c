#!/usr/bin/env python3
"""How much the (noised) configuration tells about the self-propulsion g, by class (paper 002 §7,
App. F.8; docs/validation.md "MIPS: entropy production at the interface").

    /usr/bin/python3 postprocess/mips_g_information.py TRAJECTORY.h5 [--sigmas 0,0.01,0.03,0.05]
        [--frames 5] [--draws 2] [--thresholds 0.3,0.6 0.2,0.7] [--radius 5]

With eps = 0 the velocity is v_g = -gamma (g + s_g) (eq. 99), and g + s_g = grad_g log rho(x | g):
its mean square is the Fisher information that the positions carry about g. The denoising loss of
App. F.8 learns the score of the sigma-smoothed density, x -> x + sigma xi, so the learned |v_g|^2
measures what the *noised* positions tell about g. In a jammed cluster ẋ ≈ 0 and force balance
mu F_i + v0 g_i ≈ 0 ties g_i to the contact forces; noise sigma on every position changes each
harmonic contact force by ~k sigma, i.e. g by ~k sigma / v0.

This script measures that tie from a trajectory, without a network: for each noise level sigma it
perturbs all positions by sigma xi, recomputes the harmonic forces (V = k/2 (2a - r)^2 for r < 2a,
minimum image; parameters from the file's /parameters attributes), and per class (dilute /
interface / dense by the clean phi_i = n_i (a/r)^2 with n_i the others within r, as the epr stage)
fits the per-component correlation R between g and y = -mu F^sigma / v0. For (g, y) jointly
Gaussian with g ~ N(0, 1), the Fisher information of y about g gives

    E|g + s_g|^2 >= 2 R^2 / (1 - R^2)      (per particle, d = 2; data processing: y is a
                                            function of the noised positions)

so the printed "FB bound" is a lower estimate of the class's mean |g + s_g|^2 = |v_g|^2 / gamma^2
for the sigma-smoothed density (the network can use more than the own force), and the ratios
between classes show how sigma shifts the contrast interface / dense.

The window of the local transformer also holds the neighbours' g, which the noise on x does not
blur (gamma = 1e-4: g of particles that arrived at a young cluster together stays correlated).
The second table does the same with the mean g of the --knn nearest neighbours as the predictor,
and with both predictors (least squares on [y, mean neighbour g], per component): R^2 of the
joint linear predictor gives the same 2 R^2 / (1 - R^2) estimate.
"""
import argparse

import h5py
import numpy as np
from periodic_neighbours import count_within, knn, pairs_within
import sgm_cli


def forces(x, L, a, k):
    pairs, _ = pairs_within(x, L, 2 * a)
    d = x[pairs[:, 0]] - x[pairs[:, 1]]
    d -= L * np.rint(d / L)
    r = np.sqrt((d * d).sum(1))
    f = (k * (2 * a - r) / np.maximum(r, 1e-12))[:, None] * d  # force on the first of the pair
    F = np.zeros_like(x)
    np.add.at(F, pairs[:, 0], f)
    np.add.at(F, pairs[:, 1], -f)
    return F


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("trajectory")
    ap.add_argument("--sigmas", default="0,0.01,0.02,0.03,0.05,0.1")
    ap.add_argument("--frames", type=int, default=5, help="frames, evenly spaced over the file")
    ap.add_argument("--draws", type=int, default=2, help="noise draws per frame and sigma")
    ap.add_argument("--thresholds", nargs="*", default=["0.3,0.6", "0.2,0.7"])
    ap.add_argument("--radius", type=float, default=5.0, help="phi_i radius in units of a")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--knn", type=int, default=16, help="neighbours of the mean-g predictor")
    o = ap.parse_args()

    with h5py.File(o.trajectory, "r") as f:
        p = dict(f["parameters"].attrs)
        pos = f["particles/all/position/value"]
        ori = f["particles/all/orientation/value"]
        T = pos.shape[0]
        fr = np.unique(np.linspace(0, T - 1, min(o.frames, T)).astype(int))
        X = np.array([pos[i] for i in fr])
        G = np.array([ori[i] for i in fr])
    L, a, k, mu, v0 = (float(p[s]) for s in ("L", "a", "k", "mu", "v0"))
    if str(p.get("potential", "harmonic")) not in ("harmonic", "b'harmonic'"):
        print("warning: the forces here are the harmonic ones")
    rng = np.random.default_rng(o.seed)
    sig = [float(s) for s in o.sigmas.split(",")]
    print(f"{o.trajectory}: frames {list(fr)}, N = {X.shape[1]}, L = {L:.4g}, k = {k}, v0 = {v0}")

    phi, mg = [], []
    for x, g in zip(X, G):
        n = count_within(x, L, o.radius * a)
        phi.append(n / o.radius**2)
        nb, _ = knn(x, L, o.knn)
        mg.append(g[nb].mean(1))
    phi, mg = np.array(phi), np.array(mg)

    ys = {s: [] for s in sig}
    for s in sig:
        for t, x in enumerate(X):
            for _ in range(o.draws if s > 0 else 1):
                xs = x + s * rng.standard_normal(x.shape)
                ys[s].append((t, -mu * forces(xs, L, a, k) / v0))
    for th in o.thresholds:
        lo, hi = (float(v) for v in th.split(","))
        cls = np.where(phi < lo, 0, np.where(phi < hi, 1, 2))
        print(f"\nclasses phi_i < {lo} / interface / >= {hi}: per frame "
              + " / ".join(f"{(cls == c).sum() / len(fr):.0f}" for c in range(3)))
        print(f"  {'sigma':>6s}  {'R dil':>6s} {'R int':>6s} {'R den':>6s}   FB bound E|g+s_g|^2 "
              f"dilute / interface / dense   ratio int/den  int/dil")
        for s in sig:
            R, B = [], []
            for c in range(3):
                gg, yy = [], []
                for t, y in ys[s]:
                    sel = cls[t] == c
                    gg.append(G[t][sel].ravel())
                    yy.append(y[sel].ravel())
                gg, yy = np.concatenate(gg), np.concatenate(yy)
                r = np.corrcoef(gg, yy)[0, 1] if gg.size > 2 and yy.std() > 0 else 0.0
                R.append(r)
                B.append(2 * r * r / (1 - r * r))
            print(f"  {s:6.3g}  {R[0]:6.3f} {R[1]:6.3f} {R[2]:6.3f}   {B[0]:9.3g} / {B[1]:9.3g} / "
                  f"{B[2]:9.3g}      {B[1] / B[2]:6.3g}   {B[1] / B[0]:6.3g}")
        print(f"  predictor: mean g of the {o.knn} nearest neighbours (noise-free), and joint with "
              "the noised own force")
        for s in [None] + [v for v in sig if v > 0]:
            B = []
            for c in range(3):
                gg, cols = [], []
                for t, y in (ys[s] if s is not None else [(t, None) for t in range(len(fr))]):
                    sel = cls[t] == c
                    gg.append(G[t][sel].ravel())
                    cc = [mg[t][sel].ravel()]
                    if y is not None:
                        cc.append(y[sel].ravel())
                    cols.append(np.stack(cc, 1))
                gg, A = np.concatenate(gg), np.concatenate(cols)
                A = np.column_stack([A, np.ones(len(A))])
                coef, *_ = np.linalg.lstsq(A, gg, rcond=None)
                r2 = 1 - ((gg - A @ coef) ** 2).mean() / gg.var()
                B.append(2 * r2 / (1 - r2))
            lab = "nb g alone" if s is None else f"nb g + force, sigma {s:g}"
            print(f"  {lab:28s} estimate E|g+s_g|^2 {B[0]:8.3g} / {B[1]:8.3g} / {B[2]:8.3g}"
                  f"   ratio int/den {B[1] / B[2]:6.3g}  int/dil {B[1] / B[0]:6.3g}")


if __name__ == "__main__":
    sgm_cli.run(main)
