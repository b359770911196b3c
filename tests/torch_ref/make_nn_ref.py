#!/usr/bin/python3
"""Writes tests/data/torch_nn_ref.h5: a PyTorch reference of the local transformer for test_nn_models.

usage (Debian's system interpreter, which has torch, numpy, h5py):
    /usr/bin/python3 tests/torch_ref/make_nn_ref.py [--out tests/data/torch_nn_ref.h5]

The network is ../shared/anchors/torch/model.py's LocalParticleTransformer (embedding MLPs with
two hidden layers, post-norm encoder layers, decoder on the centre token) at a tiny size, with
PyTorch-default initialisation (torch.manual_seed(0)) then moved off the initial point (random
LayerNorm parameters, other weights doubled), evaluated in float64 from float32 weights.
A key mask (absent neighbours) is added the way the C code defines it: masked keys get
probability 0. Everything the C test compares comes from torch autograd, independently of the C
derivatives:
    out      s (B,2) of the centre
    div_x    sum_a d s_a / d x_c,a with x_c the centre position: the centre moves every
             displacement, d(dx_j)/dx_c = -I for j >= 1, the centre's own dx stays 0
    div_g    sum_a d s_a / d g_c,a
    grad_out/<name>  d(r.s)/dtheta
    grad_div/<name>  d(r.s + q.div_x)/dtheta (double backward)
Particle mode (same weights, N = T particles at positions /p_x, orientations /g, no mask, decoder
on every token): /p_out (B,N,2), /p_div_x (B,N) per-particle divergence sum_a ds_ia/dx_ia,
/p_grad_out/<name> = d(p_r.s)/dtheta, /p_grad_div/<name> = d(p_r.s + p_q.div)/dtheta.
Layout: /dx, /g (B,T,2) float32, /mask (B,T) float32, /r (B,2), /q (B) float32, /params/<name>
float32 with the C model's names (blocks.{l}.attn.in_proj_weight, ...), references float64;
attributes on / give the configuration.
"""
import argparse
import math
import os
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "anchors", "torch"))
from model import Config, LocalParticleTransformer  # noqa: E402

CFG = Config(K=5, d_e=8, emb_hidden=6, n_layers=2, n_heads=2, ff_hidden=10, dec_hidden=7)
B = 4


def c_names(m):
    """torch state_dict name -> C model name."""
    out = {}
    for n, _ in m.named_parameters():
        c = n.replace("emb_dx.", "embed_x.").replace("emb_g.", "embed_g.").replace("dec.", "decoder.")
        c = c.replace("layers.", "blocks.").replace("attn.qkv.weight", "attn.in_proj_weight")
        c = c.replace("attn.qkv.bias", "attn.in_proj_bias").replace("attn.out.", "attn.out_proj.")
        c = c.replace("ln1.", "norm1.").replace("ln2.", "norm2.")
        c = c.replace("ff.0.", "linear1.").replace("ff.2.", "linear2.")
        out[n] = c
    return out


