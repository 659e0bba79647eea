"""The on-disk cache of compiled machine code, and why a file in it can be run.

Object code read from the cache is linked and executed, so a file there is code, not data: it
is used only when this user's graphc wrote it for this very key.

- **The directory is the user's own.** It is created 0700, and one of the user's that group
  or others could write (an older graphc made it so under umask 002) loses those write
  permissions (read permissions do no harm: the secret is 0600). One
  owned by another user (``GRAPHC_CACHE_DIR=/tmp``) turns the cache off with a warning: its
  owner could plant code for this process to run.
- **Each file is signed.** Its header carries an HMAC-SHA256, over the key and the code, with a
  secret of 32 random bytes kept in the directory (0600). A file written under another key's
  name (two files swapped), junk behind a copied header, a truncated file, or one left by
  another version is a miss, recompiled and rewritten, never linked: LLVM would abort the
  interpreter on a bad object file, and would run a wrong one.
- **Only regular files of bounded size are read**, without following symbolic links and
  without blocking: a FIFO or a link to ``/dev/zero`` at a file's name is a miss.
- **Bounded.** A hit marks its file used; after each store, the least recently used files go
  until the cache holds at most ``GRAPHC_CACHE_MAX_MB`` (default 512) megabytes, and the
  temporary files of writers killed more than an hour ago go too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
import warnings
from pathlib import Path

from graphc.files import atomic_write

__all__ = ["ObjectCache", "cache_dir"]

MAGIC = b"graphc-object-v2\n"
_MAC_BYTES = 32
_SIZE_BYTES = 8
_HEAD = len(MAGIC) + _SIZE_BYTES + _MAC_BYTES
MAX_FILE_BYTES = 1 << 30  # one part's object code is under a few megabytes
_SECRET = "secret"
_SECRET_BYTES = 32
_STALE_TEMPORARY_SECONDS = 3600.0
_warned: set[str] = set()


def cache_dir() -> Path:
    base = os.environ.get("GRAPHC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "graphc")
    return Path(base) / "llvm"


def max_total_bytes() -> int:
    """``GRAPHC_CACHE_MAX_MB`` (megabytes, default 512) as bytes; an unreadable value is the
    default, a warning said once."""
    text = os.environ.get("GRAPHC_CACHE_MAX_MB", "")
    try:
        megabytes = float(text) if text else 512.0
        if not megabytes >= 0 or megabytes == float("inf"):
            raise ValueError
    except ValueError:
        _warn_once(f"GRAPHC_CACHE_MAX_MB={text!r} is not a number of megabytes >= 0; "
                   "the machine-code cache keeps its default of 512")
        megabytes = 512.0
    return int(megabytes * (1 << 20))


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _open_directory(path: Path) -> int | None:
    """A descriptor of the cache directory (created 0700 if missing), or None (a warning
    once) when it is not the user's own: files there are run as code."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None  # (an unwritable home: compile without a cache)
    info = os.fstat(fd)
    if info.st_uid != _owner(info):
        os.close(fd)
        _warn_once(f"the machine-code cache {str(path)!r} is not used: the directory belongs "
                   "to another user, who could plant object code this process would run (set "
                   "GRAPHC_CACHE_DIR to a directory of your own)")
        return None
    if info.st_mode & 0o022:
        try:  # (the user's own: others lose the write permission, nothing else changes)
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~0o022)
        except OSError:
            os.close(fd)
            _warn_once(f"the machine-code cache {str(path)!r} is not used: others may write "
                       "to it and it cannot be made private (chmod 700 it)")
            return None
    return fd


def _owner(info: os.stat_result) -> int:
    """The user files must belong to: this process's (where there is no such notion, the
    file's own owner, which passes)."""
    return os.geteuid() if hasattr(os, "geteuid") else info.st_uid


