#!/usr/bin/python3
"""Summary of bench/epr/run.sh: pools the rounds and prints markdown tables of particles/s and
C/torch ratios (> 1: C faster).

usage: summary.py LOGDIR ROUNDS MODELS PARTS N N_BIG B

LOGDIR holds, per round r, part p (epr|train), model m and side:
  r<r>_<p>_<m>_c<np>.log   sgm_hpc ... -log_view on np ranks (and .json: its metrics.json)
  r<r>_<p>_<m>_t<nt>.log   torch_worker.py on nt threads
  r<r>_probe_<m>.log       allreduce_probe on 2 ranks (train only)
"""
import json
import os
import re
import statistics
import sys


def log_events(path):
    """PETSc -log_view event lines: name -> (count, max time, max/min ratio)."""
    ev = {}
    for line in open(path, errors="replace"):
        f = line.split()
        if len(f) > 5 and f[0].startswith("Sgm"):
            try:
                ev[f[0]] = (int(f[1]), float(f[3]), float(f[4]))
            except ValueError:
                pass
    return ev


def torch_times(path):
    for line in open(path):
        if line.startswith("TORCH"):
            kv = dict(p.split("=", 1) for p in line.split()[2:] if "=" in p)
            return int(kv["B"]), [float(t) for t in kv["times"].split(",")]
    return None, []


def kernel_times(path):
    """bench_nn's RESULT div_model line: (B, times)."""
    for line in open(path):
        if line.startswith("RESULT div_model"):
            kv = dict(p.split("=", 1) for p in line.split()[2:] if "=" in p)
            return int(kv["B"]), [float(t) for t in kv["times"].split(",")]
    return None, []


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_rate(xs):
    """median (best) of a list of rates."""
    if not xs:
        return "n/a"
    return f"{med(xs):.4g} ({max(xs):.4g})"


