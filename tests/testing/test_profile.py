"""Release profiles and the bridge's flag parsing (hpu_shim.testing._profile).

Facts (docs/gaudi-semantics.md "Environment flags", "Release profiles"): the bridge picks the plugin
with ``os.getenv("PT_HPU_LAZY_MODE", default) != "0"`` and parses the same flag in C++ with ``strtoul``
(letters a-f mean hex, trailing junk aborts); booleans are 1/0/true/false; PT_ENABLE_INT64_SUPPORT
is off in lazy mode and on in eager mode unless set; PT_HPU_PLACE_ON_CPU="" allows every fallback,
a "none" token allows none, else only the listed ops.
"""

import pytest

from hpu_shim.testing import _profile
from hpu_shim.testing._profile import EmulatorConfigError, resolve


@pytest.mark.parametrize("profile, lazy", [("latest", False), ("1.19.0", True), ("1.18.0", True)])
def test_default_mode_per_profile(profile, lazy):
    assert resolve({}, profile).lazy is lazy


def test_default_profile_is_newest_documented_behaviour():
    settings = resolve({})
    assert settings.profile.name == "latest" == _profile.DEFAULT_PROFILE and not settings.lazy
    assert resolve({_profile.PROFILE_ENV: "1.19.0"}).profile.name == "1.19.0"
    assert resolve({_profile.PROFILE_ENV: "1.19.0"}, "latest").profile.name == "latest"  # argument wins


@pytest.mark.parametrize("raw, lazy", [("0", False), ("1", True), ("0x1", True), ("+1", True)])
def test_lazy_mode_values_the_bridge_accepts(raw, lazy):
    for profile in ("latest", "1.19.0"):
        assert resolve({"PT_HPU_LAZY_MODE": raw}, profile).lazy is lazy


@pytest.mark.parametrize("raw, why", [
    ("2", "debug modes"), ("3", "debug modes"),
    ("false", "not a number"), ("true", "not a number"), ("1 ", "not a number"), ("08", "not a number"),
    ("00", "C\\+\\+ side reads 0"),  # Python: "00" != "0" -> lazy plugin; C++: 0 -> eager
    ("1e", "C\\+\\+ side reads 30"),  # a-f without 0x: hex
    ("-1", "unsigned"),
])
def test_lazy_mode_values_the_bridge_rejects(raw, why):
    with pytest.raises(EmulatorConfigError, match=why) as err:
        resolve({"PT_HPU_LAZY_MODE": raw}, "1.19.0")
    assert "PT_HPU_LAZY_MODE" in str(err.value) and repr(raw) in str(err.value)


def test_empty_lazy_mode_is_read_like_the_bridge():
    # 1.19: Python "" != "0" -> lazy, C++ empty -> default 1: consistent.
    assert resolve({"PT_HPU_LAZY_MODE": ""}, "1.19.0").lazy
    # latest (eager default): Python would still load the lazy plugin while C++ reads 0.
    with pytest.raises(EmulatorConfigError, match="use exactly 0"):
        resolve({"PT_HPU_LAZY_MODE": ""}, "latest")


@pytest.mark.parametrize("env, native", [
    ({"PT_HPU_LAZY_MODE": "1"}, False),
    ({"PT_HPU_LAZY_MODE": "0"}, True),
    ({"PT_HPU_LAZY_MODE": "1", "PT_ENABLE_INT64_SUPPORT": "1"}, True),
    ({"PT_HPU_LAZY_MODE": "1", "PT_ENABLE_INT64_SUPPORT": "TRUE"}, True),
    ({"PT_HPU_LAZY_MODE": "0", "PT_ENABLE_INT64_SUPPORT": "false"}, False),
    ({"PT_HPU_LAZY_MODE": "0", "PT_ENABLE_INT64_SUPPORT": ""}, True),  # empty = not defined
])
def test_int64_support_flag(env, native):
    assert resolve(env).int64_native is native


def test_bad_boolean_names_the_flag():
    with pytest.raises(EmulatorConfigError, match="PT_ENABLE_INT64_SUPPORT='yes'.*1, 0, true or false"):
        resolve({"PT_ENABLE_INT64_SUPPORT": "yes"})


@pytest.mark.parametrize("raw, allowed", [
    ("", None), ("none", frozenset()), ("aten::foo,none", frozenset()),
    ("aten::index_select,aten::nonzero", frozenset({"aten::index_select", "aten::nonzero"})),
])
def test_place_on_cpu(raw, allowed):
    assert resolve({"PT_HPU_PLACE_ON_CPU": raw}).place_on_cpu == allowed


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(EmulatorConfigError, match="unknown emulator profile '1.5'.*latest"):
        resolve({}, "1.5")
    with pytest.raises(EmulatorConfigError, match=_profile.PROFILE_ENV):
        resolve({_profile.PROFILE_ENV: "nope"})


def test_profiles_differ_only_where_releases_differ():
    assert not _profile.PROFILES["1.18.0"].pinned_allocator  # no HPUHooksInterface before 1.19
    assert _profile.PROFILES["1.19.0"].pinned_allocator and _profile.PROFILES["latest"].pinned_allocator
    assert all(p.doc for p in _profile.PROFILES.values())
