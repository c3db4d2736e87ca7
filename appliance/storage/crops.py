"""A detector keep's second image: the crop its species model classified, in a table of its own.

A crop (about 224x224, ~10 KB) is made with its keep and has no life apart from it, so it lives in
SQLite beside the keep's row, not in a file: ``Store.add`` inserts it in the transaction that inserts
the row, and ``Store.delete`` deletes it in the transaction that deletes the row, so a row and its
crop are never seen apart. A table of its own, not a column of ``captures``, so that the page's, the
sync's and retention's ``select * from captures`` never read blobs. Its bytes are not counted in the
store's use (thumbnails are not either): the quota is the images'.

A keep whose row was lost and rebuilt from its file (``reconcile``) has no crop: the file does not
carry one. These functions run on the store's connection, under its lock, inside its transactions.
"""

from __future__ import annotations

import sqlite3

SCHEMA = "create table if not exists crops (capture_id integer primary key, jpeg blob not null)"


def put(conn: sqlite3.Connection, capture_id: int, jpeg: bytes | None) -> None:
    """Make ``jpeg`` the crop of a new row, or with None, say it has none.

    A crop may outlive its row if the row was deleted without it (by an older appliance's page, or in
    a database edited elsewhere), and SQLite gives the largest id again once its row is gone: so a new
    row's id may find a crop already there, which is never its own."""
    if jpeg is None:
        conn.execute("delete from crops where capture_id = ?", [capture_id])
    else:
        conn.execute("insert or replace into crops (capture_id, jpeg) values (?, ?)", [capture_id, jpeg])


def get(conn: sqlite3.Connection, capture_id: int) -> bytes | None:
    row = conn.execute("select jpeg from crops where capture_id = ?", [capture_id]).fetchone()
    return bytes(row[0]) if row else None


def has(conn: sqlite3.Connection, capture_id: int) -> bool:
    return conn.execute("select 1 from crops where capture_id = ?", [capture_id]).fetchone() is not None


def drop(conn: sqlite3.Connection, capture_ids) -> None:
    conn.executemany("delete from crops where capture_id = ?", [(i,) for i in capture_ids])
