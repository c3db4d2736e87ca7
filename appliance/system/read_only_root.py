"""The optional read-only root: overlayroot switched on and off by a token in cmdline.txt.

Images built with ``--read-only-root`` keep the OS on a read-only lower layer under a RAM overlay
(Debian's ``overlayroot`` initramfs hook) and write only the data partition, so a power cut cannot
corrupt the system. ``recurse=0`` keeps the other mounts (the boot and data partitions) as they are.
"""

from __future__ import annotations

from pathlib import Path

from appliance.errors import SystemSettingsError
from appliance.storage.files import atomic_write_bytes

CMDLINE_PATH = Path("/boot/firmware/cmdline.txt")
TOKEN = "overlayroot=tmpfs:recurse=0"


def with_overlayroot(cmdline: str, enable: bool) -> str:
    """cmdline.txt's one line with the overlayroot token added or removed; every other token kept.

    With it, the root is mounted ``ro`` (not ``rw``): the initramfs mounts the real root that way, and
    overlayroot keeps it as the read-only lower layer; systemd then makes the overlay writable."""
    words = [w for w in cmdline.split() if not w.startswith("overlayroot=")]
    words = [("ro" if enable else "rw") if w in ("ro", "rw") else w for w in words]
    if enable:
        words.append(TOKEN)
    return " ".join(words) + "\n"


def set_read_only_root(enable: bool, cmdline_path: Path = CMDLINE_PATH) -> bool:
    """Switch the read-only root on or off from the next boot; True if cmdline.txt changed."""
    try:
        current = cmdline_path.read_text()
    except OSError as e:
        raise SystemSettingsError(f"{cmdline_path}: cannot read it ({e.strerror}): is the boot partition mounted "
                                  "at /boot/firmware?") from None
    if not current.strip() or "root=" not in current:
        raise SystemSettingsError(f"{cmdline_path}: no root= in it; refusing to edit a kernel command line "
                                  "that would not boot")
    wanted = with_overlayroot(current, enable)
    if wanted.split() == current.split():
        return False
    try:
        atomic_write_bytes(cmdline_path, wanted.encode())
    except OSError as e:
        raise SystemSettingsError(f"{cmdline_path}: cannot write it ({e.strerror})") from None
    return True
