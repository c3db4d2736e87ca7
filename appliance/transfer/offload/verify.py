"""Making copies durable and checking them: one sync of the stick's filesystem, then a read-back
from the stick itself (its pages dropped from the cache) hashed with sha256.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import threading
from pathlib import Path

_READ_CHUNK = 1 << 20  # read back and hashed in pieces that stay in the CPU's cache
_READ_BACK_THREADS = 2


def sync_stick(folder: Path, also: Path) -> None:
    """Make everything written to the stick durable: one sync of its whole filesystem (data,
    directories, renames), plus an fsync of ``also`` (a file or folder on it), which FUSE drivers
    need to pass the flush on to the device (exfat-fuse then flushes all it holds); under the
    kernel's drivers that fsync finds nothing left to write."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
    fd = os.open(also, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_syncfs(fd: int) -> int:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs(fd)
    except AttributeError:
        return -1


def read_back_sha256s(paths: list[Path], threads: int = _READ_BACK_THREADS) -> list[tuple[Path, str | OSError]]:
    """(path, sha256 or the error reading it) of each file as the stick holds it: its cached pages
    are dropped first, so the bytes come from the device, not from memory (the pages are clean
    after fsync, so DONTNEED discards them). Hashing is the costly part, so ``threads`` threads
    each take a contiguous share of ``paths`` (hashlib lets go of the GIL); in each, while one file
    is hashed the next is already being read from the device (POSIX_FADV_WILLNEED), so the stick
    and the CPU work at the same time. Never raises OSError: a stick that fails mid-way fails the
    files it was reading."""
    share = -(-len(paths) // max(1, threads))
    parts = [paths[i:i + share] for i in range(0, len(paths), share)] or [[]]
    results: list[list] = [[] for _ in parts]
    helpers = [threading.Thread(target=_read_back, args=(part, out), name="offload-read-back")
               for part, out in zip(parts[1:], results[1:])]
    for helper in helpers:
        helper.start()
    try:
        _read_back(parts[0], results[0])
    finally:
        for helper in helpers:
            helper.join()
    done = [r for out in results for r in out]
    # a helper that died (it should not: errors are results) leaves its files unverified
    done += [(path, OSError(errno.EIO, "the read-back did not finish")) for path in paths[len(done):]]
    return done


def _read_back(paths: list[Path], results: list) -> None:
    buffer = bytearray(_READ_CHUNK)
    ahead = _start_reading(paths[0]) if paths else None
    try:
        for i, path in enumerate(paths):
            fd, ahead = ahead, _start_reading(paths[i + 1]) if i + 1 < len(paths) else None
            results.append((path, fd if isinstance(fd, OSError) else _sha256_and_close(fd, buffer)))
    finally:
        if isinstance(ahead, int):  # interrupted: the next file's fd is still open
            _close(ahead)


def _start_reading(path: Path) -> int | OSError:
    """An open fd on ``path`` with its cached pages dropped and a read from the device under way."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return e
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError as e:
        _close(fd)
        return e
    return fd


def _sha256_and_close(fd: int, buffer: bytearray) -> str | OSError:
    view, digest = memoryview(buffer), hashlib.sha256()
    try:
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
    except OSError as e:
        _close(fd)
        return e
    return _close(fd) or digest.hexdigest()


def _close(fd: int) -> OSError | None:
    """Close ``fd``; the error if that failed (under FUSE even a close fails once the stick is gone)."""
    try:
        os.close(fd)
    except OSError as e:
        return e
    return None
