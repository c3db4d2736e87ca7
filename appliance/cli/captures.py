"""``appliance captures``: list what the appliance kept."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.cli import add_command
from appliance.errors import StorageError


def register(subparsers):
    parser = add_command(subparsers, "captures", captures_command)
    parser.add_argument("--data", type=Path, required=True, help="the data folder (storage.data_dir)")
    parser.add_argument("--json", action="store_true", help="one JSON object per capture")


def captures_command(args) -> int:
    """List kept captures, oldest first: label, score, kind, source, file and sha256.

    Example:
        appliance captures --data /var/lib/appliance/data --json | jq .label
    """
    from appliance.storage.store import DB_NAME, Store  # sqlite-utils imports numpy: not for --help

    if not (args.data / DB_NAME).is_file():
        raise StorageError(f"{args.data}: no {DB_NAME} here: is this the appliance's storage.data_dir?")
    store = Store(args.data)
    try:
        for row in store.rows(order="captured_at, id"):
            row = dict(row, top_k=json.loads(row["top_k"]) if row["top_k"] else [],
                       path=str(args.data / row["image_path"]))
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{row['id']:>6}  {row['captured_at']}  {row['kind']:<5}  {row['score']:.3f}  "
                      f"{row['label']}  ←  {row['source']}  {row['image_path']}"
                      + ("  [MISSING]" if row["missing"] else ""))
    finally:
        store.close()
    return 0
