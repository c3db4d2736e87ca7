"""Copying one item to the stick: under a temporary name, never through a link, spliced through a pipe."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import OffloadError
from appliance.storage.files import TMP_SUFFIX
from appliance.transfer.export import export_name

_CHUNK = 4 << 20
_PIPE_BYTES = 1 << 20
STICK_GONE = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOTCONN, errno.ECONNABORTED, errno.ESHUTDOWN,
              errno.ESTALE, errno.ENOENT}


class _Stop(Exception):  # a signal inside the offload package: offload() turns it into its report
    """The stick cannot take more: full, pulled, vanished or read-only. ``str()`` says which."""


class _ItemFailed(Exception):
    """This one item cannot be offloaded (its file on the device is unreadable); the rest go on."""


def why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the stick is full"
    if e.errno == errno.EROFS:
        return "the stick is read-only"
    if e.errno in STICK_GONE:
        return f"the stick was removed or failed ({e.strerror})"
    return f"{e.strerror or e}"


def stick_error(e: OSError, stick) -> OffloadError:
    if e.errno == errno.EROFS:
        return OffloadError(f"{stick}: the stick is read-only (write-protect switch?): nothing was copied")
    return OffloadError(f"{stick}: cannot write to the stick ({e.strerror})")


@dataclass
class Copy:
    row: dict
    target: Path
    tmp: Path | None  # None: the target was on the stick already, to be verified as it is


def copy_item(store, row, folder: Path, folders: dict[Path, dict[str, os.DirEntry]]) -> Copy:
    """Copy one item to a temporary name beside its target (or note that it is there already).
    ``folders``: the label folders made so far and checked to lead nowhere outside ``folder``, with
    what each held at the time: each is listed once per run, not asked about file by file (under a
    FUSE driver every lookup is a round trip to it)."""
    target = folder / export_name(row)
    try:
        entries = folders.get(target.parent)
        if entries is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A label cannot lead outside our folder, and neither can a symlink the stick holds.
            if not target.parent.resolve().is_relative_to(folder.resolve()):
                raise _Stop(f"unsafe name {export_name(row)!r}")
            with os.scandir(target.parent) as listing:
                entries = folders[target.parent] = {entry.name: entry for entry in listing}
        there = entries.get(target.name)
        if (there is not None and there.is_file(follow_symlinks=False)
                and there.stat(follow_symlinks=False).st_size == row["bytes"]):
            return Copy(row, target, None)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _Stop(why(e)) from None
    tmp = target.with_name(f".{target.name}{TMP_SUFFIX}")
    try:
        src = open(store.data_dir / row["image_path"], "rb")
    except OSError as e:
        raise _ItemFailed(f"cannot read {row['image_path']} on the device ({e.strerror})") from None
    try:
        with src, open(tmp, "xb", opener=_no_follow) as out:  # x: never through a link the stick holds
            _copy_bytes(src, out, row["bytes"])
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _Stop(why(e)) from None
    return Copy(row, target, tmp)


def _no_follow(path, flags):
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except FileExistsError:  # not a leftover of ours (those went at the start): whatever it is, it goes
        os.unlink(path)
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def _copy_bytes(src, out, size: int) -> None:
    """Copy in the kernel, with no trip through Python's buffers: copy_file_range where the kernel
    allows it (not between two filesystems since Linux 5.19), else splice through a 1 MB pipe (so
    a FUSE driver gets big writes: sendfile's 64 KB pieces halve exFAT-FUSE's speed), else reads."""
    try:
        copied = 0
        while copied < size:
            n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
            if n == 0:
                break
            copied += n
        if copied == size:
            return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    _start_over(src, out)
    try:
        _splice(src.fileno(), out.fileno())
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    _start_over(src, out)
    while chunk := src.read(_CHUNK):
        out.write(chunk)


def _start_over(src, out) -> None:
    src.seek(0)
    out.seek(0)
    out.truncate()


def _splice(src: int, out: int) -> None:
    """Everything from ``src`` (at its offset) to ``out``, through a pipe."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):  # a smaller pipe works too, only slower
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        while n := os.splice(src, write_end, _PIPE_BYTES):
            while n:
                written = os.splice(read_end, out, n)
                if written == 0:
                    raise OSError(errno.EIO, "the copy stopped writing")
                n -= written
    finally:
        os.close(read_end)
        os.close(write_end)


def remove_leftovers(folder: Path) -> None:
    """Temporary copies an interrupted offload left in the appliance's own folder."""
    for leftover in folder.rglob(f".*{TMP_SUFFIX}"):
        leftover.unlink()
