#!/usr/bin/python3
"""Summary of bench/nn/run.sh: pools the per-repetition times of every round and prints the
C/torch ratios (> 1: C faster).

usage: summary.py LOGDIR CONFIG B ROUNDS
LOGDIR holds c<r>.log (bench_nn) and t<r>.log (torch_worker.py) for r = 1..ROUNDS.
"""
import os
import statistics
import sys

sys.path.insert(0, os.environ.get("SGM_TORCH_ANCHOR", ""))
import model as anchor  # noqa: E402


def parse(path, tag):
    out = {}
    for line in open(path):
        parts = line.split()
        if not parts or parts[0] != tag:
            continue
        kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        if "times" not in kv:
            continue
        kv["times"] = [float(x) for x in kv["times"].split(",")]
        out[parts[1]] = kv
    return out


def main():
    log, config, B, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    C = [parse(f"{log}/c{r}.log", "RESULT") for r in range(1, rounds + 1)]
    T = [parse(f"{log}/t{r}.log", "TORCH") for r in range(1, rounds + 1)]
    cfg = anchor.BIG if config == "big" else anchor.SMALL
    fl = anchor.flops_forward(cfg)
    F = fl["total_matmul"]
    # executed by the C model: the last block for the centre token only, and without its keys and
    # values (src/nn/transformer.c, centre_attention_forward): minus the K, V projection of the T
    # tokens, plus u_h = W_k,h^T q_h and W_v,h z_h (2 d x d) and the scores and value sums over
    # the d-wide block input instead of the dh-wide heads
    nt, d, h = cfg.T, cfg.d_e, cfg.n_heads
    F_exec = (F - fl["last_layer_centre_only_saving"] - nt * 2 * d * 2 * d + 2 * 2 * d * d
              + 4 * nt * d * (h - 1))

    def pooled(rows, key):
        return [t for r in rows if key in r for t in r[key]["times"]]

    def fmt(ts, per):
        """per: work per call (particles, or 1 for ms)."""
        med, best = statistics.median(ts), min(ts)
        return med, best, max(ts)

    print(f"\n== summary: config {config}, B = {B}, {rounds} rounds, 1 thread; "
          f"particles/s (median over all reps, best, [slowest-fastest])")
    print(f"  {'measurement':44s} {'C median (best) [range]':>34s} {'torch median (best) [range]':>34s}"
          f"  ratio med / best / per-round")
    rows = [("forward, centre-only last block (C) vs torch", "fwd_model", "fwd"),
            ("forward, full last block (same work)", "fwd_model_full", "fwd"),
            ("train step (noise, fwd, DSM, bwd, Adam)", "train_model", "train"),
            ("score + divergence d s/d g_c", "div_model", "div")]
    for label, ck, tk in rows:
        ct, tt = pooled(C, ck), pooled(T, tk)
        if not ct or not tt:
            print(f"  {label:44s} n/a")
            continue
        cm, cb, cw = fmt(ct, B)
        tm, tb, tw = fmt(tt, B)
        per_round = [statistics.median(t[tk]["times"]) / statistics.median(c[ck]["times"])
                     for c, t in zip(C, T) if ck in c and tk in t]
        print(f"  {label:44s} {B / cm:10.1f} ({B / cb:8.1f}) [{B / cw:.1f}-{B / cb:.1f}]"
              f" {B / tm:10.1f} ({B / tb:8.1f}) [{B / tw:.1f}-{B / tb:.1f}]"
              f"  {tm / cm:5.2f} / {tb / cb:5.2f} / {min(per_round):.2f}-{max(per_round):.2f}")
    ca, ta = pooled(C, "optim_adam"), pooled(T, "adam")
    if ca and ta:
        print(f"  {'Adam step, ms (' + C[0]['optim_adam']['nparams'] + ' params)':44s}"
              f" {1e3 * statistics.median(ca):10.4g} ({1e3 * min(ca):8.4g})"
              f" {'':>19s}{1e3 * statistics.median(ta):10.4g} ({1e3 * min(ta):8.4g})"
              f" {'':>19s}{statistics.median(ta) / statistics.median(ca):5.2f} / {min(ta) / min(ca):5.2f}")
    # fraction of the sgemm rate in the training step
    shapes = ["sgemm_qkv_fwd", "sgemm_proj_fwd", "sgemm_qkv_bwd_input", "sgemm_qkv_bwd_weight"]
    rates = []
    for r in C:
        for s in shapes:
            if s in r:
                rates.append(float(r[s]["flops"]) / statistics.median(r[s]["times"]) / 1e9)
    tr = pooled(C, "train_model")
    if rates and tr:
        sg = statistics.mean(rates)
        med, best = statistics.median(tr), min(tr)
        print(f"  sgemm at the model's 4 shapes: mean {sg:.1f} GFLOP/s (range {min(rates):.1f}-{max(rates):.1f})")
        print(f"  train step, executed FLOPs 3 x {F_exec / 1e6:.1f} MFLOP/centre: "
              f"{3 * F_exec * B / med / 1e9:.1f} GFLOP/s median = {3 * F_exec * B / med / 1e9 / sg:.0%} of sgemm "
              f"(best {3 * F_exec * B / best / 1e9:.1f} = {3 * F_exec * B / best / 1e9 / sg:.0%}); "
              f"nominal 3 x {F / 1e6:.1f} MFLOP: {3 * F * B / med / 1e9 / sg:.0%}")


if __name__ == "__main__":
    main()
