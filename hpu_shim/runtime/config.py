"""Configuration: the ``HPU_SHIM_*`` environment variables and explicit ``install()`` arguments.

Every variable is parsed by one declarative spec so that a bad value always produces the same
shape of message: the variable, the value, and the accepted values. Explicit arguments to
``install()`` win over the environment.
"""

from __future__ import annotations

import dataclasses
import keyword
import logging
import os
from typing import Callable, Iterable, Mapping

__all__ = ["ShimConfigError", "Config", "load", "ENV_VARS"]

BACKENDS = ("auto", "hpu", "cpu")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1",)
_FALSE = ("0",)


class ShimConfigError(ValueError):
    """A bad ``HPU_SHIM_*`` value or ``install()`` argument; the message says what to do."""


def _bool(var: str, raw: str) -> bool:
    value = raw.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ShimConfigError(f"{var}={raw!r} is not valid; accepted values: 0 or 1")


def _scope(var: str, raw: str | Iterable[str]) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    bad = [n for n in names if not n.isidentifier() or keyword.iskeyword(n)]
    if not names or bad:
        shown = raw if isinstance(raw, str) else ",".join(items)
        raise ShimConfigError(
            f"{var}={shown!r} is not valid; accepted values: a comma-separated list of top-level "
            f"package names (Python identifiers, no dots), e.g. 'lmcache' or 'lmcache,my_pkg'"
            + (f"; bad entries: {bad}" if bad else "")
        )
    return names


def _choice(choices: tuple[str, ...], fold: Callable[[str], str]) -> Callable[[str, str], str]:
    def parse(var: str, raw: str) -> str:
        value = fold(raw.strip())
        if value not in choices:
            raise ShimConfigError(f"{var}={raw!r} is not valid; accepted values: {', '.join(choices)}")
        return value

    return parse


def _seconds(var: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):  # also rejects NaN
        raise ShimConfigError(f"{var}={raw!r} is not valid; accepted values: a number of seconds > 0, e.g. 5 or 0.5")
    return value


def _path(var: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ShimConfigError(f"{var}={raw!r} is not valid; accepted values: a writable file path")
    parent = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(parent):
        raise ShimConfigError(
            f"{var}={raw!r} is not valid: directory {parent!r} does not exist; "
            f"accepted values: a file path in an existing directory"
        )
    return value


@dataclasses.dataclass(frozen=True)
class _Spec:
    var: str
    field: str
    parse: Callable
    default: object
    accepted: str


#: One row per environment variable: the single place that names, parses and documents them.
ENV_VARS: tuple[_Spec, ...] = (
    _Spec("HPU_SHIM", "enabled", _bool, None, "0 or 1"),
    _Spec("HPU_SHIM_SCOPE", "scope", _scope, ("lmcache",), "comma list of top-level package names"),
    _Spec("HPU_SHIM_BACKEND", "backend", _choice(BACKENDS, str.lower), "auto", "auto, hpu, cpu"),
    _Spec("HPU_SHIM_STRICT", "strict", _bool, False, "0 or 1"),
    _Spec("HPU_SHIM_REPORT", "report_path", _path, None, "a file path (JSON lines appended at exit)"),
    _Spec("HPU_SHIM_LOG_LEVEL", "log_level", _choice(LOG_LEVELS, str.upper), None, ", ".join(LOG_LEVELS)),
    # 1: keep LMCache's own HPU connector on >= 0.4.3 (the CONNECTORS profiles read ``native_connector``).
    _Spec("HPU_SHIM_NATIVE_CONNECTOR", "native_connector", _bool, False, "0 or 1"),
    # Bound, in seconds, on LMCache remote ``contains``/``get`` (the storage fix-ups read ``remote_timeout``).
    _Spec("HPU_SHIM_REMOTE_TIMEOUT", "remote_timeout", _seconds, 5.0, "seconds > 0"),
)


@dataclasses.dataclass(frozen=True)
class Config:
    enabled: bool | None = None  # None: HPU_SHIM unset
    scope: tuple[str, ...] = ("lmcache",)
    backend: str = "auto"
    strict: bool = False
    report_path: str | None = None
    log_level: str | None = None
    native_connector: bool = False
    remote_timeout: float = 5.0

    def env_exports(self) -> dict[str, str]:
        """What children need to reproduce this configuration (spawned vLLM workers)."""
        out = {
            "HPU_SHIM": "1",
            "HPU_SHIM_SCOPE": ",".join(self.scope),
            "HPU_SHIM_BACKEND": self.backend,
            "HPU_SHIM_STRICT": "1" if self.strict else "0",
        }
        if self.report_path:
            out["HPU_SHIM_REPORT"] = os.path.abspath(self.report_path)
        if self.log_level:
            out["HPU_SHIM_LOG_LEVEL"] = self.log_level
        out["HPU_SHIM_NATIVE_CONNECTOR"] = "1" if self.native_connector else "0"
        out["HPU_SHIM_REMOTE_TIMEOUT"] = repr(self.remote_timeout)
        return out


def load(
    environ: Mapping[str, str] | None = None,
    *,
    scope: str | Iterable[str] | None = None,
    backend: str | None = None,
    strict: bool | None = None,
) -> Config:
    """Parse the environment, then apply explicit arguments (which win). Raises ShimConfigError."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for spec in ENV_VARS:
        raw = environ.get(spec.var)
        # An empty variable means unset, as shells and Kubernetes manifests often leave them.
        values[spec.field] = spec.default if raw is None or not raw.strip() else spec.parse(spec.var, raw)
    if scope is not None:
        values["scope"] = _scope("install(scope=...)", scope)
    if backend is not None:
        values["backend"] = _choice(BACKENDS, str.lower)("install(backend=...)", str(backend))
    if strict is not None:
        if not isinstance(strict, bool):
            raise ShimConfigError(f"install(strict={strict!r}) is not valid; accepted values: True or False")
        values["strict"] = strict
    return Config(**values)


def apply_log_level(config: Config) -> None:
    """HPU_SHIM_LOG_LEVEL sets the level and, if nobody configured the logger, a stderr handler."""
    if config.log_level:
        logger = logging.getLogger("hpu_shim")
        logger.setLevel(config.log_level)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(f"hpu_shim[{os.getpid()}] %(levelname)s: %(message)s"))
            logger.addHandler(handler)
