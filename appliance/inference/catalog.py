"""The models catalog: which classifiers and detectors the appliance knows, where they come from, their sha256.

The catalog is ``models/catalog.toml`` in the repository; the wheel ships it as
``appliance/data/catalog.toml``. A model file is installed only once its sha256 matches the catalog,
so a truncated download or a changed mirror never reaches the classifier. Fetching works offline
too: ``fetch(entry, models_dir, from_dir=...)`` copies from a folder (a USB stick) with the same check.
A model published only inside a zip archive (``member``) is downloaded whole and the member installed,
checked against the member's own sha256; a model with no labels inside it has its labels file pinned too.

At every start the classifier checks its model file the same way (``identify_model``): a file named
like a catalog model whose sha256 differs is damaged and refused, and the model's keep rule
(``keep_defaults``) is the catalog's only for a file the catalog really knows.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import tomllib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

import appliance
from appliance.errors import CatalogError, ConfigError, ModelError
from appliance.storage.files import atomic_file, sha256_file

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "APPLIANCE_MODELS_DIR"
DEVICE_MODELS_DIR = Path("/var/lib/appliance/models")  # created by the device image
OK, MISMATCH, MISSING = "ok", "mismatch", "missing"
CLASSIFIER, DETECTOR = "classifier", "detector"  # an entry's kind
Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes done, total bytes if known)

_CHUNK, _TIMEOUT_S = 1 << 16, 30  # bytes per read; seconds a silent server is given


def _matches(regex: str, allowed: str):
    return lambda v: isinstance(v, str) and re.fullmatch(regex, v) is not None, allowed


# What each key of catalog.toml must hold: (check, what is allowed). None: a table checked on its own.
_TEXT = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
_PATTERNS = (lambda v: isinstance(v, list) and all(isinstance(p, str) and p for p in v), "a list of label patterns")
_FILE_SPEC = {"filename": _matches(r"[A-Za-z0-9][A-Za-z0-9._-]*\.tflite", "a NAME.tflite file name"),
              "url": _matches(r"https?://\S+", "an http(s) URL"),
              "sha256": _matches(r"[0-9a-f]{64}", "64 lowercase hex digits"),
              "member": _matches(r"[^/\s][^\s]*", "the name of the file inside the zip archive at url")}
_LABELS_SPEC = {**_FILE_SPEC, "filename": _matches(r"[A-Za-z0-9][A-Za-z0-9._-]*\.txt", "a NAME.txt file name")}
_KEEP_SPEC = {"labels": _PATTERNS, "ignore": _PATTERNS,
              "min_score": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a number from 0 to 1")}
_ENTRY_SPEC = {"name": _matches(r"(?!(?:all|default)$)[a-z0-9][a-z0-9._-]*",  # `models fetch all|default` are commands
                                "lowercase letters, digits, '.', '_' and '-' (not 'all' or 'default')"),
               **_FILE_SPEC,
               "kind": (lambda v: v in (CLASSIFIER, DETECTOR), f"{CLASSIFIER} or {DETECTOR}"),
               "input_size": (lambda v: isinstance(v, list) and len(v) == 2
                              and all(type(n) is int and n > 0 for n in v), "[width, height] in pixels"),
               "licence": _TEXT, "labels_description": _TEXT, "labels": None, "keep": None, "edgetpu": None}
_DETECTOR_SPEC = {key: spec for key, spec in _ENTRY_SPEC.items() if key != "keep"}  # its crops get the classifier's


@dataclass(frozen=True)
class KeepDefaults:
    """A model's default keep rule; each key the config's ``[keep]`` section sets overrides it."""
    labels: tuple[str, ...]
    ignore: tuple[str, ...]
    min_score: float

    def describe(self) -> str:
        """The rule in a few words: ``* except background, score >= 0.5``."""
        rule = ", ".join(self.labels) + (" except " + ", ".join(self.ignore) if self.ignore else "")
        return f"{rule}, score >= {self.min_score:g}"


@dataclass(frozen=True)
class ModelFile:
    """One file to fetch: its name in the models folder, its canonical URL and its sha256.

    ``member`` names the file inside the zip archive at ``url`` when it is published only in one;
    ``url`` is empty for a file whose download address is not pinned (it is copied with --from only).
    """
    filename: str
    url: str
    sha256: str
    member: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalog, a classifier or a detector (``kind``).

    ``keep`` is a classifier's default keep rule (None for a detector: the rule applies to the
    classifier's label for each crop); ``labels`` the labels file of a model that carries none inside;
    ``edgetpu`` its Coral Edge TPU build, when one is pinned.
    """
    name: str
    filename: str
    url: str
    sha256: str
    input_size: tuple[int, int]  # (width, height)
    licence: str
    labels_description: str
    keep: KeepDefaults | None
    edgetpu: ModelFile | None = None
    kind: str = CLASSIFIER
    labels: ModelFile | None = None
    member: str = ""

    def files(self, edgetpu: bool = False) -> tuple[ModelFile, ...]:
        """The CPU model's file, its labels file if pinned, then the Edge TPU build's when asked for and pinned."""
        cpu = ModelFile(self.filename, self.url, self.sha256, self.member)
        tpu = (self.edgetpu,) if edgetpu and self.edgetpu else ()
        return (cpu, self.labels, *tpu) if self.labels else (cpu, *tpu)


