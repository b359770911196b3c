#!/usr/bin/env bash
# Configuring against a serial HDF5 must fail with a message that names the package to install.
# A fake HDF5 include directory whose H5pubconf.h lacks H5_HAVE_PARALLEL stands in for Debian's
# serial libhdf5-dev (which is not installed next to the parallel one).
#   e2e_configure_serial_hdf5.sh SOURCE_DIR
set -uo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/serial"
printf '#define H5_HAVE_FILTER_DEFLATE 1\n' >"$tmp/serial/H5pubconf.h"
touch "$tmp/serial/hdf5.h"
cmake -S "$src" -B "$tmp/build" -DHDF5_PAR_INCLUDE="$tmp/serial" >"$tmp/log" 2>&1
rc=$?
# CMake wraps long messages: match fragments that stay on one line.
if [[ $rc -ne 0 ]] && grep -q "serial is serial: sgm_hpc writes collectively" "$tmp/log" &&
   grep -q "needs parallel HDF5" "$tmp/log" && grep -q "'libhdf5-openmpi-dev'" "$tmp/log"; then
  echo "1 passed, 0 failed"
  exit 0
fi
echo "configure exit status $rc; log:"; cat "$tmp/log"
echo "0 passed, 1 failed"
exit 1
