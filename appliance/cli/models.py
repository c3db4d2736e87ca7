"""``appliance models``: list the catalog's models, fetch them (online or from a folder), verify them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from appliance.cli import add_command
from appliance.inference import catalog, model_files

_REDRAW_EVERY_S = 0.2


def register(subparsers) -> None:
    group = add_command(subparsers, "models", models)
    group.set_defaults(group_parser=group)
    commands = group.add_subparsers(dest="models_command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", dest="models_dir", metavar="MODELS_DIR", type=Path,
                        help="the models folder (default: $APPLIANCE_MODELS_DIR, else /var/lib/appliance/models "
                             "if it exists, else ~/.local/share/appliance/models)")
    common.add_argument("--catalog", metavar="FILE", help="a catalog other than the built-in one")
    add_command(commands, "list", models_list, parents=[common])
    fetch = add_command(commands, "fetch", models_fetch, parents=[common])
    fetch.add_argument("name", metavar="NAME", help="a model's name from `appliance models list`, default (the catalog's default model), or all")
    fetch.add_argument("--from", dest="from_dir", metavar="DIR", type=Path,
                       help="copy from this folder (a USB stick, a laptop's share) instead of downloading")
    fetch.add_argument("--edgetpu", action="store_true", help="also fetch the Coral Edge TPU build, where pinned")
    fetch.add_argument("--progress", action="store_true", help="draw the progress bar even when not on a terminal")
    add_command(commands, "verify", models_verify, parents=[common])


def models(args) -> int:
    """Manage the models (classifiers, detectors): list the catalog, fetch model files, verify their sha256.

    Example:
      appliance models list
    """
    args.group_parser.print_help()
    return 2


def models_list(args) -> int:
    """List the catalog's models, their kind, their default keep rule, and which are installed.

    `*` marks the model a fresh appliance runs. A classifier names what a frame (or a crop) shows; a
    detector finds boxes of objects for a classifier to name (`appliance classify --detector`).
    Installed means the file is in the models folder; `appliance models verify` checks its sha256.

    Example:
      appliance models list --dir /var/lib/appliance/models
    """
    known = catalog.load_catalog(args.catalog)
    models_dir = _models_dir(args)
    rows = [("", "NAME", "KIND", "FILE", "INPUT", "DEFAULT KEEP RULE", "INSTALLED")]
    for entry in known.entries:
        installed = "yes" if (models_dir / entry.filename).is_file() else "no"
        if entry.labels:
            installed += ", labels " + ("yes" if (models_dir / entry.labels.filename).is_file() else "no")
        if entry.edgetpu:
            installed += ", Edge TPU build " + ("yes" if (models_dir / entry.edgetpu.filename).is_file() else "no")
        rows.append(("*" if entry.name == known.default.name else "", entry.name, entry.kind, entry.filename,
                     "{}x{}".format(*entry.input_size), entry.keep.describe() if entry.keep else "-", installed))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"Models folder: {models_dir}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def models_fetch(args) -> int:
    """Fetch a model from its canonical URL, or copy it with --from; install it only if its sha256 matches.

    NAME is a model's name from `appliance models list`, `default` (the model a fresh appliance
    runs), or `all`. A file already in the models folder with the right sha256 is left alone. With no network, copy the .tflite files to a USB
    stick on another computer and use --from. A detector comes with its labels file (coco-ssd: coco_labels.txt,
    made on install from the labelmap.txt in the model's zip archive, which is downloaded once for both;
    with --from, the folder holds coco_labels.txt itself).

    Example:
      appliance models fetch inat-bird
      appliance models fetch all --from /media/usb/models --edgetpu
    """
    known = catalog.load_catalog(args.catalog)
    entries = {"all": known.entries, "default": (known.default,)}.get(args.name) or (known.get(args.name),)
    models_dir = _models_dir(args)
    bar = _ProgressBar() if args.progress or sys.stderr.isatty() else None
    for entry in entries:
        if args.edgetpu and entry.edgetpu is None:
            print(f"{entry.name}: no Edge TPU build is pinned in the catalog; fetching the CPU model only")
        try:
            results = model_files.fetch(entry, models_dir, from_dir=args.from_dir, progress=bar, edgetpu=args.edgetpu)
        finally:
            if bar:
                bar.end_line()
        for result in results:
            state = "already present, sha256 ok; skipped" if result.was_present else "installed, sha256 ok"
            print(f"{entry.name}: {result.path}: {state}")
    return 0


def models_verify(args) -> int:
    """Check the sha256 of every catalog model file in the models folder; exit 1 on any mismatch.

    Each file reads ok, mismatch (expected and actual sha256 shown) or missing (not fetched; no error).

    Example:
      appliance models verify --dir /var/lib/appliance/models
    """
    models_dir = _models_dir(args)
    results = model_files.verify(models_dir, catalog.load_catalog(args.catalog))
    width = max(len(result.entry.name) for result in results)
    for result in results:
        line = f"{result.status:<8} {result.entry.name:<{width}}  {result.file.filename}"
        if result.status == model_files.MISMATCH:
            line += f": expected {result.file.sha256}, got {result.actual_sha256}"
        print(line)
    mismatched = [r for r in results if r.status == model_files.MISMATCH]
    if mismatched:
        print(f"{len(mismatched)} file(s) in {models_dir} do not match the catalog; fetch them again "
              "with `appliance models fetch NAME`", file=sys.stderr)
        return 1
    return 0


def _models_dir(args) -> Path:
    return args.models_dir if args.models_dir is not None else catalog.default_models_dir()


class _ProgressBar:
    """``model_files.fetch``'s progress callback: one self-overwriting line on stderr per file."""

    def __init__(self):
        self.name, self.started, self.drawn = None, 0.0, 0.0

    def __call__(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if name != self.name:
            self.end_line()
            self.name, self.started = name, now
        elif now - self.drawn < _REDRAW_EVERY_S and done != total:
            return  # redrawing on every 64 KiB would flood a slow serial console
        self.drawn = now
        elapsed_s = now - self.started
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        percent = f"{100 * done // total:3d}% " if total else ""
        rate = f" {done / 1e6 / elapsed_s:.1f} MB/s" if elapsed_s >= _REDRAW_EVERY_S else ""  # too soon to tell
        print(f"\r{name}: {percent}{size}{rate}", end="", file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self.name is not None:
            print(file=sys.stderr, flush=True)
        self.name = None
