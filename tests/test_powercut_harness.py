"""The power-cut harness's own parts: the dm-log-writes reader and replayer (on a log laid out as the
kernel's drivers/md/dm-log-writes.c writes it), and the deliberate breaks still applying to the source.

The harness itself (record in a VM, replay, check) runs in image/test-powercut.sh."""

import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "image" / "powercut"))

import breaks  # noqa: E402
from logwrites import DISCARD, FLUSH, FUA, MAGIC, MARK, LogError, Replay, read_log  # noqa: E402

SECTOR = 512


def write_log(path: Path, entries) -> None:
    """entries: (sector, nr_sectors, flags, data or mark name) in the kernel's layout."""
    blocks = [struct.pack("<QQQI", MAGIC, 1, len(entries), SECTOR).ljust(SECTOR, b"\0")]
    for sector, nr_sectors, flags, payload in entries:
        if flags & MARK:
            name = payload.encode()
            blocks.append((struct.pack("<QQQQ", 0, 0, flags, len(name)) + name).ljust(SECTOR, b"\0"))
            continue
        blocks.append(struct.pack("<QQQQ", sector, nr_sectors, flags, 0).ljust(SECTOR, b"\0"))
        if not flags & DISCARD:
            assert len(payload) == nr_sectors * SECTOR
            blocks.append(payload)
    path.write_bytes(b"".join(blocks))


def test_entries_marks_and_flushes_are_read_in_order(tmp_path):
    write_log(tmp_path / "log", [(0, 2, 0, b"a" * 1024), (0, 0, FLUSH, b""), (0, 0, MARK, "start"),
                                 (4, 1, FUA, b"b" * 512), (0, 1, DISCARD, b"")])
    sectorsize, entries = read_log(tmp_path / "log")
    assert sectorsize == SECTOR
    assert [(e.sector, e.nr_sectors, e.mark) for e in entries] == [(0, 2, None), (0, 0, None), (0, 0, "start"),
                                                                   (4, 1, None), (0, 1, None)]
    assert [e.is_flush for e in entries] == [False, True, False, True, False]
    assert [e.is_write for e in entries] == [True, False, False, True, False]


def test_the_replay_brings_the_disk_forward_to_any_entry(tmp_path):
    write_log(tmp_path / "log", [(0, 2, 0, b"a" * 1024), (1, 1, 0, b"c" * 512), (4, 1, FUA, b"b" * 512),
                                 (0, 1, DISCARD, b"")])
    replay = Replay(tmp_path / "log", tmp_path / "disk", 8 * SECTOR)
    replay.to(0)
    assert (tmp_path / "disk").read_bytes()[:1024] == b"a" * 1024
    replay.to(2)
    disk = (tmp_path / "disk").read_bytes()
    assert disk[:1024] == b"a" * 512 + b"c" * 512 and disk[4 * SECTOR:5 * SECTOR] == b"b" * 512
    replay.to(3)
    assert (tmp_path / "disk").read_bytes()[:SECTOR] == bytes(SECTOR)
    replay.copy_range(tmp_path / "part", 4 * SECTOR, 4 * SECTOR)
    assert (tmp_path / "part").read_bytes() == b"b" * 512 + bytes(3 * SECTOR)
    with pytest.raises(ValueError, match="forwards only"):
        replay.to(1)
    replay.close()


def test_a_log_that_is_not_one_or_ends_early_is_refused(tmp_path):
    (tmp_path / "zeros").write_bytes(bytes(4096))
    with pytest.raises(LogError, match="not a dm-log-writes log"):
        read_log(tmp_path / "zeros")
    write_log(tmp_path / "log", [(0, 2, 0, b"a" * 1024)])
    (tmp_path / "log").write_bytes((tmp_path / "log").read_bytes()[:-512])
    with pytest.raises(LogError, match="runs past the end"):
        read_log(tmp_path / "log")


@pytest.mark.parametrize("name", sorted(breaks.BREAKS))
def test_each_deliberate_break_still_edits_the_source(tmp_path, name):
    relative, _ = breaks.BREAKS[name]
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_text((REPO / relative).read_text())
    breaks.apply(name, tmp_path)
    assert (tmp_path / relative).read_text() != (REPO / relative).read_text()


def test_each_break_names_a_data_filesystem_the_recorder_can_make():
    import record

    for name in breaks.BREAKS:
        assert breaks.DATA_FS.get(name, "ext4") in record.MKFS_OPTIONS
    assert breaks.DATA_FS["no-dir-fsync"] == "ext4-nojournal"


@pytest.mark.parametrize("data_fs,journal", [("ext4", True), ("ext4-nojournal", False)])
def test_the_checker_tells_a_partition_without_a_journal(tmp_path, data_fs, journal):
    """check.py repairs a partition without a journal with e2fsck before mounting it; one with a
    journal is mounted as it is (the kernel replays the journal)."""
    import subprocess

    import check
    import record

    image = tmp_path / "data.img"
    image.write_bytes(bytes(8 << 20))
    subprocess.run(["mkfs.ext4", "-q", "-F", *record.MKFS_OPTIONS[data_fs], str(image)], check=True)
    assert check.has_journal(image) is journal


def test_each_break_says_what_failure_it_must_cause_and_check_py_words_it_so():
    """A break is caught only by its own failure (e2fsck's repair without a journal can fail states
    for another reason): each signature is text check.py really prints."""
    source = (REPO / "image" / "powercut" / "check.py").read_text()
    assert set(breaks.SIGNATURES) == set(breaks.BREAKS)
    for signature in breaks.SIGNATURES.values():
        assert signature in source
