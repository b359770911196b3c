#!/usr/bin/env bash
# Installs exactly the Debian 12 packages sgm_hpc needs to build, test and post-process.
# Idempotent: packages already installed are left alone and `apt-get update` runs only when
# something is missing. Runs as root, or through sudo when not root.
#
#   scripts/install-deps.sh            # build + test + postprocess dependencies
#   scripts/install-deps.sh --bench    # also the reference codes used by bench/ (lammps, torch)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  openmpi-bin libopenmpi-dev          # MPI (C)
  petsc-dev slepc-dev                 # PETSc 3.18 + SLEPc (pkg-config: PETSc, slepc)
  libhdf5-openmpi-dev                 # parallel HDF5 (openmpi flavour)
  libfftw3-dev libfftw3-mpi-dev       # FFTW3 double + MPI
  libopenblas-dev                     # CBLAS
  check                               # unit-test framework
  clang libclang-rt-14-dev            # libFuzzer + sanitizer runtimes for the fuzz target
  clang-format
  python3 python3-numpy python3-h5py python3-matplotlib  # postprocess/ only
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(lammps python3-torch)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
