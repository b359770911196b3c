#!/usr/bin/python3
"""Per-particle split of the system EPR, div v^i = div_x v_x^i + div_g v_g^i, and a score against
a reference score on the same frames.

Reads epr.h5 and run.toml of one or more `epr` runs and prints, per run:

  * the means and rms over particle-frames of div_x v_x^i, div_g v_g^i and their sum div v^i, the
    Pearson correlation of div_x v_x^i with -div_g v_g^i, rms(div v^i) / rms(div_g v_g^i) and
    median |div v^i| / median |div_g v_g^i| (the per-particle relation of paper 002, §6.3: 0 when
    the parts cancel pointwise per particle; the rms is dominated by the few particle-frames at
    contact edges, the median by the bulk);
  * the same by the distance to the nearest other particle (minimum image in periodic boxes), in
    bins from overlap through the contact edge 2a to far apart: where the parts cancel and where
    they do not;
  * per class of that distance, contact (< 2.4 a), shell (2.4-3 a) and apart (>= 3 a): the
    fraction, mean div v^i, and the median and rms ratios within the class (docs/validation.md,
    "Two AOUPs in d = 2": the exact score of a pair cancels apart, not at contact).

With --reference REF (an `epr` run of the same trajectory frames with a reference score, e.g.
[epr] score = "fpe_pair", the numerically exact score of two AOUPs in d = 1), it also prints for
each run its error against REF, frame by frame on the same particles:

  * E|s - s_ref|^2_D per particle (D = diag(eps, gamma)) and relative to E|s_ref|^2_D, with a
    standard error from 10 batch means of the per-frame values;
  * the rms error of div_x v_x^i, div_g v_g^i and div v^i and their correlation with the
    reference's, per particle-frame, over all of them and over those without a neighbour closer
    than 0.3 a (on a ring of soft particles the odd pair force jumps at r = 0, where the exact
    div_x v_x has a delta-like spike that dominates every rms).

Results also go to epr_split.json in each run directory.

Usage: /usr/bin/python3 postprocess/epr_split.py [--reference REF] RUN_DIR [RUN_DIR ...]
"""
import argparse
import json
import os
import sys
import tomllib

import h5py
import numpy as np
import sgm_cli

OVERLAP = 0.3  # a: nearest distances below this are overlaps
BINS = [0.0, 1.6, 1.8, 1.9, 2.0, 2.1, 2.2, 2.4, 2.7, 3.0, 4.0, 6.0, np.inf]  # in units of a
CLASSES = (("contact", 0.0, 2.4), ("shell", 2.4, 3.0), ("apart", 3.0, np.inf))  # in units of a


def load(run):
    with open(os.path.join(run, "run.toml"), "rb") as f:
        cfg = tomllib.load(f)
    sysc = cfg["system"]
    with h5py.File(os.path.join(run, "epr.h5"), "r") as f:
        d = {k: f[k][...] for k in ("epr_system_x", "epr_system_g", "position", "score_x",
                                    "score_g", "step")}
    d["eps"] = float(sysc.get("eps", 0.0))
    d["gamma"] = float(sysc["gamma"])
    d["a"] = float(sysc.get("a", 1.0))
    d["periodic"] = sysc.get("boundary", "periodic") == "periodic"
    d["L"] = float(sysc.get("L", 0.0)) if d["periodic"] else 0.0
    d["nearest"] = nearest(d["position"], d["periodic"], d["L"]) / d["a"]
    return d


