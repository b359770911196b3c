#!/usr/bin/env python3
"""Where the entropy is produced in a MIPS run: the epr stage's dilute / interface / dense-bulk
classes (paper 002 §7, Fig. 8; issue 4 "EPR concentrated at the interface").

    /usr/bin/python3 postprocess/epr_regions.py OUTDIR [--frame -1] [--thresholds 0.2,0.7 ...]
                                                        [--boundary 2 4 ...] [--batches 4]
                                                        [--no-figure]

Reads OUTDIR/epr.h5 (written with [epr] classify = true: /phi_local, /phase_class, /velocity_g,
/position) and prints, independently of the program's own metrics.json:
  - per class (dilute phi_i < phi_dilute, interface, dense phi_i >= phi_dense): particles per
    frame, mean |v_g|^2 over the class's particle-frames, and the ratios interface/dense and
    interface/dilute (the issue's criterion: both >= 3), with a batch-means error over frame
    batches;
  - the same for other threshold pairs given with --thresholds (sensitivity to the class
    definition);
  - with --boundary W (one or more widths, in units of a): geometric classes that
    follow the paper's wording (Fig. 8, "the interface between the gas and solid phases") instead
    of density thresholds: the solid is every particle of a contact cluster (pairs closer than
    2a(1 + 0.1), union-find) of at least --min-cluster particles; interface = solid particles
    within W of a non-solid particle and non-solid particles within W of a solid one (W > 2.2: the
    nearest non-solid particle of a solid one is not in contact with it); dense bulk =
    solid particles farther than W from every non-solid one; dilute = non-solid particles farther
    than W from every solid one; --solid-phi X takes phi_i >= X as the solid instead of the
    contact clusters. The box side comes from the run's input (N, phi, a, dim);
  - the mean |v_g|^2 in bins of phi_i (its profile across the interface);
  - metrics.json's epr values next to the recomputed ones when OUTDIR/metrics.json exists;
  - with --bound, per class and per phi_i bin, a lower bound on the mean |v_g|^2 of the *exact*
    score of the frames' density, from the learned one (docs/derivations.md, "A lower bound on
    the exact score's |v_g|^2 by class"): with u = v_g / gamma = -(g + s_g),
        E_c |g + s_g|^2 >= E_c [2 div_g u - 2 g.u - |u|^2]      (Stein's identity in g_i),
    for any class c defined by positions alone; the bound is printed times gamma^2, in the units
    of mean |v_g|^2, and written with the class means to OUTDIR/epr_bound.json. The same with
    the score -g - k u, k a constant per class chosen from the data (cross-fitted over frame
    batches), is also a bound ("at the best scale k of v_g"): tighter when the model's v_g has
    the right shape and the wrong size. Both hold for the frames' own density only if the model
    did not train on them: evaluate a model on held-out frames (another seed's trajectory).
Writes OUTDIR/epr_regions.png: one frame's particles coloured by class and by |v_g|^2, and the
|v_g|^2 profile against phi_i with the thresholds. Needs numpy, h5py and matplotlib (Debian's
/usr/bin/python3, or scripts/find-python.sh).
"""
import argparse
import json
import os

import h5py
import numpy as np
import sgm_cli

NAMES = ("dilute", "interface", "dense")


