#!/usr/bin/env python3
"""MIPS cluster check on an H5MD trajectory written by the `simulate` stage (docs/validation.md).

    /usr/bin/python3 postprocess/mips_clusters.py out/aoup_mips_4096/trajectory.h5 [--frame -1]

For one frame (default the last): contact clusters (pairs with r < 2a(1 + tol), tol = 0.1) by a
cell-binned neighbour search under minimum image and union-find; the largest-cluster fraction;
and the local packing fraction phi_loc = (number of particles within r_local of a particle,
itself included) * a^2 / r_local^2, histogrammed in [0, 1.2] (bimodal when the system has phase
separated: a dilute gas peak and a dense-cluster peak near close packing). Needs numpy and h5py
(Debian's /usr/bin/python3, or scripts/find-python.sh)."""
import argparse
import h5py
import numpy as np
import sgm_cli


def pairs_within(x, L, rcut):
    """All pairs i < j with minimum-image distance < rcut (periodic square box [0, L)^2)."""
    nc = max(1, int(L // rcut))
    w = L / nc
    c = np.minimum((x // w).astype(np.int64), nc - 1)
    key = c[:, 0] * nc + c[:, 1]
    order = np.argsort(key, kind="stable")
    start = np.searchsorted(key[order], np.arange(nc * nc + 1))
    I, J = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nb = ((c[:, 0] + dx) % nc) * nc + (c[:, 1] + dy) % nc
            cnt = start[nb + 1] - start[nb]
            i = np.repeat(np.arange(len(x)), cnt)
            off = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            j = order[np.repeat(start[nb], cnt) + off]
            I.append(i), J.append(j)
    i, j = np.concatenate(I), np.concatenate(J)
    keep = i < j
    i, j = i[keep], j[keep]
    d = x[i] - x[j]
    d -= L * np.rint(d / L)
    r2 = (d * d).sum(1)
    keep = r2 < rcut * rcut
    i, j = i[keep], j[keep]
    # small boxes (nc < 3) may list a pair twice
    p = np.unique(i * len(x) + j)
    return p // len(x), p % len(x)


def clusters(n, i, j):
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(a) for a in range(n)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trajectory")
    ap.add_argument("--frame", type=int, default=-1)
    ap.add_argument("--a", type=float, default=1.0)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--r-local", type=float, default=5.0)
    ap.add_argument("--bins", type=int, default=15)
    a = ap.parse_args()
    with h5py.File(a.trajectory, "r") as f:
        pos = f["particles/all/position/value"]
        x = np.asarray(pos[a.frame], dtype=float)
        step = int(f["particles/all/position/step"][a.frame])
        t = float(f["particles/all/position/time"][a.frame])
        L = float(np.asarray(f["particles/all/box/edges"])[0])
    n = len(x)
    x = x % L
    i, j = pairs_within(x, L, 2 * a.a * (1 + a.tol))
    lab = clusters(n, i, j)
    sizes = np.bincount(np.unique(lab, return_inverse=True)[1])
    frac = sizes.max() / n
    li, lj = pairs_within(x, L, a.r_local * a.a)
    cnt = 1 + np.bincount(li, minlength=n) + np.bincount(lj, minlength=n)
    phi = cnt * a.a**2 / (a.r_local * a.a) ** 2
    # phi_loc takes the discrete values n a^2/r_local^2: bins two values wide with edges halfway
    # between values (no comb pattern from bins holding one or two values)
    q = a.a**2 / (a.r_local * a.a) ** 2
    w = max(1, round(1.2 / a.bins / q)) * q
    e = -0.5 * q + w * np.arange(int(np.ceil(1.25 / w)) + 1)
    h, e = np.histogram(phi, bins=e)
    # modes: local maxima of the histogram holding >= 2% of the particles
    modes = [0.5 * (e[k] + e[k + 1]) for k in range(len(h))
             if h[k] >= 0.02 * n and h[k] >= (h[k - 1] if k else 0) and h[k] >= (h[k + 1] if k + 1 < len(h) else 0)]
    print(f"frame {a.frame}: step {step}, t = {t:g}, N = {n}, L = {L:.4f}, phi = {n*np.pi*a.a**2/L**2:.3f}")
    print(f"contact clusters (r < {2*a.a*(1+a.tol):g}): {len(sizes)} clusters, largest {sizes.max()} "
          f"= fraction {frac:.3f}; next largest {np.sort(sizes)[-2] if len(sizes) > 1 else 0}")
    print(f"local packing fraction (r_local = {a.r_local:g} a): mean {phi.mean():.3f}; histogram:")
    for k in range(len(h)):
        print(f"  [{e[k]:.2f}, {e[k+1]:.2f})  {h[k]:5d}  " + "#" * int(60 * h[k] / max(h.max(), 1)))
    print("modes at phi_loc ~ " + ", ".join(f"{m:.2f}" for m in modes)
          + ("  (bimodal)" if len(modes) >= 2 and max(modes) - min(modes) > 0.3 else ""))


if __name__ == "__main__":
    sgm_cli.run(main)
