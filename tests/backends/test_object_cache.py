"""The on-disk machine-code cache (backends/kernelgen/object_cache.py): a file there is run,
so only a file this user's graphc signed for this key is ever handed to the linker; anything
else — a swapped, forged, special or oversized file, a directory others can write — is a
miss, and the cache stays bounded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from graphc.backends.kernelgen import object_cache
from graphc.backends.kernelgen.object_cache import MAGIC, ObjectCache

KEY_A, KEY_B = "a" * 64, "b" * 64
CODE_A, CODE_B = b"\x7fELF object code of A" * 10, b"\x7fELF object code of B" * 12


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAPHC_NO_CACHE", raising=False)
    monkeypatch.delenv("GRAPHC_CACHE_MAX_MB", raising=False)
    return tmp_path / "cache" / "llvm"


def test_what_was_stored_is_read_back_for_its_key_only(cache):
    ObjectCache(KEY_A).store(CODE_A)
    assert ObjectCache(KEY_A).cached == CODE_A
    assert ObjectCache(KEY_B).cached is None
    assert ObjectCache(KEY_A, enabled=False).cached is None
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700 & ~_umask())
    assert not (cache / "secret").stat().st_mode & 0o077


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_copied_under_another_keys_name_is_a_miss(cache):
    """Its header and checksum are intact, but it was signed for another key: linking it
    would run A's code for B (or crash on B's layout)."""
    ObjectCache(KEY_A).store(CODE_A)
    ObjectCache(KEY_B).store(CODE_B)
    (cache / f"{KEY_B}.o").write_bytes((cache / f"{KEY_A}.o").read_bytes())
    assert ObjectCache(KEY_B).cached is None
    assert ObjectCache(KEY_A).cached == CODE_A


@pytest.mark.parametrize("forgery", ["sha256", "zeros", "other secret", "truncated", "empty"])
def test_a_file_not_signed_with_the_directorys_secret_is_a_miss(cache, forgery):
    ObjectCache(KEY_A).store(CODE_A)
    junk = b"\x7fELF\x02\x01\x01" + b"\xff" * 200
    mac = {"sha256": hashlib.sha256(junk).digest(), "zeros": bytes(32),
           "other secret": object_cache._mac(os.urandom(32), KEY_A, junk)}.get(forgery)
    path = cache / f"{KEY_A}.o"
    if mac is not None:
        path.write_bytes(MAGIC + len(junk).to_bytes(8, "little") + mac + junk)
    elif forgery == "truncated":
        path.write_bytes(path.read_bytes()[:-5])
    else:
        path.write_bytes(b"")
    assert ObjectCache(KEY_A).cached is None


def test_special_files_and_links_are_misses_without_blocking(cache):
    ObjectCache(KEY_A).store(CODE_A)
    path = cache / f"{KEY_A}.o"
    good = path.read_bytes()
    path.unlink()
    os.mkfifo(path)  # opened blocking, this would wait for a writer forever
    assert ObjectCache(KEY_A).cached is None
    path.unlink()
    path.symlink_to("/dev/zero")  # read whole, this would never end
    assert ObjectCache(KEY_A).cached is None
    path.unlink()
    (cache / "elsewhere.bin").write_bytes(good)
    path.symlink_to(cache / "elsewhere.bin")  # even a link to a good file: not followed
    assert ObjectCache(KEY_A).cached is None
    path.unlink()
    path.mkdir()
    assert ObjectCache(KEY_A).cached is None


def test_an_oversized_file_is_a_miss(cache, monkeypatch):
    ObjectCache(KEY_A).store(CODE_A)
    monkeypatch.setattr(object_cache, "MAX_FILE_BYTES", 100)
    assert ObjectCache(KEY_A).cached is None


@pytest.mark.parametrize("mode,after", [(0o777, 0o755), (0o2775, 0o2755), (0o755, 0o755)])
def test_a_directory_of_the_users_that_others_can_write_loses_their_write(cache, mode, after):
    """An older graphc made the directory under the user's umask (group-writable under 002):
    it is the user's, so others lose the write permission (and nothing else: a 0755 or setgid
    directory keeps its other bits) rather than the cache being given up."""
    cache.mkdir(parents=True)
    cache.chmod(mode)
    ObjectCache(KEY_A).store(CODE_A)
    assert cache.stat().st_mode & 0o7777 == after
    assert ObjectCache(KEY_A).cached == CODE_A


def test_a_secret_others_can_read_turns_the_cache_off(cache, monkeypatch):
    monkeypatch.setattr(object_cache, "_warned", set())
    ObjectCache(KEY_A).store(CODE_A)
    (cache / "secret").chmod(0o644)
    with pytest.warns(RuntimeWarning, match="secret file"):
        assert ObjectCache(KEY_A).cached is None
    (cache / "secret").chmod(0o600)
    assert ObjectCache(KEY_A).cached == CODE_A


def test_the_least_recently_used_files_go_beyond_the_size_limit(cache, monkeypatch):
    keys = [f"{i:064x}" for i in range(6)]
    for i, key in enumerate(keys):
        ObjectCache(key).store(bytes(1000))
        os.utime(cache / f"{key}.o", (1000.0 + i, 1000.0 + i))
    assert ObjectCache(keys[0]).cached is not None  # a hit: now the most recently used
    stale = cache / f".{keys[1]}.o.x.tmp"
    stale.write_bytes(b"left by a killed writer")
    os.utime(stale, (1.0, 1.0))
    fresh = cache / f".{keys[2]}.o.y.tmp"
    fresh.write_bytes(b"being written now")
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", str(3500 / (1 << 20)))  # room for three files
    ObjectCache("f" * 64).store(bytes(1000))
    left = {p.name for p in cache.glob("*.o")}
    assert left == {f"{keys[0]}.o", f"{keys[5]}.o", f"{'f' * 64}.o"}
    assert not stale.exists() and fresh.exists()


def test_an_unreadable_size_limit_keeps_the_default(cache, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", "lots")
    with pytest.warns(RuntimeWarning, match="GRAPHC_CACHE_MAX_MB"):
        assert object_cache.max_total_bytes() == 512 << 20


def test_a_swapped_file_never_reaches_the_linker(tmp_path):
    """End to end, in a child (a wrong object file linked could crash it): two steps'
    files swapped, each step still computes its own result, then hits its rewritten file."""
    script = tmp_path / "swap.py"
    script.write_text(textwrap.dedent("""
        import os, sys, numpy as np, graphc as gc
        x = gc.placeholder("x", (4,))
        a, b = gc.exp(x) * 2.0, gc.tanh(x) @ gc.ones((4, 3))
        files = os.path.join(os.environ["GRAPHC_CACHE_DIR"], "llvm")
        def compile_(out):
            before = set(os.listdir(files)) if os.path.isdir(files) else set()
            fn = gc.compile([x], out, backend="llvm")
            return fn, sorted(set(os.listdir(files)) - before - {"secret"})
        if sys.argv[1] == "write":
            _, (fa,) = compile_(a)
            _, (fb,) = compile_(b)
            da, db = (open(os.path.join(files, f), "rb").read() for f in (fa, fb))
            open(os.path.join(files, fa), "wb").write(db)
            open(os.path.join(files, fb), "wb").write(da)
        else:
            one = np.arange(4, dtype=np.float32)
            for out, want in ((a, 2 * np.exp(one)), (b, np.tanh(one).sum() * np.ones(3))):
                fn = gc.compile([x], out, backend="llvm")
                assert fn.stats["llvm_cache_hit"] is (sys.argv[1] == "again"), fn.stats
                np.testing.assert_allclose(fn(one), want, rtol=1e-5)
        print("ok")
    """))
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("GRAPHC_NO_CACHE", None)
    for stage in ("write", "read", "again"):
        res = subprocess.run([sys.executable, str(script), stage], capture_output=True,
                             text=True, env=env, timeout=300)
        assert res.returncode == 0 and res.stdout.strip() == "ok", (stage, res.stderr[-2000:])


def test_two_processes_making_the_secret_at_once_agree(tmp_path):
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("GRAPHC_NO_CACHE", None)
    code = ("import sys, time; from graphc.backends.kernelgen.object_cache import ObjectCache;"
            f"time.sleep(max(0, {time.time() + 1.0} - time.time()));"
            "ObjectCache(sys.argv[1]).store(b'code ' + sys.argv[1].encode())")
    children = [subprocess.Popen([sys.executable, "-c", code, key], env=env)
                for key in (KEY_A, KEY_B)]
    assert [child.wait(timeout=120) for child in children] == [0, 0]
    check = ("import sys; from graphc.backends.kernelgen.object_cache import ObjectCache;"
             "print(all(ObjectCache(k).cached == b'code ' + k.encode() for k in sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", check, KEY_A, KEY_B], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "True", res.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a directory to another user needs root")
def test_another_users_directory_is_not_used(cache):
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, 65534, 65534)
    with pytest.warns(RuntimeWarning, match="belongs to another user"):
        assert ObjectCache(KEY_A).cached is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
def test_a_secret_another_user_owns_turns_the_cache_off(cache, monkeypatch):
    """In a directory others could once write, one could have put a secret of their own
    (0600, theirs) and signed files with it: a secret must be the user's."""
    monkeypatch.setattr(object_cache, "_warned", set())
    ObjectCache(KEY_A).store(CODE_A)
    os.chown(cache / "secret", 65534, 65534)
    with pytest.warns(RuntimeWarning, match="secret file is not the user's own"):
        assert ObjectCache(KEY_A).cached is None
