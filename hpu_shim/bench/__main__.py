"""``python -m hpu_shim.bench [args]``: the same as ``python -m hpu_shim bench [args]``."""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
