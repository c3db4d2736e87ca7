"""A full card: the store still opens (its reserve given back), the levels say full, and the owner can
delete; with no room and nothing to give back, a clear error instead of SIGBUS.

On a real ext4 filesystem, loop-mounted and filled to the last byte (mkfs -m 0: no blocks kept for
root, so root fills it as the appliance's own user would). Needs root."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from appliance.errors import StorageError
from appliance.storage import retention
from appliance.storage.store import OPEN_NEEDS_BYTES, RESERVE_NAME, Store

if os.geteuid() != 0:
    pytest.skip("a full filesystem is made by loop-mounting one: needs root", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
APPLIANCE = [sys.executable, "-m", "appliance"]


@contextlib.contextmanager
def small_filesystem(tmp_path, size_mb=16):
    image, point = tmp_path / "card.img", tmp_path / "card"
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    point.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True)
    try:
        yield point
    finally:  # lazily if a failed test left the store open: never a mount left behind
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=True)


def fill_to(point: Path, leave_bytes: int) -> None:
    """Write a filler file until the filesystem is full, then give back ``leave_bytes``."""
    filler = point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for size in (1 << 20, 65536, 4096, 512, 1):
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(size))
    os.fsync(fd)
    os.close(fd)
    if leave_bytes:
        os.truncate(filler, max(0, os.path.getsize(filler) - leave_bytes))


def free_bytes(point: Path) -> int:
    stats = os.statvfs(point)
    return stats.f_bavail * stats.f_frsize


def keep(store: Store, second: int) -> int:
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30 * second, 0)).save(jpeg, "JPEG")
    record = {"captured_at": f"2026-12-07T10:00:{second:02d}.000Z", "clock_source": "ntp", "label": "Bubo bubo",
              "score": 0.9, "top_k": "[]", "kind": "match", "reason": "match", "model_name": "m", "model_sha256": "0",
              "backend": "cpu", "inference_ms": 1.0, "source": "test", "width": 64, "height": 48}
    return store.add(record, jpeg.getvalue(), jpeg.getvalue())


def test_a_full_card_still_opens_lists_reports_full_and_lets_the_owner_delete(tmp_path):
    with small_filesystem(tmp_path) as card:
        data = card / "data"
        store = Store(data)
        assert (data / RESERVE_NAME).is_file()  # set aside while there was room
        ids = [keep(store, s) for s in range(3)]
        store.close()
        fill_to(card, 0)
        assert free_bytes(card) == 0

        listed = subprocess.run([*APPLIANCE, "captures", "--data", str(data)], capture_output=True, text=True, cwd=REPO)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.count("Bubo bubo") == 3

        store = Store(data)  # the reserve was given back by `captures`: there is room to open now
        assert store.count() == 3
        assert retention.storage_level(store.used_bytes, 0, store.free_bytes(), 500_000_000) == "full"
        assert store.delete([ids[0]]) > 0
        assert store.count() == 2
        store.reconcile()
        store.close()


def test_the_reserve_is_given_back_by_whichever_command_starts_first(tmp_path):
    with small_filesystem(tmp_path) as card:
        data = card / "data"
        Store(data).close()
        fill_to(card, 0)
        store = Store(data)
        assert store.released_reserve and not (data / RESERVE_NAME).exists()
        assert store.free_bytes() >= OPEN_NEEDS_BYTES
        store.close()


def test_no_room_and_nothing_to_give_back_is_a_clear_error_not_a_crash(tmp_path):
    with small_filesystem(tmp_path) as card:
        fill_to(card, 40 * 1024)  # a new data dir here died of SIGBUS opening SQLite's shared memory
        new = card / "new"
        # In a process of its own: SIGBUS would kill the test run itself.
        opened = subprocess.run([sys.executable, "-c", "import sys\nfrom appliance.errors import StorageError\n"
                                 "from appliance.storage.store import Store\n"
                                 "try:\n    Store(sys.argv[1])\nexcept StorageError as e:\n    print(e)",
                                 str(new)], capture_output=True, text=True, cwd=REPO)
        assert opened.returncode == 0, f"died of signal {-opened.returncode}" if opened.returncode < 0 else opened.stderr
        assert "storage full: " in opened.stdout and "KB free" in opened.stdout and "delete files" in opened.stdout
        with pytest.raises(StorageError, match="storage full"):
            Store(new)
