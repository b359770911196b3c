#!/usr/bin/python3
"""Two active particles on a ring (paper 002, App. F.2): phase-space maps and Fig. 15 statistics.

Reads epr.h5 of an `epr` run on a N = 2, d = 1 periodic system (input/ring_mlp.toml) and

  * maps, over the relative coordinates x = x2 - x1 (minimum image, in [-L/2, L/2)) and
    g = g2 - g1 (the variables of Figs. 2-3), the sample density, the bin means of the system
    EPR div v = sum_i (div_{x_i} v_x^i + div_{g_i} v_g^i) (Fig. 3), of |v| = (sum_i |v_x^i|^2 +
    |v_g^i|^2)^(1/2) (the flow speed; Fig. 2C shows the diffusion-weighted current |j| = rho |.|)
    and of div_x v_x, div_g v_g (Fig. 13D); written to ring_maps.png;
  * prints and writes ring_stats.json with the four convergence statistics of Fig. 15 per sample
    (whole configuration, sums over both particles): the FPE residual div v + v.s (eq. 23),
    v.s, |s_x|^2 + div_x s_x and |s_g|^2 + div_g s_g (mean, std, mean/std, batch-means standard
    error), plus div v itself and its x and g parts.

div_x s_x and div_g s_g are recovered from the stored system EPR parts: in d = 1,
div_g v_g = -gamma - gamma div_g s_g and div_x v_x = mu dF/dx - eps div_x s_x with the softplus
pair force F (eq. 95), dF_1/dx_1 = -k sigmoid(beta (2a - |x1 - x2|)) inside the cutoff.

Usage: /usr/bin/python3 postprocess/plot_ring.py RUN_DIR [--bins 60] [--batches 10]
"""
import argparse
import json
import os
import tomllib

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sgm_cli  # noqa: E402


def stats(y, nb):
    y = np.asarray(y, dtype=float)
    m, sd = float(y.mean()), float(y.std(ddof=1))
    nb = min(nb, len(y))
    bl = len(y) // nb
    bm = y[: bl * nb].reshape(nb, bl).mean(axis=1)
    se = float(bm.std(ddof=1) / np.sqrt(nb))
    return {"mean": m, "std": sd, "mean_over_std": m / sd if sd > 0 else float("nan"), "se": se}


