"""What is kept, on the data partition: files first, then rows.

* ``files`` — durable file writes (temporary name → fsync → rename → fsync of the folder), sha256,
  and reading files not written here (regular files only, no link followed).
* ``images`` — the kept JPEG: its record in a comment (validated when read back), the sha256 that
  proves it complete, its thumbnail.
* ``image_tags`` — the EXIF and XMP of a kept JPEG, for other tools (local time with its offset, camera,
  GPS from the deployment; label, score, model, event).
* ``store`` — the SQLite store (WAL) of kept items; its durable write order: image, thumbnail, row.
* ``crops`` — a detector keep's crop, in a table of its own, written and deleted with its row.
* ``reserve`` — the space set aside so that the store opens on a full card.
* ``reconcile`` — start-up reconciliation of rows and files (``reconcile_data_dir`` on a data dir alone).
* ``retention`` — which items to evict under a quota or a free-space floor, and which to replace
  under the best-N rule: pure choices.
* ``best_n`` — the best-N rule's one read of a label's keeps (that day, or all).
* ``activity`` — keeps per hour or day for the page's chart.
* ``taken_off`` — what is taken off the device (offloaded, synced, uploaded) and its marks.
* ``outbox`` — what the links send (MQTT, upload, notifications), queued with each keep.

Core: imports no Flask, gpiozero, picamera2 or LiteRT.
"""
