"""hpu-shim bootstrap: ``PYTHONPATH=<hpu-shim>/sitecustomize`` with ``HPU_SHIM=1``.

Keep this file tiny and safe; the logic lives in ``hpu_shim``:

* ``HPU_SHIM_FAKE_HPU=1`` installs the emulated HPU first (tests, spawned children of tests);
* ``HPU_SHIM=1`` imports and installs ``hpu_shim`` *lazily*: torch is imported (and the backend
  resolved) on the first in-scope import, never at interpreter start; ``HPU_SHIM`` unset or ``0``
  imports nothing beyond ``os``;
* it never raises: a bad value is logged (variable, value, accepted values) and the shim stays idle;
  failures are logged through the ``hpu_shim`` logger's own stderr handler, never
  ``logging.basicConfig()``, so the application's later ``basicConfig`` still takes effect;
* it always chains to the next ``sitecustomize`` on ``sys.path`` (a user's or the distribution's),
  which Python would otherwise never import because this one shadows it.
"""

import os

loaded = False  # True once the shim was installed by this bootstrap (tests read it)
chained = None  # the next sitecustomize module, if there was one


def _report_failure(what, consequence, exc_info=True):
    """Log through the hpu_shim logger with a stderr handler of its own (root logging stays untouched)."""
    try:
        import logging

        logger = logging.getLogger("hpu_shim")
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("hpu_shim[%(process)d] %(levelname)s: %(message)s"))
            logger.addHandler(handler)
            logger.propagate = False
        logger.error("hpu_shim bootstrap: %s; %s", what, consequence, exc_info=exc_info)
    except Exception:
        pass


_IDLE = "the shim stays idle"


def _switch(var):
    """The 0/1 value of ``var`` ('' when unset), or None after logging a bad value."""
    value = os.environ.get(var, "").strip()
    if value in ("", "0", "1"):
        return value
    shown = value if len(value) <= 60 else value[:57] + "..."
    _report_failure(f"{var}={shown!r} is not valid; accepted values: 0 or 1", _IDLE, exc_info=False)
    return None


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
    fake, switch = _switch("HPU_SHIM_FAKE_HPU"), _switch("HPU_SHIM")
    if fake is None or switch is None:
        return
    if fake == "1":
        try:
            _import_hpu_shim()
            from hpu_shim.testing import install_emulator

            install_emulator()
        except Exception:
            _report_failure("HPU_SHIM_FAKE_HPU=1 but the emulated HPU could not be installed", _IDLE)
            return
    if switch != "1":
        return
    try:
        _import_hpu_shim().runtime.runtime.bootstrap_install()
        loaded = True
    except Exception as exc:
        _report_failure(str(exc) or type(exc).__name__, _IDLE, exc_info=not str(exc))


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
            _report_failure(f"the next sitecustomize on sys.path failed to import: {exc}", _unaffected())
    except Exception:
        _report_failure("the next sitecustomize on sys.path raised", _unaffected())
    finally:
        for i in removed:
            sys.path.insert(min(i, len(sys.path)), here)
        if ours is not None:
            sys.modules["sitecustomize"] = ours


def _unaffected():
    return "hpu_shim is unaffected (installed)" if loaded else "hpu_shim is unaffected (not installed: HPU_SHIM is not 1)"


_bootstrap()
_chain()
