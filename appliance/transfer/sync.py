"""Pulling kept images off an appliance over its sync API (web/api.py), verified and resumable.

The device lists captures by a cursor that only grows. For each one, a file DEST already holds with
the same sha256 is skipped; anything else is downloaded beside its final name, hashed as it streams,
and installed (fsync, rename) only if the hash is the device's. After each page the verified items
are acknowledged (the device marks them synced, so its retention may free them) and only then is
the cursor stored in ``DEST/.appliance-sync.json``. The cursor never passes an item that failed, so
the next run retries it; the items after it are then skipped as already present.

``DEST/manifest.jsonl`` gains one row per id as each file is installed, so an interrupted run loses
nothing; ``DEST/manifest.csv`` is rewritten from it at the end of a run that changed it.

A correction made on the device after an item was synced reaches DEST on the next run: each run
first lists the items up to the cursor again, and one whose manifest row differs from the device's
listing (its label, so its folder) has its file moved to its new name and its row rewritten, with
nothing downloaded again. Comparing needs no record of changes on the device (an item's listing
says all there is), and it also brings over what an older version exported differently (audit
keeps, once in class folders, move to ``_audit/``). Its cost is that listing, in pages of
``MAX_LIMIT``: ~0.6 KB of JSON an item, 100,000 items in ~4 s on a laptop.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit, urlunsplit

from appliance import __version__
from appliance.errors import (ApplianceError, DestinationError, NotAnAppliance, SyncError, SyncRefused, Unreachable,
                              WrongPassword)
from appliance.storage.files import TMP_SUFFIX, atomic_file, atomic_write_bytes, fsync_dir, sha256_file
from appliance.transfer.export import Manifest, manifest_row

log = logging.getLogger(__name__)

STATE_FILE = ".appliance-sync.json"
MANIFEST_STEM = "manifest"  # manifest.jsonl and manifest.csv
MAX_LIMIT = 1000  # the API's own cap on a page
ACK_BATCH = 400   # the device takes at most 64 KB of JSON per request; 400 items fit with room to spare
TIMEOUT_S = 30.0
_CHUNK = 256 * 1024
_ITEM_KEYS = {"id", "file", "sha256", "image_url", "synced_at", "bytes", "captured_at", "model_label",
              "corrected_label", "score", "model", "kind", "source"}
_OWN_PAGE = "give the address of the appliance's own page, e.g. http://appliance.local/"


@dataclass
class SyncReport:
    """What a run did; ``failed`` holds ``(id, reason)`` for items that did not verify; ``updated``
    counts items synced before whose row the device changed since (moved, manifests rewritten)."""

    url: str
    dest: Path
    new: int = 0
    skipped: int = 0
    updated: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    pages: int = 0
    cursor: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _ItemFailed(Exception):
    """One item did not verify; the run carries on with the rest."""


def sync(url: str, dest: str | Path, password: str, limit: int = 100, progress=None) -> SyncReport:
    """Pull every capture beyond DEST's stored cursor from the appliance at ``url`` into ``dest``.

    ``progress(report)`` is called after each page. Items that fail verification are listed in
    ``report.failed``; the device or DEST failing as a whole raises ``SyncError`` or ``DestinationError``.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}")
    device, dest, started_s = Device(url, password), Path(dest), time.monotonic()
    report = SyncReport(device.url, dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(dest)
        report.cursor = _load_cursor(dest, device.url)
        manifest = Manifest(dest / MANIFEST_STEM, resume=True, fsync_each_add=True)
        try:
            _follow_changes(device, manifest, report, progress)
            _pull(device, manifest, report, limit, progress)
        finally:
            manifest.close()
    except ApplianceError:
        raise
    except OSError as e:  # DEST's disk: network errors arrive as SyncError, an ApplianceError
        raise DestinationError(f"{dest}: cannot write there ({e})") from e
    finally:
        report.seconds = time.monotonic() - started_s
    return report


def _follow_changes(device, manifest, report, progress):
    """Bring what the device changed since earlier runs synced them to the items up to the cursor,
    listed in the API's largest pages (nothing is acknowledged for them)."""
    after = 0
    while after < report.cursor:
        page = device.page(after, MAX_LIMIT)
        for item in (i for i in page["items"] if i["id"] <= report.cursor):
            try:
                _follow(report.dest, item, manifest, report)
            except _ItemFailed as e:
                report.failed.append((item["id"], str(e)))
        report.pages += 1
        if progress:
            progress(report)
        if page.get("next") is None:
            return
        after = int(page["next"])


def _pull(device, manifest, report, limit, progress):
    after = cursor = report.cursor
    is_blocked = False
    while True:
        page = device.page(after, limit)
        to_ack = []
        for item in page["items"]:
            try:
                _follow(report.dest, item, manifest, report)  # in the manifest already: a run cut short
                _sync_item(device, report.dest, item, manifest, report)
                if item["synced_at"] is None:
                    to_ack.append(item)
            except _ItemFailed as e:
                log.debug("capture %s: %s", item["id"], e)  # the caller reports it, from report.failed
                report.failed.append((item["id"], str(e)))
                is_blocked = True  # the cursor stays before it for the rest of the run: the next run retries it
            cursor = cursor if is_blocked else item["id"]
        device.ack(to_ack)
        if cursor != report.cursor:  # stored only after the ack, so nothing verified goes unacknowledged
            atomic_write_bytes(report.dest / STATE_FILE, json.dumps({"url": device.url, "cursor": cursor}).encode())
        report.pages, report.cursor = report.pages + 1, cursor
        if progress:
            progress(report)
        if page.get("next") is None:
            return
        after = int(page["next"])


def _sync_item(device, dest, item, manifest, report) -> None:
    """Make ``DEST/<file>`` the device's verified image, or raise ``_ItemFailed``."""
    target = _target(dest, item)
    if target.is_file() and sha256_file(target) == item["sha256"]:
        report.skipped += 1
    else:
        if target.exists():
            log.warning("%s differs from the device's capture %s: replacing it", target, item["id"])
        report.bytes += device.fetch(item, target)
        report.new += 1
    manifest.add([_manifest_row(item)])


def _follow(dest, item, manifest, report) -> None:
    """Bring what the device changed since ``item`` was synced (a correction, so its folder) to DEST:
    its file moves to its new name and its manifest row is rewritten."""
    old, row = manifest.rows.get(item["id"]), _manifest_row(item)
    if old is None or old == row:
        return
    if old.get("file") != row["file"]:
        _move(dest, old.get("file"), item)
    manifest.replace(row)
    report.updated += 1


def _move(dest: Path, old_file, item) -> None:
    """Move ``DEST/<old_file>`` to the item's name. A file no longer in DEST (its owner removed it,
    or a run cut short moved it) is not fetched again; if the new name holds the image already (an
    older version fetched it again there), the old copy goes."""
    target = _target(dest, item)
    source = _local(dest, old_file) if isinstance(old_file, str) else None
    if source is None or not source.is_file():
        log.info("capture %s: %s is no longer in %s: only its manifest row changes", item["id"], old_file, dest)
        return
    if not (target.is_file() and sha256_file(target) == item["sha256"]):
        is_new_folder = not target.parent.is_dir()
        target.parent.mkdir(exist_ok=True)
        if is_new_folder:
            fsync_dir(dest)
        os.replace(source, target)
        fsync_dir(target.parent)
    elif sha256_file(source) == item["sha256"]:
        source.unlink()
    else:
        return  # not the device's image any more: someone's own file, left alone
    fsync_dir(source.parent)
    with contextlib.suppress(OSError):  # a class folder left empty goes: training loaders refuse those
        source.parent.rmdir()
    log.info("capture %s: %s moved to %s", item["id"], old_file, item["file"])


def _manifest_row(item) -> dict:
    return manifest_row(dict(item, label=item["model_label"], model_name=item["model"]), item["file"])


def _target(dest: Path, item) -> Path:
    target = _local(dest, item["file"])
    if target is None:
        raise _ItemFailed(f"unsafe file name from the device: {item['file']!r}")  # it could land outside DEST
    return target


def _local(dest: Path, file: str) -> Path | None:
    """``DEST/<folder>/<name>`` for an export name; None for one that could land outside DEST."""
    parts = PurePosixPath(file).parts
    if len(parts) != 2 or any(p.startswith((".", "/")) or "\\" in p or "\0" in p for p in parts):
        return None
    return dest.joinpath(*parts)


class Device:
    """The sync API of the appliance at ``url``, with HTTP Basic auth (any user name)."""

    def __init__(self, url: str, password: str):
        self.url = normalise_url(url)
        token = base64.b64encode(f"sync:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "User-Agent": f"appliance-sync/{__version__}"}
        # No proxies: the appliance is on the LAN. No redirects: they would carry the password elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)

    def page(self, after: int, limit: int) -> dict:
        """One page of the capture list, checked to be the appliance's."""
        try:
            with self._open(f"api/v1/captures?after={after}&limit={limit}") as response:
                body = json.loads(_read(response, self.url))
            if not all(map(_is_item, body["items"])):
                raise TypeError("an item lacks a field")
            if body.get("next") is not None and int(body["next"]) <= after:
                raise ValueError("its cursor went backwards")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise NotAnAppliance(f"{self.url} does not answer like an appliance ({e}): {_OWN_PAGE}") from None
        except _HttpStatus as e:
            if e.status in (404, 405):
                raise NotAnAppliance(f"{self.url} is not an appliance: it has no sync API "
                                     f"(HTTP {e.status}): {_OWN_PAGE}") from None
            raise
        return body

    def fetch(self, item: dict, target: Path) -> int:
        """Download the item's image and install it as ``target`` if its sha256 matches; its size.

        Raises ``_ItemFailed`` on a mismatch or an HTTP error for this image (404: deleted meanwhile)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            # atomic_file installs the file only if this block ends without raising: a mismatch
            # (or a dropped connection) leaves nothing behind.
            with self._open(item["image_url"]) as response, atomic_file(target) as out:
                etag = response.headers.get("ETag", "").removeprefix("W/").strip('"')
                if etag and etag != item["sha256"]:
                    raise _ItemFailed(f"sha256 mismatch: device lists {item['sha256']}, its ETag says {etag}")
                while chunk := _read(response, self.url, _CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                if digest.hexdigest() != item["sha256"]:
                    raise _ItemFailed(f"sha256 mismatch: device says {item['sha256']}, received {digest.hexdigest()}")
        except _HttpStatus as e:
            raise _ItemFailed(str(e)) from None
        return size

    def ack(self, items: list[dict]) -> None:
        """Tell the device these were verified; it marks them synced."""
        for start in range(0, len(items), ACK_BATCH):
            batch = [{"id": i["id"], "sha256": i["sha256"]} for i in items[start:start + ACK_BATCH]]
            with self._open("api/v1/sync/ack", {"items": batch}) as response:
                refused = json.loads(_read(response, self.url)).get("refused")
            if refused:
                log.warning("the device did not mark %s as synced (deleted meanwhile?)", refused)

    def _open(self, path: str, body=None):
        url = urljoin(self.url, path)
        if urlsplit(url)[:2] != urlsplit(self.url)[:2]:
            raise NotAnAppliance(f"{self.url} sent a link to another server ({url}): not sending the password there")
        headers = dict(self._headers, **({"Content-Type": "application/json"} if body is not None else {}))
        request = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None, headers)
        try:
            return self._opener.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            raise self._refusal(e) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise Unreachable(f"cannot reach {self.url} ({getattr(e, 'reason', None) or e}): check the address, "
                              "and that the appliance is on and on the same network as this computer") from None

    def _refusal(self, e: urllib.error.HTTPError) -> SyncError:
        try:
            message = json.loads(e.read(64 * 1024)).get("error") or ""
        except (ValueError, AttributeError, OSError, http.client.HTTPException):
            message = ""
        finally:
            e.close()
        if e.code == 401:
            return WrongPassword(f"{self.url}: wrong password (the appliance answered 401): give the password "
                                 "set under [web] in the appliance's appliance.toml")
        if e.code == 403:
            return SyncRefused(f"{self.url} refused to sync: {message or 'forbidden (HTTP 403)'}")
        if 300 <= e.code < 400:
            return NotAnAppliance(f"{self.url} redirects to {e.headers.get('Location')}: {_OWN_PAGE}")
        return _HttpStatus(e.code, f"{e.url} answered HTTP {e.code} ({message or e.reason})")


class _HttpStatus(SyncError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # urllib then raises the 3xx as an HTTPError


def _is_item(item) -> bool:
    return (isinstance(item, dict) and _ITEM_KEYS <= item.keys() and type(item["id"]) is int
            and all(isinstance(item[k], str) for k in ("file", "sha256", "image_url")))


def _read(response, url: str, size: int = -1) -> bytes:
    try:
        return response.read(size)
    except (OSError, http.client.HTTPException) as e:
        raise Unreachable(f"lost the connection to {url} ({e or type(e).__name__}): run again to resume") from None


def normalise_url(url: str) -> str:
    """``pi.local`` → ``http://pi.local/``: the form stored in the state file and compared with it."""
    parts = urlsplit(url.strip() if "://" in url else f"http://{url.strip()}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotAnAppliance(f"{url!r} is not a web address: {_OWN_PAGE}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


def _load_cursor(dest: Path, url: str) -> int:
    path = dest / STATE_FILE
    try:
        state = json.loads(path.read_text())
        synced_from, cursor = state["url"], int(state["cursor"])
    except FileNotFoundError:
        return 0
    except (ValueError, KeyError, TypeError):
        raise DestinationError(f"{path} is damaged: delete it to start over (files already in {dest} "
                               "are not downloaded again)") from None
    if synced_from != url:  # two devices' ids overlap, so one folder (and one manifest) per device
        raise DestinationError(f"{dest} holds images synced from {synced_from}, not {url}: sync each appliance "
                               f"into its own folder (the same appliance at a new address? delete {path}; "
                               "files already there are not downloaded again)")
    return cursor


def _remove_leftovers(dest: Path) -> None:
    """Downloads and state writes cut short by a crash or a kill."""
    ours = (STATE_FILE, f"{MANIFEST_STEM}.jsonl", f"{MANIFEST_STEM}.csv")
    leftovers = [*dest.glob(f"*/.*{TMP_SUFFIX}"), *(p for n in ours for p in dest.glob(f".{n}.*{TMP_SUFFIX}"))]
    for path in leftovers:
        log.info("removing %s, left by an interrupted sync", path)
        path.unlink(missing_ok=True)
