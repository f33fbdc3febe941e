"""Activation: the process-wide runtime that composes the redirect core, a backend and a compat profile.

``config`` parses ``HPU_SHIM_*`` and ``install()`` arguments; ``runtime`` owns the life cycle
(``install``/``uninstall``/``status``), backend resolution, environment export for spawned children
and the late-install retrofit. See ``docs/architecture.md``.
"""
