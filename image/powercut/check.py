"""Replay a dm-log-writes log to crash states and check each the way the appliance would start on it.

For each crash state (every flush point sampled evenly, and random points between flushes), the
recorded disk is replayed up to it; its data partition is mounted (ext4 replays its journal, as at a
boot after a power cut; a partition without a journal is first repaired by ``e2fsck -fy``, as a boot
with ``fsck.repair=yes`` does) and checked twice:

as the power cut left it (what the write order promises)
  * ``PRAGMA integrity_check`` is ok;
  * every row's image is present, complete and matches its sha256 (a row is written only after its
    file is durable);
  * every row marked offloaded has a complete copy on the stick, with the same sha256 (the mark is
    written only after the copies are durable and read back);
after the appliance's start-up reconciliation (``Store.reconcile``, as ``appliance run`` does it)
  * the same again, and every image and thumbnail has a row unless it was quarantined;
  * nothing was deleted: every file there before reconciliation is still there, or in quarantine (but
    for the files of a delete the power cut interrupted, which start-up finishes);
and across states: a row present at one crash point is present at every later one (no durable keep is
lost by what came after it), unless e2fsck cleared part of a file to repair the later state (a
partition without a journal: the filesystem's repair losing fsynced data, counted apart).

    check.py LOG DISK_BYTES DATA_BYTES [--states N] [--seed S] [--json OUT]

Needs root (loop mounts). Prints a line per failing state, then a summary with states per minute;
exits 3 if any state failed (anything else non-zero is the checks' own failure).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))  # this tree's appliance, whatever the venv has installed
from logwrites import Replay  # noqa: E402

HOSTNAME = "powercut"  # record.py's system.hostname: the offload's folder on the stick
DATA_DIR = "appliance"  # record.py's data dir, inside the data partition


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def choose_states(replay: Replay, count: int, seed: int) -> list[int]:
    """Entry indexes to stop after: half the flush points (evenly spread), half random points."""
    marks = {e.mark: e.index for e in replay.entries if e.mark}
    first, last = marks.get("start", 0), marks.get("end", len(replay.entries) - 1)
    span = [e for e in replay.entries if first <= e.index <= last]
    flushes = [e.index for e in span if e.is_flush]
    between = [e.index for e in span if not e.is_flush]
    n_flush = min(len(flushes), count // 2)
    picked = {flushes[round(i * (len(flushes) - 1) / max(n_flush - 1, 1))] for i in range(n_flush)} if n_flush else set()
    rng = random.Random(seed)
    while len(picked) < count and len(picked) < len(span):
        picked.add(rng.choice(between or flushes))
    return sorted(picked)


class State:
    def __init__(self, index: int, is_flush: bool):
        self.index, self.is_flush = index, is_flush
        self.problems: list[str] = []
        self.rows: set[str] = set()
        self.fsck_cleared = ""  # what e2fsck cleared to repair this state (no journal), if anything

    def fail(self, text: str) -> None:
        self.problems.append(text)


def files_under(data: Path) -> set[str]:
    """The kept files: images under YYYY/, thumbnails, quarantine (not the database, the store's
    reserve or the page's sessions, which have no rows of their own)."""
    out = set()
    for top in data.iterdir():
        if not top.is_dir() or not (top.name.isdigit() or top.name in ("thumbs", "quarantine")):
            continue
        for folder, _, names in os.walk(top):
            out.update(str((Path(folder) / name).relative_to(data)) for name in names)
    return out


def check_rows(state: State, data: Path, stick_files: dict[str, str] | None, when: str) -> list[dict]:
    try:
        db = sqlite3.connect(data / "appliance.db", timeout=5)
        db.row_factory = sqlite3.Row
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            state.fail(f"{when}: integrity_check: {result}")
        if not db.execute("select 1 from sqlite_master where name = 'captures'").fetchone():
            db.close()
            if when == "as left":
                return []  # the power went before the first start had made the table: it makes it again
            state.fail(f"{when}: the database has no captures table")
            return []
        rows = [dict(r) for r in db.execute("select * from captures")]
        db.close()
    except sqlite3.DatabaseError as e:
        state.fail(f"{when}: the database does not open: {e}")
        return []
    from appliance.transfer.export import export_name

    for row in rows:
        path = data / row["image_path"]
        if row["missing"]:
            state.fail(f"{when}: row {row['id']} is marked missing ({row['image_path']})")
        elif not path.is_file():
            state.fail(f"{when}: row {row['id']}: {row['image_path']} is not there")
        elif path.stat().st_size != row["bytes"] or sha256(path) != row["sha256"]:
            state.fail(f"{when}: row {row['id']}: {row['image_path']} is incomplete or wrong "
                       f"({path.stat().st_size} of {row['bytes']} bytes)")
        if row["offloaded_at"] and stick_files is not None:
            on_stick = stick_files.sha256_of(export_name(row))
            if on_stick != row["sha256"]:
                state.fail(f"{when}: row {row['id']} is marked offloaded but the stick has "
                           f"{'no copy' if on_stick is None else 'a wrong copy'} of {export_name(row)}"
                           + (f" (mtools: {stick_files.errors})" if stick_files.errors else ""))
    return rows


class StickFiles(dict):
    """Path under <hostname>/ → sha256, and what mtools said if it could not read everything.

    mtools gives up on a whole folder at the first broken cluster chain (the file being copied when
    the power went): a file the bulk copy left out is then read alone, as a laptop would read it."""

    errors = ""
    image: Path
    work: Path

    def sha256_of(self, name: str) -> str | None:
        if name in self or not self.errors:
            return self.get(name)
        out = self.work / "one"
        out.unlink(missing_ok=True)
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        subprocess.run(["mcopy", "-n", "-Q", "-i", str(self.image), f"::/{HOSTNAME}/{name}", str(out)],
                       capture_output=True, env=env)
        self[name] = sha256(out) if out.is_file() else None
        return self[name]


def read_stick(stick_img: Path, work: Path) -> StickFiles:
    """Every file under <hostname>/ on the (FAT) stick, by path, with its sha256; read with mtools
    (this machine's kernel has no vfat), as a laptop would read the stick after the power cut."""
    out = work / "stick"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    files = StickFiles()
    files.image, files.work = stick_img, work
    listing = subprocess.run(["mdir", "-b", "-i", str(stick_img), f"::/{HOSTNAME}"], capture_output=True, env=env)
    if listing.returncode != 0:
        return files  # no folder yet: nothing offloaded
    copied = subprocess.run(["mcopy", "-s", "-n", "-Q", "-i", str(stick_img), f"::/{HOSTNAME}", str(out)],
                            capture_output=True, text=True, env=env)
    if copied.returncode != 0:
        files.errors = " ".join(copied.stderr.split())[:300]
    base = out / HOSTNAME
    files.update({str(p.relative_to(base)): sha256(p) for p in base.rglob("*") if p.is_file()})
    return files


def deletes_under_way(data: Path) -> set[str]:
    """The files of deletes whose rows were gone when the power went (``Store.delete``): start-up
    finishes those deletes, which is not losing anything."""
    db = sqlite3.connect(data / "appliance.db", timeout=5)
    try:
        return {r[0] for r in db.execute("select path from deleting")}
    except sqlite3.OperationalError:  # no such table yet
        return set()
    finally:
        db.close()


def has_journal(image: Path) -> bool:
    """Whether the ext4 filesystem in ``image`` has a journal (s_feature_compat's HAS_JOURNAL bit)."""
    with open(image, "rb") as f:
        f.seek(1024 + 0x5C)
        return bool(int.from_bytes(f.read(4), "little") & 0x4)


def check_state(replay: Replay, index: int, data_bytes: int, disk_bytes: int, work: Path) -> State:
    from appliance.pipeline.writer import thumbnail_of_file
    from appliance.storage.store import QUARANTINE, Store

    entry = replay.entries[index]
    state = State(index, entry.is_flush)
    replay.to(index)
    data_img, stick_img, mount = work / "data.img", work / "stick.img", work / "mnt"
    replay.copy_range(data_img, 0, data_bytes)
    replay.copy_range(stick_img, data_bytes, disk_bytes - data_bytes)
    mount.mkdir(exist_ok=True)
    if not has_journal(data_img):
        repaired = subprocess.run(["e2fsck", "-fy", str(data_img)], capture_output=True, text=True)
        lines = repaired.stdout.splitlines()
        state.fsck_cleared = "; ".join(f"{lines[i - 2].strip()} {lines[i - 1].strip()}" for i, line in enumerate(lines)
                                       if line.startswith("Clear? yes") and i >= 2)
        if repaired.returncode & ~3:  # 1: errors corrected, 2: corrected, reboot; anything else: not repaired
            said = (repaired.stdout + repaired.stderr).strip().splitlines()
            state.fail(f"e2fsck could not repair the data partition (exit {repaired.returncode}): {said[-1:]}")
            return state
    mounted = subprocess.run(["mount", "-t", "ext4", "-o", "loop", str(data_img), str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        # Before mkfs finished there is no filesystem yet: only states after the "start" mark are chosen.
        state.fail(f"the data partition does not mount: {mounted.stderr.strip()}")
        return state
    try:
        data = mount / DATA_DIR
        if not (data / "appliance.db").exists():
            return state  # the appliance had not created its store yet
        stick_files = read_stick(stick_img, work)
        rows = check_rows(state, data, stick_files, "as left")
        state.rows = {r["sha256"] for r in rows}
        before = files_under(data) - deletes_under_way(data)
        store = Store(data)
        try:
            report = store.reconcile(thumbnail=lambda path: thumbnail_of_file(path, 320))
        except Exception as e:  # noqa: BLE001 - whatever start-up would die of is the finding
            state.fail(f"reconciliation failed: {type(e).__name__}: {e}")
            return state
        finally:
            store.close()
        rows = check_rows(state, data, stick_files, "after reconciliation")
        after = files_under(data)
        recovered = {str(Path(k).relative_to(data)) if Path(k).is_absolute() else str(k)
                     for k in getattr(report, "recovered", {})}
        for lost in sorted(before - after - recovered):
            if f"{QUARANTINE}/{lost}" not in after:
                state.fail(f"reconciliation deleted {lost} (not in quarantine, not recovered)")
        indexed = {r["image_path"] for r in rows} | {r["thumb_path"] for r in rows if r.get("thumb_path")}
        for path in sorted(after - indexed):
            if not path.startswith(f"{QUARANTINE}/"):
                state.fail(f"after reconciliation, {path} has no row and is not in quarantine ({report})")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("disk_bytes", type=int)
    parser.add_argument("data_bytes", type=int)
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    # Reconciliation warns of each file it completes, re-indexes or quarantines: expected here, by the
    # thousand; what matters is whether each state passes.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="powercut-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        replay = Replay(args.log, work / "disk.img", args.disk_bytes)
        indexes = choose_states(replay, args.states, args.seed)
        flushes = sum(e.is_flush for e in replay.entries)
        print(f"powercut: {len(replay.entries)} log entries ({flushes} flushes/FUA); checking {len(indexes)} crash states",
              flush=True)
        states, failed, seen_rows, fsck_losses = [], 0, set(), 0
        for n, index in enumerate(indexes, 1):
            state = check_state(replay, index, args.data_bytes, args.disk_bytes, work)
            lost = seen_rows - state.rows
            if lost and state.fsck_cleared:
                # Without a journal, e2fsck repairs a crash state by clearing what it cannot trust, such
                # as an extent that runs past the size the inode had on disk: the tail of the database's
                # WAL, rows and all. That is the filesystem's repair losing fsynced data, not the write
                # order: counted and shown, not failed. (Every check within the state still applies.)
                fsck_losses += 1
                print(f"  state {n} (entry {index}): {len(lost)} row(s) of earlier states gone where e2fsck "
                      f"cleared {state.fsck_cleared}", flush=True)
            elif lost:
                state.fail(f"{len(lost)} row(s) present at an earlier crash point are gone")
            seen_rows |= state.rows
            states.append(state)
            if state.problems:
                failed += 1
                print(f"  FAIL state {n} (entry {index}{', a flush' if state.is_flush else ''}): "
                      + "; ".join(state.problems[:3]) + (f" (+{len(state.problems) - 3} more)" if len(state.problems) > 3 else ""),
                      flush=True)
            elif n % 25 == 0:
                print(f"  {n} states checked, {failed} failed", flush=True)
        replay.close()
    minutes = (time.monotonic() - started) / 60
    summary = {"states": len(states), "failed": failed, "flush_states": sum(s.is_flush for s in states),
               "log_entries": len(replay.entries), "fsck_losses": fsck_losses, "most_rows": max((len(s.rows) for s in states), default=0),
               "minutes": round(minutes, 2), "states_per_minute": round(len(states) / minutes, 1) if minutes else None}
    print(f"powercut: {summary['states']} crash states checked ({summary['flush_states']} at flushes), "
          f"{failed} failed; up to {summary['most_rows']} kept items in a state; "
          + (f"{fsck_losses} where e2fsck's repair lost rows of earlier states; " if fsck_losses else "") +
          f"{summary['states_per_minute']} states per minute", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if not states:
        sys.exit("powercut: no crash states to check (the log has no entries between its marks)")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