def main():
    log, rounds, models, parts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
    n_epr, n_big, batch = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    R = range(1, rounds + 1)
    fn = lambda *a: os.path.join(log, "r%d_%s_%s_%s.log" % a)  # noqa: E731

    if "epr" in parts:
        print("\n## EPR evaluation: score + exact divergence per particle, particles/s, "
              "median (best) over rounds")
        print("C: the epr stage (SgmEpr event, slowest rank, frames 1..F, --frames); torch: torch_worker.py div "
              "(forward + 2 backward) in chunks of the same size as [model] max_batch\n")
        print("| model | N | C 1 rank | torch 1 thread | ratio 1 | C 2 ranks | torch 2 threads |"
              " ratio 2 (vs torch 2 thr) | C 2 ranks / C 1 rank | per-round ratios 1; 2 |"
              " C kernel alone, 1 thread | kernel / torch 1 | stage 1 rank / kernel |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for m in models:
            c = {1: [], 2: []}
            t = {1: [], 2: []}
            rr = {1: [], 2: []}
            for r in R:
                for k in (1, 2):
                    pc, pt = fn(r, "epr", m, f"c{k}"), fn(r, "epr", m, f"t{k}")
                    if not (os.path.exists(pc) and os.path.exists(pt)):
                        continue
                    ev = log_events(pc)
                    txt = open(pc).read()
                    mm = re.search(r"(\d+) frames of (\d+) particles", txt)
                    if "SgmEpr" not in ev or not mm:
                        continue
                    cr = int(mm.group(1)) * int(mm.group(2)) / ev["SgmEpr"][1]
                    B, ts = torch_times(pt)
                    if not ts:
                        continue
                    tr = B / med(ts)
                    c[k].append(cr)
                    t[k].append(tr)
                    rr[k].append(cr / tr)
            kr = []
            for r in R:
                pk = fn(r, "epr", m, "k1")
                if os.path.exists(pk):
                    B, ts = kernel_times(pk)
                    if ts:
                        kr.append(B / med(ts))
            n = n_big if m == "big" else n_epr
            r1 = med(c[1]) / med(t[1]) if c[1] else float("nan")
            r2 = med(c[2]) / med(t[2]) if c[2] else float("nan")
            sc = med(c[2]) / med(c[1]) if c[1] and c[2] else float("nan")
            pr = "; ".join(", ".join(f"{x:.2f}" for x in rr[k]) for k in (1, 2))
            print(f"| {m} | {n} | {fmt_rate(c[1])} | {fmt_rate(t[1])} | **{r1:.2f}** |"
                  f" {fmt_rate(c[2])} | {fmt_rate(t[2])} | **{r2:.2f}** | {sc:.2f} | {pr} |"
                  + (f" {fmt_rate(kr)} | {med(kr) / med(t[1]):.2f} | {med(c[1]) / med(kr):.2f} |"
                     if kr and t[1] and c[1] else " n/a | | |"))

    if "train" in parts:
        print(f"\n## Training: particles/s (global batch B = {batch} centres per step), "
              "median (best) over rounds")
        print("C: the train stage's particles/s (metrics.json: all steps, frame loading and "
              "windows included); torch: torch_worker.py train\n")
        print("| model | C 1 rank | torch 1 thread | ratio 1 | C 2 ranks | torch 2 threads |"
              " ratio 2 | C 2 ranks / C 1 rank | per-round ratios 1; 2 |")
        print("|---|---|---|---|---|---|---|---|---|")
        split = []
        for m in models:
            c = {1: [], 2: []}
            t = {1: [], 2: []}
            rr = {1: [], 2: []}
            for r in R:
                for k in (1, 2):
                    pc, pt = fn(r, "train", m, f"c{k}"), fn(r, "train", m, f"t{k}")
                    pj = pc[:-4] + ".json"
                    if not (os.path.exists(pj) and os.path.exists(pt)):
                        continue
                    js = json.load(open(pj))
                    cr = js["train"]["particles_per_s"]
                    B, ts = torch_times(pt)
                    if not ts:
                        continue
                    tr = B / med(ts)
                    c[k].append(cr)
                    t[k].append(tr)
                    rr[k].append(cr / tr)
                    ev = log_events(pc)
                    probe = []
                    pp = os.path.join(log, f"r{r}_probe_{m}.log")
                    if k == 2 and os.path.exists(pp):
                        for line in open(pp):
                            if line.startswith("PROBE"):
                                probe = [float(x) for x in line.split("times=")[1].split(",")]
                    split.append((m, r, k, js["train"], ev, probe))
            r1 = med(c[1]) / med(t[1]) if c[1] else float("nan")
            r2 = med(c[2]) / med(t[2]) if c[2] else float("nan")
            sc = med(c[2]) / med(c[1]) if c[1] and c[2] else float("nan")
            pr = "; ".join(", ".join(f"{x:.2f}" for x in rr[k]) for k in (1, 2))
            print(f"| {m} | {fmt_rate(c[1])} | {fmt_rate(t[1])} | **{r1:.2f}** |"
                  f" {fmt_rate(c[2])} | {fmt_rate(t[2])} | **{r2:.2f}** | {sc:.2f} | {pr} |")

        print("\n## Training step split (-log_view, slowest rank; max/min ratio across ranks in "
              "brackets), per round")
        print("allreduce: the SgmTrainAllreduce event (includes the wait for the slower rank) and "
              "the stage's own allreduce fraction; probe: MPI_Allreduce of the same float count "
              "after a barrier (communication only), as a fraction of the mean step\n")
        print("| model | round | ranks | steps | step s | loss (fwd+bwd) s | allreduce s | optim s |"
              " frame s | windows s | allreduce % (stage) | probe ms (median) | probe % of step |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for m, r, k, tj, ev, probe in split:
            steps = ev.get("SgmTrainLoss", (0, 0, 1))[0]
            if not steps:
                continue
            step = batch / tj["particles_per_s"] if tj["particles_per_s"] else float("nan")
            e = lambda name: ev.get(name, (0, 0.0, 1.0))  # noqa: E731
            pm = 1e3 * med(probe) if probe else float("nan")
            pf = 100 * med(probe) / step if probe else float("nan")
            print(f"| {m} | {r} | {k} | {steps} | {step:.3g} |"
                  f" {e('SgmTrainLoss')[1] / steps:.3g} [{e('SgmTrainLoss')[2]:.2f}] |"
                  f" {e('SgmTrainAllreduce')[1] / steps:.3g} [{e('SgmTrainAllreduce')[2]:.2f}] |"
                  f" {e('SgmTrainOptim')[1] / steps:.3g} | {e('SgmTrainFrame')[1] / steps:.3g} |"
                  f" {e('SgmTrainWindows')[1] / steps:.3g} |"
                  f" {100 * tj['allreduce_fraction']:.2f} |"
                  f" {'' if k == 1 else f'{pm:.3g}'} | {'' if k == 1 else f'{pf:.2f}'} |")


if __name__ == "__main__":
    main()
