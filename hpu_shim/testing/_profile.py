"""Release profiles of the emulated Gaudi stack and the bridge's environment flags, read like the bridge.

Where behaviour differs between Gaudi PyTorch bridge releases, the emulator follows one *profile*
(``HPU_SHIM_FAKE_HPU_PROFILE`` or ``install_emulator(profile=...)``; default ``latest``, the newest
documented behaviour).  Each row of ``PROFILES`` cites its source in docs/gaudi-semantics.md
("Release profiles").  The flags the bridge reads at start-up are parsed here exactly as it parses
them (docs/gaudi-semantics.md "Environment flags"): numbers with ``strtoul`` rules, booleans as
``1/0/true/false``; a value the bridge would reject is an ``EmulatorConfigError`` naming the
variable, the value and what is accepted.  Everything is resolved once, at install, into
``Settings`` (the bridge reads these flags once per process too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PROFILE_ENV = "HPU_SHIM_FAKE_HPU_PROFILE"


class EmulatorConfigError(RuntimeError):
    """An environment flag or profile name the real bridge (or the emulator) cannot accept."""


@dataclass(frozen=True)
class Profile:
    """What differs between releases; ``doc`` names the docs/gaudi-semantics.md section."""

    name: str
    default_lazy_mode: int   # PT_HPU_LAZY_MODE when unset
    pinned_allocator: bool   # a real pinned host allocator (bridge >= 1.19 on PyTorch >= 2.5)
    doc: str


#: One row per release behaviour the emulator can take (docs/gaudi-semantics.md "Release profiles").
PROFILES: Mapping[str, Profile] = {
    "1.18.0": Profile("1.18.0", default_lazy_mode=1, pinned_allocator=False,
                      doc="bridge v1.18.0: lazy by default, PyTorch 2.4, no HPU pinned allocator"),
    "1.19.0": Profile("1.19.0", default_lazy_mode=1, pinned_allocator=True,
                      doc="bridge v1.19.0: lazy by default (env_flags.yaml), pinned allocator (HPUHooksInterface)"),
    "latest": Profile("latest", default_lazy_mode=0, pinned_allocator=True,
                      doc="newest docs: eager is the default (Runtime_Flags, vllm-gaudi); 1.19 behaviour otherwise"),
}
DEFAULT_PROFILE = "latest"


@dataclass(frozen=True)
class Settings:
    """The emulated process's configuration, fixed at install."""

    profile: Profile
    lazy: bool
    int64_native: bool             # False: int64 held as int32 on the device (lazy default)
    place_on_cpu: frozenset[str] | None  # None: every op may fall back; else the ops allowed to
    range_check: bool              # PT_HPU_ENABLE_VALID_DATA_RANGE_CHECK: overflowing downcasts raise


_settings: Settings | None = None


def current() -> Settings:
    """The installed settings (before install: the defaults of the default profile, environment ignored)."""
    if _settings is None:
        return resolve({}, DEFAULT_PROFILE)
    return _settings


def configure(env: Mapping[str, str], profile: str | None = None) -> Settings:
    """Resolve and keep the process settings once; later calls return the first answer."""
    global _settings
    if _settings is None:
        _settings = resolve(env, profile)
    return _settings


# -- the bridge's parsers (backend/synapse_helpers/env_flags.cpp) -------------------------------
def parse_unsigned(name: str, raw: str) -> int:
    """``strtoul(value, 0)`` with the bridge's tweak: letters a-f without ``0x`` mean hex."""
    text = raw.lower()
    if not text.startswith("0x") and any("a" <= ch <= "f" for ch in text):
        text = "0x" + text
    body = text.lstrip()
    try:
        if body != body.rstrip():
            raise ValueError(body)
        if body.startswith(("0x", "+0x")):
            value = int(body.replace("0x", "", 1), 16)
        elif len(body) > 1 and body.startswith("0"):
            value = int(body, 8)
        else:
            value = int(body, 10)
    except ValueError:
        raise EmulatorConfigError(
            f"{name}={raw!r} is not a number the Gaudi bridge can parse (it aborts on it); "
            "use a decimal integer such as 0 or 1") from None
    if value < 0:
        raise EmulatorConfigError(f"{name}={raw!r}: the bridge reads it as unsigned; use 0 or 1")
    return value


def parse_bool(name: str, raw: str) -> bool:
    """``1``/``true`` or ``0``/``false``, any case; anything else aborts the bridge."""
    low = raw.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise EmulatorConfigError(
        f"{name}={raw!r} is not a boolean the Gaudi bridge accepts (it aborts on it); use 1, 0, true or false")


def _lazy_mode(env: Mapping[str, str], profile: Profile) -> bool:
    """Python picks the plugin with ``getenv(..) != "0"``, C++ parses the number; both must agree."""
    name = "PT_HPU_LAZY_MODE"
    raw = env.get(name)
    python_lazy = (raw if raw is not None else str(profile.default_lazy_mode)) != "0"
    cpp_value = parse_unsigned(name, raw) if raw else profile.default_lazy_mode
    if cpp_value in (2, 3):
        raise EmulatorConfigError(
            f"{name}={raw!r} is one of the bridge's lazy debug modes (2: flush after every op, 3: random "
            "flushes), which the emulated HPU does not model; use 0 (eager) or 1 (lazy)")
    if cpp_value not in (0, 1) or python_lazy != (cpp_value == 1):
        raise EmulatorConfigError(
            f"{name}={raw!r}: the bridge's Python side reads {'lazy' if python_lazy else 'eager'} but its "
            f"C++ side reads {cpp_value}; use exactly 0 (eager) or 1 (lazy)")
    return cpp_value == 1


def _place_on_cpu(raw: str) -> frozenset[str] | None:
    """Empty: every op may fall back; a ``none`` token: none may; else only the listed ops may."""
    if not raw:
        return None
    tokens = raw.split(",")
    if "none" in tokens:
        return frozenset()
    return frozenset(tokens)


def resolve(env: Mapping[str, str], profile: str | None = None) -> Settings:
    """Settings for ``env`` (e.g. ``os.environ``) under the named profile (default: env, then latest)."""
    name = profile or env.get(PROFILE_ENV) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise EmulatorConfigError(
            f"unknown emulator profile {name!r} (from {'install_emulator(profile=...)' if profile else PROFILE_ENV}); "
            f"choose one of {', '.join(PROFILES)}")
    prof = PROFILES[name]
    lazy = _lazy_mode(env, prof)
    raw64 = env.get("PT_ENABLE_INT64_SUPPORT", "")
    # lazy: the flag (default off); eager: on for Gaudi2+ unless the flag says otherwise (common/*/utils.cpp)
    int64_native = parse_bool("PT_ENABLE_INT64_SUPPORT", raw64) if raw64 else not lazy
    raw_check = env.get("PT_HPU_ENABLE_VALID_DATA_RANGE_CHECK", "")
    range_check = parse_bool("PT_HPU_ENABLE_VALID_DATA_RANGE_CHECK", raw_check) if raw_check else True
    return Settings(profile=prof, lazy=lazy, int64_native=int64_native,
                    place_on_cpu=_place_on_cpu(env.get("PT_HPU_PLACE_ON_CPU", "")), range_check=range_check)


def from_environ(profile: str | None = None) -> Settings:
    return configure(os.environ, profile)
