"""hpu_shim.audit and the CLI: per-site records, JSON-lines reports merged across processes."""

import re
import subprocess
import sys

from _helpers import REPO, clean_env, run_py

from hpu_shim.audit import merge, read_jsonl, render_table


def test_each_site_once_with_count(shim, pkgs):
    (pkgs / "lmcache" / "loop.py").write_text(
        "import torch\ndef go(n):\n    for _ in range(n):\n        torch.cuda.current_device()\n"
        "    torch.cuda.current_device()\n")
    shim.install(backend="cpu")
    import lmcache.loop

    lmcache.loop.go(5)
    lines = [r.line() for r in shim.report() if r.site.startswith("lmcache/loop.py")]
    assert lines == [
        "[match] torch.cuda.current_device() -> torch.cpu.current_device(...) @ lmcache/loop.py:4 (x5)",
        "[match] torch.cuda.current_device() -> torch.cpu.current_device(...) @ lmcache/loop.py:5 (x1)",
    ]


def test_report_file_merges_processes(pkgs, tmp_path):
    report = tmp_path / "audit.jsonl"
    code = "import hpu_shim, lmcache; lmcache.current_device(); lmcache.current_device()"
    for _ in range(2):
        run_py(code, path=[pkgs], env={"HPU_SHIM_BACKEND": "cpu", "HPU_SHIM_REPORT": str(report)})
    rows = read_jsonl(str(report))
    assert len({r["pid"] for r in rows}) == 2
    merged = merge(rows)
    site = [m for m in merged if m["api"] == "torch.cuda.current_device"][0]
    assert site["count"] == 4 and len(site["pids"]) == 2
    env = clean_env(PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "hpu_shim", "report", str(report)], env=env,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "torch.cuda.current_device()" in out and "lmcache/__init__.py:" in out and "2 processes" in out
    assert render_table([]) == "no redirected call sites recorded"


def _report_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "hpu_shim", "report", *map(str, args)],
                          env=clean_env(PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300, **kwargs)


def test_report_cli_errors(tmp_path):
    missing = _report_cli(tmp_path / "none.jsonl")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    directory = _report_cli(tmp_path)
    assert directory.returncode == 2 and "is a directory" in directory.stderr and "Traceback" not in directory.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    out = _report_cli(bad)
    assert out.returncode == 1 and "bad.jsonl:1" in out.stderr and "no hpu_shim records" in out.stderr
    assert "Traceback" not in out.stderr


def test_report_cli_skips_and_counts_foreign_lines(pkgs, tmp_path):
    report = tmp_path / "audit.jsonl"
    run_py("import hpu_shim, lmcache; lmcache.current_device()", path=[pkgs],
           env={"HPU_SHIM_BACKEND": "cpu", "HPU_SHIM_REPORT": str(report)})
    with report.open("a") as fh:
        fh.write('{"torn": \n[1, 2]\n{"event": "someone else\'s log"}\n{"category": "match", "count": "x"}\n')
    out = _report_cli(report)
    assert out.returncode == 0, out.stderr
    good = len(report.read_text().splitlines()) - 4
    assert "skipped 4 line(s)" in out.stderr and f"audit.jsonl:{good + 1}: not JSON" in out.stderr
    assert f"audit.jsonl:{good + 2}: not an hpu_shim record" in out.stderr and "Traceback" not in out.stderr
    assert "torch.cuda.current_device()" in out.stdout and "1 processes" in out.stdout


def test_doctor(tmp_path):
    env = clean_env(PYTHONPATH=str(REPO), HPU_SHIM_FAKE_HPU="1", PT_HPU_GPU_MIGRATION="1", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-m", "hpu_shim", "doctor"], env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for needle in ("python", "torch  ", "2.13.0", "emulated stub", "is_available()=True", "execution mode",
                   "lmcache", "scope", "backend                auto -> hpu", "PYTHONHASHSEED         0",
                   "conflicts with hpu_shim"):
        assert needle in out, needle
    bad = subprocess.run([sys.executable, "-m", "hpu_shim", "doctor"], capture_output=True, text=True, timeout=300,
                         env=clean_env(PYTHONPATH=str(REPO), HPU_SHIM="0", HPU_SHIM_BACKEND="gpu"))
    assert bad.returncode == 1 and "HPU_SHIM_BACKEND='gpu'" in bad.stdout


def test_demo_runs():
    env = clean_env(PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "hpu_shim", "demo"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bit-exact      : True" in proc.stdout and "demo OK" in proc.stdout
    # the merged audit table: the argument-less synchronize() row, its HPU meaning, its site and count
    sync_row = (r"^\s*modified\s+torch\.cuda\.synchronize\(\)\s+habana_frameworks\.torch\.core\.mark_step\(\); "
                r"torch\.hpu\.synchronize\(\)\s+kvdemo/__init__\.py:\d+\s+1\s+1\s*$")
    assert re.search(sync_row, proc.stdout, re.M), proc.stdout
    assert re.search(r"^\s*\d+ call sites, \d+ calls, 1 processes$", proc.stdout, re.M), proc.stdout
