"""``python -m hpu_shim.bench._child MODULE[:FUNCTION] JSON``: one ``FUNCTION(**JSON)`` (default ``measure``)
in this fresh process.

Hands its result back through ``hpu_shim.testing.results`` (the file the parent names, never
stdout) and leaves with ``os._exit`` (LMCache leaves non-daemon threads behind). A measurement that
raises is reported as ``{"error": ...}`` so the parent can turn it into a FAIL row that says why.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback


def main() -> None:
    from ..testing.results import emit

    module, _, function = sys.argv[1].partition(":")
    kwargs = json.loads(sys.argv[2])
    try:
        result = getattr(importlib.import_module(f"hpu_shim.bench.{module}"), function or "measure")(**kwargs)
    except BaseException as exc:  # noqa: BLE001  (reported, not hidden: the row says why)
        result = {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-3000:]}
    emit(result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
