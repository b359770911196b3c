#!/bin/bash
# C network kernels against the PyTorch anchor, 1 thread each, in one invocation.
#
# Runs, in this order (so the C numbers bracket the torch ones in time; the host drifts by up to
# 2x over minutes, and only ratios measured in the same run mean anything):
#   1. bench_nn (C): cblas_sgemm at the model's shapes, the optimiser step, the forward pass
#      composed from the layers, and the model object (forward, train step, divergence) when
#      the local transformer is built into the library;
#   2. the PyTorch anchor ../shared/anchors/torch/bench.py --threads 1 (it sets both torch's and
#      OpenBLAS's thread counts; torch.set_num_threads alone does not limit OpenBLAS), plus a
#      torch.optim.Adam step on the same model's parameters;
#   3. bench_nn again;
# then prints every C/torch ratio (particles/s or GFLOP/s; > 1 means C is faster).
#
# usage: bench/nn/run.sh [--config big|small] [--batch B] [--reps R] [--quick] [--build DIR]
#                        [--torch-plan subset|full]
#   --quick       tiny torch plan (B=64, 1 rep) and 2 C reps: a smoke test, not a measurement
#   --torch-plan  big config only: subset (default: forward and train at B=256, ~2 min) or full
#                 (adds the divergence and B=1024, ~13 min)
# Torch and C are compared at the same B when torch measured it (bench.py uses B=256 and 1024).
# Needs: a build with bench_nn (cmake --build BUILD --target bench_nn), Debian's /usr/bin/python3
# with python3-torch and python3-scipy (the anchor's window builder).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONFIG=big
BATCH=256
REPS=3
QUICK=0
PLAN=subset
BUILD=$ROOT/build
while [ $# -gt 0 ]; do
  case $1 in
    --config) CONFIG=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --quick) QUICK=1; REPS=2; shift ;;
    --torch-plan) PLAN=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    *) echo "usage: $0 [--config big|small] [--batch B] [--reps R] [--quick] [--build DIR] [--torch-plan subset|full]" >&2; exit 2 ;;
  esac
done
case $CONFIG in big|small) ;; *) echo "--config must be big or small" >&2; exit 2 ;; esac
BIN=$BUILD/tests/bench_nn
[ -x "$BIN" ] || { echo "no $BIN: cmake --build $BUILD --target bench_nn" >&2; exit 2; }
ANCHOR=${SGM_TORCH_ANCHOR:-$ROOT/../shared/anchors/torch}
[ -f "$ANCHOR/bench.py" ] || { echo "no PyTorch anchor at $ANCHOR (set SGM_TORCH_ANCHOR)" >&2; exit 2; }
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
LOG=$(mktemp -d "${TMPDIR:-/tmp}/bench_nn.XXXXXX")
echo "bench/nn/run.sh: config $CONFIG, B=$BATCH, logs in $LOG"
start=$(date +%s)

echo "== C, before torch"
"$BIN" --config "$CONFIG" --batch "$BATCH" --reps "$REPS" | tee "$LOG/c1.log"

echo "== PyTorch anchor (1 thread)"
TORCH_ARGS=(--config "$CONFIG" --threads 1)
[ "$CONFIG" = big ] && TORCH_ARGS+=(--plan "$PLAN")
[ "$QUICK" = 1 ] && TORCH_ARGS+=(--quick)
"$PY" "$ANCHOR/bench.py" "${TORCH_ARGS[@]}" | tee "$LOG/torch.log"
# Adam step over the same model's parameters (bench.py times it only inside the train step).
ANCHOR="$ANCHOR" CONFIG="$CONFIG" REPS=$((REPS * 4)) "$PY" - <<'EOF' | tee -a "$LOG/torch.log"
import ctypes, os, statistics, sys, time
import torch
sys.path.insert(0, os.environ["ANCHOR"])
from model import BIG, SMALL, LocalParticleTransformer, n_params
torch.set_num_threads(1)
ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(1)
torch.manual_seed(0)
m = LocalParticleTransformer(BIG if os.environ["CONFIG"] == "big" else SMALL)
opt = torch.optim.Adam(m.parameters(), lr=1e-4)
for p in m.parameters():
    p.grad = torch.randn_like(p)
opt.step()
ts = []
for _ in range(int(os.environ["REPS"])):
    t0 = time.perf_counter()
    opt.step()
    ts.append(time.perf_counter() - t0)
print(f"TORCH optim_adam nparams={n_params(m)} median_s={statistics.median(ts):.6f} best_s={min(ts):.6f}")
EOF

echo "== C, after torch"
"$BIN" --config "$CONFIG" --batch "$BATCH" --reps "$REPS" | tee "$LOG/c2.log"

echo "== ratios (C / torch; > 1: C faster), config $CONFIG"
LOG="$LOG" BATCH="$BATCH" "$PY" - <<'EOF'
import os, re
log = os.environ["LOG"]
B = int(os.environ["BATCH"])


