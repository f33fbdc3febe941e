"""``python -m hpu_shim doctor``: what the shim would do here, and what could go wrong."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys

from ..runtime import config as _config

__all__ = ["diagnose", "render"]


def _find(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def diagnose() -> list[tuple[str, str, str]]:
    """Rows of (check, value, level) with level in ok/info/warn/error."""
    rows: list[tuple[str, str, str]] = []
    add = lambda check, value, level="ok": rows.append((check, str(value), level))  # noqa: E731
    add("python", f"{platform.python_version()} ({sys.executable})")
    if os.environ.get("HPU_SHIM_FAKE_HPU", "").strip() == "1":  # as sitecustomize would
        try:
            from ..testing import install_emulator

            install_emulator()
        except Exception as exc:
            add("emulated HPU", f"HPU_SHIM_FAKE_HPU=1 but it could not be installed: {exc}", "error")
    try:
        import torch

        add("torch", torch.__version__)
    except Exception as exc:  # torch is the user's; report, don't crash
        torch = None
        add("torch", f"not importable: {exc}", "error")
    hf = sys.modules.get("habana_frameworks")
    add("habana_frameworks", "emulated stub (hpu_shim.testing)" if getattr(hf, "__hpu_shim_emulated__", False)
        else "installed" if _find("habana_frameworks") else "not installed", "info")
    emulated = False
    try:
        from .. import testing

        emulated = testing.is_installed()
    except Exception:
        pass
    hpu = getattr(torch, "hpu", None) if torch is not None else None
    if hpu is None:
        add("torch.hpu", "absent", "info")
    else:
        try:
            add("torch.hpu", f"present, is_available()={hpu.is_available()}, device_count()={hpu.device_count()}")
        except Exception as exc:
            add("torch.hpu", f"present but broken: {exc}", "error")
    add("emulated HPU", "installed (hpu_shim.testing)" if emulated else
        "not installed (set HPU_SHIM_FAKE_HPU=1 to use it)", "info")
    lazy = os.environ.get("PT_HPU_LAZY_MODE")
    add("execution mode", ("lazy" if lazy != "0" else "eager") + f" (PT_HPU_LAZY_MODE={lazy})" if lazy is not None
        else "eager: PT_HPU_LAZY_MODE unset (current Habana default 0; SW 1.17 defaulted to lazy)", "info")
    add("lmcache", _version("lmcache") or "not installed", "info")
    try:
        from ..runtime.runtime import original_environ

        config = _config.load(original_environ())
        add("HPU_SHIM", {None: "unset (import hpu_shim installs)", True: "1", False: "0 (disabled)"}[config.enabled])
        add("scope", ",".join(config.scope))
        from ..backends import probe_hpu

        ok, why = probe_hpu() if torch is not None else (False, "torch missing")
        effective = {"auto": "hpu" if ok else "idle (no HPU: pass-through)", "hpu": "hpu" if ok else f"ERROR: {why}",
                     "cpu": "cpu"}[config.backend]
        add("backend", f"{config.backend} -> {effective}", "error" if effective.startswith("ERROR") else "ok")
        add("strict", int(config.strict))
        add("report", config.report_path or "off")
    except _config.ShimConfigError as exc:
        add("configuration", str(exc), "error")
    seed = os.environ.get("PYTHONHASHSEED")
    add("PYTHONHASHSEED", seed if seed is not None else
        "unset: LMCache keys use hash(); set PYTHONHASHSEED=0 so vLLM's processes agree", "ok" if seed else "warn")
    if os.environ.get("PT_HPU_GPU_MIGRATION") == "1":
        add("GPU Migration Toolkit", "PT_HPU_GPU_MIGRATION=1: patches torch.cuda for the WHOLE process and makes "
            "torch.cuda.is_available() True everywhere; it conflicts with hpu_shim. Unset it.", "warn")
    else:
        add("GPU Migration Toolkit", "off (PT_HPU_GPU_MIGRATION not 1)")
    from .. import status

    st = status()
    add("shim in this process", f"{st['state']} (backend={st['backend']}, shimmed modules={len(st['shimmed_modules'])})",
        "info")
    # --- CORE (begin): what the shim cannot redirect, from disk and from this process's status() ---
    try:
        from .. import compat
        from ..core.finder import scan

        scope = _config.load(original_environ()).scope
        profile = compat.select(scope)
        stand_ins = set(profile.module_overrides) if profile is not None else set()
        for line in dict.fromkeys([*scan(scope, exclude=stand_ins), *st["not_redirected"]]):
            add("cannot be redirected", line, "warn")
    except _config.ShimConfigError:
        pass  # reported above
    # --- CORE (end) ---
    return rows


def render(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    marks = {"ok": "  ", "info": "  ", "warn": "! ", "error": "x "}
    return "\n".join(f"{marks[level]}{check.ljust(width)}  {value}" for check, value, level in rows)
