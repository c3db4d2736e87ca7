"""Class labels for a classifier: from a labels file, or from the labels embedded in the model.

A model from Coral carries its labels inside: the ``.tflite`` is also a zip archive holding a
``*_labels.txt`` (TFLite metadata's associated file), so no separate file has to travel with it.

Labels files come in two formats, and ``parse_labels`` tells them apart by one rule:

* **numbered** -- ``N label``, ``N:label`` or ``N: label`` on every non-empty line; the numbers give
  the index (at most ``MAX_LABEL_NUMBER``), lines may come in any order, and a number with no line is
  an empty label ``""``;
* **bare** -- anything else: one label per line, the index is the line number (from 0), and a blank
  line inside the file is an empty label ``""`` so that later indexes stay right.

A file is numbered only if *every* non-empty line looks numbered, so a bare file with a label that
happens to start with a number (``"7 Up"`` among plain names) stays bare, and bare ImageNet
(``tench, Tinca tinca``) or iNaturalist (``Haemorhous cassinii (Cassin's Finch)``) labels are never
mistaken for numbered ones. The one ambiguity left: a bare file in which every label starts with a
number and a space reads as numbered. Blank lines at the end, a UTF-8 byte-order mark, CRLF line ends
and spaces around a label are ignored.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import zipfile
from pathlib import Path, PurePosixPath

from appliance.errors import ModelError

log = logging.getLogger(__name__)

# Names TFLite metadata gives labels files: Coral's "imagenet_labels.txt", the metadata writer's
# "labels.txt", localised "labels_en.txt".
_EMBEDDED_PATTERN = "*labels*.txt"
_NUMBERED = re.compile(r"\s*(\d+)(?:\s*:\s*|\s+)(\S.*?)\s*")
# About ten times the largest classifiers (ImageNet-21k: 21,843 classes): a larger number is not a
# label's, and the list up to it could fill the memory ("2000000000 narwhal" asked for 16 GB).
MAX_LABEL_NUMBER = 199_999
_TFLITE_IDENTIFIER = b"TFL3"  # a TFLite model's flatbuffer file identifier, at bytes 4 to 7


def load_labels(model_path: str | Path, labels_path: str | Path | None = None) -> list[str]:
    """The model's labels, index by index: from ``labels_path`` if given, else embedded in the model.

    A missing or unreadable file, a model with no embedded labels, or a labels file with no labels is
    a ``ModelError`` naming the file.
    """
    if labels_path:
        source = str(labels_path)
        try:
            data = Path(labels_path).read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{source}: no such labels file") from None
        except OSError as e:
            raise ModelError(f"{source}: the labels file cannot be read ({e.strerror})") from None
        text = _decode(source, data)
    else:
        source, text = _embedded_labels(Path(model_path))
    labels = parse_labels(text, source=source)
    if not labels:
        raise ModelError(f"{source}: has no labels")
    log.debug("%d labels from %s", len(labels), source)
    return labels


def parse_labels(text: str, source: str = "<labels>") -> list[str]:
    """Labels from the text of a labels file, numbered or bare (see the module's docstring).

    Two lines with the same number are a ``ModelError`` naming ``source``.
    """
    lines = text.removeprefix("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    numbered = [_NUMBERED.fullmatch(line) for line in lines if line.strip()]
    if not numbered or not all(numbered):
        return [line.strip() for line in lines]
    by_index: dict[int, str] = {}
    for match in numbered:
        number, label = match[1].lstrip("0") or "0", match[2]
        # Length first: int() itself refuses more than 4300 digits
        if len(number) > len(str(MAX_LABEL_NUMBER)) or int(number) > MAX_LABEL_NUMBER:
            shown = number if len(number) <= 12 else f"{number[:6]}… ({len(number)} digits)"
            raise ModelError(f"{source}: label number {shown} is beyond the largest the appliance accepts "
                             f"({MAX_LABEL_NUMBER}): a labels file numbers the model's outputs from 0")
        index = int(number)
        if index in by_index:
            raise ModelError(f"{source}: label number {index} is given twice "
                             f"({by_index[index]!r} and {label!r})")
        by_index[index] = label
    return [by_index.get(index, "") for index in range(max(by_index) + 1)]


def _embedded_labels(model_path: Path) -> tuple[str, str]:
    """``(source, text)`` of the labels file inside a model, where source reads ``MODEL!NAME``."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            names = [n for n in archive.namelist()
                     if fnmatch.fnmatchcase(PurePosixPath(n).name, _EMBEDDED_PATTERN)]
            if names:
                # Several are possible (localised copies); the metadata writer stores the primary first.
                source = f"{model_path}!{names[0]}"
                return source, _decode(source, archive.read(names[0]))
    except FileNotFoundError:
        raise ModelError(f"{model_path}: no such model file") from None
    except OSError as e:
        raise ModelError(f"{model_path}: the model file cannot be read ({e.strerror})") from None
    except zipfile.BadZipFile:
        check_tflite(model_path)  # a plain .tflite without associated files, or not a model at all
    raise ModelError(f"{model_path}: the model has no embedded labels; "
                     "give a labels file (model.labels in the config)")


def check_tflite(model_path: str | Path) -> None:
    """A ``ModelError`` unless the file starts as a TFLite model does (its flatbuffer's identifier).

    Cheap, and before the labels are looked for: a file that is no model at all is reported as such,
    not as a model without labels. A model cut short passes; the runtime refuses it when it loads."""
    try:
        with open(model_path, "rb") as f:
            header = f.read(8)
    except OSError as e:
        raise ModelError(f"{model_path}: the model file cannot be read ({e.strerror})") from None
    if header[4:8] != _TFLITE_IDENTIFIER:
        raise ModelError(f"{model_path}: not a valid TFLite model (it does not start as one): copy it again, "
                         "or fetch a model with `appliance models fetch NAME`")


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{source}: labels are not UTF-8 text") from None
