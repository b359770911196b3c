#!/usr/bin/env bash
# Prints a Python interpreter that has numpy, h5py and matplotlib (Debian's /usr/bin/python3 is
# tried first: the first python3 on PATH may be a separate installation without them).
for py in /usr/bin/python3 $(type -ap python3); do
  if "$py" -c 'import numpy, h5py, matplotlib' 2>/dev/null; then echo "$py"; exit 0; fi
done
echo "no python3 with numpy, h5py and matplotlib: run scripts/install-deps.sh" >&2
exit 1
