#!/usr/bin/env bash
# Installs what is needed, builds sgm_hpc, and runs the quickstart demo (input/quickstart.toml)
# on 2 MPI ranks. Outputs go to out/quickstart/ (listed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)" --target sgm_hpc
mpiflags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpiflags+=(--allow-run-as-root)
mpiexec "${mpiflags[@]}" -n 2 build/sgm_hpc --set run.overwrite=true input/quickstart.toml
echo
echo "quickstart outputs (out/quickstart/):"
ls -l out/quickstart/