@dataclass(frozen=True)
class Catalog:
    """The catalog's entries in file order, and the one a fresh appliance runs."""
    entries: tuple[ModelEntry, ...]
    default: ModelEntry
    source: str = "<catalog>"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.entries)

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name``; a ``CatalogError`` listing the known names otherwise."""
        if entry := next((e for e in self.entries if e.name == name), None):
            return entry
        raise CatalogError(f"{self.source}: no model named {name!r}, known: {', '.join(self.names)}")

    def find_by_sha256(self, sha256: str) -> ModelEntry | None:
        """The entry whose CPU model has this sha256 (how a model file on disk is recognised)."""
        return next((e for e in self.entries if e.sha256 == sha256.lower()), None)

    def find_by_edgetpu_sha256(self, sha256: str) -> ModelEntry | None:
        """The entry whose pinned Edge TPU build has this sha256."""
        return next((e for e in self.entries if e.edgetpu and e.edgetpu.sha256 == sha256.lower()), None)


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


def default_catalog_path() -> Path:
    """The wheel's ``appliance/data/catalog.toml`` when installed, else the repository's."""
    installed = Path(appliance.__file__).resolve().parent / "data" / "catalog.toml"
    return installed if installed.exists() else installed.parents[2] / "models" / "catalog.toml"


def default_models_dir(environ: Mapping[str, str] | None = None,
                       device_dir: Path = DEVICE_MODELS_DIR) -> Path:
    """``$APPLIANCE_MODELS_DIR``; else the device's folder if it exists; else the user's data folder."""
    environ = os.environ if environ is None else environ
    if environ.get(MODELS_DIR_ENV):
        return Path(environ[MODELS_DIR_ENV])
    if device_dir.is_dir():
        return device_dir
    # The XDG spec says a relative $XDG_DATA_HOME is invalid and must be ignored.
    data_home = environ.get("XDG_DATA_HOME", "")
    base = Path(data_home) if os.path.isabs(data_home) else Path(environ.get("HOME", "~"), ".local/share")
    return (base / "appliance" / "models").expanduser()


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and check a catalog; a ``CatalogError`` reads ``FILE: models[2] (NAME): KEY: problem``."""
    source = str(path if path is not None else default_catalog_path())
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{source}: not valid TOML ({e})") from None
    except OSError as e:
        raise CatalogError(f"{source}: the catalog cannot be read ({e.strerror})") from None
    _check(data, {"default": _TEXT, "models": None}, source, "top level")
    if not isinstance(data["models"], list) or not data["models"]:
        raise CatalogError(f"{source}: models: must be one or more [[models]] tables")
    entries = tuple(_entry(table, i, source) for i, table in enumerate(data["models"]))
    for key in ("name", "filename"):
        seen = [getattr(e, key) for e in entries]
        if duplicate := next((v for v in seen if seen.count(v) > 1), None):
            raise CatalogError(f"{source}: models: {key} {duplicate!r} is used by two entries")
    by_name = {entry.name: entry for entry in entries if entry.kind == CLASSIFIER}
    if data["default"] not in by_name:
        raise CatalogError(f"{source}: default: {data['default']!r} is not a classifier here, "
                           f"allowed: {', '.join(by_name)}")
    return Catalog(entries, by_name[data["default"]], source)