def _read_regular(dir_fd: int, name: str, limit: int, private: bool = False) -> bytes | None:
    """The bytes of the regular file `name`, if it is one of at most `limit` bytes (and,
    `private`, the user's and readable by the user only): no symbolic link followed, no FIFO
    or device waited on or read without end."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit or \
                (private and (info.st_mode & 0o077 or info.st_uid != _owner(info))):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _secret(dir_fd: int) -> bytes | None:
    """The directory's signing secret, made once (published whole by a hard link, so two
    processes starting at once read the same one), or None if the one there is not private
    to the user."""
    for _ in range(2):
        try:
            os.stat(_SECRET, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except OSError:
            return None
        else:
            data = _read_regular(dir_fd, _SECRET, _SECRET_BYTES, private=True)
            if data is None or len(data) != _SECRET_BYTES:
                _warn_once("the machine-code cache is not used: its secret file is not the "
                           "user's own, private, 32-byte file (delete it to start afresh)")
                return None
            return data
        temporary = f".{_SECRET}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
            try:
                os.write(fd, os.urandom(_SECRET_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temporary, _SECRET, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except FileExistsError:
                pass  # another process published its secret first: read that one
            finally:
                os.unlink(temporary, dir_fd=dir_fd)
        except OSError as exc:
            _warn_once(f"the machine-code cache is not used: its secret could not be made "
                       f"({type(exc).__name__}: {exc})")
            return None
    return None


def _mac(secret: bytes, key: str, data: bytes) -> bytes:
    return hmac.new(secret, key.encode() + b"\0" + data, hashlib.sha256).digest()


class ObjectCache:
    """Compiled code on disk for one key (a hash of IR + target + versions): `cached` holds
    the code when a trusted file had it (see the module's docstring), `store` writes it."""

    def __init__(self, key: str, enabled: bool = True) -> None:
        self.key = key
        self.directory = cache_dir()
        self.path = self.directory / f"{key}.o"
        self.enabled = enabled and os.environ.get("GRAPHC_NO_CACHE", "") in ("", "0")
        self.cached = self._read() if self.enabled else None

    def _read(self) -> bytes | None:
        fd = _open_directory(self.directory)
        if fd is None:
            return None
        try:
            secret = _secret(fd)
            blob = _read_regular(fd, self.path.name, MAX_FILE_BYTES)
            if secret is None or blob is None or len(blob) <= _HEAD or \
                    not blob.startswith(MAGIC):
                return None
            size = int.from_bytes(blob[len(MAGIC):len(MAGIC) + _SIZE_BYTES], "little")
            data = blob[_HEAD:]
            if size != len(data) or not hmac.compare_digest(
                    _mac(secret, self.key, data), blob[_HEAD - _MAC_BYTES:_HEAD]):
                return None
            try:  # used now: the last to be evicted
                os.utime(self.path.name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                pass
            return data
        finally:
            os.close(fd)

    def store(self, data: bytes) -> None:
        if not self.enabled:
            return
        fd = _open_directory(self.directory)
        if fd is None:
            return
        try:
            secret = _secret(fd)
            if secret is None:
                return
            header = MAGIC + len(data).to_bytes(_SIZE_BYTES, "little") + \
                _mac(secret, self.key, data)
            try:
                atomic_write(self.path, header + data)
            except OSError:
                return  # a read-only or full cache directory must not break compilation
            _evict(fd, max_total_bytes(), keep=self.path.name)
        finally:
            os.close(fd)


def _evict(dir_fd: int, limit: int, keep: str) -> None:
    """Remove the least recently used object files until at most `limit` bytes remain (the
    file just written stays), and temporary files older than an hour."""
    now = time.time()
    files = []
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                if entry.name.endswith(".tmp"):
                    if now - info.st_mtime > _STALE_TEMPORARY_SECONDS:
                        _remove(dir_fd, entry.name)
                elif entry.name.endswith(".o"):
                    files.append((info.st_mtime, entry.name, info.st_size))
    except OSError:
        return
    total = sum(size for _, _, size in files)
    for _, name, size in sorted(files):
        if total <= limit:
            break
        if name != keep:
            _remove(dir_fd, name)
            total -= size


def _remove(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
