from hpu_shim.core.scope import Scope


def test_exact_or_dot_prefix():
    s = Scope(["lmcache", "other"])
    assert "lmcache" in s and "lmcache.v1.cache_engine" in s and "other.x" in s
    for name in ("lmcache_vllm", "lmcachex", "xlmcache", "torch", "", None, 3):
        assert name not in s


def test_cache_is_consistent():
    s = Scope(["a"])
    assert ("a.b" in s, "a.b" in s, "ab" in s, "ab" in s) == (True, True, False, False)
