"""Start-up reconciliation: rows and files back in step after a crash, a power cut or a card edited elsewhere.

``Store.add`` writes in one order (each file: temp → fsync → rename → fsync of its folder): the
image, then its thumbnail, then the row. A crash at any point leaves at most one of these, each
settled here:

* a temp image (``.NAME.PID.tmp``): complete (``images.read_kept``: it ends with the JPEG end
  marker, its record is valid, and its bytes match the ``jpeg_sha256`` the record holds, or decode
  whole where it holds none) → fsynced, renamed into place and indexed; incomplete → quarantined;
* an image without a row → indexed from the record in its comment, if it is complete and the
  record valid, else quarantined;
* a temp thumbnail → quarantined; its image gets a new thumbnail.

A card edited elsewhere may also have: rows whose image is gone (marked ``missing``; their
thumbnails stay), rows whose thumbnail is gone (made again), thumbnails of no row (quarantined), and
things that are not regular files (FIFOs, sockets, devices, symbolic links): those are left where
they are with a warning, never opened and never followed, so nothing outside the data dir is read
or moved. Nothing is ever deleted, but for the files of a delete (the owner's, or retention's) whose
rows were already gone when the power went (``Store.delete`` writes their paths down first): what
cannot be used goes to ``<data>/quarantine/`` under its own path. A record is never half-trusted: one field of the wrong type or form quarantines the file,
because its row is what the page shows, the exports carry and the sync hands on, and a made-up
value there would be a lie (the appliance's own writer never makes such a record).

``reconcile_data_dir(data_dir)`` runs all of it on a data dir alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from appliance.storage.files import (
    TMP_SUFFIX, atomic_write_bytes, fsync_dir, fsync_file, kind_of, read_regular, target_of_temp,
)
from appliance.storage.images import EOI, read_kept, thumbnail_of_file

if TYPE_CHECKING:  # an annotation only: store.py imports this module
    from appliance.storage.store import Store

log = logging.getLogger(__name__)

THUMBS = "thumbs"
QUARANTINE = "quarantine"
DEFAULT_THUMBNAIL_PX = 320  # storage.thumbnail_px's default


@dataclass
class ReconcileReport:
    """What start-up reconciliation found and did; paths are relative to the data dir."""

    missing: list[int] = field(default_factory=list)  # ids of rows whose image is gone
    reindexed: list[str] = field(default_factory=list)  # images that had no row
    recovered: dict[str, str] = field(default_factory=dict)  # complete temp image → where it was renamed
    thumbnails: list[str] = field(default_factory=list)  # thumbnails made again
    quarantined: list[str] = field(default_factory=list)  # where each quarantined file now is
    skipped: list[str] = field(default_factory=list)  # not regular files: left alone
    deleted: list[str] = field(default_factory=list)  # files of deletes a power cut interrupted, now gone

    def __str__(self):
        return (f"{len(self.missing)} rows with missing files, {len(self.reindexed)} files re-indexed, "
                f"{len(self.recovered)} unfinished writes completed, {len(self.thumbnails)} thumbnails made, "
                f"{len(self.quarantined)} files quarantined, {len(self.skipped)} things that are not files left alone, "
                f"{len(self.deleted)} files of interrupted deletes removed")

    def __bool__(self):
        return any((self.missing, self.reindexed, self.recovered, self.thumbnails, self.quarantined, self.skipped,
                    self.deleted))


def reconcile_data_dir(data_dir: str | Path, thumbnail_px: int = DEFAULT_THUMBNAIL_PX) -> ReconcileReport:
    """Reconcile the store in ``data_dir`` (its database is made if absent) and close it again."""
    from appliance.storage.store import Store

    store = Store(data_dir)
    try:
        return reconcile(store, lambda path: thumbnail_of_file(path, thumbnail_px))
    finally:
        store.close()


def reconcile(store: Store, thumbnail: Callable[[Path], bytes] | None = None) -> ReconcileReport:
    """Bring ``store``'s rows and files back into step (see the module's doc).

    ``thumbnail(image_path) -> bytes`` makes a thumbnail; the default is 320 px on the longest side."""
    return _Reconciliation(store, thumbnail or thumbnail_of_file).run()


class _Reconciliation:
    def __init__(self, store, thumbnail):
        self.store, self.thumbnail = store, thumbnail
        self.data = store.data_dir
        self.report = ReconcileReport()

    def run(self) -> ReconcileReport:
        self.report.deleted = self.store.finish_deletes()
        images, thumbs = self._scan()
        on_disk = {"images": set(images), "thumbs": set(thumbs)}
        known_thumbs, indexed = set(), set()
        for row in self.store.rows():
            indexed.add(row["image_path"])
            known_thumbs.add(self._check_row(row, on_disk))
        for relative in images:
            if relative.name.endswith(TMP_SUFFIX):
                self._recover(relative, known_thumbs)
            elif str(relative) not in indexed:
                self._index(relative, self.data / relative, known_thumbs)
        for relative in thumbs:
            if relative.name.endswith(TMP_SUFFIX):
                self._quarantine(relative, "an unfinished write of a thumbnail (its image gets a new one)")
            elif str(relative) not in known_thumbs:
                self._quarantine(relative, "a thumbnail of no kept image")
        self.store.refresh_usage()
        # Settle start-up's own writes into the database file now, so a run that keeps nothing leaves
        # it untouched even at shutdown (closing would otherwise checkpoint them then).
        self.store.checkpoint()
        if self.report:
            log.warning("store %s reconciled: %s", self.data, self.report)
        return self.report

    # -- finding files: regular ones only, no link followed ----------------------------------------

    def _scan(self) -> tuple[list[Path], list[Path]]:
        """Regular files under the day folders and under thumbs/, relative, in name order."""
        images, thumbs = [], []
        for entry in sorted(os.scandir(self.data), key=lambda e: e.name):
            if entry.name.isdigit() or entry.name == THUMBS:
                if entry.is_dir(follow_symlinks=False):
                    (thumbs if entry.name == THUMBS else images).extend(self._walk(Path(entry.path)))
                elif not entry.is_file(follow_symlinks=False):
                    self._skip(Path(entry.path))
        return images, thumbs

    def _walk(self, folder: Path):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(path)
            elif entry.is_file(follow_symlinks=False):
                yield path.relative_to(self.data)
            else:
                self._skip(path)

    def _skip(self, path: Path):
        relative = str(path.relative_to(self.data))
        self.report.skipped.append(relative)
        log.warning("left %s alone: it is %s, not a regular file (the store never makes one)", relative, kind_of(path))

    # -- rows ----------------------------------------------------------------------------------------

    def _check_row(self, row, on_disk) -> str:
        """Mark the row missing or present; make its thumbnail again if it is gone. Its thumbnail's path."""
        relative = Path(row["image_path"])
        is_missing = relative not in on_disk["images"] and kind_of(self.data / relative) != "a regular file"
        if is_missing != bool(row["missing"]):
            self.store.mark_missing(row["id"], is_missing)
        if is_missing:
            self.report.missing.append(row["id"])
        thumb = row["thumb_path"] or str(Path(THUMBS) / relative)
        if not is_missing and Path(thumb) not in on_disk["thumbs"] and kind_of(self.data / thumb) == "gone":
            if self._make_thumbnail(self.data / relative, Path(thumb)) and not row["thumb_path"]:
                self.store.set_thumb_path(row["id"], thumb)
        return thumb

    # -- files without rows --------------------------------------------------------------------------

    def _recover(self, relative: Path, known_thumbs: set):
        """A temp image: finished and indexed if it is complete, else quarantined."""
        name = target_of_temp(relative.name)
        if name is None:
            self._quarantine(relative, "an unfinished write")
            return
        self._index(relative, _free(self.data / relative.with_name(name)), known_thumbs, is_temp=True)

    def _index(self, relative: Path, target: Path, known_thumbs: set, is_temp: bool = False):
        """Index the image at ``relative`` as ``target`` (renaming a temp file there first) if it is
        complete and its record valid; else quarantine it."""
        path = self.data / relative
        try:
            data = read_regular(path)
            record, (width, height) = read_kept(data)
        except (OSError, ValueError) as e:
            self._quarantine(relative, f"an unfinished write ({e})" if is_temp else str(e))
            return
        # A file is durable before its row exists, whoever wrote it and however far they got.
        fsync_file(path)
        if is_temp:
            os.rename(path, target)
            fsync_dir(target.parent)
        final = target.relative_to(self.data)
        thumb = Path(THUMBS) / final
        self._keep_or_make_thumbnail(target, thumb)
        self.store.insert_row(dict(record, image_path=str(final), thumb_path=str(thumb), width=width, height=height,
                                   bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        known_thumbs.add(str(thumb))
        if is_temp:
            self.report.recovered[str(relative)] = str(final)
            log.warning("completed %s from %s: the write was whole, its rename cut off by a crash", final, relative)
        else:
            self.report.reindexed.append(str(final))
            log.warning("re-indexed %s: its file was complete but its row was missing", final)

    # -- thumbnails ----------------------------------------------------------------------------------

    def _keep_or_make_thumbnail(self, image: Path, thumb: Path):
        path = self.data / thumb
        kind = kind_of(path)
        if kind == "a regular file":
            try:
                if read_regular(path).endswith(EOI):
                    return
            except OSError:
                pass
            self._quarantine(thumb, "an incomplete thumbnail (a new one is made)")
        elif kind != "gone":
            return  # not a regular file: left alone (a warning said so), and not written over
        self._make_thumbnail(image, thumb)

    def _make_thumbnail(self, image: Path, thumb: Path) -> bool:
        try:
            data = self.thumbnail(image)
            (self.data / thumb).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.data / thumb, data)
        except Exception as e:  # a thumbnail is a convenience: its failure must not stop the start
            log.warning("could not make the thumbnail %s of %s: %s", thumb, image.relative_to(self.data), e)
            return False
        self.report.thumbnails.append(str(thumb))
        return True

    # -- quarantine ----------------------------------------------------------------------------------

    def _quarantine(self, relative: Path, why: str):
        target = _free(self.data / QUARANTINE / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.data / relative, target)
        self.report.quarantined.append(str(target.relative_to(self.data)))
        log.warning("quarantined %s: %s", target.relative_to(self.data), why)


def _free(path: Path) -> Path:
    """``path``, or ``NAME_1.EXT``, ``NAME_2.EXT``… beside it: the first that does not exist."""
    candidate, n = path, 1
    while os.path.lexists(candidate):
        candidate, n = path.with_name(f"{path.stem}_{n}{path.suffix}"), n + 1
    return candidate
