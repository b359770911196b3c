#!/usr/bin/env python3
"""Snapshot and local-density histogram of an sgm_hpc trajectory (H5MD).

    plot_snapshot.py OUTDIR [--frame -1] [--out OUTDIR/snapshot.png]

Left: the particles of one frame as disks of radius a, coloured by local packing fraction.
Right: histogram of the local packing fraction over the second half of the frames (a MIPS state is
bimodal: a dilute gas and a dense cluster). The local packing fraction of a particle is the
fraction of area covered by particles in the periodic 3x3 block of grid cells around its cell
(cells of width >= 4a), an O(N) estimate that needs no neighbour search.
"""
import argparse
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import EllipseCollection  # noqa: E402
import sgm_cli  # noqa: E402


def local_phi(pos, L, a, cell=4.0):
    nc = max(3, int(L // (cell * a)))
    w = L / nc
    ij = np.floor(np.mod(pos, L) / w).astype(int) % nc
    counts = np.zeros((nc, nc))
    np.add.at(counts, (ij[:, 0], ij[:, 1]), 1.0)
    block = sum(np.roll(np.roll(counts, dx, 0), dy, 1) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
    return block[ij[:, 0], ij[:, 1]] * np.pi * a * a / (9 * w * w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--frame", type=int, default=-1)
    ap.add_argument("--out")
    args = ap.parse_args()
    path = os.path.join(args.outdir, "trajectory.h5")
    with h5py.File(path, "r") as f:
        grp = f["particles"][list(f["particles"].keys())[0]]
        pos = grp["position/value"][()]
        times = grp["position/time"][()]
        L = float(grp["box/edges"][0])
        par = f["parameters"].attrs
        a = float(par["a"])
    if pos.shape[-1] != 2:
        sys.exit("plot_snapshot.py draws 2D systems only")
    frame = args.frame % len(pos)
    phi = local_phi(pos[frame], L, a)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [1, 1]})
    xy = np.mod(pos[frame], L)
    disks = EllipseCollection(2 * a, 2 * a, 0.0, units="xy", offsets=xy, offset_transform=ax.transData,
                              array=phi, cmap="viridis", edgecolors="none")
    disks.set_clim(0, max(0.9, phi.max()))
    ax.add_collection(disks)
    ax.set_xlim(0, L)
    ax.set_ylim(0, L)
    ax.set_aspect("equal")
    ax.set_title(f"N = {len(xy)}, t = {times[frame]:g}")
    fig.colorbar(disks, ax=ax, label="local packing fraction", shrink=0.8)
    late = pos[len(pos) // 2:]
    allphi = np.concatenate([local_phi(p, L, a) for p in late])
    bx.hist(allphi, bins=40, range=(0, 1), density=True, color="0.3")
    bx.set_xlabel("local packing fraction")
    bx.set_ylabel("density")
    bx.set_title(f"frames {len(pos) // 2}..{len(pos) - 1}")
    fig.tight_layout()
    out = args.out or os.path.join(args.outdir, "snapshot.png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    sgm_cli.run(main)
