"""examples/onnx_finetune.py in quick mode: a PyTorch CNN imported exactly (same accuracy),
fine-tuned by graphc (better accuracy), exported back and run by onnxruntime with graphc's
results (the example asserts the 1e-5 agreement itself; here the printed numbers are read)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "onnx_finetune.py"
NUM = r"(\d+\.\d+(?:e[-+]?\d+)?)"


def _number(out: str, pattern: str) -> float:
    found = re.findall(pattern, out)
    assert len(found) == 1, f"expected one line matching {pattern!r}:\n{out}"
    return float(found[0])


def test_onnx_finetune_example_quick(tmp_path):
    env = dict(os.environ, GRAPHC_QUICK="1")
    res = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    torch_acc = _number(out, rf"PyTorch, pretrained on \d+ digits: test accuracy {NUM}")
    imported = _number(out, rf"graphc, imported: +test accuracy {NUM}")
    tuned = _number(out, rf"graphc, fine-tuned: test accuracy {NUM}")
    ort_acc = _number(out, rf"onnxruntime on the exported file: test accuracy {NUM}")
    gap = _number(out, rf"largest difference from graphc's logits {NUM}")
    assert imported == torch_acc  # the import computes PyTorch's model
    assert tuned > imported + 0.03 and tuned > 0.85  # fine-tuning helped
    assert ort_acc == tuned and gap <= 1e-5
    assert (tmp_path / "digits_cnn_pytorch.onnx").is_file()
    assert (tmp_path / "digits_cnn_finetuned.onnx").is_file()
