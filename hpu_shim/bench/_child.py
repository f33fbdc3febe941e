"""``python -m hpu_shim.bench._child MODULE JSON``: one ``measure(**JSON)`` in this fresh process.

Prints ``RESULT {json}`` and leaves with ``os._exit`` (LMCache leaves non-daemon threads behind).
"""

from __future__ import annotations

import importlib
import json
import os
import sys


def main() -> None:
    module, kwargs = sys.argv[1], json.loads(sys.argv[2])
    result = importlib.import_module(f"hpu_shim.bench.{module}").measure(**kwargs)
    print("RESULT " + json.dumps(result, default=str), flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
