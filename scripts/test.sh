#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole default test suite:
#   1. the release build (-O2 -g, warnings as errors) and every test except the `long` label;
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build of the unit and MPI tests.
# Long physics checks: `ctest --test-dir build -L long` (results in docs/validation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/install-deps.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSGM_WERROR=ON -DSGM_TESTS=
cmake --build build -j"$jobs"
(cd build && ctest -LE long --output-on-failure -j"$jobs" --timeout 900)

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSGM_SANITIZE=ON -DSGM_WERROR=ON -DSGM_TESTS=
cmake --build build-asan -j"$jobs"
(cd build-asan && ctest -L 'unit|mpi' -LE long --output-on-failure -j"$jobs" --timeout 1800)
