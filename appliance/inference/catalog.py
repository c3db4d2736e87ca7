"""The models catalog: which classifiers and detectors the appliance knows, where they come from, their sha256.

The catalog is ``models/catalog.toml`` in the repository; the wheel ships it as
``appliance/data/catalog.toml``. ``load_catalog`` reads and checks it; ``model_files`` fetches,
installs and verifies the files it pins. A model published only inside a zip archive names its
``member``; a model with no labels inside it has its labels file pinned too, possibly made on install
from another ``format`` (``LABELMAP``: TensorFlow's one name a line).

At every start the classifier checks its model file the same way (``identify_model``): a file named
like a catalog model whose sha256 differs is damaged and refused, and the model's keep rule
(``keep_defaults``) is the catalog's only for a file the catalog really knows.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import appliance
from appliance.errors import CatalogError, ConfigError, ModelError

MODELS_DIR_ENV = "APPLIANCE_MODELS_DIR"
DEVICE_MODELS_DIR = Path("/var/lib/appliance/models")  # created by the device image
CLASSIFIER, DETECTOR = "classifier", "detector"  # an entry's kind
LABELMAP = "labelmap"  # a labels file's format: one name a line, line i naming id i, "???" for an unused id


def _matches(regex: str, allowed: str):
    return lambda v: isinstance(v, str) and re.fullmatch(regex, v) is not None, allowed


# What each key of catalog.toml must hold: (check, what is allowed). None: a table checked on its own.
_TEXT = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
_PATTERNS = (lambda v: isinstance(v, list) and all(isinstance(p, str) and p for p in v), "a list of label patterns")
_FILE_SPEC = {"filename": _matches(r"[A-Za-z0-9][A-Za-z0-9._-]*\.tflite", "a NAME.tflite file name"),
              "url": _matches(r"https?://\S+", "an http(s) URL"),
              "sha256": _matches(r"[0-9a-f]{64}", "64 lowercase hex digits"),
              "member": _matches(r"[^/\s][^\s]*", "the name of the file inside the zip archive at url")}
_LABELS_SPEC = {**_FILE_SPEC, "filename": _matches(r"[A-Za-z0-9][A-Za-z0-9._-]*\.txt", "a NAME.txt file name"),
                "format": (lambda v: v == LABELMAP, f"{LABELMAP!r} (the only conversion known)")}
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
    ``format`` (a labels file's) is what the downloaded file is and is converted from on install
    (``LABELMAP``); ``sha256`` is always the installed file's, which is what --from copies.
    """
    filename: str
    url: str
    sha256: str
    member: str = ""
    format: str = ""


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
        labels = ModelFile(**{"url": "", **_check(labels, _LABELS_SPEC, source, f"{where}: labels",
                                                  ("url", "member", "format"))})
        if labels.format and not labels.url:
            raise CatalogError(f"{source}: {where}: labels: format: converts a download, but no url is given")
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
