"""Room to open on a full card: the store's reserve.

A full card must not keep the appliance from starting: SQLite needs room to open a WAL database (its
shared-memory file; on a filesystem with no room, writing into that mapping kills the process with
SIGBUS). So the store sets aside ``RESERVE_BYTES`` in ``.reserve`` while there is room, and gives it
back when it finds the filesystem full at start, so that it opens, the page and the LEDs say storage
is full, and the owner can sync, offload or delete. With less than ``OPEN_NEEDS_BYTES`` free and no
reserve to give back, it refuses to open with a clear error instead of dying.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from appliance.errors import StorageError
from appliance.storage.files import atomic_file, fsync_dir

log = logging.getLogger(__name__)

RESERVE_NAME = ".reserve"
RESERVE_BYTES = 4 * 1024 * 1024  # given back on a full card: room to open, delete and mark
OPEN_NEEDS_BYTES = 512 * 1024  # less free than this and the store does not try to open


def make_room(data_dir: Path, free_bytes: int) -> bool:
    """Give back the reserve in ``data_dir`` if its filesystem is full (``free_bytes`` left), or set
    it aside while there is room; True if it was given back (the card is full)."""
    reserve = data_dir / RESERVE_NAME
    if free_bytes < OPEN_NEEDS_BYTES:
        if not reserve.is_file():
            raise StorageError(
                f"{data_dir}: storage full: {free_bytes // 1024} KB free, and the store needs "
                f"{OPEN_NEEDS_BYTES // 1024} KB to open: delete files from that filesystem (or give "
                "storage.data_dir a bigger one), then start again")
        reserve.unlink()
        fsync_dir(data_dir)
        log.warning("storage full: %d KB free in %s; gave back the %d MB reserve so that the store opens: "
                    "sync, offload or delete images to free space", free_bytes // 1024, data_dir,
                    RESERVE_BYTES // 2**20)
        return True
    if not reserve.is_file() and free_bytes >= OPEN_NEEDS_BYTES + 2 * RESERVE_BYTES:
        with atomic_file(reserve, 0o600) as f:
            os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
    return False
