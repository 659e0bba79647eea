"""The wheel holds every package of the source tree.

pyproject.toml lists the packages by hand (passes/ and backends/ install as graphc.passes and
graphc.backends through package-dir), and an editable install imports straight from the
repository, so a package missing from the list goes unnoticed until someone installs the wheel.
Here the wheel is built from a clean copy of the tree, unpacked, and imported from a Python that
sees only the unpacked wheel and the venv's site-packages (no repository, no editable hook).
"""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]  # package -> folder

# what never goes into a build: VCS, venv, build outputs, caches (as .gitignore)
IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                 "*.pyc", ".hypothesis", ".pytest_cache", ".ruff_cache", "out",
                                 ".gl", ".whl", "*.so", "*.o")


def source_packages(root: Path = ROOT) -> list[str]:
    """Every folder with an __init__.py under a package-dir root, as its installed name."""
    names = set()
    for package, folder in PACKAGE_DIR.items():
        for init in (root / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(root / folder).parts
            names.add(".".join((package, *rel)))
    return sorted(names)


def _backend_installed() -> bool:
    """Whether this venv satisfies [build-system] requires (then no isolated build is needed)."""
    for spec in PYPROJECT["build-system"]["requires"]:
        req = Requirement(spec)
        try:
            if version(req.name) not in req.specifier:
                return False
        except PackageNotFoundError:
            return False
    return True


def build_wheel(src: Path, out: Path) -> Path:
    """Build the wheel of the tree at `src` into `out`, return the .whl."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    if _backend_installed():
        cmd.insert(4, "--no-build-isolation")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode and "from versions: none" in res.stdout + res.stderr:
        pytest.skip("the build backend named in pyproject.toml is neither in the venv nor "
                    f"reachable through pip's index:\n{res.stderr[-1500:]}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (wheel,) = out.glob("graphc-*.whl")
    return wheel


# Runs with -I -S: no script folder or cwd on sys.path, no user site, no .pth files (the
# editable install's import hook lives in one); the unpacked wheel comes first, then the venv's
# site-packages folders for the dependencies.
_IMPORTER = """
import importlib, json, sys
wheel, site_dirs, names = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.path[:] = [wheel] + [p for p in sys.path if p.startswith(sys.base_prefix)] + site_dirs
problems = {}
for name in names:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        problems[name] = f"{type(exc).__name__}: {exc}"
        continue
    where = getattr(module, "__file__", None) or ""
    if not where.startswith(wheel):
        problems[name] = f"imported from {where or 'nowhere'}, not from the wheel"
print(json.dumps(problems))
"""


def import_from_wheel(wheel: Path, unpacked: Path, names: list[str]) -> dict[str, str]:
    """Unpack `wheel` and import `names` from it in an isolated Python: name -> problem."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    site_dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    res = subprocess.run([sys.executable, "-I", "-S", "-c", _IMPORTER, str(unpacked),
                          json.dumps(site_dirs), json.dumps(names)],
                         capture_output=True, text=True, cwd=unpacked, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _copy_tree(dst: Path) -> Path:
    shutil.copytree(ROOT, dst, ignore=IGNORED)
    return dst


def test_source_packages_are_found():
    names = source_packages()
    assert {"graphc", "graphc.passes", "graphc.backends", "graphc.backends.llvm",
            "graphc.ir", "graphc.nn"} <= set(names)
    assert not any(n.startswith(("passes", "backends")) for n in names)


def test_the_wheel_imports_every_package_of_the_source_tree(tmp_path):
    names = source_packages()
    wheel = build_wheel(_copy_tree(tmp_path / "src"), tmp_path / "dist")
    problems = import_from_wheel(wheel, tmp_path / "unpacked", names)
    assert problems == {}, ("packages of the source tree that the wheel does not hold (list them "
                            "in pyproject.toml [tool.setuptools] packages):\n" +
                            "\n".join(f"  {k}: {v}" for k, v in problems.items()))
    with zipfile.ZipFile(wheel) as zf:  # nothing called passes/ or backends/ at the top
        tops = {n.split("/")[0] for n in zf.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"graphc"}, tops


def test_a_package_missing_from_pyproject_is_named(tmp_path):
    """The check itself: drop graphc.backends.llvm from a copy's packages list."""
    src = _copy_tree(tmp_path / "src")
    text = (src / "pyproject.toml").read_text()
    cut, n = re.subn(r'\s*"graphc\.backends\.llvm",', "", text)
    assert n == 1, "pyproject.toml no longer lists graphc.backends.llvm as this test expects"
    (src / "pyproject.toml").write_text(cut)
    wheel = build_wheel(src, tmp_path / "dist")
    problems = import_from_wheel(wheel, tmp_path / "unpacked", source_packages(src))
    assert "No module named 'graphc.backends.llvm'" in problems["graphc.backends.llvm"], problems
    # the CUDA backend builds on the LLVM one and fails with it; the others still import
    assert set(problems) <= {"graphc.backends.llvm", "graphc.backends.cuda"}, problems
