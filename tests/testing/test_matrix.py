"""``make matrix`` (hpu_shim.testing.matrix): one table per execution mode, honest columns and exit code.

The full run over 33 releases is ``make matrix``; here the table, the per-mode split and the failure
of a missing release are checked without starting LMCache.
"""

from hpu_shim.testing import matrix

GOOD = {"version": "0.5.6", "mode": "lazy", "bit_exact": True, "untouched_elsewhere": True, "retrieved": 768,
        "connector": "lmcache.v1.gpu_connector.hpu_connector.VLLMPagedMemHPUConnectorV2",
        "store_counts": {"mark_step_calls": 2, "synchronize_calls": 1, "bounce_buffer_bytes": 100, "cpu_fallbacks": 0},
        "retrieve_counts": {"mark_step_calls": 33, "synchronize_calls": 1, "bounce_buffer_bytes": 20,
                            "cpu_fallbacks": 1}}


def test_columns_say_what_they_count():
    table = matrix.render([GOOD], "lazy")
    lines = table.splitlines()
    assert lines[0] == "mode: lazy (PT_HPU_LAZY_MODE=1)"
    assert "store mark_step/synchronize" in lines[1] and "retrieve mark_step/synchronize" in lines[1]
    assert "ms/sync" not in table
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:7] == ["0.5.6", "PASS", "768", "2/1", "33/1", "120", "1"]
    assert row[7] == "VLLMPagedMemHPUConnectorV2 (native)"
    assert lines[-1] == "1 passed, 0 failed"


def test_a_mismatch_or_an_error_is_a_fail():
    assert matrix._row(dict(GOOD, bit_exact=False))[1] == "FAIL"
    assert matrix._row(dict(GOOD, untouched_elsewhere=False))[1] == "FAIL"
    assert matrix._row({"version": "0.4.2", "mode": "eager", "error": "boom"})[1] == "FAIL"


def test_missing_release_fails_in_every_mode(tmp_path, capsys):
    rc = matrix.main(["--envs", str(tmp_path), "--mode", "both", "0.5.6"])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.count("not installed in") == 2 and out.count("0 passed, 1 failed") == 2
    assert "mode: eager (PT_HPU_LAZY_MODE=0)" in out and "mode: lazy (PT_HPU_LAZY_MODE=1)" in out
    assert out.index("mode: eager") < out.index("mode: lazy")
