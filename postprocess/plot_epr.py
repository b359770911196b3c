#!/usr/bin/env python3
"""Entropy-production figures of an sgm_hpc run (epr.h5, fields.h5, train_log.h5).

    plot_epr.py OUTDIR [--frame -1] [--quantity epr_total]

Writes into OUTDIR:
  epr_particles.png  one frame, particles coloured by a per-particle quantity (default: the total
                     EPR, |v_x|^2/eps + |v_g|^2/gamma, or |v_g|^2/gamma when eps = 0, as Fig. 8)
  epr_map.png        the spatial map of that quantity (fields.h5: cell means over all frames,
                     empty cells masked), as the maps of Boffi & Vanden-Eijnden §6.4
  loss.png           the training loss curve (train_log.h5), when the run trained a model
"""
import argparse
import os

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sgm_cli  # noqa: E402


def particles(outdir, frame, q):
    with h5py.File(os.path.join(outdir, "epr.h5"), "r") as f:
        pos = f["position"][frame]
        val = f[q][frame]
        t = f["time"][frame]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    vmax = np.percentile(val, 99) if np.any(val > 0) else None
    sc = ax.scatter(pos[:, 0], pos[:, 1] if pos.shape[1] > 1 else np.zeros(len(pos)), c=val, s=8,
                    cmap="magma", vmin=0 if q.startswith("epr_total") else None, vmax=vmax)
    ax.set_aspect("equal")
    ax.set_title(f"{q}, t = {t:g}")
    fig.colorbar(sc, ax=ax, shrink=0.8, label=q)
    out = os.path.join(outdir, "epr_particles.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def field_map(outdir, q):
    with h5py.File(os.path.join(outdir, "fields.h5"), "r") as f:
        val = f[q][()]
        count = f["count"][()]
        origin = f.attrs["origin"]
        h = f.attrs["spacing"]
    ny, nx = val.shape
    extent = [origin[0], origin[0] + nx * h[0], origin[1], origin[1] + ny * h[1]]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(np.ma.masked_where(count == 0, val), origin="lower", extent=extent,
                   cmap="magma", interpolation="nearest")
    ax.set_title(f"{q}: cell means over frames")
    fig.colorbar(im, ax=ax, shrink=0.8)
    out = os.path.join(outdir, "epr_map.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def loss_curve(outdir):
    path = os.path.join(outdir, "train_log.h5")
    if not os.path.exists(path):
        return None
    with h5py.File(path, "r") as f:
        loss = f["loss"][()]
        step = f["step"][()] if "step" in f else np.arange(1, len(loss) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(step, loss, lw=0.8)
    if len(loss) > 20:
        w = max(1, len(loss) // 50)
        ax.plot(step[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), lw=2,
                label=f"running mean ({w})")
        ax.legend()
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    out = os.path.join(outdir, "loss.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--frame", type=int, default=-1)
    ap.add_argument("--quantity", default="epr_total")
    a = ap.parse_args()
    for out in (particles(a.outdir, a.frame, a.quantity), field_map(a.outdir, a.quantity),
                loss_curve(a.outdir)):
        if out:
            print(out)


if __name__ == "__main__":
    sgm_cli.run(main)