def c_results(path):
    out = {}
    for line in open(path):
        if line.startswith("RESULT "):
            parts = line.split()
            out[parts[1]] = {k: v for k, v in (p.split("=", 1) for p in parts[2:])}
    return out


c1, c2 = c_results(f"{log}/c1.log"), c_results(f"{log}/c2.log")
torch_rows, probes, torch_adam = {}, [], None
pat = re.compile(r"^\S+\s+\S+\s+(\w+)\s+B=\s*(\d+)\s+t=1 median\s+([\d.]+)s \[([\d.]+)-([\d.]+)\]\s+([\d.]+) particles/s\s+([\d.]+) GFLOP/s\s+\(probe (\d+)/(\d+)\)")
for line in open(f"{log}/torch.log"):
    m = pat.match(line)
    if m:
        name, b = m.group(1), int(m.group(2))
        torch_rows[(name, b)] = dict(median=float(m.group(3)), best=float(m.group(4)),
                                     pps=float(m.group(6)), gflops=float(m.group(7)))
        probes += [float(m.group(8)), float(m.group(9))]
    if line.startswith("TORCH optim_adam"):
        torch_adam = {k: v for k, v in (p.split("=", 1) for p in line.split()[2:])}


def both(key, field):
    vals = [float(r[key][field]) for r in (c1, c2) if key in r and field in r[key]]
    return vals


def show(label, cvals, tval, unit, cbest=None, tbest=None):
    if not cvals or tval is None:
        print(f"  {label:46s} n/a")
        return
    cs = " / ".join(f"{v:.4g}" for v in cvals)
    rs = " / ".join(f"{v / tval:.3f}" for v in cvals)
    line = f"  {label:46s} C {cs} {unit}  torch {tval:.4g}  ratio {rs}"
    if cbest and tbest:
        line += f"  | best: C {max(cbest):.4g} torch {tbest:.4g} ratio {max(cbest) / tbest:.3f}"
    print(line)


def model_row(label, ckey, trow):
    if trow is None:
        return
    show(label, both(ckey, "particles_per_s"), trow["pps"], "particles/s",
         both(ckey, "particles_per_s_best"), B_t / trow["best"])


tb = [k[1] for k in torch_rows]
Bt = B if any(k[1] == B for k in torch_rows) else (min(tb) if tb else B)
if Bt != B:
    print(f"  (torch measured at B={Bt}, C at B={B}; compare per particle)")
print("  (C values: before / after the torch run)")
if probes:
    show("sgemm 4096x256@256x768 (torch probe)", both("sgemm_probe", "gflops"),
         sorted(probes)[len(probes) // 2], "GFLOP/s")
for key in ("sgemm_qkv_fwd", "sgemm_proj_fwd", "sgemm_qkv_bwd_input", "sgemm_qkv_bwd_weight"):
    v = both(key, "gflops")
    if v:
        print(f"  {key:46s} C {' / '.join(f'{x:.4g}' for x in v)} GFLOP/s")
fwd = torch_rows.get(("fwd", Bt))
train = torch_rows.get(("train", Bt))
div = torch_rows.get(("div_bwd", Bt))
B_t = Bt
model_row("forward, layers composed in bench_nn", "fwd_layers", fwd)
model_row("forward, model (centre-only last block)", "fwd_model", fwd)
model_row("forward, model (full last block, as torch)", "fwd_model_full", fwd)
model_row("train step (noise+fwd+DSM loss+bwd+Adam)", "train_model", train)
model_row("divergence d s/d g_centre (C: 2 JVPs)", "div_model", div)
if fwd and both("sgemm_qkv_fwd", "gflops"):
    g = both("sgemm_qkv_fwd", "gflops")[0]
    print(f"  {'torch forward GFLOP/s / C sgemm(qkv) rate':46s} {fwd['gflops']:.4g} / {g:.4g} = {fwd['gflops'] / g:.3f}")
for r in (c1, c2):
    br = r.get("fwd_layers_breakdown")
    if br:
        tot = sum(float(v) for v in br.values())
        print(f"  {'C composed forward, time share':46s} " + ", ".join(
            f"{k[:-2]} {float(v) / tot:.0%}" for k, v in br.items()))
if torch_adam:
    ta = float(torch_adam["median_s"])
    v = both("optim_adam", "median_s")
    if v:
        print(f"  {'Adam step, ' + torch_adam['nparams'] + ' params':46s} C {' / '.join(f'{x * 1e3:.3g}' for x in v)} ms  torch {ta * 1e3:.3g} ms  "
              f"ratio {' / '.join(f'{ta / x:.3f}' for x in v)}")
if not any(k in c1 for k in ("fwd_model", "train_model")):
    print("  model object: not built into this library yet (no sgm_nn_transformer_*), only layers/sgemm/optimiser compared")
EOF
echo "total wall $(( $(date +%s) - start )) s"