def binned_mean(x, g, val, xe, ge):
    cnt, _, _ = np.histogram2d(x, g, bins=[xe, ge])
    s, _, _ = np.histogram2d(x, g, bins=[xe, ge], weights=val)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / cnt
    m[cnt < 5] = np.nan
    return cnt, m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", help="output directory of the epr run (holds epr.h5)")
    ap.add_argument("--bins", type=int, default=60)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--out", default=None, help="output directory (default: RUN)")
    a = ap.parse_args()
    out = a.out or a.run
    with h5py.File(os.path.join(a.run, "epr.h5"), "r") as f:
        cfg = tomllib.loads(f.attrs["input"].decode() if isinstance(f.attrs["input"], bytes)
                            else str(f.attrs["input"]))
        pos = f["position"][...][:, :, 0]
        ori = f["orientation"][...][:, :, 0]
        sx = f["score_x"][...][:, :, 0]
        sg = f["score_g"][...][:, :, 0]
        vx = f["velocity_x"][...][:, :, 0]
        vg = f["velocity_g"][...][:, :, 0]
        sysx = f["epr_system_x"][...]
        sysg = f["epr_system_g"][...]
        fpe = f["fpe_residual"][...]
        vs = f["v_dot_s"][...]
    sy = cfg["system"]
    if pos.shape[1] != 2 or int(sy.get("dim", 0)) != 1:
        raise SystemExit("plot_ring.py: expects N = 2 particles in d = 1")
    L, eps, gam = float(sy["L"]), float(sy["eps"]), float(sy["gamma"])
    mu, k, aa, beta = float(sy["mu"]), float(sy["k"]), float(sy["a"]), float(sy["beta"])
    cut = float(sy.get("softplus_cut", 16.0))
    if sy.get("potential") != "softplus":
        raise SystemExit("plot_ring.py: the divergence split assumes the softplus potential")

    x = pos[:, 1] - pos[:, 0]
    x = x - L * np.round(x / L)  # minimum image
    g = ori[:, 1] - ori[:, 0]
    r = np.abs(x)
    dfdx = np.where(r < 2 * aa + cut / beta, -k / (1.0 + np.exp(-beta * (2 * aa - r))), 0.0)
    divbx = mu * dfdx  # the same for both particles
    div_sx = (divbx[:, None] - sysx) / eps  # per particle
    div_sg = -(sysg + gam) / gam
    q = {
        "div_v": (sysx + sysg).sum(axis=1),
        "div_x_v_x": sysx.sum(axis=1),
        "div_g_v_g": sysg.sum(axis=1),
        "fpe_residual": fpe.sum(axis=1),
        "v_dot_s": vs.sum(axis=1),
        "score_ibp_x": (sx**2 + div_sx).sum(axis=1),
        "score_ibp_g": (sg**2 + div_sg).sum(axis=1),
    }
    res = {k_: stats(v, a.batches) for k_, v in q.items()}
    res["frames"] = int(len(x))
    vnorm = np.sqrt((vx**2 + vg**2).sum(axis=1))
    res["mean_abs_v"] = float(vnorm.mean())
    with open(os.path.join(out, "ring_stats.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    print(f"{len(x)} frames; per configuration (sums over both particles):")
    for k_, s in res.items():
        if isinstance(s, dict):
            print(f"  {k_:14s} mean {s['mean']:+.4g}  std {s['std']:.4g}  mean/std "
                  f"{s['mean_over_std']:+.3g}  se {s['se']:.2g}")

    xe = np.linspace(-L / 2, L / 2, a.bins + 1)
    gmax = np.quantile(np.abs(g), 0.995)
    ge = np.linspace(-gmax, gmax, a.bins + 1)
    cnt, m_div = binned_mean(x, g, q["div_v"], xe, ge)
    _, m_v = binned_mean(x, g, vnorm, xe, ge)
    _, m_dx = binned_mean(x, g, q["div_x_v_x"], xe, ge)
    _, m_dg = binned_mean(x, g, q["div_g_v_g"], xe, ge)
    rho = cnt / cnt.sum() / ((xe[1] - xe[0]) * (ge[1] - ge[0]))
    panels = [
        ("density rho(x, g) (Fig. 2B)", rho, "viridis", False),
        ("|v| bin mean (Fig. 2)", m_v, "magma", False),
        (r"$\nabla\cdot v$ bin mean (Fig. 3)", m_div, "RdBu_r", True),
        (r"$\nabla_x\cdot v_x$ (Fig. 13D)", m_dx, "RdBu_r", True),
        (r"$\nabla_g\cdot v_g$ (Fig. 13D)", m_dg, "RdBu_r", True),
        (r"$\rho\,|v|$ (current norm, Fig. 2C)", rho * np.nan_to_num(m_v), "magma", False),
    ]
    fig, axs = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (title, z, cmap, sym) in zip(axs.flat, panels):
        kw = {}
        if sym:
            lim = np.nanquantile(np.abs(z), 0.98)
            kw = {"vmin": -lim, "vmax": lim}
        im = ax.pcolormesh(xe, ge, z.T, cmap=cmap, shading="flat", **kw)
        ax.set_title(title)
        ax.set_xlabel(r"$x = x_2 - x_1$")
        ax.set_ylabel(r"$g = g_2 - g_1$")
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"two particles on a ring, L = {L:g}, {len(x)} frames "
                 f"(E[div v] = {res['div_v']['mean']:+.3g} +- {res['div_v']['se']:.2g})")
    png = os.path.join(out, "ring_maps.png")
    fig.savefig(png, dpi=110)
    print(f"wrote {png} and {os.path.join(out, 'ring_stats.json')}")


if __name__ == "__main__":
    sgm_cli.run(main)
