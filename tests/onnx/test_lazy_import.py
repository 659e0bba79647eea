"""`import graphc` never imports onnx; gc.onnx without onnx names the extra to install."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import sys
{block}
import graphc as gc
assert sys.modules.get("onnx") is None, "import graphc imported onnx"
assert hasattr(gc, "onnx") and hasattr(gc.onnx, "UnsupportedError")
{then}
"""


def _run(block: str, then: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _SCRIPT.format(block=block, then=then)],
                          capture_output=True, text=True, timeout=120)


def test_import_graphc_does_not_import_onnx():
    result = _run("", "")
    assert result.returncode == 0, result.stderr


def test_gc_onnx_without_onnx_names_the_extra():
    then = """
try:
    gc.onnx.load("model.onnx")
except ImportError as exc:
    print(exc)
else:
    raise SystemExit("no ImportError")
"""
    result = _run('sys.modules["onnx"] = None  # as if onnx were not installed', then)
    assert result.returncode == 0, result.stderr
    assert "pip install 'graphc[onnx]'" in result.stdout
