"""Configuration: the ``HPU_SHIM_*`` environment variables and explicit ``install()`` arguments.

Every variable is parsed by one declarative spec so that a bad value always produces the same
shape of message: the variable, the value (shortened when long), and the accepted values. Explicit
arguments to ``install()`` win over the environment. A scope may not contain torch, hpu_shim,
habana_frameworks or a standard-library module (every ``import torch`` would then break), and
``HPU_SHIM_REPORT`` is made absolute when parsed, i.e. at ``install()``.
"""

from __future__ import annotations

import dataclasses
import keyword
import logging
import os
import sys
from typing import Callable, Iterable, Mapping

__all__ = ["ShimConfigError", "Config", "load", "ENV_VARS"]

BACKENDS = ("auto", "hpu", "cpu")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1",)
_FALSE = ("0",)


class ShimConfigError(ValueError):
    """A bad ``HPU_SHIM_*`` value or ``install()`` argument; the message says what to do."""


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, shortened: a message never echoes a huge value in full."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}...' ({len(str(value))} characters)"


def _bool(var: str, raw: str) -> bool:
    value = raw.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ShimConfigError(f"{var}={shown(raw)} is not valid; accepted values: 0 or 1")


#: Packages the redirect must never cover: the shim itself, torch and Habana's bridge (redirecting
#: torch.cuda inside torch breaks every ``import torch``); the standard library is added below.
_NEVER_IN_SCOPE = frozenset({"torch", "hpu_shim", "habana_frameworks", "sitecustomize"})


def _scope(var: str, raw: str | Iterable[str]) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else [str(item) for item in raw]
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    bad = [n for n in names if not n.isidentifier() or keyword.iskeyword(n)]
    forbidden = [n for n in names if n in _NEVER_IN_SCOPE or n in getattr(sys, "stdlib_module_names", ())]
    if not names or bad or forbidden:
        text = shown(raw if isinstance(raw, str) else ",".join(items))
        raise ShimConfigError(
            f"{var}={text} is not valid; accepted values: a comma-separated list of top-level "
            f"package names (Python identifiers, no dots), e.g. 'lmcache' or 'lmcache,my_pkg'"
            + (f"; bad entries: {shown(bad)}" if bad else "")
            + (f"; never in scope: {shown(forbidden)} (torch, hpu_shim, habana_frameworks and the standard "
               f"library must keep the real torch.cuda)" if forbidden else "")
        )
    return names


def _choice(choices: tuple[str, ...], fold: Callable[[str], str]) -> Callable[[str, str], str]:
    def parse(var: str, raw: str) -> str:
        value = fold(raw.strip())
        if value not in choices:
            raise ShimConfigError(f"{var}={shown(raw)} is not valid; accepted values: {', '.join(choices)}")
        return value

    return parse


def _seconds(var: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):  # also rejects NaN
        raise ShimConfigError(f"{var}={shown(raw)} is not valid; accepted values: a number of seconds > 0, e.g. 5 or 0.5")
    return value


def _path(var: str, raw: str) -> str:
    """An absolute path: resolved now (at install), so a later chdir cannot move the report."""
    value = raw.strip()
    if not value:
        raise ShimConfigError(f"{var}={shown(raw)} is not valid; accepted values: a writable file path")
    value = os.path.abspath(value)
    parent = os.path.dirname(value)
    if not os.path.isdir(parent):
        raise ShimConfigError(
            f"{var}={shown(raw)} is not valid: directory {shown(parent)} does not exist; "
            f"accepted values: a file path in an existing directory"
        )
    if os.path.isdir(value):
        raise ShimConfigError(f"{var}={shown(raw)} is not valid: it is a directory; accepted values: a file path")
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
    # Tests only: the bootstrap installs the emulated HPU first (hpu_shim.testing).
    _Spec("HPU_SHIM_FAKE_HPU", "fake_hpu", _bool, False, "0 or 1"),
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
    fake_hpu: bool = False

    def env_exports(self) -> dict[str, str]:
        """What children need to reproduce this configuration (spawned vLLM workers)."""
        out = {
            "HPU_SHIM": "1",
            "HPU_SHIM_SCOPE": ",".join(self.scope),
            "HPU_SHIM_BACKEND": self.backend,
            "HPU_SHIM_STRICT": "1" if self.strict else "0",
        }
        if self.report_path:
            out["HPU_SHIM_REPORT"] = self.report_path
        if self.log_level:
            out["HPU_SHIM_LOG_LEVEL"] = self.log_level
        out["HPU_SHIM_NATIVE_CONNECTOR"] = "1" if self.native_connector else "0"
        out["HPU_SHIM_REMOTE_TIMEOUT"] = repr(self.remote_timeout)
        if self.fake_hpu:
            out["HPU_SHIM_FAKE_HPU"] = "1"
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
            raise ShimConfigError(f"install(strict={shown(strict)}) is not valid; accepted values: True or False")
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