def _entry(table, index: int, source: str) -> ModelEntry:
    name = table.get("name") if isinstance(table, dict) else None
    where = f"models[{index}]" + (f" ({name})" if isinstance(name, str) else "")
    is_detector = isinstance(table, dict) and table.get("kind") == DETECTOR
    spec = _DETECTOR_SPEC if is_detector else _ENTRY_SPEC
    _check(table, spec, source, where, optional=("kind", "member", "labels", "edgetpu"))
    keep = None if is_detector else _check(table["keep"], _KEEP_SPEC, source, f"{where}: keep")
    tpu, labels = table.get("edgetpu"), table.get("labels")
    if tpu is not None:
        tpu = ModelFile(**_check(tpu, _FILE_SPEC, source, f"{where}: edgetpu", ("member",)))
    if labels is not None:
        labels = ModelFile(**{"url": "", **_check(labels, _LABELS_SPEC, source, f"{where}: labels", ("url", "member"))})
    return ModelEntry(
        name=name, filename=table["filename"], url=table["url"], sha256=table["sha256"],
        input_size=tuple(table["input_size"]), licence=table["licence"],
        labels_description=table["labels_description"],
        keep=KeepDefaults(tuple(keep["labels"]), tuple(keep["ignore"]), float(keep["min_score"])) if keep else None,
        edgetpu=tpu, kind=DETECTOR if is_detector else CLASSIFIER, labels=labels, member=table.get("member", ""))


def _check(table, spec: dict, source: str, where: str, optional=()) -> dict:
    """``table`` if it has exactly ``spec``'s keys (less ``optional`` ones) with allowed values."""
    if not isinstance(table, dict):
        raise CatalogError(f"{source}: {where}: must be a table")
    if unknown := [k for k in table if k not in spec]:
        raise CatalogError(f"{source}: {where}: unknown key {unknown[0]!r}, allowed: {', '.join(spec)}")
    if missing := [k for k in spec if k not in table and k not in optional]:
        raise CatalogError(f"{source}: {where}: missing key {missing[0]!r}")
    for key, value in table.items():
        if spec[key] is not None and not spec[key][0](value):
            raise CatalogError(f"{source}: {where}: {key}: {value!r} is not {spec[key][1]}")
    return table


def fetch(entry: ModelEntry, models_dir: str | Path, from_dir: str | Path | None = None,
          progress: Progress | None = None, edgetpu: bool = False) -> list[FetchResult]:
    """Install ``entry``'s model file (and its Edge TPU build if ``edgetpu``) into ``models_dir``.

    Downloads from the catalog's URL, or copies from ``from_dir`` when given. Either way the bytes
    are hashed as they stream into a temporary file that becomes the model file only if its sha256
    matches; otherwise nothing is installed and a ``CatalogError`` says expected, got and the source.
    A file already present with the right sha256 is left alone. ``progress(file name, bytes done,
    total bytes or None)`` is called after every chunk.
    """
    results = []
    for file in entry.files(edgetpu):
        target = Path(models_dir) / file.filename
        if target.is_file() and sha256_file(target) == file.sha256:
            log.debug("%s is already present with the right sha256; skipped", target)
            results.append(FetchResult(file, target, was_present=True))
            continue
        if target.exists():
            log.warning("%s has the wrong sha256; replacing it", target)
        if from_dir is None and not file.url:
            raise CatalogError(f"{file.filename}: the catalog pins no download address for it, only its sha256: copy "
                               f"it to a folder and run `appliance models fetch {entry.name} --from DIR`")
        if from_dir is None:
            _download(file, target, progress)
        else:
            _copy(Path(from_dir) / file.filename, file, target, progress)
        log.debug("installed %s (sha256 ok)", target)
        results.append(FetchResult(file, target, was_present=False))
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


def identify_model(path: str | Path, sha256: str, catalog: Catalog | None = None) -> ModelEntry | None:
    """The catalog entry whose model (or Edge TPU build) the file at ``path`` is, by ``sha256``; None if unknown.

    A file named like one of the catalog's files but with another sha256 is that file damaged (a copy
    cut short, a flipped bit on the SD card), not a model of its own: a ``ModelError`` saying how to
    fetch it again. A catalog model under another name is still recognised by its sha256.
    """
    catalog = catalog or load_catalog()
    path = Path(path)
    for entry in catalog.entries:
        for file in entry.files(edgetpu=True):
            if file.filename == path.name and file.sha256 != sha256:
                option = " --edgetpu" if file is entry.edgetpu else ""
                raise ModelError(f"{path}: sha256 {sha256} does not match the catalog's {file.sha256} for "
                                 f"{entry.name}: the file is damaged; copy it again or run `appliance models fetch "
                                 f"{entry.name}{option} --dir {path.parent}` (add --from DIR to copy from a USB stick)")
    return catalog.find_by_sha256(sha256) or catalog.find_by_edgetpu_sha256(sha256)


