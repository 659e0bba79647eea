"""The examples run and print what they demonstrate."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_basics_example(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLES / "basics.py")], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "matches NumPy: yes" in res.stdout
    assert any((tmp_path / "out").iterdir())


def test_backprop_example(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLES / "backprop.py")], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "(1 - sigmoid(x))*sigmoid(x)" in res.stdout
    assert "gradient check against finite differences" in res.stdout
