"""Finding and mounting a USB stick for the offload.

The stick is mounted ``nosuid,nodev,noexec`` under a private mount point in the runtime dir and
unmounted (after a sync) when the offload ends. vfat, exFAT and ext4 are supported; on a Pi the
kernel mounts all three. Where the kernel has no exFAT driver (some build machines), Debian's
``mount.exfat-fuse`` is used instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path

from appliance.errors import OffloadError

log = logging.getLogger(__name__)

SUPPORTED = ("vfat", "exfat", "ext4")
MOUNT_OPTIONS = "nosuid,nodev,noexec"
USB_BY_ID = Path("/dev/disk/by-id")


def find_stick(by_id: Path = USB_BY_ID) -> str | None:
    """The first USB partition (or a whole stick formatted without partitions), as /dev/…; None if none."""
    partitions = sorted(by_id.glob("usb-*-part*"))
    disks = sorted(p for p in by_id.glob("usb-*") if "-part" not in p.name)
    for link in partitions or disks:
        return str(link.resolve())
    return None


def drop_device_cache(device: str) -> None:
    """Forget the device's cached blocks, so what is read next comes from the stick itself. Needed
    under a FUSE driver (exFAT here), which reads the device through the page cache; harmless under
    the kernel's own drivers."""
    fd = os.open(device, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def filesystem_type(device: str) -> str:
    # -p probes the device itself: blkid's cache is keyed by device name, so a different (or
    # reformatted) stick on the same /dev/sda1 would otherwise be reported as the previous one.
    result = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], capture_output=True, text=True)
    return result.stdout.strip()


@contextlib.contextmanager
def mounted(device: str, mount_root: Path):
    """Mount ``device`` for the duration of the block; yields the mount point."""
    fstype = filesystem_type(device)
    if fstype not in SUPPORTED:
        raise OffloadError(f"{device}: {'a ' + fstype if fstype else 'no'} filesystem: the appliance offloads to "
                           "sticks formatted FAT32 (vfat), exFAT or ext4")
    point = Path(mount_root) / Path(device).name
    point.mkdir(parents=True, exist_ok=True, mode=0o700)
    options = MOUNT_OPTIONS + (",flush" if fstype == "vfat" else "")
    attempt = subprocess.run(["mount", "-t", fstype, "-o", options, device, str(point)], capture_output=True, text=True)
    if attempt.returncode != 0 and fstype == "exfat":
        attempt = subprocess.run(["mount.exfat-fuse", "-o", MOUNT_OPTIONS, device, str(point)],
                                 capture_output=True, text=True)
    if attempt.returncode != 0:
        with contextlib.suppress(OSError):
            point.rmdir()
        raise OffloadError(f"{device}: cannot mount the stick ({attempt.stderr.strip() or 'mount failed'})")
    try:
        if os.statvfs(point).f_flag & os.ST_RDONLY:
            raise OffloadError(f"{device}: the stick is read-only (write-protect switch?): nothing was copied")
        yield point
    finally:
        os.sync()
        unmount = subprocess.run(["umount", str(point)], capture_output=True, text=True)
        if unmount.returncode != 0:  # removed mid-copy, or still busy: detach it lazily
            log.warning("%s: %s; detaching lazily", point, unmount.stderr.strip())
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
        with contextlib.suppress(OSError):
            point.rmdir()
