#!/usr/bin/python3
"""One round of the PyTorch side of bench/nn/run.sh (and bench/epr/run.sh).

Builds the anchor's LocalParticleTransformer (../shared/anchors/torch/model.py, imported, not
copied) at the --config size, pins torch *and* OpenBLAS to --threads (torch.set_num_threads does
not limit OpenBLAS; see the anchor's results.md), and times, for B centre windows from the
anchor's make_windows:

  fwd    forward of a frozen copy under torch.inference_mode()            (bench.py's fwd)
  train  zero_grad + DSM noise + forward + loss + backward + Adam step     (bench.py's train)
  div    score + exact divergence d s/d g_centre: 1 forward + 2 backward  (bench.py's div_bwd)
  adam   the Adam step alone over the model's parameters (random gradients)

Each is warmed up (--warmup calls) and then repeated --reps times; every repetition's time is
printed, so the driver pools repetitions over rounds and interleaves them with the C runs:

  TORCH <name> config=<c> B=<B> threads=<t> nparams=<n> times=<t1>,<t2>,...

usage: torch_worker.py --config big|small --batch B [--reps R] [--warmup W] [--threads T]
                       [--only fwd,train,div,adam] [--layers L] [--mlp-hidden H] ...
The --cfg-* options override single fields of the anchor's Config (bench/epr uses them for the
model of input/mips_*.toml); --embed-depth and --dec-depth set the number of hidden layers.
"""
import argparse
import copy
import ctypes
import os
import sys
import time

import torch

ANCHOR = os.environ.get("SGM_TORCH_ANCHOR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                     "shared", "anchors", "torch"))
sys.path.insert(0, ANCHOR)
import model as anchor  # noqa: E402


def set_threads(n):
    torch.set_num_threads(n)
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(n)
    except OSError:  # pragma: no cover
        pass


class Net(anchor.LocalParticleTransformer):
    """The anchor's network with a configurable number of hidden layers in the embeddings and
    the decoder (the anchor fixes 2; input/mips_*.toml uses 1)."""

    def __init__(self, cfg, embed_depth, dec_depth):
        super().__init__(cfg)
        half = cfg.d_e // 2
        self.emb_dx = anchor.mlp(cfg.d_in, cfg.emb_hidden, half, embed_depth)
        self.emb_g = anchor.mlp(cfg.d_in, cfg.emb_hidden, half, embed_depth)
        self.dec = anchor.mlp(cfg.d_e, cfg.dec_hidden, cfg.d_out, dec_depth)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["big", "small"], default="big")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="fwd,train,div,adam")
    ap.add_argument("--chunk", type=int, default=0,
                    help="div: evaluate in chunks of this many centres (0: all at once)")
    for f in ("K", "d_e", "emb_hidden", "n_layers", "n_heads", "ff_hidden", "dec_hidden"):
        ap.add_argument(f"--cfg-{f}", type=int, default=None)
    ap.add_argument("--embed-depth", type=int, default=2)
    ap.add_argument("--dec-depth", type=int, default=2)
    a = ap.parse_args()
    cfg = copy.deepcopy(anchor.BIG if a.config == "big" else anchor.SMALL)
    for f in ("K", "d_e", "emb_hidden", "n_layers", "n_heads", "ff_hidden", "dec_hidden"):
        v = getattr(a, f"cfg_{f}")
        if v is not None:
            setattr(cfg, f, v)
    set_threads(a.threads)
    torch.manual_seed(0)
    B = a.batch
    model = Net(cfg, a.embed_depth, a.dec_depth)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    dx, g = anchor.make_windows(B, cfg.K, seed=B)
    nparams = anchor.n_params(model)
    chunk = a.chunk if a.chunk > 0 else B

    def train():
        opt.zero_grad(set_to_none=True)
        loss = anchor.dsm_loss(model, dx, g)
        loss.backward()
        opt.step()

    def fwd():
        with torch.inference_mode():
            return frozen(dx, g)

    def div():
        out = []
        for b0 in range(0, B, chunk):
            dxc, gg = dx[b0:b0 + chunk], g[b0:b0 + chunk]
            gl = gg[:, 0].clone().requires_grad_(True)
            s = frozen(dxc, torch.cat([gl[:, None], gg[:, 1:]], 1))
            d = torch.zeros(gl.shape[0])
            for k in range(2):
                d += torch.autograd.grad(s[:, k].sum(), gl, retain_graph=(k == 0))[0][:, k]
            out.append((s.detach(), d))
        return out

    spare = copy.deepcopy(model)  # the Adam-only timing updates its own copy
    for p in spare.parameters():
        p.grad = torch.randn_like(p)
    adam_opt = torch.optim.Adam(spare.parameters(), lr=1e-4)

    def adam():
        adam_opt.step()

    fns = dict(fwd=fwd, train=train, div=div, adam=adam)
    for name in a.only.split(","):
        fn = fns[name]
        n_rep = a.reps * (8 if name == "adam" else 1)
        for _ in range(a.warmup):
            fn()
        ts = []
        for _ in range(n_rep):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        print(f"TORCH {name} config={a.config} B={B} threads={a.threads} nparams={nparams} "
              f"times={','.join(f'{t:.6f}' for t in ts)}", flush=True)


if __name__ == "__main__":
    main()