def nearest(pos, periodic, L):
    """Distance of each particle to its nearest other particle, (T, N)."""
    T, N, _ = pos.shape
    out = np.empty((T, N))
    step = max(1, 4_000_000 // (N * N))  # frames per chunk: ~64 MB of pair displacements
    for t0 in range(0, T, step):
        p = pos[t0:t0 + step]
        dx = p[:, :, None, :] - p[:, None, :, :]
        if periodic and L > 0:
            dx -= L * np.round(dx / L)
        r = np.sqrt((dx ** 2).sum(-1))
        idx = np.arange(N)
        r[:, idx, idx] = np.inf
        out[t0:t0 + step] = r.min(-1)
    return out


def batch_se(v, nb=10):
    T = v.size
    b = np.array([c.mean() for c in np.array_split(v, nb)]) if T >= nb else v
    return b.std(ddof=1) / np.sqrt(b.size) if b.size > 1 else float("nan")


def split_stats(d):
    sx, sg = d["epr_system_x"], d["epr_system_g"]
    s = sx + sg
    res = {
        "mean_div_x": float(sx.mean()), "mean_div_g": float(sg.mean()), "mean_div": float(s.mean()),
        "rms_div_x": float(np.sqrt((sx ** 2).mean())),
        "rms_div_g": float(np.sqrt((sg ** 2).mean())),
        "rms_div": float(np.sqrt((s ** 2).mean())),
        "pearson_x_minus_g": float(np.corrcoef(sx.ravel(), -sg.ravel())[0, 1]),
    }
    res["rms_ratio"] = res["rms_div"] / res["rms_div_g"]
    # typical sizes: the rms is dominated by the few particle-frames at contact edges (and on a
    # ring by the overlaps where the odd pair force jumps); the median is the bulk of them
    res["median_ratio"] = float(np.median(np.abs(s)) / np.median(np.abs(sg)))
    rn = d["nearest"]
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (rn >= lo) & (rn < hi)
        if m.sum() < 20:
            continue
        a, b = sx[m], sg[m]
        rows.append({"lo": lo, "hi": float(hi) if np.isfinite(hi) else None,
                     "fraction": float(m.mean()), "div_x": float(a.mean()),
                     "div_g": float(b.mean()), "div": float((a + b).mean()),
                     "rms_div": float(np.sqrt(((a + b) ** 2).mean())),
                     "rms_div_g": float(np.sqrt((b ** 2).mean()))})
    res["by_nearest"] = rows
    classes = []
    for name, lo, hi in CLASSES:
        m = (rn >= lo) & (rn < hi)
        if m.sum() < 20:
            continue
        a, b = sx[m], sg[m]
        classes.append({"class": name, "fraction": float(m.mean()),
                        "div": float((a + b).mean()),
                        "median_ratio": float(np.median(np.abs(a + b)) / np.median(np.abs(b))),
                        "rms_ratio": float(np.sqrt(((a + b) ** 2).mean() / (b ** 2).mean()))})
    res["by_class"] = classes
    return res


def compare(d, r, rn_ref):
    if d["step"].shape != r["step"].shape or np.any(d["step"] != r["step"]):
        sys.exit("epr_split.py: the run and the reference analysed different frames")
    if not np.allclose(d["position"], r["position"]):
        sys.exit("epr_split.py: the run and the reference analysed different trajectories")
    e, g = r["eps"], r["gamma"]
    err = (e * ((d["score_x"] - r["score_x"]) ** 2).sum(-1) +
           g * ((d["score_g"] - r["score_g"]) ** 2).sum(-1)).mean(1)  # per frame, per particle
    ref = (e * (r["score_x"] ** 2).sum(-1) + g * (r["score_g"] ** 2).sum(-1)).mean(1)
    out = {"score_error": float(err.mean()), "score_error_se": float(batch_se(err)),
           "score_energy_ref": float(ref.mean()),
           "score_error_rel": float(np.sqrt(err.mean() / ref.mean()))}
    # also away from overlaps (no neighbour closer than OVERLAP a): where an odd pair force
    # jumps (r = 0 on a ring of soft particles) the exact div_x v_x has a delta-like spike that
    # dominates every rms
    away = rn_ref >= OVERLAP
    out["away_fraction"] = float(away.mean())
    for name, a, b in (("div_x", d["epr_system_x"], r["epr_system_x"]),
                       ("div_g", d["epr_system_g"], r["epr_system_g"]),
                       ("div", d["epr_system_x"] + d["epr_system_g"],
                        r["epr_system_x"] + r["epr_system_g"])):
        for tag, m in (("", np.ones_like(away)), ("_away", away)):
            out[name + tag + "_rms_error"] = float(np.sqrt(((a[m] - b[m]) ** 2).mean()))
            out[name + tag + "_rms_ref"] = float(np.sqrt((b[m] ** 2).mean()))
            out[name + tag + "_pearson_ref"] = float(np.corrcoef(a[m], b[m])[0, 1])
    return out


def report(run, st, cmp):
    print(f"{run}:")
    print(f"  per particle: div_x v_x {st['mean_div_x']:+.4f} (rms {st['rms_div_x']:.4f}), "
          f"div_g v_g {st['mean_div_g']:+.4f} (rms {st['rms_div_g']:.4f}), "
          f"div v {st['mean_div']:+.4f} (rms {st['rms_div']:.4f})")
    print(f"  Pearson(div_x v_x, -div_g v_g) {st['pearson_x_minus_g']:+.3f}, "
          f"rms(div v)/rms(div_g v_g) {st['rms_ratio']:.3f}, "
          f"median |div v| / median |div_g v_g| {st['median_ratio']:.3f}")
    print("  by nearest-neighbour distance (a): fraction, <div_x v_x>, <div_g v_g>, <div v>, "
          "rms(div v), rms(div_g v_g)")
    for row in st["by_nearest"]:
        hi = f"{row['hi']:.2f}" if row["hi"] is not None else "inf"
        print(f"    {row['lo']:5.2f}-{hi:>5s}  {row['fraction']:.3f}  {row['div_x']:+.4f}  "
              f"{row['div_g']:+.4f}  {row['div']:+.4f}  {row['rms_div']:.4f}  "
              f"{row['rms_div_g']:.4f}")
    print("  by class: fraction, <div v>, median |div v| / median |div_g v_g|, "
          "rms(div v)/rms(div_g v_g)")
    for row in st["by_class"]:
        print(f"    {row['class']:8s} {row['fraction']:.3f}  {row['div']:+.4f}  "
              f"{row['median_ratio']:.3f}  {row['rms_ratio']:.3f}")
    if cmp:
        print(f"  against the reference: E|s - s_ref|^2_D {cmp['score_error']:.4g} +- "
              f"{cmp['score_error_se']:.2g} per particle (relative {cmp['score_error_rel']:.3f} "
              f"of E|s_ref|^2_D = {cmp['score_energy_ref']:.4g})")
        for tag, what in (("", "all"), ("_away", f"no neighbour within {OVERLAP} a, "
                                                  f"{cmp['away_fraction']:.4f} of them")):
            print(f"    per particle-frame ({what}):")
            for name in ("div_x", "div_g", "div"):
                k = name + tag
                print(f"      {name:6s} rms error {cmp[k + '_rms_error']:.4f} (reference rms "
                      f"{cmp[k + '_rms_ref']:.4f}), Pearson with the reference "
                      f"{cmp[k + '_pearson_ref']:+.3f}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN", help="output directories of epr runs")
    ap.add_argument("--reference", metavar="REF",
                    help="an epr run of the same frames with a reference score")
    a = ap.parse_args(argv)
    ref, runs = a.reference, a.runs
    rd = load(ref) if ref else None
    todo = [(ref, False)] if ref and ref not in runs else []
    todo += [(run, rd is not None) for run in runs]
    for run, against in todo:
        d = rd if run == ref else load(run)
        st = split_stats(d)
        cmp = compare(d, rd, rd["nearest"]) if against else None
        report(run, st, cmp)
        with open(os.path.join(run, "epr_split.json"), "w") as f:
            json.dump({"split": st, "against_reference": cmp, "reference": ref}, f, indent=1)

if __name__ == "__main__":
    sgm_cli.run(main, sys.argv[1:])
