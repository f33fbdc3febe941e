"""Packaging: the wheel needs nothing (torch is the user's: on Gaudi it comes from Habana) and
ships the container bootstrap inside the package."""

import subprocess
import sys
import zipfile

from _helpers import REPO


def test_wheel_contents_and_requirements(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("hpu_shim-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
        bootstrap = zf.read("hpu_shim/_sitecustomize/sitecustomize.py").decode()
    requires = sorted(line.split(":", 1)[1].strip() for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert requires == []
    assert bootstrap == (REPO / "sitecustomize" / "sitecustomize.py").read_text()
    assert "hpu_shim/testing/__init__.py" in names and "hpu_shim/compat/c_ops.py" in names
