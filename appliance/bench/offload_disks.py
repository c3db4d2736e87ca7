"""Where ``appliance bench-offload`` runs: filesystem images on loop devices, the page cache, disk counters.

Everything here needs root (``check_can_run`` says so first) and speaks to the kernel through the
usual tools (``losetup``, ``mkfs.*``) and ``/proc`` and ``/sys``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from appliance.errors import OffloadError

RAM_FILESYSTEMS = {"tmpfs", "ramfs"}
# mkfs.ext4 would discard, i.e. punch holes in the image file: the host would allocate again.
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F", "-E", "nodiscard"], "exfat": ["mkfs.exfat"],
        "vfat": ["mkfs.vfat", "-F", "32"]}


def make_image(path: Path, fstype: str, size_mb: int) -> Path:
    """A formatted image whose every block is written: a sparse one makes the host allocate blocks
    during the first timed step (exFAT's first cp ran at 150 MB/s, later ones at 400)."""
    zeros = bytes(2**20)
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(zeros)
        os.fsync(f.fileno())
    run([*MKFS[fstype], str(path)])
    return path


def run(command, **kwargs) -> str:
    """Run a tool; its failure is an ``OffloadError`` carrying what it said."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise OffloadError(f"{' '.join(command[:3])}: {(result.stderr or result.stdout).strip() or 'failed'}")
    return result.stdout.strip()


def check_can_run(filesystems, loop_io=("buffered",)) -> None:
    if os.geteuid() != 0:
        raise OffloadError("bench-offload needs root: it attaches loop devices, mounts them and drops the page "
                           "cache (run it with sudo)")
    temp_dir = Path(tempfile.gettempdir())
    if "direct" in loop_io and fstype_of(temp_dir) in RAM_FILESYSTEMS:
        raise OffloadError(f"bench-offload --loop-io direct: the temp dir {temp_dir} is in RAM "
                           f"({fstype_of(temp_dir)}), so direct I/O would still measure memory: set TMPDIR to a "
                           "directory on a disk (e.g. TMPDIR=/var/tmp), or pass --loop-io buffered")
    needed = {"losetup", "mount", "umount", "cp", "sync"}
    needed |= {MKFS[fs][0] for fs in filesystems if fs == "exfat" or kernel_has(fs)}
    if "exfat" in filesystems and not kernel_has("exfat"):
        needed.add("mount.exfat-fuse")
    missing = sorted(tool for tool in needed if not shutil.which(tool))
    if missing:
        raise OffloadError(f"bench-offload needs {', '.join(missing)}: install them (e.g. e2fsprogs, "
                           "exfatprogs, exfat-fuse, dosfstools)")


def kernel_has(fstype: str) -> bool:
    return any(line.split()[-1] == fstype for line in Path("/proc/filesystems").read_text().splitlines() if line)


@contextmanager
def loop_device(image: Path, is_direct: bool = False):
    """``image`` attached to a free loop device; with ``is_direct``, by O_DIRECT (checked, since losetup
    falls back to buffered I/O with only a warning where the backing filesystem refuses it)."""
    device = run(["losetup", "-f", "--show", *(["--direct-io=on"] if is_direct else []), str(image)])
    try:
        if is_direct and not is_direct_io(device):
            raise OffloadError(f"{device}: the loop device could not use direct I/O on {image.parent} "
                               f"({fstype_of(image.parent)}): set TMPDIR to a directory on a disk that allows "
                               "O_DIRECT, or pass --loop-io buffered")
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def is_direct_io(device: str) -> bool:
    return Path(f"/sys/block/{Path(device).name}/loop/dio").read_text().strip() == "1"


def settle() -> None:
    """Nothing dirty anywhere, nothing cached: both sides start cold."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def bytes_read(device: str) -> int:
    """Bytes read from a block device since boot (/sys/block/<dev>/stat counts 512-byte sectors)."""
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[2]) * 512


def disk_bytes(path: Path) -> np.ndarray:
    """(read, written) bytes since boot of the block device ``path`` is on (0, 0 if it has none,
    e.g. an overlay), from /sys/dev/block/<major>:<minor>/stat, which counts 512-byte sectors."""
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    if not stat.exists():
        return np.zeros(2, dtype=np.int64)
    fields = stat.read_text().split()
    return np.array([int(fields[2]), int(fields[6])], dtype=np.int64) * 512


def disk_name(dev: int) -> str:
    link = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    return f"/dev/{link.resolve().name}" if link.exists() else "none (no block device: read and write bytes are 0)"


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dirty_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1])
    return 0


def fstype_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point that holds it)."""
    best, fstype = "", "?"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, *_ = line.split()
        point = point.replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fstype = point, kind
    return fstype


def driver(stick: Path) -> str:
    kind = fstype_of(stick)
    return "FUSE (mount.exfat-fuse)" if kind == "fuseblk" else f"kernel ({kind})"

