#!/usr/bin/env python3
"""A copy of an H5MD trajectory whose frames are samples of the sigma-smoothed density: Gaussian
noise of standard deviation sigma added to every position and orientation (App. F.8's noise on
x and g, the density the denoising loss learns the score of), positions wrapped back into a
periodic box.

    /usr/bin/python3 postprocess/noise_frames.py TRAJECTORY.h5 OUT.h5 --sigma 0.05
                                                 [--stride 10] [--seed 1]

Only every --stride-th frame is noised (run epr on OUT.h5 with the same [epr] stride; the others
are left as they were). With `postprocess/epr_regions.py --bound` on the epr run, the bound is
then one on the exact score of the smoothed density (docs/validation.md, "MIPS: what the exact
score's gas carries"). OUT.h5 must not exist.
"""
import argparse
import os
import shutil

import h5py
import numpy as np
import sgm_cli


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("trajectory")
    ap.add_argument("out")
    ap.add_argument("--sigma", type=float, required=True)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    o = ap.parse_args()
    if o.sigma < 0 or o.stride < 1:
        raise SystemExit("--sigma must be >= 0 and --stride >= 1")
    if os.path.exists(o.out):
        raise SystemExit(f"{o.out} exists: not overwritten")
    tmp = o.out + ".tmp"
    shutil.copyfile(o.trajectory, tmp)
    rng = np.random.default_rng(o.seed)
    with h5py.File(tmp, "r+") as f:
        box = f["particles/all/box"]
        periodic = [b in (b"periodic", "periodic") for b in box.attrs["boundary"]]
        L = box["edges"][()] if "edges" in box else None
        pos = f["particles/all/position/value"]
        ori = f["particles/all/orientation/value"]
        for t in range(0, pos.shape[0], o.stride):
            x = pos[t] + o.sigma * rng.standard_normal(pos.shape[1:])
            for k, p in enumerate(periodic):
                if p:
                    x[:, k] = np.mod(x[:, k], L[k])
            pos[t] = x
            ori[t] = ori[t] + o.sigma * rng.standard_normal(ori.shape[1:])
        f.attrs["noise_frames"] = f"sigma = {o.sigma:g} on x and g, every {o.stride}th frame"
    os.replace(tmp, o.out)
    print(f"{o.out}: sigma = {o.sigma:g} on x and g of every {o.stride}th frame")


if __name__ == "__main__":
    sgm_cli.run(main)
