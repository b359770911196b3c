"""What every postprocess/ script does on the command line when its input is not there.

A run directory or file that cannot be opened or read, or a dataset or key missing from it,
ends the script with one line `SCRIPT: error: ...` on stderr and exit status 2 (as sgm_hpc
reports input errors), instead of a traceback. Other exceptions keep their traceback: they are
bugs.
"""
import os
import sys


def run(main, *args):
    """Calls main(*args) and returns its value, turning OSError and KeyError into exit 2."""
    prog = os.path.basename(sys.argv[0])
    try:
        return main(*args)
    except (OSError, KeyError) as e:
        what = e.args[0] if isinstance(e, KeyError) and e.args else e
        kind = "missing " if isinstance(e, KeyError) else ""
        print(f"{prog}: error: {kind}{what}", file=sys.stderr)
        sys.exit(2)
