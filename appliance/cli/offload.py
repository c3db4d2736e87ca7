"""``appliance offload``: copy the kept images to a USB stick (or a folder), verified."""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, config_path, load_config
from appliance.errors import OffloadError


def register(subparsers):
    parser = add_command(subparsers, "offload", offload_command)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"the config file (default: {DEVICE_CONFIG_PATH} if it exists)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", default="auto",
                       help="the stick's partition, e.g. /dev/sda1 (default: auto, the first USB stick found)")
    where.add_argument("--to", type=Path, default=None, help="a folder (a stick mounted already) instead of a device")


def offload_command(args) -> int:
    """Copy every kept image not yet offloaded to a USB stick, verify each there, mark it offloaded.

    Mounts the stick (nosuid,nodev,noexec), writes <stick>/<hostname>/<label>/<file>.jpg and a manifest,
    reads every copy back from the stick, and only then marks it; unmounts when done. Exit 0 when
    everything is on the stick, 1 when the run stopped early (full, removed, read-only) or an image
    failed verification: run it again to resume.

    Example:
        appliance offload --device /dev/sda1
        appliance offload --to /media/me/STICK
    """
    from appliance.storage.store import Store
    from appliance.transfer.offload import OffloadLock, ProgressFile, offload
    from appliance.transfer.stick import drop_device_cache, find_stick, mounted

    path = config_path(args.config)
    config = load_config(path)
    runtime = Path(config.status.runtime_dir)
    with OffloadLock(runtime):
        progress = ProgressFile(runtime)
        progress.write("running", items_done=0, message="starting")
        store = Store(config.storage.data_dir)
        try:
            if args.to is not None:
                report = offload(store, args.to, after_offload=config.storage.after_offload, progress=progress)
            else:
                device = find_stick() if args.device == "auto" else args.device
                if device is None:
                    raise OffloadError("no USB stick found: plug one in (FAT32, exFAT or ext4)")
                with mounted(device, runtime / "mnt") as stick:
                    report = offload(store, stick, after_offload=config.storage.after_offload, progress=progress,
                                     before_verify=lambda: drop_device_cache(device))
        except OffloadError as e:
            progress.write("failed", message=str(e))
            raise
        finally:
            store.close()
        state = "done" if report.is_complete else "failed"
        progress.write(state, message=report.summary(), items_done=report.verified, remaining=report.remaining,
                       remaining_bytes=report.remaining_bytes, failed=len(report.failed), dest=report.dest)
    print(report.summary())
    for item_id, reason in report.failed:
        print(f"  capture {item_id}: {reason}", file=sys.stderr)
    return 0 if report.is_complete else 1
