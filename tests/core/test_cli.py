"""The graphc command line: info, viz, demo, python -m graphc."""

import re
import subprocess
import sys
import textwrap

import pytest

from graphc.cli import main


def test_info_reports_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("numpy backend", "llvm backend", "cuda backend", "llvmlite", "ptxas", "devices"):
        assert word in out


def test_viz_draws_a_tensor_from_a_script(tmp_path):
    script = tmp_path / "model.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import graphc as gc
        x = gc.placeholder("x", ("N", 3))
        W = gc.parameter("W", np.ones((3, 2), np.float32))
        cost = gc.sigmoid(x @ W).sum()
    """))
    out = tmp_path / "cost.dot"
    assert main(["viz", f"{script}:cost", "-o", str(out)]) == 0
    assert "sigmoid" in out.read_text()
    grad_out = tmp_path / "grad.dot"
    assert main(["viz", f"{script}:cost", "-o", str(grad_out), "--grad"]) == 0
    text = grad_out.read_text()
    assert "cluster_grad" in text and text.count("->") > out.read_text().count("->")
    assert main(["viz", f"{script}:nope", "-o", str(out)]) == 1


def test_viz_grad_of_a_cost_without_parameters(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text("import graphc as gc\nx = gc.placeholder('x', (3,))\n"
                      "loss = gc.tanh(x).sum()\n")
    out = tmp_path / "g.dot"
    assert main(["viz", f"{script}:loss", "-o", str(out), "--grad"]) == 0
    assert "cluster_grad" in out.read_text()


def test_python_dash_m_graphc_runs():
    res = subprocess.run([sys.executable, "-m", "graphc", "info"], capture_output=True, text=True)
    assert res.returncode == 0 and "numpy backend" in res.stdout


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_demo_runs(tmp_path, backend):
    res = subprocess.run([sys.executable, "-m", "graphc", "demo", "--out", str(tmp_path),
                          "--epochs", "1", "--backend", backend], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert "test accuracy:" in res.stdout and f"backend {backend}" in res.stdout
    assert re.search(r"numpy +[\d.]+ ms/step", res.stdout)  # the side-by-side of backends
    assert re.search(r"llvm +[\d.]+ ms/step .*x the numpy backend's speed", res.stdout)
    names = {p.name for p in tmp_path.iterdir()}
    assert names >= {"demo_loss.png", "demo_lenet.graphc"}
    assert names & {"demo_train_step.svg", "demo_train_step.dot"}


def test_demo_names_an_unavailable_backend(capsys):
    assert main(["demo", "--backend", "no-such-backend", "--epochs", "1"]) == 2
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err


def test_demo_refuses_bad_epochs_and_out_before_training(tmp_path, capsys, monkeypatch):
    """--epochs -1 and an --out that cannot be a folder are one-line errors before anything
    is trained (training is stubbed out here: reaching it would fail the test)."""
    import graphc as gc

    def no_training(*args, **kwargs):
        raise AssertionError("the demo trained before checking its options")

    monkeypatch.setattr(gc.train, "supervised", no_training)
    assert main(["demo", "--epochs", "-1", "--out", str(tmp_path)]) == 2
    assert "--epochs must be 0 or more, got -1" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    for bad in (afile, afile / "sub"):
        assert main(["demo", "--epochs", "1", "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "cannot be the output folder" in err and err.count("\n") == 1


def test_viz_runs_only_a_python_script(tmp_path, capsys):
    """FILE.py:NAME runs FILE.py; any other file was run too (runpy runs a zip holding a
    __main__.py, which a saved model file can be made to hold)."""
    import zipfile

    marker = tmp_path / "ran"
    model = tmp_path / "model.gcz"
    with zipfile.ZipFile(model, "w") as z:
        z.writestr("__main__.py", f"open({str(marker)!r}, 'w').close()\ng = 1\n")
    assert main(["viz", f"{model}:g", "-o", str(tmp_path / "g.dot")]) == 1
    assert "is not a .py file" in capsys.readouterr().err
    assert not marker.exists()


def test_viz_runs_a_script_as_python_would(tmp_path, capsys, monkeypatch):
    """The script's folder was not on the import path (examples/xor.py could not import
    its neighbour common.py) and it read graphc's own argv; an output path that cannot be
    written was a traceback, and a bad extension was found after the script had run."""
    (tmp_path / "helper.py").write_text("SIZE = 3\n")
    script = tmp_path / "model.py"
    script.write_text(textwrap.dedent("""
        import argparse, sys
        import helper
        import graphc as gc
        args = argparse.ArgumentParser().parse_args()
        assert sys.argv[1:] == []
        x = gc.placeholder("x", ("N", helper.SIZE))
        cost = (x * x).sum()
    """))
    monkeypatch.chdir("/")
    path_before = list(sys.path)
    assert main(["viz", f"{script}:cost", "-o", str(tmp_path / "c.dot")]) == 0
    assert sys.path == path_before and "helper" in sys.modules
    del sys.modules["helper"]
    (tmp_path / "taken.svg").mkdir()
    assert main(["viz", f"{script}:cost", "-o", str(tmp_path / "taken.svg")]) == 1
    assert "graphc viz:" in capsys.readouterr().err
    ran = tmp_path / "ran.py"
    ran.write_text(f"open({str(tmp_path / 'flag')!r}, 'w').close()\n")
    assert main(["viz", f"{ran}:x", "-o", str(tmp_path / "p.jpg")]) == 1
    assert not (tmp_path / "flag").exists()
