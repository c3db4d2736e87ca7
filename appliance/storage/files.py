"""Durable file writes and checksums, shared by the store and the model fetcher.

A file written here is complete or absent, never partial: bytes go to a temporary file beside the
target (``.NAME.PID.tmp``), which is fsynced, renamed over the target, and then the directory is
fsynced so the rename itself survives a power cut.

Files the appliance did not write itself (whatever is on a card at start-up) are read with
``read_regular``: never a FIFO, socket or device (opening one can block for ever), never through a
symbolic link.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from pathlib import Path

TMP_SUFFIX = ".tmp"
_CHUNK = 1 << 20
_TMP_NAME = re.compile(r"\.(?P<name>.+)\.\d+" + re.escape(TMP_SUFFIX))
KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link",
         stat.S_IFCHR: "a device node", stat.S_IFBLK: "a device node", stat.S_IFDIR: "a folder"}


def target_of_temp(name: str) -> str | None:
    """The name ``atomic_file`` was writing when it made the temporary file ``name``; None if it is not one."""
    match = _TMP_NAME.fullmatch(name)
    return match["name"] if match else None


def kind_of(path: str | Path) -> str:
    """What ``path`` itself is (a symbolic link is not followed): ``"a regular file"``, ``"a FIFO"``…"""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "gone"
    return "a regular file" if stat.S_ISREG(mode) else KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_regular(path: str | Path) -> bytes:
    """The contents of ``path`` if it is a regular file; ``OSError`` if it is anything else.

    The check and the read are one: the file is opened without following a link and without
    waiting (a FIFO swapped in after a check would otherwise block the open), then checked."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is {KINDS.get(stat.S_IFMT(mode), 'not a regular file')}")
        return f.read()


def fsync_file(path: str | Path) -> None:
    """Make a file's contents durable (a file another process wrote and may not have fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int = 0o644):
    """Open a temporary file beside ``path`` for binary writing; on success it becomes ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` durably and atomically."""
    with atomic_file(path, mode) as f:
        f.write(data)


def slug(label: str, limit: int = 40) -> str:
    """A file-name-safe short form of a label: ``"Ara macao (Scarlet Macaw)"`` → ``"ara-macao-scarlet-macaw"``."""
    out, dash = [], False
    for ch in label.lower():
        if ch.isascii() and ch.isalnum():
            out.append(ch)
            dash = False
        elif not dash and out:
            out.append("-")
            dash = True
    return "".join(out).strip("-")[:limit].strip("-") or "unlabelled"
