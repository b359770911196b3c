#!/usr/bin/env python3
"""Equilibrium check of a learned score (v0 = 0, eps > 0; docs/validation.md "Equilibrium: v0 = 0
with interactions"; issue 4 "EPR consistent with 0").

    /usr/bin/python3 postprocess/equilibrium_epr.py OUTDIR [OUTDIR ...] [--batches 10]

Reads OUTDIR/epr.h5 (velocity_x/_g, score_x/_g, orientation, epr_total) and the run's eps, gamma
and v0 from the input stored in it. With v0 = 0 the exact score is s_x = mu F / eps, s_g = -g, so
v = 0 and every per-particle EPR is the score error: |v_x|^2/eps + |v_g|^2/gamma =
eps |s_x - mu F/eps|^2 + gamma |s_g + g|^2. The force mu F is recovered as b_x = v_x + eps s_x
(the epr stage's drift; v0 = 0). Prints per particle:
  - the EPR (x and g parts) with its batch-means standard error over --batches batches of
    consecutive frames, and its distance from 0 in standard errors;
  - the zero-score scale |mu F|^2/eps + gamma |g|^2 (the EPR of s = 0: the terms the score must
    cancel) and the EPR as a fraction of it;
  - the relative L2 errors of s_x against mu F/eps and of s_g against -g, the cosine and the
    least-squares scale of s_x on mu F/eps (over all particle-frames);
  - the score-matching loss (eq. 22) of the learned score minus that of the exact score on these
    frames, per particle: 2 s.N + |N|^2 + 2 div N with N = s_hat - s (N_x = -v_x/eps, N_g =
    -v_g/gamma, div N = -(div_x v_x/eps + div_g v_g/gamma) from epr.h5). Its expectation over the
    stationary law is E|N|^2 >= 0; a negative value on the training frames means the network
    fitted the sample (memorisation), not the density;
  - metrics.json's E[div v] with its standard error, E[v.s] and E[|s|^2 + div s], when present.
Needs numpy and h5py (Debian's /usr/bin/python3, or scripts/find-python.sh).
"""
import argparse
import json
import os
import tomllib

import h5py
import numpy as np
import sgm_cli


def batch_se(x, nb):
    """Batch-means standard error of the mean of the per-frame series x."""
    edges = np.linspace(0, len(x), min(nb, len(x)) + 1).astype(int)
    m = np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    return m.std(ddof=1) / np.sqrt(len(m))


def one(d, nb):
    with h5py.File(os.path.join(d, "epr.h5"), "r") as f:
        cfg = tomllib.loads(f.attrs["input"].decode() if isinstance(f.attrs["input"], bytes)
                            else str(f.attrs["input"]))
        vx, sx, vg, sg, g = (f[k][()] for k in ("velocity_x", "score_x", "velocity_g",
                                                 "score_g", "orientation"))
        dvx, dvg = f["epr_system_x"][()], f["epr_system_g"][()]
    s = cfg["system"]
    eps, gam, v0 = float(s["eps"]), float(s["gamma"]), float(s["v0"])
    if v0 != 0.0 or eps <= 0.0:
        print(f"{d}: warning: v0 = {v0}, eps = {eps}: the exact score below assumes v0 = 0, eps > 0")
    bx = vx + eps * sx  # mu F
    ex = (vx * vx).sum(-1) / eps  # (frames, N)
    eg = (vg * vg).sum(-1) / gam
    tot = (ex + eg).mean(1)
    zero = ((bx * bx).sum(-1) / eps + gam * (g * g).sum(-1)).mean()
    se = batch_se(tot, nb)
    ref = bx / eps
    cos = (sx * ref).sum() / np.sqrt((sx * sx).sum() * (ref * ref).sum())
    scale = (sx * ref).sum() / (ref * ref).sum()
    ex_rel = np.sqrt(((sx - ref) ** 2).sum() / (ref * ref).sum())
    eg_rel = np.sqrt(((sg + g) ** 2).sum() / (g * g).sum())
    nx, ng = -vx / eps, -vg / gam
    s0x, s0g = sx - nx, -g
    dl = (2 * (s0x * nx).sum(-1) + (nx * nx).sum(-1) + 2 * (s0g * ng).sum(-1) + (ng * ng).sum(-1)
          - 2 * (dvx / eps + dvg / gam))  # (frames, N)
    dl_se = batch_se(dl.mean(1), nb)
    print(f"{d}: {vx.shape[0]} frames, N = {vx.shape[1]}, eps = {eps:g}, gamma = {gam:g}")
    print(f"  EPR per particle {tot.mean():.4g} +- {se:.2g} (batch means, {nb} batches) = "
          f"{tot.mean() / se:.1f} s.e. from 0;  x part {ex.mean():.4g}, g part {eg.mean():.4g}")
    print(f"  zero-score scale |mu F|^2/eps + gamma|g|^2 = {zero:.4g} per particle; "
          f"EPR / scale = {tot.mean() / zero:.3g}")
    print(f"  s_x vs mu F/eps: rel. L2 error {ex_rel:.3g}, cosine {cos:.4f}, LSQ scale {scale:.4f};"
          f"  s_g vs -g: rel. L2 error {eg_rel:.3g}")
    print(f"  score-matching loss minus the exact score's, per particle: {dl.mean():.4g} +- "
          f"{dl_se:.2g} (|N|^2 part {((nx * nx).sum(-1) + (ng * ng).sum(-1)).mean():.4g})")
    mp = os.path.join(d, "metrics.json")
    if os.path.exists(mp):
        with open(mp) as f:
            m = json.load(f)
        e, t = m.get("epr", {}), m.get("train", {})
        if "div_v_mean" in e:
            print(f"  E[div v] {e['div_v_mean']:.4g} +- {e['div_v_se']:.2g};  program's EPR "
                  f"{e['epr_per_particle']:.4g} +- {e['epr_per_particle_se']:.2g}")
        if "v_dot_s_mean" in e:
            print(f"  E[v.s] {e['v_dot_s_mean']:.4g} +- {e['v_dot_s_se']:.2g};  E[|s|^2 + div s] "
                  f"{e['score_ibp_mean']:.4g} +- {e['score_ibp_se']:.2g}")
        if "final_loss" in t:
            print(f"  training: {t['steps']} steps, final loss {t['final_loss']:.4g}, "
                  f"{t['particles_per_s']:.0f} centres/s, {t['wall_time_s']:.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("outdir", nargs="+")
    ap.add_argument("--batches", type=int, default=10)
    a = ap.parse_args()
    for d in a.outdir:
        one(d, a.batches)


if __name__ == "__main__":
    sgm_cli.run(main)
