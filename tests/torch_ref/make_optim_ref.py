#!/usr/bin/python3
"""Writes tests/data/torch_optim_ref.h5: PyTorch 1.13 optimiser trajectories for test_nn_optim.

usage (Debian's system interpreter, which has torch, numpy, h5py):
    /usr/bin/python3 tests/torch_ref/make_optim_ref.py [--out tests/data/torch_optim_ref.h5]

One float32 parameter vector p0 (n = 24, entries of mixed magnitude) and a fixed sequence of
gradients g[k] (STEPS x n, magnitudes from 1e-3 to 10) are replayed through torch.optim.Adam,
AdamW and RAdam: the gradient of step k is g[k], whatever the parameters are. After every step
the parameters and both moments are stored, so the C test can replay the same gradients and
compare step by step. Layout:
    /p0                 (n,)        float32
    /grads              (STEPS, n)  float32
    /                   attribute torch_version (string)
    /<case>             group, attributes: optimizer ("adam" | "adamw" | "radam"), lr, beta1,
                        beta2, eps, weight_decay, grad_scale (doubles; gradients are grad_scale * /grads)
    /<case>/params      (STEPS, n)  float32, after step k (row k)
    /<case>/exp_avg     (STEPS, n)  float32  (m)
    /<case>/exp_avg_sq  (STEPS, n)  float32  (v)
RAdam runs 12 steps so both branches occur (rho_t <= 5 for t <= 5 with beta2 = 0.999, rectified
after). `radam_big_eps` uses eps = 1e-3 and small gradients, where torch's eps placement (added
to sqrt(v) before the bias correction) differs visibly from optax's (added to sqrt(vhat)).
"""
import argparse
import os

import h5py
import numpy as np
import torch

STEPS = 12
N = 24

CASES = [
    # name, optimizer, lr, betas, eps, weight_decay, gradient scale
    ("adam", "adam", 1e-2, (0.9, 0.999), 1e-8, 0.0, 1.0),
    ("adam_l2", "adam", 5e-3, (0.8, 0.99), 1e-8, 0.1, 1.0),
    ("adamw", "adamw", 1e-2, (0.9, 0.999), 1e-8, 0.1, 1.0),
    ("radam", "radam", 1e-2, (0.9, 0.999), 1e-8, 0.0, 1.0),
    ("radam_l2", "radam", 1e-2, (0.9, 0.99), 1e-8, 0.05, 1.0),
    ("radam_big_eps", "radam", 1e-1, (0.9, 0.999), 1e-3, 0.0, 1e-3),
]


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "torch_optim_ref.h5"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    p0 = rng.standard_normal(N).astype(np.float32)
    mag = np.logspace(-3, 1, N).astype(np.float32)  # per-element gradient magnitudes
    grads = (rng.standard_normal((STEPS, N)) * mag).astype(np.float32)
    with h5py.File(args.out, "w") as f:
        f["p0"] = p0
        f["grads"] = grads
        f.attrs["torch_version"] = str(torch.__version__)
        for name, kind, lr, betas, eps, wd, gscale in CASES:
            p = torch.nn.Parameter(torch.tensor(p0))
            cls = dict(adam=torch.optim.Adam, adamw=torch.optim.AdamW, radam=torch.optim.RAdam)[kind]
            opt = cls([p], lr=lr, betas=betas, eps=eps, weight_decay=wd)
            out = {k: np.zeros((STEPS, N), np.float32) for k in ("params", "exp_avg", "exp_avg_sq")}
            for k in range(STEPS):
                p.grad = torch.tensor(grads[k] * np.float32(gscale))
                opt.step()
                st = opt.state[p]
                out["params"][k] = p.detach().numpy()
                out["exp_avg"][k] = st["exp_avg"].numpy()
                out["exp_avg_sq"][k] = st["exp_avg_sq"].numpy()
            g = f.create_group(name)
            for k, v in out.items():
                g[k] = v
            g.attrs["optimizer"] = kind
            g.attrs["lr"] = float(lr)
            g.attrs["beta1"] = float(betas[0])
            g.attrs["beta2"] = float(betas[1])
            g.attrs["eps"] = float(eps)
            g.attrs["weight_decay"] = float(wd)
            g.attrs["grad_scale"] = float(gscale)
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
