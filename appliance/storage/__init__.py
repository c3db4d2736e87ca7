"""What is kept, on the data partition: files first, then rows.

* ``files`` — durable file writes (temporary name → fsync → rename → fsync of the folder) and sha256.
* ``store`` — the SQLite store (WAL) of kept items and start-up reconciliation of rows and files.
* ``retention`` — which items to evict under a quota or a free-space floor: a pure choice.
* ``activity`` — keeps per hour or day for the page's chart.

Core: imports no Flask, gpiozero, picamera2 or LiteRT.
"""