def forward(m, dx, g, mask):
    """model.py's forward with a key mask (masked keys: probability 0)."""
    x = torch.cat([m.emb_dx(dx), m.emb_g(g)], dim=-1)
    Bn, T, d = x.shape
    for layer in m.layers:
        a = layer.attn
        q, k, v = a.qkv(x).view(Bn, T, 3, a.h, a.dh).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(a.dh))
        att = att.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(Bn, T, d)
        x = layer.ln1(x + a.out(o))
        x = layer.ln2(x + layer.ff(x))
    return m.dec(x[:, 0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "data", "torch_nn_ref.h5"))
    args = ap.parse_args()
    torch.manual_seed(0)
    m32 = LocalParticleTransformer(CFG)
    # Away from the initialisation's symmetric point so every term is exercised: LayerNorm
    # weights/biases random, other weights scaled up (larger scores, larger divergences).
    with torch.no_grad():
        for n, p in m32.named_parameters():
            if ".ln" in n:
                p.copy_(torch.rand(p.shape) + 0.5 if n.endswith("weight") else torch.rand(p.shape) - 0.5)
            else:
                p.mul_(2.0)
    m = LocalParticleTransformer(CFG).double()
    m.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    T = CFG.T
    gen = torch.Generator().manual_seed(1)
    dx = (2.0 * torch.rand(B, T, 2, generator=gen) - 1.0).float()
    dx[:, 0] = 0.0
    th = 2 * math.pi * torch.rand(B, T, generator=gen)
    g = torch.stack([torch.cos(th), torch.sin(th)], -1).float()
    mask = torch.ones(B, T)
    mask[1, 3] = 0.0
    mask[2, 2] = 0.0
    mask[2, 5] = 0.0
    dx[1, 3] = 0.0  # absent neighbours carry zeros
    dx[2, 2] = 0.0
    dx[2, 5] = 0.0
    r = (2.0 * torch.rand(B, 2, generator=gen) - 1.0).float()
    q = (2.0 * torch.rand(B, generator=gen) - 1.0).float()

    dxd = dx.double().requires_grad_(True)
    gd = g.double().requires_grad_(True)
    s = forward(m, dxd, gd, mask.double())
    div_x = torch.zeros(B, dtype=torch.float64)
    div_g = torch.zeros(B, dtype=torch.float64)
    for a in range(2):
        gdx, gg = torch.autograd.grad(s[:, a].sum(), (dxd, gd), create_graph=True)
        div_x = div_x - gdx[:, 1:, a].sum(1)  # d/dx_c = -sum_{j>=1} d/d dx_j
        div_g = div_g + gg[:, 0, a]
    params = list(m.parameters())
    L1 = (s * r.double()).sum()
    grad_out = torch.autograd.grad(L1, params, retain_graph=True)
    L2 = L1 + (div_x * q.double()).sum()
    grad_div = torch.autograd.grad(L2, params)

    # Particle mode (App. E): the same weights, tokens are particles with positions xp (no
    # mask), the decoder on every token, per-particle divergence div_i = sum_a ds_ia/dx_ia.
    xp = (2.0 * torch.rand(B, T, 2, generator=gen) - 1.0).float()
    rp = (2.0 * torch.rand(B, T, 2, generator=gen) - 1.0).float()
    qp = (2.0 * torch.rand(B, T, generator=gen) - 1.0).float()
    xpd = xp.double().requires_grad_(True)
    xe = torch.cat([m.emb_dx(xpd), m.emb_g(g.double())], dim=-1)
    for layer in m.layers:
        xe = layer(xe)
    sp = m.dec(xe)
    div_p = torch.zeros(B, T, dtype=torch.float64)
    for i in range(T):
        for a in range(2):
            (gx,) = torch.autograd.grad(sp[:, i, a].sum(), xpd, create_graph=True)
            div_p[:, i] = div_p[:, i] + gx[:, i, a]
    Lp1 = (sp * rp.double()).sum()
    grad_p_out = torch.autograd.grad(Lp1, params, retain_graph=True)
    grad_p_div = torch.autograd.grad(Lp1 + (div_p * qp.double()).sum(), params)

    names = c_names(m)
    with h5py.File(args.out, "w") as f:
        f.attrs["torch_version"] = str(torch.__version__).encode()
        for k in ("K", "d_e", "emb_hidden", "n_layers", "n_heads", "ff_hidden", "dec_hidden"):
            f.attrs[k] = getattr(CFG, k)
        f.attrs["B"] = B
        for k, v in (("dx", dx), ("g", g), ("mask", mask), ("r", r), ("q", q)):
            f[k] = v.numpy().astype(np.float32)
        f["out"] = s.detach().numpy()
        f["div_x"] = div_x.detach().numpy()
        f["div_g"] = div_g.detach().numpy()
        for k, v in (("p_x", xp), ("p_r", rp), ("p_q", qp)):
            f[k] = v.numpy().astype(np.float32)
        f["p_out"] = sp.detach().numpy()
        f["p_div_x"] = div_p.detach().numpy()
        for (n, p32), go, gdv, gpo, gpd in zip(m32.named_parameters(), grad_out, grad_div,
                                               grad_p_out, grad_p_div):
            f["params/" + names[n]] = p32.detach().numpy()
            f["grad_out/" + names[n]] = go.numpy()
            f["grad_div/" + names[n]] = gdv.numpy()
            f["p_grad_out/" + names[n]] = gpo.numpy()
            f["p_grad_div/" + names[n]] = gpd.numpy()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
