#!/usr/bin/env bash
# Installs what is needed, builds sgm_hpc, and runs the quickstart demo (input/quickstart.toml)
# on 2 MPI ranks: simulate a small MIPS system, train the local transformer score, compute the
# entropy production, draw the figures. Outputs go to out/quickstart/ (listed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)" --target sgm_hpc
mpiflags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpiflags+=(--allow-run-as-root)
mpiexec "${mpiflags[@]}" -n 2 build/sgm_hpc --set run.overwrite=true input/quickstart.toml
python=$(scripts/find-python.sh)
"$python" postprocess/plot_snapshot.py out/quickstart >/dev/null
"$python" postprocess/plot_epr.py out/quickstart >/dev/null
echo
echo "quickstart outputs:"
echo "  out/quickstart/trajectory.h5    H5MD trajectory (positions, orientations g, ids, box)"
echo "  out/quickstart/trajectory.xdmf  open in ParaView as a time series of point clouds"
echo "  out/quickstart/checkpoint.h5    simulate checkpoint (--restart out/quickstart/checkpoint.h5)"
echo "  out/quickstart/model.h5         the trained score network (weights, architecture, optimiser)"
echo "  out/quickstart/train_log.h5     loss, learning rate and gradient norm per optimiser step"
echo "  out/quickstart/epr.h5           per-particle entropy production of every frame"
echo "  out/quickstart/epr.xdmf         open in ParaView: particles coloured by any EPR quantity"
echo "  out/quickstart/fields.h5        spatial maps of the EPR (grid cell means over frames)"
echo "  out/quickstart/fields.xdmf      open in ParaView as an image"
echo "  out/quickstart/metrics.json     headline numbers of each stage"
echo "  out/quickstart/run.toml         the resolved configuration"
echo "  out/quickstart/snapshot.png     last frame coloured by local packing fraction + histogram"
echo "  out/quickstart/epr_particles.png  last frame, particles coloured by their EPR"
echo "  out/quickstart/epr_map.png      the spatial EPR map"
echo "  out/quickstart/loss.png         the training loss curve"
