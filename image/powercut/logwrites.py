"""Reading a dm-log-writes log and replaying it onto a disk image, up to any entry.

The log's format (the kernel's drivers/md/dm-log-writes.c, the same that xfstests' replay-log reads):
block 0 holds the super (magic, version, number of entries, the log's sector size); from block 1 on,
each entry is one block holding its header (sector, number of sectors, flags, data length; a mark's
name follows the header in the same block), then the data written, ``nr_sectors`` blocks of it.
Entries are in the order the writes completed; a flush entry comes after every write that completed
before the flush was asked for, so the disk as replayed up to a flush is what that flush made durable,
and up to any entry between two flushes, one of the states a power cut could have left.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x6A736677736872
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16


class LogError(Exception):
    """The log is not a dm-log-writes log, or ends before its super says it does."""


@dataclass(frozen=True)
class Entry:
    index: int
    sector: int  # in the log's sector size
    nr_sectors: int
    flags: int
    offset: int  # where the entry's data starts in the log file (bytes)
    mark: str | None = None

    @property
    def is_flush(self) -> bool:
        return bool(self.flags & (FLUSH | FUA))

    @property
    def is_write(self) -> bool:
        return self.nr_sectors > 0 and not self.flags & (DISCARD | MARK)


def read_log(path: str | Path) -> tuple[int, list[Entry]]:
    """The log's sector size and its entries, without their data."""
    with open(path, "rb") as f:
        magic, version, nr_entries, sectorsize = SUPER.unpack(f.read(SUPER.size))
        if magic != MAGIC:
            raise LogError(f"{path}: not a dm-log-writes log (magic {magic:#x})")
        if version != 1 or sectorsize not in (512, 1024, 2048, 4096):
            raise LogError(f"{path}: log version {version}, sector size {sectorsize}: not understood")
        size = os.fstat(f.fileno()).st_size
        entries, position = [], sectorsize
        for index in range(nr_entries):
            f.seek(position)
            block = f.read(sectorsize)
            if len(block) < ENTRY.size:
                raise LogError(f"{path}: ends at entry {index} of {nr_entries}")
            sector, nr_sectors, flags, data_len = ENTRY.unpack_from(block)
            mark = None
            if flags & MARK:
                mark = block[ENTRY.size:ENTRY.size + data_len].split(b"\0")[0].decode(errors="replace")
            data_at = position + sectorsize
            entries.append(Entry(index, sector, nr_sectors, flags, data_at, mark))
            position = data_at + (0 if flags & (DISCARD | MARK) else nr_sectors * sectorsize)
            if position > size:
                raise LogError(f"{path}: entry {index}'s data runs past the end of the log")
    return sectorsize, entries


class Replay:
    """A disk image brought forward entry by entry: ``to(n)`` applies entries up to index n (inclusive)."""

    def __init__(self, log_path: str | Path, image_path: str | Path, size_bytes: int):
        self.sectorsize, self.entries = read_log(log_path)
        self.log = open(log_path, "rb")
        self.image = open(image_path, "w+b")
        self.image.truncate(size_bytes)
        self.size_bytes = size_bytes
        self.applied = -1  # the last entry applied

    def to(self, index: int) -> None:
        if index < self.applied:
            raise ValueError(f"entry {index} is behind the replay (at {self.applied}): replay forwards only")
        for entry in self.entries[self.applied + 1:index + 1]:
            start, length = entry.sector * self.sectorsize, entry.nr_sectors * self.sectorsize
            if entry.flags & DISCARD:
                self.image.seek(start)
                self.image.write(bytes(min(length, self.size_bytes - start)))
            elif entry.is_write:
                if start + length > self.size_bytes:
                    raise LogError(f"entry {entry.index} writes past the end of the disk ({start + length} bytes)")
                self.log.seek(entry.offset)
                self.image.seek(start)
                self.image.write(self.log.read(length))
        self.applied = max(self.applied, index)
        self.image.flush()

    def copy_range(self, out_path: str | Path, start_bytes: int, length_bytes: int) -> None:
        """A slice of the image as it is now (a partition) into a sparse file of its own."""
        self.image.flush()
        with open(out_path, "wb") as out:
            out.truncate(length_bytes)
            fd_in, fd_out = self.image.fileno(), out.fileno()
            done = 0
            while done < length_bytes:
                # Copy only the data the image holds, so that the copy stays as sparse as the image.
                try:
                    data = os.lseek(fd_in, start_bytes + done, os.SEEK_DATA)
                except OSError:  # no data after this point
                    break
                if data >= start_bytes + length_bytes:
                    break
                hole = min(os.lseek(fd_in, data, os.SEEK_HOLE), start_bytes + length_bytes)
                offset = data - start_bytes
                while offset < hole - start_bytes:
                    n = os.copy_file_range(fd_in, fd_out, hole - start_bytes - offset, start_bytes + offset, offset)
                    if n == 0:
                        break
                    offset += n
                done = hole - start_bytes

    def close(self) -> None:
        self.log.close()
        self.image.close()
