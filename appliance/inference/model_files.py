"""The catalog's model files in a models folder: fetch them, install them only if their sha256 matches, verify them.

``fetch(entry, models_dir, from_dir=...)`` downloads an entry's files from the catalog's URLs, or
copies them from a folder (a USB stick). Either way the bytes are hashed as they stream into a
temporary file beside the target, which becomes the file only if its sha256 matches the catalog, so a
truncated download or a changed mirror never reaches the classifier. The members of one zip archive
(``member``) share one download of it; each is installed, or not, on its own. A file with a
``format`` is converted on install (``LABELMAP``: TensorFlow's labelmap.txt into "ID name" lines), and
the sha256 checked is the converted file's; with ``from_dir`` it is copied as it is, already converted.
``verify`` recomputes the sha256 of what is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import appliance
from appliance.errors import CatalogError
from appliance.inference.catalog import LABELMAP, Catalog, ModelEntry, ModelFile, load_catalog
from appliance.storage.files import atomic_file, sha256_file

log = logging.getLogger(__name__)

OK, MISMATCH, MISSING = "ok", "mismatch", "missing"
Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes done, total bytes if known)

_CHUNK, _TIMEOUT_S = 1 << 16, 30  # bytes per read; seconds a silent server is given


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did with one file: installed it, or found it already there and left it."""
    file: ModelFile
    path: Path
    was_present: bool


@dataclass(frozen=True)
class VerifyResult:
    """One catalog file checked in a models folder: ``ok``, ``mismatch`` or ``missing``."""
    entry: ModelEntry
    file: ModelFile
    path: Path
    status: str
    actual_sha256: str | None = None


def fetch(entry: ModelEntry, models_dir: str | Path, from_dir: str | Path | None = None,
          progress: Progress | None = None, edgetpu: bool = False) -> list[FetchResult]:
    """Install ``entry``'s files (model, labels file, and Edge TPU build if ``edgetpu``) into ``models_dir``.

    Downloads from the catalog's URLs, or copies from ``from_dir`` when given; nothing is installed
    whose sha256 does not match (a ``CatalogError`` says expected, got and the source). A file already
    present with the right sha256 is left alone. ``progress(file name, bytes done, total bytes or
    None)`` is called after every chunk; an archive's download counts under the first member it is for.
    """
    models_dir, files = Path(models_dir), entry.files(edgetpu)
    present = {file for file in files if _is_present(models_dir / file.filename, file)}
    installed: set[ModelFile] = set()
    for file in files:
        if file in present or file in installed:
            continue
        if from_dir is not None:
            _copy(Path(from_dir) / file.filename, file, models_dir / file.filename, progress)
            installed.add(file)
        elif not file.url:
            raise CatalogError(f"{file.filename}: the catalog pins no download address for it, only its sha256: copy "
                               f"it to a folder and run `appliance models fetch {entry.name} --from DIR`")
        elif file.member:  # and the other members of that archive, from the same download
            members = [f for f in files if f.member and f.url == file.url and f not in present]
            _install_members(file.url, members, models_dir, progress, entry.name)
            installed.update(members)
        else:
            _download(file, models_dir / file.filename, progress)
            installed.add(file)
    results = [FetchResult(file, models_dir / file.filename, was_present=file in present) for file in files]
    for result in results:
        if not result.was_present:
            log.debug("installed %s (sha256 ok)", result.path)
    return results


def verify(models_dir: str | Path, catalog: Catalog | None = None) -> list[VerifyResult]:
    """Recompute the sha256 of every catalog file (Edge TPU builds too) found in ``models_dir``."""
    results = []
    for entry in (catalog or load_catalog()).entries:
        for file in entry.files(edgetpu=True):
            path = Path(models_dir) / file.filename
            if not path.is_file():
                results.append(VerifyResult(entry, file, path, MISSING))
                continue
            actual = sha256_file(path)
            results.append(VerifyResult(entry, file, path, OK if actual == file.sha256 else MISMATCH, actual))
    return results


def labels_from_labelmap(labelmap: bytes) -> bytes:
    """TensorFlow's labelmap.txt (line i names id i; "???" an id not used) as the appliance's "ID name" lines.

    Unused ids and blank lines are left out; lines are joined by "\\n", with none at the end. Bytes
    that are not UTF-8 are replaced, so such a file fails the sha256 check that follows, not this.
    """
    names = [line.strip() for line in labelmap.decode("utf-8-sig", errors="replace").splitlines()]
    return "\n".join(f"{i} {name}" for i, name in enumerate(names) if name not in ("", "???")).encode()


