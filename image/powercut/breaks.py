"""Deliberate breaks of the appliance's durable write order, for proving the power-cut harness.

Each break is a small edit of a copy of the source tree (never of the working tree): the harness
records with the broken copy and must then find crash states that fail. An edit whose text is no
longer in the source fails loudly, so a break cannot silently stop breaking anything.

    breaks.py NAME TREE      apply break NAME to the tree at TREE
    breaks.py --list         every name (./dev acceptance runs them all)
    breaks.py --data-fs NAME the data filesystem break NAME is recorded on
    breaks.py --signature NAME  what check.py says of a state the break fails (it must say it at least once)

``no-dir-fsync`` is recorded on ext4 without a journal. On the card's ext4 (data=ordered) an fsync
commits the journal's whole running transaction, so the database's own fsync of the row, which
always follows the rename, makes the rename durable too: recorded for 90 s (100 crash states) and
240 s (416 keeps, 300 states), not one crash state failed. Without a journal, an fsync makes durable
its own file and the entries that lead to a new file, nothing else, as POSIX promises: there the
rename is lost without the directory's fsync, and the harness must see it. Without a journal, e2fsck's
repair of a crash state can itself lose fsynced data (it clears an extent that runs past the size the
inode had on disk: the tail of the database's WAL); check.py counts that apart. So each break must be
caught by its own signature, not by whatever fails: ``SIGNATURES``.
"""

from __future__ import annotations

import sys
from pathlib import Path

BREAKS = {
    # The image's bytes are never fsynced before the rename (and the row) make them visible.
    "no-file-fsync": ("appliance/storage/files.py", [(
        "            f.flush()\n            os.fsync(f.fileno())\n",
        "            f.flush()\n",
    )]),
    # The rename is never made durable by an fsync of its directory before the row is written.
    "no-dir-fsync": ("appliance/storage/files.py", [(
        "        raise\n    fsync_dir(path.parent)\n",
        "        raise\n",
    )]),
    # The row goes in before the files are written and renamed into place.
    "row-before-rename": ("appliance/storage/store.py", [(
        "        atomic_write_bytes(image_path, image_bytes)\n        atomic_write_bytes(thumb_path, thumb_bytes)\n"
        "        row = dict(record, image_path=str(relative), thumb_path=str(Path(THUMBS) / relative),\n"
        "                   bytes=len(image_bytes), sha256=hashlib.sha256(image_bytes).hexdigest())\n"
        "        return self.insert_row(row, crop_bytes, links)\n",
        "        row = dict(record, image_path=str(relative), thumb_path=str(Path(THUMBS) / relative),\n"
        "                   bytes=len(image_bytes), sha256=hashlib.sha256(image_bytes).hexdigest())\n"
        "        capture_id = self.insert_row(row, crop_bytes, links)\n"
        "        atomic_write_bytes(image_path, image_bytes)\n        atomic_write_bytes(thumb_path, thumb_bytes)\n"
        "        return capture_id\n",
    )]),
    # A batch read back right is marked offloaded at once, before the sync that makes its renames on
    # the stick durable.
    "offload-mark-early": ("appliance/transfer/offload/run.py", [(
        "        self._unsynced = good\n        if stopped:\n",
        "        self._mark(good)\n        self._unsynced = []\n        if stopped:\n",
    )]),
}


# The data filesystem each break is recorded on (image/powercut/record.py's DATA_FS); ext4 if not named.
DATA_FS = {"no-dir-fsync": "ext4-nojournal"}

# What check.py says of a state each break fails (in its "FAIL state" line): the break is caught only
# if some state fails for this reason.
SIGNATURES = {
    "no-file-fsync": "is incomplete or wrong",  # the row's image has its name but not all its bytes
    "no-dir-fsync": "is not there",  # the row's image is still under its temporary name
    "row-before-rename": "is not there",  # the row is durable before its image is
    "offload-mark-early": "is marked offloaded but the stick has",  # marked before the copy is durable
}


def apply(name: str, tree: Path) -> None:
    if name not in BREAKS:
        sys.exit(f"no break named {name!r}: one of {', '.join(BREAKS)}")
    relative, edits = BREAKS[name]
    path = tree / relative
    text = path.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            sys.exit(f"break {name}: {relative} no longer holds the text it edits ({text.count(old)} matches): "
                     "update image/powercut/breaks.py")
        text = text.replace(old, new)
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(BREAKS))
    elif sys.argv[1:2] == ["--data-fs"] and len(sys.argv) == 3:
        if sys.argv[2] not in BREAKS:
            sys.exit(f"no break named {sys.argv[2]!r}: one of {', '.join(BREAKS)}")
        print(DATA_FS.get(sys.argv[2], "ext4"))
    elif sys.argv[1:2] == ["--signature"] and len(sys.argv) == 3 and sys.argv[2] in SIGNATURES:
        print(SIGNATURES[sys.argv[2]])
    else:
        apply(sys.argv[1], Path(sys.argv[2]))
