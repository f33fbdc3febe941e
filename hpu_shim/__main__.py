"""``python -m hpu_shim``: see ``hpu_shim.cli``."""

import sys

from .cli import main

sys.exit(main())