_CONVERSIONS = {LABELMAP: labels_from_labelmap}


def _is_present(target: Path, file: ModelFile) -> bool:
    if target.is_file() and sha256_file(target) == file.sha256:
        log.debug("%s is already present with the right sha256; skipped", target)
        return True
    if target.exists():
        log.warning("%s has the wrong sha256; replacing it", target)
    return False


def _copy(source: Path, file: ModelFile, target: Path, progress: Progress | None) -> None:
    try:  # _install turns its own OSErrors into CatalogErrors: what reaches here is opening the source
        with source.open("rb") as f:
            _install(f, os.fstat(f.fileno()).st_size, file, target, str(source), progress)
    except OSError as e:
        raise CatalogError(f"{source}: cannot copy {file.filename} from here ({e.strerror})") from None


def _download(file: ModelFile, target: Path, progress: Progress | None) -> None:
    with _response(file.url) as response:
        stream, total = _converted(response, response.length, file)  # length: Content-Length
        _install(stream, total, file, target, file.url, progress)


def _install_members(url: str, files: list[ModelFile], models_dir: Path, progress: Progress | None,
                     name: str) -> None:
    """Download the zip archive at ``url`` into a temporary file (gone once closed), then install ``files`` from it.

    Each member is installed or not on its own, as if downloaded alone; ``name`` is the catalog
    entry's, which the error for a converted member names in its fix.
    """
    with _response(url) as response:
        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=models_dir) as archive:
            done, total = 0, response.length  # Content-Length; response.length counts down as it is read
            while chunk := response.read(_CHUNK):
                archive.write(chunk)
                done += len(chunk)
                if progress:
                    progress(files[0].filename, done, total)
            try:
                with zipfile.ZipFile(archive) as zipped:
                    for file in files:
                        with zipped.open(file.member) as member:
                            stream, size = _converted(member, zipped.getinfo(file.member).file_size, file)
                            _install(stream, size, file, models_dir / file.filename, f"{url}!{file.member}", None,
                                     name)
            except KeyError:
                raise CatalogError(f"{url}: the archive holds no {file.member}; nothing was installed") from None
            except (zipfile.BadZipFile, EOFError):
                raise CatalogError(f"{url}: not a whole zip archive ({done} bytes); nothing was installed") from None


@contextlib.contextmanager
def _response(url: str) -> Iterator[http.client.HTTPResponse]:
    """The server's answer to GET ``url``; its failures, in the block too, as ``CatalogError``s."""
    request = urllib.request.Request(url, headers={"User-Agent": f"appliance/{appliance.__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            yield response
    except urllib.error.HTTPError as e:
        raise CatalogError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise CatalogError(f"{url}: cannot download ({e.reason}); with no network, copy the file "
                           "to a folder and fetch with --from DIR") from None
    except (OSError, http.client.HTTPException) as e:  # the server hung up or timed out before replying
        raise CatalogError(f"{url}: download failed ({e!r})") from None


def _converted(stream: BinaryIO, size: int | None, file: ModelFile) -> tuple[BinaryIO, int | None]:
    """``stream`` and its size as the file to install: as it is, or converted from ``file.format``."""
    if not file.format:
        return stream, size
    data = _CONVERSIONS[file.format](stream.read())
    return io.BytesIO(data), len(data)


def _install(stream: BinaryIO, total: int | None, file: ModelFile, target: Path, source: str,
             progress: Progress | None, name: str = "") -> None:
    """Stream into ``target`` through a temporary file, hashing; rename only if the sha256 matches.

    ``name`` is the catalog entry's, which the error for a converted file (``file.format``) names in its fix.
    """
    digest, done = hashlib.sha256(), 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(file.filename, done, total)
            # http.client returns a short body without complaint when the server hangs up early.
            if total is not None and done != total:
                raise CatalogError(f"{source}: truncated: got {done} of {total} bytes; nothing was installed")
            if (actual := digest.hexdigest()) != file.sha256:
                what = f"{file.filename} made from it ({file.format})" if file.format else file.filename
                fix = (f"{file.filename} was not installed: the file it is made from is not the one the catalog was "
                       f"pinned against; copy a {file.filename} to a folder and run `appliance models fetch {name} "
                       "--from DIR`") if file.format else "nothing was installed"
                raise CatalogError(f"{source}: sha256 mismatch for {what}: expected {file.sha256}, got {actual}; {fix}")
    except (OSError, http.client.HTTPException) as e:  # a reset or timeout mid-transfer, a full disk
        raise CatalogError(f"{source}: fetching into {target} failed after {done} bytes ({e!r}); "
                           "nothing was installed") from None