def keep_defaults(entry: ModelEntry | None, keep_config, model_path: str | Path, source) -> KeepDefaults | None:
    """The rule that the ``[keep]`` keys ``keep_config`` leaves unset fall back to: ``entry``'s, for a catalog model.

    A model the catalog does not know (``entry`` None) has no rule of its own, and "any label at 0.5"
    keeps most frames of most models: unless ``keep.labels`` is set, that is a ``ConfigError`` naming
    ``source`` (the config file) and the key to set.
    """
    if entry is not None and entry.kind == DETECTOR:
        raise ModelError(f"{model_path}: is the object detector {entry.name}, not an image classifier: set model.path "
                         "to a classifier, such as inat-bird (`appliance models list`)")
    if entry is not None:
        return entry.keep
    if keep_config.labels is None:
        raise ConfigError(source, "keep.labels", f"must be set: {Path(model_path).name} is not in the models catalog "
                          "(`appliance models list`), so it has no keep rule of its own",
                          'the labels to keep, such as ["*Owl*"]; with ["*"], set keep.ignore and keep.min_score too')
    return None


def _copy(source: Path, file: ModelFile, target: Path, progress: Progress | None) -> None:
    try:  # _install turns its own OSErrors into CatalogErrors: what reaches here is opening the source
        with source.open("rb") as f:
            _install(f, os.fstat(f.fileno()).st_size, file, target, str(source), progress)
    except OSError as e:
        raise CatalogError(f"{source}: cannot copy {file.filename} from here ({e.strerror})") from None


def _download(file: ModelFile, target: Path, progress: Progress | None) -> None:
    request = urllib.request.Request(file.url, headers={"User-Agent": f"appliance/{appliance.__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            if file.member:
                _install_member(response, file, target, progress)
            else:
                _install(response, response.length, file, target, file.url, progress)  # length: Content-Length
    except urllib.error.HTTPError as e:
        raise CatalogError(f"{file.url}: download failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise CatalogError(f"{file.url}: cannot download ({e.reason}); with no network, copy the file "
                           "to a folder and fetch with --from DIR") from None
    except (OSError, http.client.HTTPException) as e:  # the server hung up or timed out before replying
        raise CatalogError(f"{file.url}: download failed ({e!r})") from None


def _install_member(response, file: ModelFile, target: Path, progress: Progress | None) -> None:
    """Download the zip archive at ``file.url`` into a temporary file (gone once closed), then install its member."""
    source = f"{file.url}!{file.member}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=target.parent) as archive:
        done, total = 0, response.length  # Content-Length; response.length counts down as it is read
        while chunk := response.read(_CHUNK):
            archive.write(chunk)
            done += len(chunk)
            if progress:
                progress(file.filename, done, total)
        try:
            with zipfile.ZipFile(archive) as zipped, zipped.open(file.member) as member:
                _install(member, zipped.getinfo(file.member).file_size, file, target, source, None)
        except KeyError:
            raise CatalogError(f"{file.url}: the archive holds no {file.member}; nothing was installed") from None
        except (zipfile.BadZipFile, EOFError):
            raise CatalogError(f"{file.url}: not a whole zip archive ({done} bytes); nothing was installed") from None


def _install(stream: BinaryIO, total: int | None, file: ModelFile, target: Path, source: str,
             progress: Progress | None) -> None:
    """Stream into ``target`` through a temporary file, hashing; rename only if the sha256 matches."""
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
                raise CatalogError(f"{source}: sha256 mismatch for {file.filename}: expected {file.sha256}, "
                                   f"got {actual}; nothing was installed")
    except (OSError, http.client.HTTPException) as e:  # a reset or timeout mid-transfer, a full disk
        raise CatalogError(f"{source}: fetching into {target} failed after {done} bytes ({e!r}); "
                           "nothing was installed") from None
