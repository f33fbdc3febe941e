"""hpu-shim bootstrap: ``PYTHONPATH=<hpu-shim>/sitecustomize`` with ``HPU_SHIM=1``.

Keep this file tiny and safe; the logic lives in ``hpu_shim``:

* ``HPU_SHIM_FAKE_HPU=1`` installs the emulated HPU first (tests, spawned children of tests);
* ``HPU_SHIM=1`` imports and installs ``hpu_shim``; anything else imports nothing beyond ``os``;
* it never raises: a failure is logged and the shim stays idle;
* it always chains to the next ``sitecustomize`` on ``sys.path`` (a user's or the distribution's),
  which Python would otherwise never import because this one shadows it.
"""

import os

loaded = False  # True once the shim was installed by this bootstrap (tests read it)
chained = None  # the next sitecustomize module, if there was one


def _report_failure(what, exc_info=True):
    try:
        import logging

        logging.basicConfig()  # no-op when the application configured logging already
        logging.getLogger("hpu_shim").error("hpu_shim bootstrap: %s; the shim stays idle", what, exc_info=exc_info)
    except Exception:
        pass


def _import_hpu_shim():
    """Import hpu_shim without its import-time install (this bootstrap decides that)."""
    previous = os.environ.get("HPU_SHIM")
    os.environ["HPU_SHIM"] = "0"
    try:
        try:
            import hpu_shim
        except ImportError as exc:
            if exc.name != "hpu_shim":
                raise
            import sys  # checkout layout: <repo>/sitecustomize/ next to <repo>/hpu_shim/

            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            if not os.path.isfile(os.path.join(root, "hpu_shim", "__init__.py")):
                raise
            sys.path.append(root)
            import hpu_shim
    finally:
        if previous is None:
            del os.environ["HPU_SHIM"]
        else:
            os.environ["HPU_SHIM"] = previous
    return hpu_shim


def _bootstrap():
    global loaded
    if os.environ.get("HPU_SHIM_FAKE_HPU", "").strip() == "1":
        try:
            _import_hpu_shim()
            from hpu_shim.testing import install_emulator

            install_emulator()
        except Exception:
            _report_failure("HPU_SHIM_FAKE_HPU=1 but the emulated HPU could not be installed")
    switch = os.environ.get("HPU_SHIM", "").strip()
    if switch not in ("", "0", "1"):
        _report_failure(f"HPU_SHIM={os.environ['HPU_SHIM']!r} is not valid; accepted values: 0 or 1", exc_info=False)
        return
    if switch != "1":
        return
    try:
        _import_hpu_shim().install()
        loaded = True
    except Exception as exc:
        _report_failure(str(exc) or type(exc).__name__, exc_info=not str(exc))


def _chain():
    """Import the next sitecustomize on sys.path (ddtrace's pattern), then put ours back."""
    global chained
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.get("sitecustomize")
    removed = [i for i, p in enumerate(sys.path) if os.path.abspath(p or os.curdir) == here]
    for i in reversed(removed):
        del sys.path[i]
    try:
        del sys.modules["sitecustomize"]
        import sitecustomize as nxt  # noqa: F401  (the next one, if any)

        chained = nxt
    except ImportError as exc:
        if exc.name != "sitecustomize":
            _report_failure(f"the next sitecustomize failed to import: {exc}")
    except Exception:
        _report_failure("the next sitecustomize raised")
    finally:
        for i in removed:
            sys.path.insert(min(i, len(sys.path)), here)
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_bootstrap()
_chain()