def class_stats(vg2, cls, batches):
    """Mean |v_g|^2 per class and the two interface ratios, over all frames and per batch."""
    T = vg2.shape[0]

    def one(sl):
        m = []
        for c in range(3):
            sel = cls[sl] == c
            m.append(vg2[sl][sel].mean() if sel.any() else np.nan)
        return np.array(m), m[1] / m[2], m[1] / m[0]

    mean, r_dense, r_dilute = one(slice(0, T))
    edges = np.linspace(0, T, min(batches, T) + 1).astype(int)
    per = [one(slice(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    rd = np.array([p[1] for p in per])
    rg = np.array([p[2] for p in per])
    nb = len(per)

    def se(r):  # nan when a class is empty in all but one batch
        r = r[np.isfinite(r)]
        return r.std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else np.nan

    err = (se(rd), se(rg))
    counts = np.array([(cls == c).sum() / T for c in range(3)])
    return counts, mean, r_dense, r_dilute, err


def bound_parts(vg, g, divg, gamma):
    """Per particle-frame A = div_g u - g.u and B = |u|^2 with u = v_g / gamma, times gamma^2 (the
    units of |v_g|^2): the class mean of 2A - B bounds the exact score's mean |v_g|^2 from below."""
    return gamma * divg - gamma * (g * vg).sum(-1), (vg * vg).sum(-1)


def scaled_bound(A, B, cls, c, batches):
    """The bound of the score -g - k u (k constant on the class), k = E_c[A] / E_c[B] maximising
    k (2 E_c[A] - k E_c[B]), cross-fitted: each frame batch uses the k of the other batches.
    Returns the mean over batches, its error, and the k of all frames (0 where E_c[A] <= 0)."""
    T = A.shape[0]
    sel = cls == c
    if not sel.any():
        return np.nan, np.nan, np.nan
    edges = np.linspace(0, T, min(batches, T) + 1).astype(int)
    sums = [(A[a:b][sel[a:b]].sum(), B[a:b][sel[a:b]].sum(), sel[a:b].sum())
            for a, b in zip(edges[:-1], edges[1:]) if sel[a:b].any()]
    tot = np.sum(sums, axis=0)
    k_all = max(tot[0], 0.0) / tot[1] if tot[1] > 0 else 0.0
    if len(sums) < 2:
        return k_all * (2 * tot[0] - k_all * tot[1]) / tot[2], np.nan, k_all
    per = []
    for sa, sb, n in sums:
        oa, ob = tot[0] - sa, tot[1] - sb
        k = max(oa, 0.0) / ob if ob > 0 else 0.0
        per.append(k * (2 * sa - k * sb) / n)
    return np.mean(per), np.std(per, ddof=1) / np.sqrt(len(per)), k_all


def batch_mean_se(q, cls, c, batches):
    """Mean of q over the class c particle-frames and its batch-means error over frame batches."""
    T = q.shape[0]
    sel = cls == c
    m = q[sel].mean() if sel.any() else np.nan
    edges = np.linspace(0, T, min(batches, T) + 1).astype(int)
    per = [q[a:b][sel[a:b]].mean() for a, b in zip(edges[:-1], edges[1:]) if sel[a:b].any()]
    se = np.std(per, ddof=1) / np.sqrt(len(per)) if len(per) > 1 else np.nan
    return m, se


def classify(phi, lo, hi):
    return np.where(phi < lo, 0, np.where(phi < hi, 1, 2))


def boundary_classes(pos, L, a, width, min_cluster, phi=None, solid_phi=None, tol=0.1):
    """Geometric dilute (0) / interface (1) / dense bulk (2) classes of every frame (see above);
    with solid_phi the solid is phi_i >= solid_phi instead of the large contact clusters."""
    from periodic_neighbours import components, nearest_other, pairs_within

    out = np.zeros(pos.shape[:2], dtype=int)
    for t, x in enumerate(pos):
        x = np.mod(x, L)
        pr, _ = pairs_within(x, L, 2 * a * (1 + tol))
        lab = components(len(x), pr)
        solid = np.bincount(lab)[lab] >= min_cluster
        if solid_phi is not None:
            solid = phi[t] >= solid_phi
        c = np.where(solid, 2, 0)
        if solid.any() and (~solid).any():
            d_to_gas = nearest_other(x[solid], x[~solid], L)
            d_to_solid = nearest_other(x[~solid], x[solid], L)
            cs = np.where(d_to_gas < width * a, 1, 2)
            cg = np.where(d_to_solid < width * a, 1, 0)
            c[solid], c[~solid] = cs, cg
        out[t] = c
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--frame", type=int, default=-1, help="frame of the figure (default: last)")
    ap.add_argument("--thresholds", nargs="*", default=[],
                    help="further phi_dilute,phi_dense pairs to evaluate, e.g. 0.2,0.7")
    ap.add_argument("--boundary", nargs="*", type=float, default=[],
                    help="widths W (units of a) of geometric interface classes (see above)")
    ap.add_argument("--min-cluster", type=int, default=50,
                    help="--boundary: smallest contact cluster counted as solid")
    ap.add_argument("--solid-phi", type=float, default=None,
                    help="--boundary: the solid is phi_i >= this instead of the contact clusters")
    ap.add_argument("--batches", type=int, default=4, help="frame batches for the errors")
    ap.add_argument("--bound", action="store_true",
                    help="also the lower bound on the exact score's |v_g|^2 per class (above)")
    ap.add_argument("--no-figure", action="store_true")
    a = ap.parse_args()

    with h5py.File(os.path.join(a.outdir, "epr.h5"), "r") as f:
        if "phase_class" not in f:
            raise SystemExit(f"{a.outdir}/epr.h5 has no /phase_class: run epr with classify = true")
        vg = f["velocity_g"][()]
        phi = f["phi_local"][()]
        cls = np.rint(f["phase_class"][()]).astype(int)
        allpos = f["position"][()] if a.boundary else None
        pos = f["position"][a.frame]
        t = f["time"][a.frame]
        n = int(f.attrs["n"])
        inp = f.attrs.get("input", b"")
        if a.bound:
            g_all, divg = f["orientation"][()], f["epr_system_g"][()]
    vg2 = (vg * vg).sum(-1)
    T = vg2.shape[0]
    # thresholds of the run: [epr] phi_dilute, phi_dense of the resolved input
    lo = hi = np.nan
    sysp = {}
    try:
        import tomllib
        cfg = tomllib.loads(inp.decode() if isinstance(inp, bytes) else str(inp))
        e = cfg.get("epr", {})
        sysp = cfg.get("system", {})
        lo, hi = float(e.get("phi_dilute", np.nan)), float(e.get("phi_dense", np.nan))
    except Exception:  # older Python or no input attribute: the lines are left out
        pass
    print(f"{a.outdir}: N = {n}, {T} frames; mean |v_g|^2 over all particle-frames "
          f"{vg2.mean():.4g}")
    lb = None
    if a.bound:
        if "gamma" not in sysp:
            raise SystemExit("--bound needs the run's input ([system] gamma) in epr.h5 and tomllib")
        bA, bB = bound_parts(vg, g_all, divg, float(sysp["gamma"]))
        lb = 2.0 * bA - bB

    rows = [(f"run's classes (phi_dilute = {lo:g}, phi_dense = {hi:g})", cls)]
    for s in a.thresholds:
        l, h = (float(v) for v in s.split(","))
        rows.append((f"phi_dilute = {l:g}, phi_dense = {h:g}", classify(phi, l, h)))
    if a.boundary:
        if not sysp:
            raise SystemExit("--boundary needs the run's input (N, phi, a) in epr.h5 and tomllib")
        import math
        dim, ra = int(sysp.get("dim", 2)), float(sysp.get("a", 1.0))
        if dim != 2:
            raise SystemExit("--boundary: 2-d runs only")
        L = math.sqrt(float(sysp["n"]) * math.pi * ra * ra / float(sysp["phi"]))
        for w in a.boundary:
            solid = (f"phi_i >= {a.solid_phi:g}" if a.solid_phi is not None else
                     f"contact clusters >= {a.min_cluster}")
            rows.append((f"geometric: {solid} is solid, interface within {w:g} a of the other "
                         "phase", boundary_classes(allpos, L, ra, w, a.min_cluster, phi,
                                                   a.solid_phi)))
    bound_rows = []
    for label, c in rows:
        counts, mean, rd, rg, err = class_stats(vg2, c, a.batches)
        print(f"\n{label}:")
        classes = {}
        for k in range(3):
            line = f"  {NAMES[k]:9s} {counts[k]:8.1f} per frame   mean |v_g|^2 = {mean[k]:.4g}"
            if lb is not None:
                m, e = batch_mean_se(lb, c, k, a.batches)
                ms, es, kc = scaled_bound(bA, bB, c, k, a.batches)
                line += (f"   exact >= {m:.4g} +- {e:.2g}; at the best scale {kc:.3g} of v_g: "
                         f">= {ms:.4g} +- {es:.2g}")
                vg_se = batch_mean_se(vg2, c, k, a.batches)[1]
                vals = {"per_frame": counts[k], "vg2": mean[k], "vg2_se": vg_se, "bound": m,
                        "bound_se": e, "bound_scaled": ms, "bound_scaled_se": es,
                        "scale": kc}  # an empty class's NaN becomes null
                classes[NAMES[k]] = {q: float(v) if np.isfinite(v) else None
                                     for q, v in vals.items()}
            print(line)
        if lb is not None:
            bound_rows.append({"classes_by": label, "classes": classes})
            m0 = max(batch_mean_se(lb, c, 0, a.batches)[0],
                     scaled_bound(bA, bB, c, 0, a.batches)[0])
            print(f"  the exact score meets interface/dilute >= 3 only if its interface mean is "
                  f">= {3 * m0:.4g} (this model's: {mean[1]:.4g})")
        print(f"  ratio interface/dense  = {rd:.3g} +- {err[0]:.2g}   (>= 3: "
              f"{'yes' if rd >= 3 else 'no'})")
        print(f"  ratio interface/dilute = {rg:.3g} +- {err[1]:.2g}   (>= 3: "
              f"{'yes' if rg >= 3 else 'no'})   [+- : batch means over {a.batches} frame batches]")

    bins = np.linspace(0, max(1.0, phi.max() + 1e-9), 21)
    idx = np.clip(np.digitize(phi.ravel(), bins) - 1, 0, len(bins) - 2)
    cnt = np.bincount(idx, minlength=len(bins) - 1)
    s = np.bincount(idx, weights=vg2.ravel(), minlength=len(bins) - 1)
    prof = np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)
    if lb is not None:
        slb = np.bincount(idx, weights=lb.ravel(), minlength=len(bins) - 1)
        plb = np.where(cnt > 0, slb / np.maximum(cnt, 1), np.nan)
    print("\nmean |v_g|^2 by phi_i (particle-frames per bin)"
          + ("; the exact score's lower bound:" if lb is not None else ":"))
    for b in range(len(bins) - 1):
        if cnt[b]:
            print(f"  [{bins[b]:.2f}, {bins[b + 1]:.2f})  {prof[b]:.4g}  ({cnt[b]})"
                  + (f"   exact >= {plb[b]:.4g}" if lb is not None else ""))

    if lb is not None:
        bpath = os.path.join(a.outdir, "epr_bound.json")
        with open(bpath, "w") as f:
            json.dump(bound_rows, f, indent=1)
        print(f"\nbounds: {bpath}")

    mpath = os.path.join(a.outdir, "metrics.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            e = json.load(f).get("epr", {})
        keys = [k for k in e if k.startswith(("vg2_", "class_count_"))]
        if keys:
            print("\nmetrics.json (program):", ", ".join(f"{k} = {e[k]:.4g}" if isinstance(
                e[k], (int, float)) else f"{k} = {e[k]}" for k in sorted(keys)))

    if a.no_figure:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(16, 5))
    c = cls[a.frame]
    colours = np.array(["#4c9be8", "#e8524c", "#444444"])
    for k in range(3):
        sel = c == k
        ax[0].scatter(pos[sel, 0], pos[sel, 1], s=3, c=colours[k], label=NAMES[k])
    ax[0].legend(loc="upper right", markerscale=4, fontsize=8)
    ax[0].set_title(f"classes by local packing fraction, t = {t:g}")
    v = vg2[a.frame]
    sc = ax[1].scatter(pos[:, 0], pos[:, 1], s=3, c=v, cmap="magma", vmin=0,
                       vmax=np.percentile(v, 99) if np.any(v > 0) else None)
    ax[1].set_title("|v_g|^2 per particle")
    fig.colorbar(sc, ax=ax[1], shrink=0.8)
    for x in ax[:2]:
        x.set_aspect("equal")
    mid = 0.5 * (bins[1:] + bins[:-1])
    ax[2].semilogy(mid[cnt > 0], prof[cnt > 0], "o-")
    for x in (lo, hi):
        if np.isfinite(x):
            ax[2].axvline(x, color="grey", ls="--")
    ax[2].set_xlabel("local packing fraction phi_i")
    ax[2].set_ylabel("mean |v_g|^2")
    ax[2].set_title("all frames")
    fig.tight_layout()
    out = os.path.join(a.outdir, "epr_regions.png")
    fig.savefig(out, dpi=110)
    print(f"\nfigure: {out}")


if __name__ == "__main__":
    sgm_cli.run(main)
