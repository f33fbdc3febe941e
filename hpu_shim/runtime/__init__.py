"""The runtime: the process-wide shim that composes the redirect core, a backend and a compat profile.

``config`` parses ``HPU_SHIM_*`` and ``install()`` arguments; ``runtime`` holds ``Runtime``, a thin
composition, and the public ``install``/``uninstall``/``status``/``report``/``flush_report``;
``activation`` resolves the backend and builds a ``Session`` whole; ``environment`` exports the
configuration to children and is the one environment sanitiser; ``retrofit`` handles in-scope
modules imported before ``install()``; ``lifecycle`` writes the audit report at exit, on SIGTERM and
across fork. See ``docs/architecture.md``.
"""
