#!/usr/bin/python3
"""64 swimmers in a harmonic trap (paper 002, §6): radial structure of the per-particle EPR.

Reads epr.h5 of one or more `epr` runs (input/swimmers64_*.toml; open box, trap centred at the
origin) and prints, per run, with v0 from the stored input:

  * the Spearman rank correlation of |v_g^i|^2 with the radius |x_i| over all particle-frames
    (pooled), and the mean over frames of the per-frame Spearman correlation (64 particles each);
  * the same for div_g v_g^i (Fig. 5's quantity);
  * the radial profile of <|v_g|^2> in quintiles of the radius;
  * the per-particle check div_x v_x^i ~ -div_g v_g^i (§6.3): the Pearson correlation of
    div_x v_x^i with -div_g v_g^i over particle-frames, the regression slope of div_x v_x^i on
    div_g v_g^i (-1 when they cancel), and rms(div v^i) / rms(div_g v_g^i) (0 when they cancel
    pointwise per particle), plus the frame means of div v per particle (mean, std);
  * the same comparison on frame-averaged maps, where the paper sees it most clearly (Fig. 17:
    "clearest at the level of the spatial map"): the means of div_x v_x^i and -div_g v_g^i in 10
    equal-count radius bins (their Pearson correlation and rms ratio) and in the cells of a
    16 x 16 grid over the central square holding 95% of the particle-frames (cells with at least
    50 particle-frames; Pearson correlation of the two maps);
  * each part's integration-by-parts identity, E[div_x v_x] = -E[v_x . s_x] and
    E[div_g v_g] = -E[v_g . s_g] (exact for the true score, part by part), overall and per
    radius quintile: a part that obeys its own identity while the sum E[div v] is not 0 is
    consistent with the data but not stationary with the other part (docs/validation.md);
  * the same parts by contact load: particles without contacts (|mu div F_i| of the pair forces
    below 0.01) and four equal-count classes of the others by mu div F_i (most compressed
    first), with each class's share of the sum of div v. For a score fitted by score matching
    (or a denoising/transition loss) in a class that holds b and the Boltzmann shift,
    E[div v] = -E|s - s_hat|^2_D, minus the D-weighted squared score error (docs/validation.md,
    "Why E[div v] < 0"): where the negative div v sits is where the score is missed;
  * the same parts by the number of contacts (neighbours closer than 2.3 a: 0, 1, 2, 3 or more),
    where the relative orientation of touching swimmers is pinned along the contact normal and
    div_g v_g rises with the count (docs/validation.md, "The score's error, measured").

Results also go to swimmers_stats.json in each run directory.

Usage: /usr/bin/python3 postprocess/swimmers_spearman.py RUN_DIR [RUN_DIR ...]
"""
import argparse
import json
import os
import sys
import tomllib

import h5py
import numpy as np
from swimmers_linear_sm import drift, geometry, map_means
import sgm_cli


def _ranks(x):
    """Average ranks (ties share the mean of their positions), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    grp = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + ends - 1) / 2.0)[grp]
    return ranks


def spearmanr(a, b):
    """Spearman rank correlation (Pearson correlation of the average ranks), as a 1-tuple."""
    return (float(np.corrcoef(_ranks(np.asarray(a, float)), _ranks(np.asarray(b, float)))[0, 1]),)


def analyse(run):
    with h5py.File(os.path.join(run, "epr.h5"), "r") as f:
        inp = f.attrs["input"]
        cfg = tomllib.loads(inp.decode() if isinstance(inp, bytes) else str(inp))
        pos = f["position"][...]
        vg = f["velocity_g"][...]
        vx = f["velocity_x"][...]
        scx = f["score_x"][...]
        scg = f["score_g"][...]
        sx = f["epr_system_x"][...]
        sg = f["epr_system_g"][...]
    v0 = float(cfg["system"]["v0"])
    T, N = sx.shape
    r = np.sqrt((pos**2).sum(axis=2))
    vg2 = (vg**2).sum(axis=2)
    rho_pool = float(spearmanr(r.ravel(), vg2.ravel())[0])
    rho_frames = np.array([spearmanr(r[t], vg2[t])[0] for t in range(T)])
    rho_div = float(spearmanr(r.ravel(), sg.ravel())[0])
    q = np.quantile(r, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    idx = np.clip(np.searchsorted(q, r.ravel(), side="right") - 1, 0, 4)
    prof = [float(vg2.ravel()[idx == b].mean()) for b in range(5)]
    dv = sx + sg
    a, b = sx.ravel(), sg.ravel()
    slope = float(np.cov(a, b)[0, 1] / np.var(b, ddof=1))
    # frame-averaged radial profiles and spatial maps of div_x v_x and -div_g v_g
    rq = np.quantile(r, np.linspace(0.0, 1.0, 11))
    ri = np.clip(np.searchsorted(rq, r.ravel(), side="right") - 1, 0, 9)
    px = np.array([a[ri == k].mean() for k in range(10)])
    pg = np.array([-b[ri == k].mean() for k in range(10)])
    mx, mg = map_means(pos, a, -b)
    vsx = -(vx * scx).sum(axis=2).ravel()
    vsg = -(vg * scg).sum(axis=2).ravel()
    ibp = {
        "ibp_divx_vx": [float(a.mean())] + [float(a[idx == k].mean()) for k in range(5)],
        "ibp_minus_vx_sx": [float(vsx.mean())] + [float(vsx[idx == k].mean()) for k in range(5)],
        "ibp_divg_vg": [float(b.mean())] + [float(b[idx == k].mean()) for k in range(5)],
        "ibp_minus_vg_sg": [float(vsg.mean())] + [float(vsg[idx == k].mean()) for k in range(5)],
    }
    # contact load: the pair part of mu div F_i (the trap's -d mu A excluded)
    sy = cfg["system"]
    a_, k_, beta_ = float(sy.get("a", 1.0)), float(sy.get("k", 0.0)), float(sy.get("beta", 1.0))
    mu_, pot = float(sy.get("mu", 1.0)), sy.get("potential", "harmonic")
    divf = np.concatenate([drift(pos[t0 : t0 + 256], a_, k_, beta_, mu_, pot)[1].sum(-1)
                           for t0 in range(0, T, 256)]).ravel()
    free = np.abs(divf) < 0.01
    cls = np.full(divf.shape, -1)
    if (~free).sum() >= 4:
        qc = np.quantile(divf[~free], [0.25, 0.5, 0.75])
        cls[~free] = np.searchsorted(qc, divf[~free], side="right")
    contact = []
    for c in range(-1, 4):
        m = cls == c
        if not m.any():
            continue
        contact.append({"class": "no contact" if c < 0 else f"contact q{c}",
                        "share": float(m.mean()), "mu_div_f_pair": float(divf[m].mean()),
                        "divx_vx": float(a[m].mean()), "divg_vg": float(b[m].mean()),
                        "div_v": float(dv.ravel()[m].mean()),
                        "median_div_v": float(np.median(dv.ravel()[m])),
                        "share_of_sum_div_v": float(dv.ravel()[m].sum() / dv.sum())})
    ncnt = np.concatenate([(geometry(pos[t0 : t0 + 256])[0] < 2.3 * a_).sum(-1)
                           for t0 in range(0, T, 256)]).ravel()
    counts = []
    for c in range(4):
        m = ncnt == c if c < 3 else ncnt >= 3
        if not m.any():
            continue
        counts.append({"contacts": str(c) if c < 3 else "3+", "share": float(m.mean()),
                       "divx_vx": float(a[m].mean()), "divg_vg": float(b[m].mean()),
                       "div_v": float(dv.ravel()[m].mean())})
    res = {
        "v0": v0,
        "frames": int(T),
        "n": int(N),
        "spearman_vg2_radius_pooled": rho_pool,
        "spearman_vg2_radius_per_frame_mean": float(np.nanmean(rho_frames)),
        "spearman_vg2_radius_per_frame_std": float(np.nanstd(rho_frames)),
        "spearman_divg_vg_radius_pooled": rho_div,
        "radius_quintile_edges": [float(x) for x in q],
        "vg2_by_radius_quintile": prof,
        "mean_vg2": float(vg2.mean()),
        "pearson_divx_vx_vs_minus_divg_vg": float(np.corrcoef(a, -b)[0, 1]),
        "slope_divx_vx_on_divg_vg": slope,
        "rms_div_v_over_rms_divg_vg": float(np.sqrt((dv**2).mean()) / np.sqrt((b**2).mean())),
        "mean_divx_vx": float(a.mean()),
        "mean_divg_vg": float(b.mean()),
        "div_v_per_particle_frame_mean": float(dv.mean(axis=1).mean()),
        "div_v_per_particle_frame_std": float(dv.mean(axis=1).std(ddof=1)),
        "radius_decile_edges": [float(x) for x in rq],
        "divx_vx_by_radius_decile": [float(x) for x in px],
        "minus_divg_vg_by_radius_decile": [float(x) for x in pg],
        "pearson_radial_profiles": float(np.corrcoef(px, pg)[0, 1]),
        "rms_ratio_radial_profiles": float(np.sqrt((px**2).mean() / (pg**2).mean())),
        "map_cells": int(mx.size),
        "pearson_spatial_maps": float(np.corrcoef(mx, mg)[0, 1]),
        "rms_ratio_spatial_maps": float(np.sqrt((mx**2).mean() / (mg**2).mean())),
        **ibp,
        "by_contact_load": contact,
        "by_contact_count": counts,
    }
    with open(os.path.join(run, "swimmers_stats.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN",
                    help="output directories of epr runs of the swimmers in a trap")
    for run in ap.parse_args().runs:
        s = analyse(run)
        print(f"{run}: v0 = {s['v0']:g}, {s['frames']} frames x {s['n']} particles")
        print(f"  Spearman(|v_g|^2, r): pooled {s['spearman_vg2_radius_pooled']:+.3f}, per frame "
              f"{s['spearman_vg2_radius_per_frame_mean']:+.3f} +- "
              f"{s['spearman_vg2_radius_per_frame_std']:.3f} (std over frames); "
              f"Spearman(div_g v_g, r) pooled {s['spearman_divg_vg_radius_pooled']:+.3f}")
        print("  <|v_g|^2> by radius quintile (inner -> outer): "
              + " ".join(f"{x:.4g}" for x in s["vg2_by_radius_quintile"])
              + f"  (edges {' '.join(f'{x:.2f}' for x in s['radius_quintile_edges'])})")
        print(f"  div_x v_x vs -div_g v_g: Pearson {s['pearson_divx_vx_vs_minus_divg_vg']:+.3f}, "
              f"slope {s['slope_divx_vx_on_divg_vg']:+.3f}, rms(div v)/rms(div_g v_g) "
              f"{s['rms_div_v_over_rms_divg_vg']:.3f}; means x {s['mean_divx_vx']:+.4g}, "
              f"g {s['mean_divg_vg']:+.4g}; E[div v] per particle "
              f"{s['div_v_per_particle_frame_mean']:+.4g} (frame std "
              f"{s['div_v_per_particle_frame_std']:.3g})")
        print("  frame-averaged, by radius decile: div_x v_x "
              + " ".join(f"{x:+.3g}" for x in s["divx_vx_by_radius_decile"])
              + "; -div_g v_g "
              + " ".join(f"{x:+.3g}" for x in s["minus_divg_vg_by_radius_decile"]))
        print(f"  profiles: Pearson {s['pearson_radial_profiles']:+.3f}, rms ratio x/g "
              f"{s['rms_ratio_radial_profiles']:.3g}; spatial maps ({s['map_cells']} cells): "
              f"Pearson {s['pearson_spatial_maps']:+.3f}, rms ratio x/g "
              f"{s['rms_ratio_spatial_maps']:.3g}")
        lab = ["all"] + [f"q{k}" for k in range(5)]
        print("  per-part IBP (all, radius quintiles inner -> outer): "
              + "; ".join(f"{lab[k]} div_x v_x {s['ibp_divx_vx'][k]:+.3f} -v_x.s_x "
                          f"{s['ibp_minus_vx_sx'][k]:+.3f} div_g v_g {s['ibp_divg_vg'][k]:+.3f} "
                          f"-v_g.s_g {s['ibp_minus_vg_sg'][k]:+.3f}" for k in range(6)))
        print("  by contact load (share, <mu div F_pair>: div_x v_x, div_g v_g, div v, median div v, "
              "share of the sum of div v):")
        for c in s["by_contact_load"]:
            print(f"    {c['class']:<11} {c['share']:.2f} {c['mu_div_f_pair']:+8.3f}: "
                  f"{c['divx_vx']:+.3f} {c['divg_vg']:+.3f} {c['div_v']:+.4f} "
                  f"{c['median_div_v']:+.4f} {c['share_of_sum_div_v']:+.2f}")
        print("  by number of contacts, r < 2.3 a (share: div_x v_x, div_g v_g, div v): "
              + "; ".join(f"{c['contacts']} {c['share']:.2f}: {c['divx_vx']:+.3f} "
                          f"{c['divg_vg']:+.3f} {c['div_v']:+.4f}" for c in s["by_contact_count"]))


if __name__ == "__main__":
    sgm_cli.run(main)
